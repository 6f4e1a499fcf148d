//! The resync against a fake GitHub over real HTTP, in simulated time: drift that webhooks
//! missed is repaired within the windows, pagination is followed, unchanged repositories cost
//! nothing, and rate limits pause a token without losing demand.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_github::{FakeGitHub, Fault, JobState};
use common::resync::ResyncWorld;
use common::*;
use gaa::demand::{JobEvent, JobStatus, RepoRef, RunnerKey};
use gaa::github::Token;
use gaa::github::reconciler::{Pass, ReconcilerConfig, RepoTokens};
use gaa::github::resync::Windows;
use gaa::store::StoreHandle;

const TOKEN: &str = "ghp_test_token_for_the_fake";
const WINDOWS: Windows = Windows { busy: Duration::from_secs(60), idle: Duration::from_secs(600) };
const SETTLE: Duration = Duration::from_secs(30);
const LABELS: [&str; 2] = ["self-hosted", "linux"];

/// The catalog's runners, resynced in simulated time.
struct World(ResyncWorld);

impl std::ops::Deref for World {
    type Target = ResyncWorld;
    fn deref(&self) -> &ResyncWorld {
        &self.0
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut ResyncWorld {
        &mut self.0
    }
}

impl World {
    async fn new() -> Self {
        Self::serving(&["acme/api"]).await
    }

    /// The catalog's runners, with `TOKEN` for each of `repos`.
    async fn serving(repos: &[&str]) -> Self {
        let github = FakeGitHub::start().await;
        github.add_token(TOKEN, 5000);
        for repo in repos {
            github.add_repo(repo);
        }
        let config = ReconcilerConfig { windows: WINDOWS, settle: SETTLE, ..ReconcilerConfig::default() };
        let tokens = RepoTokens(repos.iter().map(|repo| (repo.to_string(), vec![Token::new(TOKEN).into()])).collect());
        Self(ResyncWorld::start(github, 1_800_000_000, catalog(None).runners, tokens, config))
    }

    /// Ticks until `check` holds; returns the simulated seconds it took.
    async fn until(&mut self, limit: i64, mut check: impl FnMut(&StoreHandle) -> bool) -> i64 {
        let started = self.now();
        while !check(&self.store) {
            assert!(self.now() - started <= limit, "not within {limit} simulated seconds");
            self.tick(10).await;
        }
        self.now() - started
    }
}

fn webhook(job: u64, status: JobStatus) -> JobEvent {
    webhook_of_run(900, job, status)
}

fn webhook_of_run(run: u64, job: u64, status: JobStatus) -> JobEvent {
    JobEvent::new(job, run, 1, RepoRef::new(1001, "acme/api"), status, LABELS)
}

/// Requests for single jobs, and for run `run` itself (not its jobs), since the last clear.
fn lookups(github: &FakeGitHub, run: u64) -> (usize, usize) {
    let requests = github.requests();
    let jobs = requests.iter().filter(|r| r.path.contains("/actions/jobs/")).count();
    let run = requests.iter().filter(|r| r.path == format!("/repos/acme/api/actions/runs/{run}")).count();
    (jobs, run)
}

#[tokio::test]
async fn a_job_no_webhook_announced_appears_within_the_idle_window() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    let took =
        world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 1).await;
    assert!(took <= 600, "{took}");
    let view = world.store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap();
    assert_eq!(view.source, "webhooks+github");
    assert_eq!(view.last_drift, Some(1));
    assert!(view.last_resync_time.is_some());
}

#[tokio::test]
async fn a_completed_webhook_that_never_arrived_is_corrected() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    world.store.record("q1", webhook(1, JobStatus::Queued)).await.unwrap();
    assert_eq!(world.demand("api-linux"), 1);
    // Let a resync see it queued (busy), then GitHub finishes it and the webhook is lost.
    world
        .until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().last_resync_time.is_some())
        .await;
    world.github.set_job_status(1, JobState::Completed);
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 0).await;
}

#[tokio::test]
async fn a_run_of_250_jobs_is_counted_fully_across_pages() {
    let mut world = World::new().await;
    for job in 1..=250 {
        world.github.add_job("acme/api", 900, job, &["self-hosted", "linux"], JobState::Queued);
    }
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 250).await;
    let pages = world.github.requests().iter().filter(|r| r.path.ends_with("/runs/900/jobs")).count();
    assert_eq!(pages, 3, "three pages of 100");
}

#[tokio::test]
async fn a_second_resync_of_an_unchanged_repository_is_conditional_and_free() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    world.store.record("q1", webhook(1, JobStatus::Queued)).await.unwrap();
    world
        .until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().last_resync_time.is_some())
        .await;
    let spent = world.github.credits_used(TOKEN);
    assert!(spent >= 2, "the first resync paid for its lists: {spent}");
    world.github.clear_requests();
    let mut passes = Pass::default();
    while passes.resynced == 0 {
        passes = world.tick(10).await;
    }
    let requests = world.github.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r.if_none_match.is_some() && r.status == 304), "{requests:?}");
    assert_eq!(world.github.credits_used(TOKEN), spent, "a 304 costs nothing");
    assert_eq!(passes.credits, 0);
}

#[tokio::test]
async fn the_pages_of_finished_runs_are_not_kept() {
    let mut world = World::new().await;
    let resynced =
        |world: &World| world.store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().last_resync_time;
    // Run 900's completion arrives; run 901's is lost, so a lookup asks GitHub for the run.
    for (run, job) in [(900, 1), (901, 2)] {
        world.github.add_job("acme/api", run, job, &["self-hosted", "linux"], JobState::Queued);
        world.store.record(&format!("q{job}"), webhook_of_run(run, job, JobStatus::Queued)).await.unwrap();
    }
    while resynced(&world).is_none() {
        world.tick(10).await;
    }
    assert_eq!(world.reconciler.footprint().cached_pages, 4, "two run lists and each open run's jobs");
    world.github.set_job_status(1, JobState::Completed);
    world.store.record("c1", webhook_of_run(900, 1, JobStatus::Completed)).await.unwrap();
    world.github.set_job_status(2, JobState::Completed);
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 0).await;
    let pages = world.reconciler.footprint().cached_pages;
    assert!(pages <= 3, "the finished runs' job lists went as they left the open lists: {pages} pages");
    // An hour of passes later only the run lists are kept, not the lookup of run 901.
    for _ in 0..360 {
        world.tick(10).await;
    }
    assert_eq!(world.reconciler.footprint().cached_pages, 2);
}

#[tokio::test]
async fn a_secondary_limit_pauses_the_token_for_retry_after_and_keeps_the_last_demand() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 1).await;
    world.github.set_job_status(1, JobState::Completed);
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 120, status: 403 });
    // The next resync hits the limit: nothing changes, and nothing is asked for 120 s.
    let mut pass = Pass::default();
    while pass.deferred == 0 {
        pass = world.tick(10).await;
    }
    let limited_at = world.now();
    assert_eq!(world.demand("api-linux"), 1, "last good demand kept");
    world.github.clear_requests();
    while world.now() < limited_at + 110 {
        world.tick(10).await;
    }
    assert!(world.github.requests().is_empty(), "the token stayed paused: {:?}", world.github.requests());
    world.until(200, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_repairs_demand_from_github_with_a_token_file() {
    use common::server::{Server, manifests_dir};
    let github = FakeGitHub::start().await;
    github.add_token(TOKEN, 5000);
    github.add_repo("acme/api");
    github.add_repo("acme/web");
    github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let args = common::server::resync_args(root.path(), &github.url(), TOKEN, "1s", "2s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(&root.path().join("data"), &manifests, &args).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = server.runner("ci", "api-linux").await;
        // The correction lands in the store a moment before the resync record does.
        if view["demand"] == 1 && !view["lastDrift"].is_null() {
            assert_eq!(view["source"], "webhooks+github", "{view}");
            assert_eq!(view["lastDrift"], 1, "{view}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never repaired: {view}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!server.log().contains(TOKEN), "the token must never be logged");
    assert!(github.requests().iter().all(|r| r.token.as_deref() == Some(TOKEN)));
}

#[tokio::test]
async fn only_the_replica_holding_the_lease_resyncs() {
    let world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    let stop = tokio_util::sync::CancellationToken::new();
    // Far enough ahead that every repository is due.
    world.now.fetch_add(3600, Ordering::SeqCst);
    world.github.set_now(world.now());
    let clock = world.clock();
    let ResyncWorld { github, store, reconciler, dir: _dir, .. } = world.0;
    let running = tokio::spawn(reconciler.run(clock, leading, stop.clone(), None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(github.requests().is_empty(), "a follower must not call GitHub");
    leading_tx.send_replace(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand != 1 {
        assert!(std::time::Instant::now() < deadline, "the leader never resynced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn lost_completions_are_repaired_by_run_within_the_settle_time_and_two_passes() {
    let mut world = World::new().await;
    // 255 jobs in two runs, started, and webhooks told us so. The deliveries of run 901's jobs
    // named no run (as a job only another replica journaled comes from the shared value): GitHub
    // showed their run while they were open.
    for job in 1..=255 {
        let run = if job <= 200 { 900 } else { 901 };
        world.github.add_job("acme/api", run, job, &LABELS, JobState::InProgress);
        let named = if job > 200 { 0 } else { run };
        world.store.record(&format!("i{job}"), webhook_of_run(named, job, JobStatus::InProgress)).await.unwrap();
    }
    world
        .until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().last_resync_time.is_some())
        .await;
    // And a job GitHub never listed open, whose delivery named no run: asked about on its own.
    world.github.add_job("acme/api", 902, 256, &LABELS, JobState::Completed);
    world.store.record("i256", webhook_of_run(0, 256, JobStatus::InProgress)).await.unwrap();
    assert_eq!(world.demand("api-linux"), 256);
    // Both runs finish on GitHub and every completion webhook is lost.
    for job in 1..=255 {
        world.github.set_job_status(job, JobState::Completed);
    }
    let lost_at = world.now();
    world.github.clear_requests();
    let mut passes_after_settle = 0;
    while world.demand("api-linux") != 0 {
        assert!(passes_after_settle < 2, "not repaired within the settle time and two passes");
        let pass = world.tick(10).await;
        if pass.resynced > 0 && world.now() >= lost_at + SETTLE.as_secs() as i64 {
            passes_after_settle += 1;
        }
    }
    let (job_lookups, run_900) = lookups(&world.github, 900);
    let (_, run_901) = lookups(&world.github, 901);
    assert_eq!(job_lookups, 1, "only the job without a run is asked about on its own");
    assert_eq!((run_900, run_901), (1, 1), "one request per run");
}

#[tokio::test]
async fn the_jobs_of_a_deleted_run_are_completed_with_one_request() {
    let mut world = World::new().await;
    for job in 1..=3 {
        world.github.add_job("acme/api", 900, job, &LABELS, JobState::Queued);
        world.store.record(&format!("q{job}"), webhook(job, JobStatus::Queued)).await.unwrap();
    }
    world
        .until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().last_resync_time.is_some())
        .await;
    world.github.remove_run("acme/api", 900);
    world.github.clear_requests();
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 0).await;
    assert_eq!(lookups(&world.github, 900), (0, 1));
}

#[tokio::test]
async fn a_job_in_no_attempt_of_a_run_still_open_is_over() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &LABELS, JobState::InProgress);
    // Job 2 was of run 900 by its webhooks, but GitHub lists it under none of the run's attempts.
    for job in 1..=2 {
        world.store.record(&format!("i{job}"), webhook(job, JobStatus::InProgress)).await.unwrap();
    }
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 1).await;
    let requests = world.github.requests();
    let every_attempt = requests
        .iter()
        .filter(|r| r.path.ends_with("/runs/900/jobs") && r.query.as_deref().is_some_and(|q| q.contains("filter=all")));
    assert_eq!(every_attempt.count(), 1, "the run's jobs of every attempt, once: {requests:?}");
    assert_eq!(lookups(&world.github, 900), (0, 0), "no single job, and the open run's status is known");
}

/// Ticks until the fake has answered `count` rate-limit 403s in all; returns when the last came.
async fn until_limited(world: &mut World, count: usize) -> i64 {
    let limit = world.now() + 7200;
    while world.github.requests().iter().filter(|r| r.status == 403).count() < count {
        assert!(world.now() < limit, "the limit was never hit");
        world.tick(10).await;
    }
    world.now()
}

#[tokio::test]
async fn a_repeated_secondary_limit_never_pauses_a_token_beyond_fifteen_minutes() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &LABELS, JobState::Queued);
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 1).await;
    world.github.set_job_status(1, JobState::Completed);
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 900, status: 403 });
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 900, status: 403 });
    until_limited(&mut world, 2).await;
    // Doubling asks for 30 minutes; the cap is 15.
    world.until(900 + 20, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 0).await;
}

#[tokio::test]
async fn a_repeated_secondary_limit_pauses_the_token_for_at_least_a_minute() {
    let mut world = World::new().await;
    world.github.add_job("acme/api", 900, 1, &LABELS, JobState::Queued);
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "api-linux")).unwrap().demand == 1).await;
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 1, status: 403 });
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 1, status: 403 });
    let second = until_limited(&mut world, 2).await;
    world.github.clear_requests();
    while world.now() < second + 50 {
        world.tick(10).await;
    }
    assert!(world.github.requests().is_empty(), "a repeat waits a minute: {:?}", world.github.requests());
}

#[tokio::test]
async fn secondary_limits_answered_together_in_one_pass_pause_the_token_once_for_retry_after() {
    let mut world = World::serving(&["acme/api", "acme/web"]).await;
    // Both repositories fall due in the same pass and are resynced at once; GitHub answers both
    // with one secondary limit. That is one limit, not a repeat: the token waits Retry-After.
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 30, status: 403 });
    world.github.inject(Fault::SecondaryLimit { retry_after_secs: 30, status: 403 });
    let pass = world.tick(700).await;
    assert_eq!((pass.deferred, pass.resynced), (2, 0), "{pass:?}");
    let limited_at = world.now();
    world.github.clear_requests();
    while world.now() < limited_at + 40 {
        world.tick(5).await;
    }
    let requests = world.github.requests();
    assert!(
        requests.iter().any(|r| r.status == 200),
        "the token is used again once Retry-After has passed, not after a doubled pause: {requests:?}"
    );
}

#[tokio::test]
async fn the_reconciler_forgets_repositories_and_tokens_that_go_away() {
    let mut world = World::new().await;
    let repos: Vec<String> = (0..20).map(|i| format!("acme/repo-{i}")).collect();
    for repo in &repos {
        world.github.add_repo(repo);
    }
    world.github.add_token("ghp_second_token", 5000);
    let tokens = |repos: &[String]| {
        RepoTokens(
            repos
                .iter()
                .enumerate()
                .map(|(i, r)| (r.clone(), vec![Token::new(if i % 2 == 0 { TOKEN } else { "ghp_second_token" }).into()]))
                .collect(),
        )
    };
    let now = world.now();
    world.reconciler.set_catalog(catalog(None).runners, tokens(&repos), now);
    while world.reconciler.footprint().rotations < repos.len() {
        assert!(world.now() < now + 1200, "every repository is resynced within the idle window");
        world.tick(10).await;
    }
    assert_eq!(world.reconciler.footprint().paced_tokens, 2);
    let now = world.now();
    world.reconciler.set_catalog(catalog(None).runners, tokens(&repos[..1]), now);
    let footprint = world.reconciler.footprint();
    assert_eq!(footprint.repositories, 1);
    assert_eq!(footprint.rotations, 1, "{footprint:?}");
    assert_eq!(footprint.job_lists, 1, "{footprint:?}");
    assert_eq!(footprint.paced_tokens, 1, "{footprint:?}");
}

/// Requests that named `repo` since the last clear.
fn requests_for(github: &FakeGitHub, repo: &str) -> usize {
    let prefix = format!("/repos/{repo}/");
    github.requests().iter().filter(|r| r.path.starts_with(&prefix)).count()
}

#[tokio::test]
async fn an_organisation_runner_is_resynced_in_every_repository_of_its_organisation_that_had_a_delivery() {
    use gaa::demand::{Runner, RunnerIndex, ScaleFactor};
    let github = FakeGitHub::start().await;
    github.add_token(TOKEN, 5000);
    github.add_token("ghp_other_organisation", 5000);
    for repo in ["acme/api", "acme/web", "acme/quiet", "globex/app"] {
        github.add_repo(repo);
    }
    let index = RunnerIndex::new([
        Runner::organization(RunnerKey::new("ci", "acme"), "acme", ["linux"], 0, 10, ScaleFactor::Linear),
        Runner::organization(RunnerKey::new("ci", "globex"), "globex", ["linux"], 0, 10, ScaleFactor::Linear),
        Runner::new(RunnerKey::new("ci", "api-linux"), "acme", "api", ["linux"], 0, 10, ScaleFactor::Linear),
    ]);
    // The repository runner's token for acme/api; each organisation's for the rest of it.
    let tokens = RepoTokens(
        [("acme/api", TOKEN), ("acme", TOKEN), ("globex", "ghp_other_organisation")]
            .into_iter()
            .map(|(key, token)| (key.to_string(), vec![Token::new(token).into()]))
            .collect(),
    );
    let config = ReconcilerConfig { windows: WINDOWS, settle: SETTLE, ..ReconcilerConfig::default() };
    let mut world = World(ResyncWorld::start(github, 1_800_000_000, index, tokens, config));
    let event = |repo: &str, repo_id: u64, job: u64, status: JobStatus| {
        JobEvent::new(job, 900 + job, 1, RepoRef::new(repo_id, repo), status, LABELS)
    };
    // Deliveries for acme/web and globex/app; GitHub finishes both and the completions are lost.
    world.github.add_job("acme/web", 901, 1, &["self-hosted", "linux"], JobState::Queued);
    world.github.add_job("globex/app", 902, 2, &["self-hosted", "linux"], JobState::Queued);
    world.store.record("w1", event("acme/web", 2002, 1, JobStatus::Queued)).await.unwrap();
    world.store.record("g1", event("globex/app", 3003, 2, JobStatus::Queued)).await.unwrap();
    // A job no delivery announced in a repository that had a delivery is found too.
    world.github.add_job("acme/web", 903, 3, &["self-hosted", "linux"], JobState::Queued);
    assert_eq!((world.demand("acme"), world.demand("globex")), (1, 1));
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "acme")).unwrap().demand == 2).await;
    world.github.set_job_status(1, JobState::Completed);
    world.github.set_job_status(2, JobState::Completed);
    world.github.set_job_status(3, JobState::Completed);
    world
        .until(900, |store| {
            let board = store.board();
            board.get(&RunnerKey::new("ci", "acme")).unwrap().demand == 0
                && board.get(&RunnerKey::new("ci", "globex")).unwrap().demand == 0
        })
        .await;
    // Each organisation's repositories are read with its own credential, and a repository of
    // the organisation that no delivery named is never asked about.
    let requests = world.github.requests();
    let token_of = |repo: &str| {
        let prefix = format!("/repos/{repo}/");
        requests.iter().filter(|r| r.path.starts_with(&prefix)).map(|r| r.token.clone()).collect::<HashSet<_>>()
    };
    assert_eq!(token_of("acme/web"), HashSet::from([Some(TOKEN.to_string())]));
    assert_eq!(token_of("globex/app"), HashSet::from([Some("ghp_other_organisation".to_string())]));
    assert_eq!(requests_for(&world.github, "acme/quiet"), 0);
    // Once its jobs are finished and the idle window has passed, a repository leaves the resync.
    world.tick(700).await;
    world.github.clear_requests();
    for _ in 0..10 {
        world.tick(120).await;
    }
    assert_eq!(requests_for(&world.github, "acme/web"), 0, "an inactive repository costs nothing");
    assert!(requests_for(&world.github, "acme/api") > 0, "the repository runner's repository is resynced as before");
}

#[tokio::test]
async fn at_start_an_organisations_repositories_are_listed_once_and_each_looked_at_once() {
    use gaa::demand::{Runner, RunnerIndex, ScaleFactor};
    let github = FakeGitHub::start().await;
    github.add_token(TOKEN, 5000);
    for name in ["busy", "quiet", "old"] {
        github.add_org_repo("acme", name);
    }
    github.set_archived("acme/old", true);
    let index = RunnerIndex::new([Runner::organization(
        RunnerKey::new("ci", "acme"),
        "acme",
        ["linux"],
        0,
        10,
        ScaleFactor::Linear,
    )]);
    let tokens = RepoTokens(HashMap::from([("acme".to_string(), vec![Token::new(TOKEN).into()])]));
    let config = ReconcilerConfig { windows: WINDOWS, settle: SETTLE, ..ReconcilerConfig::default() };
    let mut world = World(ResyncWorld::start(github, 1_800_000_000, index, tokens, config));
    // Queued while no one listened: no delivery will ever name it.
    world.github.add_job("acme/busy", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    world.until(600, |store| store.board().get(&RunnerKey::new("ci", "acme")).unwrap().demand == 1).await;
    for _ in 0..20 {
        world.tick(120).await;
    }
    let listings = world.github.requests().iter().filter(|r| r.path == "/orgs/acme/repos").count();
    assert_eq!(listings, 1, "the organisation is listed once");
    assert!(requests_for(&world.github, "acme/quiet") > 0, "every listed repository is looked at once");
    assert_eq!(requests_for(&world.github, "acme/old"), 0, "an archived repository runs no jobs");
    // Afterwards only the repository with an open job is read.
    world.github.clear_requests();
    for _ in 0..20 {
        world.tick(120).await;
    }
    assert_eq!(requests_for(&world.github, "acme/quiet"), 0, "a quiet repository leaves after its first look");
    assert!(requests_for(&world.github, "acme/busy") > 0);
}

#[tokio::test]
async fn a_replica_without_the_lease_reads_the_runner_groups_and_counts_by_them_without_resyncing() {
    use common::fake_github::GroupAccess;
    use gaa::demand::{Runner, RunnerIndex, ScaleFactor};
    let github = FakeGitHub::start().await;
    github.add_token(TOKEN, 5000);
    for repo in ["api", "web"] {
        github.add_org_repo("acme", repo);
    }
    github.add_runner_group("acme", "builders");
    let access = GroupAccess {
        visibility: "selected",
        selected_repositories: vec!["acme/api".into()],
        ..GroupAccess::default()
    };
    github.set_runner_group_access("acme", "builders", access);
    let mut builders =
        Runner::organization(RunnerKey::new("ci", "builders"), "acme", ["linux"], 0, 10, ScaleFactor::Linear);
    builders.runner_group = Some("builders".into());
    let tokens = RepoTokens([("acme".to_string(), vec![Token::new(TOKEN).into()])].into());
    let config = ReconcilerConfig { windows: WINDOWS, settle: SETTLE, ..ReconcilerConfig::default() };
    let world = ResyncWorld::start(github, 1_800_000_000, RunnerIndex::new([builders]), tokens, config);
    let event =
        |repo: &str, job: u64| JobEvent::new(job, 900 + job, 1, RepoRef::new(job, repo), JobStatus::Queued, LABELS);
    world.store.record("a1", event("acme/api", 1)).await.unwrap();
    world.store.record("w2", event("acme/web", 2)).await.unwrap();
    let demand = |store: &StoreHandle| store.board().get(&RunnerKey::new("ci", "builders")).unwrap().demand;
    assert_eq!(demand(&world.store), 2, "before the groups are read, every repository counts");
    let (_leading_tx, leading) = tokio::sync::watch::channel(false);
    let stop = tokio_util::sync::CancellationToken::new();
    let clock = world.clock();
    let ResyncWorld { github, store, reconciler, dir: _dir, .. } = world;
    let running = tokio::spawn(reconciler.run(clock, leading, stop.clone(), None));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while demand(&store) != 1 {
        assert!(std::time::Instant::now() < deadline, "the follower never applied the runner groups");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap();
    let requests = github.requests();
    assert!(requests.iter().any(|r| r.path == "/orgs/acme/actions/runner-groups"));
    assert!(!requests.iter().any(|r| r.path.starts_with("/repos/")), "a follower must not resync");
}
