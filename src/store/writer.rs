//! The single writer: owns the journal and the demand state, commits deliveries in groups.
//!
//! Handlers send a delivery and wait; the writer takes everything queued, journals it with one
//! flush, answers every handler, then applies the accepted events and republishes the runners
//! they touched. Throughput comes from the batch; durability from answering after the flush.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::board::Board;
use super::journal::{Entry, Journal, JournalError};
use super::shared::{self, SharedKv, SharedView, SyncConfig, SyncMessage, SyncSender};
use crate::demand::job::delivery_key;
use crate::demand::repo_jobs::join_open_jobs;
use crate::demand::{DemandState, Job, JobEvent, JobKey, JobView, RunnerGroups, RunnerIndex, RunnerKey};
use crate::metrics::Metrics;

mod checkpoint;

use checkpoint::CheckpointRun;

/// Most deliveries journaled by one flush.
const MAX_BATCH: usize = 2048;
/// Deliveries that may wait for the writer before handlers are told to retry.
const QUEUE_DEPTH: usize = 16 * 1024;
/// A group commit this large means deliveries are arriving faster than flushes complete: the
/// next batch is then given `commit_delay` to gather. Smaller batches (a lone delivery, light
/// load) are committed at once, so the delay never adds latency where it buys nothing.
const COMMIT_SIBLINGS: usize = 4;
/// Checkpoint items (job states, covered batches) written after each group commit: one per
/// delivery in the batch plus a few. A delivery dirties at most one job, so a checkpoint keeps
/// pace with any load; and each item costs about 10 µs of sled's time, so a commit is held up
/// by little more than its own deliveries' share.
const CHECKPOINT_STEP_BASE: usize = 32;
/// Checkpoint items written at a time when no delivery is waiting.
const IDLE_CHECKPOINT_STEP: usize = 512;

// Kept at its old path so callers outside the store compile; new code imports `crate::clock`.
use crate::clock::{Clock, system_clock};

/// Shared mode: where and how to merge with the other replicas.
#[derive(Clone)]
pub struct SharedSetup {
    pub kv: Arc<dyn SharedKv>,
    pub config: SyncConfig,
}

#[derive(Clone)]
pub struct WriterConfig {
    /// How often job states are checkpointed and covered events dropped.
    pub checkpoint_every: Duration,
    /// After a group commit of at least `COMMIT_SIBLINGS` deliveries, how long to let the next
    /// batch gather before committing it (zero: commit at once).
    pub commit_delay: Duration,
    /// How long finished jobs and delivery ids are remembered (must exceed GitHub's 3-day
    /// redelivery window, or a late redelivery could bring a finished job back).
    pub retention: Duration,
    pub clock: Clock,
    /// `None`: demand comes from this journal alone (standalone, one replica).
    pub shared: Option<SharedSetup>,
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("checkpoint_every", &self.checkpoint_every)
            .field("commit_delay", &self.commit_delay)
            .field("retention", &self.retention)
            .field("shared", &self.shared.as_ref().map(|s| &s.config))
            .finish_non_exhaustive()
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: crate::config::DEFAULT_CHECKPOINT_INTERVAL,
            commit_delay: crate::config::DEFAULT_COMMIT_DELAY,
            retention: crate::config::DEFAULT_JOURNAL_RETENTION,
            clock: system_clock(),
            shared: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the journal could not be written")]
    Journal,
    #[error("the store is shutting down")]
    Closed,
    #[error("too many deliveries are waiting to be journaled")]
    Busy,
}

/// What became of a recorded delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Accepted,
    Duplicate,
    /// A job this journal does not know, older than its retention: most likely a finished job
    /// already forgotten, replayed. Not journaled, so it cannot bring the job back.
    PastRetention,
}

enum Command {
    Record { entry: Entry, reply: oneshot::Sender<Result<Recorded, StoreError>> },
    SetRunners(RunnerIndex),
    SetGroups(RunnerGroups),
    Checkpoint,
    OpenJobs { repo: String, reply: oneshot::Sender<Vec<Job>> },
    ActiveRepos { owners: HashSet<String>, since: i64, reply: oneshot::Sender<Vec<String>> },
    Shutdown(oneshot::Sender<()>),
}

/// The cloneable front of the writer.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    board: Arc<Board>,
    clock: Clock,
    healthy: Arc<AtomicBool>,
    shared: bool,
    shared_view: Option<SharedView>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Opens the journal in `data_dir`, rebuilds the state from it and starts the writer thread.
    /// Must be called inside a tokio runtime (the checkpoint timer is a task).
    pub fn start(
        data_dir: &Path,
        runners: RunnerIndex,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, JournalError> {
        Self::start_on(Self::open_journal(data_dir)?, runners, config, metrics)
    }

    /// Opens (and locks) the journal in `data_dir`, for [`start_on`](Self::start_on).
    pub fn open_journal(data_dir: &Path) -> Result<Journal, JournalError> {
        let started = std::time::Instant::now();
        let journal = Journal::open(&data_dir.join("journal"))?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "journal opened");
        Ok(journal)
    }

    /// Rebuilds the state from an opened journal and starts the writer thread.
    pub fn start_on(
        mut journal: Journal,
        runners: RunnerIndex,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, JournalError> {
        let now = (config.clock)();
        let started = std::time::Instant::now();
        let mut state = DemandState::new(runners.clone());
        let recovered = journal.recover_with(|job| state.restore(job))?;
        let applied = recovered.last_seq;
        let mut dirty = HashSet::new();
        for entry in &recovered.tail {
            if !state.record(entry.delivery, &entry.event, now).duplicate {
                dirty.insert(state.key(&entry.event.repo.full_name, entry.event.job_id));
            }
        }
        tracing::info!(
            jobs = state.job_count(),
            replayed = recovered.tail.len(),
            runners = state.index().len(),
            seconds = started.elapsed().as_secs_f64(),
            "journal recovered"
        );
        metrics.journal_bytes.set(i64::try_from(journal.size_on_disk()).unwrap_or(i64::MAX));
        metrics.jobs_tracked.set(i64::try_from(state.job_count()).unwrap_or(i64::MAX));
        let board = Arc::new(Board::default());
        let shared_view = config.shared.as_ref().map(|_| SharedView::default());
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let sync = match &config.shared {
            None => {
                board.publish_all(state.index(), |key| Some(state.counts(key)));
                for view in board.list() {
                    metrics.runner(&view);
                }
                None
            }
            Some(shared) => {
                // Until the first read of the shared store, numbers are not known yet.
                board.set_stale(true);
                board.publish_all(state.index(), |_| None);
                let sync = shared::start(
                    shared.kv.clone(),
                    shared.config.clone(),
                    state.index().clone(),
                    shared::Outputs {
                        board: board.clone(),
                        view: shared_view.clone().unwrap_or_default(),
                        learned: learned(tx.clone(), config.clock.clone()),
                    },
                    metrics.clone(),
                    config.clock.clone(),
                )
                .map_err(JournalError::Thread)?;
                // Everything the journal knows goes into the shared values once per start.
                let _ = sync.send(SyncMessage::Jobs(state.jobs().map(|job| job.to_job()).collect()));
                Some(sync)
            }
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let handle = Self {
            tx: tx.clone(),
            board: board.clone(),
            clock: config.clock.clone(),
            healthy: healthy.clone(),
            shared: sync.is_some(),
            shared_view: shared_view.clone(),
        };
        let every = config.checkpoint_every;
        let mut writer = Writer {
            journal,
            catalog: runners,
            groups: RunnerGroups::default(),
            state,
            board,
            metrics,
            config,
            dirty,
            run: None,
            again: false,
            applied,
            last_forget: now,
            healthy,
            sync,
        };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                let done = writer.run(rx);
                // Close the journal (and its file lock) before telling anyone it is closed.
                drop(writer);
                tracing::info!("journal flushed and closed");
                if let Some(done) = done {
                    let _ = done.send(());
                }
            })
            .map_err(JournalError::Thread)?;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if tx.send(Command::Checkpoint).await.is_err() {
                    break;
                }
            }
        });
        Ok(handle)
    }

    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Whether demand comes from a store shared with other replicas (memcached).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// False once a journal write has failed: the state may then hold deliveries that are not
    /// on disk, so the server must be restarted to rebuild it from the journal (`/healthz` and
    /// `/readyz` then fail).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Journals a delivery; resolves once it is on disk (or known to be a duplicate).
    pub async fn record(&self, delivery: &str, event: JobEvent) -> Result<Recorded, StoreError> {
        if !self.is_healthy() {
            return Err(StoreError::Journal);
        }
        let (reply, answer) = oneshot::channel();
        let entry = Entry { delivery: delivery_key(delivery), received_at: self.now(), event };
        self.tx.try_send(Command::Record { entry, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Replaces the runner set; open jobs are reassigned.
    pub async fn set_runners(&self, index: RunnerIndex) -> Result<(), StoreError> {
        self.tx.send(Command::SetRunners(index)).await.map_err(|_| StoreError::Closed)
    }

    /// Replaces what the organisations' runner groups admit; open jobs are reassigned when an
    /// organisation runner's access changed.
    pub async fn set_runner_groups(&self, groups: RunnerGroups) -> Result<(), StoreError> {
        self.tx.send(Command::SetGroups(groups)).await.map_err(|_| StoreError::Closed)
    }

    /// Asks for a checkpoint now (tests; the writer also checkpoints on its own timer).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.tx.send(Command::Checkpoint).await.map_err(|_| StoreError::Closed)
    }

    /// Jobs of `repo` (lower-cased `owner/name`) not yet completed: this journal's, and in shared
    /// mode also the other replicas' as last read from the shared store (the furthest state wins).
    pub async fn open_jobs(&self, repo: &str) -> Result<Vec<Job>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::OpenJobs { repo: repo.to_string(), reply }).await.map_err(|_| StoreError::Closed)?;
        let jobs = answer.await.map_err(|_| StoreError::Closed)?;
        Ok(match &self.shared_view {
            Some(view) => join_open_jobs(repo, jobs, view.jobs(repo)),
            None => jobs,
        })
    }

    /// The repositories of `owners` (lower-cased) with an open job or a job that changed at or
    /// after `since` (unix seconds), as this replica knows them: in shared mode also those of
    /// the values last read from the shared store.
    pub async fn active_repos(&self, owners: &HashSet<String>, since: i64) -> Result<Vec<String>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::ActiveRepos { owners: owners.clone(), since, reply };
        self.tx.send(command).await.map_err(|_| StoreError::Closed)?;
        let mut repos = answer.await.map_err(|_| StoreError::Closed)?;
        if let Some(view) = &self.shared_view {
            repos.extend(
                view.repos()
                    .into_iter()
                    .filter(|repo| repo.split_once('/').is_some_and(|(owner, _)| owners.contains(owner))),
            );
            repos.sort_unstable();
            repos.dedup();
        }
        Ok(repos)
    }

    /// Journals everything queued, checkpoints, flushes and stops the writer.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Journals the finishes the sync thread read in the shared values like any delivery (the
/// delivery id names the job and its state, so learning one twice is a duplicate); nobody waits
/// for the answer, and a finish that finds the queue full is learned again at the next start.
fn learned(tx: mpsc::Sender<Command>, clock: Clock) -> shared::Learned {
    Box::new(move |events: Vec<JobEvent>| {
        for event in events {
            let delivery = delivery_key(&format!("shared:{}:{}", event.job_id, event.status.as_str()));
            let (reply, _) = oneshot::channel();
            let entry = Entry { delivery, received_at: clock(), event };
            if tx.try_send(Command::Record { entry, reply }).is_err() {
                tracing::debug!("a finish read in the shared store was not journaled: the writer is busy or stopping");
            }
        }
    })
}

struct Writer {
    journal: Journal,
    /// The runners as the catalog has them; `state` holds them with `groups` applied.
    catalog: RunnerIndex,
    /// What GitHub's runner groups admit, as the resync last read them.
    groups: RunnerGroups,
    state: DemandState,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    config: WriterConfig,
    /// Jobs changed since the current (or last) checkpoint started.
    dirty: HashSet<JobKey>,
    /// The checkpoint being written, a few jobs after every group commit.
    run: Option<CheckpointRun>,
    /// A checkpoint was asked for while one was being written.
    again: bool,
    /// Highest sequence number reflected in `state`.
    applied: u64,
    last_forget: i64,
    healthy: Arc<AtomicBool>,
    /// Shared mode: the sync thread that merges job changes into memcached.
    sync: Option<SyncSender>,
}

impl Writer {
    /// Serves commands until shutdown; returns whom to tell once the journal is closed.
    fn run(&mut self, mut rx: mpsc::Receiver<Command>) -> Option<oneshot::Sender<()>> {
        let mut records = Vec::with_capacity(MAX_BATCH);
        loop {
            // With a checkpoint under way, time with nothing to commit goes to the checkpoint.
            let command = if self.run.is_some() {
                match rx.try_recv() {
                    Ok(command) => command,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.checkpoint_step(IDLE_CHECKPOINT_STEP);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(command) => command,
                    None => break,
                }
            };
            let mut next = Some(command);
            while let Some(command) = next.take() {
                match command {
                    Command::Record { entry, reply } => {
                        records.push((entry, reply));
                        if records.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                        if next.as_ref().is_none_or(|c| !matches!(c, Command::Record { .. })) {
                            let deliveries = records.len();
                            self.commit(std::mem::take(&mut records));
                            self.checkpoint_step(CHECKPOINT_STEP_BASE + deliveries);
                            if deliveries >= COMMIT_SIBLINGS && !self.config.commit_delay.is_zero() {
                                // Every flush costs the same however many deliveries it carries
                                // (and wakes sled's I/O threads); under load, fewer and larger
                                // flushes leave more CPU to receive deliveries.
                                std::thread::sleep(self.config.commit_delay);
                            }
                        }
                    }
                    Command::SetRunners(index) => {
                        self.catalog = index;
                        self.set_runners(self.catalog.with_groups(&self.groups));
                    }
                    Command::SetGroups(groups) => {
                        let index = self.catalog.with_groups(&groups);
                        self.groups = groups;
                        // Both come from the catalog: the same runners in the same order.
                        let old = self.state.index().iter();
                        if index.iter().zip(old).any(|(new, old)| new.access != old.access) {
                            self.set_runners(index);
                        }
                    }
                    Command::Checkpoint => self.start_checkpoint(),
                    Command::OpenJobs { repo, reply } => {
                        let _ = reply.send(self.state.open_jobs(&repo).iter().map(JobView::to_job).collect());
                    }
                    Command::ActiveRepos { owners, since, reply } => {
                        let _ = reply.send(self.state.active_repos(&owners, since));
                    }
                    Command::Shutdown(done) => {
                        rx.close();
                        while let Ok(command) = rx.try_recv() {
                            if let Command::Record { entry, reply } = command {
                                records.push((entry, reply));
                            }
                        }
                        self.commit(std::mem::take(&mut records));
                        self.checkpoint_now();
                        if let Some(sync) = self.sync.take() {
                            // Best effort: what is not merged now is republished from the journal
                            // at the next start.
                            let (merged, wait) = std::sync::mpsc::channel();
                            if sync.send(SyncMessage::Shutdown(merged)).is_ok() {
                                let _ = wait.recv_timeout(Duration::from_secs(3));
                            }
                        }
                        return Some(done);
                    }
                }
            }
        }
        self.checkpoint_now();
        None
    }

    /// Applies a batch, journals what was not a duplicate with one flush, publishes the new
    /// demand and answers every sender. Demand is published before answering, so a caller that
    /// reads after its 2xx sees its own delivery.
    fn commit(&mut self, records: Vec<(Entry, oneshot::Sender<Result<Recorded, StoreError>>)>) {
        if records.is_empty() {
            return;
        }
        self.metrics.journal_batch.observe(records.len() as f64);
        if !self.healthy.load(Ordering::Relaxed) {
            for (_, reply) in records {
                let _ = reply.send(Err(StoreError::Journal));
            }
            return;
        }
        let now = (self.config.clock)();
        let mut touched: Vec<RunnerKey> = Vec::new();
        let mut changed_jobs: Vec<JobKey> = Vec::new();
        let mut journaled = Vec::with_capacity(records.len());
        let mut replies = Vec::with_capacity(records.len());
        let retention = i64::try_from(self.config.retention.as_secs()).unwrap_or(i64::MAX);
        for (entry, reply) in records {
            if self.state.is_past_retention(&entry.event, now, retention) {
                replies.push((reply, Recorded::PastRetention));
                continue;
            }
            let applied = self.state.record(entry.delivery, &entry.event, now);
            if applied.duplicate {
                replies.push((reply, Recorded::Duplicate));
                continue;
            }
            let key = self.state.key(&entry.event.repo.full_name, entry.event.job_id);
            // Only the shared store is handed changed jobs; standalone, the counts are the demand.
            if applied.changed && self.sync.is_some() {
                changed_jobs.push(key.clone());
            }
            self.dirty.insert(key);
            for key in applied.runners {
                if !touched.contains(&key) {
                    touched.push(key);
                }
            }
            journaled.push(entry);
            replies.push((reply, Recorded::Accepted));
        }
        // Duplicates are answered after the flush too: the state they were found in must be on
        // disk before anyone is told the delivery is safe.
        let started = std::time::Instant::now();
        let appended = self.journal.append(&journaled);
        if !journaled.is_empty() {
            self.metrics.journal_flush.observe(started.elapsed().as_secs_f64());
        }
        match appended {
            Ok(seq) => self.applied = seq,
            Err(error) => {
                // The state now holds deliveries that are not on disk, and sled may refuse every
                // later write; refuse everything and fail liveness (`/healthz`) until a restart
                // rebuilds the state from the journal.
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(%error, deliveries = replies.len(), "journal write failed; refusing deliveries and failing liveness until restart");
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Journal));
                }
                return;
            }
        }
        self.share_or_publish(&changed_jobs, &touched);
        for (reply, recorded) in replies {
            let _ = reply.send(Ok(recorded));
        }
    }

    /// Shared mode hands changed jobs to the sync thread (demand then comes back from the shared
    /// store); otherwise the local counts are the demand.
    fn share_or_publish(&self, changed_jobs: &[JobKey], touched: &[RunnerKey]) {
        match &self.sync {
            Some(sync) => {
                if !changed_jobs.is_empty() {
                    let jobs = changed_jobs
                        .iter()
                        .filter_map(|key| self.state.job_by_key(key))
                        .map(|job| job.to_job())
                        .collect();
                    let _ = sync.send(SyncMessage::Jobs(jobs));
                }
            }
            None => self.publish(touched),
        }
    }

    fn publish(&self, touched: &[RunnerKey]) {
        let counts = touched.iter().map(|key| (key, self.state.counts(key)));
        for view in self.board.publish(counts) {
            self.metrics.runner(&view);
        }
    }

    fn set_runners(&mut self, index: RunnerIndex) {
        if let Some(sync) = &self.sync {
            // In shared mode the sync thread shows demand, and forgets removed runners' series.
            let _ = sync.send(SyncMessage::Runners(index.clone()));
            self.state.set_runners(index);
            return;
        }
        let removed: Vec<RunnerKey> =
            self.state.index().iter().filter(|r| index.get(&r.key).is_none()).map(|r| r.key.clone()).collect();
        self.state.set_runners(index);
        for key in removed {
            self.metrics.forget_runner(&key.namespace, &key.name);
        }
        self.board.publish_all(self.state.index(), |key| Some(self.state.counts(key)));
        for view in self.board.list() {
            self.metrics.runner(&view);
        }
    }
}
