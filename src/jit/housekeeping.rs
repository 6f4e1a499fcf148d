//! Ephemeral runners' registrations on GitHub: counted for the status and the read API, and
//! the stale ones deleted. A registration is stale when the pod it was minted for is gone (its
//! name and uid no longer match a pod of the runner) or when it never connected within
//! `cacheWindowWhenEmpty`. A runner running a job is never deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{BoundPod, Catalogs, Deleted, EphemeralRunner, Registrar, ephemeral_view, runner_name};
use crate::demand::RunnerKey;
use crate::store::{Board, Registrations};

/// One registration GitHub holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    pub name: String,
    pub online: bool,
    pub busy: bool,
}

/// The pods of a runner's StatefulSet (name and uid), as the cluster has them now.
pub trait RunnerPods: Send + Sync {
    fn pods<'a>(&'a self, runner: &'a RunnerKey) -> BoxFuture<'a, Result<Vec<BoundPod>, String>>;
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub registered: u32,
    pub busy: u32,
    pub deleted: u32,
}

/// Counts and sweeps the registrations of every ephemeral runner.
pub struct Housekeeper {
    registrar: Arc<dyn Registrar>,
    pods: Arc<dyn RunnerPods>,
    catalogs: Catalogs,
    board: Arc<Board>,
    /// How long a registration may stay offline and idle before it is deleted.
    never_connected: Duration,
    /// When each registration was first seen offline and idle.
    offline_since: HashMap<u64, i64>,
}

impl Housekeeper {
    pub fn new(
        registrar: Arc<dyn Registrar>,
        pods: Arc<dyn RunnerPods>,
        catalogs: Catalogs,
        board: Arc<Board>,
        never_connected: Duration,
    ) -> Self {
        Self { registrar, pods, catalogs, board, never_connected, offline_since: HashMap::new() }
    }

    /// One look at every ephemeral runner (`now`: unix seconds).
    pub async fn pass(&mut self, now: i64) -> Swept {
        let runners: Vec<EphemeralRunner> = {
            let (index, tokens) = &*self.catalogs.borrow();
            index.iter().filter(|r| r.ephemeral).filter_map(|r| ephemeral_view(r, tokens).ok()).collect()
        };
        let mut total = Swept::default();
        let mut seen: HashSet<u64> = HashSet::new();
        for runner in &runners {
            match self.sweep(runner, now, &mut seen).await {
                Ok(swept) => {
                    total.registered += swept.registered;
                    total.busy += swept.busy;
                    total.deleted += swept.deleted;
                    let counts = Registrations { registered: swept.registered, busy: swept.busy };
                    self.board.set_registrations(&runner.key, counts);
                }
                Err(error) => {
                    tracing::warn!(runner = %runner.key, %error, "could not look at the runner's registrations")
                }
            }
        }
        self.offline_since.retain(|id, _| seen.contains(id));
        total
    }

    async fn sweep(&mut self, runner: &EphemeralRunner, now: i64, seen: &mut HashSet<u64>) -> Result<Swept, String> {
        let pods = self.pods.pods(&runner.key).await?;
        let current: HashSet<String> = pods.iter().map(runner_name).collect();
        let listed = self.registrar.list(runner).await.map_err(|e| e.to_string())?;
        // This runner's registrations: named after one of its pods (`NAME-ORDINAL-UID`).
        let prefix = format!("{}-", runner.key.name);
        let ours = listed.into_iter().filter(|r| {
            r.name.strip_prefix(&prefix).and_then(|rest| rest.split_once('-')).is_some_and(|(ordinal, uid)| {
                !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()) && uid.len() == 8
            })
        });
        let mut swept = Swept::default();
        for registration in ours {
            seen.insert(registration.id);
            swept.registered += 1;
            if registration.busy {
                swept.busy += 1;
                self.offline_since.remove(&registration.id);
                continue;
            }
            let pod_gone = !current.contains(&registration.name);
            let never_connected = !registration.online && {
                let since = *self.offline_since.entry(registration.id).or_insert(now);
                now - since >= i64::try_from(self.never_connected.as_secs()).unwrap_or(i64::MAX)
            };
            if registration.online {
                self.offline_since.remove(&registration.id);
            }
            if pod_gone || never_connected {
                match self.registrar.delete(runner, registration.id).await {
                    Ok(Deleted::Gone) => {
                        let why = if pod_gone { "its pod is gone" } else { "it never connected" };
                        tracing::info!(runner = %runner.key, runner_name = %registration.name, why, "stale just-in-time registration deleted");
                        swept.registered -= 1;
                        swept.deleted += 1;
                        self.offline_since.remove(&registration.id);
                    }
                    Ok(Deleted::Busy) => swept.busy += 1,
                    Err(error) => return Err(error.to_string()),
                }
            }
        }
        Ok(swept)
    }

    /// Runs a pass every `every` until `stop`.
    pub async fn run(mut self, clock: crate::clock::Clock, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let swept = self.pass(clock()).await;
                    if swept.deleted > 0 {
                        tracing::debug!(?swept, "ephemeral runners' registrations swept");
                    }
                }
                () = stop.cancelled() => return,
            }
        }
    }
}
