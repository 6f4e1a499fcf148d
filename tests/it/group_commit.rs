//! Group commit with a commit delay: under load deliveries gather into fewer flushes; a lone
//! delivery is never held back.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gaa::demand::{JobEvent, JobStatus, RepoRef};
use gaa::metrics::Metrics;
use gaa::store::{Recorded, StoreHandle, WriterConfig};

fn event(job: u64) -> JobEvent {
    JobEvent::new(job, 1, 1, RepoRef::new(1001, "acme/api"), JobStatus::Queued, ["linux"])
}

/// `gaa_journal_batch_deliveries_count`: how many group commits journaled something.
fn commits(metrics: &Metrics) -> u64 {
    let text = metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix("gaa_journal_batch_deliveries_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no batch count in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_delivery_is_committed_at_once_however_long_the_commit_delay() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig { commit_delay: Duration::from_secs(3600), ..WriterConfig::default() };
    let store = StoreHandle::start(dir.path(), catalog(None).runners, config, Arc::new(Metrics::new())).unwrap();
    // One at a time, as at night: were the delay applied after these, the next would wait an hour.
    for job in 1..=3 {
        let recorded = tokio::time::timeout(Duration::from_secs(20), store.record(&format!("d-{job}"), event(job)))
            .await
            .expect("a lone delivery is not held back by the commit delay");
        assert_eq!(recorded.unwrap(), Recorded::Accepted);
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_deliveries_that_arrive_during_the_delay_share_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let config = WriterConfig { commit_delay: Duration::from_millis(500), ..WriterConfig::default() };
    let store = StoreHandle::start(dir.path(), catalog(None).runners, config, metrics.clone()).unwrap();

    let send = |prefix: &'static str, jobs: std::ops::RangeInclusive<u64>| {
        let store = store.clone();
        async move {
            let sends = jobs.map(|job| {
                let store = store.clone();
                async move { store.record(&format!("{prefix}-{job}"), event(job)).await }
            });
            let answers = futures::future::join_all(sends).await;
            assert!(answers.iter().all(|a| matches!(a, Ok(Recorded::Accepted))), "{answers:?}");
        }
    };

    // A burst sent together is usually found queued and committed as one batch, which starts
    // the delay. Should the writer split it, let any delay lapse and send another.
    let mut next_job = 1;
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries <= 20, "20 bursts of 16 were each split over several commits");
        let before = commits(&metrics);
        send("a", next_job..=next_job + 15).await;
        next_job += 16;
        if commits(&metrics) - before == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Then deliveries trickle in, 20 ms apart, while the writer waits: one flush journals all
    // of them (with no delay each would find the writer idle and get a flush of its own).
    let before = commits(&metrics);
    let mut trickle = Vec::new();
    for job in next_job..next_job + 8 {
        let store = store.clone();
        trickle.push(tokio::spawn(async move { store.record(&format!("b-{job}"), event(job)).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for answer in futures::future::join_all(trickle).await {
        assert_eq!(answer.unwrap().unwrap(), Recorded::Accepted);
    }
    assert_eq!(commits(&metrics) - before, 1, "8 deliveries that arrived during the delay, one flush");
    next_job += 8;
    let api_linux = gaa::demand::RunnerKey::new("ci", "api-linux");
    assert_eq!(store.board().get(&api_linux).unwrap().demand, next_job - 1, "every delivery counts");
    store.shutdown().await;
}
