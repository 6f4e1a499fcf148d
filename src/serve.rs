//! `serve`: the webhook receiver, read API and operational endpoints on one listener.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::api;
use crate::catalog::Catalog;
use crate::cluster::{self, CatalogUpdates, WatchConfig};
use crate::config::ServeArgs;
use crate::demand::RunnerIndex;
use crate::github::client::{GitHubClient, Token};
use crate::github::reconciler::{Reconciler, ReconcilerConfig, RepoTokens};
use crate::github::resync::Windows;
use crate::http::ReadAccess;
use crate::http::accept::{self, Listener, Protocol, Shutdown, Transport};
use crate::http::limits;
use crate::lease::LeaseConfig;
use crate::manifests;
use crate::metrics::Metrics;
use crate::store::memcached::{Credentials, Memcached, MemcachedOptions, StoreUrl, StoreUrlError};
use crate::store::shared::SyncConfig;
use crate::store::writer::SharedSetup;
use crate::store::{JournalError, StoreHandle, WriterConfig};
use crate::tls::{ReloadingTls, SecretToken, TlsFiles, require_bearer};
use crate::webhook::{self, Intake, MAX_BODY_BYTES, SecretBytes, WebhookSecrets};

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    /// The budget of body bytes that requests not yet verified may hold.
    pub intake: Intake,
    /// Swapped whole when the runners' Secrets change; a request clones the `Arc` once.
    secrets: RwLock<Arc<WebhookSecrets>>,
    manifest_problems: AtomicUsize,
    /// False in a cluster until the first full list of runners and their Secrets was seen.
    catalog_loaded: AtomicBool,
}

impl AppState {
    /// A state whose catalog is complete (standalone: loaded from the manifests).
    pub fn new(store: StoreHandle, metrics: Arc<Metrics>, secrets: WebhookSecrets, manifest_problems: usize) -> Self {
        Self {
            store,
            metrics,
            intake: Intake::default(),
            secrets: RwLock::new(Arc::new(secrets)),
            manifest_problems: AtomicUsize::new(manifest_problems),
            catalog_loaded: AtomicBool::new(true),
        }
    }

    /// A state that is not ready until [`set_catalog`](Self::set_catalog) is called.
    pub fn waiting_for_catalog(store: StoreHandle, metrics: Arc<Metrics>, secrets: WebhookSecrets) -> Self {
        let state = Self::new(store, metrics, secrets, 0);
        state.catalog_loaded.store(false, Ordering::Release);
        state
    }

    /// The webhook secrets of every repository, as of now.
    pub fn secrets(&self) -> Arc<WebhookSecrets> {
        // A panic elsewhere while holding the lock cannot leave a half-written Arc behind.
        self.secrets.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the webhook secrets and the problem count, and marks the catalog loaded.
    pub fn set_catalog(&self, secrets: WebhookSecrets, manifest_problems: usize) {
        *self.secrets.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(secrets);
        self.manifest_problems.store(manifest_problems, Ordering::Relaxed);
        self.catalog_loaded.store(true, Ordering::Release);
    }

    /// Runners (or manifest documents) left out or served only in part.
    pub fn manifest_problems(&self) -> usize {
        self.manifest_problems.load(Ordering::Relaxed)
    }

    /// Whether the runners and their Secrets have been loaded once.
    pub fn catalog_loaded(&self) -> bool {
        self.catalog_loaded.load(Ordering::Acquire)
    }
}

/// Every route, reads open to all: for tests and embedding behind something that authenticates.
pub fn router(state: Arc<AppState>) -> Router {
    router_for(state, &ReadAccess::Open)
}

/// The routes; with a token, reading demand and metrics requires `Authorization: Bearer`
/// (KEDA's `authMode: bearer`), while webhooks (signed) and health probes stay open.
pub fn router_with(state: Arc<AppState>, token: Option<SecretToken>) -> Router {
    router_for(state, &token.map_or(ReadAccess::Open, ReadAccess::Token))
}

/// The routes of a listener with `access`: webhooks (signed) and health probes always; reading
/// demand and metrics only when the listener may serve reads, behind the token when it has one.
pub fn router_for(state: Arc<AppState>, access: &ReadAccess) -> Router {
    let reads = || {
        Router::new()
            .route("/api/v1/scaledactionrunners", get(api::list_runners))
            .route("/api/v1/namespaces/{namespace}/scaledactionrunners/{name}", get(api::get_runner))
            .route("/metrics", get(api::metrics))
            .merge(crate::metrics_api::custom_metrics::routes())
    };
    let routes = Router::new()
        .route("/webhook", post(webhook::webhook))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz));
    let routes = match access {
        ReadAccess::Closed => routes,
        ReadAccess::Open => routes.merge(reads()),
        ReadAccess::Token(token) => routes.merge(reads().route_layer(require_bearer(token.clone()))),
    };
    routes.fallback(api::fallback).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestsError),
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
    #[error("TLS: {0}")]
    Tls(String),
}

/// The shared store from `--store`, or `None` for the embedded one.
fn shared_store(args: &ServeArgs) -> Result<Option<SharedSetup>, ServeError> {
    let store = args.store.trim();
    if store.is_empty() || store == "sled" {
        return Ok(None);
    }
    let url: StoreUrl = store.parse().map_err(|e: StoreUrlError| ServeError::Store(e.to_string()))?;
    let credentials = match &args.memcached_user {
        None => None,
        Some(user) => {
            let password = match (&args.memcached_password_file, std::env::var("GAA_MEMCACHED_PASSWORD")) {
                (Some(path), _) => std::fs::read_to_string(path)
                    .map_err(|e| ServeError::Store(format!("reading {}: {e}", path.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                (None, Ok(password)) => password,
                (None, Err(_)) => {
                    return Err(ServeError::Store(
                        "--memcached-user needs --memcached-password-file or GAA_MEMCACHED_PASSWORD".into(),
                    ));
                }
            };
            Some(Credentials::new(user.clone(), password).map_err(|e| ServeError::Store(e.to_string()))?)
        }
    };
    let options = MemcachedOptions { credentials, ..MemcachedOptions::default() };
    let memcached = Memcached::new(&url, options).map_err(|e| ServeError::Store(e.to_string()))?;
    tracing::info!(servers = ?memcached.servers(), "demand shared through memcached");
    let config = SyncConfig {
        prefix: args.store_prefix.clone(),
        refresh_every: args.store_refresh_interval,
        ..SyncConfig::default()
    };
    Ok(Some(SharedSetup { kv: Arc::new(memcached), config }))
}

/// The organisation-wide webhook secret from `--webhook-secret-file`, if given.
fn organisation_secret(args: &ServeArgs) -> Result<Option<SecretBytes>, ServeError> {
    let Some(path) = &args.webhook_secret_file else {
        return Ok(None);
    };
    let bytes =
        std::fs::read(path).map_err(|source| ServeError::SecretFile { path: path.display().to_string(), source })?;
    let secret = SecretBytes::new(bytes);
    if secret.is_empty() {
        return Err(ServeError::EmptySecretFile(path.display().to_string()));
    }
    Ok(Some(secret))
}

/// Loads runners and Secrets from the manifests in `dir` and builds the catalog. Problems are logged.
fn load_catalog(
    dir: &std::path::Path,
    organisation: Option<SecretBytes>,
    metrics: &Metrics,
) -> Result<(Catalog, usize), ServeError> {
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

/// Runs the server until `shutdown` resolves; then stops taking requests, gives those in flight
/// `--shutdown-grace` to finish, drops the rest, and flushes the journal.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let organisation = organisation_secret(&args)?;
    // Standalone the catalog is complete now; in a cluster it starts empty and follows the watches.
    let (catalog, problems) = match &args.manifests {
        Some(dir) => load_catalog(dir, organisation.clone(), &metrics)?,
        None => (Catalog::build([], [], organisation.clone()).0, 0),
    };
    let kube_client = match &args.manifests {
        Some(_) => None,
        None => Some(kube::Client::try_default().await.map_err(ServeError::KubeClient)?),
    };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| ServeError::DataDir { path: args.data_dir.display().to_string(), source })?;
    let config = WriterConfig {
        checkpoint_every: args.checkpoint_interval,
        commit_delay: args.commit_delay,
        retention: args.journal_retention,
        shared: shared_store(&args)?,
        ..WriterConfig::default()
    };
    let catalog_runners = catalog.runners.clone();
    let default_token = default_token(&args)?;
    let repo_tokens = repo_tokens(&catalog, default_token.as_ref());
    let store = StoreHandle::start(&args.data_dir, catalog.runners, config, metrics.clone())?;
    let state = Arc::new(match kube_client {
        None => AppState::new(store.clone(), metrics.clone(), catalog.secrets, problems),
        Some(_) => AppState::waiting_for_catalog(store.clone(), metrics.clone(), catalog.secrets),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut followers = Vec::new();
    let mut catalogs = None;
    if let Some(client) = kube_client {
        let config = WatchConfig::new(args.namespaces.clone(), args.token_namespace.clone(), organisation);
        let (updates, watching) = cluster::start(client, config, stop_rx.clone());
        let (to_reconciler, from_catalog) =
            tokio::sync::watch::channel((RunnerIndex::default(), RepoTokens::default()));
        catalogs = Some(from_catalog);
        followers.push(watching);
        followers.push(tokio::spawn(follow_catalog(state.clone(), updates, default_token, Some(to_reconciler))));
    }
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_string(), source })
    };
    let listener = bind(args.listen).await?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(listen = %local, data_dir = %args.data_dir.display(), "serving");
    // One shutdown for every listener: stop accepting, then drop what is left after the grace.
    let shutdown = Shutdown::after(shutdown, args.shutdown_grace);
    let token = match &args.metrics_token_file {
        None => None,
        Some(path) => Some(SecretToken::from_file(path).map_err(|e| ServeError::Tls(e.to_string()))?),
    };
    let listeners = 1 + usize::from(args.tls_listen.is_some()) + usize::from(args.grpc_listen.is_some());
    let open_files = limits::open_files_limit();
    let limits = crate::http::limits::Limits {
        max_connections: limits::connection_cap(args.max_connections, listeners, open_files),
        ..args.limits()
    };
    if limits.max_connections < args.max_connections {
        tracing::warn!(
            wanted = args.max_connections,
            max_connections = limits.max_connections,
            open_files = open_files.unwrap_or_default(),
            listeners,
            "--max-connections lowered to fit the open-files limit"
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        tls_handshake_timeout = ?limits.handshake_timeout,
        header_read_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_read_timeout = ?limits.body_timeout,
        shutdown_grace = ?args.shutdown_grace,
        "connection limits of every listener"
    );
    let reads = |client_certificates: bool| {
        ReadAccess::of_listener(client_certificates, token.as_ref(), args.unauthenticated_reads)
    };
    let mut extra = Vec::new();
    let mut grpc_tls: Option<ReloadingTls> = None;
    if let Some(addr) = args.tls_listen {
        let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) else {
            return Err(ServeError::Tls("--tls-listen needs --tls-cert and --tls-key".into()));
        };
        let files = TlsFiles { cert, key, client_ca: args.client_ca.clone() };
        let tls = ReloadingTls::start(files, crate::tls::DEFAULT_POLL_INTERVAL)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
        let tcp = bind(addr).await?;
        let access = reads(!args.client_ca.is_empty());
        tracing::info!(tls_listen = %addr, client_certificates = !args.client_ca.is_empty(), reads = access.describe(), "serving TLS");
        grpc_tls = Some(tls.clone());
        let listener = Listener { name: "tls", tcp, transport: Transport::Tls(tls), protocol: Protocol::Http, limits };
        extra.push(tokio::spawn(accept::serve(listener, router_for(state.clone(), &access), shutdown.clone())));
    }
    if let Some(addr) = args.grpc_listen {
        let tcp = bind(addr).await?;
        let access = reads(grpc_tls.is_some() && !args.client_ca.is_empty());
        if matches!(access, ReadAccess::Closed) {
            tracing::warn!(grpc_listen = %addr, "the gRPC listener authenticates nobody: every call is refused");
        }
        tracing::info!(grpc_listen = %addr, tls = grpc_tls.is_some(), reads = access.describe(), "serving KEDA external-push gRPC");
        let scaler = crate::metrics_api::external_scaler::PushScaler::new(store.board().clone());
        // Open streams never end by themselves: end them when shutdown starts.
        let (closer, stop) = (scaler.clone(), shutdown.stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            closer.close_streams();
        });
        let transport = grpc_tls.map_or(Transport::Plain, Transport::Tls);
        let listener = Listener { name: "grpc", tcp, transport, protocol: Protocol::Grpc, limits };
        let routes = crate::metrics_api::external_scaler::router(scaler, access);
        extra.push(tokio::spawn(accept::serve(listener, routes, shutdown.clone())));
    }
    extra.push(tokio::spawn(keep_forced_windows(
        store.board().clone(),
        metrics.clone(),
        crate::store::writer::system_clock(),
        shutdown.stop.clone().cancelled_owned(),
    )));
    let resync =
        start_reconciler(&args, &catalog_runners, repo_tokens, store.clone(), metrics.clone(), stop_rx, catalogs)?;
    let access = reads(false);
    tracing::info!(listen = %local, reads = access.describe(), "serving HTTP");
    let listener =
        Listener { name: "http", tcp: listener, transport: Transport::Plain, protocol: Protocol::Http, limits };
    accept::serve(listener, router_for(state, &access), shutdown).await;
    for server in extra {
        let _ = server.await;
    }
    tracing::info!("shutting down: flushing the journal");
    let _ = stop_tx.send(true);
    if let Some(resync) = resync {
        let _ = resync.await;
    }
    for follower in followers {
        follower.abort();
    }
    store.shutdown().await;
    Ok(())
}

/// The token of `--github-token-file`, for repositories whose runners name none.
fn default_token(args: &ServeArgs) -> Result<Option<Token>, ServeError> {
    let Some(path) = &args.github_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|source| ServeError::SecretFile { path: path.display().to_string(), source })?;
    let token = Token::new(text);
    if token.is_empty() {
        return Err(ServeError::EmptySecretFile(path.display().to_string()));
    }
    Ok(Some(token))
}

/// GitHub tokens per repository: the runners' own, else the default token.
fn repo_tokens(catalog: &Catalog, default: Option<&Token>) -> RepoTokens {
    let mut tokens = RepoTokens::default();
    for runner in catalog.runners.iter() {
        let own: Vec<Token> = catalog
            .tokens
            .get(&runner.repo)
            .into_iter()
            .flatten()
            .map(|secret| Token::new(String::from_utf8_lossy(secret.expose()).into_owned()))
            .collect();
        let chosen = if own.is_empty() { default.into_iter().cloned().collect() } else { own };
        tokens.0.insert(runner.repo.clone(), chosen);
    }
    tokens
}

/// Applies each catalog the cluster watches publish, in this order: the store's runners (so a
/// delivery for a new repository already counts), the router's webhook secrets and readiness,
/// then the reconciler's repositories and tokens. Returns when the watches stop.
pub async fn follow_catalog(
    state: Arc<AppState>,
    mut updates: CatalogUpdates,
    default_token: Option<Token>,
    reconciler: Option<tokio::sync::watch::Sender<(RunnerIndex, RepoTokens)>>,
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

/// Starts the resync loop when any repository has a token, or, following the cluster's
/// `catalogs`, always (tokens may come later); only the replica holding the lease resyncs.
fn start_reconciler(
    args: &ServeArgs,
    runners: &RunnerIndex,
    tokens: RepoTokens,
    store: StoreHandle,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
    catalogs: Option<tokio::sync::watch::Receiver<(RunnerIndex, RepoTokens)>>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    let with_token = tokens.0.values().filter(|t| !t.is_empty()).count();
    let clock = crate::store::writer::system_clock();
    let client =
        GitHubClient::new(&args.github_api_url, metrics.clone()).map_err(|e| ServeError::GitHub(e.to_string()))?;
    let config = ReconcilerConfig {
        windows: Windows { busy: args.cache_window, idle: args.cache_window_when_empty },
        ..ReconcilerConfig::default()
    };
    let mut reconciler = Reconciler::new(Arc::new(client), store, config, metrics);
    reconciler.set_catalog(runners.clone(), tokens, clock());
    if with_token == 0 && catalogs.is_none() {
        tracing::info!("no GitHub token: demand comes from webhooks alone (no resync)");
        return Ok(None);
    }
    tracing::info!(
        repositories = with_token,
        api = %args.github_api_url,
        cache_window = ?args.cache_window,
        cache_window_when_empty = ?args.cache_window_when_empty,
        "resyncing from GitHub"
    );
    let (leading_tx, leading) = tokio::sync::watch::channel(args.lease_namespace.is_none());
    if let Some(namespace) = &args.lease_namespace {
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("github-action-autoscaler-{}", std::process::id()));
        let config = LeaseConfig::new(namespace.clone(), args.lease_name.clone(), identity);
        let (clock, stop) = (clock.clone(), stop.clone());
        tokio::spawn(async move {
            match kube::Client::try_default().await {
                Ok(client) => {
                    let api = kube::Api::namespaced(client, &config.namespace);
                    crate::lease::run(api, config, clock, leading_tx, stop).await;
                }
                Err(error) => tracing::error!(%error, "no Kubernetes client for the resync lease: not resyncing"),
            }
        });
    }
    Ok(Some(tokio::spawn(reconciler.run(clock, leading, stop, catalogs))))
}

/// Opens and closes forced scale-up windows on time, looking at least once a minute so runners
/// added since are covered; the desired-runners gauge follows.
async fn keep_forced_windows(
    board: Arc<crate::store::Board>,
    metrics: Arc<Metrics>,
    clock: crate::store::writer::Clock,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let now = clock();
        let refreshed = board.refresh_forced(now);
        for view in &refreshed.changed {
            metrics.runner(view);
        }
        let wait = refreshed.next.map_or(60, |at| (at - now).clamp(1, 60));
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(wait.unsigned_abs())) => {}
            () = &mut stop => return,
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::demand::{ForcedScaleUp, Runner, RunnerKey, ScaleFactor};

    #[tokio::test]
    async fn the_desired_runners_gauge_follows_a_forced_window_as_it_opens_and_closes() {
        let mut runner = Runner::new(RunnerKey::new("ci", "web"), "acme", "web", ["linux"], 0, 4, ScaleFactor::Linear);
        // A 100 s window every 1,000 s, from 0.
        runner.forced = ForcedScaleUp::new(Duration::from_secs(1000), Duration::from_secs(100), 0);
        let index = RunnerIndex::new(vec![runner]);
        let board = Arc::new(crate::store::Board::default());
        board.publish_all(&index, |_| None);
        let metrics = Arc::new(Metrics::new());
        for view in board.list() {
            metrics.runner(&view);
        }
        let gauge = r#"gaa_runner_desired{namespace="ci",name="web"}"#;
        let at = |now: i64| -> crate::store::writer::Clock { Arc::new(move || now) };

        keep_forced_windows(board.clone(), metrics.clone(), at(50), std::future::ready(())).await;
        assert!(metrics.encode().contains(&format!("{gauge} 4")), "{}", metrics.encode());

        keep_forced_windows(board.clone(), metrics.clone(), at(100), std::future::ready(())).await;
        assert!(metrics.encode().contains(&format!("{gauge} 0")), "{}", metrics.encode());
    }
}
