//! The jobs of one repository as every replica shares them (in memcached): a map from job id to
//! the furthest state any replica has seen. Merging is a join, so replicas that merge the same
//! delivery, or merge in any order, converge on one value, and demand computed from it is exact:
//! there are no counters to count a transition twice.
//!
//! A value carries a `generation`, chosen by whoever created it. A replica that finds a value of
//! a generation it has not contributed to (memcached restarted, or evicted and recreated the key)
//! merges everything its own journal knows about the repository into it.

use std::collections::{BTreeMap, HashMap};

use super::job::{Job, JobStatus, RepoRef};
use super::runners::{RunnerIndex, RunnerKey};
use super::state::Counts;

/// The compact format: counts and lengths in one or two bytes. Written whenever the value fits
/// it, so replicas of the previous version keep reading every value they could read before.
const MAGIC: &[u8; 4] = b"GAR1";
/// The wide format, for values that do not fit the compact one (a label over 255 bytes, a set
/// of more than 255 labels, more than 65,535 distinct sets): every count and length in 4 bytes.
const MAGIC_WIDE: &[u8; 4] = b"GAR2";

/// Field widths of one format. Nothing is ever cut to fit: a value that does not fit the
/// compact format is written in the wide one, so what is read back equals what was written
/// (a cut label would differ from every replica's own copy, and each would rewrite it).
#[derive(Clone, Copy)]
struct Format {
    magic: &'static [u8; 4],
    /// Width of the label-set count, of each set's label count, of each label's length, and of
    /// each job's set index.
    sets: usize,
    labels: usize,
    label_bytes: usize,
    set_index: usize,
}

const COMPACT: Format = Format { magic: MAGIC, sets: 2, labels: 1, label_bytes: 1, set_index: 2 };
const WIDE: Format = Format { magic: MAGIC_WIDE, sets: 4, labels: 4, label_bytes: 4, set_index: 4 };

fn max_of(width: usize) -> usize {
    if width >= 4 { u32::MAX as usize } else { (1usize << (8 * width)) - 1 }
}

impl Format {
    fn fits(self, table: &[&[String]]) -> bool {
        table.len() <= max_of(self.sets)
            && table.iter().all(|set| {
                set.len() <= max_of(self.labels) && set.iter().all(|label| label.len() <= max_of(self.label_bytes))
            })
    }

    fn job_len(self) -> usize {
        8 + 1 + self.set_index + 4
    }
}

/// Writes `n` as a little-endian integer of `width` bytes; the format was chosen so it fits.
fn put(out: &mut Vec<u8>, n: usize, width: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes()[..width]);
}

/// One job as shared: its furthest status, its labels, and when it got there (unix minutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedJob {
    pub status: JobStatus,
    pub labels: Vec<String>,
    pub stamp_minutes: u32,
}

impl SharedJob {
    pub fn from_job(job: &Job) -> Self {
        Self {
            status: job.status,
            labels: job.labels.clone(),
            stamp_minutes: u32::try_from(job.changed_at.max(0) / 60).unwrap_or(u32::MAX),
        }
    }

    /// The join of two observations: further status wins; ties take the greater labels, so the
    /// result does not depend on which side is which.
    fn join(&mut self, other: &SharedJob) -> bool {
        if (other.status, &other.labels) > (self.status, &self.labels) {
            self.status = other.status;
            self.labels = other.labels.clone();
            self.stamp_minutes = other.stamp_minutes;
            true
        } else if (other.status, &other.labels) == (self.status, &self.labels)
            && other.stamp_minutes < self.stamp_minutes
        {
            // Same state: keep the earliest time it was reached, also a join.
            self.stamp_minutes = other.stamp_minutes;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared repository value is unreadable: {0}")]
pub struct DecodeError(&'static str);

/// The shared jobs of one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoJobs {
    pub generation: u64,
    pub jobs: BTreeMap<u64, SharedJob>,
}

impl RepoJobs {
    pub fn new(generation: u64) -> Self {
        Self { generation, jobs: BTreeMap::new() }
    }

    /// Merges jobs into the map; returns whether anything changed.
    pub fn merge<'a>(&mut self, jobs: impl IntoIterator<Item = (u64, &'a SharedJob)>) -> bool {
        let mut changed = false;
        for (id, job) in jobs {
            match self.jobs.get_mut(&id) {
                Some(existing) => changed |= existing.join(job),
                None => {
                    self.jobs.insert(id, job.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Moves each open job of `jobs` that this value shows further along up to this value's
    /// state; returns the ids of those that moved.
    pub fn advance(&self, jobs: &mut HashMap<u64, SharedJob>) -> Vec<u64> {
        let mut moved = Vec::new();
        for (id, job) in jobs.iter_mut().filter(|(_, job)| job.status != JobStatus::Completed) {
            if let Some(shared) = self.jobs.get(id)
                && shared.status > job.status
            {
                job.join(shared);
                moved.push(*id);
            }
        }
        moved
    }

    /// Drops finished jobs stamped before `cutoff_minutes`; returns how many.
    pub fn forget_completed_before(&mut self, cutoff_minutes: u32) -> usize {
        let before = self.jobs.len();
        self.jobs.retain(|_, job| job.status != JobStatus::Completed || job.stamp_minutes >= cutoff_minutes);
        before - self.jobs.len()
    }

    /// Keeps the encoded value under `max_bytes` by dropping the oldest finished jobs; open jobs
    /// are never dropped. Returns how many were dropped.
    pub fn shrink_to(&mut self, max_bytes: usize) -> usize {
        let mut dropped = 0;
        while self.encoded_len() > max_bytes {
            let oldest = self
                .jobs
                .iter()
                .filter(|(_, job)| job.status == JobStatus::Completed)
                .min_by_key(|(id, job)| (job.stamp_minutes, **id))
                .map(|(id, _)| *id);
            let Some(id) = oldest else { break };
            self.jobs.remove(&id);
            dropped += 1;
        }
        dropped
    }

    /// Queued and in-progress jobs per runner of `repo`, assigned as everywhere else.
    pub fn counts(&self, repo: &str, index: &RunnerIndex) -> HashMap<RunnerKey, Counts> {
        let mut counts: HashMap<RunnerKey, Counts> = HashMap::new();
        for runner in index.candidates(repo) {
            counts.insert(runner.key.clone(), Counts::default());
        }
        for job in self.jobs.values().filter(|job| job.status.is_demand()) {
            if let Some(key) = index.assign(repo, &job.labels) {
                counts.entry(key.clone()).or_default().add(job.status);
            }
        }
        counts
    }

    fn label_table(&self) -> Vec<&[String]> {
        let mut table: Vec<&[String]> = self.jobs.values().map(|j| j.labels.as_slice()).collect();
        table.sort_unstable();
        table.dedup();
        table
    }

    /// The format this value is written in: the compact one when it fits.
    fn format(table: &[&[String]]) -> Format {
        if COMPACT.fits(table) { COMPACT } else { WIDE }
    }

    fn encoded_len(&self) -> usize {
        let table = self.label_table();
        let format = Self::format(&table);
        let labels: usize = table
            .iter()
            .map(|set| format.labels + set.iter().map(|l| format.label_bytes + l.len()).sum::<usize>())
            .sum();
        format.magic.len() + 8 + format.sets + labels + 4 + self.jobs.len() * format.job_len()
    }

    /// Compact binary: 15 bytes a job plus each distinct label set once (17 bytes a job in the
    /// wide format).
    pub fn encode(&self) -> Vec<u8> {
        let table = self.label_table();
        let format = Self::format(&table);
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(format.magic);
        out.extend_from_slice(&self.generation.to_le_bytes());
        put(&mut out, table.len(), format.sets);
        for set in &table {
            put(&mut out, set.len(), format.labels);
            for label in set.iter() {
                put(&mut out, label.len(), format.label_bytes);
                out.extend_from_slice(label.as_bytes());
            }
        }
        out.extend_from_slice(&u32::try_from(self.jobs.len()).unwrap_or(u32::MAX).to_le_bytes());
        for (id, job) in self.jobs.iter().take(max_of(4)) {
            let set = table.binary_search(&job.labels.as_slice()).unwrap_or(0);
            out.extend_from_slice(&id.to_le_bytes());
            out.push(job.status as u8);
            put(&mut out, set, format.set_index);
            out.extend_from_slice(&job.stamp_minutes.to_le_bytes());
        }
        out
    }

    /// Reads either format.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let format = match r.take(4)? {
            magic if magic == MAGIC => COMPACT,
            magic if magic == MAGIC_WIDE => WIDE,
            _ => return Err(DecodeError("unknown format")),
        };
        let generation = u64::from_le_bytes(r.array()?);
        let sets = r.uint(format.sets)?;
        // Counts come from outside: never reserve more than the bytes left could hold.
        let mut table = Vec::with_capacity(sets.min(r.0.len()));
        for _ in 0..sets {
            let count = r.uint(format.labels)?;
            let mut set = Vec::with_capacity(count.min(r.0.len()));
            for _ in 0..count {
                let len = r.uint(format.label_bytes)?;
                let label = std::str::from_utf8(r.take(len)?).map_err(|_| DecodeError("label is not UTF-8"))?;
                set.push(label.to_string());
            }
            table.push(set);
        }
        let count = u32::from_le_bytes(r.array()?);
        let mut jobs = BTreeMap::new();
        for _ in 0..count {
            let id = u64::from_le_bytes(r.array()?);
            let status = match r.take(1)?[0] {
                0 => JobStatus::Waiting,
                1 => JobStatus::Queued,
                2 => JobStatus::InProgress,
                3 => JobStatus::Completed,
                _ => return Err(DecodeError("unknown job status")),
            };
            let set = r.uint(format.set_index)?;
            let labels = table.get(set).cloned().ok_or(DecodeError("label set out of range"))?;
            let stamp_minutes = u32::from_le_bytes(r.array()?);
            jobs.insert(id, SharedJob { status, labels, stamp_minutes });
        }
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self { generation, jobs })
    }
}

/// The open jobs of `repo` (lower-cased `owner/name`) as every replica knows them: this journal's
/// `local` open jobs joined with the `shared` value's (the furthest state wins). A job only the
/// shared value knows is made from it; completed jobs are left out.
pub fn join_open_jobs(repo: &str, mut local: Vec<Job>, shared: impl IntoIterator<Item = (u64, SharedJob)>) -> Vec<Job> {
    let known: HashMap<u64, usize> = local.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    for (id, shared) in shared {
        match known.get(&id) {
            Some(&i) if local[i].status >= shared.status => {}
            Some(&i) => local[i].status = shared.status,
            None if shared.status == JobStatus::Completed => {}
            None => local.push(Job {
                id,
                run_id: 0,
                run_attempt: 1,
                repo: RepoRef { id: 0, full_name: repo.to_string() },
                status: shared.status,
                labels: shared.labels,
                since: None,
                changed_at: i64::from(shared.stamp_minutes) * 60,
                deliveries: Vec::new(),
            }),
        }
    }
    local.retain(|j| j.status != JobStatus::Completed);
    local
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// A little-endian unsigned integer of `width` bytes (at most 4).
    fn uint(&mut self, width: usize) -> Result<usize, DecodeError> {
        let mut out = [0u8; 8];
        out[..width].copy_from_slice(self.take(width)?);
        usize::try_from(u64::from_le_bytes(out)).map_err(|_| DecodeError("count too large"))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::runners::Runner;
    use crate::demand::scaling::ScaleFactor;

    fn job(status: JobStatus, labels: &[&str], stamp: u32) -> SharedJob {
        SharedJob { status, labels: labels.iter().map(|l| l.to_string()).collect(), stamp_minutes: stamp }
    }

    #[test]
    fn encoding_round_trips() {
        let mut jobs = RepoJobs::new(42);
        jobs.merge([(1, &job(JobStatus::Queued, &["linux", "self-hosted"], 10))]);
        jobs.merge([(2, &job(JobStatus::Completed, &["gpu", "linux"], 11))]);
        jobs.merge([(3, &job(JobStatus::InProgress, &["linux", "self-hosted"], 12))]);
        let bytes = jobs.encode();
        assert_eq!(bytes.len(), jobs.encoded_len());
        assert_eq!(RepoJobs::decode(&bytes), Ok(jobs));
    }

    #[test]
    fn a_label_longer_than_255_bytes_reads_back_whole() {
        // 400 bytes of two-byte characters: byte 255 falls inside one.
        let long = "\u{fc}".repeat(200);
        let mut jobs = RepoJobs::new(7);
        jobs.merge([(1, &job(JobStatus::Queued, &["linux", &long], 10))]);
        jobs.merge([(2, &job(JobStatus::Queued, &["linux"], 10))]);
        let bytes = jobs.encode();
        assert_eq!(bytes.len(), jobs.encoded_len());
        let read = RepoJobs::decode(&bytes).unwrap();
        assert_eq!(read, jobs);
        assert!(!read.clone().merge(jobs.jobs.iter().map(|(id, j)| (*id, j))), "what was read back is what we know");
    }

    #[test]
    fn a_set_of_more_than_255_labels_reads_back_whole() {
        let labels: Vec<String> = (0..300).map(|i| format!("label-{i:03}")).collect();
        let mut jobs = RepoJobs::new(7);
        let many = SharedJob { status: JobStatus::Queued, labels, stamp_minutes: 1 };
        jobs.merge([(1, &many)]);
        assert_eq!(RepoJobs::decode(&jobs.encode()), Ok(jobs));
    }

    #[test]
    fn more_than_65535_label_sets_do_not_wrap() {
        let mut jobs = RepoJobs::new(7);
        for id in 0..70_000u64 {
            jobs.merge([(id, &job(JobStatus::Completed, &[&format!("l{id}")], 1))]);
        }
        let bytes = jobs.encode();
        assert_eq!(bytes.len(), jobs.encoded_len());
        let read = RepoJobs::decode(&bytes).unwrap();
        assert_eq!(read.jobs.len(), 70_000);
        assert_eq!(read.jobs[&69_999].labels, ["l69999"]);
        assert_eq!(read, jobs);
    }

    #[test]
    fn a_value_that_fits_is_written_in_the_format_the_previous_version_reads() {
        let mut jobs = RepoJobs::new(0x0102);
        jobs.merge([(5, &job(JobStatus::InProgress, &["linux"], 9))]);
        let previous: &[u8] = &[
            b'G', b'A', b'R', b'1', 2, 1, 0, 0, 0, 0, 0, 0, // magic, generation
            1, 0, 1, 5, b'l', b'i', b'n', b'u', b'x', // one set of one label
            1, 0, 0, 0, // one job: id, status, set, minutes
            5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 9, 0, 0, 0,
        ];
        assert_eq!(jobs.encode(), previous);
        assert_eq!(RepoJobs::decode(previous), Ok(jobs));
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(RepoJobs::decode(b"").is_err());
        assert!(RepoJobs::decode(b"GAR1\x01").is_err());
        let mut bytes = RepoJobs::new(1).encode();
        bytes.push(0);
        assert_eq!(RepoJobs::decode(&bytes), Err(DecodeError("trailing bytes")));
    }

    #[test]
    fn merging_is_a_join_whatever_the_order() {
        let a = job(JobStatus::Queued, &["linux"], 5);
        let b = job(JobStatus::Completed, &["linux"], 9);
        let mut left = RepoJobs::new(1);
        left.merge([(7, &a), (7, &b), (7, &a)]);
        let mut right = RepoJobs::new(1);
        right.merge([(7, &b), (7, &a)]);
        assert_eq!(left, right);
        assert_eq!(left.jobs[&7].status, JobStatus::Completed);
        assert!(!left.merge([(7, &a)]), "merging what is known changes nothing");
    }

    #[test]
    fn demand_is_counted_per_runner_with_the_usual_assignment() {
        let index = RunnerIndex::new([
            Runner::new(RunnerKey::new("ci", "linux"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear),
            Runner::new(RunnerKey::new("ci", "gpu"), "acme", "api", ["linux", "gpu"], 0, 5, ScaleFactor::Linear),
        ]);
        let mut jobs = RepoJobs::new(1);
        jobs.merge([
            (1, &job(JobStatus::Queued, &["linux", "self-hosted"], 0)),
            (2, &job(JobStatus::InProgress, &["gpu", "linux"], 0)),
            (3, &job(JobStatus::Completed, &["linux"], 0)),
            (4, &job(JobStatus::Waiting, &["linux"], 0)),
        ]);
        let counts = jobs.counts("acme/api", &index);
        assert_eq!(counts[&RunnerKey::new("ci", "linux")], Counts { queued: 1, in_progress: 0 });
        assert_eq!(counts[&RunnerKey::new("ci", "gpu")], Counts { queued: 0, in_progress: 1 });
    }

    #[test]
    fn old_finished_jobs_are_forgotten_and_open_ones_never() {
        let mut jobs = RepoJobs::new(1);
        jobs.merge([(1, &job(JobStatus::Completed, &["a"], 5)), (2, &job(JobStatus::Queued, &["a"], 1))]);
        assert_eq!(jobs.forget_completed_before(6), 1);
        assert!(jobs.jobs.contains_key(&2));
    }

    #[test]
    fn shrinking_drops_the_oldest_finished_jobs_first() {
        let mut jobs = RepoJobs::new(1);
        for id in 0..100 {
            jobs.merge([(id, &job(JobStatus::Completed, &["a"], id as u32))]);
        }
        jobs.merge([(1000, &job(JobStatus::Queued, &["a"], 0))]);
        let limit = jobs.encoded_len() - 15 * 10;
        assert_eq!(jobs.shrink_to(limit), 10);
        assert!(!jobs.jobs.contains_key(&9) && jobs.jobs.contains_key(&10) && jobs.jobs.contains_key(&1000));
    }

    #[test]
    fn open_jobs_join_the_shared_value_and_the_furthest_state_wins() {
        let mine = |id, status| Job {
            id,
            run_id: 9,
            run_attempt: 1,
            repo: RepoRef::new(1, "acme/api"),
            status,
            labels: vec!["linux".into()],
            since: None,
            changed_at: 0,
            deliveries: Vec::new(),
        };
        let local = vec![mine(1, JobStatus::Queued), mine(2, JobStatus::InProgress), mine(3, JobStatus::Queued)];
        let shared = [
            (1, job(JobStatus::InProgress, &["linux"], 5)),
            (2, job(JobStatus::Queued, &["linux"], 5)),
            (3, job(JobStatus::Completed, &["linux"], 5)),
            (4, job(JobStatus::Queued, &["gpu"], 7)),
            (5, job(JobStatus::Completed, &["gpu"], 7)),
        ];
        let joined = join_open_jobs("acme/api", local, shared);
        let seen: Vec<(u64, JobStatus)> = joined.iter().map(|j| (j.id, j.status)).collect();
        assert_eq!(seen, [(1, JobStatus::InProgress), (2, JobStatus::InProgress), (4, JobStatus::Queued)]);
        let other = &joined[2];
        assert_eq!((other.repo.full_name.as_str(), other.changed_at, other.run_id), ("acme/api", 420, 0));
        assert_eq!(other.labels, ["gpu"]);
    }
}
