//! Just-in-time runners. A pod of an ephemeral runner asks for a one-time configuration at
//! every start, proving who it is with its own projected ServiceAccount token; `serve` checks
//! the token (TokenReview, bound to a pod of that runner's StatefulSet) and mints the
//! configuration from GitHub with credentials the pod never sees.
//!
//! **One registration per pod at a time.** Every registration of a pod carries one name,
//! derived from the pod's name and uid, and GitHub refuses a second runner of a name it holds.
//! So a new configuration is minted only once the pod's previous runner is gone from GitHub (a
//! just-in-time runner is removed when its one job ends) or, never having taken a job, has been
//! deleted first. While it runs a job the request is refused (409): job code that reads the
//! pod's token cannot register a runner of its own. GitHub is the record, so this holds across
//! replicas and restarts.

mod handler;
mod identity;

use std::sync::Arc;
use std::time::Duration;

mod housekeeping;
mod registrar;
pub use housekeeping::{Housekeeper, Listed, RunnerPods, Swept};
pub use registrar::GitHubRegistrar;

use futures::future::BoxFuture;
use secrecy::SecretString;
use tokio::sync::watch;

use crate::demand::{Runner, RunnerIndex, RunnerKey, Scope};
use crate::github::Credential;
use crate::github::reconciler::RepoTokens;
use crate::metrics::Metrics;

pub use handler::jitconfig;
pub use identity::KubeIdentity;

/// The audience a pod's token must be issued for: a token for the Kubernetes API (or anyone
/// else) is refused, and this one is refused by the Kubernetes API.
pub const AUDIENCE: &str = "github-action-autoscaler";

/// Longest runner name GitHub takes.
const MAX_RUNNER_NAME: usize = 64;

/// Longest token passed on to the cluster (a ServiceAccount token is about a kilobyte).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// TokenReviews in flight at once: a stranger's requests cost the cluster a bounded amount.
const MAX_REVIEWS: usize = 8;

/// The pod a token is bound to, as the cluster vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The StatefulSet that controls the pod, if one does.
    pub stateful_set: Option<String>,
}

/// Why a token does not identify a pod.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not a token the cluster issued for this audience, expired, or not bound to a live pod.
    #[error("{0}")]
    Refused(String),
    /// The cluster could not be asked.
    #[error("the cluster could not check the token: {0}")]
    Unavailable(String),
}

/// Who presents a token: the cluster's TokenReview in production.
pub trait PodIdentity: Send + Sync {
    fn identify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<BoundPod, IdentityError>>;
}

/// Where a runner registers: a repository, or an organisation in a runner group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Repository { owner: String, repo: String },
    Organization { org: String, group: String },
}

/// What minting needs of an ephemeral runner.
#[derive(Debug, Clone)]
pub struct EphemeralRunner {
    pub key: RunnerKey,
    pub place: Place,
    /// As the runner registers: without the implied `self-hosted`, which GitHub adds.
    pub labels: Vec<String>,
    pub credential: Credential,
}

/// A configuration minted for one runner.
pub struct Minted {
    pub runner_id: u64,
    pub runner_name: String,
    pub encoded: SecretString,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").field("runner_id", &self.runner_id).field("runner_name", &self.runner_name).finish()
    }
}

/// A runner GitHub holds under a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub id: u64,
    pub busy: bool,
}

/// What deleting a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted, or already gone.
    Gone,
    /// GitHub refused: the runner is running a job.
    Busy,
}

/// Why GitHub did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    #[error("a runner of that name is registered")]
    NameTaken,
    #[error("GitHub's rate limit: retry in {} s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Failed(String),
}

/// GitHub's side of registrations.
pub trait Registrar: Send + Sync {
    fn mint<'a>(&'a self, runner: &'a EphemeralRunner, name: &'a str) -> BoxFuture<'a, Result<Minted, RegistrarError>>;
    fn find<'a>(
        &'a self,
        runner: &'a EphemeralRunner,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Registered>, RegistrarError>>;
    fn delete<'a>(&'a self, runner: &'a EphemeralRunner, id: u64) -> BoxFuture<'a, Result<Deleted, RegistrarError>>;
    /// Every registration of the runner's place (a repository, or an organisation).
    fn list<'a>(&'a self, runner: &'a EphemeralRunner) -> BoxFuture<'a, Result<Vec<Listed>, RegistrarError>>;
}

/// Why a configuration was not given, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String, Duration),
    #[error("{0}")]
    Unavailable(String),
}

impl JitError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::RateLimited(..) => 429,
            Self::Unavailable(_) => 503,
        }
    }

    /// When to ask again, for 429 and 503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited(_, after) => Some(*after),
            Self::Unavailable(_) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }
}

/// The runners and their credentials, as the catalog publishes them.
pub type Catalogs = watch::Receiver<(RunnerIndex, RepoTokens)>;

/// Mints configurations for the pods of ephemeral runners.
pub struct JitService {
    identity: Arc<dyn PodIdentity>,
    registrar: Arc<dyn Registrar>,
    catalogs: Catalogs,
    metrics: Arc<Metrics>,
    reviews: tokio::sync::Semaphore,
}

impl std::fmt::Debug for JitService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitService").finish_non_exhaustive()
    }
}

/// The name every registration of a pod carries: its name and the start of its uid (a pod
/// recreated under the same name is another pod), within GitHub's 64 characters.
pub fn runner_name(pod: &BoundPod) -> String {
    let uid: String = pod.uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let room = MAX_RUNNER_NAME - uid.len() - 1;
    let name: String = pod.name.chars().take(room).collect();
    format!("{name}-{uid}")
}

impl JitService {
    pub fn new(
        identity: Arc<dyn PodIdentity>,
        registrar: Arc<dyn Registrar>,
        catalogs: Catalogs,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { identity, registrar, catalogs, metrics, reviews: tokio::sync::Semaphore::new(MAX_REVIEWS) }
    }

    /// A configuration for the pod whose token is `token`, of runner `namespace/name`.
    pub async fn issue(&self, namespace: &str, name: &str, token: Option<&str>) -> Result<Minted, JitError> {
        let result = self.issue_inner(namespace, name, token).await;
        let outcome = match &result {
            Ok(_) => "minted",
            Err(JitError::Unauthorized(_)) => "unauthorized",
            Err(JitError::Forbidden(_)) => "forbidden",
            Err(JitError::NotFound(_)) => "not_found",
            Err(JitError::Conflict(_)) => "conflict",
            Err(JitError::RateLimited(..)) => "rate_limited",
            Err(JitError::Unavailable(_)) => "unavailable",
        };
        self.metrics.jit_request(outcome);
        result
    }

    async fn issue_inner(&self, namespace: &str, name: &str, token: Option<&str>) -> Result<Minted, JitError> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            JitError::Unauthorized("an Authorization: Bearer token of the pod's ServiceAccount is required".into())
        })?;
        // Only what could be a ServiceAccount token (a JWT) reaches the cluster, a few at a time.
        let jwt_shaped = token.len() <= MAX_TOKEN_BYTES
            && token.split('.').count() == 3
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !jwt_shaped {
            return Err(JitError::Unauthorized("the token is not a ServiceAccount token".into()));
        }
        let Ok(_review) = self.reviews.try_acquire() else {
            return Err(JitError::Unavailable("too many token reviews in flight".into()));
        };
        let pod = self.identity.identify(token).await.map_err(|error| match error {
            IdentityError::Refused(reason) => JitError::Unauthorized(reason),
            IdentityError::Unavailable(reason) => JitError::Unavailable(reason),
        })?;
        // 404 before 403 before 409: what is not there, then whose pod it is, then what it is.
        let runner = {
            let (index, tokens) = &*self.catalogs.borrow();
            let key = RunnerKey::new(namespace, name);
            let runner = index.get(&key).ok_or_else(|| JitError::NotFound(format!("no ScaledActionRunner {key}")))?;
            ephemeral_view(runner, tokens)
        };
        if pod.namespace != namespace || pod.stateful_set.as_deref() != Some(name) {
            return Err(JitError::Forbidden(format!(
                "the token is bound to pod {}/{}, which is not a runner pod of {namespace}/{name}",
                pod.namespace, pod.name
            )));
        }
        let runner = runner?;
        let runner_name = runner_name(&pod);
        self.mint_once(&runner, &runner_name).await
    }

    /// Mints for `name`, unless a runner of that name is busy; one not running a job is deleted
    /// first (it never took one, or finished without GitHub removing it yet).
    async fn mint_once(&self, runner: &EphemeralRunner, name: &str) -> Result<Minted, JitError> {
        for _ in 0..2 {
            match self.registrar.mint(runner, name).await {
                Ok(minted) => {
                    tracing::info!(runner = %runner.key, runner_name = %minted.runner_name, id = minted.runner_id, "just-in-time runner registered");
                    return Ok(minted);
                }
                Err(RegistrarError::NameTaken) => {}
                Err(error) => return Err(github_error(error)),
            }
            match self.registrar.find(runner, name).await.map_err(github_error)? {
                None => continue,
                Some(Registered { busy: true, .. }) => return Err(busy(name)),
                Some(Registered { id, busy: false }) => match self.registrar.delete(runner, id).await {
                    Ok(Deleted::Gone) => {
                        tracing::info!(runner = %runner.key, runner_name = %name, id, "unused just-in-time registration deleted");
                    }
                    Ok(Deleted::Busy) => return Err(busy(name)),
                    Err(error) => return Err(github_error(error)),
                },
            }
        }
        Err(JitError::Unavailable(format!("GitHub kept a runner named {name} after it was deleted")))
    }
}

fn busy(name: &str) -> JitError {
    JitError::Conflict(format!("this pod's runner {name} is running a job: a new one is registered once it ends"))
}

fn github_error(error: RegistrarError) -> JitError {
    match error {
        RegistrarError::RateLimited { retry_after } => {
            JitError::RateLimited("GitHub's rate limit: try again later".into(), retry_after)
        }
        RegistrarError::NameTaken => JitError::Conflict(error.to_string()),
        RegistrarError::Failed(reason) => JitError::Unavailable(format!("GitHub: {reason}")),
    }
}

/// What minting needs of `runner`, or why it cannot be minted for (409).
fn ephemeral_view(runner: &Runner, tokens: &RepoTokens) -> Result<EphemeralRunner, JitError> {
    if !runner.ephemeral {
        return Err(JitError::Conflict(format!(
            "{} is not ephemeral (spec.runner.ephemeral): its runners are registered otherwise",
            runner.key
        )));
    }
    let place = match runner.scope {
        Scope::Repository => {
            let (owner, repo) = runner.repo.split_once('/').unwrap_or((&runner.repo, ""));
            Place::Repository { owner: owner.into(), repo: repo.into() }
        }
        Scope::Organization => Place::Organization {
            org: runner.repo.clone(),
            group: runner.runner_group.clone().unwrap_or_else(|| crate::crd::DEFAULT_RUNNER_GROUP.to_string()),
        },
    };
    let credential = tokens.0.get(&runner.repo).and_then(|c| c.first()).cloned().ok_or_else(|| {
        JitError::Conflict(format!(
            "{}: no GitHub credential (githubTokenSecret, or serve's own) to register with",
            runner.key
        ))
    })?;
    let labels =
        runner.labels.iter().filter(|label| *label != crate::demand::runners::IMPLIED_LABEL).cloned().collect();
    Ok(EphemeralRunner { key: runner.key.clone(), place, labels, credential })
}

#[cfg(test)]
mod tests;
