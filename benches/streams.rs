//! KEDA stream fan-out: what one demand change costs while many `StreamIsActive` streams are open.
//!
//! Loads `--runners` runners (default 5,000) on a board, opens one activity stream per runner
//! (the `PushScaler` service called in process, each stream drained by its own task, as tonic
//! would), then publishes `--deliveries` demand changes (default 10,000) paced at `--rate` per
//! second (default 1,000). Each change flips one runner between active and idle, as a queued or
//! completed delivery does, so each must reach exactly one stream. Prints the process CPU time
//! (user + system, all threads, from /proc) per delivery, the pace achieved, and the messages
//! the streams received.
//!
//! `cargo bench --bench streams -- [--runners 5000] [--deliveries 10000] [--rate 1000]`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gaa::demand::{Counts, Runner, RunnerIndex, RunnerKey, ScaleFactor};
use gaa::metrics_api::external_scaler::PushScaler;
use gaa::metrics_api::external_scaler::proto::ScaledObjectRef;
use gaa::metrics_api::external_scaler::proto::external_scaler_server::ExternalScaler;
use gaa::store::Board;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time of this process so far (user + system, every thread).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name (state is 0).
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    let per_second = 100; // USER_HZ on Linux
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

fn main() {
    let runners = arg("--runners", 5000).max(1) as usize;
    let deliveries = arg("--deliveries", 10_000).max(1);
    let rate = arg("--rate", 1000).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    runtime.block_on(measure(runners, deliveries, rate));
}

async fn measure(runners: usize, deliveries: u64, rate: u64) {
    let keys: Vec<RunnerKey> =
        (0..runners).map(|i| RunnerKey::new(format!("team-{}", i % 500), format!("runner-{i}"))).collect();
    let index =
        RunnerIndex::new(keys.iter().enumerate().map(|(i, key)| {
            Runner::new(key.clone(), "acme", &format!("repo-{i}"), ["linux"], 0, 10, ScaleFactor::Linear)
        }));
    let board = Arc::new(Board::default());
    board.publish_all(&index, |_| None);
    let scaler = PushScaler::new(board.clone());

    let received = Arc::new(AtomicU64::new(0));
    for key in &keys {
        let object = ScaledObjectRef {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            scaler_metadata: HashMap::new(),
        };
        let stream = scaler.stream_is_active(tonic::Request::new(object)).await.expect("StreamIsActive").into_inner();
        let received = received.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(_)) = stream.next().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Every stream has sent its first answer.
    while received.load(Ordering::Relaxed) < runners as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opened = received.load(Ordering::Relaxed);
    println!("{runners} streams open ({} answers so far)", opened);

    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cpu_before = cpu_time();
    let started = Instant::now();
    for delivery in 0..deliveries {
        ticker.tick().await;
        let key = &keys[(delivery as usize) % runners];
        // Odd rounds over the runners take the demand away again: every change flips one runner.
        let queued = u64::from((delivery / runners as u64).is_multiple_of(2));
        board.publish([(key, Counts { queued, in_progress: 0 })]);
    }
    let elapsed = started.elapsed();
    // Let the last changes reach their streams.
    let expected = opened + deliveries;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    let messages = received.load(Ordering::Relaxed) - opened;
    println!(
        "{deliveries} deliveries at {:.0}/s (asked {rate}/s) in {:.2} s; {messages} stream messages",
        deliveries as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "CPU {:.2} s: {:.1} µs per delivery ({:.0}% of one core)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / deliveries as f64,
        100.0 * cpu.as_secs_f64() / started.elapsed().as_secs_f64()
    );
}
