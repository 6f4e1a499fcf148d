//! Prometheus metrics, served as text on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::demand::RunnerDemand;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub event: &'static str,
    pub action: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitHubRequestLabels {
    /// `runs`, `jobs`, `job`, `run`, and for a GitHub App `installation` and `access_token`:
    /// never a URL, so cardinality stays fixed.
    pub endpoint: &'static str,
    /// HTTP status, or `error` when no answer came.
    pub status: String,
}

/// Whose rate limit a `github_credits_remaining` series is: one label, `token` (a short digest
/// of the token, never the token), `installation` (a GitHub App installation id) or `app` (a
/// GitHub App's id, for the requests made with its JWT).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct BudgetLabels {
    pub kind: &'static str,
    pub id: String,
}

impl EncodeLabelSet for BudgetLabels {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [(self.kind, self.id.as_str())].encode(encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    pub namespace: String,
    pub name: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub demand: Family<RunnerLabels, Gauge>,
    pub desired: Family<RunnerLabels, Gauge>,
    pub journal_bytes: Gauge,
    pub journal_batch: Histogram,
    pub journal_flush: Histogram,
    pub jobs_tracked: Gauge,
    pub jobs_expired: Counter,
    pub manifest_problems: Gauge,
    pub last_checkpoint: Gauge<f64, AtomicU64>,
    pub store_ops: Family<StoreOpLabels, Counter>,
    pub store_backlog: Gauge,
    pub store_replayed: Counter,
    pub store_degraded: Gauge,
    pub store_last_sync: Gauge<f64, AtomicU64>,
    pub github_requests: Family<GitHubRequestLabels, Counter>,
    pub github_credits_remaining: Family<BudgetLabels, Gauge>,
    pub github_not_modified: Counter,
    pub drift: Family<RunnerLabels, Gauge>,
    pub drift_corrections: Family<RunnerLabels, Counter>,
    pub resync_lag: Gauge<f64, AtomicU64>,
    pub jit_requests: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gaa");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("webhook_deliveries", "Webhook deliveries by event, action and outcome", deliveries.clone());
        let demand = Family::<RunnerLabels, Gauge>::default();
        registry.register("runner_demand", "Queued plus in-progress jobs assigned to a runner", demand.clone());
        let desired = Family::<RunnerLabels, Gauge>::default();
        registry.register(
            "runner_desired",
            "Desired runner count after scaleFactor, min/max and forced scale-ups",
            desired.clone(),
        );
        let journal_bytes = Gauge::default();
        registry.register("journal_size_bytes", "Size of the sled journal on disk", journal_bytes.clone());
        let journal_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("journal_batch_deliveries", "Deliveries per group commit", journal_batch.clone());
        let journal_flush = Histogram::new(exponential_buckets(0.000_125, 2.0, 14));
        registry.register("journal_flush_seconds", "Time to write and flush one group commit", journal_flush.clone());
        let jobs_tracked = Gauge::default();
        registry.register(
            "jobs_tracked",
            "Jobs held in the journal checkpoint, finished ones included",
            jobs_tracked.clone(),
        );
        let jobs_expired = Counter::default();
        registry.register(
            "jobs_expired",
            "Jobs completed by us because GitHub would have ended them and no completed delivery came",
            jobs_expired.clone(),
        );
        let manifest_problems = Gauge::default();
        registry.register(
            "manifest_problems",
            "Invalid documents found when loading runners",
            manifest_problems.clone(),
        );
        let last_checkpoint = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "journal_last_checkpoint_timestamp_seconds",
            "Unix time of the last journal checkpoint",
            last_checkpoint.clone(),
        );
        let store_ops = Family::<StoreOpLabels, Counter>::default();
        registry.register("store_operations", "Shared store (memcached) operations by outcome", store_ops.clone());
        let store_backlog = Gauge::default();
        registry.register(
            "store_backlog_jobs",
            "Journaled job changes not yet merged into the shared store",
            store_backlog.clone(),
        );
        let store_replayed = Counter::default();
        registry.register(
            "store_replayed_jobs",
            "Jobs republished from the local journal after the shared store lost them",
            store_replayed.clone(),
        );
        let store_degraded = Gauge::default();
        registry.register("store_degraded", "1 while the shared store is unreachable", store_degraded.clone());
        let store_last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "store_last_sync_timestamp_seconds",
            "Unix time demand was last read from the shared store",
            store_last_sync.clone(),
        );
        let github_requests = Family::<GitHubRequestLabels, Counter>::default();
        registry.register("github_requests", "GitHub REST requests by endpoint and status", github_requests.clone());
        let github_credits_remaining = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "github_credits_remaining",
            "X-RateLimit-Remaining last seen per token, GitHub App installation or App",
            github_credits_remaining.clone(),
        );
        let github_not_modified = Counter::default();
        registry.register(
            "github_not_modified",
            "GitHub answers 304 Not Modified (free: no rate-limit credit)",
            github_not_modified.clone(),
        );
        let drift = Family::<RunnerLabels, Gauge>::default();
        registry.register(
            "runner_drift",
            "Demand GitHub showed minus the demand webhooks had built, at the last resync",
            drift.clone(),
        );
        let drift_corrections = Family::<RunnerLabels, Counter>::default();
        registry.register(
            "runner_drift_corrections",
            "Jobs whose state the resync corrected from GitHub",
            drift_corrections.clone(),
        );
        let resync_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "resync_lag_seconds",
            "How far behind its due time the most overdue repository resync is",
            resync_lag.clone(),
        );
        let jit_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "jit_requests",
            "Just-in-time configuration requests of ephemeral runner pods by outcome (conflict: the pod's runner is busy)",
            jit_requests.clone(),
        );
        Self {
            registry,
            deliveries,
            demand,
            desired,
            journal_bytes,
            journal_batch,
            journal_flush,
            jobs_tracked,
            jobs_expired,
            manifest_problems,
            last_checkpoint,
            store_ops,
            store_backlog,
            store_replayed,
            store_degraded,
            store_last_sync,
            github_requests,
            github_credits_remaining,
            github_not_modified,
            drift,
            drift_corrections,
            resync_lag,
            jit_requests,
        }
    }

    /// One just-in-time configuration request and how it ended.
    pub fn jit_request(&self, outcome: &'static str) {
        self.jit_requests.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One GitHub request: its endpoint and status (`None` when no answer came).
    pub fn github_request(&self, endpoint: &'static str, status: Option<u16>) {
        if status == Some(304) {
            self.github_not_modified.inc();
        }
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.github_requests.get_or_create(&GitHubRequestLabels { endpoint, status }).inc();
    }

    /// The rate-limit credits a budget has left, as GitHub last said: `kind` is `token`,
    /// `installation` or `app`, `id` the token's digest or the installation's or App's id.
    pub fn github_credits(&self, kind: &'static str, id: String, remaining: i64) {
        self.github_credits_remaining.get_or_create(&BudgetLabels { kind, id }).set(remaining);
    }

    pub fn store_op(&self, op: &'static str, outcome: &'static str) {
        self.store_ops.get_or_create(&StoreOpLabels { op, outcome }).inc();
    }

    pub fn delivery(&self, event: &'static str, action: &'static str, outcome: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { event, action, outcome }).inc();
    }

    pub fn runner(&self, view: &RunnerDemand) {
        let labels = RunnerLabels { namespace: view.namespace.clone(), name: view.name.clone() };
        self.demand.get_or_create(&labels).set(i64::try_from(view.demand).unwrap_or(i64::MAX));
        self.desired.get_or_create(&labels).set(i64::from(view.desired_runners));
    }

    /// Drops every series of a runner that is gone, so deleted runners do not pile up.
    pub fn forget_runner(&self, namespace: &str, name: &str) {
        let labels = RunnerLabels { namespace: namespace.to_string(), name: name.to_string() };
        self.demand.remove(&labels);
        self.desired.remove(&labels);
        self.drift.remove(&labels);
        self.drift_corrections.remove(&labels);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_runner_leaves_no_series_behind() {
        let metrics = Metrics::new();
        let labels = |name: &str| RunnerLabels { namespace: "ci".into(), name: name.into() };
        for name in ["gone", "kept"] {
            metrics.demand.get_or_create(&labels(name)).set(3);
            metrics.desired.get_or_create(&labels(name)).set(3);
            metrics.drift.get_or_create(&labels(name)).set(-1);
            metrics.drift_corrections.get_or_create(&labels(name)).inc();
        }
        metrics.forget_runner("ci", "gone");
        let text = metrics.encode();
        assert!(!text.contains(r#"name="gone""#), "{text}");
        for family in ["gaa_runner_demand", "gaa_runner_desired", "gaa_runner_drift", "gaa_runner_drift_corrections"] {
            assert!(
                text.contains(&format!(r#"{family}{{namespace="ci",name="kept"}}"#))
                    || text.contains(&format!(r#"{family}_total{{namespace="ci",name="kept"}}"#)),
                "{family}: {text}"
            );
        }
    }
}
