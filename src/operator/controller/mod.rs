//! The controllers. Each reconcile is a short pipeline: dereference (read the cluster) → validate
//! and build (pure: [`runner_children`](super::runner_children),
//! [`core_children`](super::core_children)) → apply (server-side apply, one field manager) →
//! prune what is no longer wanted → status. A spec that cannot be built, or an object our types
//! cannot read, becomes a `Ready=False` condition and an Event and waits for the next change.
//!
//! Watch events reach a reconcile only when an object's generation moved (a status write does
//! not start one); runners read the core from a store the core watch keeps; the demand shown in
//! runners' status is written by its own periodic task ([`demand`]).

mod applied;
mod apply;
mod context;
mod core;
pub mod demand;
mod error;
mod invalid;
mod runner;
mod status;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config, ReconcileRequest, trigger_owners, trigger_self};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{PredicateConfig, WatchStreamExt, applier, predicates, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use self::apply::INITIAL_REPLICAS_MANAGER;
pub use self::context::{Context, CoreObject, OperatorMetrics, ReconcileLabels};
pub use self::core::reconcile_core;
pub use self::demand::{DemandReader, DemandView, publish_demand};
pub use self::error::ReconcileError;
pub use self::runner::{RunnerObject, reconcile_runner};
use crate::crd::{ScaledActionRunner, ScaledActionRunnerCore};
use crate::operator::MANAGED_BY;

const RUNNER_KIND: &str = "ScaledActionRunner";
const CORE_KIND: &str = "ScaledActionRunnerCore";
/// How often an object that is not Ready is looked at again: what it waits for (a CRD, a
/// Secret) may appear, and no watch of ours reports that.
pub const REFRESH_NOT_READY: Duration = Duration::from_secs(60);
/// How often a Ready object is looked at again. Changes to it and to its children are watched,
/// so this only repairs what a lost watch event left; each look costs a few reads.
pub const REFRESH_READY: Duration = Duration::from_secs(600);

/// When to look at an object again, by what its `Ready` condition says.
fn refresh_after(ready: bool) -> Duration {
    if ready { REFRESH_READY } else { REFRESH_NOT_READY }
}

/// Runs both controllers and the demand task until `stop` is cancelled.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    // Runners read the core from the store: start them only once it holds what the cluster does,
    // or a runner would take a core not yet seen for a missing one and prune its ScaledObject.
    let Some(core_changes) = watch_cores(&ctx, stop.clone()) else {
        return;
    };
    tokio::select! {
        ready = ctx.cores().wait_until_ready() => if ready.is_err() { return },
        () = stop.cancelled() => return,
    }
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let owned = watcher::Config::default().labels(&managed);
    let (runner_store, runner_writer) = reflector::store();
    // Every runner's ScaledObject and Secret access depend on the core: all are looked at again.
    let runners = control::<ScaledActionRunner, StatefulSet, _>(
        ctx.clone(),
        (runner_store.clone(), runner_writer),
        owned.clone(),
        core_changes,
        stop.clone().cancelled_owned(),
        reconcile_runner,
        RUNNER_KIND,
    );
    let cores = control::<ScaledActionRunnerCore, Deployment, _>(
        ctx.clone(),
        reflector::store(),
        owned,
        stream::empty(),
        stop.clone().cancelled_owned(),
        reconcile_core,
        CORE_KIND,
    );
    let demand = demand::run_demand_task(ctx, runner_store, stop);
    tokio::join!(runners, cores, demand);
}

/// One controller: reconciles each object of kind `K` when its spec changed or one of the
/// `C` objects it owns did, every object on each `bulk` tick, and failed ones with backoff;
/// stops taking new work when `stop` resolves.
fn control<K, C, F>(
    ctx: Arc<Context>,
    (store, writer): (Store<DeserializeGuard<K>>, Writer<DeserializeGuard<K>>),
    children: watcher::Config,
    bulk: impl Stream<Item = ()> + Send + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
    reconcile: impl Fn(Arc<DeserializeGuard<K>>, Arc<Context>) -> F + 'static,
    kind: &'static str,
) -> impl Future<Output = ()>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + Sync + 'static,
    C: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static,
    F: Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let client = ctx.client.clone();
    let own = trigger_self(changed_specs(&client, writer), ());
    let children = watcher(Api::<PartialObjectMeta<C>>::all(client), children).default_backoff().touched_objects();
    let owned = trigger_owners(children, (), ());
    let everyone = store.clone();
    let all = bulk.flat_map(move |()| {
        let requests =
            everyone.state().into_iter().map(|object| Ok(ReconcileRequest::from(ObjectRef::from_obj(&*object))));
        stream::iter(requests.collect::<Vec<_>>())
    });
    let queue = stream::select_all([own.boxed(), owned.boxed(), all.boxed()]).take_until(stop);
    applier(
        move |object, ctx| Box::pin(reconcile(object, ctx)),
        error_policy(kind),
        ctx,
        store,
        queue,
        Config::default(),
    )
    .for_each(move |result| async move { log_result(kind, result) })
}

/// Objects of kind `K` whose spec changed, read through [`DeserializeGuard`] so that one
/// object our types cannot read becomes that object's condition instead of failing the whole
/// list; every event still reaches `store`.
fn changed_specs<K>(
    client: &kube::Client,
    store: Writer<DeserializeGuard<K>>,
) -> impl Stream<Item = Result<DeserializeGuard<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + Sync + 'static,
{
    let events = watcher(Api::<DeserializeGuard<K>>::all(client.clone()), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(store)
        .applied_objects();
    spec_changes(events)
}

/// Only the objects whose generation moved: our own status writes (and anyone's metadata
/// changes) do not start a reconcile.
fn spec_changes<K, S>(objects: S) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    objects.predicate_filter(predicates::generation, PredicateConfig::default())
}

/// Keeps the context's core store current, in a task of its own; yields once per change of a
/// core's spec. None when the store already has its watch.
fn watch_cores(ctx: &Context, stop: CancellationToken) -> Option<impl Stream<Item = ()> + Send + 'static> {
    let writer = ctx.take_cores_writer()?;
    let (changed_tx, changed_rx) = tokio::sync::watch::channel(());
    let cores = watcher(Api::<CoreObject>::all(ctx.client.clone()), watcher::Config::default());
    let changes = spec_changes(cores.default_backoff().reflect(writer).applied_objects());
    tokio::spawn(async move {
        let mut changes = std::pin::pin!(changes);
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(_)) => changed_tx.send_replace(()),
                    Some(Err(error)) => tracing::debug!(%error, "core watch"),
                    None => return,
                },
                () = stop.cancelled() => return,
            }
        }
    });
    Some(tokio_stream::wrappers::WatchStream::from_changes(changed_rx))
}

fn log_result<K: Resource>(
    kind: &str,
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<ReconcileError, watcher::Error>>,
) {
    match result {
        Ok((object, _)) => tracing::debug!(kind, object = %object.name, "reconciled"),
        // The error policy has logged it, with its step and the retry delay.
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => tracing::warn!(kind, %error, "controller error"),
    }
}

/// Retries a failed reconcile with backoff, counted by kind and the step that failed.
fn error_policy<K: Resource>(kind: &'static str) -> impl Fn(Arc<K>, &ReconcileError, Arc<Context>) -> Action {
    move |object, error, ctx| {
        let key = context::backoff_key(kind, object.namespace().as_deref(), &object.name_any());
        let delay = ctx.backoff(&key);
        ctx.metrics.count(kind, error.category());
        tracing::warn!(object = %key, category = error.category(), %error, retry_secs = delay.as_secs(), "reconcile failed");
        Action::requeue(delay)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;

    fn runner(generation: i64, replicas: i32) -> RunnerObject {
        serde_json::from_value(json!({
            "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
            "metadata": {"name": "web", "namespace": "ci", "uid": "u1", "generation": generation},
            "spec": {"owner": "acme", "repo": "web", "maxRunners": 2},
            "status": {"replicas": replicas},
        }))
        .expect("a runner")
    }

    #[tokio::test]
    async fn a_status_write_does_not_start_a_reconcile_but_a_spec_change_does() {
        let events = [runner(1, 0), runner(1, 1), runner(1, 2), runner(2, 2)].map(Ok);
        let passed: Vec<_> = spec_changes(stream::iter(events)).collect().await;
        let generations: Vec<_> =
            passed.iter().map(|object| object.as_ref().ok().and_then(|object| object.meta().generation)).collect();
        assert_eq!(generations, [Some(1), Some(2)]);
    }

    #[tokio::test]
    async fn an_object_our_types_cannot_read_still_passes_once_per_generation() {
        let unreadable = |generation: i64| -> RunnerObject {
            serde_json::from_value(json!({
                "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
                "metadata": {"name": "web", "namespace": "ci", "uid": "u1", "generation": generation},
                "spec": {"owner": "acme", "repo": "web", "maxRunners": "plenty"},
            }))
            .expect("a guard holds any object")
        };
        let events = [unreadable(4), unreadable(4), unreadable(5)].map(Ok);
        let passed: Vec<_> = spec_changes(stream::iter(events)).collect().await;
        assert_eq!(passed.len(), 2);
        assert!(passed.iter().all(|object| object.as_ref().is_ok_and(|object| object.0.is_err())));
    }
}
