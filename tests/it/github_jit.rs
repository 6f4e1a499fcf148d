//! The client's self-hosted runner calls against the fake GitHub over real HTTP: just-in-time
//! configurations for a repository's and an organisation's runners, runner lists over every page,
//! removal (and a busy runner's refusal), runner groups by name, the errors callers act on, and
//! an App's installation token narrowed to runner administration.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::app_keys::app_key_pair;
use common::fake_github::{Access, FakeGitHub, Fault, JobState};
use gaa::github::runners::DEFAULT_RUNNER_GROUP_ID;
use gaa::github::{GitHubApp, GitHubClient, GitHubError, RunnerScope, RunnerStatus, Token};
use gaa::metrics::Metrics;
use secrecy::ExposeSecret;

const PAT: &str = "ghp_RunnerAdministrator0123456789";
const NOW: i64 = 1_800_000_000;
const APP_ID: u64 = 6262;
const ORG: &str = "acme";

async fn github() -> (FakeGitHub, GitHubClient) {
    let github = FakeGitHub::start().await;
    github.set_now(NOW);
    github.add_token(PAT, 5000);
    let client = GitHubClient::new(&github.url(), Arc::new(Metrics::new())).unwrap().with_clock(|| NOW);
    (github, client)
}

fn repo() -> RunnerScope {
    RunnerScope::repository("acme", "api")
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[tokio::test]
async fn a_repository_runner_is_minted_listed_and_removed_and_its_configuration_never_shows() {
    let (github, client) = github().await;
    github.add_repo("acme/api");
    let token = Token::new(PAT);

    let config = client
        .generate_jitconfig(
            &token,
            &repo(),
            "ci-linux-1",
            DEFAULT_RUNNER_GROUP_ID,
            &labels(&["linux", "gpu"]),
            Some("_work"),
        )
        .await
        .unwrap();
    let registered = github.runners_of("acme/api");
    assert_eq!(registered.len(), 1);
    assert_eq!((config.runner_id, config.name.as_str()), (registered[0].id, "ci-linux-1"));
    assert_eq!(config.labels, ["self-hosted", "linux", "gpu"]);
    assert_eq!((registered[0].group_id, registered[0].work_folder.as_deref()), (1, Some("_work")));
    let minted = github.jit_configs_minted();
    assert_eq!(minted, vec![config.encoded_jit_config.expose_secret().to_owned()]);
    assert_eq!(github.jit_runner(&minted[0]), Some(config.runner_id));
    assert!(!format!("{config:?}").contains(&minted[0]), "Debug redacts the configuration");

    let taken = client
        .generate_jitconfig(&token, &repo(), "ci-linux-1", DEFAULT_RUNNER_GROUP_ID, &labels(&["linux"]), None)
        .await
        .unwrap_err();
    assert!(matches!(&taken, GitHubError::Conflict { message } if message.contains("already exists")), "{taken:?}");
    assert_eq!(taken.category(), "conflict");

    let named = client.runner_named(&token, &repo(), "ci-linux-1").await.unwrap();
    assert_eq!((named.value.map(|r| r.id), named.requests), (Some(config.runner_id), 1), "found by name, one request");
    assert_eq!(client.runner_named(&token, &repo(), "ci linux&2").await.unwrap().value, None);
    let listed = client.list_runners(&token, &repo()).await.unwrap();
    assert_eq!(listed.value.len(), 1);
    let runner = &listed.value[0];
    assert_eq!((runner.id, runner.status, runner.busy), (config.runner_id, RunnerStatus::Offline, false));
    assert_eq!(runner.label_names().collect::<Vec<_>>(), ["self-hosted", "linux", "gpu"]);

    assert!(client.delete_runner(&token, &repo(), config.runner_id).await.unwrap());
    assert!(github.runners_of("acme/api").is_empty());
    assert!(!client.delete_runner(&token, &repo(), config.runner_id).await.unwrap(), "gone already");
    assert!(client.list_runners(&token, &repo()).await.unwrap().value.is_empty());
}

#[tokio::test]
async fn an_organisations_group_is_found_by_name_over_every_page_and_its_runner_registered_there() {
    let (github, client) = github().await;
    for i in 0..120 {
        github.add_runner_group(ORG, &format!("group-{i:03}"));
    }
    let gpu = github.add_runner_group(ORG, "gpu");
    let token = Token::new(PAT);

    assert_eq!(client.runner_group_id(&token, ORG, "gpu").await.unwrap(), Some(gpu));
    assert_eq!(client.runner_group_id(&token, ORG, "Default").await.unwrap(), Some(DEFAULT_RUNNER_GROUP_ID));
    assert_eq!(client.runner_group_id(&token, ORG, "GPU").await.unwrap(), Some(gpu), "names ignore case");
    assert_eq!(client.runner_group_id(&token, ORG, "arm").await.unwrap(), None);
    assert_eq!(client.runner_group_id(&token, "nobody", "gpu").await.unwrap_err(), GitHubError::NotFound);
    let before = github.requests().len();
    assert!(matches!(
        client.runner_group_id(&token, "acme/api", "gpu").await,
        Err(GitHubError::InvalidOrganisation(_))
    ));
    assert_eq!(github.requests().len(), before, "a bad name never leaves the process");

    let scope = RunnerScope::organization(ORG);
    let config = client.generate_jitconfig(&token, &scope, "org-gpu-1", gpu, &labels(&["gpu"]), None).await.unwrap();
    let registered = github.runners_of(ORG);
    assert_eq!((registered.len(), registered[0].id, registered[0].group_id), (1, config.runner_id, gpu));
    let unknown = client.generate_jitconfig(&token, &scope, "org-gpu-2", 4242, &labels(&["gpu"]), None).await;
    assert_eq!(unknown.unwrap_err(), GitHubError::NotFound, "GitHub answers 404 for a group it does not know");
    let listed = client.list_runners(&token, &scope).await.unwrap();
    assert_eq!(listed.value.iter().map(|r| r.id).collect::<Vec<_>>(), [config.runner_id]);
}

#[tokio::test]
async fn a_busy_runner_is_refused_as_busy_until_its_job_is_done() {
    let (github, client) = github().await;
    github.add_job("acme/api", 1, 11, &["self-hosted", "linux"], JobState::Queued);
    let token = Token::new(PAT);
    let config = client.generate_jitconfig(&token, &repo(), "ci-1", 1, &labels(&["linux"]), None).await.unwrap();
    let id = github.start_jit_runner(config.encoded_jit_config.expose_secret()).expect("the configuration starts it");
    github.runner_takes_job(id, 11);

    let listed = client.list_runners(&token, &repo()).await.unwrap();
    assert_eq!((listed.value[0].status, listed.value[0].busy), (RunnerStatus::Online, true));
    let busy = client.delete_runner(&token, &repo(), id).await.unwrap_err();
    assert!(matches!(&busy, GitHubError::RunnerBusy { runner_id, .. } if *runner_id == id), "{busy:?}");
    assert_eq!(busy.category(), "runner_busy");
    assert!(github.runner(id).is_some());

    github.runner_finishes_job(id);
    assert!(!client.delete_runner(&token, &repo(), id).await.unwrap(), "GitHub removed it after its one job");

    let classic = github.add_runner("acme/api", "long-lived", &["linux"]);
    github.set_runner_busy(classic, true);
    assert!(matches!(client.delete_runner(&token, &repo(), classic).await, Err(GitHubError::RunnerBusy { .. })));
    github.set_runner_busy(classic, false);
    assert!(client.delete_runner(&token, &repo(), classic).await.unwrap());
}

#[tokio::test]
async fn every_runner_is_listed_over_its_pages_and_an_unchanged_list_is_free() {
    let (github, client) = github().await;
    let mut created: Vec<u64> =
        (0..250).map(|i| github.add_runner("acme/api", &format!("runner-{i:03}"), &[])).collect();
    github.add_runner("acme/web", "theirs", &[]);
    let token = Token::new(PAT);

    let listed = client.list_runners(&token, &repo()).await.unwrap();
    let mut ids: Vec<u64> = listed.value.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    created.sort_unstable();
    assert_eq!(ids, created, "each runner of the repository once, nobody else's");
    assert_eq!((listed.requests, listed.credits, listed.not_modified), (3, 3, 0));

    let again = client.list_runners(&token, &repo()).await.unwrap();
    assert_eq!(again.value, listed.value);
    assert_eq!((again.requests, again.credits, again.not_modified), (3, 0, 3), "an unchanged list is free");
    assert_eq!(github.credits_used(PAT), 3);

    github.set_runner_status(created[0], "offline");
    let changed = client.list_runners(&token, &repo()).await.unwrap();
    assert!(changed.value.iter().any(|r| r.id == created[0] && r.status == RunnerStatus::Offline));
}

#[tokio::test]
async fn refusals_and_limits_become_the_errors_callers_act_on() {
    let (github, client) = github().await;
    github.add_repo("acme/api");
    let token = Token::new(PAT);
    let mint = |name: &'static str, labels: Vec<String>| {
        let client = client.clone();
        let token = token.clone();
        async move { client.generate_jitconfig(&token, &repo(), name, 1, &labels, None).await }
    };

    for (name, labels) in [("", labels(&["linux"])), ("ok-name", Vec::new())] {
        let invalid = mint(name, labels).await.unwrap_err();
        assert!(matches!(invalid, GitHubError::Unprocessable { .. }), "{invalid:?}");
    }
    let revoked = client.generate_jitconfig(&Token::new("ghp_unknown"), &repo(), "a", 1, &labels(&["x"]), None).await;
    assert_eq!(revoked.unwrap_err(), GitHubError::Unauthorized);

    github.inject_on("generate-jitconfig", Fault::SecondaryLimit { retry_after_secs: 30, status: 429 });
    let secondary = mint("a", labels(&["x"])).await.unwrap_err();
    assert_eq!(secondary, GitHubError::RateLimited { retry_after: Duration::from_secs(30), secondary: true });
    github.inject_on("/actions/runners/", Fault::ServerError { status: 502 });
    assert_eq!(client.delete_runner(&token, &repo(), 1).await.unwrap_err(), GitHubError::Server { status: 502 });
    github.set_remaining(PAT, 0);
    let primary = mint("a", labels(&["x"])).await.unwrap_err();
    assert_eq!(primary, GitHubError::RateLimited { retry_after: Duration::from_secs(3600), secondary: false });
    assert!(github.jit_configs_minted().is_empty());
    github.advance(3600);

    github.set_access(PAT, "acme/api", Access::Read);
    let forbidden = client.generate_jitconfig(&token, &repo(), "a", 1, &labels(&["x"]), None).await.unwrap_err();
    let GitHubError::Forbidden { message } = &forbidden else { panic!("{forbidden:?}") };
    assert!(message.contains("administration=write"), "a 403 names the permission: {message}");
    let listing = client.list_runners(&token, &repo()).await.unwrap_err();
    assert_eq!(listing.category(), "forbidden");

    let before = github.requests().len();
    for bad in
        [RunnerScope::repository("acme", "../x"), RunnerScope::repository("", "api"), RunnerScope::organization("a b")]
    {
        assert!(client.generate_jitconfig(&token, &bad, "a", 1, &labels(&["x"]), None).await.is_err());
        assert!(client.list_runners(&token, &bad).await.is_err());
        assert!(client.delete_runner(&token, &bad, 1).await.is_err());
    }
    assert_eq!(github.requests().len(), before, "bad names never leave the process");
    assert!(!format!("{forbidden} {listing}").contains(PAT));
}

#[tokio::test]
async fn an_app_registers_runners_with_a_token_narrowed_to_runner_administration() {
    let (github, client) = github().await;
    github.add_app(APP_ID, "Iv23liRunnerApp", &app_key_pair("jit app").public);
    github.add_org_repo(ORG, "api");
    github.add_installation(APP_ID, 81, &["acme/api"]);
    let app = GitHubApp::new(&APP_ID.to_string(), app_key_pair("jit app").pkcs1.as_bytes(), None).unwrap();
    let jwt = app.jwt(github.now()).unwrap().token;
    let org = RunnerScope::organization(ORG);

    let read_only = client.create_installation_token(&jwt, 81).await.unwrap().value.unwrap();
    let refused = client.generate_jitconfig(&read_only.token, &org, "a", 1, &labels(&["x"]), None).await.unwrap_err();
    let GitHubError::Forbidden { message } = &refused else { panic!("{refused:?}") };
    assert!(message.contains("organization_self_hosted_runners=write"), "{message}");

    for scope in [org.clone(), repo()] {
        let minted = client.create_runner_installation_token(&jwt, 81, &scope).await.unwrap().value.unwrap();
        let config = client.generate_jitconfig(&minted.token, &scope, "app-1", 1, &labels(&["x"]), None).await.unwrap();
        let listed = client.list_runners(&minted.token, &scope).await.unwrap();
        assert_eq!(listed.value.iter().map(|r| r.id).collect::<Vec<_>>(), [config.runner_id], "{scope}");
        assert!(client.delete_runner(&minted.token, &scope, config.runner_id).await.unwrap());
    }
    assert_eq!(github.installation_credits_used(81), 6, "on the installation's budget");
    assert_eq!(github.credits_used(PAT), 0);
    assert_eq!(
        client.create_runner_installation_token(&jwt, 99, &org).await.unwrap().value.map(|t| t.expires_at),
        None
    );
}
