//! The journal: every accepted delivery, durable before it is acknowledged.
//!
//! Tree `log` holds one record per group commit, `e<seq>` → the deliveries of that batch, so a
//! batch costs one insert and one flush however many deliveries it carries. Tree `jobs` holds a
//! checkpoint of every job's state (`j<job-id>`, including the delivery ids it has seen) and the
//! last batch it reflects (`applied`). Start-up loads the checkpoint and replays the batches
//! after it; merging is idempotent, so replaying a batch twice is harmless. That is also what
//! lets a checkpoint be fuzzy: job states may be written while later batches are committed
//! (each state as it is when written), so a checkpoint never holds up the group commits.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::demand::{Job, JobEvent};

const EVENT: u8 = b'e';
const JOB: u8 = b'j';
const APPLIED: &[u8] = b"applied";
/// Batches dropped per `trim` call by a checkpoint written in one go.
const TRIM_STEP: usize = 4096;

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

pub struct Journal {
    db: sled::Db,
    log: sled::Tree,
    jobs: sled::Tree,
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

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> JournalError {
    JournalError::Corrupt { key: format!("{key:?}"), reason: reason.to_string() }
}

fn read_u64(key: &[u8], bytes: &[u8]) -> Result<u64, JournalError> {
    let array: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt(key, "short value"))?;
    Ok(u64::from_be_bytes(array))
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_error = |source| JournalError::Open { path: path.display().to_string(), source };
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(open_error)?;
        let log = db.open_tree("log").map_err(open_error)?;
        let jobs = db.open_tree("jobs").map_err(open_error)?;
        Ok(Self { db, log, jobs, last_seq: 0 })
    }

    /// Reads the checkpoint and the deliveries after it; must be called once before `append`.
    pub fn recover(&mut self) -> Result<Recovered, JournalError> {
        let applied = match self.jobs.get(APPLIED)? {
            Some(v) => read_u64(APPLIED, &v)?,
            None => 0,
        };
        let mut jobs = Vec::new();
        for item in self.jobs.scan_prefix([JOB]) {
            let (k, v) = item?;
            jobs.push(serde_json::from_slice::<Job>(&v).map_err(|e| corrupt(&k, e))?);
        }
        let mut tail = Vec::new();
        let mut last = applied;
        for item in self.log.range(key(EVENT, &(applied + 1).to_be_bytes())..=key(EVENT, &u64::MAX.to_be_bytes())) {
            let (k, v) = item?;
            let seq = read_u64(&k, &k[1..])?;
            let batch: Vec<Entry> = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            tail.extend(batch);
            last = last.max(seq);
        }
        self.last_seq = last;
        Ok(Recovered { jobs, tail, last_seq: last })
    }

    /// Journals a batch as one record and flushes it to disk (group commit): when this returns,
    /// every entry survives a crash. Returns the batch's sequence number.
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, JournalError> {
        if entries.is_empty() {
            return Ok(self.last_seq);
        }
        let seq = self.last_seq + 1;
        let body = serde_json::to_vec(entries).map_err(|e| corrupt(&seq.to_be_bytes(), e))?;
        self.log.insert(key(EVENT, &seq.to_be_bytes()), body)?;
        self.db.flush()?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// Writes a checkpoint in one go: the given job states and the removal of forgotten jobs,
    /// then the batch they reflect; flushes and drops the batches it covers. The writer spreads
    /// the same steps (`write_jobs`, `seal`, `trim`) over many group commits instead.
    pub fn checkpoint<'a>(
        &self,
        changed: impl IntoIterator<Item = &'a Job>,
        forgotten: &[u64],
        applied: u64,
    ) -> Result<(), JournalError> {
        self.write_jobs(changed, forgotten)?;
        self.seal(applied)?;
        while !self.trim(applied, TRIM_STEP)? {}
        Ok(())
    }

    /// Writes job states (the current ones, which may be newer than the checkpoint they belong
    /// to: replaying a batch onto a state that already holds it changes nothing) and removes
    /// forgotten jobs. Not flushed: the next flush, whichever writes it, covers them.
    pub fn write_jobs<'a>(
        &self,
        changed: impl IntoIterator<Item = &'a Job>,
        forgotten: &[u64],
    ) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        for job in changed {
            let body = serde_json::to_vec(job).map_err(|e| corrupt(&job.id.to_be_bytes(), e))?;
            batch.insert(key(JOB, &job.id.to_be_bytes()), body);
        }
        for id in forgotten {
            batch.remove(key(JOB, &id.to_be_bytes()));
        }
        self.jobs.apply_batch(batch)?;
        Ok(())
    }

    /// Records that the job states written so far reflect every batch up to `applied`, and
    /// flushes: from now on start-up replays only the batches after it.
    pub fn seal(&self, applied: u64) -> Result<(), JournalError> {
        self.jobs.insert(APPLIED, &applied.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Drops up to `limit` batches a sealed checkpoint covers; true once none are left.
    pub fn trim(&self, applied: u64, limit: usize) -> Result<bool, JournalError> {
        let mut covered = sled::Batch::default();
        let range = key(EVENT, &0u64.to_be_bytes())..=key(EVENT, &applied.to_be_bytes());
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
    use crate::demand::{JobStatus, RepoRef};

    fn entry(delivery: u64, job: u64, status: JobStatus) -> Entry {
        Entry {
            delivery,
            received_at: 100,
            event: JobEvent::new(job, 1, 1, RepoRef::new(1, "acme/api"), status, ["linux"]),
        }
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
            journal.write_jobs([live.job(1).unwrap()], &[]).unwrap();
            // Later batches move jobs 1 and 2 on before the rest of the checkpoint is written.
            commit(&mut journal, &mut live, &[entry(4, 1, JobStatus::InProgress), entry(5, 2, JobStatus::InProgress)]);
            commit(&mut journal, &mut live, &[entry(6, 2, JobStatus::Completed)]);
            journal.write_jobs([live.job(2).unwrap(), live.job(3).unwrap()], &[]).unwrap();
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
            assert_eq!(rebuilt.job(id).map(|j| j.status), live.job(id).map(|j| j.status), "job {id}");
            assert_eq!(rebuilt.job(id).map(|j| j.deliveries.clone()), live.job(id).map(|j| j.deliveries.clone()));
        }
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
