//! The journal: every accepted delivery, durable before it is acknowledged.
//!
//! Tree `log` holds `d<delivery-id>` → (seq, received-at) for de-duplication and `e<seq>` → the
//! event; both keys of a delivery go in one atomic batch, so a delivery id is never recorded
//! without its event. Tree `jobs` holds a checkpoint of every job's state (`j<job-id>`) and the
//! last sequence number it reflects (`applied`). Start-up loads the checkpoint and replays the
//! events after it; merging is idempotent, so replaying an event twice is harmless.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::demand::{Job, JobEvent};

const DELIVERY: u8 = b'd';
const EVENT: u8 = b'e';
const JOB: u8 = b'j';
const APPLIED: &[u8] = b"applied";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("opening the journal at {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("writing the journal: {0}")]
    Write(#[from] sled::Error),
    #[error("journal record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// One delivery to journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub delivery: String,
    pub received_at: i64,
    pub event: JobEvent,
}

/// What `append` did with each entry, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Accepted { seq: u64 },
    Duplicate,
}

/// State found on disk at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub jobs: Vec<Job>,
    /// Events after the checkpoint, in sequence order.
    pub tail: Vec<(u64, JobEvent)>,
    pub next_seq: u64,
}

pub struct Journal {
    db: sled::Db,
    log: sled::Tree,
    jobs: sled::Tree,
    next_seq: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("next_seq", &self.next_seq).finish_non_exhaustive()
    }
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> JournalError {
    JournalError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: reason.to_string() }
}

fn read_u64(key: &[u8], bytes: &[u8]) -> Result<u64, JournalError> {
    let array: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt(key, "short value"))?;
    Ok(u64::from_be_bytes(array))
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let open_error = |source| JournalError::Open { path: path.display().to_string(), source };
        let db = sled::Config::new().path(path).flush_every_ms(Some(1000)).open().map_err(open_error)?;
        let log = db.open_tree("log").map_err(open_error)?;
        let jobs = db.open_tree("jobs").map_err(open_error)?;
        Ok(Self { db, log, jobs, next_seq: 1 })
    }

    /// Reads the checkpoint and the events after it; must be called once before `append`.
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
        for item in self.log.range(key(EVENT, &(applied + 1).to_be_bytes())..key(EVENT, &u64::MAX.to_be_bytes())) {
            let (k, v) = item?;
            let seq = read_u64(&k, &k[1..])?;
            let entry: Entry = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            tail.push((seq, entry.event));
            last = last.max(seq);
        }
        self.next_seq = last + 1;
        Ok(Recovered { jobs, tail, next_seq: self.next_seq })
    }

    /// Journals a batch and flushes it to disk (group commit): when this returns `Ok`, every
    /// accepted entry survives a crash. Entries whose delivery id was seen before are duplicates.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Vec<Appended>, JournalError> {
        let mut batch = sled::Batch::default();
        let mut in_batch: HashSet<&str> = HashSet::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut seq = self.next_seq;
        for entry in entries {
            let dkey = key(DELIVERY, entry.delivery.as_bytes());
            if !in_batch.insert(entry.delivery.as_str()) || self.log.contains_key(&dkey)? {
                outcomes.push(Appended::Duplicate);
                continue;
            }
            let mut dval = Vec::with_capacity(16);
            dval.extend_from_slice(&seq.to_be_bytes());
            dval.extend_from_slice(&entry.received_at.to_be_bytes());
            batch.insert(dkey, dval);
            let body = serde_json::to_vec(entry).map_err(|e| corrupt(entry.delivery.as_bytes(), e))?;
            batch.insert(key(EVENT, &seq.to_be_bytes()), body);
            outcomes.push(Appended::Accepted { seq });
            seq += 1;
        }
        if seq != self.next_seq {
            self.log.apply_batch(batch)?;
            self.db.flush()?;
            self.next_seq = seq;
        }
        Ok(outcomes)
    }

    /// Writes a checkpoint: the given job states, the removal of forgotten jobs, and the sequence
    /// number they reflect, atomically; then flushes and drops the events it covers.
    pub fn checkpoint<'a>(
        &self,
        changed: impl IntoIterator<Item = &'a Job>,
        forgotten: &[u64],
        applied: u64,
    ) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        for job in changed {
            let body = serde_json::to_vec(job).map_err(|e| corrupt(&job.id.to_be_bytes(), e))?;
            batch.insert(key(JOB, &job.id.to_be_bytes()), body);
        }
        for id in forgotten {
            batch.remove(key(JOB, &id.to_be_bytes()));
        }
        batch.insert(APPLIED, &applied.to_be_bytes());
        self.jobs.apply_batch(batch)?;
        self.db.flush()?;
        let mut covered = sled::Batch::default();
        for item in self.log.range(key(EVENT, &0u64.to_be_bytes())..=key(EVENT, &applied.to_be_bytes())) {
            covered.remove(item?.0);
        }
        self.log.apply_batch(covered)?;
        Ok(())
    }

    /// Forgets delivery ids received before `cutoff` (unix seconds); GitHub cannot redeliver
    /// them any more. Returns how many were dropped.
    pub fn forget_deliveries_before(&self, cutoff: i64) -> Result<usize, JournalError> {
        let mut batch = sled::Batch::default();
        let mut dropped = 0;
        for item in self.log.scan_prefix([DELIVERY]) {
            let (k, v) = item?;
            let received = v.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_be_bytes);
            if received.is_some_and(|t| t < cutoff) {
                batch.remove(k);
                dropped += 1;
            }
        }
        self.log.apply_batch(batch)?;
        Ok(dropped)
    }

    pub fn flush(&self) -> Result<(), JournalError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::{JobStatus, RepoRef};

    fn entry(delivery: &str, job: u64, status: JobStatus) -> Entry {
        Entry {
            delivery: delivery.into(),
            received_at: 100,
            event: JobEvent::new(job, 1, 1, RepoRef::new(1, "acme/api"), status, ["linux"]),
        }
    }

    #[test]
    fn a_redelivery_is_a_duplicate_in_the_same_batch_and_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.recover().unwrap();
        let out = journal.append(&[entry("a", 1, JobStatus::Queued), entry("a", 1, JobStatus::Queued)]).unwrap();
        assert_eq!(out, vec![Appended::Accepted { seq: 1 }, Appended::Duplicate]);
        let out = journal.append(&[entry("a", 1, JobStatus::Queued), entry("b", 1, JobStatus::Completed)]).unwrap();
        assert_eq!(out, vec![Appended::Duplicate, Appended::Accepted { seq: 2 }]);
    }

    #[test]
    fn events_after_the_checkpoint_are_replayed_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut journal = Journal::open(dir.path()).unwrap();
            journal.recover().unwrap();
            journal.append(&[entry("a", 1, JobStatus::Queued), entry("b", 2, JobStatus::Queued)]).unwrap();
            let job = Job::from_event(&entry("a", 1, JobStatus::Queued).event, 100);
            journal.checkpoint([&job], &[], 1).unwrap();
            journal.append(&[entry("c", 3, JobStatus::Queued)]).unwrap();
        }
        let mut journal = Journal::open(dir.path()).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.jobs.len(), 1);
        assert_eq!(recovered.tail.iter().map(|(s, e)| (*s, e.job_id)).collect::<Vec<_>>(), vec![(2, 2), (3, 3)]);
        assert_eq!(recovered.next_seq, 4);
        let out = journal.append(&[entry("c", 3, JobStatus::Queued)]).unwrap();
        assert_eq!(out, vec![Appended::Duplicate], "delivery ids survive a reopen");
    }

    #[test]
    fn old_delivery_ids_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.recover().unwrap();
        journal.append(&[entry("a", 1, JobStatus::Queued)]).unwrap();
        assert_eq!(journal.forget_deliveries_before(100).unwrap(), 0);
        assert_eq!(journal.forget_deliveries_before(101).unwrap(), 1);
        assert_eq!(journal.append(&[entry("a", 1, JobStatus::Queued)]).unwrap(), vec![Appended::Accepted { seq: 2 }]);
    }
}
