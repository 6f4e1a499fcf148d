//! A `workflow_job` as a forward-only state machine.
//!
//! A job's state is the join (maximum) of every observation made of it, so the end state does not
//! depend on the order in which deliveries arrive or how often each arrives.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Delivery ids remembered per job; a job sees about four deliveries, re-runs a few more.
pub const DELIVERIES_PER_JOB: usize = 32;

/// A stable 64-bit key for an `X-GitHub-Delivery` id. Only compared among one job's deliveries,
/// so 64 bits leave no practical room for a collision; stable across builds because it is stored.
pub fn delivery_key(delivery: &str) -> u64 {
    let digest = Sha256::digest(delivery.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Where a job is in its life. The order of the variants is the order of progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Held by a deployment protection rule; no runner can take it yet, so it is not demand.
    /// Ranked below `Queued`: GitHub may send `queued, waiting, queued`, and a job that ends up
    /// queued must never be hidden behind a late `waiting`.
    Waiting,
    Queued,
    InProgress,
    /// Final: nothing moves a job out of it.
    Completed,
}

impl JobStatus {
    /// The status a `workflow_job` action or `status` field names, if it is one we track.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "waiting" | "pending" | "requested" => Some(Self::Waiting),
            "queued" => Some(Self::Queued),
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }

    /// Whether a job in this status needs a runner now.
    pub fn is_demand(self) -> bool {
        matches!(self, Self::Queued | Self::InProgress)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// The repository a job belongs to: GitHub's numeric id and the lower-cased `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    pub id: u64,
    pub full_name: String,
}

impl RepoRef {
    pub fn new(id: u64, full_name: &str) -> Self {
        Self { id, full_name: full_name.to_ascii_lowercase() }
    }
}

/// Who a job is: GitHub's job id within the repository (lower-cased `owner/name`) whose webhook
/// secret signed for it. Ids are global at GitHub, but a delivery can only be trusted for the
/// repository it was signed for, so a job is found by both: a delivery signed for one repository
/// can never reach another repository's job, however it names the id. Ordered by id first, so
/// jobs written in key order land next to each other (ids grow over time).
///
/// The name is shared: keys the state hands out point at the one copy it keeps per repository,
/// so a set of changed jobs costs no allocation per job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub id: u64,
    pub repo: Arc<str>,
}

impl JobKey {
    pub fn new(repo: &str, id: u64) -> Self {
        Self { id, repo: repo.to_ascii_lowercase().into() }
    }
}

/// One observation of a job, as a delivery (or, later, the GitHub API) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: u64,
    pub run_id: u64,
    pub run_attempt: u32,
    pub repo: RepoRef,
    pub status: JobStatus,
    /// Lower-cased, sorted and de-duplicated.
    pub labels: Vec<String>,
    /// GitHub's time (unix seconds) for this status: `started_at` once in progress, else
    /// `created_at`. Lets jobs whose final delivery never came expire as GitHub would end them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

impl JobEvent {
    pub fn new(
        job_id: u64,
        run_id: u64,
        run_attempt: u32,
        repo: RepoRef,
        status: JobStatus,
        labels: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Self { job_id, run_id, run_attempt, repo, status, labels: normalize_labels(labels), since: None }
    }

    /// Records the runner group GitHub says the job ran in (see [`mark_group`]).
    pub fn ran_in_group(mut self, group: Option<&str>) -> Self {
        mark_group(&mut self.labels, Some(self.status), group);
        self
    }

    pub fn since(mut self, unix_seconds: Option<i64>) -> Self {
        self.since = unix_seconds;
        self
    }

    pub fn key(&self) -> JobKey {
        JobKey { id: self.job_id, repo: self.repo.full_name.as_str().into() }
    }

    /// Where this observation stands in the join of its job's observations.
    pub(crate) fn rank(&self) -> Rank<'_> {
        (self.status, &self.labels, self.run_id, self.run_attempt, self.since)
    }
}

/// The order in which observations of one job are joined: status first, then labels, run,
/// attempt and GitHub's time. The greatest observation is the job's state.
pub(crate) type Rank<'a> = (JobStatus, &'a [String], u64, u32, Option<i64>);

/// Labels compare case-insensitively; keep one canonical spelling, sorted.
/// Starts the label that records the runner group a job ran in (see [`JobEvent::ran_in_group`]).
/// No `runs-on` label starts with it (a control character), and it sorts after every ASCII
/// label, so an observation that knows the group ranks above one of the same status that does
/// not.
pub const GROUP_MARK: &str = "\u{7f}group:";

/// The label recording that a job ran in runner group `group` (lower-cased).
pub fn group_label(group: &str) -> String {
    format!("{GROUP_MARK}{}", group.trim().to_ascii_lowercase())
}

/// Records in sorted `labels` the runner group GitHub says a job in `status` ran in
/// (`runner_group_name`, known once a runner took it): from then on the job counts toward a
/// runner of that group only. Any label already starting with [`GROUP_MARK`] goes first (no
/// `runs-on` label does). Nothing is recorded while queued or waiting (GitHub says nothing
/// then), nor for an empty name.
pub fn mark_group(labels: &mut Vec<String>, status: Option<JobStatus>, group: Option<&str>) {
    labels.retain(|label| !label.starts_with(GROUP_MARK));
    let group = group.map(str::trim).filter(|g| !g.is_empty());
    if let (Some(group), Some(JobStatus::InProgress | JobStatus::Completed)) = (group, status) {
        labels.push(group_label(group));
        labels.sort_unstable();
    }
}

pub fn normalize_labels(labels: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    let mut out: Vec<String> =
        labels.into_iter().map(|l| l.as_ref().trim().to_ascii_lowercase()).filter(|l| !l.is_empty()).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// What is known of a job: the greatest observation under (status, labels, run) order. The
/// repository is part of the job's identity ([`JobKey`]), never of its state: no observation
/// moves a job to another repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub run_attempt: u32,
    pub repo: RepoRef,
    pub status: JobStatus,
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Our clock (unix seconds) when the state last changed; not part of the join, only used to
    /// decide when a finished job may be forgotten.
    pub changed_at: i64,
    /// Keys of the deliveries seen for this job (newest last), so a redelivery is recognised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<u64>,
}

impl Job {
    pub fn from_event(event: &JobEvent, now: i64) -> Self {
        Self {
            id: event.job_id,
            run_id: event.run_id,
            run_attempt: event.run_attempt,
            repo: event.repo.clone(),
            status: event.status,
            labels: event.labels.clone(),
            since: event.since,
            changed_at: now,
            deliveries: Vec::new(),
        }
    }

    pub fn key(&self) -> JobKey {
        JobKey { id: self.id, repo: self.repo.full_name.as_str().into() }
    }

    /// This job, borrowed as the state hands jobs out.
    pub fn view(&self) -> JobView<'_> {
        JobView {
            id: self.id,
            run_id: self.run_id,
            run_attempt: self.run_attempt,
            repo_id: self.repo.id,
            repo: &self.repo.full_name,
            status: self.status,
            labels: &self.labels,
            since: self.since,
            changed_at: self.changed_at,
            deliveries: &self.deliveries,
        }
    }

    /// Whether the delivery with this key was already seen for this job.
    pub fn has_delivery(&self, key: u64) -> bool {
        self.deliveries.contains(&key)
    }

    /// Remembers a delivery key, forgetting the oldest beyond `DELIVERIES_PER_JOB`.
    pub fn remember_delivery(&mut self, key: u64) {
        if self.deliveries.len() >= DELIVERIES_PER_JOB {
            self.deliveries.remove(0);
        }
        self.deliveries.push(key);
    }

    fn rank(&self) -> Rank<'_> {
        (self.status, &self.labels, self.run_id, self.run_attempt, self.since)
    }

    /// Merges an observation of this job. Returns whether anything changed.
    ///
    /// Merging is a join: commutative, associative and idempotent, hence order-independent.
    /// A status never moves backwards and `completed` is final.
    pub fn merge(&mut self, event: &JobEvent, now: i64) -> bool {
        debug_assert_eq!((self.id, &self.repo.full_name), (event.job_id, &event.repo.full_name));
        if event.rank() <= self.rank() {
            return false;
        }
        self.status = event.status;
        self.labels = event.labels.clone();
        self.run_id = event.run_id;
        self.run_attempt = event.run_attempt;
        self.since = event.since;
        self.changed_at = now;
        true
    }
}

/// A job as [`DemandState`](super::DemandState) holds it, borrowed: the fields of [`Job`],
/// without copying the repository name, labels or delivery keys it shares or owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobView<'a> {
    pub id: u64,
    pub run_id: u64,
    pub run_attempt: u32,
    /// GitHub's id of the repository, as the job's first observation named it.
    pub repo_id: u64,
    /// Lower-cased `owner/name`.
    pub repo: &'a str,
    pub status: JobStatus,
    pub labels: &'a [String],
    pub since: Option<i64>,
    pub changed_at: i64,
    pub deliveries: &'a [u64],
}

impl JobView<'_> {
    pub fn to_job(&self) -> Job {
        Job {
            id: self.id,
            run_id: self.run_id,
            run_attempt: self.run_attempt,
            repo: RepoRef { id: self.repo_id, full_name: self.repo.to_string() },
            status: self.status,
            labels: self.labels.to_vec(),
            since: self.since,
            changed_at: self.changed_at,
            deliveries: self.deliveries.to_vec(),
        }
    }

    pub fn has_delivery(&self, key: u64) -> bool {
        self.deliveries.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: JobStatus) -> JobEvent {
        JobEvent::new(7, 1, 1, RepoRef::new(1, "Acme/API"), status, ["self-hosted", "Linux"])
    }

    #[test]
    fn status_moves_forward_and_never_back() {
        let mut job = Job::from_event(&event(JobStatus::Queued), 0);
        assert!(job.merge(&event(JobStatus::InProgress), 1));
        assert!(!job.merge(&event(JobStatus::Queued), 1));
        assert!(!job.merge(&event(JobStatus::Waiting), 1));
        assert_eq!(job.status, JobStatus::InProgress);
    }

    #[test]
    fn completed_is_final() {
        let mut job = Job::from_event(&event(JobStatus::Completed), 0);
        for status in [JobStatus::Waiting, JobStatus::Queued, JobStatus::InProgress] {
            assert!(!job.merge(&event(status), 1));
        }
        assert_eq!(job.status, JobStatus::Completed);
    }

    #[test]
    fn a_late_waiting_does_not_hide_a_queued_job() {
        let mut job = Job::from_event(&event(JobStatus::Queued), 0);
        job.merge(&event(JobStatus::Waiting), 1);
        assert!(job.status.is_demand());
    }

    #[test]
    fn waiting_is_not_demand() {
        assert!(!JobStatus::Waiting.is_demand());
        assert!(JobStatus::Queued.is_demand());
        assert!(JobStatus::InProgress.is_demand());
        assert!(!JobStatus::Completed.is_demand());
    }

    #[test]
    fn labels_and_repository_are_case_insensitive() {
        let e = event(JobStatus::Queued);
        assert_eq!(e.labels, vec!["linux".to_string(), "self-hosted".to_string()]);
        assert_eq!(e.repo.full_name, "acme/api");
    }

    #[test]
    fn delivery_keys_are_stable_and_distinct() {
        // The first 8 bytes of SHA-256 of the id: a changed key would make stored jobs forget
        // their deliveries.
        assert_eq!(delivery_key("72d3162e-cc78-11e3-81ab-4c9367dc0958"), 0x9514_e675_1b79_3abb);
        assert_ne!(delivery_key("a"), delivery_key("b"));
    }

    #[test]
    fn a_job_remembers_its_newest_deliveries() {
        let mut job = Job::from_event(&event(JobStatus::Queued), 0);
        for key in 0..(DELIVERIES_PER_JOB as u64 + 1) {
            job.remember_delivery(key);
        }
        assert!(!job.has_delivery(0));
        assert!(job.has_delivery(1) && job.has_delivery(DELIVERIES_PER_JOB as u64));
    }

    #[test]
    fn the_repository_id_a_delivery_claims_is_not_part_of_the_state() {
        let mut job = Job::from_event(&event(JobStatus::Queued), 0);
        let mut other_id = event(JobStatus::Queued);
        other_id.repo.id = u64::MAX;
        assert!(!job.merge(&other_id, 1), "a larger repository id must not win the join");
        assert_eq!(job.repo.id, 1);
    }

    #[test]
    fn a_duplicate_observation_changes_nothing() {
        let mut job = Job::from_event(&event(JobStatus::Queued), 0);
        assert!(!job.merge(&event(JobStatus::Queued), 1));
    }
}
