//! Why a reconcile failed: one variant per step of the pipeline, retried with backoff.

/// Why a reconcile failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading {what}: {source}")]
    Dereference {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading ScaledActionRunnerCore {name}: {error}")]
    UnreadableCore { name: String, error: String },
    #[error("applying {object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing {object}: {source}")]
    Prune {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error("the object has no namespace or name")]
    Unnamed,
}

impl ReconcileError {
    /// A fixed label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Dereference { .. } | Self::UnreadableCore { .. } => "dereference",
            Self::Apply { .. } => "apply",
            Self::Prune { .. } => "prune",
            Self::Status(_) => "status",
            Self::Unnamed => "unnamed",
        }
    }
}
