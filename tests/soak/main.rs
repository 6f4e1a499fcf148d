//! The soak: two `serve` replicas (the binary this build made) sharing a real memcached and
//! resyncing from the fake GitHub, fed minutes of webhook deliveries (late, out of order,
//! duplicated, 5% never sent) while memcached and the replicas are killed and GitHub fails,
//! then checked: no acknowledged delivery lost, every runner's demand equal to what GitHub
//! holds, both replicas agreeing, and flat memory.
//!
//! `scripts/soak.sh --minutes N` runs it (`cargo test --release --test soak -- --minutes N`).
//! Flags: `--minutes N` (workload with faults; default 3), `--seed N`, `--work-dir DIR`
//! (journals, logs, `rss.tsv` and the `pids` file of the processes it owns), `--settle SECONDS`
//! (the longest wait for the truth once faults have stopped; default 300), `--keep-replicas`
//! (no replica is killed: one process's memory over the whole run), `--retention-minutes N`
//! (the replicas' journal retention; default 10, at least 2).

mod checks;
#[path = "../common/mod.rs"]
mod common;
mod fleet;
mod model;
mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_github::{FakeGitHub, Fault};
use common::memcached::MemcachedServer;
use common::rng::Rng;
use fleet::{Fleet, Replicas};
use workload::{Ledger, Workload};

const TOKEN: &str = "ghp_soakTokenForTheFakeGitHub0000000000";

struct Options {
    minutes: f64,
    seed: u64,
    work: Option<PathBuf>,
    settle: Duration,
    /// Leave the replicas running (memcached and GitHub still fail): to watch one process's
    /// memory over the whole run.
    keep_replicas: bool,
    /// How long the replicas remember finished jobs (`--journal-retention`); a shorter one
    /// brings their memory to its steady size sooner.
    retention: Duration,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        minutes: 3.0,
        seed: jiff::Timestamp::now().as_nanosecond() as u64,
        work: None,
        settle: Duration::from_secs(300),
        keep_replicas: false,
        retention: Duration::from_secs(600),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => options.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?,
            "--seed" => options.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--work-dir" => options.work = Some(PathBuf::from(value()?)),
            "--settle" => options.settle = Duration::from_secs(value()?.parse().map_err(|e| format!("--settle: {e}"))?),
            "--keep-replicas" => options.keep_replicas = true,
            "--retention-minutes" => {
                let minutes: u64 = value()?.parse().map_err(|e| format!("--retention-minutes: {e}"))?;
                options.retention = Duration::from_secs(minutes * 60);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (--minutes N, --seed N, --work-dir DIR, --settle SECONDS, --keep-replicas, --retention-minutes N)"
                ));
            }
        }
    }
    // (NaN is refused too.)
    if options.minutes.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err("--minutes must be above 0".into());
    }
    // Jobs live a minute at most and deliveries come at most 20 s late: a shorter retention
    // would ignore late deliveries of jobs it never saw.
    if options.retention < Duration::from_secs(120) {
        return Err("--retention-minutes must be at least 2".into());
    }
    Ok(options)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("soak: {error}");
            std::process::exit(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let failures = runtime.block_on(soak(options));
    if failures.is_empty() {
        println!("soak: 1 passed, 0 failed");
    } else {
        println!("\nFAILED:");
        for failure in &failures {
            println!("- {failure}");
        }
        println!("soak: 0 passed, 1 failed");
        std::process::exit(1);
    }
}

async fn soak(options: Options) -> Vec<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kept;
    let work = match &options.work {
        Some(dir) => dir.clone(),
        None => {
            kept = tempfile::tempdir().expect("a work directory");
            kept.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work).expect("the work directory");
    let workload_for = Duration::from_secs_f64(options.minutes * 60.0);
    println!(
        "soak: {} min of workload and faults, seed {}, work directory {}",
        options.minutes,
        options.seed,
        work.display()
    );

    let repos = Arc::new(model::repos());
    let manifests = work.join("manifests");
    std::fs::create_dir_all(&manifests).expect("the manifests directory");
    std::fs::write(manifests.join("runners.yaml"), model::manifests(&repos)).expect("the manifests");

    let github = Arc::new(FakeGitHub::start().await);
    github.add_token(TOKEN, 1_000_000);
    let mut memcached = MemcachedServer::start();
    let token_file = work.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("the token file");
    // Short windows so the resync repairs within the soak: a busy repository every 3 s, an idle
    // one every 5 s (its settle time for jobs it cannot see is fixed at a minute). Finished jobs
    // are forgotten after the retention (10 minutes), so forgetting runs during the soak and
    // memory levels off once it has (jobs live at most a minute, deliveries are at most 20 s late).
    let args: Vec<String> = [
        "--journal-retention",
        &format!("{}m", options.retention.as_secs() / 60),
        "--store",
        &format!("memcached://{}", memcached.addr()),
        "--store-refresh-interval",
        "500ms",
        "--checkpoint-interval",
        "5s",
        "--github-api-url",
        &github.url(),
        "--github-token-file",
        token_file.to_str().expect("a UTF-8 path"),
        "--cache-window",
        "3s",
        "--cache-window-when-empty",
        "5s",
    ]
    .map(str::to_owned)
    .to_vec();
    let fleet = Arc::new(Fleet::default());
    // The repositories exist on GitHub before any replica asks about them.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let workload = Workload::new(github.clone(), repos.clone(), fleet.clone(), ledger.clone(), options.seed);
    let mut replicas = Replicas::new(&work, manifests, args, fleet.clone());
    replicas.set_memcached_pid(memcached.pid());
    replicas.start(0).await;
    replicas.start(1).await;

    let start = Instant::now();
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let sampler =
        tokio::spawn(fleet::sample_memory(fleet.clone(), start, Duration::from_secs(2), stop_sampling.clone()));
    let load = tokio::spawn(workload.run(start + workload_for));

    let mut rng = Rng(options.seed.rotate_left(17) | 1);
    let (cycle, mut actions) = fleet::plan(workload_for, &mut rng);
    if options.keep_replicas {
        actions.retain(|(_, action)| !matches!(action, fleet::Action::KillReplica(_) | fleet::Action::StartReplica(_)));
    }
    let faults = fleet::run_faults(start, actions, cycle, &mut replicas, &mut memcached, &github).await;
    tokio::time::sleep_until((start + workload_for).into()).await;
    println!("soak: workload over at {:.0} s; sending what is still in flight", start.elapsed().as_secs_f64());
    let stats = load.await.expect("the workload ran");
    replicas.check_alive();

    let mut failures = Vec::new();
    let mut report = checks::Report::default();
    // Acknowledged deliveries, with GitHub down so the resync cannot paper over a loss.
    github.set_standing_fault(Some(Fault::ServerError { status: 503 }));
    let ack_check = checks::acknowledged_are_reflected(&repos, &replicas, &memcached, &ledger, &github).await;
    report.ack_check = Some(ack_check.clone());
    failures.extend(ack_check.err());
    // Then GitHub comes back and the resync repairs what was never delivered.
    github.set_standing_fault(None);
    let truth = checks::demand_equals_github(&repos, &replicas, &memcached, &github, options.settle, &mut report).await;
    failures.extend(truth.err());
    replicas.check_alive();

    stop_sampling.cancel();
    let samples = sampler.await.expect("the sampler ran");
    let memory = checks::memory(&samples, workload_for, options.retention);
    let table: String = samples
        .iter()
        .map(|s| {
            let replica = fleet::NAMES[s.replica];
            format!("{:.0}\t{replica}\t{}\t{}\t{}\t{}\n", s.at, s.incarnation, s.rss_kib, s.anon_kib, s.file_kib)
        })
        .collect();
    let header = "seconds\treplica\tincarnation\tvm_rss_kib\trss_anon_kib\trss_file_kib";
    let _ = std::fs::write(work.join("rss.tsv"), format!("{header}\n{table}"));
    failures.extend(memory.iter().filter_map(|m| m.failure.clone()));
    failures.extend(fleet.crashes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned());
    for i in 0..2 {
        failures.extend(checks::log_problems(replicas.dir(i)));
    }

    let requests = github.requests();
    checks::print_summary(&options.minutes, start.elapsed(), &stats, &faults, &requests, &report, &memory);
    failures
}
