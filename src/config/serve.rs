//! `serve`'s arguments, grouped by the module each configures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::{DEFAULT_MAX_CONNECTIONS, parse_duration};

/// `serve`, by concern.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub github: GitHubArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// The plain listener, the gRPC listener and who may read on them.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address for the webhook receiver, read API, health and metrics.
    #[arg(long, env = "GAA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of KEDA's external-push gRPC scaler (`externalscaler.ExternalScaler`).
    #[arg(long, env = "GAA_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// File holding a bearer token that reading demand and metrics then requires (KEDA's
    /// `authMode: bearer`; gRPC: `authorization` metadata), on every listener, in addition to
    /// the client certificate where `--client-ca` asks for one. Webhooks and health probes stay open.
    #[arg(long, env = "GAA_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve reads (read API, custom metrics, `/metrics`, gRPC) on listeners that authenticate
    /// nobody (plain HTTP or gRPC without `--metrics-token-file`, TLS without `--client-ca`).
    /// Without it such listeners serve only `/webhook`, `/healthz` and `/readyz`. For
    /// standalone use on a trusted machine.
    #[arg(long, env = "GAA_UNAUTHENTICATED_READS")]
    pub unauthenticated_reads: bool,
    /// On SIGTERM, requests in flight get this long to finish before their connections are
    /// dropped and the journal is flushed; keep it well under the pod's termination grace.
    #[arg(long, env = "GAA_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The TLS listener and its certificates.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Address of the TLS listener (read API, custom.metrics.k8s.io, webhooks, health).
    #[arg(long, env = "GAA_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listeners (re-read when the file changes).
    #[arg(long, env = "GAA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listeners (re-read when the file changes).
    #[arg(long, env = "GAA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: clients of the TLS listener must present a certificate it signed (mutual TLS).
    /// Repeat (or comma-separate) to trust several; a file that does not exist yet is skipped
    /// until it appears.
    #[arg(long, env = "GAA_CLIENT_CA", value_delimiter = ',')]
    pub client_ca: Vec<PathBuf>,
}

/// What a connection may cost, on every listener.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Connections each listener holds at once; lowered at start so every listener fits under
    /// the open-files limit. When full, the connection stalled longest (idle, or trickling a
    /// request) is closed to make room for a new one.
    #[arg(long, env = "GAA_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// A TLS client must complete its handshake within this.
    #[arg(long, env = "GAA_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// A new connection must send a complete request head within this.
    #[arg(long, env = "GAA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in flight (nor the complete head of the next
    /// one) is closed after this.
    #[arg(long, env = "GAA_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A request body must arrive whole within this of its head (GitHub itself gives up on a
    /// delivery after 10 seconds).
    #[arg(long, env = "GAA_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
}

/// Where the runners and their Secrets come from, and the organisation's webhook secret.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Standalone mode: a directory of ScaledActionRunner and Secret YAML, as for `kubectl apply`.
    /// Without it, runners and their Secrets are watched through the Kubernetes API.
    #[arg(long, env = "GAA_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// In a cluster: namespaces watched for ScaledActionRunners (comma-separated); empty
    /// watches all.
    #[arg(long, env = "GAA_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// In a cluster: the namespace holding every runner's `githubTokenSecret` (the core's
    /// `apiServerPatTokenNamespace`); unset reads each from the runner's own namespace.
    #[arg(long, env = "GAA_TOKEN_NAMESPACE")]
    pub token_namespace: Option<String>,
    /// File holding an organisation-wide webhook secret that may sign deliveries for any repository.
    #[arg(long, env = "GAA_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
}

/// The journal and the demand store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the journal (created if missing).
    #[arg(long, env = "GAA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// How long finished jobs and delivery ids are remembered; keep it above GitHub's 3-day
    /// redelivery window (e.g. `96h`, `4d`).
    #[arg(long, env = "GAA_JOURNAL_RETENTION", default_value = "4d", value_parser = parse_duration)]
    pub journal_retention: Duration,
    /// How often job states are checkpointed and the journal compacted (e.g. `10s`).
    #[arg(long, env = "GAA_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Under load (a group commit carried several deliveries), wait this long before the next
    /// one so more deliveries share its flush: fewer flushes, more deliveries per second, at
    /// most this much added latency. A lone delivery never waits. `0s` turns it off.
    #[arg(long, env = "GAA_COMMIT_DELAY", default_value = "400us", value_parser = parse_duration)]
    pub commit_delay: Duration,
    /// Demand store: `sled` (embedded, one replica) or `memcached://HOST:PORT[,HOST:PORT…]`
    /// (shared by every replica; keys spread over the servers by consistent hashing).
    #[arg(long, env = "GAA_STORE", default_value = "sled")]
    pub store: String,
    /// memcached user for SASL/ASCII authentication (the password comes from
    /// `--memcached-password-file` or the `GAA_MEMCACHED_PASSWORD` environment variable).
    #[arg(long, env = "GAA_MEMCACHED_USER")]
    pub memcached_user: Option<String>,
    /// File holding the memcached password.
    #[arg(long, env = "GAA_MEMCACHED_PASSWORD_FILE")]
    pub memcached_password_file: Option<PathBuf>,
    /// The memcached password, from the environment only (a flag would show it to `ps`).
    #[arg(long, env = "GAA_MEMCACHED_PASSWORD", hide = true, hide_env_values = true, value_parser = parse_secret)]
    pub memcached_password: Option<SecretString>,
    /// How often demand is re-read from the shared store (memcached only).
    #[arg(long, env = "GAA_STORE_REFRESH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub store_refresh_interval: Duration,
    /// Prefix of every memcached key, so several installations can share one memcached.
    #[arg(long, env = "GAA_STORE_PREFIX", default_value = super::DEFAULT_STORE_PREFIX)]
    pub store_prefix: String,
}

/// GitHub's REST API and how often it is asked.
#[derive(Debug, Clone, Args)]
pub struct GitHubArgs {
    /// GitHub REST API base URL (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(long, env = "GAA_GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// File holding a GitHub token used for every repository whose runners name no
    /// `githubTokenSecret` (standalone use). Without any token, webhooks alone feed demand.
    #[arg(long, env = "GAA_GITHUB_TOKEN_FILE")]
    pub github_token_file: Option<PathBuf>,
    /// Instead of a token: the id (or client id) of a GitHub App used for every repository
    /// whose runners name no `githubTokenSecret`; it mints installation tokens with the key of
    /// `--github-app-private-key-file`.
    #[arg(long, env = "GAA_GITHUB_APP_ID", conflicts_with = "github_token_file")]
    pub github_app_id: Option<String>,
    /// File holding that GitHub App's private key (PEM, as GitHub generated it).
    #[arg(long, env = "GAA_GITHUB_APP_PRIVATE_KEY_FILE")]
    pub github_app_private_key_file: Option<PathBuf>,
    /// That GitHub App's installation id; without it, the installation of each repository is
    /// looked up (once) from GitHub.
    #[arg(long, env = "GAA_GITHUB_APP_INSTALLATION_ID")]
    pub github_app_installation_id: Option<u64>,
    /// Resync a repository with demand at most this often (the original `cacheWindow`).
    #[arg(long, env = "GAA_CACHE_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub cache_window: Duration,
    /// Resync an idle repository this often (the original `cacheWindowWhenEmpty`): the longest
    /// a lost webhook can go unrepaired.
    #[arg(long, env = "GAA_CACHE_WINDOW_WHEN_EMPTY", default_value = "30m", value_parser = parse_duration)]
    pub cache_window_when_empty: Duration,
}

/// The Lease that lets one replica at a time resync from GitHub.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// In a cluster: the namespace of the Lease that lets one replica at a time resync from
    /// GitHub. Unset (standalone): this process always resyncs.
    #[arg(long, env = "GAA_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of that Lease.
    #[arg(long, env = "GAA_LEASE_NAME", default_value = "github-action-autoscaler-resync")]
    pub lease_name: String,
    /// This replica's name in the Lease: the pod's name (the downward API's `POD_NAME`)...
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
    /// ...else the host name (a pod's is its name).
    #[arg(long, env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,
}

impl LeaseArgs {
    /// `POD_NAME`, else `HOSTNAME`, else a name made of the process id.
    pub fn identity(&self) -> String {
        self.pod_name
            .clone()
            .or_else(|| self.hostname.clone())
            .unwrap_or_else(|| format!("github-action-autoscaler-{}", std::process::id()))
    }
}

/// The value parser of a secret flag: the text, redacted from then on.
fn parse_secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        Cli, Command, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
        DEFAULT_SHUTDOWN_GRACE, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    };
    use clap::Parser;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["github-action-autoscaler", "serve"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Serve(args)) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn the_flags_default_to_the_constants_other_modules_use() {
        let args = serve(&[]);
        assert_eq!(args.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(args.limits.tls_handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
        assert_eq!(args.limits.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(args.limits.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(args.limits.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
        assert_eq!(args.http.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(args.store.journal_retention, crate::config::DEFAULT_JOURNAL_RETENTION);
        assert_eq!(args.store.checkpoint_interval, crate::config::DEFAULT_CHECKPOINT_INTERVAL);
        assert_eq!(args.store.commit_delay, crate::config::DEFAULT_COMMIT_DELAY);
        assert_eq!(args.store.store_refresh_interval, crate::config::DEFAULT_STORE_REFRESH_INTERVAL);
        assert_eq!(args.store.store_prefix, crate::config::DEFAULT_STORE_PREFIX);
    }

    #[test]
    fn the_memcached_password_never_shows_in_debug_output() {
        let mut args = serve(&[]);
        args.store.memcached_password = Some(SecretString::from("hunter2"));
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn a_token_file_and_a_github_app_together_are_refused_with_both_named() {
        let argv = ["github-action-autoscaler", "serve", "--github-token-file", "t", "--github-app-id", "1"];
        let error = Cli::try_parse_from(argv).expect_err("both kinds of credentials").to_string();
        assert!(error.contains("--github-app-id") && error.contains("--github-token-file"), "{error}");
        let args = serve(&[
            "--github-app-id",
            "Iv23abc",
            "--github-app-private-key-file",
            "k",
            "--github-app-installation-id",
            "9",
        ]);
        assert_eq!(args.github.github_app_id.as_deref(), Some("Iv23abc"));
        assert_eq!(args.github.github_app_installation_id, Some(9));
    }

    #[test]
    fn the_lease_identity_is_the_pod_name_else_the_host_name() {
        let mut lease = serve(&[]).lease;
        (lease.pod_name, lease.hostname) = (Some("gaa-0".into()), Some("host".into()));
        assert_eq!(lease.identity(), "gaa-0");
        lease.pod_name = None;
        assert_eq!(lease.identity(), "host");
        lease.hostname = None;
        assert!(lease.identity().starts_with("github-action-autoscaler-"));
    }
}
