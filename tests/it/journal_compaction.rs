//! The journal does not grow without bound: finished jobs and delivery ids are forgotten after
//! the retention, covered events are dropped at each checkpoint, and open jobs are kept.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use gaa::clock::Clock;
use gaa::demand::{JobEvent, JobStatus, RepoRef};
use gaa::metrics::Metrics;
use gaa::store::journal::Journal;
use gaa::store::{Recorded, StoreHandle, WriterConfig};

const RETENTION: u64 = 3600;

fn event(job: u64, status: JobStatus) -> JobEvent {
    JobEvent::new(job, 1, 1, RepoRef::new(1001, "acme/api"), status, ["linux"])
}

#[tokio::test]
async fn finished_jobs_and_their_delivery_ids_are_forgotten_after_the_retention_and_open_jobs_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let config = WriterConfig {
        checkpoint_every: Duration::from_secs(3600),
        retention: Duration::from_secs(RETENTION),
        clock,
        ..WriterConfig::default()
    };
    let store = StoreHandle::start(dir.path(), catalog(None).runners, config, Arc::new(Metrics::new())).unwrap();
    assert_eq!(store.record("q1", event(1, JobStatus::Queued)).await.unwrap(), Recorded::Accepted);
    assert_eq!(store.record("c1", event(1, JobStatus::Completed)).await.unwrap(), Recorded::Accepted);
    assert_eq!(store.record("q2", event(2, JobStatus::Queued)).await.unwrap(), Recorded::Accepted);

    // Well past the retention (and the minute between sweeps): job 1 and its deliveries go.
    now.fetch_add(RETENTION as i64 + 120, Ordering::SeqCst);
    store.checkpoint().await.unwrap();
    store.shutdown().await;

    let mut journal = Journal::open(&dir.path().join("journal")).unwrap();
    let recovered = journal.recover().unwrap();
    let ids: Vec<u64> = recovered.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![2], "only the open job remains in the checkpoint");
    assert!(recovered.tail.is_empty(), "the checkpoint covers every event, so none are kept");
    drop(journal);

    let store =
        StoreHandle::start(dir.path(), catalog(None).runners, WriterConfig::default(), Arc::new(Metrics::new()))
            .unwrap();
    let api_linux = gaa::demand::RunnerKey::new("ci", "api-linux");
    assert_eq!(store.board().get(&api_linux).unwrap().demand, 1, "the open job still counts after restart");
    // Delivery ids live as long as their job: the open job still knows its delivery, the
    // forgotten one does not (and its redelivery cannot bring it back: completed is final).
    assert_eq!(store.record("q2", event(2, JobStatus::Queued)).await.unwrap(), Recorded::Duplicate);
    assert_eq!(store.record("c1", event(1, JobStatus::Completed)).await.unwrap(), Recorded::Accepted);
    assert_eq!(store.board().get(&api_linux).unwrap().demand, 1);
    store.shutdown().await;
}

#[tokio::test]
async fn finished_jobs_within_the_retention_still_block_a_late_redelivered_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        StoreHandle::start(dir.path(), catalog(None).runners, WriterConfig::default(), Arc::new(Metrics::new()))
            .unwrap();
    store.record("c1", event(1, JobStatus::Completed)).await.unwrap();
    store.checkpoint().await.unwrap();
    store.shutdown().await;
    let store =
        StoreHandle::start(dir.path(), catalog(None).runners, WriterConfig::default(), Arc::new(Metrics::new()))
            .unwrap();
    store.record("q1-other-guid", event(1, JobStatus::Queued)).await.unwrap();
    let api_linux = gaa::demand::RunnerKey::new("ci", "api-linux");
    assert_eq!(store.board().get(&api_linux).unwrap().demand, 0);
    store.shutdown().await;
}
