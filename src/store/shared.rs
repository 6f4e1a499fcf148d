//! Shared mode: every replica's jobs merged into one value per repository in memcached, and
//! every replica's demand read back from those values, so all replicas answer the same number.
//!
//! One `store-sync` thread per replica does both directions. Deliveries are acknowledged once
//! they are in the local journal (see `writer`); this thread merges them into the shared values
//! afterwards, retrying while memcached is away (the backlog), and re-reads every repository
//! that has runners on a short interval. A value whose generation this replica has not yet
//! contributed to (memcached restarted, or evicted and recreated the key) gets everything the
//! local journal knows about that repository: demand returns to the truth without GitHub.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::board::Board;
use crate::clock::Clock;
use crate::demand::repo_jobs::{RepoJobs, SharedJob};
use crate::demand::{Counts, Job, JobEvent, JobKey, JobStatus, RepoRef, RunnerIndex, RunnerKey, Scope};
use crate::metrics::Metrics;

/// memcached's default item limit is 1 MiB; stay well under it.
pub const MAX_VALUE_BYTES: usize = 900 * 1024;
/// Attempts of one compare-and-swap merge before leaving it for the next round.
const CAS_ATTEMPTS: usize = 32;

/// Why a shared-store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KvError {
    /// The store could not be reached (as opposed to refusing this one request).
    pub unavailable: bool,
    pub message: String,
}

/// The key-value operations shared mode needs; memcached implements them.
pub trait SharedKv: Send + Sync + 'static {
    /// The value and its compare-and-swap token, or `None` when the key is absent.
    fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, KvError>;
    /// Stores only if absent; `false` when the key exists.
    fn add(&self, key: &str, value: &[u8]) -> Result<bool, KvError>;
    /// Stores only if unchanged since `token` was read; `false` on conflict or when gone.
    fn cas(&self, key: &str, value: &[u8], token: u64) -> Result<bool, KvError>;
    /// Every present key among `keys`, as far as the servers holding them answered.
    fn get_multi(&self, keys: &[String]) -> MultiRead;
    /// Which server holds `key` (several servers: a dead one must not hold up the others).
    fn server_of(&self, _key: &str) -> usize {
        0
    }
}

/// What a multi-key read found. A key in neither `values` nor `failed` is absent.
#[derive(Debug, Default)]
pub struct MultiRead {
    pub values: HashMap<String, Vec<u8>>,
    /// Keys whose server did not answer: their last known demand stands.
    pub failed: HashSet<String>,
    pub error: Option<KvError>,
}

/// Settings of the sync thread.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Key prefix, so several installations can share one memcached.
    pub prefix: String,
    /// How often every repository with runners is re-read.
    pub refresh_every: Duration,
    /// Finished jobs older than this are dropped from shared values. They are kept only to stop
    /// a late `queued` from reviving a finished job; a job GitHub created more than a day ago is
    /// expired locally anyway, so an hour is plenty and keeps values small.
    pub retention: Duration,
    /// How often pending changes are merged (coalescing window).
    pub push_every: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            prefix: crate::config::DEFAULT_STORE_PREFIX.into(),
            refresh_every: crate::config::DEFAULT_STORE_REFRESH_INTERVAL,
            retention: Duration::from_secs(3600),
            push_every: Duration::from_millis(20),
        }
    }
}

/// The shared values last read, by repository: what a resync compares GitHub with.
#[derive(Debug, Clone, Default)]
pub struct SharedView(Arc<std::sync::RwLock<HashMap<String, RepoJobs>>>);

impl SharedView {
    fn set(&self, repo: &str, value: &RepoJobs) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(repo.to_string(), value.clone());
    }

    /// The repositories whose values were read, with at least one job.
    pub fn repos(&self) -> Vec<String> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.iter().filter(|(_, value)| !value.jobs.is_empty()).map(|(repo, _)| repo.clone()).collect()
    }

    /// Every job of `repo` as the shared store last showed it.
    pub fn jobs(&self, repo: &str) -> Vec<(u64, SharedJob)> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(repo).map(|value| value.jobs.iter().map(|(id, job)| (*id, job.clone())).collect()).unwrap_or_default()
    }
}

/// What the writer tells the sync thread.
#[derive(Debug)]
pub enum SyncMessage {
    /// Current states of jobs that changed (or, at start-up, of every job).
    Jobs(Vec<Job>),
    /// Jobs forgotten locally.
    Forget(Vec<JobKey>),
    Runners(RunnerIndex),
    /// Merge what is pending now, then stop; the sender is told when done.
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// The writer's end of the sync thread.
pub type SyncSender = Sender<SyncMessage>;

/// Hands the writer the finishes of jobs this journal holds open that the shared values show:
/// journaled, they are what this replica republishes after a restart too.
pub type Learned = Box<dyn Fn(Vec<JobEvent>) + Send + 'static>;

/// Where the sync thread's findings go: the numbers to the board, the values to the resync's
/// view, finishes this journal lacks to the writer.
pub struct Outputs {
    pub board: Arc<Board>,
    pub view: SharedView,
    pub learned: Learned,
}

/// Starts the sync thread.
pub fn start(
    kv: Arc<dyn SharedKv>,
    config: SyncConfig,
    index: RunnerIndex,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    clock: Clock,
) -> std::io::Result<SyncSender> {
    let (tx, rx) = std::sync::mpsc::channel();
    let Outputs { board, view, learned } = outputs;
    let mut sync = Syncer {
        learned,
        kv,
        config,
        index,
        board,
        view,
        metrics,
        clock,
        known: HashMap::new(),
        pending: HashMap::new(),
        contributed: HashMap::new(),
        failures: 0,
        retry_at: None,
        seen: HashSet::new(),
        vanished: HashMap::new(),
        refresh_soon: false,
        organisation_counts: HashMap::new(),
        organisation_totals: HashMap::new(),
    };
    std::thread::Builder::new().name("store-sync".into()).spawn(move || sync.run(rx))?;
    Ok(tx)
}

struct Syncer {
    learned: Learned,
    kv: Arc<dyn SharedKv>,
    config: SyncConfig,
    index: RunnerIndex,
    board: Arc<Board>,
    view: SharedView,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Everything the local journal knows, by repository: what is republished after a loss.
    known: HashMap<String, HashMap<u64, SharedJob>>,
    /// Jobs changed since their repository's value last took them: the backlog.
    pending: HashMap<String, HashSet<u64>>,
    /// The generation of each repository's value that this replica has given all it knows.
    contributed: HashMap<String, u64>,
    failures: u32,
    retry_at: Option<Instant>,
    /// Repositories whose shared value this replica has seen.
    seen: HashSet<String>,
    /// Seen values that are now missing, and since when.
    vanished: HashMap<String, Instant>,
    /// Re-read everything at once (the store just came back).
    refresh_soon: bool,
    /// What each repository's last shown value gives the organisation runners (whose demand
    /// is the sum over their organisation's repositories), and those sums.
    organisation_counts: HashMap<String, Vec<(RunnerKey, Counts)>>,
    organisation_totals: HashMap<RunnerKey, Counts>,
}

/// Counts per runner.
type RunnerCounts = Vec<(RunnerKey, Counts)>;

/// The repositories an organisation's directory lists: lines naming a repository of the owner
/// (`prefix` is `owner/`); anything else (a damaged value) is skipped.
fn parse_directory(bytes: &[u8], prefix: &str) -> BTreeSet<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|line| line.len() > prefix.len() && line.starts_with(prefix) && !line[prefix.len()..].contains('/'))
        .map(str::to_string)
        .collect()
}

fn random_generation() -> u64 {
    // RandomState is seeded from the OS per process; a fresh hasher gives a random u64.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish() | 1
}

enum Merge {
    Done(RepoJobs),
    Unavailable(KvError),
    Failed(KvError),
}

impl Syncer {
    fn run(&mut self, rx: Receiver<SyncMessage>) {
        let mut next_refresh = Instant::now();
        let mut next_push = Instant::now();
        loop {
            // Changes are merged at most every `push_every`: under load one merge per repository
            // carries many deliveries instead of one each.
            let mut wake = next_refresh;
            if self.backlog() > 0 {
                wake = wake.min(next_push.max(self.retry_at.unwrap_or(next_push)));
            }
            let wait = wake.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            for message in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match message {
                    SyncMessage::Jobs(jobs) => self.take_jobs(jobs),
                    SyncMessage::Forget(ids) => self.forget(&ids),
                    SyncMessage::Runners(index) => {
                        // Only this thread shows demand in shared mode, so only it can make sure a
                        // removed runner's series stay gone (a refresh may have shown the old set).
                        for gone in self.index.iter().filter(|runner| index.get(&runner.key).is_none()) {
                            self.metrics.forget_runner(&gone.key.namespace, &gone.key.name);
                        }
                        self.index = index;
                        self.organisation_counts.clear();
                        self.organisation_totals.clear();
                        self.board.publish_all(&self.index, |_| None);
                        next_refresh = Instant::now();
                    }
                    SyncMessage::Shutdown(done) => {
                        self.retry_at = None;
                        self.push_pending();
                        let _ = done.send(());
                        return;
                    }
                }
            }
            // Before any merge is tried: whoever sees the store degraded also sees its backlog.
            self.metrics.store_backlog.set(self.backlog() as i64);
            let now = Instant::now();
            if self.backlog() > 0 && now >= next_push && self.retry_at.is_none_or(|at| now >= at) {
                self.push_pending();
                next_push = Instant::now() + self.config.push_every;
            }
            if self.refresh_soon || Instant::now() >= next_refresh {
                self.refresh_soon = false;
                self.refresh();
                next_refresh = Instant::now() + self.config.refresh_every;
            }
            self.metrics.store_backlog.set(self.backlog() as i64);
        }
    }

    fn backlog(&self) -> usize {
        self.pending.values().map(HashSet::len).sum()
    }

    fn take_jobs(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            let repo = job.repo.full_name.clone();
            self.known.entry(repo.clone()).or_default().insert(job.id, SharedJob::from_job(&job));
            self.pending.entry(repo).or_default().insert(job.id);
        }
    }

    fn forget(&mut self, keys: &[JobKey]) {
        for key in keys {
            if let Some(jobs) = self.known.get_mut(&*key.repo) {
                jobs.remove(&key.id);
            }
            if let Some(pending) = self.pending.get_mut(&*key.repo) {
                pending.remove(&key.id);
            }
        }
    }

    fn key(&self, repo: &str) -> String {
        format!("{}repo:{repo}", self.config.prefix)
    }

    /// The key of an organisation's directory: the names of its repositories that have values,
    /// one per line, so that every replica reads the repositories an organisation runner serves,
    /// not only those it received deliveries for.
    fn directory_key(&self, owner: &str) -> String {
        format!("{}org:{owner}", self.config.prefix)
    }

    /// The repositories to re-read: those of repository runners, and for every organisation with
    /// organisation runners, those its directory lists and those this journal knows (each
    /// organisation's directory is brought up to date on the way).
    fn repos_to_read(&mut self) -> Vec<String> {
        let mut repos: Vec<String> =
            self.index.iter().filter(|r| r.scope == Scope::Repository).map(|r| r.repo.clone()).collect();
        let owners: Vec<String> = self.index.organizations().into_iter().map(str::to_string).collect();
        for owner in owners {
            repos.extend(self.update_directory(&owner));
        }
        repos.sort();
        repos.dedup();
        repos
    }

    /// Adds the repositories of `owner` this journal knows jobs of to its directory, and drops
    /// those whose value is gone or empty; returns the directory's repositories. One
    /// compare-and-swap, and only when something changed.
    fn update_directory(&mut self, owner: &str) -> Vec<String> {
        let prefix = format!("{owner}/");
        let ours: Vec<String> = self
            .known
            .iter()
            .filter(|(repo, jobs)| repo.starts_with(&prefix) && !jobs.is_empty())
            .map(|(repo, _)| repo.clone())
            .collect();
        let key = self.directory_key(owner);
        for _ in 0..CAS_ATTEMPTS {
            let (listed, token) = match self.kv.gets(&key) {
                Ok(Some((bytes, token))) => (parse_directory(&bytes, &prefix), Some(token)),
                Ok(None) => (BTreeSet::new(), None),
                Err(error) => {
                    tracing::debug!(%owner, %error, "organisation directory unreadable; reading the repositories known here");
                    return ours;
                }
            };
            let mut wanted = listed.clone();
            wanted.extend(ours.iter().cloned());
            // Listed repositories whose value this replica saw gone or empty, and whose jobs it
            // does not hold, are dropped: any replica holding jobs of one lists it again.
            let view = self.view.0.read().unwrap_or_else(|p| p.into_inner());
            wanted.retain(|repo| ours.contains(repo) || !view.get(repo).is_some_and(|v| v.jobs.is_empty()));
            drop(view);
            if wanted == listed {
                return wanted.into_iter().collect();
            }
            let text: String = wanted.iter().map(|repo| format!("{repo}\n")).collect();
            let stored = match token {
                None => self.kv.add(&key, text.as_bytes()),
                Some(token) => self.kv.cas(&key, text.as_bytes(), token),
            };
            match stored {
                Ok(true) => return wanted.into_iter().collect(),
                Ok(false) => continue,
                Err(_) => return wanted.into_iter().collect(),
            }
        }
        ours
    }

    fn cutoff_minutes(&self) -> u32 {
        let now = (self.clock)();
        let retention = i64::try_from(self.config.retention.as_secs()).unwrap_or(i64::MAX);
        u32::try_from(now.saturating_sub(retention).max(0) / 60).unwrap_or(0)
    }

    /// Merges every repository with pending jobs. A server that does not answer is not asked
    /// again this round; its repositories stay in the backlog.
    fn push_pending(&mut self) {
        let repos: Vec<String> = self.pending.iter().filter(|(_, p)| !p.is_empty()).map(|(r, _)| r.clone()).collect();
        let mut down: HashSet<usize> = HashSet::new();
        let mut failure = None;
        for repo in repos {
            let server = self.kv.server_of(&self.key(&repo));
            if down.contains(&server) {
                continue;
            }
            match self.merge_repo(&repo) {
                Merge::Done(value) => {
                    self.pending.remove(&repo);
                    self.show(&repo, &value);
                }
                Merge::Unavailable(error) => {
                    down.insert(server);
                    failure = Some(error);
                }
                Merge::Failed(error) => {
                    tracing::warn!(%repo, %error, "shared merge failed; will retry");
                    self.metrics.store_op("merge", "error");
                }
            }
        }
        match failure {
            Some(error) => self.unavailable(&error),
            None if down.is_empty() => self.recovered(),
            None => {}
        }
    }

    /// One compare-and-swap merge of this replica's knowledge of `repo` into its shared value.
    fn merge_repo(&mut self, repo: &str) -> Merge {
        let key = self.key(repo);
        let cutoff = self.cutoff_minutes();
        let empty = HashMap::new();
        for _ in 0..CAS_ATTEMPTS {
            let known = self.known.get(repo).unwrap_or(&empty);
            let current = match self.kv.gets(&key) {
                Ok(current) => current,
                Err(e) if e.unavailable => return Merge::Unavailable(e),
                Err(e) => return Merge::Failed(e),
            };
            self.metrics.store_op("gets", "ok");
            let (mut value, token) = match current {
                None => (RepoJobs::new(random_generation()), None),
                Some((bytes, token)) => match RepoJobs::decode(&bytes) {
                    Ok(value) => (value, Some(token)),
                    Err(error) => {
                        tracing::error!(%repo, %error, "shared value unreadable; replacing it");
                        (RepoJobs::new(random_generation()), Some(token))
                    }
                },
            };
            let full = self.contributed.get(repo) != Some(&value.generation);
            let mut changed = if full {
                let replayed = known.len();
                let changed = value.merge(known.iter().map(|(id, job)| (*id, job)));
                if token.is_some() && replayed > 0 {
                    self.metrics.store_replayed.inc_by(replayed as u64);
                    tracing::info!(%repo, jobs = replayed, "republished local jobs into the shared value");
                }
                changed
            } else {
                let pending = self.pending.get(repo);
                value.merge(pending.into_iter().flatten().filter_map(|id| known.get(id).map(|job| (*id, job))))
            };
            changed |= value.forget_completed_before(cutoff) > 0;
            let dropped = value.shrink_to(MAX_VALUE_BYTES);
            if dropped > 0 {
                tracing::warn!(%repo, dropped, "shared value near memcached's item limit; dropped the oldest finished jobs");
                changed = true;
            }
            if !changed && token.is_some() {
                self.contributed.insert(repo.to_string(), value.generation);
                return Merge::Done(value);
            }
            let encoded = value.encode();
            let stored = match token {
                None => self.kv.add(&key, &encoded),
                Some(token) => self.kv.cas(&key, &encoded, token),
            };
            match stored {
                Ok(true) => {
                    self.metrics.store_op(if token.is_none() { "add" } else { "cas" }, "ok");
                    self.contributed.insert(repo.to_string(), value.generation);
                    return Merge::Done(value);
                }
                Ok(false) => self.metrics.store_op(if token.is_none() { "add" } else { "cas" }, "conflict"),
                Err(e) if e.unavailable => return Merge::Unavailable(e),
                Err(e) => return Merge::Failed(e),
            }
        }
        Merge::Failed(KvError { unavailable: false, message: format!("{CAS_ATTEMPTS} conflicting writers in a row") })
    }

    /// Re-reads every repository that has runners and shows its demand.
    fn refresh(&mut self) {
        let repos = self.repos_to_read();
        // Repositories no longer read give the organisation runners nothing any more.
        let dropped: Vec<String> =
            self.organisation_counts.keys().filter(|repo| repos.binary_search(repo).is_err()).cloned().collect();
        for repo in dropped {
            self.show_organisations(&repo, Vec::new());
        }
        if repos.is_empty() {
            return;
        }
        let keys: Vec<String> = repos.iter().map(|r| self.key(r)).collect();
        let read = self.kv.get_multi(&keys);
        match &read.error {
            Some(error) => {
                self.metrics.store_op("get_multi", "error");
                self.unavailable(error);
            }
            None => {
                self.metrics.store_op("get_multi", "ok");
                self.recovered();
            }
        }
        let mut holding = false;
        for (repo, key) in repos.iter().zip(&keys) {
            if read.failed.contains(key) {
                continue;
            }
            let value = read.values.get(key).and_then(|bytes| RepoJobs::decode(bytes).ok());
            let knows_some = self.known.get(repo).is_some_and(|jobs| !jobs.is_empty());
            let must_contribute = match &value {
                Some(value) => knows_some && self.contributed.get(repo) != Some(&value.generation),
                None => knows_some,
            };
            if must_contribute {
                // Lost or recreated: keep showing the last numbers until our jobs are back in.
                self.seen.insert(repo.clone());
                self.vanished.remove(repo);
                self.pending.entry(repo.clone()).or_default();
                match self.merge_repo(repo) {
                    Merge::Done(value) => {
                        self.pending.remove(repo);
                        self.show(repo, &value);
                    }
                    Merge::Unavailable(error) => self.unavailable(&error),
                    Merge::Failed(error) => tracing::warn!(%repo, %error, "republishing failed; will retry"),
                }
                continue;
            }
            match value {
                Some(value) => {
                    self.vanished.remove(repo);
                    self.seen.insert(repo.clone());
                    self.show(repo, &value);
                }
                None if self.seen.contains(repo) => {
                    // A value we saw is gone and this journal knows none of its jobs: another
                    // replica will put them back. Hold the last numbers (as stale) for a grace
                    // period rather than tell KEDA there is nothing to do.
                    let since = *self.vanished.entry(repo.clone()).or_insert_with(Instant::now);
                    if since.elapsed() < self.grace() {
                        holding = true;
                        continue;
                    }
                    self.vanished.remove(repo);
                    self.seen.remove(repo);
                    self.show(repo, &RepoJobs::default());
                }
                None => self.show(repo, &RepoJobs::default()),
            }
        }
        if holding {
            self.board.set_stale(true);
        }
        self.metrics.store_last_sync.set((self.clock)() as f64);
    }

    fn show(&mut self, repo: &str, value: &RepoJobs) {
        // A later state another replica journaled is what this one republishes from now on: a
        // store that loses its values while that replica is away must not get the older back.
        // Finishes are journaled too, so a restart does not bring the older state back either.
        if let Some(known) = self.known.get_mut(repo) {
            let finished: Vec<JobEvent> = value
                .advance(known)
                .into_iter()
                .filter_map(|id| known.get(&id).map(|job| (id, job)))
                .filter(|(_, job)| job.status == JobStatus::Completed)
                .map(|(id, job)| {
                    JobEvent::new(id, 0, 1, RepoRef::new(0, repo), JobStatus::Completed, job.labels.iter())
                })
                .collect();
            if !finished.is_empty() {
                (self.learned)(finished);
            }
        }
        self.view.set(repo, value);
        let (counts, organisation): (RunnerCounts, RunnerCounts) = value
            .counts(repo, &self.index)
            .into_iter()
            .partition(|(key, _)| self.index.get(key).is_some_and(|runner| runner.scope == Scope::Repository));
        for view in self.board.publish(counts.iter().map(|(k, c)| (k, *c))) {
            self.metrics.runner(&view);
        }
        self.show_organisations(repo, organisation);
    }

    /// Replaces what `repo` gives the organisation runners, and shows their new sums.
    fn show_organisations(&mut self, repo: &str, counts: Vec<(RunnerKey, Counts)>) {
        let old = self.organisation_counts.remove(repo).unwrap_or_default();
        if old.is_empty() && counts.iter().all(|(_, c)| c.demand() == 0) {
            return;
        }
        let mut touched: Vec<RunnerKey> = Vec::new();
        for (key, c) in &old {
            let total = self.organisation_totals.entry(key.clone()).or_default();
            total.queued = total.queued.saturating_sub(c.queued);
            total.in_progress = total.in_progress.saturating_sub(c.in_progress);
            touched.push(key.clone());
        }
        for (key, c) in &counts {
            let total = self.organisation_totals.entry(key.clone()).or_default();
            total.queued += c.queued;
            total.in_progress += c.in_progress;
            touched.push(key.clone());
        }
        touched.sort();
        touched.dedup();
        let kept: Vec<(RunnerKey, Counts)> = counts.into_iter().filter(|(_, c)| c.demand() > 0).collect();
        if !kept.is_empty() {
            self.organisation_counts.insert(repo.to_string(), kept);
        }
        let totals = &self.organisation_totals;
        let sums: Vec<(&RunnerKey, Counts)> =
            touched.iter().map(|key| (key, totals.get(key).copied().unwrap_or_default())).collect();
        for view in self.board.publish(sums) {
            self.metrics.runner(&view);
        }
        self.organisation_totals.retain(|_, total| total.demand() > 0);
    }

    fn unavailable(&mut self, error: &KvError) {
        self.failures = self.failures.saturating_add(1);
        let backoff =
            Duration::from_millis(100u64.saturating_mul(1 << self.failures.min(5))).min(Duration::from_secs(2));
        self.retry_at = Some(Instant::now() + backoff);
        if !self.board.is_stale() {
            tracing::warn!(%error, backlog = self.backlog(), "shared store unreachable; serving last known demand");
        }
        self.board.set_stale(true);
        self.metrics.store_degraded.set(1);
        self.metrics.store_op("any", "unavailable");
    }

    /// How long a vanished value's last numbers are held for other replicas to restore it.
    fn grace(&self) -> Duration {
        (self.config.refresh_every * 3).max(Duration::from_secs(5))
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(backlog = self.backlog(), "shared store reachable again");
            self.refresh_soon = true;
        }
        self.failures = 0;
        self.retry_at = None;
        self.board.set_stale(false);
        self.metrics.store_degraded.set(0);
    }
}
