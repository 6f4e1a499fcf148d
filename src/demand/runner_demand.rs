//! One runner's demand as the read API, KEDA and the metrics report it: counts, the scaling
//! curve applied, and how fresh the numbers are.

use serde::Serialize;

use super::runners::{Runner, Scope};
use super::scaling::desired_runners;
use super::state::Counts;

/// One runner's demand as the read API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerDemand {
    pub namespace: String,
    pub name: String,
    /// `owner/repo`; for an organisation runner, the organisation.
    pub repository: String,
    /// `repository` or `organization`.
    pub scope: Scope,
    pub labels: Vec<String>,
    /// Queued plus in-progress jobs this runner has to serve.
    pub demand: u64,
    pub queued: u64,
    pub in_progress: u64,
    pub desired_runners: u32,
    /// Equal to `desiredRunners`: the number KEDA reads.
    pub value: u32,
    pub min_runners: u32,
    pub max_runners: u32,
    pub scale_factor: String,
    /// True while the shared store cannot be reached: the numbers are the last known ones.
    pub stale: bool,
    /// `webhooks+github` when a GitHub token lets the resync correct this runner's demand;
    /// `webhooks` when deliveries alone feed it.
    pub source: &'static str,
    /// When GitHub was last asked about this runner's repository (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_resync_time: Option<String>,
    /// GitHub's demand minus ours at that resync (0: webhooks had it right).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<i64>,
    /// True during a forced scale-up: every runner starts so that pre-registered runners stay
    /// known to GitHub; `desiredRunners` is `maxRunners` meanwhile.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced_scale_up: bool,
    /// Ephemeral runners: registrations GitHub holds for this runner's pods, and of those the
    /// ones running a job (at the last look).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_runners: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_runners: Option<u32>,
}

impl RunnerDemand {
    pub fn new(runner: &Runner, counts: Counts) -> Self {
        let desired = desired_runners(counts.demand(), runner.min_runners, runner.max_runners, runner.scale_factor);
        Self {
            namespace: runner.key.namespace.clone(),
            name: runner.key.name.clone(),
            repository: runner.repo.clone(),
            scope: runner.scope,
            labels: runner.labels.iter().cloned().collect(),
            demand: counts.demand(),
            queued: counts.queued,
            in_progress: counts.in_progress,
            desired_runners: desired,
            value: desired,
            min_runners: runner.min_runners,
            max_runners: runner.max_runners,
            scale_factor: runner.scale_factor.to_string(),
            stale: false,
            source: "webhooks",
            last_resync_time: None,
            last_drift: None,
            forced_scale_up: false,
            registered_runners: None,
            busy_runners: None,
        }
    }
}
