//! GitHub App authentication against the fake GitHub over real HTTP: the JWT's claims and
//! signature, installations looked up once, one installation token per installation, renewal
//! before expiry, a refused token minted anew once, the budget per installation, credentials
//! from Secrets, and no key, JWT or installation token in Debug output, errors or metrics.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::app_keys::{AppKeyPair, app_key_pair};
use common::fake_github::{FakeGitHub, JobState};
use common::resync::ResyncWorld;
use gaa::catalog::{Catalog, RunnerProblem};
use gaa::demand::{Runner, RunnerIndex, RunnerKey, ScaleFactor};
use gaa::github::app::AppCredentialsError;
use gaa::github::reconciler::{Pass, ReconcilerConfig, RepoTokens};
use gaa::github::resync::Windows;
use gaa::github::{Credential, GitHubApp, GitHubClient, GitHubError};
use gaa::manifests::Manifests;
use gaa::metrics::Metrics;
use serde_json::{Value, json};

const APP_ID: u64 = 4242;
const CLIENT_ID: &str = "Iv23liFakeClientId";
const START: i64 = 1_800_000_000;

fn keys() -> AppKeyPair {
    app_key_pair("app")
}

fn app(installation: Option<u64>) -> GitHubApp {
    let installation = installation.map(|id| id.to_string());
    GitHubApp::new(&APP_ID.to_string(), keys().pkcs1.as_bytes(), installation.as_deref()).unwrap()
}

/// The resync of `repos` (each with one runner) through `app`, in simulated time.
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
    async fn new(repos: &[&str], credential: Credential, windows: Windows) -> Self {
        let github = FakeGitHub::start().await;
        github.add_app(APP_ID, CLIENT_ID, &keys().public);
        let index = RunnerIndex::new(repos.iter().map(|repo| {
            let (owner, name) = repo.split_once('/').unwrap();
            Runner::new(RunnerKey::new("ci", name), owner, name, ["linux"], 0, 10, ScaleFactor::Linear)
        }));
        let config = ReconcilerConfig { windows, settle: Duration::from_secs(30), ..ReconcilerConfig::default() };
        let tokens = RepoTokens(repos.iter().map(|r| (r.to_string(), vec![credential.clone()])).collect());
        Self(ResyncWorld::start(github, START, index, tokens, config))
    }

    /// Ticks `step` seconds at a time for `seconds`; the passes added up.
    async fn run_for(&mut self, seconds: i64, step: i64) -> Pass {
        let until = self.now() + seconds;
        let mut total = Pass::default();
        while self.now() < until {
            let pass = self.tick(step).await;
            total.resynced += pass.resynced;
            total.deferred += pass.deferred;
            total.failed += pass.failed;
            total.credits += pass.credits;
        }
        total
    }

    /// The tokens the resync's own requests (runs and jobs) carried, per repository.
    fn tokens_used(&self) -> Vec<(String, String)> {
        self.github
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/actions/"))
            .map(|r| (r.path.split('/').take(4).collect::<Vec<_>>().join("/"), r.token.unwrap_or_default()))
            .collect()
    }
}

const WINDOWS: Windows = Windows { busy: Duration::from_secs(60), idle: Duration::from_secs(300) };

#[tokio::test]
async fn the_jwt_is_rs256_with_githubs_claims_and_verifies_against_the_apps_public_key() {
    let github = FakeGitHub::start().await;
    github.add_app(APP_ID, CLIENT_ID, &keys().public);
    github.add_installation(APP_ID, 77, &["acme/api"]);
    let now = github.now();
    let client = GitHubClient::new(&github.url(), Arc::new(Metrics::new())).unwrap();
    for (id, pem) in [(APP_ID.to_string(), keys().pkcs1), (CLIENT_ID.to_string(), keys().pkcs8)] {
        let app = GitHubApp::new(&id, pem.as_bytes(), None).unwrap();
        let jwt = app.jwt(now).unwrap();
        let found = client.find_installation(&jwt.token, "acme/api").await.unwrap();
        assert_eq!(found.value, Some(77), "the fake accepted the JWT of {id}");
    }
    assert!(github.jwt_rejections().is_empty(), "{:?}", github.jwt_rejections());
    assert_eq!(github.jwts_accepted(), 2);
    // The claims as GitHub reads them, checked with the public key.
    let signed = github.requests().into_iter().find_map(|r| r.token).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(keys().public.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(&signed, &key, &validation).unwrap().claims;
    assert_eq!(claims["iss"], json!(APP_ID));
    assert_eq!(claims["iat"], json!(now - 60));
    assert_eq!(claims["exp"], json!(now + 540), "ten minutes from iat, nine from now");
    let other = app_key_pair("another app");
    let foreign = jsonwebtoken::DecodingKey::from_rsa_pem(other.public.as_bytes()).unwrap();
    assert!(jsonwebtoken::decode::<Value>(&signed, &foreign, &validation).is_err());
}

/// Asks the fake for an installation with a JWT of `claims`, signed with `pem`'s key.
async fn lookup_with(github: &FakeGitHub, claims: Value, pem: &str) -> u16 {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap();
    common::server::http()
        .get(format!("{}/repos/acme/api/installation", github.url()))
        .header("user-agent", "test")
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_fake_refuses_jwts_expired_not_yet_valid_too_long_foreign_or_wrongly_signed() {
    let github = FakeGitHub::start().await;
    github.add_app(APP_ID, CLIENT_ID, &keys().public);
    github.add_installation(APP_ID, 77, &["acme/api"]);
    let now = github.now();
    let pem = keys().pkcs8;
    let claims = |iat: i64, exp: i64, iss: Value| json!({"iat": iat, "exp": exp, "iss": iss});
    assert_eq!(lookup_with(&github, claims(now - 60, now + 540, json!(APP_ID)), &pem).await, 200);
    assert_eq!(lookup_with(&github, claims(now - 60, now + 540, json!(CLIENT_ID)), &pem).await, 200);
    assert_eq!(lookup_with(&github, claims(now - 700, now - 100, json!(APP_ID)), &pem).await, 401);
    assert_eq!(lookup_with(&github, claims(now + 30, now + 300, json!(APP_ID)), &pem).await, 401);
    assert_eq!(lookup_with(&github, claims(now, now + 660, json!(APP_ID)), &pem).await, 401);
    assert_eq!(lookup_with(&github, claims(now - 60, now + 540, json!(APP_ID + 1)), &pem).await, 401);
    let other = app_key_pair("another app").pkcs8;
    assert_eq!(lookup_with(&github, claims(now - 60, now + 540, json!(APP_ID)), &other).await, 401);
    assert_eq!(
        github.jwt_rejections(),
        ["expired", "not yet valid", "exp too far", "unknown issuer", "bad signature"],
        "each refused for its own reason"
    );
}

#[tokio::test]
async fn installations_are_looked_up_once_per_repository_and_one_token_serves_each_installation() {
    let repos = ["acme/api", "acme/web", "acme/docs", "beta/app", "beta/lib"];
    let mut world = World::new(&repos, Credential::App(app(None)), WINDOWS).await;
    world.github.add_installation(APP_ID, 11, &repos[..3]);
    world.github.add_installation(APP_ID, 12, &repos[3..]);
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    // Three idle windows: every repository resynced three times or more.
    let pass = world.run_for(3 * 300 + 10, 10).await;
    assert!(pass.resynced >= 15 && pass.failed == 0, "{pass:?}");
    assert_eq!(world.demand("api"), 1, "the queued job was found with the installation's token");
    for repo in repos {
        assert_eq!(world.github.installation_lookups(repo), 1, "{repo} looked up once");
    }
    assert_eq!(world.github.installation_tokens_minted(11), 1);
    assert_eq!(world.github.installation_tokens_minted(12), 1);
    // Each repository was read with its own installation's single token.
    let mut by_installation: Vec<HashSet<String>> = vec![HashSet::new(), HashSet::new()];
    for (repo, token) in world.tokens_used() {
        assert!(token.starts_with("ghs_"), "{repo} read with an installation token");
        let first = repos[..3].iter().any(|r| repo.ends_with(r));
        by_installation[usize::from(!first)].insert(token);
    }
    assert_eq!(by_installation.iter().map(HashSet::len).collect::<Vec<_>>(), [1, 1]);
    assert!(by_installation[0].is_disjoint(&by_installation[1]));
    assert_eq!(world.github.jwts_accepted(), 1, "the lookups and mints of the first minutes share one JWT");
    assert!(world.github.jwt_rejections().is_empty());
    let footprint = world.reconciler.footprint();
    assert_eq!((footprint.apps.repositories, footprint.apps.tokens), (5, 2), "{footprint:?}");
}

#[tokio::test]
async fn installation_tokens_and_jwts_are_renewed_before_they_expire() {
    let repos = ["acme/api", "acme/web"];
    let mut world = World::new(&repos, Credential::App(app(None)), WINDOWS).await;
    world.github.add_installation(APP_ID, 11, &repos);
    // Tokens that live 20 minutes: renewed 5 minutes before, so every 15.
    world.github.set_installation_token_lifetime(1200);
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::InProgress);
    let pass = world.run_for(3600, 10).await;
    assert_eq!(pass.failed, 0, "{pass:?}");
    let refused = world.github.requests().iter().filter(|r| r.status == 401).count();
    assert_eq!(refused, 0, "no expired token or JWT was ever sent");
    let minted = world.github.installation_tokens_minted(11);
    assert!((4..=5).contains(&minted), "one token per 15 minutes of the hour, not one per resync: {minted}");
    let jwts = world.github.jwts_accepted();
    assert!(jwts >= 2 && jwts <= minted as usize + 1, "a JWT per mint at most, reused within its life: {jwts}");
    assert_eq!(world.reconciler.minted().tokens, u64::from(minted));
    assert_eq!(world.github.installation_lookups("acme/api"), 1);
}

#[tokio::test]
async fn a_refused_installation_token_is_dropped_and_minted_anew_once() {
    let repos = ["acme/api"];
    let mut world = World::new(&repos, Credential::App(app(Some(11))), WINDOWS).await;
    world.github.add_installation(APP_ID, 11, &repos);
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::InProgress);
    while world.demand("api") != 1 {
        assert!(world.now() < START + 600, "never resynced");
        world.tick(10).await;
    }
    assert_eq!(world.github.installation_lookups("acme/api"), 0, "the Secret named the installation");
    assert_eq!(world.github.installation_tokens_minted(11), 1);
    // GitHub revokes the token; the job finishes meanwhile.
    world.github.revoke_installation_tokens(11);
    world.github.set_job_status(1, JobState::Completed);
    world.github.clear_requests();
    let mut pass = Pass::default();
    while pass.resynced == 0 {
        assert!(world.now() < START + 1800, "never resynced again");
        pass = world.tick(10).await;
        assert_eq!(pass.failed, 0, "the refused token is replaced within the same resync");
    }
    assert_eq!(world.github.installation_tokens_minted(11), 2, "one new token");
    assert_eq!(world.github.requests().iter().filter(|r| r.status == 401).count(), 1);
    assert_eq!(world.demand("api"), 0);
    // Refused again while GitHub will not mint: one attempt per resync, then it waits.
    world.github.revoke_installation_tokens(11);
    world.github.suspend_installation(11, true);
    world.github.clear_requests();
    let mut pass = Pass::default();
    while pass.failed == 0 {
        assert!(world.now() < START + 3600, "the suspended installation never failed a resync");
        pass = world.tick(10).await;
    }
    let mints = world.github.requests().iter().filter(|r| r.path.ends_with("/access_tokens")).count();
    assert_eq!(mints, 1, "a single mint attempt, no loop");
}

#[tokio::test]
async fn each_installation_spends_its_own_budget_and_reports_it_by_installation_id() {
    let repos = ["acme/api", "acme/web", "beta/app", "beta/lib"];
    let mut world = World::new(&repos, Credential::App(app(None)), WINDOWS).await;
    world.github.add_installation(APP_ID, 11, &repos[..2]);
    world.github.add_installation(APP_ID, 12, &repos[2..]);
    // Installation 11 can pay for its first listings and is then at the reserve (100 credits).
    world.github.set_installation_limit(11, 103);
    let first = world.run_for(600, 10).await;
    assert_eq!(world.github.installation_credits_used(11), 4, "two lists for each of its repositories");
    // A job queued in each installation: 11 waits for its window to reset, 12 pays and sees it.
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    world.github.add_job("beta/app", 901, 2, &["self-hosted", "linux"], JobState::Queued);
    let pass = world.run_for(900, 10).await;
    assert_eq!(pass.failed, 0, "{pass:?}");
    assert!(first.deferred + pass.deferred > 0, "installation 11's repositories wait: {first:?} {pass:?}");
    assert_eq!(world.demand("app"), 1, "installation 12 spent its own budget");
    assert_eq!(world.demand("api"), 0, "installation 11 kept its reserve");
    assert_eq!(world.github.installation_credits_used(11), 4);
    let text = world.metrics.encode();
    let remaining_12 = world.github.installation_remaining(12);
    assert!(text.contains(&format!("gaa_github_credits_remaining{{installation=\"12\"}} {remaining_12}")), "{text}");
    assert!(text.contains("gaa_github_credits_remaining{installation=\"11\"} 99"), "{text}");
    assert!(text.contains(&format!("gaa_github_credits_remaining{{app=\"{APP_ID}\"}}")), "{text}");
    assert!(!text.contains("token=\""), "no per-token series for installation tokens: {text}");
    for token in world.github.installation_tokens() {
        assert!(!text.contains(&token));
    }
}

#[tokio::test]
async fn an_installation_with_its_token_goes_on_while_the_apps_own_budget_is_at_its_reserve() {
    let repos = ["acme/api", "acme/web"];
    let mut world = World::new(&repos, Credential::App(app(None)), WINDOWS).await;
    world.github.add_installation(APP_ID, 11, &repos);
    // Two lookups and one token leave the App at the reserve (100) for the rest of its hour.
    world.github.set_app_limit(APP_ID, 103);
    world.run_for(600, 10).await;
    assert_eq!(world.github.app_credits_used(APP_ID), 3);
    world.github.add_job("acme/api", 900, 1, &["self-hosted", "linux"], JobState::Queued);
    let pass = world.run_for(900, 10).await;
    assert_eq!(pass.failed, 0, "{pass:?}");
    assert_eq!(world.demand("api"), 1, "the installation's cached token needs nothing of the App");
    assert_eq!(world.github.app_credits_used(APP_ID), 3);
}

fn secret_yaml(name: &str, data: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ci"}, "stringData": data})
        .to_string()
}

fn runner_yaml(name: &str, repo: &str, secret: &str) -> String {
    format!(
        "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: {name}, namespace: ci}}\n\
         spec: {{owner: acme, repo: {repo}, maxRunners: 3, githubTokenSecret: {secret}, runner: {{runnerLabels: linux}}}}\n"
    )
}

fn catalog_of(documents: &[String]) -> (Catalog, Vec<(usize, RunnerProblem)>) {
    let mut manifests = Manifests::default();
    manifests.add_file(Path::new("apps.yaml"), &documents.join("\n---\n"));
    assert!(manifests.problems.is_empty(), "{:?}", manifests.problems);
    Catalog::build(manifests.runners.iter().map(|l| &l.object), manifests.secrets.iter().map(|l| &l.object), None)
}

/// A line from the middle of a PEM's body: text that must never show.
fn key_material(pem: &str) -> String {
    pem.lines().nth(5).unwrap().to_owned()
}

#[test]
fn a_secret_with_github_app_credentials_gives_its_repository_that_app() {
    let (catalog, problems) = catalog_of(&[
        runner_yaml("api", "api", "api-app"),
        runner_yaml("web", "web", "web-app"),
        secret_yaml("api-app", &[("app-id", &APP_ID.to_string()), ("private-key", &keys().pkcs1)]),
        secret_yaml(
            "web-app",
            &[("client-id", CLIENT_ID), ("private-key", &keys().pkcs8), ("installation-id", "31337")],
        ),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let api = &catalog.apps["acme/api"];
    assert_eq!((api.len(), api[0].issuer(), api[0].installation()), (1, "4242", None));
    let web = &catalog.apps["acme/web"][0];
    assert_eq!((web.issuer(), web.installation()), (CLIENT_ID, Some(31337)));
    assert!(catalog.tokens.is_empty());
}

#[test]
fn a_secret_with_tokens_and_an_app_or_unusable_app_credentials_is_reported_for_its_runner() {
    let broken = "-----BEGIN RSA PRIVATE KEY-----\nTUlJRXBBSUJBQUtDQVFFQXNlY3JldA==\n-----END RSA PRIVATE KEY-----\n";
    let (catalog, problems) = catalog_of(&[
        runner_yaml("both", "both", "both"),
        runner_yaml("bad-key", "bad-key", "bad-key"),
        runner_yaml("no-key", "no-key", "no-key"),
        runner_yaml("bad-installation", "bad-installation", "bad-installation"),
        secret_yaml("both", &[("token", "ghp_x"), ("app-id", "1"), ("private-key", &keys().pkcs1)]),
        secret_yaml("bad-key", &[("app-id", "1"), ("private-key", broken)]),
        secret_yaml("no-key", &[("app-id", "1")]),
        secret_yaml("bad-installation", &[("app-id", "1"), ("private-key", &keys().pkcs1), ("installation-id", "x")]),
    ]);
    assert!(catalog.tokens.is_empty() && catalog.apps.is_empty(), "no credentials are guessed");
    assert_eq!(catalog.runners.len(), 4, "the runners are still served, by webhooks");
    let reasons: Vec<(usize, Option<AppCredentialsError>)> = problems
        .iter()
        .map(|(at, problem)| {
            assert!(problem.is_warning(), "{problem}");
            let text = problem.to_string();
            assert!(!text.contains("TUlJRX") && !text.contains(&key_material(&keys().pkcs1)), "{text}");
            match problem {
                RunnerProblem::MixedCredentials { .. } => (*at, None),
                RunnerProblem::AppCredentials { reason, .. } => (*at, Some(reason.clone())),
                other => panic!("unexpected {other}"),
            }
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (0, None),
            (1, Some(AppCredentialsError::InvalidKey)),
            (2, Some(AppCredentialsError::NoKey)),
            (3, Some(AppCredentialsError::InvalidInstallation("x".into()))),
        ]
    );
    assert!(problems[0].1.to_string().contains("both tokens and GitHub App credentials"), "{}", problems[0].1);
}

#[tokio::test]
async fn no_key_jwt_or_installation_token_shows_in_debug_display_errors_or_metrics() {
    let github = FakeGitHub::start().await;
    github.add_app(APP_ID, CLIENT_ID, &keys().public);
    github.add_installation(APP_ID, 77, &["acme/api"]);
    let metrics = Arc::new(Metrics::new());
    let client = GitHubClient::new(&github.url(), metrics.clone()).unwrap();
    let app = app(Some(77));
    let jwt = app.jwt(github.now()).unwrap();
    let minted = client.create_installation_token(&jwt.token, 77).await.unwrap().value.unwrap();
    let jwt_text = github.requests()[0].token.clone().unwrap();
    let token_text = github.installation_tokens().pop().unwrap();
    let (catalog, _) = catalog_of(&[
        runner_yaml("api", "api", "api-app"),
        secret_yaml("api-app", &[("app-id", &APP_ID.to_string()), ("private-key", &keys().pkcs1)]),
    ]);
    let shown = [
        format!("{app:?} {app} {jwt:?} {minted:?}"),
        format!("{} {}", jwt.token, minted.token),
        format!("{:?} {}", Credential::App(app.clone()), Credential::App(app.clone())),
        format!("{catalog:?}"),
        GitHubError::AppKey("x".into()).to_string(),
        metrics.encode(),
    ]
    .join("\n");
    for secret in [key_material(&keys().pkcs1), key_material(&keys().pkcs8), jwt_text, token_text] {
        assert!(!shown.contains(&secret), "{secret:?} shown in:\n{shown}");
    }
    assert!(shown.contains("4242") && shown.contains("installation 77"), "the ids do show: {shown}");
}

/// `serve`'s runners for the process test: `acme/api` reads GitHub with the App of its Secret,
/// `acme/web` names no Secret (the App of the flags serves it).
fn app_manifests(root: &Path) -> std::path::PathBuf {
    let dir = root.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let runners = format!(
        "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: api-linux, namespace: ci}}\n\
         spec: {{owner: acme, repo: api, maxRunners: 10, scaleFactor: \"0\", webhookSecret: api-hook, githubTokenSecret: api-app, runner: {{runnerLabels: linux}}}}\n\
         ---\napiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: web, namespace: frontend}}\n\
         spec: {{owner: acme, repo: web, maxRunners: 3, webhookSecret: web-hook, runner: {{runnerLabels: linux}}}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: api-hook, namespace: ci}}\nstringData: {{webhook-secret: {}}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: web-hook, namespace: frontend}}\nstringData: {{webhook-secret: {}}}\n---\n{}\n",
        common::API_SECRET,
        common::WEB_SECRET,
        secret_yaml("api-app", &[("app-id", &APP_ID.to_string()), ("private-key", &keys().pkcs1)]),
    );
    std::fs::write(dir.join("runners.yaml"), runners).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_repairs_a_lost_completion_with_the_installation_token_of_a_secrets_app() {
    use common::server::Server;
    const FLAGS_APP: u64 = 4343;
    let github = FakeGitHub::start().await;
    github.add_app(APP_ID, CLIENT_ID, &keys().public);
    github.add_app(FLAGS_APP, "Iv23liFlagsApp", &app_key_pair("flags app").public);
    github.add_installation(APP_ID, 11, &["acme/api"]);
    github.add_installation(FLAGS_APP, 12, &["acme/web"]);
    // Run 1 of acme/api, as the deliveries below name it: two jobs running.
    for job in [1, 2] {
        github.add_job("acme/api", 1, job, &["self-hosted", "linux"], JobState::InProgress);
    }
    let root = tempfile::tempdir().unwrap();
    let manifests = app_manifests(root.path());
    let key_file = root.path().join("flags-app.pem");
    std::fs::write(&key_file, app_key_pair("flags app").pkcs1).unwrap();
    let args = [
        "--github-api-url",
        &github.url(),
        "--github-app-id",
        &FLAGS_APP.to_string(),
        "--github-app-private-key-file",
        key_file.to_str().unwrap(),
        "--github-app-installation-id",
        "12",
        "--cache-window",
        "1s",
        "--cache-window-when-empty",
        "2s",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(&root.path().join("data"), &manifests, &args).await;
    let client = common::server::http();
    for (delivery, job, action) in
        [("q1", 1, "queued"), ("q2", 2, "queued"), ("i1", 1, "in_progress"), ("i2", 2, "in_progress")]
    {
        assert_eq!(server.deliver(&client, delivery, "acme/api", job, action).await, 202);
    }
    let view_until = |check: fn(&Value) -> bool, what: &'static str| {
        let server = &server;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let view = server.runner("ci", "api-linux").await;
                if check(&view) {
                    return view;
                }
                assert!(std::time::Instant::now() < deadline, "{what}: {view}\n{}", server.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    view_until(|v| v["demand"] == 2 && !v["lastResyncTime"].is_null(), "resynced with both jobs running").await;
    // Job 1 finishes on GitHub and its completion webhook is lost.
    github.set_job_status(1, JobState::Completed);
    let view = view_until(|v| v["demand"] == 1, "the lost completion repaired").await;
    assert_eq!(view["source"], "webhooks+github", "{view}");
    let requests = github.requests();
    let read_with = |repo: &str| -> HashSet<String> {
        requests
            .iter()
            .filter(|r| r.path.starts_with(&format!("/repos/{repo}/actions/")))
            .filter_map(|r| r.token.clone())
            .collect()
    };
    let (api, web) = (read_with("acme/api"), read_with("acme/web"));
    assert_eq!(api.len(), 1, "acme/api read with one token: {api:?}");
    assert_eq!(web.len(), 1, "acme/web read with one token: {web:?}");
    assert!(api.iter().chain(&web).all(|t| t.starts_with("ghs_")), "installation tokens: {api:?} {web:?}");
    assert!(api.is_disjoint(&web), "each installation its own token");
    assert_eq!(github.installation_lookups("acme/api"), 1, "the Secret names no installation: looked up once");
    assert_eq!(github.installation_lookups("acme/web"), 0, "--github-app-installation-id names it");
    assert_eq!((github.installation_tokens_minted(11), github.installation_tokens_minted(12)), (1, 1));
    assert!(github.jwt_rejections().is_empty(), "{:?}", github.jwt_rejections());
    let metrics = server.metrics().await;
    for installation in [11, 12] {
        assert!(
            metrics.contains(&format!("gaa_github_credits_remaining{{installation=\"{installation}\"}}")),
            "{metrics}"
        );
    }
    let jwts: Vec<String> =
        requests.iter().filter(|r| !r.path.contains("/actions/")).filter_map(|r| r.token.clone()).collect();
    assert!(!jwts.is_empty());
    let log = server.log();
    let secrets = [key_material(&keys().pkcs1), key_material(&app_key_pair("flags app").pkcs1)]
        .into_iter()
        .chain(jwts)
        .chain(github.installation_tokens());
    for secret in secrets {
        assert!(!log.contains(&secret) && !metrics.contains(&secret), "{secret:?} leaked:\n{log}");
    }
}

#[test]
fn serve_refuses_a_token_file_and_a_github_app_together_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let manifests = app_manifests(root.path());
    let output = std::process::Command::new(common::server::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--manifests"])
        .arg(&manifests)
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .env("GAA_GITHUB_TOKEN_FILE", root.path().join("token"))
        .env("GAA_GITHUB_APP_ID", "4242")
        .env("GAA_GITHUB_APP_PRIVATE_KEY_FILE", root.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--github-app-id") && stderr.contains("--github-token-file"), "{stderr}");
}
