//! What the read API serves: each runner's counts and desired size, published by the writer after
//! every batch. Readers never wait on the journal.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::watch;

use crate::demand::scaling::desired_runners;
use crate::demand::{Counts, Runner, RunnerIndex, RunnerKey};

/// One runner's demand as the read API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerDemand {
    pub namespace: String,
    pub name: String,
    pub repository: String,
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
}

/// What the resync last found for a runner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncInfo {
    pub with_token: bool,
    /// Unix seconds.
    pub last_time: Option<i64>,
    pub last_drift: Option<i64>,
}

impl RunnerDemand {
    pub fn new(runner: &Runner, counts: Counts) -> Self {
        let desired = desired_runners(counts.demand(), runner.min_runners, runner.max_runners, runner.scale_factor);
        Self {
            namespace: runner.key.namespace.clone(),
            name: runner.key.name.clone(),
            repository: runner.repo.clone(),
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
        }
    }
}

fn decorate(view: &RunnerDemand, stale: bool, resync: Option<&ResyncInfo>) -> RunnerDemand {
    let mut view = RunnerDemand { stale, ..view.clone() };
    if let Some(info) = resync {
        view.source = if info.with_token { "webhooks+github" } else { "webhooks" };
        view.last_resync_time =
            info.last_time.and_then(|t| jiff::Timestamp::from_second(t).ok()).map(|t| t.to_string());
        view.last_drift = info.last_drift;
    }
    view
}

/// The published view, and a version that ticks on every change (for push consumers).
#[derive(Debug)]
pub struct Board {
    runners: RwLock<BTreeMap<RunnerKey, RunnerDemand>>,
    version: watch::Sender<u64>,
    stale: AtomicBool,
    resync: RwLock<HashMap<RunnerKey, ResyncInfo>>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            runners: RwLock::new(BTreeMap::new()),
            version: watch::channel(0).0,
            stale: AtomicBool::new(false),
            resync: RwLock::new(HashMap::new()),
        }
    }
}

impl Board {
    pub fn get(&self, key: &RunnerKey) -> Option<RunnerDemand> {
        let stale = self.is_stale();
        let resync = self.resync.read().unwrap_or_else(|p| p.into_inner());
        self.read().get(key).map(|view| decorate(view, stale, resync.get(key)))
    }

    pub fn list(&self) -> Vec<RunnerDemand> {
        let stale = self.is_stale();
        let resync = self.resync.read().unwrap_or_else(|p| p.into_inner());
        self.read().iter().map(|(key, view)| decorate(view, stale, resync.get(key))).collect()
    }

    /// Records what the resync found for a runner.
    pub fn set_resync(&self, key: &RunnerKey, info: ResyncInfo) {
        self.resync.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), info);
    }

    /// Whether the numbers may be out of date (the shared store is unreachable).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that sees the version change whenever any runner's demand changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<RunnerKey, RunnerDemand>> {
        // A writer that panicked mid-update left a map that is still whole; keep serving it.
        self.runners.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<RunnerKey, RunnerDemand>> {
        self.runners.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the runner set: runners not in `index` disappear, new ones start at the counts
    /// `counts` gives (runners already shown keep their numbers when `counts` has none).
    pub fn publish_all(&self, index: &RunnerIndex, counts: impl Fn(&RunnerKey) -> Option<Counts>) {
        let mut runners = self.write();
        let fresh: BTreeMap<RunnerKey, RunnerDemand> = index
            .iter()
            .map(|runner| {
                let known = runners.get(&runner.key).map(|v| Counts { queued: v.queued, in_progress: v.in_progress });
                let counts = counts(&runner.key).or(known).unwrap_or_default();
                (runner.key.clone(), RunnerDemand::new(runner, counts))
            })
            .collect();
        *runners = fresh;
        drop(runners);
        self.version.send_modify(|v| *v += 1);
    }

    /// Republishes the given runners' counts; returns the views that changed.
    pub fn publish<'a>(
        &self,
        index: &RunnerIndex,
        counts: impl IntoIterator<Item = (&'a RunnerKey, Counts)>,
    ) -> Vec<RunnerDemand> {
        let mut updated = Vec::new();
        {
            let mut runners = self.write();
            for (key, counts) in counts {
                let Some(runner) = index.get(key) else { continue };
                let view = RunnerDemand::new(runner, counts);
                if runners.get(key) != Some(&view) {
                    runners.insert(key.clone(), view.clone());
                    updated.push(view);
                }
            }
        }
        if !updated.is_empty() {
            self.version.send_modify(|v| *v += 1);
        }
        updated
    }
}
