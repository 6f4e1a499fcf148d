//! The journal: every accepted delivery, durable before it is acknowledged.
//!
//! Tree `log` holds each group commit's deliveries in parts of about 5 KB, `e<seq><part>`,
//! written in one atomic sled batch, so a batch costs one flush however many deliveries it
//! carries (an `e<seq>` record of a whole batch, as earlier versions wrote, is still read).
//! Tree `jobs` holds a checkpoint of every job's state (`j<job-id><repo>`, including the delivery
//! ids it has seen; a compact array, or the object earlier versions wrote) and the last batch it
//! reflects (`applied`). Start-up loads the checkpoint and
//! replays the batches after it; merging is idempotent, so replaying a batch twice is harmless.
//! That is also what lets a checkpoint be fuzzy: job states may be written while later batches
//! are committed (each state as it is when written), so a checkpoint never holds up the group
//! commits.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::durable::DataSync;
use crate::demand::{Job, JobEvent, JobKey, JobStatus, JobView, RepoRef};

const EVENT: u8 = b'e';
const JOB: u8 = b'j';
const APPLIED: &[u8] = b"applied";
/// A batch is journaled in parts of about this many bytes (see `Journal::append`): 17 of them
/// with their keys stay under the 128 KB at which sled moves a leaf to a file of its own.
const PART_BYTES: usize = 5 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("opening the journal at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("writing the journal: {0}")]
    Write(#[from] sled::Error),
    #[error("journal record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("starting the journal writer: {0}")]
    Thread(std::io::Error),
}

/// One delivery to journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `delivery_key` of the `X-GitHub-Delivery` id.
    pub delivery: u64,
    /// Our clock, unix seconds.
    pub received_at: i64,
    pub event: JobEvent,
}

/// State found on disk at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub jobs: Vec<Job>,
    /// Deliveries after the checkpoint, in journal order.
    pub tail: Vec<Entry>,
    /// The last batch journaled (0 for a new journal).
    pub last_seq: u64,
}

/// What is left to replay once the checkpoint's jobs have been handed over
/// ([`Journal::recover_with`]).
#[derive(Debug, Default)]
pub struct Replay {
    /// Deliveries after the checkpoint, in journal order.
    pub tail: Vec<Entry>,
    /// The last batch journaled (0 for a new journal).
    pub last_seq: u64,
}

pub struct Journal {
    db: sled::Db,
    log: sled::Tree,
    jobs: sled::Tree,
    /// sled's flush is not durable on its own (see `durable`): synced after each one.
    disk: DataSync,
    last_seq: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("last_seq", &self.last_seq).finish_non_exhaustive()
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// `J<id><repo>`: a job's state. The id comes first, so jobs written in ascending id order land
/// in neighbouring leaves; the repository makes it the job's whole identity ([`JobKey`]).
fn job_key(id: u64, repo: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + repo.len());
    k.push(JOB);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(repo.as_bytes());
    k
}

/// `e<seq><part>`: one part of a journaled batch. Sorts after an older `e<seq>` record of the
/// same batch and before every key of `seq + 1`.
fn part_key(seq: u64, part: u16) -> Vec<u8> {
    let mut rest = [0u8; 10];
    rest[..8].copy_from_slice(&seq.to_be_bytes());
    rest[8..].copy_from_slice(&part.to_be_bytes());
    key(EVENT, &rest)
}

const PART_KEY_LEN: usize = 11;

/// A job's state as the checkpoint holds it: a JSON array in a fixed order, its id and
/// repository being in its key (`[run_id, run_attempt, repo_id, status, labels, since,
/// changed_at, deliveries]`): under half the size of the object form earlier versions wrote,
/// which sled keeps in memory once per job.
#[derive(Serialize)]
struct WireJobRef<'a>(u64, u32, u64, JobStatus, &'a [String], Option<i64>, i64, &'a [u64]);

#[derive(Deserialize)]
struct WireJob(u64, u32, u64, JobStatus, Vec<String>, Option<i64>, i64, Vec<u64>);

impl<'a> From<&JobView<'a>> for WireJobRef<'a> {
    fn from(j: &JobView<'a>) -> Self {
        Self(j.run_id, j.run_attempt, j.repo_id, j.status, j.labels, j.since, j.changed_at, j.deliveries)
    }
}

/// A job read back from the checkpoint: the compact array under a `j<id><repo>` key, or the
/// object an earlier version wrote (under either key).
fn read_job(key: &[u8], value: &[u8]) -> Result<Job, JournalError> {
    if value.first() != Some(&b'[') {
        return serde_json::from_slice::<Job>(value).map_err(|e| corrupt(key, e));
    }
    let id = read_u64(key, key.get(1..).unwrap_or_default())?;
    let repo = key.get(1 + 8..).filter(|repo| !repo.is_empty()).ok_or_else(|| corrupt(key, "no repository"))?;
    let repo = std::str::from_utf8(repo).map_err(|e| corrupt(key, e))?;
    let WireJob(run_id, run_attempt, repo_id, status, labels, since, changed_at, deliveries) =
        serde_json::from_slice(value).map_err(|e| corrupt(key, e))?;
    Ok(Job {
        id,
        run_id,
        run_attempt,
        repo: RepoRef { id: repo_id, full_name: repo.to_string() },
        status,
        labels,
        since,
        changed_at,
        deliveries,
    })
}

/// An entry as a journal part holds it: a JSON array in a fixed order, half the size of the
/// object form (`[delivery, received_at, job_id, run_id, run_attempt, repo_id, repo, status,
/// labels, since]`).
#[derive(Serialize)]
struct WireEntryRef<'a>(u64, i64, u64, u64, u32, u64, &'a str, JobStatus, &'a [String], Option<i64>);

#[derive(Deserialize)]
struct WireEntry(u64, i64, u64, u64, u32, u64, String, JobStatus, Vec<String>, Option<i64>);

impl<'a> From<&'a Entry> for WireEntryRef<'a> {
    fn from(e: &'a Entry) -> Self {
        let v = &e.event;
        Self(
            e.delivery,
            e.received_at,
            v.job_id,
            v.run_id,
            v.run_attempt,
            v.repo.id,
            &v.repo.full_name,
            v.status,
            &v.labels,
            v.since,
        )
    }
}

impl From<WireEntry> for Entry {
    fn from(w: WireEntry) -> Self {
        let WireEntry(delivery, received_at, job_id, run_id, run_attempt, repo_id, full_name, status, labels, since) =
            w;
        Entry {
            delivery,
            received_at,
            event: JobEvent {
                job_id,
                run_id,
                run_attempt,
                repo: RepoRef { id: repo_id, full_name },
                status,
                labels,
                since,
            },
        }
    }
}

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> JournalError {
    JournalError::Corrupt { key: format!("{key:?}"), reason: reason.to_string() }
}

fn read_u64(key: &[u8], bytes: &[u8]) -> Result<u64, JournalError> {
    let array: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt(key, "short value"))?;
    Ok(u64::from_be_bytes(array))
}

/// How much of the journal sled keeps in memory (its default is 1 GiB, so it kept every page it
/// ever read or wrote: 22 MiB at 100,000 jobs). Pages beyond it are read back from the file
/// (the kernel's page cache) when a checkpoint or a trim needs them again; appends and the
/// group commit only touch the newest ones.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// How long opening waits for a lock the journal's previous holder is releasing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled reports a held lock as an `Other` error that wraps the `flock` failure.
fn is_lock_held(error: &std::io::Error) -> bool {
    error.to_string().contains("could not acquire lock")
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_error = |source| JournalError::Open { path: path.display().to_string(), source };
        let config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1000))
            .cache_capacity(CACHE_BYTES);
        // A journal just closed in this process frees its file lock only once sled's flusher
        // thread has ended: wait for it briefly. Held longer, another process has it.
        let started = std::time::Instant::now();
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e)) if is_lock_held(&e) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => break opened.map_err(open_error)?,
            }
        };
        let log = db.open_tree("log").map_err(open_error)?;
        let jobs = db.open_tree("jobs").map_err(open_error)?;
        let disk = DataSync::open(path).map_err(|e| open_error(sled::Error::Io(e)))?;
        Ok(Self { db, log, jobs, disk, last_seq: 0 })
    }

    /// Reads the checkpoint and the deliveries after it; must be called once before `append`.
    pub fn recover(&mut self) -> Result<Recovered, JournalError> {
        let mut jobs = Vec::new();
        let Replay { tail, last_seq } = self.recover_with(|job| jobs.push(job))?;
        Ok(Recovered { jobs, tail, last_seq })
    }

    /// [`recover`](Self::recover), handing each job of the checkpoint to `restore` as it is
    /// read rather than collecting them all first.
    pub fn recover_with(&mut self, mut restore: impl FnMut(Job)) -> Result<Replay, JournalError> {
        let applied = match self.jobs.get(APPLIED)? {
            Some(v) => read_u64(APPLIED, &v)?,
            None => 0,
        };
        // Earlier versions keyed a job by its id alone (`J<id>`); such a job moves to its
        // `J<id><repo>` key here, written by the next flush (until then it is read again).
        let mut rekeyed = sled::Batch::default();
        for item in self.jobs.scan_prefix([JOB]) {
            let (k, v) = item?;
            let job = read_job(&k, &v)?;
            if k.len() == 1 + 8 {
                rekeyed.remove(k);
                rekeyed.insert(job_key(job.id, &job.repo.full_name), v);
            }
            restore(job);
        }
        self.jobs.apply_batch(rekeyed)?;
        let mut tail = Vec::new();
        let mut last = applied;
        // Every batch after the checkpoint, in order (the log tree holds nothing else): parts
        // `e<seq><part>` of compact entries, or `e<seq>` records of whole entries as earlier
        // versions wrote them.
        for item in self.log.range(key(EVENT, &applied.saturating_add(1).to_be_bytes())..) {
            let (k, v) = item?;
            let seq = read_u64(&k, &k[1..])?;
            if k.len() == PART_KEY_LEN {
                let part: Vec<WireEntry> = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
                tail.extend(part.into_iter().map(Entry::from));
            } else {
                let batch: Vec<Entry> = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
                tail.extend(batch);
            }
            last = last.max(seq);
        }
        self.last_seq = last;
        Ok(Replay { tail, last_seq: last })
    }

    /// Journals a batch and flushes it to disk (group commit): when this returns, every entry
    /// survives a crash. Returns the batch's sequence number.
    ///
    /// The batch goes in compact parts of about `PART_BYTES` (`e<seq><part>`), in one atomic
    /// sled batch, so no value grows with the batch: sled keeps up to 17 values in a leaf and
    /// writes a leaf over 128 KB to a file of its own, which it neither syncs nor keeps (it
    /// creates one, and deletes another, every few commits under load).
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, JournalError> {
        if entries.is_empty() {
            return Ok(self.last_seq);
        }
        let seq = self.last_seq + 1;
        let fail = |e: serde_json::Error| corrupt(&seq.to_be_bytes(), e);
        let mut batch = sled::Batch::default();
        let mut part: u16 = 0;
        let mut record = Vec::with_capacity(PART_BYTES + 1024);
        for (i, entry) in entries.iter().enumerate() {
            record.push(if record.is_empty() { b'[' } else { b',' });
            serde_json::to_writer(&mut record, &WireEntryRef::from(entry)).map_err(fail)?;
            if record.len() >= PART_BYTES || i + 1 == entries.len() {
                record.push(b']');
                batch.insert(part_key(seq, part), std::mem::take(&mut record));
                part = part.checked_add(1).ok_or_else(|| corrupt(&seq.to_be_bytes(), "too many parts"))?;
            }
        }
        self.log.apply_batch(batch)?;
        self.flush()?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// Writes job states (the current ones, which may be newer than the checkpoint they belong
    /// to: replaying a batch onto a state that already holds it changes nothing) and removes
    /// forgotten jobs. Not flushed: the next flush, whichever writes it, covers them.
    pub fn write_jobs<'a>(
        &self,
        changed: impl IntoIterator<Item = JobView<'a>>,
        forgotten: &[JobKey],
    ) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        for job in changed {
            let body = serde_json::to_vec(&WireJobRef::from(&job)).map_err(|e| corrupt(&job.id.to_be_bytes(), e))?;
            batch.insert(job_key(job.id, job.repo), body);
        }
        for forgotten in forgotten {
            batch.remove(job_key(forgotten.id, &forgotten.repo));
        }
        self.jobs.apply_batch(batch)?;
        Ok(())
    }

    /// Records that the job states written so far reflect every batch up to `applied`, and
    /// flushes: from now on start-up replays only the batches after it.
    pub fn seal(&self, applied: u64) -> Result<(), JournalError> {
        self.jobs.insert(APPLIED, &applied.to_be_bytes())?;
        self.flush()
    }

    /// sled's flush, then what makes it reach the disk (fdatasync).
    fn flush(&self) -> Result<(), JournalError> {
        self.db.flush()?;
        self.disk.sync().map_err(sled::Error::Io)?;
        Ok(())
    }

    /// Drops up to `limit` batches a sealed checkpoint covers; true once none are left.
    pub fn trim(&self, applied: u64, limit: usize) -> Result<bool, JournalError> {
        let mut covered = sled::Batch::default();
        // Every part of every batch up to `applied`: the keys below `e<applied + 1>`.
        let range = key(EVENT, &0u64.to_be_bytes())..key(EVENT, &applied.saturating_add(1).to_be_bytes());
        for (count, item) in self.log.range(range).enumerate() {
            if count == limit {
                self.log.apply_batch(covered)?;
                return Ok(false);
            }
            covered.remove(item?.0);
        }
        self.log.apply_batch(covered)?;
        Ok(true)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Journal {
        /// A checkpoint in one go, as the writer's steps (`write_jobs`, `seal`, `trim`) add up to.
        fn checkpoint<'a>(
            &self,
            changed: impl IntoIterator<Item = &'a Job>,
            forgotten: &[JobKey],
            applied: u64,
        ) -> Result<(), JournalError> {
            self.write_jobs(changed.into_iter().map(Job::view), forgotten)?;
            self.seal(applied)?;
            while !self.trim(applied, 4096)? {}
            Ok(())
        }
    }

    fn entry(delivery: u64, job: u64, status: JobStatus) -> Entry {
        Entry {
            delivery,
            received_at: 100,
            event: JobEvent::new(job, 1, 1, RepoRef::new(1, "acme/api"), status, ["linux"]),
        }
    }

    #[test]
    fn opening_waits_for_a_journal_that_is_being_closed() {
        let dir = tempfile::tempdir().unwrap();
        let held = Journal::open(dir.path()).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        let reopened = Journal::open(dir.path());
        closer.join().unwrap();
        assert!(reopened.is_ok(), "{:?}", reopened.err());
    }

    #[test]
    fn batches_after_the_checkpoint_are_replayed_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            assert_eq!(journal.append(&[entry(1, 1, JobStatus::Queued)]).unwrap(), 1);
            assert_eq!(journal.append(&[entry(2, 2, JobStatus::Queued), entry(3, 3, JobStatus::Queued)]).unwrap(), 2);
            let job = Job::from_event(&entry(1, 1, JobStatus::Queued).event, 100);
            journal.checkpoint([&job], &[], 1).unwrap();
            assert_eq!(journal.append(&[]).unwrap(), 2, "an empty batch writes nothing");
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(recovered.tail.iter().map(|e| e.event.job_id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(recovered.last_seq, 2);
        assert_eq!(journal.append(&[entry(4, 4, JobStatus::Queued)]).unwrap(), 3);
    }

    #[test]
    fn a_large_batch_is_written_in_compact_parts_and_read_back_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries: Vec<Entry> = (1..=300).map(|i| entry(i, i, JobStatus::Queued)).collect();
        entries[7].event.since = Some(1_764_000_000);
        entries[8].event.labels = vec!["gpu".into(), "linux".into(), "self-hosted".into()];
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            assert_eq!(journal.append(&entries).unwrap(), 1);
            assert!(journal.log.len() > 1, "300 entries take several parts");
            for item in journal.log.iter() {
                let (_, value) = item.unwrap();
                assert!(value.len() < PART_BYTES + 1024, "a part of {} bytes", value.len());
            }
            assert_eq!(journal.append(&[entry(301, 301, JobStatus::Completed)]).unwrap(), 2);
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.last_seq, 2);
        entries.push(entry(301, 301, JobStatus::Completed));
        assert_eq!(recovered.tail, entries, "every field survives the compact form");
        journal.checkpoint([], &[], 2).unwrap();
        assert_eq!(journal.log.len(), 0, "a checkpoint drops every part of the batches it covers");
    }

    #[test]
    fn a_batch_journaled_whole_by_an_earlier_version_is_still_replayed_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            let old = serde_json::to_vec(&[entry(1, 1, JobStatus::Queued), entry(2, 2, JobStatus::Queued)]).unwrap();
            journal.log.insert(key(EVENT, &1u64.to_be_bytes()), old).unwrap();
            journal.db.flush().unwrap();
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.last_seq, 1);
        assert_eq!(recovered.tail, vec![entry(1, 1, JobStatus::Queued), entry(2, 2, JobStatus::Queued)]);
        assert_eq!(journal.append(&[entry(3, 3, JobStatus::Queued)]).unwrap(), 2);
        journal.checkpoint([], &[], 1).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.tail, vec![entry(3, 3, JobStatus::Queued)], "batch 1 is dropped, batch 2 kept");
    }

    /// A fuzzy checkpoint: job states written while later batches were committed, so some
    /// states already hold batches after the seal. Rebuilding from it and replaying those
    /// batches gives the state the writer had.
    #[test]
    fn a_checkpoint_written_between_commits_rebuilds_the_same_state() {
        use crate::demand::{DemandState, Runner, RunnerIndex, RunnerKey, ScaleFactor};
        let key = RunnerKey::new("ci", "linux");
        let index =
            || RunnerIndex::new([Runner::new(key.clone(), "acme", "api", ["linux"], 0, 9, ScaleFactor::Linear)]);
        let dir = tempfile::tempdir().unwrap();
        let mut live = DemandState::new(index());
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            let commit = |journal: &mut Journal, live: &mut DemandState, batch: &[Entry]| {
                for e in batch {
                    live.record(e.delivery, &e.event, 100);
                }
                journal.append(batch).unwrap()
            };
            commit(&mut journal, &mut live, &[entry(1, 1, JobStatus::Queued), entry(2, 2, JobStatus::Queued)]);
            let upto = commit(&mut journal, &mut live, &[entry(3, 3, JobStatus::Queued)]);
            // The checkpoint of jobs 1-3 starts; job 1 is written as it is then.
            journal.write_jobs([live.job("acme/api", 1).unwrap()], &[]).unwrap();
            // Later batches move jobs 1 and 2 on before the rest of the checkpoint is written.
            commit(&mut journal, &mut live, &[entry(4, 1, JobStatus::InProgress), entry(5, 2, JobStatus::InProgress)]);
            commit(&mut journal, &mut live, &[entry(6, 2, JobStatus::Completed)]);
            journal.write_jobs([live.job("acme/api", 2).unwrap(), live.job("acme/api", 3).unwrap()], &[]).unwrap();
            journal.seal(upto).unwrap();
            assert!(!journal.trim(upto, 1).unwrap(), "two batches are covered, one dropped per call");
            assert!(journal.trim(upto, 1).unwrap());
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.tail.len(), 3, "only the batches after the seal are replayed");
        let mut rebuilt = DemandState::new(index());
        for job in recovered.jobs {
            rebuilt.restore(job);
        }
        for e in &recovered.tail {
            rebuilt.record(e.delivery, &e.event, 100);
        }
        assert_eq!(rebuilt.counts(&key), live.counts(&key));
        assert_eq!(
            live.counts(&key).in_progress,
            1,
            "job 1 runs, job 2 finished, job 3 waits: {:?}",
            live.counts(&key)
        );
        for id in 1..=3 {
            assert_eq!(
                rebuilt.job("acme/api", id).map(|j| j.status),
                live.job("acme/api", id).map(|j| j.status),
                "job {id}"
            );
            assert_eq!(
                rebuilt.job("acme/api", id).map(|j| j.deliveries),
                live.job("acme/api", id).map(|j| j.deliveries)
            );
        }
    }

    #[test]
    fn jobs_of_two_repositories_with_one_id_are_kept_apart_and_old_id_keys_are_moved() {
        let dir = tempfile::tempdir().unwrap();
        let job = |repo: &str, status| {
            Job::from_event(&JobEvent::new(7, 1, 1, RepoRef::new(1, repo), status, ["linux"]), 100)
        };
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            // As an earlier version wrote it: keyed by the id alone.
            let old = job("acme/old", JobStatus::Queued);
            journal.jobs.insert(key(JOB, &7u64.to_be_bytes()), serde_json::to_vec(&old).unwrap()).unwrap();
            journal
                .checkpoint([&job("acme/api", JobStatus::Queued), &job("acme/web", JobStatus::Completed)], &[], 0)
                .unwrap();
        }
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            let mut repos: Vec<_> =
                journal.recover().unwrap().jobs.into_iter().map(|j| (j.repo.full_name, j.status)).collect();
            repos.sort();
            assert_eq!(
                repos,
                [
                    ("acme/api".to_string(), JobStatus::Queued),
                    ("acme/old".to_string(), JobStatus::Queued),
                    ("acme/web".to_string(), JobStatus::Completed)
                ]
            );
            assert!(journal.jobs.get(key(JOB, &7u64.to_be_bytes())).unwrap().is_none(), "moved to its new key");
            journal.checkpoint([], &[JobKey::new("acme/web", 7)], 0).unwrap();
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let mut left: Vec<_> = journal.recover().unwrap().jobs.into_iter().map(|j| j.repo.full_name).collect();
        left.sort();
        assert_eq!(left, ["acme/api", "acme/old"], "forgetting one repository's job keeps the other's");
    }

    #[test]
    fn job_states_are_checkpointed_as_compact_arrays_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let event = JobEvent::new(7, 99, 2, RepoRef::new(41, "acme/api"), JobStatus::InProgress, ["linux", "gpu"]);
        let mut job = Job::from_event(&event.since(Some(1_764_000_000)), 1_764_000_060);
        job.remember_delivery(u64::MAX);
        job.remember_delivery(3);
        let bare = Job::from_event(&entry(1, 8, JobStatus::Completed).event, 100);
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            journal.checkpoint([&job, &bare], &[], 0).unwrap();
            let stored = journal.jobs.get(job_key(7, "acme/api")).unwrap().unwrap();
            assert_eq!(
                std::str::from_utf8(&stored).unwrap(),
                r#"[99,2,41,"in_progress",["gpu","linux"],1764000000,1764000060,[18446744073709551615,3]]"#
            );
            assert!(stored.len() * 2 < serde_json::to_vec(&job).unwrap().len(), "under half the object form");
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let mut jobs = journal.recover().unwrap().jobs;
        jobs.sort_by_key(|j| j.id);
        assert_eq!(jobs, [job, bare]);
    }

    #[test]
    fn a_job_state_an_earlier_version_wrote_as_an_object_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Job::from_event(&entry(1, 7, JobStatus::Queued).event, 100);
        old.remember_delivery(1);
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal.jobs.insert(job_key(7, "acme/api"), serde_json::to_vec(&old).unwrap()).unwrap();
            journal.db.flush().unwrap();
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.recover().unwrap().jobs, [old]);
    }

    #[test]
    fn a_compact_job_state_under_a_key_without_its_repository_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.jobs.insert(key(JOB, &7u64.to_be_bytes()), &br#"[1,1,1,"queued",[],null,0,[]]"#[..]).unwrap();
        assert!(matches!(journal.recover(), Err(JournalError::Corrupt { .. })));
    }

    /// sled keeps at most `CACHE_BYTES` of pages in memory: a checkpoint larger than that is
    /// written, rewritten (pages read back in) and recovered whole.
    #[test]
    fn a_checkpoint_larger_than_the_cache_is_rewritten_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let label = "l".repeat(400);
        let jobs = |status| -> Vec<Job> {
            (0..25_000u64)
                .map(|id| {
                    let event = JobEvent::new(id, id, 1, RepoRef::new(1, "acme/api"), status, [label.as_str()]);
                    Job::from_event(&event, 100)
                })
                .collect()
        };
        let queued = jobs(JobStatus::Queued);
        let bytes: usize =
            queued.iter().map(|job| serde_json::to_vec(&WireJobRef::from(&job.view())).unwrap().len()).sum();
        assert!(bytes as u64 > CACHE_BYTES, "{bytes} bytes fit the cache");
        let running = jobs(JobStatus::InProgress);
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            journal.checkpoint(&queued, &[], 0).unwrap();
            journal.checkpoint(&running, &[], 0).unwrap();
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let mut recovered = journal.recover().unwrap().jobs;
        recovered.sort_by_key(|job| job.id);
        assert!(recovered == running, "{} jobs read back, not the 25,000 written last", recovered.len());
    }

    #[test]
    fn a_checkpoint_drops_the_batches_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.recover().unwrap();
        journal.append(&[entry(1, 1, JobStatus::Queued)]).unwrap();
        journal.append(&[entry(2, 1, JobStatus::Completed)]).unwrap();
        journal.checkpoint([], &[], 2).unwrap();
        assert!(journal.recover().unwrap().tail.is_empty());
        assert_eq!(journal.log.len(), 0);
    }
}
