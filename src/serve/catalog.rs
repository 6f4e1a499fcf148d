//! Where the runners and their secrets come from: the manifests (standalone) or the cluster's
//! watches, and how each catalog reaches the store, the router and the reconciler.

use std::path::Path;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ServeError;
use crate::catalog::Catalog;
use crate::cluster::{self, CatalogUpdates, WatchConfig};
use crate::config::ClusterArgs;
use crate::demand::RunnerIndex;
use crate::github::reconciler::RepoTokens;
use crate::github::{Credential, Token};
use crate::http::AppState;
use crate::manifests;
use crate::metrics::Metrics;
use crate::store::StoreHandle;
use crate::webhook::{SecretBytes, secret_bytes};

/// What the reconciler follows in a cluster: the runners and their tokens.
pub(super) type ReconcilerCatalogs = watch::Receiver<(RunnerIndex, RepoTokens)>;

/// The first catalog, and the cluster to follow when there are no manifests.
pub(super) struct Source {
    pub catalog: Catalog,
    pub problems: usize,
    pub organisation: Option<SecretBytes>,
    pub cluster: Option<kube::Client>,
}

/// Standalone the catalog is complete now; in a cluster it starts empty and follows the watches.
pub(super) async fn source(args: &ClusterArgs, metrics: &Metrics) -> Result<Source, ServeError> {
    let organisation = organisation_secret(args)?;
    let (catalog, problems) = match &args.manifests {
        Some(dir) => load(dir, organisation.clone(), metrics)?,
        None => (Catalog::build([], [], organisation.clone()).0, 0),
    };
    let cluster = match &args.manifests {
        Some(_) => None,
        None => Some(kube::Client::try_default().await.map_err(ServeError::KubeClient)?),
    };
    Ok(Source { catalog, problems, organisation, cluster })
}

impl Source {
    /// The handlers' state over `store`: ready now, or once the cluster's first catalog arrived.
    pub(super) fn state(&self, store: StoreHandle, metrics: Arc<Metrics>) -> AppState {
        let secrets = self.catalog.secrets.clone();
        match self.cluster {
            None => AppState::new(store, metrics, secrets, self.problems),
            Some(_) => AppState::waiting_for_catalog(store, metrics, secrets),
        }
    }
}

/// The organisation-wide webhook secret from `--webhook-secret-file`, if given.
fn organisation_secret(args: &ClusterArgs) -> Result<Option<SecretBytes>, ServeError> {
    let Some(path) = &args.webhook_secret_file else {
        return Ok(None);
    };
    let bytes =
        std::fs::read(path).map_err(|source| ServeError::SecretFile { path: path.display().to_string(), source })?;
    let secret = secret_bytes(bytes);
    if secret.expose_secret().is_empty() {
        return Err(ServeError::EmptySecretFile(path.display().to_string()));
    }
    Ok(Some(secret))
}

/// Loads runners and Secrets from the manifests in `dir` and builds the catalog. Problems are logged.
fn load(dir: &Path, organisation: Option<SecretBytes>, metrics: &Metrics) -> Result<(Catalog, usize), ServeError> {
    let loaded = manifests::load_dir(dir)?;
    let mut problems = loaded.problems.len();
    for problem in &loaded.problems {
        tracing::error!(%problem, "invalid manifest document skipped");
    }
    let (catalog, runner_problems) = Catalog::build(
        loaded.runners.iter().map(|l| &l.object),
        loaded.secrets.iter().map(|l| &l.object),
        organisation,
    );
    for (position, problem) in runner_problems {
        let source = &loaded.runners[position].source;
        if problem.is_warning() {
            tracing::warn!(%source, %problem, "runner loaded with a problem");
        } else {
            problems += 1;
            tracing::error!(%source, %problem, "runner skipped");
        }
    }
    metrics.manifest_problems.set(i64::try_from(problems).unwrap_or(i64::MAX));
    tracing::info!(
        dir = %dir.display(),
        runners = catalog.runners.len(),
        repositories_with_secrets = catalog.secrets.repositories(),
        organisation_secret = catalog.secrets.has_organisation_secret(),
        problems,
        "manifests loaded"
    );
    Ok((catalog, problems))
}

/// GitHub credentials per repository: the runners' own (tokens and Apps), else the default.
pub(super) fn repo_tokens(catalog: &Catalog, default: Option<&Credential>) -> RepoTokens {
    let mut tokens = RepoTokens::default();
    for runner in catalog.runners.iter() {
        let own: Vec<Credential> = catalog
            .tokens
            .get(&runner.repo)
            .into_iter()
            .flatten()
            .map(|secret| Credential::Token(Token::new(String::from_utf8_lossy(secret.expose_secret()).into_owned())))
            .chain(catalog.apps.get(&runner.repo).into_iter().flatten().cloned().map(Credential::App))
            .collect();
        let chosen = if own.is_empty() { default.into_iter().cloned().collect() } else { own };
        tokens.0.insert(runner.repo.clone(), chosen);
    }
    tokens
}

/// In a cluster: starts the watches and the task that applies what they publish; returns both
/// tasks and what the reconciler follows.
pub(super) fn follow_cluster(
    source: Source,
    args: &ClusterArgs,
    state: AppState,
    default_token: Option<Credential>,
    stop: CancellationToken,
) -> (Vec<JoinHandle<()>>, Option<ReconcilerCatalogs>) {
    let Some(client) = source.cluster else {
        return (Vec::new(), None);
    };
    let (updates, watching) = cluster::start(client, WatchConfig::from_args(args, source.organisation), stop);
    let (to_reconciler, from_catalog) = watch::channel((RunnerIndex::default(), RepoTokens::default()));
    let following = tokio::spawn(follow_catalog(state, updates, default_token, Some(to_reconciler)));
    (vec![watching, following], Some(from_catalog))
}

/// Applies each catalog the cluster watches publish, in this order: the store's runners (so a
/// delivery for a new repository already counts), the router's webhook secrets and readiness,
/// then the reconciler's repositories and tokens. Returns when the watches stop.
pub async fn follow_catalog(
    state: AppState,
    mut updates: CatalogUpdates,
    default_token: Option<Credential>,
    reconciler: Option<watch::Sender<(RunnerIndex, RepoTokens)>>,
) {
    while updates.changed().await.is_ok() {
        let Some(update) = updates.borrow_and_update().clone() else {
            continue;
        };
        let catalog = &update.catalog;
        if let Err(error) = state.store.set_runners(catalog.runners.clone()).await {
            tracing::error!(%error, "the store stopped: runner changes are no longer applied");
            return;
        }
        state.set_catalog(catalog.secrets.clone(), update.problems);
        state.metrics.manifest_problems.set(i64::try_from(update.problems).unwrap_or(i64::MAX));
        if let Some(reconciler) = &reconciler {
            reconciler.send_replace((catalog.runners.clone(), repo_tokens(catalog, default_token.as_ref())));
        }
    }
}
