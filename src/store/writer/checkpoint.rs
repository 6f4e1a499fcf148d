//! The writer's checkpoint: job states written a few at a time between group commits, then
//! sealed, then the batches it covers dropped, so no delivery waits for a checkpoint.

use super::{JobKey, JournalError, SyncMessage, Writer};

impl Writer {
    /// Expires jobs GitHub has ended, forgets old finished jobs and delivery ids, and starts a
    /// checkpoint of every job changed since the last one. The checkpoint is written a few jobs
    /// at a time between group commits (`checkpoint_step`), so however many jobs changed, no
    /// delivery waits for it.
    pub(super) fn start_checkpoint(&mut self) {
        if self.run.is_some() {
            self.again = true;
            return;
        }
        let now = (self.config.clock)();
        let expired = self.state.expired(now);
        if !expired.is_empty() {
            let mut touched = Vec::new();
            for event in &expired {
                let applied = self.state.apply(event, now);
                self.dirty.insert(self.state.key(&event.repo.full_name, event.job_id));
                touched.extend(applied.runners);
            }
            self.metrics.jobs_expired.inc_by(expired.len() as u64);
            tracing::warn!(jobs = expired.len(), "expired jobs GitHub would have ended; no completed delivery came");
            touched.sort();
            touched.dedup();
            let keys: Vec<JobKey> = expired.iter().map(|e| self.state.key(&e.repo.full_name, e.job_id)).collect();
            self.share_or_publish(&keys, &touched);
        }
        let retention = i64::try_from(self.config.retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(retention);
        let forget_due = now - self.last_forget >= 60;
        let forgotten = if forget_due { self.state.forget_completed_before(cutoff) } else { Vec::new() };
        for key in &forgotten {
            self.dirty.remove(key);
        }
        if let Some(sync) = self.sync.as_ref().filter(|_| !forgotten.is_empty()) {
            let _ = sync.send(SyncMessage::Forget(forgotten.clone()));
        }
        if forget_due {
            self.last_forget = now;
        }
        self.metrics.jobs_tracked.set(i64::try_from(self.state.job_count()).unwrap_or(i64::MAX));
        // Written in ascending job order (chunks are taken from the end): job ids grow over time,
        // so each chunk lands in a few neighbouring leaves of the tree rather than all over it.
        let mut pending: Vec<JobKey> = std::mem::take(&mut self.dirty).into_iter().collect();
        pending.sort_unstable_by(|a, b| b.cmp(a));
        self.run = Some(CheckpointRun { upto: self.applied, pending, forgotten, sealed: false, started_at: now });
    }

    /// Does up to `budget` items of the checkpoint under way: job states to write, then the seal
    /// (one flush), then covered batches to drop.
    pub(super) fn checkpoint_step(&mut self, budget: usize) {
        let Some(mut run) = self.run.take() else { return };
        match self.advance(&mut run, budget) {
            Ok(false) => self.run = Some(run),
            Ok(true) => {
                self.metrics.last_checkpoint.set(run.started_at as f64);
                self.metrics.journal_bytes.set(i64::try_from(self.journal.size_on_disk()).unwrap_or(i64::MAX));
                if std::mem::take(&mut self.again) {
                    self.start_checkpoint();
                }
            }
            Err(error) => {
                // Nothing is lost: the batches stay until a checkpoint covering them is sealed,
                // and the jobs not yet written are written by the next one.
                tracing::error!(%error, "journal checkpoint failed; will retry");
                if !run.sealed {
                    self.dirty.extend(run.pending);
                }
            }
        }
    }

    /// True once the run is complete.
    fn advance(&mut self, run: &mut CheckpointRun, budget: usize) -> Result<bool, JournalError> {
        if !run.forgotten.is_empty() {
            self.journal.write_jobs([], &std::mem::take(&mut run.forgotten))?;
        }
        if !run.pending.is_empty() {
            let take = run.pending.len().min(budget);
            let chunk = run.pending.split_off(run.pending.len() - take);
            let written = self.journal.write_jobs(chunk.iter().filter_map(|key| self.state.job_by_key(key)), &[]);
            if let Err(error) = written {
                run.pending.extend(chunk);
                return Err(error);
            }
            return Ok(false);
        }
        if !run.sealed {
            self.journal.seal(run.upto)?;
            run.sealed = true;
            return Ok(false);
        }
        self.journal.trim(run.upto, budget)
    }

    /// Finishes the checkpoint under way, then writes one of everything changed since.
    pub(super) fn checkpoint_now(&mut self) {
        for _ in 0..2 {
            if self.run.is_none() {
                self.start_checkpoint();
            }
            self.again = false;
            // A step that fails drops the run (and logs why), which ends this loop too.
            while self.run.is_some() {
                self.checkpoint_step(usize::MAX);
            }
        }
    }
}

/// A checkpoint being written between group commits.
pub(super) struct CheckpointRun {
    /// The last batch every job state of this checkpoint reflects (or is newer than).
    upto: u64,
    /// Jobs still to write.
    pending: Vec<JobKey>,
    /// Jobs to remove from the checkpoint.
    forgotten: Vec<JobKey>,
    sealed: bool,
    started_at: i64,
}
