//! Why a GitHub call failed, by what GitHub (or the network) answered.

use std::time::Duration;

/// Why a GitHub call failed. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub {} rate limit: retry after {}s", if *.secondary { "secondary" } else { "primary" }, .retry_after.as_secs())]
    RateLimited { retry_after: Duration, secondary: bool },
    #[error("GitHub rejected the token (401)")]
    Unauthorized,
    #[error("GitHub refused the request (403): {message}")]
    Forbidden { message: String },
    #[error("GitHub rejected the GitHub App's JWT (401): {message}")]
    JwtRejected { message: String },
    #[error("GitHub would not do it (422): {message}")]
    Unprocessable { message: String },
    /// 409: what the request would create exists already (a runner of that name).
    #[error("GitHub found a conflict (409): {message}")]
    Conflict { message: String },
    /// A runner GitHub will not delete because it is running a job (its 422 on
    /// `DELETE …/actions/runners/{id}`): try again once the job is done.
    #[error("runner {runner_id} is running a job and cannot be removed (422): {message}")]
    RunnerBusy { runner_id: u64, message: String },
    #[error("the GitHub App is not installed on {0}")]
    NotInstalled(String),
    #[error("the GitHub App's private key cannot sign: {0}")]
    AppKey(String),
    #[error("GitHub has no such resource, or the token cannot see it (404)")]
    NotFound,
    #[error("GitHub server error ({status})")]
    Server { status: u16 },
    #[error("unexpected GitHub answer ({status})")]
    Unexpected { status: u16 },
    #[error("GitHub request failed: {0}")]
    Http(String),
    #[error("GitHub answer did not decode: {0}")]
    Decode(String),
    #[error("GitHub pagination: {0}")]
    Pagination(String),
    #[error("not an owner/name repository: {0:?}")]
    InvalidRepository(String),
    #[error("not an organisation's name: {0:?}")]
    InvalidOrganisation(String),
    #[error("the token cannot be sent as an HTTP header")]
    InvalidToken,
    #[error("invalid GitHub API URL: {0}")]
    InvalidUrl(String),
}

impl GitHubError {
    /// A fixed label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::RateLimited { secondary: false, .. } => "rate_limited",
            Self::RateLimited { secondary: true, .. } => "secondary_rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::JwtRejected { .. } => "jwt_rejected",
            Self::Unprocessable { .. } => "unprocessable",
            Self::Conflict { .. } => "conflict",
            Self::RunnerBusy { .. } => "runner_busy",
            Self::NotInstalled(_) => "not_installed",
            Self::AppKey(_) => "app_key",
            Self::NotFound => "not_found",
            Self::Server { .. } => "server",
            Self::Unexpected { .. } => "unexpected",
            Self::Http(_) => "http",
            Self::Decode(_) => "decode",
            Self::Pagination(_) => "pagination",
            Self::InvalidRepository(_) => "invalid_repository",
            Self::InvalidOrganisation(_) => "invalid_organisation",
            Self::InvalidToken => "invalid_token",
            Self::InvalidUrl(_) => "invalid_url",
        }
    }
}
