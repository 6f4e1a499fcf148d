//! The client's organisation calls against the fake GitHub over real HTTP: an organisation's
//! repositories and an installation's, over every page and revalidated for free, and the
//! installation of an App on an organisation.

use crate::common;

use std::sync::Arc;

use common::app_keys::app_key_pair;
use common::fake_github::FakeGitHub;
use gaa::github::{Budget, GitHubApp, GitHubClient, GitHubError, Token};
use gaa::metrics::Metrics;

const PAT: &str = "ghp_OrganisationReader0123456789";
const APP_ID: u64 = 5151;
const ORG: &str = "acme";

async fn github() -> (FakeGitHub, GitHubClient) {
    let github = FakeGitHub::start().await;
    github.add_token(PAT, 5000);
    let client = GitHubClient::new(&github.url(), Arc::new(Metrics::new())).unwrap();
    (github, client)
}

fn app() -> GitHubApp {
    GitHubApp::new(&APP_ID.to_string(), app_key_pair("org app").pkcs1.as_bytes(), None).unwrap()
}

#[tokio::test]
async fn every_repository_of_an_organisation_is_listed_over_its_pages_and_an_unchanged_one_costs_nothing() {
    let (github, client) = github().await;
    let mut created: Vec<u64> = (0..250).map(|i| github.add_org_repo(ORG, &format!("repo-{i}"))).collect();
    github.add_repo("someone/else");
    let token = Token::new(PAT);

    let listed = client.list_org_repos(&token, ORG).await.unwrap();
    let mut ids: Vec<u64> = listed.value.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    created.sort_unstable();
    assert_eq!(ids, created, "each repository of the organisation once, nobody else's");
    assert!(listed.value.iter().all(|r| r.full_name.starts_with("acme/") && !r.archived));
    assert_eq!((listed.requests, listed.credits, listed.not_modified), (3, 3, 0));
    assert_eq!(github.credits_used(PAT), 3);

    let again = client.list_org_repos(&token, ORG).await.unwrap();
    assert_eq!(again.value, listed.value);
    assert_eq!((again.requests, again.credits, again.not_modified), (3, 0, 3), "an unchanged listing is free");
    assert_eq!(github.credits_used(PAT), 3);
    let limit = client.rate_limit(&token).unwrap();
    assert_eq!(limit.remaining, 4997);

    github.set_archived("acme/repo-7", true);
    let changed = client.list_org_repos(&token, ORG).await.unwrap();
    assert!(changed.value.iter().any(|r| r.full_name == "acme/repo-7" && r.archived));
    assert!(changed.credits >= 1, "the page that changed is read again");
}

#[tokio::test]
async fn an_unknown_organisation_is_not_found_and_a_bad_name_never_leaves_the_process() {
    let (github, client) = github().await;
    github.add_repo("someone/else");
    let token = Token::new(PAT);
    assert_eq!(client.list_org_repos(&token, "someone").await.unwrap_err(), GitHubError::NotFound);
    let before = github.requests().len();
    for bad in ["acme/api", "..", "a b", ""] {
        assert!(matches!(client.list_org_repos(&token, bad).await, Err(GitHubError::InvalidOrganisation(_))), "{bad}");
    }
    assert_eq!(github.requests().len(), before);
    let revoked = Token::new("ghp_unknown");
    assert_eq!(client.list_org_repos(&revoked, ORG).await.unwrap_err(), GitHubError::Unauthorized);
}

#[tokio::test]
async fn an_installation_lists_only_its_repositories_on_its_own_budget() {
    let (github, client) = github().await;
    github.add_app(APP_ID, "Iv23liOrgClient", &app_key_pair("org app").public);
    for i in 0..130 {
        github.add_org_repo(ORG, &format!("repo-{i:03}"));
    }
    let chosen: Vec<String> = (0..120).map(|i| format!("acme/repo-{i:03}")).collect();
    github.add_installation(APP_ID, 71, &chosen.iter().map(String::as_str).collect::<Vec<_>>());
    github.add_org_repo("beta", "web");
    github.add_installation(APP_ID, 72, &["beta/web"]);

    let jwt = app().jwt(github.now()).unwrap().token;
    let installation = client.find_org_installation(&jwt, ORG).await.unwrap();
    assert_eq!((installation.value, installation.requests, installation.credits), (Some(71), 1, 1));
    let minted = client.create_installation_token(&jwt, 71).await.unwrap().value.unwrap();

    let listed = client.list_installation_repos(&minted.token).await.unwrap();
    let mut names: Vec<String> = listed.value.iter().map(|r| r.full_name.clone()).collect();
    names.sort();
    assert_eq!(names, chosen, "the installation's repositories, each once, over two pages");
    assert_eq!((listed.requests, listed.credits), (2, 2));
    assert_eq!(github.installation_credits_used(71), 2);
    assert_eq!(github.credits_used(PAT), 0);
    let budget = client.budget_limit(&Budget::Installation(71)).expect("the installation's headers are kept");
    assert_eq!((budget.limit, budget.remaining), (5000 + 100 * 50, 10_000 - 2));

    let again = client.list_installation_repos(&minted.token).await.unwrap();
    assert_eq!((again.not_modified, again.credits), (2, 0), "revalidated for free");
    let through_org = client.list_org_repos(&minted.token, ORG).await.unwrap();
    assert_eq!(through_org.value.len(), 120, "an installation token sees the organisation's repositories it was given");
    assert_eq!(client.list_installation_repos(&Token::new(PAT)).await.unwrap_err().category(), "forbidden");
}

#[tokio::test]
async fn an_organisation_without_the_app_has_no_installation() {
    let (github, client) = github().await;
    github.add_app(APP_ID, "Iv23liOrgClient", &app_key_pair("org app").public);
    github.add_org_repo(ORG, "api");
    github.add_org_repo("beta", "web");
    github.add_installation(APP_ID, 71, &["acme/api"]);
    let jwt = app().jwt(github.now()).unwrap().token;

    assert_eq!(client.find_org_installation(&jwt, "beta").await.unwrap().value, None);
    assert_eq!(client.find_org_installation(&jwt, ORG).await.unwrap().value, Some(71));
    assert_eq!((github.installation_lookups("beta"), github.installation_lookups(ORG)), (1, 1));
    let refused = client.find_org_installation(&Token::new(PAT), ORG).await.unwrap_err();
    assert!(matches!(refused, GitHubError::JwtRejected { .. }), "{refused:?}");
}
