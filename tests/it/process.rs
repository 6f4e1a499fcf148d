//! The real binary: durability across `kill -9`, graceful shutdown on SIGTERM (in the middle of
//! a slow resync too), and manifest problems reported with file and reason while the valid
//! runners load.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::server::{Server, join_all, manifests_dir};
use serde_json::Value;

/// SIGKILL (no shutdown hook runs), then a new server on the same data directory.
async fn kill_9_and_restart(mut server: Server, data: &Path, manifests: &Path) -> Server {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    Server::start(data, manifests).await
}

async fn assert_counts(server: &Server, queued: u64, in_progress: u64) {
    let view = server.runner("ci", "api-linux").await;
    assert_eq!(view["queued"], queued, "{view}");
    assert_eq!(view["inProgress"], in_progress, "{view}");
    assert_eq!(view["demand"], queued + in_progress, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_delivery_survives_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let data = root.path().join("data");
    let server = Server::start(&data, &manifests).await;
    let client = common::server::http();

    // 150 jobs queued, 50 of them started, 20 of those finished; sent concurrently so the
    // writer commits them in groups.
    let mut plan: Vec<(String, u64, &str)> = Vec::new();
    plan.extend((1..=150).map(|j| (format!("q-{j}"), j, "queued")));
    plan.extend((1..=50).map(|j| (format!("i-{j}"), j, "in_progress")));
    plan.extend((1..=20).map(|j| (format!("c-{j}"), j, "completed")));
    let mut acknowledged = 0;
    for chunk in plan.chunks(32) {
        let sends = chunk.iter().map(|(d, j, a)| server.deliver(&client, d, "acme/api", *j, a));
        for status in join_all(sends).await {
            assert!((200..300).contains(&status), "status {status}");
            acknowledged += 1;
        }
    }
    assert_eq!(acknowledged, 220);
    // SIGKILL right after the last 2xx.
    let server = kill_9_and_restart(server, &data, &manifests).await;
    assert_counts(&server, 100, 30).await;
    // Delivery ids survived too: a redelivery is still a duplicate.
    assert_eq!(server.deliver(&client, "q-1", "acme/api", 1, "queued").await, 200);
    assert_eq!(server.runner("ci", "api-linux").await["demand"], 130);
}

/// Checkpoints are written between group commits, so a crash can land in the middle of one:
/// job states newer than the checkpoint's seal, covered batches half dropped. Nothing
/// acknowledged may be lost or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_delivery_survives_kill_9_while_checkpoints_are_written() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let data = root.path().join("data");
    let server = Server::start_with(&data, &manifests, &["--checkpoint-interval", "100ms"]).await;
    let client = common::server::http();

    let checkpoint_at = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("gaa_journal_last_checkpoint_timestamp_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut waves: Vec<Vec<(String, u64, &str)>> = vec![
        (1..=600).map(|j| (format!("q-{j}"), j, "queued")).collect(),
        (1..=300).map(|j| (format!("i-{j}"), j, "in_progress")).collect(),
        (1..=150).map(|j| (format!("c-{j}"), j, "completed")).collect(),
    ];
    // Redeliveries of the first wave, mixed into the last: still duplicates after the crash.
    waves[2].extend((1..=50).map(|j| (format!("q-{j}"), j, "queued")));
    for (n, wave) in waves.iter().enumerate() {
        for chunk in wave.chunks(32) {
            let sends = chunk.iter().map(|(d, j, a)| server.deliver(&client, d, "acme/api", *j, a));
            for status in join_all(sends).await {
                assert!((200..300).contains(&status), "status {status}");
            }
        }
        if n == 0 {
            // A checkpoint has been sealed before the next waves, so they run against one.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while checkpoint_at(&server.metrics().await) == 0.0 {
                assert!(std::time::Instant::now() < deadline, "no checkpoint was sealed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let server = kill_9_and_restart(server, &data, &manifests).await;
    assert_counts(&server, 300, 150).await;
    assert_eq!(server.deliver(&client, "i-1", "acme/api", 1, "in_progress").await, 200, "still a duplicate");
    assert_eq!(server.runner("ci", "api-linux").await["demand"], 450);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_cleanly_and_state_is_rebuilt_on_start() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let data = root.path().join("data");
    let mut server = Server::start(&data, &manifests).await;
    let client = common::server::http();
    for job in 1..=5 {
        assert_eq!(server.deliver(&client, &format!("w-{job}"), "acme/web", job, "queued").await, 202);
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
    assert!(server.log().contains("journal flushed and closed"), "{}", server.log());
    drop(server);

    let server = Server::start(&data, &manifests).await;
    let view = server.runner("frontend", "web").await;
    assert_eq!(view["demand"], 5, "{view}");
    assert_eq!(view["desiredRunners"], 3, "clamped to maxRunners: {view}");
}

#[test]
fn a_listener_that_cannot_bind_fails_start_up_with_the_reason_and_the_journal_is_still_closed() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(common::server::BIN)
        .args(["serve", "--listen", &taken.local_addr().unwrap().to_string(), "--data-dir"])
        .arg(root.path().join("data"))
        .arg("--manifests")
        .arg(&manifests)
        .env("GAA_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains(&taken.local_addr().unwrap().to_string()), "the error names the address: {log}");
    assert!(log.contains("journal flushed and closed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifest_documents_are_reported_with_file_and_reason_and_the_rest_load() {
    let root = tempfile::tempdir().unwrap();
    let broken = "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {name: no-owner, namespace: ci}\nspec: {repo: api, maxRunners: 1}\n---\napiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {name: bad-factor, namespace: ci}\nspec: {owner: acme, repo: api, maxRunners: 1, scaleFactor: fast}\n";
    let manifests = manifests_dir(root.path(), broken);
    let server = Server::start(&root.path().join("data"), &manifests).await;
    let log = server.log();
    assert!(log.contains("broken.yml (document 1)") && log.contains("missing field `owner`"), "{log}");
    assert!(log.contains("broken.yml (document 2)") && log.contains("scaleFactor \"fast\""), "{log}");
    let list: Value = common::server::get(format!("http://{}/api/v1/scaledactionrunners", server.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_slow_resync_checkpoints_within_five_seconds() {
    use common::fake_github::{FakeGitHub, Fault};
    use std::time::{Duration, Instant};
    const TOKEN: &str = "ghp_test_token_for_the_fake";
    let github = FakeGitHub::start().await;
    github.add_token(TOKEN, 5000);
    github.add_repo("acme/api");
    github.add_repo("acme/web");
    // Every answer takes a minute, longer than the grace: the resync is mid-request at SIGTERM.
    for _ in 0..32 {
        github.inject(Fault::Slow { delay: Duration::from_secs(60) });
    }
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let data = root.path().join("data");
    let args = common::server::resync_args(root.path(), &github.url(), TOKEN, "1s", "1s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start_with(&data, &manifests, &args).await;
    let client = common::server::http();
    for job in 1..=5 {
        assert_eq!(server.deliver(&client, &format!("w-{job}"), "acme/web", job, "queued").await, 202);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while github.admitted() == 0 {
        assert!(Instant::now() < deadline, "the resync never asked GitHub:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
    assert!(server.log().contains("resync stopped in the middle of a pass"), "{}", server.log());
    drop(server);
    // The final checkpoint covers every delivery: nothing is left to replay.
    let mut journal = gaa::store::Journal::open(&data.join("journal")).unwrap();
    let recovered = journal.recover().unwrap();
    assert!(recovered.tail.is_empty(), "{} deliveries after the checkpoint", recovered.tail.len());
    assert_eq!(recovered.jobs.len(), 5);
}

/// The server sets mimalloc's purge delay for itself (mimalloc reads it from the environment
/// only), in the same process, unless the caller chose one.
#[tokio::test]
async fn serve_runs_with_a_short_allocator_purge_delay_unless_one_is_given() {
    let environment = |server: &Server| {
        let bytes = std::fs::read(format!("/proc/{}/environ", server.child.id())).unwrap();
        bytes.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect::<Vec<_>>()
    };
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let server = Server::start(&root.path().join("data"), &manifests).await;
    // As this test's own caller set it, if it did.
    let expected = std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "10".into());
    assert!(environment(&server).contains(&format!("MIMALLOC_PURGE_DELAY={expected}")), "{}", server.log());
    drop(server);
    let env = [("GAA_UNAUTHENTICATED_READS", "true"), ("MIMALLOC_PURGE_DELAY", "250")];
    let server = Server::launch(&root.path().join("data2"), &manifests, &[], &env, None).await;
    let set: Vec<String> = environment(&server).into_iter().filter(|v| v.starts_with("MIMALLOC_")).collect();
    assert_eq!(set, ["MIMALLOC_PURGE_DELAY=250"]);
}
