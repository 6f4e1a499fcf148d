//! What the soak asserts once the faults have stopped, and its summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use gaa::demand::JobStatus;
use gaa::demand::repo_jobs::RepoJobs;
use serde_json::Value;

use crate::common::fake_github::{FakeGitHub, JobState, Recorded};
use crate::common::memcached::MemcachedServer;
use crate::fleet::{FaultLog, NAMES, Replicas, Sample};
use crate::model::{Counts, KINDS, Repo, zero_counts};
use crate::workload::{DeliveryStats, SharedLedger, lock, rank};

/// How long the checks may wait for the replicas to catch up with what was sent.
const CATCH_UP: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Report {
    pub ack_check: Option<Result<String, String>>,
    pub truth_after: Option<Duration>,
    pub truth_open_jobs: u64,
    pub mismatches: usize,
}

fn status_rank(status: JobStatus) -> u8 {
    match status {
        JobStatus::Waiting => 0,
        JobStatus::Queued => 1,
        JobStatus::InProgress => 2,
        JobStatus::Completed => 3,
    }
}

fn state_name(rank: u8) -> &'static str {
    ["waiting", "queued", "in_progress", "completed"][usize::from(rank.min(3))]
}

/// Every job in the shared values, by repository index: job id → status rank.
fn shared_jobs(repos: &[Repo], memcached: &MemcachedServer) -> Result<Vec<BTreeMap<u64, u8>>, String> {
    repos
        .iter()
        .map(|repo| {
            let key = format!("gaa:v1:repo:{}", repo.full_name().to_ascii_lowercase());
            match memcached.get(&key) {
                None => Ok(BTreeMap::new()),
                Some(bytes) => RepoJobs::decode(&bytes)
                    .map(|value| value.jobs.iter().map(|(id, job)| (*id, status_rank(job.status))).collect())
                    .map_err(|e| format!("the shared value of {} does not decode: {e:?}", repo.full_name())),
            }
        })
        .collect()
}

/// (queued, in progress) per runner as each replica's read API reports it, and whether any
/// runner is marked stale.
async fn read_api(client: &reqwest::Client, replicas: &Replicas, i: usize) -> Result<(Counts, bool), String> {
    let server = replicas.servers[i].as_ref().ok_or_else(|| format!("replica {} is not running", NAMES[i]))?;
    let url = format!("http://{}/api/v1/scaledactionrunners", server.addr);
    let body: Value = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut counts = Counts::new();
    let mut stale = false;
    for item in body["items"].as_array().into_iter().flatten() {
        let key = (item["namespace"].as_str().unwrap_or("").to_owned(), item["name"].as_str().unwrap_or("").to_owned());
        counts.insert(
            key,
            (item["queued"].as_u64().unwrap_or(u64::MAX), item["inProgress"].as_u64().unwrap_or(u64::MAX)),
        );
        stale |= item["stale"].as_bool() != Some(false);
    }
    Ok((counts, stale))
}

async fn ready(client: &reqwest::Client, replicas: &Replicas, i: usize) -> bool {
    let Some(server) = replicas.servers[i].as_ref() else { return false };
    let Ok(response) = client.get(format!("http://{}/readyz", server.addr)).send().await else { return false };
    let Ok(body) = response.json::<Value>().await else { return false };
    body["degraded"] == false && body["backlogJobs"] == 0
}

fn add(counts: &mut Counts, repo: &Repo, kind: usize, state: u8) {
    let Some(runner) = repo.runner_for(&KINDS[kind]) else { return };
    let entry = counts.entry(runner).or_default();
    match state {
        1 => entry.0 += 1,
        2 => entry.1 += 1,
        _ => {}
    }
}

fn differences(what: &str, got: &Counts, want: &Counts) -> Vec<String> {
    let mut out = Vec::new();
    for (runner, want_counts) in want {
        let got_counts = got.get(runner).copied().unwrap_or((u64::MAX, u64::MAX));
        if got_counts != *want_counts {
            out.push(format!(
                "{what} {}/{}: queued {} in progress {}, expected {} and {}",
                runner.0, runner.1, got_counts.0, got_counts.1, want_counts.0, want_counts.1
            ));
        }
    }
    for runner in got.keys().filter(|r| !want.contains_key(*r)) {
        out.push(format!("{what} serves an unknown runner {}/{}", runner.0, runner.1));
    }
    out
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client")
}

/// With GitHub answering 503 (no resync can help), once both replicas have merged their
/// backlog: every job's shared state is at least the furthest state any acknowledged delivery
/// reported, exactly that state when every change of the job was acknowledged, never beyond
/// what GitHub holds (a job GitHub has finished may be absent: forgotten after the retention);
/// and both replicas report the numbers those values give.
pub async fn acknowledged_are_reflected(
    repos: &[Repo],
    replicas: &Replicas,
    memcached: &MemcachedServer,
    ledger: &SharedLedger,
    github: &FakeGitHub,
) -> Result<String, String> {
    let client = client();
    let started = Instant::now();
    while !(ready(&client, replicas, 0).await && ready(&client, replicas, 1).await) {
        if started.elapsed() > CATCH_UP {
            return Err(format!("the replicas did not merge their backlogs into memcached within {CATCH_UP:?}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let truth: BTreeMap<u64, u8> = github.jobs().iter().map(|j| (j.id, rank(j.status))).collect();
    let mut problems;
    loop {
        problems = Vec::new();
        let shared = shared_jobs(repos, memcached)?;
        let mut from_shared = zero_counts(repos);
        let (mut checked, mut exact) = (0u64, 0u64);
        {
            let ledger = lock(ledger);
            for (repo_index, jobs) in shared.iter().enumerate() {
                for (id, state) in jobs {
                    match ledger.jobs.get(id) {
                        Some(record) if record.repo == repo_index => {
                            add(&mut from_shared, &repos[repo_index], record.kind, *state)
                        }
                        _ => problems
                            .push(format!("job {id} in {} was never created there", repos[repo_index].full_name())),
                    }
                    if truth.get(id).is_some_and(|t| state > t) {
                        problems.push(format!(
                            "job {id} is {} in memcached, beyond GitHub's {}",
                            state_name(*state),
                            state_name(truth[id])
                        ));
                    }
                }
            }
            for (id, record) in &ledger.jobs {
                let Some(acknowledged) = record.acknowledged() else { continue };
                checked += 1;
                let want = rank(acknowledged);
                let got = shared[record.repo].get(id).copied();
                let last = record.changes.last().map(|(s, _)| rank(*s)).unwrap_or(0);
                let exactly = record.fully_acknowledged();
                exact += u64::from(exactly);
                match got {
                    // Finished jobs are forgotten after the journal's retention; memcached,
                    // restarted empty since, only gets back what the journals still hold.
                    None if truth.get(id) == Some(&rank(JobState::Completed)) => {}
                    None => problems.push(format!(
                        "job {id} ({}): acknowledged {} but absent from memcached",
                        repos[record.repo].full_name(),
                        state_name(want)
                    )),
                    Some(got) if got < want => problems.push(format!(
                        "job {id} ({}): acknowledged {} but {} in memcached",
                        repos[record.repo].full_name(),
                        state_name(want),
                        state_name(got)
                    )),
                    Some(got) if exactly && got != last => problems.push(format!(
                        "job {id} ({}): every change acknowledged, last {}, but {} in memcached",
                        repos[record.repo].full_name(),
                        state_name(last),
                        state_name(got)
                    )),
                    Some(_) => {}
                }
            }
        }
        for (i, name) in NAMES.iter().enumerate() {
            match read_api(&client, replicas, i).await {
                Ok((counts, stale)) => {
                    problems.extend(differences(&format!("replica {name}"), &counts, &from_shared));
                    if stale {
                        problems.push(format!("replica {name} marks runners stale"));
                    }
                }
                Err(error) => problems.push(error),
            }
        }
        if problems.is_empty() {
            return Ok(format!(
                "{checked} jobs with acknowledged deliveries ({exact} with every change acknowledged) as acknowledged, \
                 both replicas in agreement, after {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        if started.elapsed() > CATCH_UP {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let shown = problems.len();
    problems.truncate(40);
    Err(format!("acknowledged deliveries not reflected ({shown} problems):\n  {}", problems.join("\n  ")))
}

/// With GitHub well again, within `settle`: both replicas report for every runner exactly the
/// queued and in-progress jobs GitHub holds, memcached holds every open job in GitHub's state,
/// and this stays so for 15 s more.
pub async fn demand_equals_github(
    repos: &[Repo],
    replicas: &Replicas,
    memcached: &MemcachedServer,
    github: &FakeGitHub,
    settle: Duration,
    report: &mut Report,
) -> Result<(), String> {
    let client = client();
    let started = Instant::now();
    let mut matched_at: Option<Instant> = None;
    let repo_of = |name: &str| repos.iter().position(|r| r.full_name() == name);
    loop {
        let jobs = github.jobs();
        let mut truth = zero_counts(repos);
        let mut problems = Vec::new();
        let shared = shared_jobs(repos, memcached)?;
        let mut open = 0;
        for job in &jobs {
            let Some(repo) = repo_of(&job.repo) else { continue };
            let kind = KINDS.iter().position(|k| k.labels.iter().map(|l| l.to_string()).eq(job.labels.iter().cloned()));
            let Some(kind) = kind else {
                problems.push(format!("job {} has labels no kind has: {:?}", job.id, job.labels));
                continue;
            };
            let want = rank(job.status);
            add(&mut truth, &repos[repo], kind, want);
            let got = shared[repo].get(&job.id).copied();
            if matches!(job.status, JobState::Queued | JobState::InProgress) {
                open += 1;
                if got != Some(want) {
                    problems.push(format!(
                        "job {} ({}): GitHub says {}, memcached {}",
                        job.id,
                        job.repo,
                        state_name(want),
                        got.map_or("nothing", state_name)
                    ));
                }
            } else if got.is_some_and(|g| g != want && (1..=2).contains(&g)) {
                problems.push(format!(
                    "job {} ({}): GitHub says {}, memcached still {}",
                    job.id,
                    job.repo,
                    state_name(want),
                    state_name(got.unwrap_or(0))
                ));
            }
        }
        for (i, name) in NAMES.iter().enumerate() {
            match read_api(&client, replicas, i).await {
                Ok((counts, stale)) => {
                    problems.extend(differences(&format!("replica {name}"), &counts, &truth));
                    if stale {
                        problems.push(format!("replica {name} marks runners stale"));
                    }
                }
                Err(error) => problems.push(error),
            }
        }
        report.mismatches = problems.len();
        report.truth_open_jobs = open;
        match (problems.is_empty(), matched_at) {
            (true, None) => {
                report.truth_after = Some(started.elapsed());
                matched_at = Some(Instant::now());
            }
            (true, Some(at)) if at.elapsed() >= Duration::from_secs(15) => return Ok(()),
            (true, Some(_)) => {}
            (false, Some(at)) => {
                let shown = problems.len();
                problems.truncate(40);
                return Err(format!(
                    "demand matched GitHub, then stopped matching {:.1} s later ({shown} problems):\n  {}",
                    at.elapsed().as_secs_f64(),
                    problems.join("\n  ")
                ));
            }
            (false, None) if started.elapsed() > settle => {
                let shown = problems.len();
                problems.truncate(40);
                return Err(format!(
                    "demand did not equal GitHub's within {settle:?} of the faults stopping ({shown} problems):\n  {}",
                    problems.join("\n  ")
                ));
            }
            (false, None) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One replica's memory over the run.
#[derive(Debug)]
pub struct Memory {
    pub replica: usize,
    pub start_kib: u64,
    pub peak_kib: u64,
    pub end_kib: u64,
    /// When `start_kib` was taken ([`steady_after`]), and whether the retained state was steady
    /// by then (not in a run too short for it).
    pub start_at: f64,
    pub steady: bool,
    /// Of `start_kib` and `end_kib`, anonymous memory (the rest is the binary's mapped code).
    pub start_anon_kib: u64,
    pub end_anon_kib: u64,
    pub incarnations: u32,
    /// The largest growth within one incarnation that lived long enough to judge.
    pub worst_incarnation: Option<(u32, u64, u64, f64)>,
    /// Growth of the longest-lived incarnation once steady, KiB a minute.
    pub longest_slope: Option<(u32, f64, f64)>,
    pub failure: Option<String>,
}

fn margin(start_kib: u64) -> u64 {
    (8 * 1024).max(start_kib / 5)
}

/// Least-squares growth of `samples` in KiB per minute.
fn slope_kib_per_minute(samples: &[&&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.at).sum::<f64>() / n;
    let mean_v = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let spread: f64 = samples.iter().map(|s| (s.at - mean_t).powi(2)).sum();
    if spread == 0.0 {
        return 0.0;
    }
    let covariance: f64 = samples.iter().map(|s| (s.at - mean_t) * (s.rss_kib as f64 - mean_v)).sum();
    covariance / spread * 60.0
}

/// When a replica's retained state has reached its steady size: finished jobs and their
/// delivery ids are kept for `retention` (and forgotten within a minute after it), so until then
/// each minute adds a minute's jobs to the state, to the journal sled caches and to what the
/// allocator keeps around them. A run too short to see it is judged from half-way through.
pub fn steady_after(workload: Duration, retention: Duration) -> f64 {
    let workload = workload.as_secs_f64();
    let steady = retention.as_secs_f64() + 120.0;
    (workload / 6.0).max(60.0).max(steady.min(workload / 2.0))
}

/// Flat memory, per replica: the resident size at the end (last 20 s) is at most the size once
/// the retained state is steady ([`steady_after`]: for a run of 24 minutes or more with the
/// soak's 10-minute retention, 12 minutes in) plus a margin (a fifth, at least 8 MiB); and
/// within any incarnation that lived two and a half minutes past its own 30 s warm-up (the
/// first incarnation: past that steady point), its last samples are within the same margin of
/// its first ones. Replicas are restarted, so both are needed: a leak shows within a process,
/// state that piles up shows after a restart too.
pub fn memory(samples: &[Sample], workload: Duration, retention: Duration) -> Vec<Memory> {
    let warm = steady_after(workload, retention);
    let last_at = samples.iter().map(|s| s.at).fold(0.0, f64::max);
    (0..2)
        .map(|replica| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.replica == replica).collect();
            let max_of = |f: &dyn Fn(&Sample) -> bool| mine.iter().filter(|s| f(s)).map(|s| s.rss_kib).max();
            let start = mine
                .iter()
                .filter(|s| s.at >= warm - 20.0 && s.at <= warm)
                .max_by_key(|s| s.rss_kib)
                .or_else(|| mine.iter().find(|s| s.at >= warm));
            let end = mine.iter().filter(|s| s.at >= last_at - 20.0).max_by_key(|s| s.rss_kib);
            let (start_kib, start_anon_kib) = start.map_or((0, 0), |s| (s.rss_kib, s.anon_kib));
            let (end_kib, end_anon_kib) = end.map_or((0, 0), |s| (s.rss_kib, s.anon_kib));
            let peak_kib = max_of(&|_| true).unwrap_or(0);
            let incarnations = mine.iter().map(|s| s.incarnation).max().unwrap_or(0);
            let mut failure = None;
            if mine.is_empty() {
                failure = Some(format!("no memory sample of replica {}", NAMES[replica]));
            } else if end_kib > start_kib + margin(start_kib) {
                failure = Some(format!(
                    "replica {}'s memory grew: {} MiB once its retained state was steady, {} MiB at the end (allowed {} MiB)",
                    NAMES[replica],
                    start_kib / 1024,
                    end_kib / 1024,
                    (start_kib + margin(start_kib)) / 1024
                ));
            }
            let mut worst_incarnation: Option<(u32, u64, u64, f64)> = None;
            let mut longest_slope: Option<(u32, f64, f64)> = None;
            for incarnation in 1..=incarnations {
                let its: Vec<&&Sample> = mine.iter().filter(|s| s.incarnation == incarnation).collect();
                let (Some(first), Some(last)) = (its.first(), its.last()) else { continue };
                // The first processes start with nothing retained: judged once it is steady. A
                // restarted one recovers what its journal retains as it starts.
                let from = if incarnation == 1 { first.at.max(warm - 30.0) } else { first.at };
                let warmed: Vec<&&Sample> = its.iter().copied().filter(|s| s.at >= from + 30.0).collect();
                let lived = last.at - first.at;
                if last.at - from >= 60.0 && longest_slope.is_none_or(|(_, l, _)| lived > l) {
                    longest_slope = Some((incarnation, lived, slope_kib_per_minute(&warmed)));
                }
                if last.at - from < 150.0 {
                    continue;
                }
                let early = its.iter().filter(|s| s.at >= from + 30.0 && s.at <= from + 50.0).map(|s| s.rss_kib).max();
                let late = its.iter().rev().take(5).map(|s| s.rss_kib).max();
                let (Some(early), Some(late)) = (early, late) else { continue };
                if worst_incarnation.is_none_or(|(_, e, l, _)| late.saturating_sub(early) > l.saturating_sub(e)) {
                    worst_incarnation = Some((incarnation, early, late, lived));
                }
                if late > early + margin(early) && failure.is_none() {
                    failure = Some(format!(
                        "replica {}'s memory grew within incarnation {incarnation} ({lived:.0} s): {} MiB once steady, {} MiB at its end",
                        NAMES[replica],
                        early / 1024,
                        late / 1024
                    ));
                }
            }
            Memory {
                replica,
                start_kib,
                peak_kib,
                end_kib,
                start_at: warm,
                steady: warm >= retention.as_secs_f64() + 120.0,
                start_anon_kib,
                end_anon_kib,
                incarnations,
                worst_incarnation,
                longest_slope,
                failure,
            }
        })
        .collect()
}

/// Panics and journal failures in any log a replica wrote.
pub fn log_problems(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return problems };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked") || l.contains("journal write failed")) {
            problems.push(format!("{}: {}", path.display(), line.chars().take(300).collect::<String>()));
        }
    }
    problems
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn print_summary(
    minutes: &f64,
    elapsed: Duration,
    stats: &DeliveryStats,
    faults: &FaultLog,
    requests: &[Recorded],
    report: &Report,
    memory: &[Memory],
) {
    let count = |f: &dyn Fn(u16) -> bool| requests.iter().filter(|r| f(r.status)).count();
    println!("\n== soak summary");
    println!("minutes of workload and faults: {minutes} (whole run {:.1} min)", elapsed.as_secs_f64() / 60.0);
    println!("runs {}, jobs {}, changes on GitHub {}", stats.runs, stats.jobs, stats.changes);
    println!(
        "deliveries: sent {} (of them {} duplicates, {} form-encoded), acknowledged {} ({} answered duplicate), \
         not acknowledged {}, never sent (dropped) {}",
        stats.sent,
        stats.duplicates_sent,
        stats.form_encoded,
        stats.acknowledged,
        stats.duplicate_answers,
        stats.failed,
        stats.dropped
    );
    let mut failures: Vec<_> = stats.failures.iter().collect();
    failures.sort_by(|a, b| b.1.cmp(a.1));
    for (reason, n) in failures.iter().take(6) {
        println!("  not acknowledged: {n} × {reason}");
    }
    println!(
        "fault cycle {:.0} s: memcached killed {} times (down {:.0} s in all), replica a killed {} times, b {} times \
         (down {:.0} s in all; {} while memcached was down)",
        faults.cycle.as_secs_f64(),
        faults.memcached_kills,
        faults.memcached_down.as_secs_f64(),
        faults.replica_kills[0],
        faults.replica_kills[1],
        faults.replica_down.as_secs_f64(),
        faults.kills_during_memcached_outage
    );
    for (what, from, lasted) in &faults.github_periods {
        println!("  GitHub {what} from {from:.0} s for {lasted:.0} s");
    }
    println!(
        "GitHub requests: {} (200: {}, 304: {}, 5xx: {}, 403/429: {})",
        requests.len(),
        count(&|s| s == 200),
        count(&|s| s == 304),
        count(&|s| s >= 500),
        count(&|s| s == 403 || s == 429)
    );
    match &report.ack_check {
        Some(Ok(text)) => println!("acknowledged deliveries: {text}"),
        Some(Err(_)) => println!("acknowledged deliveries: LOST (see below)"),
        None => println!("acknowledged deliveries: not checked"),
    }
    match report.truth_after {
        Some(after) => println!(
            "demand equal to GitHub's on both replicas {:.1} s after the faults stopped ({} open jobs); final mismatches: {}",
            after.as_secs_f64(),
            report.truth_open_jobs,
            report.mismatches
        ),
        None => println!("demand never equal to GitHub's; final mismatches: {}", report.mismatches),
    }
    for m in memory {
        let mut within = m.worst_incarnation.map_or(String::new(), |(n, early, late, lived)| {
            format!("; largest growth: incarnation {n} ({lived:.0} s) {} → {}", mib(early), mib(late))
        });
        if let Some((n, lived, slope)) = m.longest_slope {
            within.push_str(&format!("; incarnation {n} ({lived:.0} s) grew {:.2} MiB a minute", slope / 1024.0));
        }
        println!(
            "replica {} RSS: start (at {:.0} s{}) {}, peak {}, end {}; anonymous {} → {} ({} incarnations{within}){}",
            NAMES[m.replica],
            m.start_at,
            if m.steady { ", retained state steady" } else { ", retained state still filling" },
            mib(m.start_kib),
            mib(m.peak_kib),
            mib(m.end_kib),
            mib(m.start_anon_kib),
            mib(m.end_anon_kib),
            m.incarnations,
            if m.failure.is_some() { " GREW" } else { " flat" }
        );
    }
}
