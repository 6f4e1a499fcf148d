//! GitHub REST: the client the reconciler lists Actions runs and jobs with, and its models.

pub mod client;
pub mod models;
pub mod reconciler;
pub mod resync;

pub use client::{Fetched, GitHubClient, GitHubError, RateLimit, RunStatus, Token, backoff, rate_limit_wait};
pub use models::{WorkflowJob, WorkflowJobList, WorkflowRun, WorkflowRunList};

impl From<&crate::config::GitHubArgs> for reconciler::ReconcilerConfig {
    fn from(args: &crate::config::GitHubArgs) -> Self {
        Self {
            windows: resync::Windows { busy: args.cache_window, idle: args.cache_window_when_empty },
            ..Self::default()
        }
    }
}
