//! Command line and environment. Every flag has a `GAA_…` environment twin, and the environment
//! is read here alone, through clap. The arguments are grouped by the module they configure;
//! each group converts into that module's own configuration. Imports nothing of the product.

pub mod duration;
mod onboard;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::onboard::OnboardArgs;
pub use self::serve::{ClusterArgs, GitHubArgs, HttpArgs, LeaseArgs, LimitsArgs, ServeArgs, StoreArgs, TlsArgs};

/// Runner image for ScaledActionRunners that name none: GitHub's own runner image.
pub const DEFAULT_RUNNER_IMAGE: &str = "ghcr.io/actions/actions-runner:latest";
/// Image of this product (API server, operator, credential init container).
pub const DEFAULT_IMAGE: &str =
    concat!("ghcr.io/github-action-autoscaler/github-action-autoscaler:", env!("CARGO_PKG_VERSION"));
/// memcached image for a ScaledActionRunnerCore that names none.
pub const DEFAULT_MEMCACHED_IMAGE: &str = "docker.io/library/memcached:1.6-alpine";
/// Connections per listener unless `--max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// `--tls-handshake-timeout`: a client that never finishes its handshake is dropped after this.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--header-read-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `--body-read-timeout`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `--shutdown-grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// `--journal-retention`: above GitHub's 3-day redelivery window.
pub const DEFAULT_JOURNAL_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);
/// `--checkpoint-interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// `--commit-delay`.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(400);
/// `--store-refresh-interval`.
pub const DEFAULT_STORE_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// `--store-prefix`.
pub const DEFAULT_STORE_PREFIX: &str = "gaa:v1:";
/// The log filter when neither `--log` nor `RUST_LOG` gives one. The memcached client's
/// connection pool logs every failed reconnect (several a second while memcached is down); the
/// server reports the outage itself, once.
pub const DEFAULT_LOG_FILTER: &str = "info,r2d2=off";

#[derive(Debug, Parser)]
#[command(
    name = "github-action-autoscaler",
    version,
    about = "Scales self-hosted GitHub Actions runners per repository, from zero, on workflow_job webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub logging: LoggingArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging, for every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LoggingArgs {
    /// Log format.
    #[arg(long, env = "GAA_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `gaa=debug,info` (default: `RUST_LOG`, else `info`).
    #[arg(long, env = "GAA_LOG", global = true)]
    pub log: Option<String>,
    /// `RUST_LOG`, the fallback of `--log`.
    #[arg(long, env = "RUST_LOG", global = true, hide = true)]
    pub rust_log: Option<String>,
}

impl LoggingArgs {
    /// `--log`, else `RUST_LOG`, else [`DEFAULT_LOG_FILTER`].
    pub fn filter(&self) -> &str {
        self.log.as_deref().or(self.rust_log.as_deref()).unwrap_or(DEFAULT_LOG_FILTER)
    }
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
    /// Onboard a repository (or, with --org, an organisation): create (or update) its webhook
    /// and print the Secrets and the ScaledActionRunner to apply.
    Onboard(Box<OnboardArgs>),
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
    #[arg(long, env = "GAA_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,
    /// API server image for a ScaledActionRunnerCore that names none (also the image of the
    /// runner pods' credential init container).
    #[arg(long, env = "GAA_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// memcached image for a ScaledActionRunnerCore that names none.
    #[arg(long, env = "GAA_MEMCACHED_IMAGE", default_value = DEFAULT_MEMCACHED_IMAGE)]
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

/// The value parser of every duration flag.
fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_falls_back_to_rust_log_then_the_default() {
        let mut logging = LoggingArgs { log_format: LogFormat::Text, log: None, rust_log: None };
        assert_eq!(logging.filter(), DEFAULT_LOG_FILTER);
        logging.rust_log = Some("debug".into());
        assert_eq!(logging.filter(), "debug");
        logging.log = Some("warn".into());
        assert_eq!(logging.filter(), "warn");
    }
}
