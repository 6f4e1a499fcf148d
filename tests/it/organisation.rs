//! Organisation runners in the real binary: a repository runner, an organisation runner read
//! through a GitHub App and one of a second organisation read with a classic token, side by side
//! in one `serve`, fed by signed webhooks and repaired by the resync.

use crate::common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::app_keys::app_key_pair;
use common::fake_github::{FakeGitHub, JobState};
use common::server::{Server, http};
use serde_json::{Value, json};

const APP_ID: u64 = 5151;
const ACME_SECRET: &str = "acme-organisation-webhook-secret";
const GLOBEX_SECRET: &str = "globex-organisation-webhook-secret";
const API_TOKEN: &str = "ghp_acme_api_repository_token";
const GLOBEX_TOKEN: &str = "ghp_globex_organisation_token";

fn secret(name: &str, data: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ci"}, "stringData": data})
        .to_string()
}

fn runner(name: &str, spec: Value) -> String {
    json!({"apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": name, "namespace": "ci"}, "spec": spec})
    .to_string()
}

/// acme/api's repository runner (its own secret and token); acme's organisation runner (its
/// organisation's secret, a GitHub App); globex's organisation runner (a classic token).
fn manifests(root: &Path) -> PathBuf {
    let dir = root.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let documents = [
        runner(
            "api-linux",
            json!({"owner": "acme", "repo": "api", "maxRunners": 5, "scaleFactor": "0", "webhookSecret": "api-hook",
                "githubTokenSecret": "api-token", "runner": {"runnerLabels": "linux"}}),
        ),
        runner(
            "acme",
            json!({"owner": "acme", "maxRunners": 5, "scaleFactor": "0", "runnerGroup": "builders",
                "webhookSecret": "acme-hook", "githubTokenSecret": "acme-app", "runner": {"runnerLabels": "linux"}}),
        ),
        runner(
            "globex",
            json!({"owner": "Globex", "maxRunners": 5, "scaleFactor": "0", "webhookSecret": "globex-hook",
                "githubTokenSecret": "globex-token", "runner": {"runnerLabels": "linux"}}),
        ),
        secret("api-hook", &[("webhook-secret", common::API_SECRET)]),
        secret("api-token", &[("token", API_TOKEN)]),
        secret("acme-hook", &[("webhook-secret", ACME_SECRET)]),
        secret("acme-app", &[("app-id", &APP_ID.to_string()), ("private-key", &app_key_pair("organisation").pkcs1)]),
        secret("globex-hook", &[("webhook-secret", GLOBEX_SECRET)]),
        secret("globex-token", &[("token", GLOBEX_TOKEN)]),
    ];
    std::fs::write(dir.join("runners.yaml"), documents.join("\n---\n")).unwrap();
    dir
}

fn payload(repo: &str, repo_id: u64, run: u64, job: u64, action: &str, labels: &[&str]) -> Vec<u8> {
    let mut payload = common::job_payload(repo, job, action, labels);
    payload["repository"]["id"] = json!(repo_id);
    payload["workflow_job"]["run_id"] = json!(run);
    serde_json::to_vec(&payload).unwrap()
}

async fn views(server: &Server) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for name in ["api-linux", "acme", "globex"] {
        let view = server.runner("ci", name).await;
        out.push((name.to_string(), view["demand"].as_u64().unwrap(), view["scope"].as_str().unwrap().to_string()));
    }
    out
}

async fn demands_until(server: &Server, want: [u64; 3], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<u64> = views(server).await.into_iter().map(|(_, demand, _)| demand).collect();
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: demands {now:?}, wanted {want:?}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_and_organisation_runners_of_two_organisations_share_one_serve_from_webhooks_and_the_resync() {
    let github = FakeGitHub::start().await;
    github.add_token(API_TOKEN, 5000);
    github.add_token(GLOBEX_TOKEN, 5000);
    github.add_app(APP_ID, "Iv23liOrganisationApp", &app_key_pair("organisation").public);
    for name in ["api", "web", "tools", "dormant"] {
        github.add_org_repo("acme", name);
    }
    github.add_installation(APP_ID, 31, &["acme/api", "acme/web", "acme/tools", "acme/dormant"]);
    github.add_org_repo("globex", "app");
    // Queued while serve was down: no delivery names it; the organisation's listing finds it.
    github.add_job("acme/dormant", 80, 80, &["self-hosted", "linux"], JobState::Queued);
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests(root.path());
    let args = ["--github-api-url", &github.url(), "--cache-window", "1s", "--cache-window-when-empty", "3s"]
        .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with(&root.path().join("data"), &manifests, &args).await;
    let client = http();
    let deliver = |delivery: &'static str, body: Vec<u8>, secret: &'static str| {
        let (server, client) = (&server, &client);
        async move { server.deliver_signed(client, delivery, body, secret).await }
    };
    let linux = &["self-hosted", "linux"][..];
    // The repository runner takes its repository's job (a tie: the repository runner first).
    github.add_job("acme/api", 10, 1, linux, JobState::Queued);
    assert_eq!(deliver("d1", payload("acme/api", 1001, 10, 1, "queued", linux), common::API_SECRET).await, 202);
    // The organisation's secret signs for any repository of acme; the organisation runner takes
    // both jobs of run 20 of acme/web.
    for job in [2, 8] {
        github.add_job("acme/web", 20, job, linux, JobState::Queued);
    }
    assert_eq!(deliver("d2", payload("acme/web", 2002, 20, 2, "queued", linux), ACME_SECRET).await, 202);
    assert_eq!(deliver("d8", payload("acme/web", 2002, 20, 8, "queued", linux), ACME_SECRET).await, 202);
    // acme/api's secret does not sign for acme/web, nor acme's for globex: refused, nothing counted.
    assert_eq!(deliver("d3", payload("acme/web", 2002, 20, 3, "queued", linux), common::API_SECRET).await, 401);
    assert_eq!(deliver("d4", payload("globex/app", 4004, 50, 4, "queued", linux), ACME_SECRET).await, 401);
    for job in [5, 9] {
        github.add_job("globex/app", 50, job, linux, JobState::InProgress);
        let delivery = if job == 5 { "d5" } else { "d9" };
        let body = payload("globex/app", 4004, 50, job, "in_progress", linux);
        assert_eq!(deliver(delivery, body, GLOBEX_SECRET).await, 202);
    }
    // A job of acme/tools no delivery announced, in a repository a delivery named.
    github.add_job("acme/tools", 60, 6, linux, JobState::Queued);
    github.add_job("acme/tools", 70, 7, linux, JobState::Completed);
    assert_eq!(deliver("d7", payload("acme/tools", 3003, 70, 7, "completed", linux), ACME_SECRET).await, 202);
    demands_until(&server, [1, 4, 2], "webhooks, the resync of acme/tools, and the listing").await;
    let scopes: Vec<String> = views(&server).await.into_iter().map(|(_, _, scope)| scope).collect();
    assert_eq!(scopes, ["repository", "organization", "organization"]);
    // GitHub finishes one job of acme/web's run and one of globex/app's; both completions are lost.
    github.set_job_status(2, JobState::Completed);
    github.set_job_status(5, JobState::Completed);
    demands_until(&server, [1, 3, 1], "the lost completions repaired by the resync").await;
    // Each repository was read with the credentials of the runner that serves it.
    let requests = github.requests();
    let read_with = |repo: &str| -> HashSet<String> {
        let prefix = format!("/repos/{repo}/actions/");
        requests.iter().filter(|r| r.path.starts_with(&prefix)).filter_map(|r| r.token.clone()).collect()
    };
    assert_eq!(read_with("acme/api"), HashSet::from([API_TOKEN.to_string()]));
    assert_eq!(read_with("globex/app"), HashSet::from([GLOBEX_TOKEN.to_string()]));
    let web = read_with("acme/web");
    assert!(!web.is_empty() && web.iter().all(|t| t.starts_with("ghs_")), "the App's installation token: {web:?}");
    assert_eq!(read_with("acme/tools"), web, "one installation token for the organisation's repositories");
    assert_eq!(read_with("acme/dormant"), web);
    // (The public repositories, read for the runner groups closed to them, are another listing.)
    let listings = |path: &str| {
        requests
            .iter()
            .filter(|r| r.path == path && r.query.as_deref().is_none_or(|q| !q.contains("type=public")))
            .count()
    };
    assert_eq!(listings("/installation/repositories"), 1, "the App's organisation is listed once");
    assert_eq!(listings("/orgs/globex/repos"), 1, "the token's organisation is listed once");
    assert_eq!(listings("/orgs/acme/installation"), 1);
    // One reads Actions for the resync, one reads the organisation's runner groups.
    assert_eq!(github.installation_tokens_minted(31), 2);
    let log = server.log();
    for secret in [ACME_SECRET, GLOBEX_SECRET, API_TOKEN, GLOBEX_TOKEN].into_iter().map(str::to_string).chain(web) {
        assert!(!log.contains(&secret), "{secret} leaked:\n{log}");
    }
}
