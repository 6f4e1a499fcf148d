//! Per-runner demand derived from job states and the runner index.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::job::{Job, JobEvent, JobKey, JobStatus};
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

/// The jobs of one repository, and which of them are not completed (what a resync compares
/// with GitHub).
#[derive(Debug, Default)]
struct RepoState {
    /// Boxed: growing the map then moves 16-byte entries, not whole jobs. At 100,000 jobs an
    /// unboxed resize held the writer (and every delivery waiting on it) for 20 ms.
    jobs: HashMap<u64, Box<Job>>,
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
    repos: HashMap<String, RepoState>,
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
    pub fn job(&self, repo: &str, id: u64) -> Option<&Job> {
        self.repos.get(repo)?.jobs.get(&id).map(|job| &**job)
    }

    pub fn job_by_key(&self, key: &JobKey) -> Option<&Job> {
        self.job(&key.repo, key.id)
    }

    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.repos.values().flat_map(|repo| repo.jobs.values()).map(|job| &**job)
    }

    pub fn job_count(&self) -> usize {
        self.job_count
    }

    /// Counts of one runner (zero for runners with no demand or unknown runners).
    pub fn counts(&self, runner: &RunnerKey) -> Counts {
        self.counts.get(runner).copied().unwrap_or_default()
    }

    /// The runner a job in `job`'s state counts toward, if it is demand at all.
    fn contribution(index: &RunnerIndex, job: &Job) -> Option<(RunnerKey, JobStatus)> {
        if !job.status.is_demand() {
            return None;
        }
        index.assign(&job.repo.full_name, &job.labels).map(|key| (key.clone(), job.status))
    }

    /// The repository's jobs, created on first use; the name is cloned only then.
    fn repo_mut<'a>(repos: &'a mut HashMap<String, RepoState>, repo: &str) -> &'a mut RepoState {
        if !repos.contains_key(repo) {
            repos.insert(repo.to_owned(), RepoState::default());
        }
        repos.get_mut(repo).expect("inserted above")
    }

    /// Merges an observation; `now` is our clock in unix seconds.
    pub fn apply(&mut self, event: &JobEvent, now: i64) -> Applied {
        let index = &self.index;
        let repo = Self::repo_mut(&mut self.repos, &event.repo.full_name);
        let (before, after) = match repo.jobs.get_mut(&event.job_id) {
            Some(job) => {
                let before = Self::contribution(index, job);
                if !job.merge(event, now) {
                    return Applied::default();
                }
                (before, Self::contribution(index, job))
            }
            None => {
                let job = Box::new(Job::from_event(event, now));
                let after = Self::contribution(index, &job);
                repo.jobs.insert(event.job_id, job);
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
        if let Some(job) = self.repos.get_mut(&event.repo.full_name).and_then(|repo| repo.jobs.get_mut(&event.job_id)) {
            job.remember_delivery(delivery);
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

    /// Jobs of `repo` (lower-cased `owner/name`) that are not completed.
    pub fn open_jobs(&self, repo: &str) -> Vec<&Job> {
        let Some(repo) = self.repos.get(repo) else { return Vec::new() };
        repo.open
            .iter()
            .filter_map(|id| repo.jobs.get(id))
            .map(|job| &**job)
            .filter(|job| job.status != JobStatus::Completed)
            .collect()
    }

    /// Restores a job from a snapshot (start-up); later events still merge into it.
    pub fn restore(&mut self, job: Job) {
        let after = Self::contribution(&self.index, &job);
        let (id, open) = (job.id, job.status != JobStatus::Completed);
        let repo = Self::repo_mut(&mut self.repos, &job.repo.full_name);
        let old = repo.jobs.insert(id, Box::new(job));
        if open {
            repo.open.insert(id);
        } else {
            repo.open.remove(&id);
        }
        if old.is_none() {
            self.job_count += 1;
        }
        let before = old.and_then(|old| Self::contribution(&self.index, &old));
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
            if let Some((key, status)) = Self::contribution(&self.index, job) {
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
                repo: job.repo.clone(),
                status: JobStatus::Completed,
                labels: job.labels.clone(),
                since: job.since,
            })
            .collect()
    }

    /// Forgets completed jobs that finished before `cutoff` (our clock). Their keys are returned
    /// so the snapshot can drop them too.
    pub fn forget_completed_before(&mut self, cutoff: i64) -> Vec<JobKey> {
        let mut gone = Vec::new();
        self.repos.retain(|name, repo| {
            repo.jobs.retain(|id, job| {
                let forget = job.status == JobStatus::Completed && job.changed_at < cutoff;
                if forget {
                    gone.push(JobKey { id: *id, repo: name.clone() });
                }
                !forget
            });
            !repo.jobs.is_empty()
        });
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
}
