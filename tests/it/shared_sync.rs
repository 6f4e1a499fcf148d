//! The shared-mode logic over an in-memory key-value store with memcached's semantics (CAS
//! tokens, add-if-absent, loss of everything on restart). The same scenarios run against real
//! memcached in `tests/memcached_store.rs`; this file pins the logic down without sockets.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gaa::demand::{JobEvent, JobStatus, RepoRef, RunnerKey};
use gaa::metrics::Metrics;
use gaa::store::shared::{KvError, MultiRead, SharedKv, SyncConfig};
use gaa::store::writer::SharedSetup;
use gaa::store::{StoreHandle, WriterConfig};

#[derive(Default)]
struct MemoryKv {
    items: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    next_token: AtomicU64,
    down: AtomicBool,
    /// Values written (add or cas that took) and multi-reads (one per refresh of a replica).
    writes: AtomicU64,
    refreshes: AtomicU64,
}

impl MemoryKv {
    fn check(&self) -> Result<(), KvError> {
        if self.down.load(Ordering::SeqCst) {
            Err(KvError { unavailable: true, message: "down".into() })
        } else {
            Ok(())
        }
    }

    fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn restart_empty(&self) {
        self.items.lock().unwrap().clear();
    }
}

impl SharedKv for MemoryKv {
    fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, KvError> {
        self.check()?;
        Ok(self.items.lock().unwrap().get(key).cloned())
    }

    fn add(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        self.check()?;
        let mut items = self.items.lock().unwrap();
        if items.contains_key(key) {
            return Ok(false);
        }
        items.insert(key.to_string(), (value.to_vec(), self.token()));
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    fn cas(&self, key: &str, value: &[u8], token: u64) -> Result<bool, KvError> {
        self.check()?;
        let mut items = self.items.lock().unwrap();
        match items.get(key) {
            Some((_, current)) if *current == token => {
                items.insert(key.to_string(), (value.to_vec(), self.token()));
                self.writes.fetch_add(1, Ordering::SeqCst);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn get_multi(&self, keys: &[String]) -> MultiRead {
        if let Err(error) = self.check() {
            return MultiRead { failed: keys.iter().cloned().collect(), error: Some(error), ..MultiRead::default() };
        }
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let items = self.items.lock().unwrap();
        let values = keys.iter().filter_map(|k| items.get(k).map(|(v, _)| (k.clone(), v.clone()))).collect();
        MultiRead { values, ..MultiRead::default() }
    }
}

fn replica(dir: &std::path::Path, kv: Arc<MemoryKv>) -> StoreHandle {
    replica_with_metrics(dir, kv, Arc::new(Metrics::new()))
}

fn replica_with_metrics(dir: &std::path::Path, kv: Arc<dyn SharedKv>, metrics: Arc<Metrics>) -> StoreHandle {
    let config = WriterConfig {
        shared: Some(SharedSetup {
            kv,
            config: SyncConfig { refresh_every: Duration::from_millis(50), ..SyncConfig::default() },
        }),
        ..WriterConfig::default()
    };
    StoreHandle::start(dir, catalog(None).runners, config, metrics).unwrap()
}

fn event(job: u64, status: JobStatus, labels: &[&str]) -> JobEvent {
    JobEvent::new(job, 1, 1, RepoRef::new(1001, "acme/api"), status, labels.iter().copied())
}

/// Waits until `check` holds, for up to five seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn demand(store: &StoreHandle, name: &str) -> (u64, bool) {
    let view = store.board().get(&RunnerKey::new("ci", name)).unwrap();
    (view.demand, view.stale)
}

#[tokio::test]
async fn two_replicas_with_split_and_duplicated_deliveries_report_the_same_true_demand() {
    let kv = Arc::new(MemoryKv::default());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_dir.path(), kv.clone()), replica(b_dir.path(), kv.clone()));
    // Jobs 1..=40 queued; 1..=20 started; 1..=10 finished. Even jobs go to A, odd to B, and every
    // third delivery goes to both at once.
    let mut plan: Vec<(String, &StoreHandle, JobEvent)> = Vec::new();
    for (status, upto) in [(JobStatus::Queued, 40), (JobStatus::InProgress, 20), (JobStatus::Completed, 10)] {
        for job in 1..=upto {
            let labels: &[&str] = if job % 5 == 0 { &["linux", "gpu"] } else { &["linux"] };
            let targets: Vec<&StoreHandle> = if job % 3 == 0 {
                vec![&a, &b]
            } else if job % 2 == 0 {
                vec![&a]
            } else {
                vec![&b]
            };
            for target in targets {
                plan.push((format!("{job}-{status:?}"), target, event(job, status, labels)));
            }
        }
    }
    let sends: Vec<_> = plan.iter().map(|(delivery, target, event)| target.record(delivery, event.clone())).collect();
    for result in futures_util_join(sends).await {
        result.unwrap();
    }
    // Truth: linux runner: queued 21..=40 minus gpu jobs (25,30,35,40) = 16, running 11..=20
    // minus 15,20 = 8; gpu runner: queued 25,30,35,40 = 4, running 15,20 = 2.
    eventually("both replicas agree on the truth", || {
        demand(&a, "api-linux") == (24, false)
            && demand(&b, "api-linux") == (24, false)
            && demand(&a, "api-gpu") == (6, false)
            && demand(&b, "api-gpu") == (6, false)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_label_longer_than_255_bytes_is_shared_whole_and_not_rewritten_on_every_refresh() {
    let kv = Arc::new(MemoryKv::default());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_dir.path(), kv.clone()), replica(b_dir.path(), kv.clone()));
    // 400 bytes of two-byte characters: byte 255 falls inside one.
    let long = "\u{fc}".repeat(200);
    a.record("d1", event(1, JobStatus::Queued, &["linux", &long])).await.unwrap();
    b.record("d2", event(2, JobStatus::Queued, &["linux"])).await.unwrap();
    eventually("both replicas count B's job", || {
        demand(&a, "api-linux") == (1, false) && demand(&b, "api-linux") == (1, false)
    })
    .await;
    // Both replicas have contributed: ten more refreshes between them must write nothing.
    let writes = kv.writes.load(Ordering::SeqCst);
    let refreshes = kv.refreshes.load(Ordering::SeqCst);
    eventually("ten more refreshes", || kv.refreshes.load(Ordering::SeqCst) >= refreshes + 10).await;
    assert_eq!(kv.writes.load(Ordering::SeqCst), writes, "the shared value was rewritten while nothing changed");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn deliveries_are_accepted_while_the_store_is_down_and_the_backlog_lands_when_it_returns() {
    let kv = Arc::new(MemoryKv::default());
    let dir = tempfile::tempdir().unwrap();
    let store = replica(dir.path(), kv.clone());
    store.record("q1", event(1, JobStatus::Queued, &["linux"])).await.unwrap();
    eventually("first job visible", || demand(&store, "api-linux") == (1, false)).await;
    kv.down.store(true, Ordering::SeqCst);
    for job in 2..=5 {
        store.record(&format!("q{job}"), event(job, JobStatus::Queued, &["linux"])).await.unwrap();
    }
    eventually("stale while down, last known value kept", || demand(&store, "api-linux") == (1, true)).await;
    kv.down.store(false, Ordering::SeqCst);
    eventually("backlog applied", || demand(&store, "api-linux") == (5, false)).await;
    store.shutdown().await;
}

#[tokio::test]
async fn a_store_that_comes_back_empty_is_refilled_from_every_replicas_journal() {
    let kv = Arc::new(MemoryKv::default());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_dir.path(), kv.clone()), replica(b_dir.path(), kv.clone()));
    a.record("a1", event(1, JobStatus::Queued, &["linux"])).await.unwrap();
    b.record("b2", event(2, JobStatus::Queued, &["linux"])).await.unwrap();
    b.record("b4", event(4, JobStatus::Queued, &["linux"])).await.unwrap();
    b.record("b1", event(1, JobStatus::Completed, &["linux"])).await.unwrap();
    eventually("converged", || demand(&a, "api-linux") == (2, false) && demand(&b, "api-linux") == (2, false)).await;
    kv.restart_empty();
    // A new delivery recreates the key with only A's knowledge (A alone would say jobs 1 and 3);
    // B must still contribute its own: job 1 finished, jobs 2 and 4 queued. Truth: 2, 3, 4.
    a.record("a3", event(3, JobStatus::Queued, &["linux"])).await.unwrap();
    eventually("refilled to the truth", || {
        demand(&a, "api-linux") == (3, false) && demand(&b, "api-linux") == (3, false)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Joins futures concurrently without pulling in a futures crate.
async fn futures_util_join<T, F: std::future::Future<Output = T>>(futures: Vec<F>) -> Vec<T> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, result) in pending.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_replica_that_knows_no_jobs_holds_its_numbers_while_another_restores_a_lost_value() {
    let kv = Arc::new(MemoryKv::default());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, observer) = (replica(a_dir.path(), kv.clone()), replica(b_dir.path(), kv.clone()));
    for job in 1..=3 {
        a.record(&format!("q{job}"), event(job, JobStatus::Queued, &["linux"])).await.unwrap();
    }
    eventually("observer sees A's jobs", || demand(&observer, "api-linux") == (3, false)).await;
    // Only A's journal knows the jobs, and A is down when the store loses them.
    a.shutdown().await;
    kv.restart_empty();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(demand(&observer, "api-linux"), (3, true), "held as stale, not dropped to zero");
    let a = replica(a_dir.path(), kv.clone());
    eventually("restored by A's restart", || demand(&observer, "api-linux") == (3, false)).await;
    a.shutdown().await;
    observer.shutdown().await;
}

/// Two replicas on one store: A journaled job 1 queued, B alone its completion, which A has read
/// from the shared value.
async fn a_finish_only_b_journaled() -> (Arc<MemoryKv>, [tempfile::TempDir; 2], StoreHandle, StoreHandle) {
    let kv = Arc::new(MemoryKv::default());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (replica(a_dir.path(), kv.clone()), replica(b_dir.path(), kv.clone()));
    a.record("q1", event(1, JobStatus::Queued, &["linux"])).await.unwrap();
    eventually("both see the job", || demand(&b, "api-linux") == (1, false)).await;
    b.record("c1", event(1, JobStatus::Completed, &["linux"])).await.unwrap();
    eventually("A reads the finish", || demand(&a, "api-linux") == (0, false)).await;
    (kv, [a_dir, b_dir], a, b)
}

#[tokio::test]
async fn a_finish_only_another_replica_journaled_is_what_a_replica_republishes_once_it_has_read_it() {
    let (kv, _dirs, a, b) = a_finish_only_b_journaled().await;
    // B is down when the store loses everything: A alone refills it, from what it knows.
    b.shutdown().await;
    let writes = kv.writes.load(Ordering::SeqCst);
    kv.restart_empty();
    eventually("A refilled the store", || kv.writes.load(Ordering::SeqCst) > writes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(demand(&a, "api-linux"), (0, false), "a finished job must not come back as queued");
    a.shutdown().await;
}

#[tokio::test]
async fn a_finish_only_another_replica_journaled_survives_a_restart_while_the_store_is_empty_and_it_is_away() {
    let (kv, [a_dir, _b_dir], a, b) = a_finish_only_b_journaled().await;
    // B goes away, A restarts, and the store has lost everything (or forgot the finished job
    // after its hour): what A republishes from its journal must hold the finish.
    b.shutdown().await;
    a.shutdown().await;
    kv.restart_empty();
    let writes = kv.writes.load(Ordering::SeqCst);
    let a = replica(a_dir.path(), kv.clone());
    eventually("A refilled the store", || kv.writes.load(Ordering::SeqCst) > writes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(demand(&a, "api-linux"), (0, false), "a finished job must not come back after a restart");
    a.shutdown().await;
}

#[tokio::test]
async fn runners_with_the_same_name_in_different_namespaces_never_share_demand() {
    use gaa::demand::{Runner, RunnerIndex, ScaleFactor};
    let kv = Arc::new(MemoryKv::default());
    let index = || {
        RunnerIndex::new([
            Runner::new(RunnerKey::new("team-a", "build"), "acme", "api", ["linux"], 0, 9, ScaleFactor::Linear),
            Runner::new(RunnerKey::new("team-b", "build"), "acme", "web", ["linux"], 0, 9, ScaleFactor::Linear),
        ])
    };
    let config = || WriterConfig {
        shared: Some(SharedSetup {
            kv: kv.clone(),
            config: SyncConfig { refresh_every: Duration::from_millis(50), ..SyncConfig::default() },
        }),
        ..WriterConfig::default()
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = StoreHandle::start(a_dir.path(), index(), config(), Arc::new(Metrics::new())).unwrap();
    let b = StoreHandle::start(b_dir.path(), index(), config(), Arc::new(Metrics::new())).unwrap();
    a.record("api-1", event(1, JobStatus::Queued, &["linux"])).await.unwrap();
    let web = JobEvent::new(2, 1, 1, RepoRef::new(2002, "acme/web"), JobStatus::Queued, ["linux"]);
    b.record("web-2", web.clone()).await.unwrap();
    b.record("web-3", JobEvent { job_id: 3, ..web }).await.unwrap();
    let build = |store: &StoreHandle, ns: &str| store.board().get(&RunnerKey::new(ns, "build")).map(|v| v.demand);
    eventually("each namespace's build runner has its own demand", || {
        [&a, &b].iter().all(|s| build(s, "team-a") == Some(1) && build(s, "team-b") == Some(2))
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// One replica's view of the store whose multi-reads can be held: a refresh in flight.
struct HeldReads {
    kv: Arc<MemoryKv>,
    hold: AtomicBool,
    reading: AtomicBool,
}

impl SharedKv for HeldReads {
    fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, KvError> {
        self.kv.gets(key)
    }
    fn add(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        self.kv.add(key, value)
    }
    fn cas(&self, key: &str, value: &[u8], token: u64) -> Result<bool, KvError> {
        self.kv.cas(key, value, token)
    }
    fn get_multi(&self, keys: &[String]) -> MultiRead {
        while self.hold.load(Ordering::SeqCst) {
            self.reading.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.reading.store(false, Ordering::SeqCst);
        self.kv.get_multi(keys)
    }
}

#[tokio::test]
async fn a_removed_runner_leaves_no_series_even_when_a_refresh_was_showing_it() {
    let kv = Arc::new(MemoryKv::default());
    let held = Arc::new(HeldReads { kv: kv.clone(), hold: AtomicBool::new(false), reading: AtomicBool::new(false) });
    let metrics = Arc::new(Metrics::new());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica_with_metrics(a_dir.path(), held.clone(), metrics.clone());
    let b = replica(b_dir.path(), kv.clone());
    a.record("gpu-1", event(1, JobStatus::Queued, &["linux", "gpu"])).await.unwrap();
    a.record("linux-2", event(2, JobStatus::Queued, &["linux"])).await.unwrap();
    eventually("both runners' series show their jobs", || {
        let text = metrics.encode();
        text.contains(r#"gaa_runner_demand{namespace="ci",name="api-gpu"} 1"#)
            && text.contains(r#"gaa_runner_demand{namespace="ci",name="api-linux"} 1"#)
    })
    .await;

    // A's refresh, which still knows the gpu runner, is held while the other replica takes a new
    // gpu job into the store and the gpu runner is removed from A.
    held.hold.store(true, Ordering::SeqCst);
    eventually("a refresh of A is in flight", || held.reading.load(Ordering::SeqCst)).await;
    b.record("gpu-3", event(3, JobStatus::Queued, &["linux", "gpu"])).await.unwrap();
    eventually("B shares the new job", || demand(&b, "api-gpu") == (2, false)).await;
    let without_gpu =
        gaa::demand::RunnerIndex::new(catalog(None).runners.iter().filter(|r| r.key.name != "api-gpu").cloned());
    a.set_runners(without_gpu).await.unwrap();
    held.hold.store(false, Ordering::SeqCst);
    let reads = kv.refreshes.load(Ordering::SeqCst);
    eventually("more refreshes", || kv.refreshes.load(Ordering::SeqCst) > reads + 3).await;
    let text = metrics.encode();
    assert!(!text.contains(r#"name="api-gpu""#), "{text}");
    assert!(text.contains(r#"gaa_runner_demand{namespace="ci",name="api-linux"} 1"#), "{text}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_organisation_runner_shows_its_organisations_demand_on_every_replica_whichever_received_it() {
    use gaa::demand::{Runner, RunnerIndex, ScaleFactor};
    let kv = Arc::new(MemoryKv::default());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let index = || {
        RunnerIndex::new([
            Runner::organization(RunnerKey::new("ci", "org"), "acme", ["linux"], 0, 10, ScaleFactor::Linear),
            Runner::new(RunnerKey::new("ci", "api-gpu"), "acme", "api", ["linux", "gpu"], 0, 10, ScaleFactor::Linear),
        ])
    };
    let start = |dir: &std::path::Path| {
        let config = WriterConfig {
            shared: Some(SharedSetup {
                kv: kv.clone(),
                config: SyncConfig { refresh_every: Duration::from_millis(50), ..SyncConfig::default() },
            }),
            ..WriterConfig::default()
        };
        StoreHandle::start(dir, index(), config, Arc::new(Metrics::new())).unwrap()
    };
    let (a, b) = (start(a_dir.path()), start(b_dir.path()));
    let job = |repo: &str, id: u64, status: JobStatus, labels: &[&str]| {
        JobEvent::new(id, 1, 1, RepoRef::new(id, repo), status, labels.iter().copied())
    };
    // A hears acme/api and acme/web; B hears acme/tools and another organisation's job.
    a.record("1", job("acme/api", 1, JobStatus::Queued, &["linux"])).await.unwrap();
    a.record("2", job("acme/api", 2, JobStatus::Queued, &["linux", "gpu"])).await.unwrap();
    a.record("3", job("acme/web", 3, JobStatus::InProgress, &["linux"])).await.unwrap();
    b.record("4", job("acme/tools", 4, JobStatus::Queued, &["linux"])).await.unwrap();
    b.record("5", job("acme/tools", 5, JobStatus::Queued, &["linux"])).await.unwrap();
    b.record("6", job("other/x", 6, JobStatus::Queued, &["linux"])).await.unwrap();
    // The organisation runner: 1, 3, 4, 5 (2 goes to the more specific repository runner).
    eventually("both replicas count the whole organisation", || {
        demand(&a, "org") == (4, false)
            && demand(&b, "org") == (4, false)
            && demand(&a, "api-gpu") == (1, false)
            && demand(&b, "api-gpu") == (1, false)
    })
    .await;
    // Finishes on either replica bring both down, repository by repository.
    b.record("7", job("acme/web", 3, JobStatus::Completed, &["linux"])).await.unwrap();
    a.record("8", job("acme/tools", 4, JobStatus::Completed, &["linux"])).await.unwrap();
    eventually("both replicas see the finishes", || demand(&a, "org") == (2, false) && demand(&b, "org") == (2, false))
        .await;
    // A replica that starts later learns the organisation's repositories from the directory.
    let c_dir = tempfile::tempdir().unwrap();
    let c = start(c_dir.path());
    eventually("a new replica counts repositories it never heard of", || demand(&c, "org") == (2, false)).await;
    for store in [a, b, c] {
        store.shutdown().await;
    }
}
