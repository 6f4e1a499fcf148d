//! `serve`: the webhook receiver, read API and operational endpoints on one listener.

use std::future::Future;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::api;
use crate::catalog::Catalog;
use crate::config::ServeArgs;
use crate::manifests;
use crate::metrics::Metrics;
use crate::store::memcached::{Credentials, Memcached, MemcachedOptions, StoreUrl, StoreUrlError};
use crate::store::shared::SyncConfig;
use crate::store::writer::SharedSetup;
use crate::store::{JournalError, StoreHandle, WriterConfig};
use crate::webhook::{self, MAX_BODY_BYTES, SecretBytes, WebhookSecrets};

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    secrets: RwLock<Arc<WebhookSecrets>>,
    pub manifest_problems: usize,
}

impl AppState {
    pub fn new(store: StoreHandle, metrics: Arc<Metrics>, secrets: WebhookSecrets, manifest_problems: usize) -> Self {
        Self { store, metrics, secrets: RwLock::new(Arc::new(secrets)), manifest_problems }
    }

    /// The secrets in force now.
    pub fn secrets(&self) -> Arc<WebhookSecrets> {
        self.secrets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_secrets(&self, secrets: WebhookSecrets) {
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(secrets);
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhook", post(webhook::webhook))
        .route("/api/v1/scaledactionrunners", get(api::list_runners))
        .route("/api/v1/namespaces/{namespace}/scaledactionrunners/{name}", get(api::get_runner))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .fallback(api::fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestsError),
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

/// Loads runners (standalone), reads secrets, and builds the catalog. Problems are logged.
fn load_catalog(args: &ServeArgs, metrics: &Metrics) -> Result<(Catalog, usize), ServeError> {
    let organisation = match &args.webhook_secret_file {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|source| ServeError::SecretFile { path: path.display().to_string(), source })?;
            let secret = SecretBytes::new(bytes);
            if secret.is_empty() {
                return Err(ServeError::EmptySecretFile(path.display().to_string()));
            }
            Some(secret)
        }
    };
    let Some(dir) = &args.manifests else {
        tracing::warn!(
            "no --manifests directory: no runners are defined, deliveries are journaled but count toward none"
        );
        return Ok((Catalog::build([], [], organisation).0, 0));
    };
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

/// Runs the server until `shutdown` resolves; then stops taking requests, finishes those in
/// flight, and flushes the journal.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let (catalog, problems) = load_catalog(&args, &metrics)?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| ServeError::DataDir { path: args.data_dir.display().to_string(), source })?;
    let config = WriterConfig {
        checkpoint_every: args.checkpoint_interval,
        retention: args.journal_retention,
        shared: shared_store(&args)?,
        ..WriterConfig::default()
    };
    let store = StoreHandle::start(&args.data_dir, catalog.runners, config, metrics.clone())?;
    let state = Arc::new(AppState::new(store.clone(), metrics, catalog.secrets, problems));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: args.listen.to_string(), source })?;
    let local = listener.local_addr().map_err(ServeError::Http)?;
    tracing::info!(listen = %local, data_dir = %args.data_dir.display(), "serving");
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await;
    tracing::info!("shutting down: flushing the journal");
    store.shutdown().await;
    served.map_err(ServeError::Http)
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
