//! Pure parts of the resync: when each repository is due, and what GitHub's view changes in ours.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::demand::{Counts, JobEvent, JobStatus, RepoRef, RunnerIndex, RunnerKey};

/// How stale a repository may get: `busy` while it has demand, `idle` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub busy: Duration,
    pub idle: Duration,
}

impl Default for Windows {
    /// With webhooks in front, the resync only repairs what they missed: a busy repository is
    /// checked every 5 minutes, an idle one every 30 (10,000 idle repositories then cost about
    /// 670 conditional requests a minute, under GitHub's 900-point secondary limit, and no
    /// primary credits while nothing changes).
    fn default() -> Self {
        Self { busy: Duration::from_secs(300), idle: Duration::from_secs(1800) }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A stable fraction in [0, 1) per repository, so repositories spread over the window and do not
/// all fall due together (and keep their slot across restarts).
fn spread(repo: &str) -> f64 {
    let digest = Sha256::digest(repo.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// When each repository is next due.
#[derive(Debug, Default)]
pub struct Schedule {
    due: BTreeSet<(i64, String)>,
    next: HashMap<String, i64>,
}

impl Schedule {
    /// Tracks exactly `repos`: new ones are first due at their spread point within the idle
    /// window from `now`; gone ones are dropped.
    pub fn set_repos(&mut self, repos: impl IntoIterator<Item = String>, now: i64, windows: Windows) {
        let wanted: HashSet<String> = repos.into_iter().collect();
        let gone: Vec<String> = self.next.keys().filter(|r| !wanted.contains(*r)).cloned().collect();
        for repo in gone {
            if let Some(at) = self.next.remove(&repo) {
                self.due.remove(&(at, repo));
            }
        }
        for repo in wanted {
            if !self.next.contains_key(&repo) {
                let at = now + (spread(&repo) * secs(windows.idle) as f64) as i64;
                self.put(repo, at);
            }
        }
    }

    fn put(&mut self, repo: String, at: i64) {
        if let Some(old) = self.next.insert(repo.clone(), at) {
            self.due.remove(&(old, repo.clone()));
        }
        self.due.insert((at, repo));
    }

    /// Repositories due at `now`, most overdue first, at most `limit`.
    pub fn due(&self, now: i64, limit: usize) -> Vec<String> {
        self.due.iter().take_while(|(at, _)| *at <= now).take(limit).map(|(_, r)| r.clone()).collect()
    }

    /// How far ahead the last repository is due (0 when none is ahead): while pacing defers
    /// repositories, beyond the idle window.
    pub fn reach(&self, now: i64) -> i64 {
        self.due.last().map_or(0, |(at, _)| (at - now).max(0))
    }

    /// How late the most overdue repository is.
    pub fn lag(&self, now: i64) -> i64 {
        self.due.first().map_or(0, |(at, _)| (now - at).max(0))
    }

    /// The next time anything falls due.
    pub fn next_due(&self) -> Option<i64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// A resync finished: next due after the busy or idle window.
    pub fn done(&mut self, repo: &str, now: i64, busy: bool, windows: Windows) {
        let window = if busy { windows.busy } else { windows.idle };
        self.put(repo.to_string(), now + secs(window).max(1));
    }

    /// Not resynced (rate-limited, no token answer): try again at `at`.
    pub fn defer(&mut self, repo: &str, at: i64) {
        self.put(repo.to_string(), at);
    }

    pub fn len(&self) -> usize {
        self.next.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }
}

/// A job as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubJob {
    pub id: u64,
    pub run_id: u64,
    pub run_attempt: u32,
    /// `None` for statuses we do not track (`requested`, `pending` map to waiting).
    pub status: Option<JobStatus>,
    pub labels: Vec<String>,
    pub since: Option<i64>,
}

/// What we believe about one open job of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownJob {
    pub id: u64,
    /// The run it belongs to; 0 when we do not know (a delivery without `run_id`, or a job only
    /// another replica journaled).
    pub run_id: u64,
    pub run_attempt: u32,
    pub status: JobStatus,
    pub labels: Vec<String>,
    /// Our clock, unix seconds, when we last learned something about it.
    pub changed_at: i64,
}

/// The result of comparing GitHub's view of a repository with ours.
#[derive(Debug, Default, PartialEq)]
pub struct Comparison {
    /// Observations to journal: jobs GitHub shows further along than we do.
    pub corrections: Vec<JobEvent>,
    /// Jobs open on our side that GitHub's open lists do not show: ask GitHub about each.
    pub unseen: Vec<u64>,
    /// Per runner, GitHub's demand minus ours (only runners where they differ).
    pub drift: HashMap<RunnerKey, i64>,
}

/// Queued and in-progress jobs per runner, assigned as everywhere else.
fn count_by_runner<'a>(
    repo: &RepoRef,
    index: &RunnerIndex,
    jobs: impl Iterator<Item = (JobStatus, &'a [String])>,
) -> HashMap<RunnerKey, Counts> {
    let mut counts: HashMap<RunnerKey, Counts> = HashMap::new();
    for (status, labels) in jobs.filter(|(status, _)| status.is_demand()) {
        if let Some(key) = index.assign(&repo.full_name, labels) {
            counts.entry(key.clone()).or_default().add(status);
        }
    }
    counts
}

/// Compares GitHub's jobs of the repository's queued and in-progress runs with what we know.
///
/// `listed_since`: when the listing began (our clock). Jobs we learned about after that, or
/// within `settle` before it, are not called unseen: GitHub's lists lag its webhooks a little.
pub fn compare(
    repo: &RepoRef,
    index: &RunnerIndex,
    github: &[GitHubJob],
    ours: &[KnownJob],
    listed_since: i64,
    settle: Duration,
) -> Comparison {
    let ours_by_id: HashMap<u64, &KnownJob> = ours.iter().map(|j| (j.id, j)).collect();
    let listed: HashSet<u64> = github.iter().map(|j| j.id).collect();
    let mut corrections = Vec::new();
    let theirs_counts =
        count_by_runner(repo, index, github.iter().filter_map(|j| j.status.map(|s| (s, j.labels.as_slice()))));
    for job in github {
        let Some(status) = job.status else { continue };
        let behind = ours_by_id.get(&job.id).is_none_or(|known| known.status < status);
        if behind {
            corrections.push(
                JobEvent::new(job.id, job.run_id, job.run_attempt, repo.clone(), status, job.labels.iter())
                    .since(job.since),
            );
        }
    }
    let cutoff = listed_since - secs(settle);
    let unseen = ours
        .iter()
        .filter(|j| j.status.is_demand() && !listed.contains(&j.id) && j.changed_at < cutoff)
        .map(|j| j.id)
        .collect();
    let ours_counts = count_by_runner(repo, index, ours.iter().map(|j| (j.status, j.labels.as_slice())));
    let mut drift = HashMap::new();
    for runner in index.candidates(&repo.full_name) {
        let theirs = theirs_counts.get(&runner.key).map_or(0, Counts::demand) as i64;
        let mine = ours_counts.get(&runner.key).map_or(0, Counts::demand) as i64;
        if theirs != mine {
            drift.insert(runner.key.clone(), theirs - mine);
        }
    }
    Comparison { corrections, unseen, drift }
}

/// The unseen jobs to ask GitHub about: by run (one question per run, however many of its jobs
/// were lost), and on their own those whose run we do not know.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    pub runs: BTreeMap<u64, Vec<u64>>,
    pub lone: Vec<u64>,
}

impl Lookups {
    pub fn new(unseen: &[u64], ours: &[KnownJob]) -> Self {
        let run_of: HashMap<u64, u64> = ours.iter().map(|j| (j.id, j.run_id)).collect();
        let mut lookups = Self::default();
        for &id in unseen {
            match run_of.get(&id).copied().unwrap_or(0) {
                0 => lookups.lone.push(id),
                run => lookups.runs.entry(run).or_default().push(id),
            }
        }
        lookups
    }
}

/// What GitHub says about a run some of our open jobs belong to.
#[derive(Debug, Clone, Copy)]
pub enum RunAnswer<'a> {
    /// The run no longer exists: nothing will run its jobs.
    Gone,
    /// The run is over, and with it every job of every attempt.
    Completed,
    /// The jobs of every attempt of the run, every page.
    Jobs(&'a [GitHubJob]),
}

/// The corrections GitHub's `answer` about a run makes to our open jobs of it (`ours`).
pub fn repair_run(repo: &RepoRef, answer: RunAnswer<'_>, ours: &[&KnownJob]) -> Vec<JobEvent> {
    let finished = |known: &KnownJob| {
        JobEvent::new(known.id, known.run_id, known.run_attempt, repo.clone(), JobStatus::Completed, &known.labels)
    };
    match answer {
        RunAnswer::Gone | RunAnswer::Completed => ours.iter().map(|known| finished(known)).collect(),
        RunAnswer::Jobs(listed) => {
            let by_id: HashMap<u64, &GitHubJob> = listed.iter().map(|j| (j.id, j)).collect();
            ours.iter()
                .filter_map(|known| match by_id.get(&known.id) {
                    // Listed under none of the run's attempts: gone with them.
                    None => Some(finished(known)),
                    Some(job) => job.status.filter(|status| *status > known.status).map(|status| {
                        JobEvent::new(job.id, job.run_id, job.run_attempt, repo.clone(), status, &job.labels)
                            .since(job.since)
                    }),
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::{Runner, ScaleFactor};

    fn index() -> RunnerIndex {
        RunnerIndex::new([Runner::new(
            RunnerKey::new("ci", "linux"),
            "acme",
            "api",
            ["linux"],
            0,
            9,
            ScaleFactor::Linear,
        )])
    }

    fn gh(id: u64, status: JobStatus) -> GitHubJob {
        GitHubJob { id, run_id: 1, run_attempt: 1, status: Some(status), labels: vec!["linux".into()], since: None }
    }

    fn ours(id: u64, status: JobStatus, changed_at: i64) -> KnownJob {
        KnownJob { id, run_id: 1, run_attempt: 1, status, labels: vec!["linux".into()], changed_at }
    }

    #[test]
    fn unseen_jobs_are_asked_about_by_run_and_alone_without_one() {
        let mut known =
            vec![ours(1, JobStatus::Queued, 0), ours(2, JobStatus::Queued, 0), ours(3, JobStatus::Queued, 0)];
        known[2].run_id = 0;
        known.push(KnownJob { run_id: 4, ..ours(4, JobStatus::InProgress, 0) });
        let lookups = Lookups::new(&[1, 2, 3, 4], &known);
        assert_eq!(lookups.runs, BTreeMap::from([(1, vec![1, 2]), (4, vec![4])]));
        assert_eq!(lookups.lone, vec![3]);
    }

    #[test]
    fn a_finished_or_deleted_run_completes_every_job_of_ours_in_it() {
        let repo = RepoRef::new(1, "acme/api");
        let known = [ours(1, JobStatus::Queued, 0), ours(2, JobStatus::InProgress, 0)];
        let refs: Vec<&KnownJob> = known.iter().collect();
        for answer in [RunAnswer::Completed, RunAnswer::Gone] {
            let fixed = repair_run(&repo, answer, &refs);
            assert_eq!(
                fixed.iter().map(|e| (e.job_id, e.status)).collect::<Vec<_>>(),
                [(1, JobStatus::Completed), (2, JobStatus::Completed)]
            );
            assert_eq!(fixed[0].labels, ["linux"]);
        }
    }

    #[test]
    fn an_open_runs_jobs_correct_ours_and_a_job_in_no_attempt_is_over() {
        let repo = RepoRef::new(1, "acme/api");
        let known = [ours(1, JobStatus::Queued, 0), ours(2, JobStatus::InProgress, 0), ours(3, JobStatus::Queued, 0)];
        let refs: Vec<&KnownJob> = known.iter().collect();
        let listed = [gh(1, JobStatus::InProgress), gh(2, JobStatus::InProgress)];
        let fixed = repair_run(&repo, RunAnswer::Jobs(&listed), &refs);
        assert_eq!(
            fixed.iter().map(|e| (e.job_id, e.status)).collect::<Vec<_>>(),
            [(1, JobStatus::InProgress), (3, JobStatus::Completed)]
        );
    }

    #[test]
    fn a_job_only_github_knows_is_corrected_and_counted_as_drift() {
        let repo = RepoRef::new(1, "acme/api");
        let c = compare(&repo, &index(), &[gh(5, JobStatus::Queued)], &[], 100, Duration::from_secs(30));
        assert_eq!(c.corrections.len(), 1);
        assert_eq!(c.corrections[0].status, JobStatus::Queued);
        assert_eq!(c.drift[&RunnerKey::new("ci", "linux")], 1);
    }

    #[test]
    fn our_open_job_github_no_longer_lists_is_asked_about_once_settled() {
        let repo = RepoRef::new(1, "acme/api");
        let known = [ours(7, JobStatus::InProgress, 10), ours(8, JobStatus::Queued, 95)];
        let c = compare(&repo, &index(), &[], &known, 100, Duration::from_secs(30));
        assert_eq!(c.unseen, vec![7], "job 8 changed too recently to judge");
        assert_eq!(c.drift[&RunnerKey::new("ci", "linux")], -2);
    }

    #[test]
    fn agreement_means_no_corrections_and_no_drift() {
        let repo = RepoRef::new(1, "acme/api");
        let c = compare(
            &repo,
            &index(),
            &[gh(5, JobStatus::Queued)],
            &[ours(5, JobStatus::Queued, 0)],
            100,
            Duration::ZERO,
        );
        assert_eq!(c, Comparison::default());
    }

    #[test]
    fn github_behind_us_is_not_a_correction() {
        let repo = RepoRef::new(1, "acme/api");
        let c = compare(
            &repo,
            &index(),
            &[gh(5, JobStatus::Queued)],
            &[ours(5, JobStatus::InProgress, 0)],
            100,
            Duration::ZERO,
        );
        assert!(c.corrections.is_empty());
    }

    #[test]
    fn repositories_spread_over_the_idle_window_and_follow_their_windows() {
        let windows = Windows { busy: Duration::from_secs(60), idle: Duration::from_secs(600) };
        let mut schedule = Schedule::default();
        schedule.set_repos((0..1000).map(|i| format!("acme/repo-{i}")), 0, windows);
        assert_eq!(schedule.len(), 1000);
        let first_minute = schedule.due(60, usize::MAX).len();
        assert!((60..=140).contains(&first_minute), "about a tenth due per tenth of the window: {first_minute}");
        assert_eq!(schedule.due(600, usize::MAX).len(), 1000);
        schedule.done("acme/repo-1", 600, true, windows);
        schedule.done("acme/repo-2", 600, false, windows);
        assert!(!schedule.due(659, usize::MAX).contains(&"acme/repo-1".to_string()));
        assert!(schedule.due(660, usize::MAX).contains(&"acme/repo-1".to_string()));
        assert!(!schedule.due(1199, usize::MAX).contains(&"acme/repo-2".to_string()));
        schedule.set_repos(["acme/repo-1".to_string()], 600, windows);
        assert_eq!(schedule.len(), 1);
    }

    #[test]
    fn the_reach_is_how_far_ahead_the_last_repository_is_due() {
        let windows = Windows { busy: Duration::from_secs(60), idle: Duration::from_secs(600) };
        let mut schedule = Schedule::default();
        assert_eq!(schedule.reach(0), 0);
        schedule.set_repos(["acme/api".to_string(), "acme/web".to_string()], 0, windows);
        schedule.done("acme/api", 100, false, windows);
        assert_eq!(schedule.reach(100), 600, "an idle window ahead");
        // Pacing defers a repository hours: its pages must outlive that.
        schedule.defer("acme/web", 100 + 4 * 3600);
        assert_eq!(schedule.reach(100), 4 * 3600);
        assert_eq!(schedule.reach(100 + 5 * 3600), 0, "nothing ahead");
    }
}
