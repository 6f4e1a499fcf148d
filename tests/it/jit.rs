//! Just-in-time configurations minted through the fake GitHub over real HTTP: what each job
//! costs on GitHub's API, with a token and with a GitHub App, and the one-registration rule held
//! by GitHub's own records.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use common::app_keys::app_key_pair;
use common::fake_github::{FakeGitHub, JobState};
use futures::future::BoxFuture;
use gaa::demand::{Runner, RunnerIndex, RunnerKey, ScaleFactor};
use gaa::github::reconciler::RepoTokens;
use gaa::github::{Credential, GitHubApp, GitHubClient, Token};
use gaa::jit::{BoundPod, GitHubRegistrar, IdentityError, JitService, PodIdentity};
use gaa::metrics::Metrics;
use secrecy::ExposeSecret;

/// The pod the "cluster" vouches for (the real TokenReview is proven on the dev cluster).
struct OnePod;

impl PodIdentity for OnePod {
    fn identify<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<BoundPod, IdentityError>> {
        let pod = BoundPod {
            namespace: "ci".into(),
            name: "api-jit-0".into(),
            uid: "5e1f0c2a-1111".into(),
            stateful_set: Some("api-jit".into()),
        };
        Box::pin(async move { Ok(pod) })
    }
}

fn service(github: &FakeGitHub, credential: Credential) -> JitService {
    let mut runner = Runner::new(RunnerKey::new("ci", "api-jit"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear);
    runner.ephemeral = true;
    let tokens = RepoTokens(HashMap::from([("acme/api".to_string(), vec![credential])]));
    let (tx, catalogs) = tokio::sync::watch::channel((RunnerIndex::new([runner]), tokens));
    std::mem::forget(tx);
    let metrics = Arc::new(Metrics::new());
    let client = Arc::new(GitHubClient::new(&github.url(), metrics.clone()).unwrap());
    let registrar = GitHubRegistrar::new(client, gaa::clock::system_clock());
    JitService::new(Arc::new(OnePod), Arc::new(registrar), catalogs, metrics)
}

/// `jobs` jobs, each on a fresh registration: mint, the runner connects, takes its job and
/// finishes it (GitHub removes it). Returns GitHub's requests per job.
async fn run_jobs(github: &FakeGitHub, service: &JitService, jobs: u64) -> f64 {
    github.clear_requests();
    for job in 1..=jobs {
        let minted = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.expect("a configuration");
        assert_eq!(minted.runner_name, "api-jit-0-5e1f0c2a");
        let id = github.start_jit_runner(minted.encoded.expose_secret()).expect("the configuration starts a runner");
        github.add_job("acme/api", 700 + job, job, &["self-hosted", "linux"], JobState::Queued);
        github.runner_takes_job(id, job);
        // While it runs the job, the pod's token gets nothing.
        let refused = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.unwrap_err();
        assert_eq!(refused.status(), 409);
        github.runner_finishes_job(id);
    }
    let requests = github.requests().len() as f64;
    requests / jobs as f64
}

#[tokio::test]
async fn each_job_costs_one_registration_and_a_refused_request_while_busy_costs_one_lookup() {
    let github = FakeGitHub::start().await;
    github.add_token("ghp_jit_admin", 5000);
    github.add_repo("acme/api");
    let service = service(&github, Token::new("ghp_jit_admin").into());
    let per_job = run_jobs(&github, &service, 20).await;
    // Per job: the registration (1); the refused request: the mint GitHub refuses and the lookup
    // that finds the runner busy (2).
    assert_eq!(per_job, 3.0, "{:?}", github.requests());
    assert_eq!(github.jit_configs_minted().len(), 20);
    // A registration that never took a job is deleted before the next is minted.
    let first = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.unwrap();
    let second = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.unwrap();
    assert_ne!(first.runner_id, second.runner_id);
    assert!(github.runner(first.runner_id).is_none(), "the unused registration is gone");
    assert_eq!(github.runners_of("acme/api").len(), 1, "one registration per pod");
}

#[tokio::test]
async fn with_a_github_app_the_runner_token_is_minted_once_for_many_jobs() {
    const APP_ID: u64 = 6262;
    let github = FakeGitHub::start().await;
    github.add_app(APP_ID, "Iv23liJitApp", &app_key_pair("jit").public);
    github.add_installation(APP_ID, 41, &["acme/api"]);
    github.add_repo("acme/api");
    let app = GitHubApp::new(&APP_ID.to_string(), app_key_pair("jit").pkcs1.as_bytes(), None).unwrap();
    let service = service(&github, Credential::App(app));
    let per_job = run_jobs(&github, &service, 20).await;
    let requests = github.requests();
    let app_requests = requests.iter().filter(|r| !r.path.contains("/actions/runners")).count();
    assert_eq!(app_requests, 2, "one installation lookup and one runner token: {requests:?}");
    assert!(per_job <= 3.1, "{per_job}");
    // The runner token may administer runners only.
    let tokens: Vec<_> =
        requests.iter().filter(|r| r.path.contains("/actions/runners")).filter_map(|r| r.token.clone()).collect();
    assert!(tokens.iter().all(|t| t.starts_with("ghs_")), "{tokens:?}");
}

/// The pods the cluster holds for the runner: set by the test.
#[derive(Default)]
struct Pods(std::sync::Mutex<Vec<BoundPod>>);

impl gaa::jit::RunnerPods for Pods {
    fn pods<'a>(&'a self, _: &'a RunnerKey) -> BoxFuture<'a, Result<Vec<BoundPod>, String>> {
        let pods = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(pods) })
    }
}

fn runner_pod(ordinal: u32, uid: &str) -> BoundPod {
    BoundPod {
        namespace: "ci".into(),
        name: format!("api-jit-{ordinal}"),
        uid: uid.into(),
        stateful_set: Some("api-jit".into()),
    }
}

#[tokio::test]
async fn stale_registrations_are_deleted_busy_ones_never_and_the_counts_reach_the_runners_view() {
    let github = FakeGitHub::start().await;
    github.add_token("ghp_jit_admin", 5000);
    github.add_repo("acme/api");
    let mut runner = Runner::new(RunnerKey::new("ci", "api-jit"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear);
    runner.ephemeral = true;
    let index = RunnerIndex::new([runner]);
    let credential: Credential = Token::new("ghp_jit_admin").into();
    let tokens = RepoTokens(HashMap::from([("acme/api".to_string(), vec![credential])]));
    let (tx, catalogs) = tokio::sync::watch::channel((index.clone(), tokens));
    std::mem::forget(tx);
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = gaa::store::StoreHandle::start(dir.path(), index, Default::default(), metrics.clone()).unwrap();
    let client = Arc::new(GitHubClient::new(&github.url(), metrics).unwrap());
    let registrar = Arc::new(GitHubRegistrar::new(client, gaa::clock::system_clock()));
    let pods = Arc::new(Pods::default());
    *pods.0.lock().unwrap() =
        vec![runner_pod(0, "aaaaaaaa-0"), runner_pod(1, "bbbbbbbb-1"), runner_pod(2, "cccccccc-2")];
    let window = std::time::Duration::from_secs(600);
    let mut keeper = gaa::jit::Housekeeper::new(registrar, pods.clone(), catalogs, store.board().clone(), window);
    // Pod 0's runner runs a job; pod 1's is online and idle; pod 2's never connected; a pod
    // recreated under pod 3's name left its old registration behind; another runner's is not ours.
    let busy = github.add_runner("acme/api", "api-jit-0-aaaaaaaa", &["linux"]);
    github.set_runner_status(busy, "online");
    github.set_runner_busy(busy, true);
    let idle = github.add_runner("acme/api", "api-jit-1-bbbbbbbb", &["linux"]);
    github.set_runner_status(idle, "online");
    let unused = github.add_runner("acme/api", "api-jit-2-cccccccc", &["linux"]);
    github.set_runner_status(unused, "offline");
    let orphan = github.add_runner("acme/api", "api-jit-3-dddddddd", &["linux"]);
    let foreign = github.add_runner("acme/api", "api-jit-other-0-eeeeeeee", &["linux"]);
    let now = 1_900_000_000;
    let swept = keeper.pass(now).await;
    assert_eq!((swept.registered, swept.busy, swept.deleted), (3, 1, 1), "the orphan goes at once");
    assert!(github.runner(orphan).is_none() && github.runner(foreign).is_some());
    let view = store.board().get(&RunnerKey::new("ci", "api-jit")).unwrap();
    assert_eq!((view.registered_runners, view.busy_runners), (Some(3), Some(1)));
    // Within the window the registration that never connected stays; after it, it goes.
    let swept = keeper.pass(now + 300).await;
    assert_eq!(swept.deleted, 0);
    let swept = keeper.pass(now + 601).await;
    assert_eq!(swept.deleted, 1);
    assert!(github.runner(unused).is_none());
    // A busy runner is never deleted, even once its pod is gone (the drain has it finish).
    pods.0.lock().unwrap().clear();
    let swept = keeper.pass(now + 700).await;
    assert!(github.runner(busy).is_some(), "a runner running a job stays");
    assert!(github.runner(idle).is_none(), "an idle one whose pod is gone is deleted");
    assert_eq!((swept.registered, swept.busy), (1, 1));
    store.shutdown().await;
}

#[tokio::test]
async fn githubs_limits_reach_the_pod_as_429_with_retry_after_and_its_outages_as_503() {
    use common::fake_github::Fault;
    let github = FakeGitHub::start().await;
    github.add_token("ghp_jit_admin", 5000);
    github.add_repo("acme/api");
    let service = service(&github, Token::new("ghp_jit_admin").into());
    github.inject_on("generate-jitconfig", Fault::SecondaryLimit { retry_after_secs: 42, status: 429 });
    let limited = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.unwrap_err();
    assert_eq!((limited.status(), limited.retry_after()), (429, Some(std::time::Duration::from_secs(42))));
    github.inject_on("generate-jitconfig", Fault::ServerError { status: 502 });
    let down = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.unwrap_err();
    assert_eq!(down.status(), 503);
    assert!(down.retry_after().is_some());
    // And once GitHub answers again, the pod gets its configuration.
    assert!(service.issue("ci", "api-jit", Some("h.pod-token.s")).await.is_ok());
}

#[tokio::test]
async fn an_organisation_runners_registration_is_made_in_its_runner_group_with_its_labels() {
    let github = FakeGitHub::start().await;
    github.add_token("ghp_org_admin", 5000);
    github.add_org("acme");
    let group = github.add_runner_group("acme", "builders");
    let mut runner =
        Runner::organization(RunnerKey::new("ci", "api-jit"), "acme", ["linux", "x64"], 0, 5, ScaleFactor::Linear);
    runner.ephemeral = true;
    runner.runner_group = Some("builders".into());
    let credential: Credential = Token::new("ghp_org_admin").into();
    let tokens = RepoTokens(HashMap::from([("acme".to_string(), vec![credential])]));
    let (tx, catalogs) = tokio::sync::watch::channel((RunnerIndex::new([runner]), tokens));
    std::mem::forget(tx);
    let metrics = Arc::new(Metrics::new());
    let client = Arc::new(GitHubClient::new(&github.url(), metrics.clone()).unwrap());
    let registrar = GitHubRegistrar::new(client, gaa::clock::system_clock());
    let service = JitService::new(Arc::new(OnePod), Arc::new(registrar), catalogs, metrics);
    let minted = service.issue("ci", "api-jit", Some("h.pod-token.s")).await.unwrap();
    let registered = github.runners_of("acme");
    assert_eq!(registered.len(), 1);
    let runner = &registered[0];
    assert_eq!((runner.id, runner.name.as_str(), runner.group_id), (minted.runner_id, "api-jit-0-5e1f0c2a", group));
    assert!(runner.jit);
    for label in ["linux", "x64"] {
        assert!(runner.labels.iter().any(|l| l == label), "{:?}", runner.labels);
    }
    assert!(github.runners_of("acme/api").is_empty());
}
