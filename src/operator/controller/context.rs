//! What the reconcilers share: the client, the settings, the core as the watch last saw it,
//! the retry backoff and the metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use super::applied::{AppliedChildren, PrunedSets};
use super::demand::DemandReader;
use super::error::ReconcileError;
use crate::crd::{CORE_NAME, ScaledActionRunnerCore};
use crate::operator::{FIELD_MANAGER, Settings};

/// A core as the watch reads it: ours, or why our types cannot read it.
pub type CoreObject = DeserializeGuard<ScaledActionRunnerCore>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `ScaledActionRunner` or `ScaledActionRunnerCore`.
    pub kind: &'static str,
    /// `applied`, `invalid`, `ignored`, or the failed step's [`ReconcileError::category`].
    pub outcome: &'static str,
}

/// The operator's Prometheus metrics (prefix `gaa_operator_`).
#[derive(Debug)]
pub struct OperatorMetrics {
    registry: prometheus_client::registry::Registry,
    pub reconciles:
        prometheus_client::metrics::family::Family<ReconcileLabels, prometheus_client::metrics::counter::Counter>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("gaa_operator");
        let reconciles = prometheus_client::metrics::family::Family::default();
        registry.register("reconciles", "Reconciles by kind and outcome", reconciles.clone());
        Self { registry, reconciles }
    }
}

impl OperatorMetrics {
    pub(super) fn count(&self, kind: &'static str, outcome: &'static str) {
        self.reconciles.get_or_create(&ReconcileLabels { kind, outcome }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    /// Where runner status reads the demand; None leaves demand out of the status.
    pub demand: Option<DemandReader>,
    pub metrics: OperatorMetrics,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<Failures>,
    /// What was last applied to each child, so an unchanged child is not applied again.
    pub(super) applied: AppliedChildren,
    /// Which children each owner was last pruned down to, so an unchanged owner lists nothing.
    pub(super) pruned: PrunedSets,
    /// Every core, as the core watch last saw it: runners read it here instead of asking.
    cores: Store<CoreObject>,
    /// Fills `cores`: taken by the watch when the controllers run.
    cores_writer: Mutex<Option<reflector::store::Writer<CoreObject>>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, demand: Option<DemandReader>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        let (cores, writer) = reflector::store();
        Self {
            client,
            settings,
            recorder,
            demand,
            metrics: OperatorMetrics::default(),
            failures: Mutex::default(),
            applied: AppliedChildren::default(),
            pruned: PrunedSets::default(),
            cores,
            cores_writer: Mutex::new(Some(writer)),
        }
    }

    /// Records a core as a watch event would, for reconciles driven without the watch.
    pub fn remember_core(&self, core: CoreObject) {
        if let Ok(mut writer) = self.cores_writer.lock()
            && let Some(writer) = writer.as_mut()
        {
            writer.apply_watcher_event(&watcher::Event::Apply(core));
        }
    }

    /// The writer of the core store, once: the watch that keeps it current takes it.
    pub(super) fn take_cores_writer(&self) -> Option<reflector::store::Writer<CoreObject>> {
        self.cores_writer.lock().ok()?.take()
    }

    pub(super) fn cores(&self) -> &Store<CoreObject> {
        &self.cores
    }

    /// The core named `core` as last seen: None when there is none; an error when our types
    /// cannot read it, so that runners keep what they have instead of losing their ScaledObjects.
    pub(super) fn core(&self) -> Result<Option<Arc<ScaledActionRunnerCore>>, ReconcileError> {
        let Some(object) = self.cores.get(&ObjectRef::new(CORE_NAME)) else {
            return Ok(None);
        };
        match &object.0 {
            Ok(core) => Ok(Some(Arc::new(core.clone()))),
            Err(invalid) => {
                Err(ReconcileError::UnreadableCore { name: CORE_NAME.to_owned(), error: invalid.error.clone() })
            }
        }
    }

    pub(super) fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.succeeded(key);
        }
    }

    /// 5 s, 10 s, 20 s … up to 5 minutes.
    pub(super) fn backoff(&self, key: &str) -> Duration {
        let attempt = self.failures.lock().map(|mut failures| failures.failed(key, Instant::now())).unwrap_or(1);
        Duration::from_secs(5u64.saturating_mul(1 << attempt.min(6).saturating_sub(1)).min(300))
    }
}

/// The longest retry delay, and how long a failure count outlives its last failure: an object
/// still failing fails again within the longest delay, so an older count is of an object that
/// is gone (deleted objects are not reconciled, so nothing else would ever remove theirs).
const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(2 * 300);

/// Consecutive failures per object, and when the last one was.
#[derive(Debug, Default)]
struct Failures(HashMap<String, (u32, Instant)>);

impl Failures {
    /// Counts a failure of `key` at `now`; returns its consecutive failures. Counts idle for
    /// longer than [`FORGET_FAILURES_AFTER`] are dropped on the way.
    fn failed(&mut self, key: &str, now: Instant) -> u32 {
        self.0.retain(|_, (_, last)| now.saturating_duration_since(*last) < FORGET_FAILURES_AFTER);
        let (count, last) = self.0.entry(key.to_owned()).or_insert((0, now));
        *count = count.saturating_add(1);
        *last = now;
        *count
    }

    fn succeeded(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// The key an object's consecutive failures are counted under.
pub(super) fn backoff_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{kind}/{namespace}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_up_until_a_success() {
        let mut failures = Failures::default();
        let now = Instant::now();
        assert_eq!(failures.failed("a", now), 1);
        assert_eq!(failures.failed("a", now + Duration::from_secs(5)), 2);
        failures.succeeded("a");
        assert_eq!(failures.failed("a", now + Duration::from_secs(10)), 1);
    }

    #[test]
    fn the_failure_count_of_an_object_that_stopped_failing_is_forgotten() {
        let mut failures = Failures::default();
        let start = Instant::now();
        // Objects that failed and were then deleted: never reconciled again, never succeeded.
        for i in 0..100 {
            failures.failed(&format!("ScaledActionRunner/ci/gone-{i}"), start);
        }
        // One object keeps failing, retried at the longest delay.
        let mut now = start;
        for _ in 0..3 {
            now += Duration::from_secs(300);
            failures.failed("ScaledActionRunner/ci/broken", now);
        }
        assert_eq!(failures.0.len(), 1, "{:?}", failures.0.keys().collect::<Vec<_>>());
        assert_eq!(failures.failed("ScaledActionRunner/ci/broken", now + Duration::from_secs(300)), 4);
    }
}
