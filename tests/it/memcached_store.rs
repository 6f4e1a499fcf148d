//! Shared demand in real memcached, through the real binary: replicas agree through duplicates
//! and splits, survive memcached dying and coming back empty, and spread over several servers.

use crate::common;

use std::time::{Duration, Instant};

use common::memcached::MemcachedServer;
use common::rng::Rng;
use common::server::{Server, manifests_dir};
use serde_json::Value;

fn store_args(servers: &[&MemcachedServer]) -> Vec<String> {
    let list: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    vec!["--store".into(), format!("memcached://{}", list.join(",")), "--store-refresh-interval".into(), "200ms".into()]
}

async fn start_replica(root: &std::path::Path, name: &str, servers: &[&MemcachedServer]) -> Server {
    let manifests = manifests_dir(root, "");
    let args = store_args(servers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&root.join(name), &manifests, &args).await
}

/// (demand, stale) of ci/api-linux as a replica reports it.
async fn linux(server: &Server) -> (u64, bool) {
    let view: Value = server.runner("ci", "api-linux").await;
    (view["demand"].as_u64().unwrap_or(u64::MAX), view["stale"].as_bool().unwrap_or(true))
}

async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_memcached_report_identical_true_demand_through_splits_and_duplicates() {
    let memcached = MemcachedServer::start();
    let root = tempfile::tempdir().unwrap();
    let a = start_replica(root.path(), "a", &[&memcached]).await;
    let b = start_replica(root.path(), "b", &[&memcached]).await;
    let client = common::server::http();
    // 120 jobs queued, 60 started, 30 finished: truth is 90 queued-or-running... minus finished:
    // queued 61..=120 (60) + running 31..=60 (30) = 90.
    let mut plan: Vec<(String, u64, &str)> = Vec::new();
    plan.extend((1..=120).map(|j| (format!("q-{j}"), j, "queued")));
    plan.extend((1..=60).map(|j| (format!("i-{j}"), j, "in_progress")));
    plan.extend((1..=30).map(|j| (format!("c-{j}"), j, "completed")));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in (1..plan.len()).rev() {
        plan.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    for (delivery, job, action) in &plan {
        let both = rng.next().is_multiple_of(4);
        if both {
            // The same delivery to both replicas at the same instant.
            let (x, y) = tokio::join!(
                a.deliver(&client, delivery, "acme/api", *job, action),
                b.deliver(&client, delivery, "acme/api", *job, action)
            );
            assert!((200..300).contains(&x) && (200..300).contains(&y), "{x} {y}");
        } else {
            let target = if rng.next().is_multiple_of(2) { &a } else { &b };
            let status = target.deliver(&client, delivery, "acme/api", *job, action).await;
            assert!((200..300).contains(&status), "{status}");
        }
    }
    eventually("both replicas report the truth", Duration::from_secs(10), || async {
        linux(&a).await == (90, false) && linux(&b).await == (90, false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memcached_dying_loses_no_delivery_and_an_empty_restart_is_refilled_without_github() {
    let mut memcached = MemcachedServer::start();
    let root = tempfile::tempdir().unwrap();
    let a = start_replica(root.path(), "a", &[&memcached]).await;
    let b = start_replica(root.path(), "b", &[&memcached]).await;
    let client = common::server::http();
    for job in 1..=20 {
        let target = if job % 2 == 0 { &a } else { &b };
        assert_eq!(target.deliver(&client, &format!("q-{job}"), "acme/api", job, "queued").await, 202);
    }
    eventually("20 queued everywhere", Duration::from_secs(10), || async {
        linux(&a).await == (20, false) && linux(&b).await == (20, false)
    })
    .await;

    memcached.kill();
    for job in 21..=40 {
        let target = if job % 2 == 0 { &a } else { &b };
        let status = target.deliver(&client, &format!("q-{job}"), "acme/api", job, "queued").await;
        assert_eq!(status, 202, "deliveries are still acknowledged while memcached is down");
    }
    eventually("stale, last known value", Duration::from_secs(10), || async { linux(&a).await == (20, true) }).await;
    let ready: Value = common::server::get(format!("http://{}/readyz", a.addr)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["degraded"], true, "{ready}");
    assert!(ready["backlogJobs"].as_u64().unwrap() > 0, "{ready}");

    memcached.restart();
    let took = eventually("back to the truth from the journals", Duration::from_secs(10), || async {
        linux(&a).await == (40, false) && linux(&b).await == (40, false)
    })
    .await;
    eprintln!("demand returned {took:?} after memcached came back empty");
    let metrics = common::server::get(format!("http://{}/metrics", b.addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gaa_store_replayed_jobs_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_memcached_servers_what_one_replica_writes_the_other_reads() {
    let first = MemcachedServer::start();
    let second = MemcachedServer::start();
    let root = tempfile::tempdir().unwrap();
    let a = start_replica(root.path(), "a", &[&first, &second]).await;
    let b = start_replica(root.path(), "b", &[&first, &second]).await;
    let client = common::server::http();
    for job in 1..=7 {
        assert_eq!(a.deliver(&client, &format!("q-{job}"), "acme/api", job, "queued").await, 202);
        assert_eq!(a.deliver(&client, &format!("w-{job}"), "acme/web", job + 100, "queued").await, 202);
    }
    eventually("B reads what A wrote", Duration::from_secs(10), || async {
        let web: Value = b.runner("frontend", "web").await;
        linux(&b).await == (7, false) && web["demand"] == 7
    })
    .await;
}
