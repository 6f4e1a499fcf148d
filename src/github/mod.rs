//! GitHub REST: the client the reconciler lists Actions runs and jobs with (its token, rate-limit
//! accounting and ETag cache beside it), the repositories of organisations and installations,
//! the repositories organisations' runner groups admit, self-hosted runner registration (just-in-time configurations, runner lists and removal),
//! GitHub App authentication, its models, and the resync built on it.

pub mod app;
pub mod client;
pub mod error;
mod etag_cache;
pub mod groups;
pub mod installations;
pub mod models;
pub mod org;
pub mod rate_limit;
pub mod reconciler;
pub mod resync;
pub mod runners;
pub mod token;

pub use app::{Credential, GitHubApp};
pub use client::{Fetched, GitHubClient, JobFilter, RunStatus};
pub use error::GitHubError;
pub use models::{WorkflowJob, WorkflowJobList, WorkflowRun, WorkflowRunList};
pub use rate_limit::{RateLimit, rate_limit_wait};
pub use runners::{JitConfig, RunnerScope, RunnerStatus, SelfHostedRunner};
pub use token::{Budget, Token};

impl From<&crate::config::GitHubArgs> for reconciler::ReconcilerConfig {
    fn from(args: &crate::config::GitHubArgs) -> Self {
        Self {
            windows: resync::Windows { busy: args.cache_window, idle: args.cache_window_when_empty },
            ..Self::default()
        }
    }
}
