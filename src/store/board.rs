//! What the read API serves: each runner's counts and desired size, published by the writer after
//! every batch. Readers never wait on the journal.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;
use tokio::sync::watch;

use crate::demand::scaling::desired_runners;
use crate::demand::{Counts, DemandState, Runner, RunnerKey};

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
        }
    }
}

/// The published view, and a version that ticks on every change (for push consumers).
#[derive(Debug)]
pub struct Board {
    runners: RwLock<BTreeMap<RunnerKey, RunnerDemand>>,
    version: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Self { runners: RwLock::new(BTreeMap::new()), version: watch::channel(0).0 }
    }
}

impl Board {
    pub fn get(&self, key: &RunnerKey) -> Option<RunnerDemand> {
        self.read().get(key).cloned()
    }

    pub fn list(&self) -> Vec<RunnerDemand> {
        self.read().values().cloned().collect()
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

    /// Republishes every runner (start-up, runner set changed).
    pub fn publish_all(&self, state: &DemandState) {
        let fresh: BTreeMap<RunnerKey, RunnerDemand> = state
            .index()
            .iter()
            .map(|runner| (runner.key.clone(), RunnerDemand::new(runner, state.counts(&runner.key))))
            .collect();
        *self.write() = fresh;
        self.version.send_modify(|v| *v += 1);
    }

    /// Republishes the named runners; returns their new views.
    pub fn publish(&self, state: &DemandState, touched: &[RunnerKey]) -> Vec<RunnerDemand> {
        if touched.is_empty() {
            return Vec::new();
        }
        let mut updated = Vec::with_capacity(touched.len());
        {
            let mut runners = self.write();
            for key in touched {
                if let Some(runner) = state.index().get(key) {
                    let view = RunnerDemand::new(runner, state.counts(key));
                    runners.insert(key.clone(), view.clone());
                    updated.push(view);
                }
            }
        }
        self.version.send_modify(|v| *v += 1);
        updated
    }
}
