//! Command line and environment. Every flag has a `GAA_…` environment twin.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "github-action-autoscaler",
    version,
    about = "Scales self-hosted GitHub Actions runners per repository, from zero, on workflow_job webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "GAA_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `gaa=debug,info` (default: `RUST_LOG`, else `info`).
    #[arg(long, env = "GAA_LOG", global = true)]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive webhooks, keep per-runner demand and serve it.
    Serve(Box<ServeArgs>),
    /// Print the CustomResourceDefinitions (what crds/ holds).
    Crds,
    /// Run the Kubernetes operator: ScaledActionRunner → runner StatefulSet and KEDA
    /// ScaledObject; ScaledActionRunnerCore → the API server stack.
    Operator(OperatorArgs),
    /// Print, as a YAML stream, the objects the operator would apply for the custom resources
    /// in the given files (offline; for review and GitOps).
    Render(RenderArgs),
    /// Onboard a repository: create (or update) its webhook and print the Secrets and the
    /// ScaledActionRunner to apply.
    Onboard(Box<crate::onboard::OnboardArgs>),
    /// Init container of a runner pod: copies the registration files of this pod's ordinal
    /// from its runner Secret into a directory.
    #[command(hide = true)]
    RunnerCredentials(RunnerCredentialsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunnerCredentialsArgs {
    /// The runner's `runnerSecrets`, comma-separated, in ordinal order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub secrets: Vec<String>,
    /// Directory to write the files to.
    #[arg(long)]
    pub dir: PathBuf,
    /// This pod's name (`<statefulset>-<ordinal>`).
    #[arg(long, env = "POD_NAME")]
    pub pod: String,
}

/// Images and settings the operator's objects are built from; `render` takes the same.
#[derive(Debug, Clone, Args)]
pub struct OperatorSettingsArgs {
    /// Runner image for ScaledActionRunners that name none.
    #[arg(long, env = "GAA_RUNNER_IMAGE", default_value = crate::operator::DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,
    /// API server image for a ScaledActionRunnerCore that names none (also the image of the
    /// runner pods' credential init container).
    #[arg(long, env = "GAA_IMAGE", default_value = crate::operator::DEFAULT_IMAGE)]
    pub image: String,
    /// memcached image for a ScaledActionRunnerCore that names none.
    #[arg(long, env = "GAA_MEMCACHED_IMAGE", default_value = crate::operator::DEFAULT_MEMCACHED_IMAGE)]
    pub memcached_image: String,
}

#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub settings: OperatorSettingsArgs,
    /// Address of the operator's health and metrics endpoint.
    #[arg(long, env = "GAA_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub settings: OperatorSettingsArgs,
    /// YAML files of ScaledActionRunnerCore, ScaledActionRunner and (optionally) the Secrets
    /// they name; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for the webhook receiver, read API, health and metrics.
    #[arg(long, env = "GAA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the journal (created if missing).
    #[arg(long, env = "GAA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
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
    /// How long finished jobs and delivery ids are remembered; keep it above GitHub's 3-day
    /// redelivery window (e.g. `96h`, `4d`).
    #[arg(long, env = "GAA_JOURNAL_RETENTION", default_value = "4d", value_parser = parse_duration)]
    pub journal_retention: std::time::Duration,
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
    /// How often demand is re-read from the shared store (memcached only).
    #[arg(long, env = "GAA_STORE_REFRESH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub store_refresh_interval: std::time::Duration,
    /// Prefix of every memcached key, so several installations can share one memcached.
    #[arg(long, env = "GAA_STORE_PREFIX", default_value = "gaa:v1:")]
    pub store_prefix: String,
    /// GitHub REST API base URL (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(long, env = "GAA_GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// File holding a GitHub token used for every repository whose runners name no
    /// `githubTokenSecret` (standalone use). Without any token, webhooks alone feed demand.
    #[arg(long, env = "GAA_GITHUB_TOKEN_FILE")]
    pub github_token_file: Option<PathBuf>,
    /// Resync a repository with demand at most this often (the original `cacheWindow`).
    #[arg(long, env = "GAA_CACHE_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub cache_window: std::time::Duration,
    /// Resync an idle repository this often (the original `cacheWindowWhenEmpty`): the longest
    /// a lost webhook can go unrepaired.
    #[arg(long, env = "GAA_CACHE_WINDOW_WHEN_EMPTY", default_value = "30m", value_parser = parse_duration)]
    pub cache_window_when_empty: std::time::Duration,
    /// In a cluster: the namespace of the Lease that lets one replica at a time resync from
    /// GitHub. Unset (standalone): this process always resyncs.
    #[arg(long, env = "GAA_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of that Lease.
    #[arg(long, env = "GAA_LEASE_NAME", default_value = "github-action-autoscaler-resync")]
    pub lease_name: String,
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
    /// Connections each listener holds at once; lowered at start so every listener fits under
    /// the open-files limit. When full, the connection stalled longest (idle, or trickling a
    /// request) is closed to make room for a new one.
    #[arg(long, env = "GAA_MAX_CONNECTIONS", default_value_t = crate::http::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// A TLS client must complete its handshake within this.
    #[arg(long, env = "GAA_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: std::time::Duration,
    /// A new connection must send a complete request head within this.
    #[arg(long, env = "GAA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,
    /// A kept-alive connection with no request in flight (nor the complete head of the next
    /// one) is closed after this.
    #[arg(long, env = "GAA_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// A request body must arrive whole within this of its head (GitHub itself gives up on a
    /// delivery after 10 seconds).
    #[arg(long, env = "GAA_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: std::time::Duration,
    /// On SIGTERM, requests in flight get this long to finish before their connections are
    /// dropped and the journal is flushed; keep it well under the pod's termination grace.
    #[arg(long, env = "GAA_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Address of KEDA's external-push gRPC scaler (`externalscaler.ExternalScaler`).
    #[arg(long, env = "GAA_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// How often job states are checkpointed and the journal compacted (e.g. `10s`).
    #[arg(long, env = "GAA_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub checkpoint_interval: std::time::Duration,
    /// Under load (a group commit carried several deliveries), wait this long before the next
    /// one so more deliveries share its flush: fewer flushes, more deliveries per second, at
    /// most this much added latency. A lone delivery never waits. `0s` turns it off.
    #[arg(long, env = "GAA_COMMIT_DELAY", default_value = "400us", value_parser = parse_duration)]
    pub commit_delay: std::time::Duration,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::crd::parse_duration(text).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The limits of every listener, before the cap is fitted to the open-files limit.
    pub fn limits(&self) -> crate::http::limits::Limits {
        crate::http::limits::Limits {
            max_connections: self.max_connections,
            handshake_timeout: self.tls_handshake_timeout,
            header_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_read_timeout,
        }
    }

    /// Settings for a server on `listen` with its journal in `data_dir` and nothing else.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            manifests: None,
            namespaces: Vec::new(),
            token_namespace: None,
            webhook_secret_file: None,
            journal_retention: std::time::Duration::from_secs(4 * 24 * 3600),
            checkpoint_interval: std::time::Duration::from_secs(10),
            commit_delay: std::time::Duration::from_micros(400),
            store: "sled".into(),
            memcached_user: None,
            memcached_password_file: None,
            store_refresh_interval: std::time::Duration::from_secs(1),
            store_prefix: "gaa:v1:".into(),
            github_api_url: "https://api.github.com".into(),
            github_token_file: None,
            cache_window: std::time::Duration::from_secs(300),
            cache_window_when_empty: std::time::Duration::from_secs(1800),
            lease_namespace: None,
            lease_name: "github-action-autoscaler-resync".into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            client_ca: Vec::new(),
            metrics_token_file: None,
            unauthenticated_reads: false,
            max_connections: crate::http::limits::DEFAULT_MAX_CONNECTIONS,
            tls_handshake_timeout: crate::tls::HANDSHAKE_TIMEOUT,
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            body_read_timeout: std::time::Duration::from_secs(10),
            shutdown_grace: std::time::Duration::from_secs(10),
            grpc_listen: None,
        }
    }
}
