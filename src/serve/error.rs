//! Why `serve` could not start or went on no longer.

use crate::manifests::ManifestsError;
use crate::store::JournalError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Manifests(#[from] ManifestsError),
    #[error("no Kubernetes client (without --manifests, runners are read from the cluster): {0}")]
    KubeClient(kube::Error),
    #[error("reading the webhook secret file {path}: {source}")]
    SecretFile { path: String, source: std::io::Error },
    #[error("the webhook secret file {0} is empty")]
    EmptySecretFile(String),
    #[error("creating the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("listening on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("serving HTTP: {0}")]
    Http(std::io::Error),
    #[error("--store: {0}")]
    Store(String),
    #[error("GitHub client: {0}")]
    GitHub(String),
    #[error(
        "--github-token-file and --github-app-id (GAA_GITHUB_TOKEN_FILE, GAA_GITHUB_APP_ID) are both given: give a token or a GitHub App, not both"
    )]
    TokenAndApp,
    #[error("--github-app-id and --github-app-private-key-file go together: {0}")]
    AppIncomplete(&'static str),
    #[error("the GitHub App private key file {path}: {reason}")]
    AppKey { path: String, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
}
