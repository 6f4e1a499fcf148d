//! `onboard`'s arguments.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(after_long_help = "Prints (or writes to --output) a YAML stream to apply: a Secret with the read \
token (key `token`), a Secret with the webhook secret (key `webhook-secret`), with --runner-dir one \
Secret of runner credentials per ordinal, and the ScaledActionRunner naming them. The admin token is \
used for the calls and written nowhere. Running it again updates the same webhook with a new secret.")]
pub struct OnboardArgs {
    /// Name of the ScaledActionRunner (and prefix of its Secrets).
    #[arg(short = 'n', long)]
    pub name: String,
    /// Repository owner (user or organisation), with --repo.
    #[arg(short = 'o', long)]
    pub owner: Option<String>,
    /// Repository name, with --owner.
    #[arg(short = 'r', long)]
    pub repo: Option<String>,
    /// Organisation whose runners these are, instead of --owner and --repo: they take jobs from
    /// every repository of it, and the webhook is the organisation's.
    #[arg(long)]
    pub org: Option<String>,
    /// With --org: the runner group the runners register in (default: `Default`, which every
    /// organisation has).
    #[arg(long)]
    pub runner_group: Option<String>,
    /// Most runners.
    #[arg(short = 'm', long, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_runners: i32,
    /// Fewest runners kept even with no demand (default 0: scale to zero).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub min_runners: Option<i32>,
    /// File holding a GitHub token that can read the repository's (with --org: the
    /// organisation's repositories') Actions runs and jobs; it is printed into the token Secret.
    #[arg(short = 'p', long, env = "GAA_ONBOARD_READ_TOKEN_FILE")]
    pub read_token: PathBuf,
    /// File holding a GitHub token with admin rights on the repository (an owner's, for
    /// --org), used to create the webhook (and register runners); never written anywhere.
    #[arg(short = 'a', long, env = "GAA_ONBOARD_ADMIN_TOKEN_FILE")]
    pub admin_token: PathBuf,
    /// Where GitHub delivers `workflow_job` events: the server's `/webhook`, over https://.
    #[arg(short = 'w', long, env = "GAA_ONBOARD_WEBHOOK_URL")]
    pub webhook_url: String,
    /// Comma-separated labels the runners register with (jobs' `runs-on`; `self-hosted` is
    /// implied).
    #[arg(short = 'l', long, default_value = "")]
    pub labels: String,
    /// Namespace of the ScaledActionRunner and its Secrets (add-runner's `-s`).
    #[arg(short = 's', long, env = "GAA_ONBOARD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Namespace of the read-token Secret: the core's `apiServerPatTokenNamespace` when it sets
    /// one (add-runner's `-g`). Default: --namespace.
    #[arg(short = 'g', long, env = "GAA_ONBOARD_TOKEN_NAMESPACE")]
    pub token_namespace: Option<String>,
    /// Runner image (default: the operator's).
    #[arg(long)]
    pub image: Option<String>,
    /// Write the YAML to this file (created readable by its owner only) instead of standard
    /// output.
    #[arg(short = 'f', long)]
    pub output: Option<PathBuf>,
    /// Change nothing on GitHub: check the tokens and repository, say whether the webhook would
    /// be created or updated, and print the YAML (its webhook secret is not registered).
    #[arg(long)]
    pub dry_run: bool,
    /// An unpacked actions/runner release: register --max-runners runners now with its
    /// config.sh and print their credentials as Secrets `<name>-<i>` (`runnerSecrets`).
    #[arg(long)]
    pub runner_dir: Option<PathBuf>,
    /// GitHub REST API root (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(long, env = "GAA_GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
}
