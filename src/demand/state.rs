//! Per-runner demand derived from job states and the runner index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::job::{DELIVERIES_PER_JOB, Job, JobEvent, JobKey, JobStatus, JobView, Rank, RepoRef};
use super::runners::{RunnerIndex, RunnerKey};

/// GitHub cancels a job that has waited for a runner for 24 hours; one more hour of grace.
pub const QUEUED_LIFETIME_SECS: i64 = 25 * 3600;
/// A self-hosted job may run for at most 5 days; one more hour of grace.
pub const IN_PROGRESS_LIFETIME_SECS: i64 = 5 * 24 * 3600 + 3600;

/// Jobs a runner has to serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub queued: u64,
    pub in_progress: u64,
}

impl Counts {
    pub fn demand(&self) -> u64 {
        self.queued + self.in_progress
    }

    /// Counts one job in `status` (waiting and completed jobs are not demand).
    pub fn add(&mut self, status: JobStatus) {
        match status {
            JobStatus::Queued => self.queued += 1,
            JobStatus::InProgress => self.in_progress += 1,
            JobStatus::Waiting | JobStatus::Completed => {}
        }
    }

    fn remove(&mut self, status: JobStatus) {
        match status {
            JobStatus::Queued => self.queued = self.queued.saturating_sub(1),
            JobStatus::InProgress => self.in_progress = self.in_progress.saturating_sub(1),
            JobStatus::Waiting | JobStatus::Completed => {}
        }
    }
}

/// The outcome of applying one observation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The delivery was seen before for this job; nothing was applied.
    pub duplicate: bool,
    /// Whether the job's state moved.
    pub changed: bool,
    /// Runners whose counts changed (at most two: the job may move between runners).
    pub runners: Vec<RunnerKey>,
}

/// One job as the state keeps it: what a [`Job`] holds, less the id and repository it is found
/// by, with its labels shared with every job that has the same ones. 80 bytes, and 8 per
/// delivery key.
#[derive(Debug)]
struct Slot {
    run_id: u64,
    repo_id: u64,
    since: Option<i64>,
    changed_at: i64,
    run_attempt: u32,
    status: JobStatus,
    labels: Arc<[String]>,
    /// Exactly as long as the keys it holds: a job sees a handful of deliveries.
    deliveries: Box<[u64]>,
}

impl Slot {
    fn new(event: &JobEvent, labels: Arc<[String]>, now: i64) -> Self {
        Self {
            run_id: event.run_id,
            repo_id: event.repo.id,
            since: event.since,
            changed_at: now,
            run_attempt: event.run_attempt,
            status: event.status,
            labels,
            deliveries: Box::default(),
        }
    }

    fn restored(job: Job, labels: Arc<[String]>) -> Self {
        Self {
            run_id: job.run_id,
            repo_id: job.repo.id,
            since: job.since,
            changed_at: job.changed_at,
            run_attempt: job.run_attempt,
            status: job.status,
            labels,
            deliveries: job.deliveries.into_boxed_slice(),
        }
    }

    fn view<'a>(&'a self, id: u64, repo: &'a str) -> JobView<'a> {
        JobView {
            id,
            run_id: self.run_id,
            run_attempt: self.run_attempt,
            repo_id: self.repo_id,
            repo,
            status: self.status,
            labels: &self.labels,
            since: self.since,
            changed_at: self.changed_at,
            deliveries: &self.deliveries,
        }
    }

    fn rank(&self) -> Rank<'_> {
        (self.status, &self.labels, self.run_id, self.run_attempt, self.since)
    }

    /// [`Job::merge`] for a slot: the same join, with the labels taken from `sets`.
    fn merge(&mut self, event: &JobEvent, sets: &mut LabelSets, now: i64) -> bool {
        if event.rank() <= self.rank() {
            return false;
        }
        if *self.labels != *event.labels {
            self.labels = sets.intern(&event.labels);
        }
        self.status = event.status;
        self.run_id = event.run_id;
        self.run_attempt = event.run_attempt;
        self.since = event.since;
        self.changed_at = now;
        true
    }

    /// [`Job::remember_delivery`]: keeps the newest `DELIVERIES_PER_JOB` keys.
    fn remember_delivery(&mut self, key: u64) {
        let mut keys = std::mem::take(&mut self.deliveries).into_vec();
        if keys.len() >= DELIVERIES_PER_JOB {
            keys.remove(0);
        }
        keys.push(key);
        self.deliveries = keys.into_boxed_slice();
    }
}

/// Every distinct set of job labels, once; jobs hold a reference to theirs. A repository's
/// jobs share a few sets, so there are a handful per repository, not one per job.
#[derive(Debug, Default)]
struct LabelSets(HashSet<Arc<[String]>>);

impl LabelSets {
    fn intern(&mut self, labels: &[String]) -> Arc<[String]> {
        if let Some(set) = self.0.get(labels) {
            return set.clone();
        }
        let set: Arc<[String]> = labels.into();
        self.0.insert(set.clone());
        set
    }

    /// Drops the sets no job holds any more.
    fn prune(&mut self) {
        self.0.retain(|set| Arc::strong_count(set) > 1);
    }
}

/// The jobs of one repository, and which of them are not completed (what a resync compares
/// with GitHub).
#[derive(Debug, Default)]
struct RepoState {
    /// Boxed: growing the map then moves 16-byte entries, not whole jobs (at 100,000 jobs an
    /// unboxed resize held the writer for 20 ms), and an empty bucket costs 16 bytes, not 88.
    jobs: HashMap<u64, Box<Slot>>,
    open: HashSet<u64>,
}

/// Every known job and the demand it makes of each runner.
///
/// Jobs are kept per repository and found by [`JobKey`] (repository and id): a delivery is
/// trusted only for the repository its signature covers, so it can reach no other repository's
/// jobs, whatever job id it names.
#[derive(Debug, Default)]
pub struct DemandState {
    index: RunnerIndex,
    /// Keyed by the one copy of each repository's name, which the keys handed out share.
    repos: HashMap<Arc<str>, RepoState>,
    labels: LabelSets,
    job_count: usize,
    counts: HashMap<RunnerKey, Counts>,
}

impl DemandState {
    pub fn new(index: RunnerIndex) -> Self {
        Self { index, ..Self::default() }
    }

    pub fn index(&self) -> &RunnerIndex {
        &self.index
    }

    /// The job `id` of `repo` (lower-cased `owner/name`).
    pub fn job(&self, repo: &str, id: u64) -> Option<JobView<'_>> {
        let (name, state) = self.repos.get_key_value(repo)?;
        state.jobs.get(&id).map(|slot| slot.view(id, name))
    }

    pub fn job_by_key(&self, key: &JobKey) -> Option<JobView<'_>> {
        self.job(&key.repo, key.id)
    }

    /// The key of job `id` of `repo`, sharing the name this state keeps for the repository.
    pub fn key(&self, repo: &str, id: u64) -> JobKey {
        match self.repos.get_key_value(repo) {
            Some((name, _)) => JobKey { id, repo: name.clone() },
            None => JobKey { id, repo: repo.into() },
        }
    }

    pub fn jobs(&self) -> impl Iterator<Item = JobView<'_>> {
        self.repos.iter().flat_map(|(name, repo)| repo.jobs.iter().map(move |(id, slot)| slot.view(*id, name)))
    }

    pub fn job_count(&self) -> usize {
        self.job_count
    }

    /// Distinct label sets held (each once, however many jobs carry it).
    pub fn label_sets(&self) -> usize {
        self.labels.0.len()
    }

    /// Counts of one runner (zero for runners with no demand or unknown runners).
    pub fn counts(&self, runner: &RunnerKey) -> Counts {
        self.counts.get(runner).copied().unwrap_or_default()
    }

    /// The runner a job of `repo` in `status` with `labels` counts toward, if it is demand.
    fn contribution(
        index: &RunnerIndex,
        repo: &str,
        status: JobStatus,
        labels: &[String],
    ) -> Option<(RunnerKey, JobStatus)> {
        if !status.is_demand() {
            return None;
        }
        index.assign(repo, labels).map(|key| (key.clone(), status))
    }

    /// The repository's jobs, created on first use; the name is copied only then.
    fn repo_mut<'a>(repos: &'a mut HashMap<Arc<str>, RepoState>, repo: &str) -> &'a mut RepoState {
        if !repos.contains_key(repo) {
            repos.insert(repo.into(), RepoState::default());
        }
        repos.get_mut(repo).expect("inserted above")
    }

    /// Merges an observation; `now` is our clock in unix seconds.
    pub fn apply(&mut self, event: &JobEvent, now: i64) -> Applied {
        let (index, sets) = (&self.index, &mut self.labels);
        let name = event.repo.full_name.as_str();
        let repo = Self::repo_mut(&mut self.repos, name);
        let (before, after) = match repo.jobs.get_mut(&event.job_id) {
            Some(slot) => {
                let before = Self::contribution(index, name, slot.status, &slot.labels);
                if !slot.merge(event, sets, now) {
                    return Applied::default();
                }
                (before, Self::contribution(index, name, slot.status, &slot.labels))
            }
            None => {
                let slot = Box::new(Slot::new(event, sets.intern(&event.labels), now));
                let after = Self::contribution(index, name, slot.status, &slot.labels);
                repo.jobs.insert(event.job_id, slot);
                self.job_count += 1;
                (None, after)
            }
        };
        // The job changed, so it is now in the event's status.
        if event.status == JobStatus::Completed {
            repo.open.remove(&event.job_id);
        } else {
            repo.open.insert(event.job_id);
        }
        Applied { duplicate: false, changed: true, runners: self.move_contribution(before, after) }
    }

    /// Applies a delivery, unless this job has already seen the delivery (`delivery_key` of its
    /// `X-GitHub-Delivery`), in which case nothing changes and the result says `duplicate`.
    pub fn record(&mut self, delivery: u64, event: &JobEvent, now: i64) -> Applied {
        if self.job(&event.repo.full_name, event.job_id).is_some_and(|job| job.has_delivery(delivery)) {
            return Applied { duplicate: true, ..Applied::default() };
        }
        let applied = self.apply(event, now);
        let repo = self.repos.get_mut(event.repo.full_name.as_str());
        if let Some(slot) = repo.and_then(|repo| repo.jobs.get_mut(&event.job_id)) {
            slot.remember_delivery(delivery);
        }
        applied
    }

    /// Whether `event` is of a job not known here whose GitHub time (`since`) is `retention` or
    /// more before `now`. A finished job is forgotten `retention` after it finished, so this is
    /// what a replay of one of its deliveries looks like once it is forgotten; it must not open
    /// the job again. (GitHub ends every job long before: 24 hours queued, 5 days running.)
    pub fn is_past_retention(&self, event: &JobEvent, now: i64, retention: i64) -> bool {
        event.since.is_some_and(|since| since <= now.saturating_sub(retention))
            && self.job(&event.repo.full_name, event.job_id).is_none()
    }

    /// The repositories (lower-cased `owner/name`) of the given owners (lower-cased) that have
    /// an open job or a job that changed at or after `since`, in name order: those an
    /// organisation's resync must cover.
    pub fn active_repos(&self, owners: &HashSet<String>, since: i64) -> Vec<String> {
        let mut repos: Vec<String> = self
            .repos
            .iter()
            .filter(|(name, _)| name.split_once('/').is_some_and(|(owner, _)| owners.contains(owner)))
            .filter(|(_, repo)| !repo.open.is_empty() || repo.jobs.values().any(|slot| slot.changed_at >= since))
            .map(|(name, _)| name.to_string())
            .collect();
        repos.sort_unstable();
        repos
    }

    /// Jobs of `repo` (lower-cased `owner/name`) that are not completed.
    pub fn open_jobs(&self, repo: &str) -> Vec<JobView<'_>> {
        let Some((name, repo)) = self.repos.get_key_value(repo) else { return Vec::new() };
        repo.open
            .iter()
            .filter_map(|id| repo.jobs.get(id).map(|slot| slot.view(*id, name)))
            .filter(|job| job.status != JobStatus::Completed)
            .collect()
    }

    /// Restores a job from a snapshot (start-up); later events still merge into it.
    pub fn restore(&mut self, mut job: Job) {
        let (id, status) = (job.id, job.status);
        let name = std::mem::take(&mut job.repo.full_name);
        let labels = self.labels.intern(&std::mem::take(&mut job.labels));
        let after = Self::contribution(&self.index, &name, status, &labels);
        let repo = Self::repo_mut(&mut self.repos, &name);
        let old = repo.jobs.insert(id, Box::new(Slot::restored(job, labels)));
        if status != JobStatus::Completed {
            repo.open.insert(id);
        } else {
            repo.open.remove(&id);
        }
        if old.is_none() {
            self.job_count += 1;
        }
        let before = old.and_then(|old| Self::contribution(&self.index, &name, old.status, &old.labels));
        self.move_contribution(before, after);
    }

    fn move_contribution(
        &mut self,
        before: Option<(RunnerKey, JobStatus)>,
        after: Option<(RunnerKey, JobStatus)>,
    ) -> Vec<RunnerKey> {
        if before == after {
            return Vec::new();
        }
        let mut touched = Vec::with_capacity(2);
        if let Some((key, status)) = before {
            self.adjust_counts(&key, |counts| counts.remove(status));
            touched.push(key);
        }
        if let Some((key, status)) = after {
            self.adjust_counts(&key, |counts| counts.add(status));
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        touched
    }

    /// Changes a runner's counts, starting from empty ones; the key is cloned only then.
    fn adjust_counts(&mut self, key: &RunnerKey, change: impl FnOnce(&mut Counts)) {
        if let Some(counts) = self.counts.get_mut(key) {
            change(counts);
            return;
        }
        let mut counts = Counts::default();
        change(&mut counts);
        self.counts.insert(key.clone(), counts);
    }

    /// Replaces the runner set and reassigns every open job. Returns the runners whose counts
    /// changed, including runners that were removed.
    pub fn set_runners(&mut self, index: RunnerIndex) -> Vec<RunnerKey> {
        self.index = index;
        let mut fresh: HashMap<RunnerKey, Counts> = HashMap::new();
        for job in self.jobs() {
            if let Some((key, status)) = Self::contribution(&self.index, job.repo, job.status, job.labels) {
                fresh.entry(key).or_default().add(status);
            }
        }
        let mut touched: Vec<RunnerKey> = fresh
            .iter()
            .filter(|(key, counts)| self.counts.get(*key) != Some(counts))
            .map(|(key, _)| key.clone())
            .collect();
        touched.extend(
            self.counts
                .iter()
                .filter(|(key, counts)| counts.demand() > 0 && !fresh.contains_key(*key))
                .map(|(key, _)| key.clone()),
        );
        touched.sort();
        self.counts = fresh;
        touched
    }

    /// Completes jobs GitHub itself would have ended by now (queued for over a day, running for
    /// over five), so a lost `completed` delivery cannot hold a runner up forever.
    /// Returns the expired jobs as completion events to journal.
    pub fn expired(&self, now: i64) -> Vec<JobEvent> {
        self.jobs()
            .filter(|job| {
                let lifetime = match job.status {
                    JobStatus::Waiting | JobStatus::Queued => QUEUED_LIFETIME_SECS,
                    JobStatus::InProgress => IN_PROGRESS_LIFETIME_SECS,
                    JobStatus::Completed => return false,
                };
                now - job.since.unwrap_or(job.changed_at) > lifetime
            })
            .map(|job| JobEvent {
                job_id: job.id,
                run_id: job.run_id,
                run_attempt: job.run_attempt,
                repo: RepoRef { id: job.repo_id, full_name: job.repo.to_string() },
                status: JobStatus::Completed,
                labels: job.labels.to_vec(),
                since: job.since,
            })
            .collect()
    }

    /// Forgets completed jobs that finished before `cutoff` (our clock). Their keys are returned
    /// so the snapshot can drop them too.
    pub fn forget_completed_before(&mut self, cutoff: i64) -> Vec<JobKey> {
        let mut gone = Vec::new();
        self.repos.retain(|name, repo| {
            repo.jobs.retain(|id, slot| {
                let forget = slot.status == JobStatus::Completed && slot.changed_at < cutoff;
                if forget {
                    gone.push(JobKey { id: *id, repo: name.clone() });
                }
                !forget
            });
            // A burst of jobs leaves its buckets behind; give them back once it has passed.
            if repo.jobs.capacity() > 4 * repo.jobs.len().max(8) {
                repo.jobs.shrink_to_fit();
            }
            if repo.open.capacity() > 4 * repo.open.len().max(8) {
                repo.open.shrink_to_fit();
            }
            !repo.jobs.is_empty()
        });
        if !gone.is_empty() {
            self.labels.prune();
        }
        self.job_count -= gone.len();
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::job::RepoRef;
    use crate::demand::runners::Runner;
    use crate::demand::scaling::ScaleFactor;

    fn index() -> RunnerIndex {
        RunnerIndex::new([
            Runner::new(RunnerKey::new("ci", "linux"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear),
            Runner::new(RunnerKey::new("ci", "gpu"), "acme", "api", ["linux", "gpu"], 0, 5, ScaleFactor::Linear),
        ])
    }

    fn ev(job: u64, status: JobStatus, labels: &[&str]) -> JobEvent {
        JobEvent::new(job, 1, 1, RepoRef::new(9, "acme/api"), status, labels)
    }

    #[test]
    fn once_github_says_which_group_a_job_ran_in_it_counts_toward_that_groups_runner_whatever_the_order() {
        // `general` (linux, Default) is the most specific for a `linux` job; `large` (linux,
        // large, group `large`) is not, but GitHub ran the job there.
        let general =
            Runner::organization(RunnerKey::new("ci", "general"), "acme", ["linux"], 0, 5, ScaleFactor::Linear);
        let mut large =
            Runner::organization(RunnerKey::new("ci", "large"), "acme", ["linux", "large"], 0, 5, ScaleFactor::Linear);
        large.runner_group = Some("Large".into());
        let index = RunnerIndex::new([general, large]);
        let (general, large) = (RunnerKey::new("ci", "general"), RunnerKey::new("ci", "large"));
        let queued = ev(1, JobStatus::Queued, &["linux"]);
        let started = ev(1, JobStatus::InProgress, &["linux"]);
        let started_in_large = started.clone().ran_in_group(Some("large"));
        for order in [
            vec![&queued, &started_in_large],
            vec![&started_in_large, &queued],
            vec![&queued, &started_in_large, &started],
            vec![&started, &started_in_large, &queued],
        ] {
            let mut state = DemandState::new(index.clone());
            for (delivery, event) in order.iter().enumerate() {
                state.record(delivery as u64 + 1, event, 100);
            }
            assert_eq!(state.counts(&large).in_progress, 1, "{order:?}");
            assert_eq!(state.counts(&general).demand(), 0, "{order:?}");
        }
        let mut state = DemandState::new(index.clone());
        state.record(1, &queued, 100);
        assert_eq!(state.counts(&general).queued, 1, "while queued GitHub names no group");
        // A group none of ours is (GitHub's hosted larger runners, say): counted toward none.
        state.record(2, &ev(1, JobStatus::InProgress, &["linux"]).ran_in_group(Some("GitHub Actions")), 100);
        assert_eq!((state.counts(&general).demand(), state.counts(&large).demand()), (0, 0));
        // A repository runner is in no group of ours: it may still have taken the job.
        let repo = Runner::new(RunnerKey::new("ci", "repo"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear);
        let mut state = DemandState::new(RunnerIndex::new([repo]));
        state.record(1, &started.clone().ran_in_group(Some("Default")), 100);
        assert_eq!(state.counts(&RunnerKey::new("ci", "repo")).in_progress, 1);
        // Queued and waiting observations record no group; an empty name records none either.
        assert_eq!(queued.clone().ran_in_group(Some("large")).labels, queued.labels);
        assert_eq!(started.clone().ran_in_group(Some("  ")).labels, started.labels);
        assert_eq!(started_in_large.clone().ran_in_group(Some("Large")).labels, started_in_large.labels, "one group");
    }

    #[test]
    fn queued_then_in_progress_then_completed_counts_then_releases() {
        let mut state = DemandState::new(index());
        let linux = RunnerKey::new("ci", "linux");
        state.apply(&ev(1, JobStatus::Queued, &["linux"]), 0);
        assert_eq!(state.counts(&linux), Counts { queued: 1, in_progress: 0 });
        state.apply(&ev(1, JobStatus::InProgress, &["linux"]), 0);
        assert_eq!(state.counts(&linux), Counts { queued: 0, in_progress: 1 });
        let applied = state.apply(&ev(1, JobStatus::Completed, &["linux"]), 0);
        assert_eq!(applied.runners, vec![linux.clone()]);
        assert_eq!(state.counts(&linux).demand(), 0);
    }

    #[test]
    fn a_redelivery_is_recognised_per_job_and_changes_nothing() {
        let mut state = DemandState::new(index());
        assert!(!state.record(7, &ev(1, JobStatus::Queued, &["linux"]), 0).duplicate);
        assert!(!state.record(8, &ev(1, JobStatus::InProgress, &["linux"]), 0).duplicate);
        let again = state.record(7, &ev(1, JobStatus::Queued, &["linux"]), 0);
        assert!(again.duplicate && !again.changed);
        // The same key for another job is that job's own delivery.
        assert!(!state.record(7, &ev(2, JobStatus::Queued, &["linux"]), 0).duplicate);
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")), Counts { queued: 1, in_progress: 1 });
    }

    #[test]
    fn completed_before_queued_never_counts() {
        let mut state = DemandState::new(index());
        state.apply(&ev(1, JobStatus::Completed, &["linux"]), 0);
        let applied = state.apply(&ev(1, JobStatus::Queued, &["linux"]), 0);
        assert!(!applied.changed);
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")).demand(), 0);
    }

    #[test]
    fn waiting_jobs_are_not_demand_until_queued() {
        let mut state = DemandState::new(index());
        state.apply(&ev(1, JobStatus::Waiting, &["linux"]), 0);
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")).demand(), 0);
        state.apply(&ev(1, JobStatus::Queued, &["linux"]), 0);
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")).demand(), 1);
    }

    #[test]
    fn jobs_seen_before_their_runner_exists_count_once_it_does() {
        let mut state = DemandState::new(RunnerIndex::default());
        state.apply(&ev(1, JobStatus::Queued, &["gpu"]), 0);
        let touched = state.set_runners(index());
        assert_eq!(touched, vec![RunnerKey::new("ci", "gpu")]);
        assert_eq!(state.counts(&RunnerKey::new("ci", "gpu")).demand(), 1);
        let touched = state.set_runners(RunnerIndex::default());
        assert_eq!(touched, vec![RunnerKey::new("ci", "gpu")]);
        assert_eq!(state.counts(&RunnerKey::new("ci", "gpu")).demand(), 0);
    }

    #[test]
    fn jobs_past_githubs_own_limits_expire() {
        let mut state = DemandState::new(index());
        state.apply(&ev(1, JobStatus::Queued, &["linux"]).since(Some(0)), 0);
        state.apply(&ev(2, JobStatus::InProgress, &["linux"]).since(Some(0)), 0);
        assert!(state.expired(QUEUED_LIFETIME_SECS).is_empty());
        let expired = state.expired(QUEUED_LIFETIME_SECS + 1);
        assert_eq!(expired.iter().map(|e| e.job_id).collect::<Vec<_>>(), vec![1]);
        for event in expired {
            state.apply(&event, QUEUED_LIFETIME_SECS + 1);
        }
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")), Counts { queued: 0, in_progress: 1 });
    }

    #[test]
    fn old_completed_jobs_are_forgotten_and_open_ones_kept() {
        let mut state = DemandState::new(index());
        state.apply(&ev(1, JobStatus::Completed, &["linux"]), 10);
        state.apply(&ev(2, JobStatus::Queued, &["linux"]), 10);
        state.apply(&ev(3, JobStatus::Completed, &["linux"]), 30);
        assert_eq!(state.forget_completed_before(20), vec![JobKey::new("acme/api", 1)]);
        assert!(state.job("acme/api", 2).is_some() && state.job("acme/api", 3).is_some());
        assert_eq!(state.job_count(), 2);
    }

    #[test]
    fn a_replay_of_a_forgotten_job_is_past_retention_and_a_known_or_recent_job_is_not() {
        let mut state = DemandState::new(index());
        let (day, retention) = (86_400, 4 * 86_400);
        let started = ev(1, JobStatus::InProgress, &["linux"]).since(Some(0));
        state.apply(&started, 0);
        state.apply(&ev(1, JobStatus::Completed, &["linux"]).since(Some(0)), day);
        assert!(!state.is_past_retention(&started, 10 * day, retention), "known jobs merge as ever");
        state.forget_completed_before(day + 1);
        assert!(state.is_past_retention(&started, day + retention, retention));
        assert!(!state.is_past_retention(&started, retention - 1, retention));
        assert!(!state.is_past_retention(&ev(2, JobStatus::Queued, &["linux"]), 10 * day, retention), "no time");
    }

    fn two_repositories() -> RunnerIndex {
        RunnerIndex::new([
            Runner::new(RunnerKey::new("pay", "linux"), "acme", "payments-api", ["linux"], 0, 5, ScaleFactor::Linear),
            Runner::new(RunnerKey::new("web", "linux"), "acme", "web", ["linux"], 0, 5, ScaleFactor::Linear),
        ])
    }

    fn in_repo(repo_id: u64, repo: &str, job: u64, status: JobStatus) -> JobEvent {
        JobEvent::new(job, 1, 1, RepoRef::new(repo_id, repo), status, ["linux"])
    }

    #[test]
    fn a_delivery_for_one_repository_cannot_move_or_end_another_repositorys_job() {
        let mut state = DemandState::new(two_repositories());
        let (payments, web) = (RunnerKey::new("pay", "linux"), RunnerKey::new("web", "linux"));
        state.apply(&in_repo(1, "acme/payments-api", 77, JobStatus::Queued), 0);
        // The same job id, named by a delivery signed for acme/web, with a larger repository id.
        state.apply(&in_repo(u64::MAX, "acme/web", 77, JobStatus::Queued), 0);
        state.apply(&in_repo(u64::MAX, "acme/web", 77, JobStatus::Completed), 0);
        assert_eq!(state.counts(&payments), Counts { queued: 1, in_progress: 0 });
        assert_eq!(state.counts(&web).demand(), 0);
        // The victim's own later deliveries still move its job.
        state.apply(&in_repo(1, "acme/payments-api", 77, JobStatus::InProgress), 0);
        assert_eq!(state.counts(&payments), Counts { queued: 0, in_progress: 1 });
        assert_eq!(state.open_jobs("acme/payments-api").len(), 1);
        assert!(state.open_jobs("acme/web").is_empty());
    }

    #[test]
    fn ids_completed_in_advance_by_another_repository_do_not_hide_later_jobs() {
        let mut state = DemandState::new(two_repositories());
        for id in 100..105 {
            state.apply(&in_repo(2, "acme/web", id, JobStatus::Completed), 0);
        }
        for id in 100..105 {
            assert!(state.apply(&in_repo(1, "acme/payments-api", id, JobStatus::Queued), 0).changed);
        }
        assert_eq!(state.counts(&RunnerKey::new("pay", "linux")).queued, 5);
        assert_eq!(state.job_count(), 10);
    }

    #[test]
    fn a_redelivery_id_replayed_under_another_repository_is_that_repositorys_own() {
        let mut state = DemandState::new(two_repositories());
        assert!(!state.record(5, &in_repo(1, "acme/payments-api", 9, JobStatus::Queued), 0).duplicate);
        assert!(!state.record(5, &in_repo(2, "acme/web", 9, JobStatus::Queued), 0).duplicate);
        assert!(state.record(5, &in_repo(1, "acme/payments-api", 9, JobStatus::Queued), 0).duplicate);
    }

    #[test]
    fn a_delivery_replayed_after_a_restart_is_still_refused() {
        let mut live = DemandState::new(index());
        live.record(41, &ev(1, JobStatus::Queued, &["linux"]), 0);
        live.record(42, &ev(1, JobStatus::InProgress, &["linux"]), 5);
        let mut restarted = DemandState::new(index());
        restarted.restore(live.job("acme/api", 1).unwrap().to_job());
        for delivery in [41, 42] {
            let again = restarted.record(delivery, &ev(1, JobStatus::Queued, &["linux"]), 9);
            assert!(again.duplicate && !again.changed, "delivery {delivery}");
        }
        assert_eq!(restarted.job("acme/api", 1), live.job("acme/api", 1));
        assert_eq!(restarted.counts(&RunnerKey::new("ci", "linux")), Counts { queued: 0, in_progress: 1 });
    }

    #[test]
    fn a_job_remembers_its_newest_deliveries_and_a_forgotten_one_applies_again_harmlessly() {
        let mut state = DemandState::new(index());
        let queued = ev(1, JobStatus::Queued, &["linux"]);
        for delivery in 0..=DELIVERIES_PER_JOB as u64 {
            assert!(!state.record(delivery, &queued, 0).duplicate);
        }
        let job = state.job("acme/api", 1).unwrap();
        assert_eq!(job.deliveries.len(), DELIVERIES_PER_JOB);
        assert_eq!(job.deliveries.first(), Some(&1), "the oldest key went");
        assert!(state.record(DELIVERIES_PER_JOB as u64, &queued, 0).duplicate);
        let forgotten = state.record(0, &queued, 0);
        assert!(!forgotten.duplicate && !forgotten.changed, "a join: the old observation changes nothing");
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")).queued, 1);
    }

    #[test]
    fn jobs_with_the_same_labels_share_one_set_until_none_holds_it() {
        let mut state = DemandState::new(two_repositories());
        for id in 1..=50 {
            state.apply(&in_repo(1, "acme/payments-api", id, JobStatus::Queued), 0);
            state.apply(&in_repo(2, "acme/web", id, JobStatus::Queued), 0);
        }
        let gpu = JobEvent::new(99, 1, 1, RepoRef::new(2, "acme/web"), JobStatus::Queued, ["gpu"]);
        state.apply(&gpu, 0);
        assert_eq!(state.label_sets(), 2, "100 jobs labelled linux share one set");
        let (a, b) = (state.job("acme/web", 1).unwrap(), state.job("acme/payments-api", 2).unwrap());
        assert!(std::ptr::eq(a.labels, b.labels));

        state.apply(&JobEvent { status: JobStatus::Completed, ..gpu }, 10);
        state.forget_completed_before(20);
        assert_eq!(state.label_sets(), 1, "no job holds the gpu set any more");
        assert_eq!(state.job_count(), 100);
    }

    #[test]
    fn a_job_whose_labels_change_takes_the_new_set() {
        let mut state = DemandState::new(index());
        state.apply(&ev(1, JobStatus::Queued, &["linux"]), 0);
        assert!(state.apply(&ev(1, JobStatus::InProgress, &["linux", "gpu"]), 0).changed);
        assert_eq!(state.job("acme/api", 1).unwrap().labels, ["gpu", "linux"]);
        assert_eq!(state.counts(&RunnerKey::new("ci", "gpu")), Counts { queued: 0, in_progress: 1 });
        assert_eq!(state.counts(&RunnerKey::new("ci", "linux")).demand(), 0);
    }

    #[test]
    fn keys_handed_out_share_the_repositorys_one_name() {
        let mut state = DemandState::new(index());
        state.apply(&ev(1, JobStatus::Queued, &["linux"]), 0);
        let (a, b) = (state.key("acme/api", 1), state.key("acme/api", 2));
        assert!(Arc::ptr_eq(&a.repo, &b.repo));
        assert_eq!(state.key("acme/other", 3), JobKey::new("acme/other", 3), "an unknown repository's own name");
    }

    /// 100,000 open jobs are held in memory: the per-job part must not creep up unnoticed (a
    /// `Job` is 128 bytes, beside copies of its repository's name and of its labels).
    #[test]
    fn a_job_slot_stays_within_80_bytes() {
        assert!(std::mem::size_of::<Slot>() <= 80, "{} bytes", std::mem::size_of::<Slot>());
    }
}
