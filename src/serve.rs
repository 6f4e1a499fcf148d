//! `serve`: the webhook receiver, read API and operational endpoints, composed and run.

mod catalog;
mod error;
mod forced;
mod listeners;
mod resync;
mod store;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use self::catalog::follow_catalog;
pub use self::error::ServeError;
use crate::config::ServeArgs;
use crate::http::accept::Shutdown;
use crate::metrics::Metrics;
use crate::store::StoreHandle;

/// Runs the server until `shutdown` is cancelled; then stops taking requests, gives those in
/// flight `--shutdown-grace` to finish, drops the rest, and flushes the journal.
pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let writer = store::writer_config(&args.store)?;
    // Opened before the runners are loaded: a second server on the same data directory stops
    // here, and sled's fixed buffers take fresh pages instead of ones the loading left dirty.
    let journal = StoreHandle::open_journal(&args.store.data_dir)?;
    let source = catalog::source(&args.cluster, &metrics).await?;
    let default_credential = resync::default_credential(&args.github)?;
    let store = StoreHandle::start_on(journal, source.catalog.runners.clone(), writer, metrics.clone())?;
    // The workers (watches, resync, lease) stop once the listeners have drained, or at once when
    // starting failed.
    let workers_stop = CancellationToken::new();
    let served = serve_with(&args, source, default_credential, &store, metrics, shutdown, workers_stop.clone()).await;
    // Whatever happened after the journal opened, its final checkpoint and merge run.
    workers_stop.cancel();
    tracing::info!("shutting down: flushing the journal");
    store.shutdown().await;
    served
}

/// Just-in-time configurations for ephemeral runners' pods: tokens reviewed by the cluster,
/// registrations made with the credentials the catalog gives each runner.
/// Also starts the housekeeping of their registrations (counted for the status, stale ones
/// deleted within `--cache-window-when-empty`), until `stop`.
fn jit_service(
    args: &ServeArgs,
    client: kube::Client,
    catalogs: crate::jit::Catalogs,
    store: &StoreHandle,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<Arc<crate::jit::JitService>, ServeError> {
    let github = crate::github::GitHubClient::new(&args.github.github_api_url, metrics.clone())
        .map_err(|e| ServeError::GitHub(e.to_string()))?;
    let clock = crate::clock::system_clock();
    let registrar = Arc::new(crate::jit::GitHubRegistrar::new(Arc::new(github), clock.clone()));
    let identity = Arc::new(crate::jit::KubeIdentity::new(client));
    let window = args.github.cache_window_when_empty;
    let housekeeper = crate::jit::Housekeeper::new(
        registrar.clone(),
        identity.clone(),
        catalogs.clone(),
        store.board().clone(),
        window,
    );
    let every = (window / 2).clamp(std::time::Duration::from_secs(10), std::time::Duration::from_secs(60));
    tokio::spawn(housekeeper.run(clock, every, stop));
    Ok(Arc::new(crate::jit::JitService::new(identity, registrar, catalogs, metrics)))
}

async fn serve_with(
    args: &ServeArgs,
    source: catalog::Source,
    default_credential: Option<crate::github::Credential>,
    store: &StoreHandle,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    workers_stop: CancellationToken,
) -> Result<(), ServeError> {
    let tokens = catalog::repo_tokens(&source.catalog, default_credential.as_ref());
    let runners = source.catalog.runners.clone();
    let state = source.state(store.clone(), metrics.clone());
    let cluster = source.cluster.clone();
    let (followers, catalogs) =
        catalog::follow_cluster(source, &args.cluster, state.clone(), default_credential, workers_stop.clone());
    let state = match (cluster, &catalogs) {
        (Some(client), Some(catalogs)) => {
            let jit = jit_service(args, client, catalogs.clone(), store, metrics.clone(), workers_stop.clone())?;
            state.with_jit(jit)
        }
        _ => state,
    };
    // The one shutdown token stops every listener; what is left after the grace is dropped.
    let shutdown = Shutdown::after(shutdown, args.http.shutdown_grace);
    let listeners = listeners::start(args, &state, store.board().clone(), &shutdown).await?;
    forced::spawn(store.board().clone(), metrics.clone(), shutdown.stop.clone());
    let start = resync::Start {
        github: &args.github,
        lease: &args.lease,
        runners: &runners,
        tokens,
        store: store.clone(),
        metrics,
        catalogs,
    };
    let workers = resync::Workers::new(workers_stop.clone(), resync::start(start, workers_stop)?, followers);
    listeners.serve(state, shutdown).await;
    workers.stop().await;
    Ok(())
}
