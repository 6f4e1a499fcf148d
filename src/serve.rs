//! `serve`: the webhook receiver, read API and operational endpoints, composed and run.

mod catalog;
mod error;
mod forced;
mod listeners;
mod resync;
mod signal;
mod store;

use std::future::Future;
use std::sync::Arc;

pub use self::catalog::follow_catalog;
pub use self::error::ServeError;
pub use self::signal::shutdown_signal;
use crate::catalog::Catalog;
use crate::config::ServeArgs;
use crate::http::AppState;
use crate::http::accept::Shutdown;
use crate::metrics::Metrics;
use crate::store::StoreHandle;

/// Runs the server until `shutdown` resolves; then stops taking requests, gives those in flight
/// `--shutdown-grace` to finish, drops the rest, and flushes the journal.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let organisation = catalog::organisation_secret(&args.cluster)?;
    // Standalone the catalog is complete now; in a cluster it starts empty and follows the watches.
    let (catalog, problems) = match &args.cluster.manifests {
        Some(dir) => catalog::load(dir, organisation.clone(), &metrics)?,
        None => (Catalog::build([], [], organisation.clone()).0, 0),
    };
    let kube_client = match &args.cluster.manifests {
        Some(_) => None,
        None => Some(kube::Client::try_default().await.map_err(ServeError::KubeClient)?),
    };
    let writer = store::writer_config(&args.store)?;
    let default_token = resync::default_token(&args.github)?;
    let tokens = catalog::repo_tokens(&catalog, default_token.as_ref());
    let runners = catalog.runners.clone();
    let store = StoreHandle::start(&args.store.data_dir, catalog.runners, writer, metrics.clone())?;
    let state = match kube_client {
        None => AppState::new(store.clone(), metrics.clone(), catalog.secrets, problems),
        Some(_) => AppState::waiting_for_catalog(store.clone(), metrics.clone(), catalog.secrets),
    };
    // The workers (watches, resync, lease) stop once the listeners have drained.
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    let (followers, catalogs) = match kube_client {
        None => (Vec::new(), None),
        Some(client) => {
            let (tasks, catalogs) = catalog::follow_cluster(
                client,
                &args.cluster,
                organisation,
                state.clone(),
                default_token,
                workers_stop.clone(),
            );
            (tasks, Some(catalogs))
        }
    };
    // One shutdown for every listener: stop accepting, then drop what is left after the grace.
    let shutdown = Shutdown::after(shutdown, args.http.shutdown_grace);
    let listeners = listeners::start(&args, &state, store.board().clone(), &shutdown).await?;
    let stop = shutdown.stop.clone().cancelled_owned();
    tokio::spawn(forced::keep_forced_windows(
        store.board().clone(),
        metrics.clone(),
        crate::store::writer::system_clock(),
        stop,
    ));
    let start = resync::Start {
        github: &args.github,
        lease: &args.lease,
        runners: &runners,
        tokens,
        store: store.clone(),
        metrics,
        catalogs,
    };
    let resync = resync::start(start, workers_stop)?;
    listeners.serve(state, shutdown).await;
    tracing::info!("shutting down: flushing the journal");
    let _ = stop_workers.send(true);
    if let Some(resync) = resync {
        let _ = resync.await;
    }
    for follower in followers {
        follower.abort();
    }
    store.shutdown().await;
    Ok(())
}
