//! GitHub budget of the resync, in simulated time against the fake GitHub over real HTTP.
//!
//! N repositories, each with a runner; a share of them active during the hour with realistic
//! runs (1–4 runs of 1–6 jobs, queued → in progress → completed over minutes); webhooks
//! delivered for 99% of job events (the rest are lost). The resync runs with the default
//! windows. Reported: primary-limit credits and requests spent in the hour, and how long the
//! worst lost webhook left demand wrong. With `--outage-minutes M`, every delivery is also lost
//! for M minutes from `--outage-at` seconds into the hour (a webhook outage): reported is how
//! long after the outage ended its last loss was repaired.
//!
//!
//! With `--app-installations N`, a GitHub App reads the repositories instead of a token: they are
//! spread over N installations (each with GitHub's limit for its repositories: 5,000 an hour
//! plus 50 per repository beyond 20, at most 12,500), each installation looked up once per
//! repository and read with one token at a time. Reported as well: credits per installation,
//! the App's own requests, and the JWTs signed and installation tokens minted in the hour.
//!
//! `cargo bench --bench github_budget -- [--repos 1000] [--active 5] [--webhooks 99] [--seed 1]
//! [--outage-minutes 10] [--outage-at 900] [--app-installations 10]`

#[allow(dead_code)]
#[path = "../tests/common/app_keys.rs"]
mod app_keys;
#[allow(dead_code)]
#[path = "../tests/common/fake_github.rs"]
mod fake_github;
#[path = "../tests/common/rng.rs"]
mod rng;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use fake_github::{FakeGitHub, JobState};
use gaa::clock::Clock;
use gaa::demand::{JobEvent, JobStatus, RepoRef, Runner, RunnerIndex, RunnerKey, ScaleFactor};
use gaa::github::reconciler::{Reconciler, ReconcilerConfig, RepoTokens};
use gaa::github::{Credential, GitHubApp, GitHubClient, Token};
use gaa::metrics::Metrics;
use gaa::store::{StoreHandle, WriterConfig};
use rng::Rng;

const TOKEN: &str = "ghp_budget_bench";
const APP_ID: u64 = 1001;
const HOUR: i64 = 3600;
const STEP: i64 = 5;

#[derive(Clone, Copy)]
struct Event {
    at: i64,
    repo: usize,
    run: u64,
    job: u64,
    state: JobState,
}

fn status_of(state: JobState) -> JobStatus {
    match state {
        JobState::Queued => JobStatus::Queued,
        JobState::InProgress => JobStatus::InProgress,
        JobState::Completed => JobStatus::Completed,
        JobState::Waiting => JobStatus::Waiting,
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let repos = arg("--repos", 1000) as usize;
    let active_pct = arg("--active", 5);
    let webhook_pct = arg("--webhooks", 99);
    let seed = arg("--seed", 1);
    let outage = Outage { at: arg("--outage-at", 900) as i64, secs: arg("--outage-minutes", 0) as i64 * 60 };
    let installations = arg("--app-installations", 0) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    runtime.block_on(simulate(repos, active_pct, webhook_pct, seed, outage, installations));
}

/// Every delivery lost from `at` (seconds into the measured hour) for `secs`.
#[derive(Clone, Copy)]
struct Outage {
    at: i64,
    secs: i64,
}

impl Outage {
    fn covers(&self, t: i64) -> bool {
        self.secs > 0 && (self.at..self.at + self.secs).contains(&t)
    }
}

/// What the repositories are read with: one token, or a GitHub App over `installations`.
struct Reader {
    installations: usize,
}

impl Reader {
    /// Installation `i` (1-based ids) holds the repositories whose index is `i - 1` modulo N.
    fn installation_of(&self, repo: usize) -> u64 {
        (repo % self.installations) as u64 + 1
    }

    /// Primary-limit credits the repositories' reads spent so far (the App's own apart).
    fn credits(&self, github: &FakeGitHub) -> u32 {
        match self.installations {
            0 => github.credits_used(TOKEN),
            n => (1..=n as u64).map(|i| github.installation_credits_used(i)).sum(),
        }
    }

    fn per_installation(&self, github: &FakeGitHub) -> Vec<u32> {
        (1..=self.installations as u64).map(|i| github.installation_credits_used(i)).collect()
    }

    fn minted(&self, github: &FakeGitHub) -> (usize, u32) {
        let tokens = (1..=self.installations as u64).map(|i| github.installation_tokens_minted(i)).sum();
        (github.jwts_accepted(), tokens)
    }
}

async fn simulate(repos: usize, active_pct: u64, webhook_pct: u64, seed: u64, outage: Outage, installations: usize) {
    let github = FakeGitHub::start().await;
    let reader = Reader { installations };
    let start = 1_800_000_000;
    github.set_now(start);
    let names: Vec<String> = (0..repos).map(|i| format!("acme/repo-{i}")).collect();
    let credential: Credential = if installations == 0 {
        // One real token: 5,000 credits an hour.
        github.add_token(TOKEN, 5000);
        for name in &names {
            github.add_repo(name);
        }
        Token::new(TOKEN).into()
    } else {
        let keys = app_keys::app_key_pair("bench");
        github.add_app(APP_ID, "Iv23liBudgetBench", &keys.public);
        for installation in 1..=installations as u64 {
            let held: Vec<&str> =
                (0..repos).filter(|&i| reader.installation_of(i) == installation).map(|i| names[i].as_str()).collect();
            github.add_installation(APP_ID, installation, &held);
        }
        Credential::App(GitHubApp::new(&APP_ID.to_string(), keys.pkcs1.as_bytes(), None).expect("the App's key"))
    };
    let index = RunnerIndex::new(names.iter().enumerate().map(|(i, name)| {
        let repo = name.trim_start_matches("acme/");
        Runner::new(RunnerKey::new("bench", format!("runner-{i}")), "acme", repo, ["linux"], 0, 10, ScaleFactor::Linear)
    }));

    let now = Arc::new(AtomicI64::new(start));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::new());
    let writer = WriterConfig { clock: clock.clone(), ..WriterConfig::default() };
    let store = StoreHandle::start(dir.path(), index.clone(), writer, metrics.clone()).expect("store");
    let client = {
        let clock = clock.clone();
        GitHubClient::new(&github.url(), metrics.clone()).expect("client").with_clock(move || clock())
    };
    let config = ReconcilerConfig::default();
    let windows = config.windows;
    let mut reconciler = Reconciler::new(Arc::new(client), store.clone(), config, metrics);
    let tokens = RepoTokens(names.iter().map(|n| (n.clone(), vec![credential.clone()])).collect());
    reconciler.set_catalog(index, tokens, start);

    // The hour's activity.
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let active = (repos as u64 * active_pct / 100) as usize;
    let mut events = Vec::new();
    let mut next_job = 1u64;
    let mut next_run = 1u64;
    for _ in 0..active {
        let repo = rng.below(repos as u64) as usize;
        let begin = rng.range(0, HOUR - 1500);
        for r in 0..rng.range(1, 4) {
            let run = next_run;
            next_run += 1;
            let run_start = begin + r * rng.range(60, 600);
            for _ in 0..rng.range(1, 6) {
                let job = next_job;
                next_job += 1;
                let queued = run_start + rng.range(0, 30);
                let started = queued + rng.range(10, 120);
                let done = started + rng.range(60, 900);
                for (at, state) in
                    [(queued, JobState::Queued), (started, JobState::InProgress), (done, JobState::Completed)]
                {
                    events.push(Event { at, repo, run, job, state });
                }
            }
        }
    }
    events.sort_by_key(|e| (e.at, e.job, status_of(e.state)));
    let total_events = events.len();

    // Lost webhooks whose effect on demand is not yet repaired: job → (lost at, lost status).
    let mut truth: HashMap<u64, JobStatus> = HashMap::new();
    let mut broken: HashMap<u64, (i64, usize)> = HashMap::new();
    let mut lost = 0usize;
    let mut worst = 0i64;
    let mut repaired_total = 0i64;
    let mut repaired_count = 0usize;
    // Jobs with a delivery lost to the outage (those not yet repaired), and when the last of them
    // was repaired.
    let mut outage_jobs: HashSet<u64> = HashSet::new();
    let mut outage_pending: HashSet<u64> = HashSet::new();
    let mut outage_lost = 0usize;
    let mut outage_last_repair: Option<i64> = None;
    // Cold start with no activity until every repository had its first (paid) listing, which
    // gives the ETags that make later listings free; reported separately.
    let wall = std::time::Instant::now();
    // One token pays 2 credits per repository at most 4,000 an hour; an App also looks up every
    // repository's installation first, about 4,900 an hour on its own budget.
    let warm_default = match installations {
        0 => (repos as u64 * 2).div_ceil(4000) + 1,
        _ => (repos as u64).div_ceil(4900) + 1,
    };
    let warm_hours = arg("--warm-hours", warm_default) as i64;
    let mut t = -HOUR * warm_hours;
    while t < 0 {
        let at = start + HOUR * warm_hours + t;
        now.store(at, Ordering::SeqCst);
        github.set_now(at);
        reconciler.resync_due(at).await;
        t += STEP;
    }
    let cold_credits = reader.credits(&github);
    let cold_requests = github.requests().len();
    let cold_per_installation = reader.per_installation(&github);
    let cold_app = github.app_credits_used(APP_ID);
    let cold_minted = reader.minted(&github);
    github.clear_requests();
    let start = start + HOUR * warm_hours;
    let mut queue = events.into_iter().peekable();
    while t <= HOUR {
        let now_abs = start + t;
        now.store(now_abs, Ordering::SeqCst);
        github.set_now(now_abs);
        while queue.peek().is_some_and(|e| e.at <= t) {
            let Some(e) = queue.next() else { break };
            let repo = &names[e.repo];
            if e.state == JobState::Queued {
                github.add_job(repo, e.run, e.job, &["self-hosted", "linux"], e.state);
            } else {
                github.set_job_status(e.job, e.state);
            }
            truth.insert(e.job, status_of(e.state));
            let delivered = rng.below(100) < webhook_pct;
            if outage.covers(t) {
                outage_lost += 1;
                outage_jobs.insert(e.job);
                outage_pending.insert(e.job);
                lost += 1;
                broken.entry(e.job).or_insert((now_abs, e.repo));
            } else if delivered {
                let event = JobEvent::new(
                    e.job,
                    e.run,
                    1,
                    RepoRef::new(e.repo as u64 + 1, repo),
                    status_of(e.state),
                    ["self-hosted", "linux"],
                );
                store.record(&format!("d-{}-{}", e.job, status_of(e.state).as_str()), event).await.expect("journal");
            } else {
                lost += 1;
                broken.entry(e.job).or_insert((now_abs, e.repo));
            }
        }
        reconciler.resync_due(now_abs).await;
        // Is demand right again for jobs whose webhook was lost?
        let mut fixed = Vec::new();
        let mut open_by_repo: HashMap<usize, Vec<gaa::demand::Job>> = HashMap::new();
        for (job, (since, repo)) in &broken {
            if !open_by_repo.contains_key(repo) {
                open_by_repo.insert(*repo, store.open_jobs(&names[*repo]).await.expect("store"));
            }
            let open = &open_by_repo[repo];
            let ours = open.iter().find(|j| j.id == *job).map_or(JobStatus::Completed, |j| j.status);
            let theirs = truth.get(job).copied().unwrap_or(JobStatus::Completed);
            if ours.is_demand() == theirs.is_demand() && (ours == theirs || !theirs.is_demand()) {
                fixed.push((*job, now_abs - since));
            }
        }
        for (job, took) in fixed {
            broken.remove(&job);
            if outage_pending.remove(&job) {
                outage_last_repair = Some(t);
            }
            worst = worst.max(took);
            repaired_total += took;
            repaired_count += 1;
        }
        t += STEP;
    }
    let unrepaired = broken.len();
    let requests = github.requests().len();
    let credits = reader.credits(&github) - cold_credits;
    let not_modified = github.requests().iter().filter(|r| r.status == 304).count();
    println!(
        "repositories {repos}, active {active} ({active_pct}%), job events {total_events}, webhooks delivered {webhook_pct}% ({lost} lost)"
    );
    println!(
        "windows: busy {:?}, idle {:?}; simulated {} h in {:.1} s",
        windows.busy,
        windows.idle,
        warm_hours + 1,
        wall.elapsed().as_secs_f64()
    );
    println!(
        "cold start ({warm_hours} h, no activity): credits {cold_credits} ({:.0} /h), requests {cold_requests}",
        cold_credits as f64 / warm_hours as f64
    );
    println!(
        "measured hour: credits spent {} /h, requests {} /h ({} answered 304, {:.0}%)",
        credits,
        requests,
        not_modified,
        100.0 * not_modified as f64 / requests.max(1) as f64
    );
    println!(
        "lost webhooks repaired: {repaired_count}, worst drift {worst} s, mean {:.0} s, still wrong at the end {unrepaired}",
        repaired_total as f64 / repaired_count.max(1) as f64
    );
    if installations > 0 {
        let spent: Vec<u32> =
            reader.per_installation(&github).iter().zip(&cold_per_installation).map(|(now, cold)| now - cold).collect();
        let held = repos.div_ceil(installations);
        let (jwts, tokens) = reader.minted(&github);
        println!(
            "GitHub App over {installations} installations of about {held} repositories (limit {} /h each): credits per installation in the hour min {}, max {}, mean {:.0}; cold start {} per installation",
            fake_github::installation_limit(held),
            spent.iter().min().unwrap_or(&0),
            spent.iter().max().unwrap_or(&0),
            f64::from(spent.iter().sum::<u32>()) / installations as f64,
            cold_per_installation.iter().max().unwrap_or(&0),
        );
        println!(
            "the App's own requests: {} in the cold start (one installation lookup per repository, tokens), {} in the hour; minted in the hour: {} JWTs, {} installation tokens ({} JWTs and {} tokens in the cold start)",
            cold_app,
            github.app_credits_used(APP_ID) - cold_app,
            jwts - cold_minted.0,
            tokens - cold_minted.1,
            cold_minted.0,
            cold_minted.1,
        );
    }
    if outage.secs > 0 {
        let ended = outage.at + outage.secs;
        let last = outage_last_repair.map_or_else(|| "none".to_string(), |at| format!("{} s", (at - ended).max(0)));
        println!(
            "webhook outage {}-{} s: {outage_lost} deliveries lost ({} jobs); demand right again {last} after the outage ended (last repair); {} jobs still wrong at the end",
            outage.at,
            ended,
            outage_jobs.len(),
            outage_pending.len(),
        );
    }
    store.shutdown().await;
}
