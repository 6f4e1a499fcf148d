//! The fake GitHub must behave like GitHub, or the reconciler tests driven by it mean nothing.

use crate::common::fake_github;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fake_github::{FakeGitHub, Fault, JobState};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

const TOKEN: &str = "ghp_fake_token";
const REPO: &str = "acme/api";
const NOW: i64 = 1_800_000_000;

async fn github() -> FakeGitHub {
    let github = FakeGitHub::start().await;
    github.set_now(NOW);
    github.add_token(TOKEN, 5000);
    github
}

fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().user_agent("gaa-fake-github-test").build().unwrap()
}

/// reqwest is built with `rustls-no-provider`: it needs a process-wide provider even for plain HTTP.
fn install_crypto() {
    // Err means another test installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn number(&self, name: &str) -> i64 {
        self.header(name).unwrap_or_else(|| panic!("no {name} header")).parse().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// The target of `rel` in the `Link` header.
    fn link(&self, rel: &str) -> Option<String> {
        let wanted = format!("rel=\"{rel}\"");
        self.header("link")?.split(", ").find(|l| l.ends_with(&wanted)).map(|l| {
            let (target, _) = l.split_once(">;").unwrap();
            target.trim_start_matches('<').to_owned()
        })
    }
}

async fn get_with(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Answer { status, headers, body }
}

async fn get(url: &str) -> Answer {
    get_with(client().get(url).bearer_auth(TOKEN)).await
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn runs_are_filtered_by_a_status_derived_from_their_jobs() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    github.add_job(REPO, 1, 12, &["self-hosted"], JobState::Completed);
    github.add_job(REPO, 2, 21, &["self-hosted"], JobState::Queued);
    github.add_job(REPO, 2, 22, &["self-hosted"], JobState::InProgress);
    github.add_job(REPO, 3, 31, &["self-hosted"], JobState::Completed);
    github.add_job(REPO, 4, 41, &["self-hosted"], JobState::Waiting);
    let runs = |status: &str| format!("{}/repos/{REPO}/actions/runs?status={status}&per_page=100", github.url());

    let queued = get(&runs("queued")).await.json();
    assert_eq!(ids(&queued["workflow_runs"]), [1]);
    assert_eq!(queued["total_count"], 1);
    assert_eq!(ids(&get(&runs("in_progress")).await.json()["workflow_runs"]), [2]);
    assert_eq!(ids(&get(&runs("waiting")).await.json()["workflow_runs"]), [4]);
    let completed = get(&runs("completed")).await.json();
    assert_eq!(ids(&completed["workflow_runs"]), [3]);
    assert_eq!(completed["workflow_runs"][0]["conclusion"], "success");

    let all = get(&format!("{}/repos/{REPO}/actions/runs", github.url())).await.json();
    assert_eq!(ids(&all["workflow_runs"]), [4, 3, 2, 1], "newest first");
    let run = &all["workflow_runs"][3];
    assert_eq!(run["status"], "queued");
    assert_eq!(run["conclusion"], Value::Null);
    assert_eq!(run["run_attempt"], 1);
    assert_eq!(run["created_at"], "2027-01-15T08:00:00Z");
    assert_eq!(run["jobs_url"], format!("{}/repos/{REPO}/actions/runs/1/jobs", github.url()));

    github.set_job_status(11, JobState::InProgress);
    assert!(ids(&get(&runs("queued")).await.json()["workflow_runs"]).is_empty());
    assert_eq!(ids(&get(&runs("in_progress")).await.json()["workflow_runs"]), [2, 1]);
}

#[tokio::test]
async fn a_job_reads_as_github_shapes_it() {
    let github = github().await;
    github.add_job(REPO, 7, 70, &["self-hosted", "linux"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/jobs/70", github.url());

    let job = get(&url).await.json();
    assert_eq!(job["id"], 70);
    assert_eq!(job["run_id"], 7);
    assert_eq!(job["run_attempt"], 1);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["conclusion"], Value::Null);
    assert_eq!(job["labels"], serde_json::json!(["self-hosted", "linux"]));
    assert_eq!(job["runner_id"], Value::Null);
    assert_eq!(job["runner_name"], Value::Null);
    assert_eq!(job["completed_at"], Value::Null);
    assert_eq!(job["created_at"], "2027-01-15T08:00:00Z");
    for field in ["started_at", "name", "workflow_name", "head_branch", "html_url"] {
        assert!(job[field].is_string(), "{field} in {job}");
    }

    github.advance(30);
    github.set_job_status(70, JobState::InProgress);
    let job = get(&url).await.json();
    assert_eq!(job["status"], "in_progress");
    assert_eq!(job["started_at"], "2027-01-15T08:00:30Z");
    assert!(job["runner_id"].is_u64() && job["runner_name"].is_string(), "{job}");

    github.set_job_status(70, JobState::Completed);
    let job = get(&url).await.json();
    assert_eq!((job["status"].as_str(), job["conclusion"].as_str()), (Some("completed"), Some("success")));
    assert!(job["completed_at"].is_string());

    let unknown = get(&format!("{}/repos/{REPO}/actions/jobs/71", github.url())).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["message"], "Not Found");
    let elsewhere = get(&format!("{}/repos/acme/web/actions/jobs/70", github.url())).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND, "a job is only found under its repository");
}

#[tokio::test]
async fn removed_runs_and_unknown_repositories_are_not_found() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    github.add_repo("acme/empty");
    github.remove_run(REPO, 1);

    let jobs = get(&format!("{}/repos/{REPO}/actions/runs/1/jobs", github.url())).await;
    assert_eq!(jobs.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&format!("{}/repos/{REPO}/actions/jobs/11", github.url())).await.status, StatusCode::NOT_FOUND);
    let runs = get(&format!("{}/repos/{REPO}/actions/runs?status=queued", github.url())).await;
    assert_eq!(runs.json()["total_count"], 0);
    let empty = get(&format!("{}/repos/ACME/Empty/actions/runs", github.url())).await;
    assert_eq!(empty.status, StatusCode::OK, "names are case-insensitive");
    assert_eq!(empty.json()["workflow_runs"], serde_json::json!([]));
    let missing = get(&format!("{}/repos/acme/missing/actions/runs", github.url())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_single_run_reads_with_its_status_revalidates_for_free_and_is_gone_once_removed() {
    let github = github().await;
    github.add_job(REPO, 7, 71, &["self-hosted"], JobState::InProgress);
    let url = format!("{}/repos/{REPO}/actions/runs/7", github.url());

    let fresh = get(&url).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!((fresh.json()["id"].as_u64(), fresh.json()["status"].as_str()), (Some(7), Some("in_progress")));
    assert_eq!(fresh.json()["conclusion"], Value::Null);
    assert_eq!(fresh.number("x-ratelimit-used"), 1);
    let etag = fresh.header("etag").unwrap().to_owned();
    let again = get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(github.credits_used(TOKEN), 1);

    github.set_job_status(71, JobState::Completed);
    let done = get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(
        (done.json()["status"].as_str(), done.json()["conclusion"].as_str()),
        (Some("completed"), Some("success"))
    );
    github.remove_run(REPO, 7);
    assert_eq!(get(&url).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_hundred_and_fifty_jobs_come_back_over_three_linked_pages() {
    let github = github().await;
    for job in 1..=250 {
        github.add_job(REPO, 9, job, &["self-hosted"], JobState::Queued);
    }
    let first = format!("{}/repos/{REPO}/actions/runs/9/jobs?filter=latest&per_page=100", github.url());
    let page_url =
        |n: u32| format!("{}/repos/{REPO}/actions/runs/9/jobs?filter=latest&per_page=100&page={n}", github.url());

    let mut seen = Vec::new();
    let mut answers = Vec::new();
    let mut next = Some(first);
    while let Some(url) = next {
        let answer = get(&url).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["total_count"], 250);
        seen.extend(ids(&answer.json()["jobs"]));
        next = answer.link("next");
        answers.push(answer);
    }

    assert_eq!(answers.len(), 3);
    assert_eq!(answers.iter().map(|a| a.json()["jobs"].as_array().unwrap().len()).collect::<Vec<_>>(), [100, 100, 50]);
    assert_eq!(seen, (1..=250).collect::<Vec<_>>(), "every job once, ordered by id");
    let rels = |a: &Answer| ["prev", "next", "last", "first"].map(|rel| a.link(rel));
    assert_eq!(rels(&answers[0]), [None, Some(page_url(2)), Some(page_url(3)), None]);
    assert_eq!(rels(&answers[1]), [Some(page_url(1)), Some(page_url(3)), Some(page_url(3)), Some(page_url(1))]);
    assert_eq!(rels(&answers[2]), [Some(page_url(2)), None, None, Some(page_url(1))]);
    assert_eq!(github.credits_used(TOKEN), 3);
}

#[tokio::test]
async fn pages_default_to_thirty_cap_at_one_hundred_and_a_single_page_has_no_link() {
    let github = github().await;
    for job in 1..=150 {
        github.add_job(REPO, 9, job, &["self-hosted"], JobState::Queued);
    }
    github.add_job(REPO, 10, 1000, &["self-hosted"], JobState::Queued);
    let jobs = |run: u32, query: &str| format!("{}/repos/{REPO}/actions/runs/{run}/jobs{query}", github.url());

    let default = get(&jobs(9, "")).await;
    assert_eq!(default.json()["jobs"].as_array().unwrap().len(), 30);
    assert_eq!(default.link("last"), Some(jobs(9, "?page=5")));
    let capped = get(&jobs(9, "?per_page=500")).await;
    assert_eq!(capped.json()["jobs"].as_array().unwrap().len(), 100);
    assert_eq!(capped.link("next"), Some(jobs(9, "?per_page=500&page=2")));

    let single = get(&jobs(10, "?per_page=100")).await;
    assert_eq!(ids(&single.json()["jobs"]), [1000]);
    assert_eq!(single.header("link"), None);
}

#[tokio::test]
async fn an_unchanged_resource_is_not_modified_and_costs_nothing() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs?status=queued&per_page=100", github.url());

    let fresh = get(&url).await;
    assert_eq!(fresh.status, StatusCode::OK);
    let etag = fresh.header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
    assert_eq!(github.credits_used(TOKEN), 1);

    let again = get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.body, "");
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.number("x-ratelimit-remaining"), fresh.number("x-ratelimit-remaining"));
    assert_eq!(again.number("x-ratelimit-used"), 1);

    let strong = etag.trim_start_matches("W/");
    let listed = format!("\"other\", {strong}");
    let weakly = get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", &listed)).await;
    assert_eq!(weakly.status, StatusCode::NOT_MODIFIED, "If-None-Match compares weakly, in a list");
    assert_eq!(github.credits_used(TOKEN), 1);
}

#[tokio::test]
async fn a_changed_resource_gets_a_new_etag_and_costs_a_credit() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs/1/jobs?per_page=100", github.url());
    let etag = get(&url).await.header("etag").unwrap().to_owned();

    github.set_job_status(11, JobState::InProgress);
    let changed = get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;

    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.json()["jobs"][0]["status"], "in_progress");
    assert_eq!(github.credits_used(TOKEN), 2);
}

#[tokio::test]
async fn rate_limit_headers_count_down_one_credit_per_answer_with_a_body() {
    let github = FakeGitHub::start().await;
    github.set_now(NOW);
    github.add_token(TOKEN, 5);
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs", github.url());

    for spent in 1..=3 {
        let answer = get(&url).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.number("x-ratelimit-limit"), 5);
        assert_eq!(answer.number("x-ratelimit-remaining"), 5 - spent);
        assert_eq!(answer.number("x-ratelimit-used"), spent);
        assert_eq!(answer.number("x-ratelimit-reset"), NOW + 3600);
        assert_eq!(answer.header("x-ratelimit-resource"), Some("core"));
    }
    github.advance(120);
    let missing = get(&format!("{}/repos/{REPO}/actions/jobs/404", github.url())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.number("x-ratelimit-remaining"), 2, "errors are free here");
    assert_eq!(missing.number("x-ratelimit-reset"), NOW + 3600, "the window opened at the first request");
    assert_eq!(github.credits_used(TOKEN), 3);
    assert_eq!(github.remaining(TOKEN), 2);
}

#[tokio::test]
async fn an_exhausted_token_is_refused_until_its_window_resets() {
    let github = FakeGitHub::start().await;
    github.set_now(NOW);
    github.add_token(TOKEN, 2);
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs", github.url());
    assert_eq!(get(&url).await.status, StatusCode::OK);
    let last = get(&url).await;
    assert_eq!(last.number("x-ratelimit-remaining"), 0);

    let refused = get(&url).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.number("x-ratelimit-remaining"), 0);
    assert_eq!(refused.number("x-ratelimit-reset"), NOW + 3600);
    assert!(refused.json()["message"].as_str().unwrap().starts_with("API rate limit exceeded"));
    assert!(refused.json()["documentation_url"].is_string());
    assert_eq!(github.credits_used(TOKEN), 2);

    github.advance(3600);
    let renewed = get(&url).await;
    assert_eq!(renewed.status, StatusCode::OK);
    assert_eq!(renewed.number("x-ratelimit-remaining"), 1);
    assert_eq!(renewed.number("x-ratelimit-reset"), NOW + 7200);
    assert_eq!(github.credits_used(TOKEN), 3);
}

#[tokio::test]
async fn a_secondary_limit_answers_with_retry_after_then_service_resumes() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs?status=queued", github.url());
    github.inject(Fault::SecondaryLimit { retry_after_secs: 60, status: 403 });
    github.inject(Fault::SecondaryLimit { retry_after_secs: 5, status: 429 });

    let limited = get(&url).await;
    assert_eq!(limited.status, StatusCode::FORBIDDEN);
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert!(limited.json()["message"].as_str().unwrap().starts_with("You have exceeded a secondary rate limit"));
    assert!(limited.number("x-ratelimit-remaining") > 0, "a secondary limit is not the primary one");
    let again = get(&url).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(again.header("retry-after"), Some("5"));

    assert_eq!(get(&url).await.status, StatusCode::OK);
    assert_eq!(github.credits_used(TOKEN), 1);
}

#[tokio::test]
async fn server_errors_and_a_primary_exhaustion_are_served_once_each() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs", github.url());
    github.inject(Fault::ServerError { status: 502 });
    github.inject(Fault::PrimaryExhausted);

    assert_eq!(get(&url).await.status, StatusCode::BAD_GATEWAY);
    let exhausted = get(&url).await;
    assert_eq!(exhausted.status, StatusCode::FORBIDDEN);
    assert_eq!(exhausted.number("x-ratelimit-remaining"), 0);
    assert!(exhausted.json()["message"].as_str().unwrap().starts_with("API rate limit exceeded"));
    let normal = get(&url).await;
    assert_eq!(normal.status, StatusCode::OK);
    assert_eq!(normal.number("x-ratelimit-remaining"), 4999);
}

#[tokio::test]
async fn a_fault_aimed_at_a_path_waits_for_a_matching_request() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    github.inject_on("/jobs", Fault::ServerError { status: 503 });

    assert_eq!(get(&format!("{}/repos/{REPO}/actions/runs", github.url())).await.status, StatusCode::OK);
    let jobs = format!("{}/repos/{REPO}/actions/runs/1/jobs", github.url());
    assert_eq!(get(&jobs).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&jobs).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_or_missing_credentials_are_refused() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs", github.url());
    github.inject(Fault::ServerError { status: 500 });

    let bad = get_with(client().get(&url).bearer_auth("ghp_unknown")).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.json()["message"], "Bad credentials");
    let none = get_with(client().get(&url)).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    install_crypto();
    let agentless = get_with(reqwest::Client::new().get(&url).bearer_auth(TOKEN)).await;
    assert_eq!(agentless.status, StatusCode::FORBIDDEN, "GitHub refuses requests without a User-Agent");

    let legacy = get_with(client().get(&url).header("authorization", format!("token {TOKEN}"))).await;
    assert_eq!(legacy.status, StatusCode::INTERNAL_SERVER_ERROR, "faults wait for an authenticated request");
    assert_eq!(
        get_with(client().get(&url).header("authorization", format!("token {TOKEN}"))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_slow_fault_delays_the_answer() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs", github.url());
    github.inject(Fault::Slow { delay: Duration::from_millis(300) });

    let started = Instant::now();
    let slow = get(&url).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(slow.status, StatusCode::OK);
    assert_eq!(github.credits_used(TOKEN), 1);
}

#[tokio::test]
async fn every_request_is_recorded_with_its_answer() {
    let github = github().await;
    github.add_job(REPO, 1, 11, &["self-hosted"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runs?status=queued&per_page=100", github.url());
    let etag = get(&url).await.header("etag").unwrap().to_owned();
    get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    get_with(client().get(&url).bearer_auth("ghp_unknown")).await;

    let recorded = github.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].path, "/repos/acme/api/actions/runs");
    assert_eq!(recorded[0].query.as_deref(), Some("status=queued&per_page=100"));
    assert_eq!(recorded.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 304, 401]);
    assert_eq!(recorded[0].if_none_match, None);
    assert_eq!(recorded[1].if_none_match.as_deref(), Some(etag.as_str()));
    let tokens: BTreeSet<_> = recorded.iter().filter_map(|r| r.token.as_deref()).collect();
    assert_eq!(tokens, BTreeSet::from([TOKEN, "ghp_unknown"]));

    github.clear_requests();
    assert!(github.requests().is_empty());
}

// Organisations: hooks, repositories, runner groups, registration tokens, App installations.

const ORG: &str = "acme";
const HOOK: &str = "https://ci.example.com/webhook";

async fn send(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> Answer {
    let mut request = client().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    get_with(request).await
}

fn hook_body(url: &str, secret: &str) -> Value {
    serde_json::json!({
        "name": "web",
        "active": true,
        "events": ["workflow_job"],
        "config": {"url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0"},
    })
}

#[tokio::test]
async fn organisation_hooks_are_created_listed_over_linked_pages_and_updated_in_place() {
    let github = github().await;
    github.add_org_repo(ORG, "api");
    let hooks = format!("{}/orgs/{ORG}/hooks", github.url());

    let created = send(reqwest::Method::POST, &hooks, TOKEN, Some(hook_body(HOOK, "first"))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.json()["id"].as_u64().unwrap();
    assert_eq!(created.json()["type"], "Organization");
    assert_eq!(created.json()["config"]["secret"], "********", "GitHub never shows the secret");
    assert_eq!(created.json()["url"], format!("{hooks}/{id}"));
    let again = send(reqwest::Method::POST, &hooks, TOKEN, Some(hook_body(HOOK, "second"))).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.body.contains("Hook already exists on this organization"), "{}", again.body);

    for i in 0..40 {
        github.add_org_hook(ORG, &format!("https://other-{i}.example.com/hook"), &["push"]);
    }
    let first = get(&format!("{hooks}?per_page=30")).await;
    assert_eq!(first.json().as_array().unwrap().len(), 30);
    let second = get(&first.link("next").expect("a second page")).await;
    assert_eq!(second.json().as_array().unwrap().len(), 11);
    assert_eq!(second.link("next"), None);

    let patch = serde_json::json!({"events": ["push", "workflow_job"], "config": {"url": HOOK, "content_type": "json", "secret": "rotated"}});
    let updated = send(reqwest::Method::PATCH, &format!("{hooks}/{id}"), TOKEN, Some(patch)).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    let ours = github.org_hooks(ORG).into_iter().find(|h| h.id == id).unwrap();
    assert_eq!(
        (ours.events, ours.secret.as_deref()),
        (vec!["push".to_owned(), "workflow_job".to_owned()], Some("rotated"))
    );
    assert_eq!(github.org_hooks(ORG).len(), 41);
    assert!(github.hooks("acme/api").is_empty(), "an organisation hook is no repository hook");
    let missing = send(reqwest::Method::PATCH, &format!("{hooks}/999999"), TOKEN, Some(hook_body(HOOK, "x"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn organisation_hooks_need_an_owner_and_name_the_organisation_permission() {
    let github = github().await;
    github.add_org(ORG);
    let hooks = format!("{}/orgs/{ORG}/hooks", github.url());
    assert_eq!(get(&format!("{}/orgs/nobody/hooks", github.url())).await.status, StatusCode::NOT_FOUND);

    github.set_org_access(TOKEN, ORG, fake_github::Access::Read);
    let member = get(&hooks).await;
    assert_eq!(member.status, StatusCode::NOT_FOUND, "a member who is not an owner does not see them");
    assert_eq!(member.header("x-accepted-github-permissions"), Some("organization_hooks=read"));
    let organisation = get(&format!("{}/orgs/{ORG}", github.url())).await;
    assert_eq!(organisation.status, StatusCode::OK, "any member reads the organisation");
    assert_eq!(
        (organisation.json()["login"].as_str(), organisation.json()["type"].as_str()),
        (Some(ORG), Some("Organization"))
    );

    github.set_org_access(TOKEN, ORG, fake_github::Access::FineGrainedWithoutAdminPermissions);
    let refused = send(reqwest::Method::POST, &hooks, TOKEN, Some(hook_body(HOOK, "s"))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.header("x-accepted-github-permissions"), Some("organization_hooks=write"));
    assert!(github.org_hooks(ORG).is_empty());
    let before = github.credits_used(TOKEN);
    assert_eq!(send(reqwest::Method::POST, &hooks, "ghp_unknown", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(github.credits_used(TOKEN), before, "refusals cost nothing");
}

#[tokio::test]
async fn an_organisations_repositories_come_newest_first_over_linked_pages_and_revalidate_for_free() {
    let github = github().await;
    let created: Vec<u64> = (0..150).map(|i| github.add_org_repo(ORG, &format!("repo-{i:03}"))).collect();
    github.add_repo("someone-else/api");
    github.set_archived("acme/repo-000", true);
    let first_url = format!("{}/orgs/{ORG}/repos?per_page=100", github.url());

    let first = get(&first_url).await;
    assert_eq!(first.status, StatusCode::OK);
    let second = get(&first.link("next").expect("a second page")).await;
    assert_eq!(second.link("next"), None);
    let listed: Vec<u64> = [&first, &second].iter().flat_map(|a| ids(&a.json())).collect();
    let newest_first: Vec<u64> = created.iter().rev().copied().collect();
    assert_eq!(listed, newest_first, "every repository of the organisation once, newest first");
    let oldest = &second.json()[49];
    assert_eq!((oldest["full_name"].as_str(), oldest["archived"].as_bool()), (Some("acme/repo-000"), Some(true)));
    assert_eq!(oldest["owner"]["type"], "Organization");
    assert!(first.number("x-ratelimit-remaining") > second.number("x-ratelimit-remaining"));

    let etag = first.header("etag").unwrap().to_owned();
    let credits = github.credits_used(TOKEN);
    let unchanged = get_with(client().get(&first_url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(github.credits_used(TOKEN), credits, "a 304 is free");
    github.add_org_repo(ORG, "newest");
    let changed = get_with(client().get(&first_url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(changed.status, StatusCode::OK, "a new repository changes the first page");
    assert_eq!(changed.json()[0]["name"], "newest");

    assert_eq!(get(&format!("{}/orgs/someone-else/repos", github.url())).await.status, StatusCode::NOT_FOUND);
}

fn jwt(app_id: u64, now: i64) -> String {
    let key = crate::common::app_keys::app_key_pair("fake-github org app");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.pkcs1.as_bytes()).unwrap();
    let claims = serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": app_id});
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap()
}

/// An App installed on `repos` of the organisation as installation `installation`; its token.
async fn installation_token(github: &FakeGitHub, installation: u64, repos: &[&str]) -> String {
    const APP: u64 = 31;
    github.add_app(APP, "Iv23liOrgApp", &crate::common::app_keys::app_key_pair("fake-github org app").public);
    github.add_installation(APP, installation, repos);
    let url = format!("{}/app/installations/{installation}/access_tokens", github.url());
    let minted = send(reqwest::Method::POST, &url, &jwt(APP, github.now()), None).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.body);
    minted.json()["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_installation_token_lists_its_installations_repositories_only_on_its_own_budget() {
    let github = github().await;
    for i in 0..30 {
        github.add_org_repo(ORG, &format!("repo-{i:02}"));
    }
    let chosen: Vec<String> = (0..25).map(|i| format!("acme/repo-{i:02}")).collect();
    let chosen_refs: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let token = installation_token(&github, 7, &chosen_refs).await;

    let mut names = Vec::new();
    let mut next = Some(format!("{}/installation/repositories?per_page=10", github.url()));
    let mut pages = 0;
    while let Some(url) = next {
        let page = send(reqwest::Method::GET, &url, &token, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.json()["total_count"], 25);
        assert_eq!(page.number("x-ratelimit-limit"), 5250, "5,000 and 50 for each repository beyond 20");
        names.extend(
            page.json()["repositories"].as_array().unwrap().iter().map(|r| r["full_name"].as_str().unwrap().to_owned()),
        );
        next = page.link("next");
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, chosen, "the installation's repositories, each once");
    assert_eq!(github.installation_credits_used(7), 3);
    assert_eq!(github.credits_used(TOKEN), 0);

    let org_repos =
        send(reqwest::Method::GET, &format!("{}/orgs/{ORG}/repos?per_page=100", github.url()), &token, None).await;
    assert_eq!(org_repos.json().as_array().unwrap().len(), 25, "an installation token sees only its repositories");
    let personal = get(&format!("{}/installation/repositories", github.url())).await;
    assert_eq!(personal.status, StatusCode::FORBIDDEN, "only an installation token lists an installation");
}

#[tokio::test]
async fn the_organisations_installation_is_found_with_the_apps_jwt_only() {
    let github = github().await;
    github.add_org_repo("beta", "web");
    let _ = installation_token(&github, 9, &["acme/api"]).await;
    let lookup = |org: &str| format!("{}/orgs/{org}/installation", github.url());

    let found = send(reqwest::Method::GET, &lookup(ORG), &jwt(31, github.now()), None).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.json()["id"], 9);
    let elsewhere = send(reqwest::Method::GET, &lookup("beta"), &jwt(31, github.now()), None).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND, "the App is not installed on beta");
    assert_eq!(github.installation_lookups(ORG), 1);
    assert_eq!(get(&lookup(ORG)).await.status, StatusCode::UNAUTHORIZED, "a personal token is no JWT");
}

#[tokio::test]
async fn organisation_registration_tokens_and_runner_groups_need_an_owner() {
    let github = github().await;
    let gpu = github.add_runner_group(ORG, "gpu");
    github.add_org_repo(ORG, "api");
    let url = format!("{}/orgs/{ORG}/actions/runners/registration-token", github.url());

    let minted = send(reqwest::Method::POST, &url, TOKEN, None).await;
    assert_eq!(minted.status, StatusCode::CREATED);
    let token = minted.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(github.registration_tokens_of(ORG), vec![token]);
    assert!(github.registration_tokens_of("acme/api").is_empty());
    let groups = get(&format!("{}/orgs/{ORG}/actions/runner-groups", github.url())).await;
    assert_eq!(groups.json()["total_count"], 2);
    let listed: Vec<(u64, String, bool)> = groups.json()["runner_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_u64().unwrap(), g["name"].as_str().unwrap().to_owned(), g["default"].as_bool().unwrap()))
        .collect();
    assert_eq!(listed, vec![(1, "Default".to_owned(), true), (gpu, "gpu".to_owned(), false)]);

    github.set_org_access(TOKEN, ORG, fake_github::Access::Read);
    let refused = send(reqwest::Method::POST, &url, TOKEN, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.header("x-accepted-github-permissions"), Some("organization_self_hosted_runners=write"));
    assert_eq!(github.registration_tokens().len(), 1);
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn repositories_are_private_until_made_public_and_listed_by_type() {
    let github = github().await;
    for name in ["api", "web", "docs"] {
        github.add_org_repo(ORG, name);
    }
    github.set_repo_public("acme/web", true);
    let repos = |query: &str| format!("{}/orgs/{ORG}/repos?{query}", github.url());

    let api = get(&format!("{}/repos/acme/api", github.url())).await.json();
    assert_eq!((api["private"].as_bool(), api["visibility"].as_str()), (Some(true), Some("private")));
    let web = get(&format!("{}/repos/acme/web", github.url())).await.json();
    assert_eq!((web["private"].as_bool(), web["visibility"].as_str()), (Some(false), Some("public")));

    let public = get(&repos("type=public")).await.json();
    assert_eq!(names(&public), ["web"]);
    assert_eq!((public[0]["private"].as_bool(), public[0]["visibility"].as_str()), (Some(false), Some("public")));
    let private = get(&repos("type=private")).await.json();
    assert_eq!(names(&private), ["docs", "api"], "newest first");
    assert_eq!((private[0]["private"].as_bool(), private[0]["visibility"].as_str()), (Some(true), Some("private")));
    for all in ["", "type=all", "type=forks"] {
        assert_eq!(names(&get(&repos(all)).await.json()), ["docs", "web", "api"], "{all:?} lists every one");
    }

    let first = get(&repos("type=private&per_page=1")).await;
    assert_eq!(names(&first.json()), ["docs"]);
    let next = first.link("next").expect("a second page");
    assert!(next.contains("type=private"), "{next}");
    assert_eq!(names(&get(&next).await.json()), ["api"]);

    let listed = get(&repos("type=public")).await;
    let etag = listed.header("etag").expect("an ETag").to_owned();
    let unchanged =
        get_with(client().get(repos("type=public")).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    github.set_repo_public("acme/docs", true);
    github.set_repo_public("acme/web", false);
    let changed = get_with(client().get(repos("type=public")).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(names(&changed.json()), ["docs"]);
    let web = get(&format!("{}/repos/acme/web", github.url())).await.json();
    assert_eq!((web["private"].as_bool(), web["visibility"].as_str()), (Some(true), Some("private")));
}

/// The runner group named `name` in a `GET /orgs/{org}/actions/runner-groups` answer.
fn group_named<'a>(list: &'a Value, name: &str) -> &'a Value {
    let groups = list["runner_groups"].as_array().unwrap();
    groups.iter().find(|g| g["name"] == name).unwrap_or_else(|| panic!("no group {name} in {list}"))
}

#[tokio::test]
async fn a_runner_groups_access_shows_in_the_group_list() {
    let github = github().await;
    let gpu = github.add_runner_group(ORG, "gpu");
    github.add_org_repo(ORG, "api");
    let url = format!("{}/orgs/{ORG}/actions/runner-groups", github.url());
    const BUILD: &str = "acme/api/.github/workflows/build.yml@refs/heads/main";

    let before = get(&url).await;
    assert_eq!(before.header("x-accepted-github-permissions"), Some("organization_self_hosted_runners=read"));
    let fresh = group_named(&before.json(), "gpu").clone();
    assert_eq!(
        (fresh["visibility"].as_str(), fresh["allows_public_repositories"].as_bool()),
        (Some("all"), Some(false))
    );
    assert_eq!((fresh["restricted_to_workflows"].as_bool(), fresh["inherited"].as_bool()), (Some(false), Some(false)));
    assert_eq!(fresh["selected_workflows"], serde_json::json!([]));
    assert_eq!(fresh.get("selected_repositories_url"), None, "only a selected group has one");
    assert_eq!(fresh["runners_url"], format!("{url}/{gpu}/runners"));

    github.set_runner_group_access(
        ORG,
        "gpu",
        fake_github::GroupAccess {
            visibility: "selected",
            allows_public_repositories: true,
            selected_repositories: vec!["acme/api".to_owned()],
            selected_workflows: vec![BUILD.to_owned()],
        },
    );
    github.set_runner_group_access(
        ORG,
        "Default",
        fake_github::GroupAccess { visibility: "private", ..fake_github::GroupAccess::default() },
    );
    let after =
        get_with(client().get(&url).bearer_auth(TOKEN).header("if-none-match", before.header("etag").unwrap())).await;
    assert_eq!(after.status, StatusCode::OK, "the access changed the list");
    let selected = group_named(&after.json(), "gpu").clone();
    assert_eq!(
        (selected["id"].as_u64(), selected["visibility"].as_str(), selected["allows_public_repositories"].as_bool()),
        (Some(gpu), Some("selected"), Some(true))
    );
    assert_eq!(selected["restricted_to_workflows"], true);
    assert_eq!(selected["selected_workflows"], serde_json::json!([BUILD]));
    assert_eq!(selected["selected_repositories_url"], format!("{url}/{gpu}/repositories"));
    let default = group_named(&after.json(), "Default").clone();
    assert_eq!(
        (default["id"].as_u64(), default["default"].as_bool(), default["visibility"].as_str()),
        (Some(1), Some(true), Some("private"))
    );
    assert_eq!(default.get("selected_repositories_url"), None);
}

#[tokio::test]
async fn a_selected_groups_repositories_are_listed_over_linked_pages_and_revalidate_for_free() {
    let github = github().await;
    for name in ["api", "web", "docs", "unselected"] {
        github.add_org_repo(ORG, name);
    }
    github.set_repo_public("acme/web", true);
    let gpu = github.add_runner_group(ORG, "gpu");
    let selected = |repos: &[&str]| fake_github::GroupAccess {
        visibility: "selected",
        selected_repositories: repos.iter().map(|r| (*r).to_owned()).collect(),
        ..fake_github::GroupAccess::default()
    };
    github.set_runner_group_access(ORG, "gpu", selected(&["acme/api", "acme/web", "acme/docs", "acme/missing"]));
    let groups = format!("{}/orgs/{ORG}/actions/runner-groups", github.url());
    let first_url = format!("{groups}/{gpu}/repositories?per_page=2");

    let first = get(&first_url).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.header("x-accepted-github-permissions"), Some("organization_self_hosted_runners=read"));
    assert_eq!(first.json()["total_count"], 3, "only repositories that exist");
    assert_eq!(names(&first.json()["repositories"]), ["api", "web"]);
    let shown: Vec<(bool, String)> = first.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["private"].as_bool().unwrap(), r["visibility"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(shown, [(true, "private".to_owned()), (false, "public".to_owned())], "api private, web public");
    let next = first.link("next").expect("a second page");
    assert_eq!(next, format!("{groups}/{gpu}/repositories?per_page=2&page=2"));
    let second = get(&next).await;
    assert_eq!(names(&second.json()["repositories"]), ["docs"]);
    assert_eq!(second.link("next"), None);

    let etag = first.header("etag").expect("an ETag").to_owned();
    let credits = github.credits_used(TOKEN);
    let unchanged = get_with(client().get(&first_url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(github.credits_used(TOKEN), credits, "a 304 is free");
    github.set_runner_group_access(ORG, "gpu", selected(&["acme/docs"]));
    let changed = get_with(client().get(&first_url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(changed.status, StatusCode::OK, "a new selection changes the answer");
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!((changed.json()["total_count"].as_u64(), changed.link("next")), (Some(1), None));
    assert_eq!(names(&changed.json()["repositories"]), ["docs"]);

    let default = get(&format!("{groups}/1/repositories")).await;
    assert_eq!((default.status, default.json()["total_count"].as_u64()), (StatusCode::OK, Some(0)));
    for unknown in [format!("{groups}/999/repositories"), format!("{groups}/gpu/repositories")] {
        assert_eq!(get(&unknown).await.status, StatusCode::NOT_FOUND, "{unknown}");
    }
    let nobody = format!("{}/orgs/nobody/actions/runner-groups/1/repositories", github.url());
    assert_eq!(get(&nobody).await.status, StatusCode::NOT_FOUND);

    github.set_org_access(TOKEN, ORG, fake_github::Access::Read);
    for url in [groups.clone(), first_url] {
        let member = get(&url).await;
        assert_eq!(member.status, StatusCode::FORBIDDEN, "a member who is not an owner: {url}");
        assert_eq!(member.header("x-accepted-github-permissions"), Some("organization_self_hosted_runners=read"));
    }
}

// Self-hosted runners: just-in-time configurations, lists, removal, and the runner's side.

fn jit_body(name: &str, group: u64, labels: &[&str]) -> Value {
    serde_json::json!({"name": name, "runner_group_id": group, "labels": labels, "work_folder": "_work"})
}

#[tokio::test]
async fn a_jit_configuration_registers_its_runner_once_per_name_and_maps_back_to_it() {
    let github = github().await;
    github.add_repo(REPO);
    let url = format!("{}/repos/{REPO}/actions/runners/generate-jitconfig", github.url());

    let minted = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("ci-linux-1", 1, &["linux", "gpu"]))).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.body);
    let runner = &minted.json()["runner"];
    let id = runner["id"].as_u64().unwrap();
    assert_eq!(
        (runner["name"].as_str(), runner["status"].as_str(), runner["busy"].as_bool()),
        (Some("ci-linux-1"), Some("offline"), Some(false))
    );
    let labels: Vec<&str> = runner["labels"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(labels, ["self-hosted", "linux", "gpu"]);
    let config = minted.json()["encoded_jit_config"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(&config).expect("an opaque base64 string");
    assert!(serde_json::from_slice::<Value>(&decoded).is_ok());
    assert_eq!(github.jit_configs_minted(), vec![config.clone()]);
    assert_eq!(github.jit_runner(&config), Some(id));
    let registered = github.runners_of(REPO);
    assert_eq!(registered.len(), 1);
    let view = &registered[0];
    assert_eq!((view.id, view.group_id, view.jit, view.status.as_str()), (id, 1, true, "offline"));
    assert_eq!((view.place.as_str(), view.work_folder.as_deref()), (REPO, Some("_work")));
    assert_eq!(github.credits_used(TOKEN), 1, "a 201 costs a credit");

    let taken = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("CI-linux-1", 1, &["linux"]))).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "runner names are case-insensitive");
    assert!(taken.body.contains("already exists"), "{}", taken.body);
    let other_group = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("ci-linux-2", 3, &["linux"]))).await;
    assert_eq!(other_group.status, StatusCode::NOT_FOUND, "a repository's runners have only group 1");
    for bad in [jit_body("", 1, &["linux"]), jit_body(&"x".repeat(65), 1, &["linux"]), jit_body("ci-linux-3", 1, &[])] {
        let refused = send(reqwest::Method::POST, &url, TOKEN, Some(bad)).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    }
    let no_group =
        send(reqwest::Method::POST, &url, TOKEN, Some(serde_json::json!({"name": "x", "labels": ["a"]}))).await;
    assert_eq!(no_group.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_group.body.contains("runner_group_id"), "{}", no_group.body);
    assert_eq!(github.runners_of(REPO).len(), 1);
    assert_eq!(github.credits_used(TOKEN), 1, "refusals are free here");

    assert_eq!(github.start_jit_runner(&config), Some(id));
    assert_eq!(github.runner(id).unwrap().status, "online");
    assert_eq!(github.start_jit_runner(&config), None, "a configuration starts its runner once");
    assert_eq!(github.start_jit_runner("bm90IG1pbmU="), None);
}

#[tokio::test]
async fn an_organisations_jit_runner_goes_to_its_group_and_an_unknown_group_is_not_found() {
    let github = github().await;
    let gpu = github.add_runner_group(ORG, "gpu");
    let url = format!("{}/orgs/{ORG}/actions/runners/generate-jitconfig", github.url());
    let minted = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("org-gpu-1", gpu, &["gpu"]))).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.body);
    assert_eq!(minted.header("x-accepted-github-permissions"), Some("organization_self_hosted_runners=write"));
    let runners = github.runners_of(ORG);
    assert_eq!((runners.len(), runners[0].group_id, runners[0].place.as_str()), (1, gpu, ORG));
    let unknown = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("org-gpu-2", 999, &["gpu"]))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let missing = format!("{}/orgs/nobody/actions/runners/generate-jitconfig", github.url());
    let nobody = send(reqwest::Method::POST, &missing, TOKEN, Some(jit_body("x", 1, &["a"]))).await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn runners_are_listed_over_linked_pages_revalidate_for_free_and_filter_by_name() {
    let github = github().await;
    for i in 0..150 {
        github.add_runner(REPO, &format!("runner-{i:03}"), &["linux"]);
    }
    github.add_runner("acme/web", "elsewhere", &[]);
    let first_url = format!("{}/repos/{REPO}/actions/runners?per_page=100", github.url());

    let first = get(&first_url).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.json()["total_count"], 150);
    assert_eq!(first.header("x-accepted-github-permissions"), Some("administration=read"));
    let second = get(&first.link("next").expect("a second page")).await;
    assert_eq!(second.link("next"), None);
    let names: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|a| {
            a.json()["runners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names.len(), 150);
    assert!(names.iter().all(|n| n.starts_with("runner-")), "only the repository's runners");
    let runner = &first.json()["runners"][0];
    assert_eq!(
        (runner["status"].as_str(), runner["busy"].as_bool(), runner["os"].as_str()),
        (Some("online"), Some(false), Some("Linux"))
    );

    let etag = first.header("etag").expect("an ETag").to_owned();
    let credits = github.credits_used(TOKEN);
    let unchanged = get_with(client().get(&first_url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(github.credits_used(TOKEN), credits, "a 304 is free");
    github.set_runner_busy(github.runners_of(REPO)[0].id, true);
    let changed = get_with(client().get(&first_url).bearer_auth(TOKEN).header("if-none-match", &etag)).await;
    assert_eq!(changed.status, StatusCode::OK, "a busy runner changes the page");
    assert_eq!(changed.json()["runners"][0]["busy"], true);

    let named = get(&format!("{}/repos/{REPO}/actions/runners?name=runner-042", github.url())).await;
    assert_eq!(named.json()["total_count"], 1);
    assert_eq!(named.json()["runners"][0]["name"], "runner-042");
}

#[tokio::test]
async fn a_busy_runner_is_not_deleted_and_a_jit_runner_is_gone_after_its_one_job() {
    let github = github().await;
    github.add_job(REPO, 10, 100, &["self-hosted", "linux"], JobState::Queued);
    let url = format!("{}/repos/{REPO}/actions/runners/generate-jitconfig", github.url());
    let minted = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("ci-1", 1, &["linux"]))).await;
    let config = minted.json()["encoded_jit_config"].as_str().unwrap().to_owned();
    let id = github.start_jit_runner(&config).unwrap();
    let runner_url = format!("{}/repos/{REPO}/actions/runners/{id}", github.url());

    github.runner_takes_job(id, 100);
    let busy = github.runner(id).unwrap();
    assert_eq!((busy.busy, busy.job), (true, Some(100)));
    let job = get(&format!("{}/repos/{REPO}/actions/jobs/100", github.url())).await.json();
    assert_eq!(
        (job["status"].as_str(), job["runner_id"].as_u64(), job["runner_name"].as_str()),
        (Some("in_progress"), Some(id), Some("ci-1"))
    );
    let refused = send(reqwest::Method::DELETE, &runner_url, TOKEN, None).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("still running a job"), "{}", refused.body);
    assert!(github.runner(id).is_some());

    github.runner_finishes_job(id);
    assert_eq!(github.runner(id), None, "GitHub removes a just-in-time runner after its job");
    assert_eq!(github.jobs()[0].status, JobState::Completed);
    assert_eq!(send(reqwest::Method::DELETE, &runner_url, TOKEN, None).await.status, StatusCode::NOT_FOUND);

    let classic = github.add_runner(REPO, "long-lived", &[]);
    github.add_job(REPO, 11, 101, &["self-hosted"], JobState::Queued);
    github.runner_takes_job(classic, 101);
    github.runner_finishes_job(classic);
    assert_eq!(github.runner(classic).map(|r| (r.busy, r.job)), Some((false, None)), "a classic runner stays");
    github.set_runner_status(classic, "offline");
    let one = get(&format!("{}/repos/{REPO}/actions/runners/{classic}", github.url())).await;
    assert_eq!(one.json()["status"], "offline");
    let url = format!("{}/repos/{REPO}/actions/runners/{classic}", github.url());
    let deleted = send(reqwest::Method::DELETE, &url, TOKEN, None).await;
    assert_eq!((deleted.status, deleted.body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert!(github.runners_of(REPO).is_empty());
    let elsewhere = github.add_runner("acme/web", "theirs", &[]);
    let wrong_place = format!("{}/repos/{REPO}/actions/runners/{elsewhere}", github.url());
    assert_eq!(send(reqwest::Method::DELETE, &wrong_place, TOKEN, None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn runner_endpoints_need_admin_rights_and_an_installation_token_the_runner_permission() {
    let github = github().await;
    github.add_org_repo(ORG, "api");
    let repo_jit = format!("{}/repos/{REPO}/actions/runners/generate-jitconfig", github.url());
    let org_jit = format!("{}/orgs/{ORG}/actions/runners/generate-jitconfig", github.url());

    github.set_access(TOKEN, REPO, fake_github::Access::Read);
    let reader = send(reqwest::Method::POST, &repo_jit, TOKEN, Some(jit_body("a", 1, &["x"]))).await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);
    assert_eq!(reader.header("x-accepted-github-permissions"), Some("administration=write"));
    let list = get(&format!("{}/repos/{REPO}/actions/runners", github.url())).await;
    assert_eq!(
        (list.status, list.header("x-accepted-github-permissions")),
        (StatusCode::FORBIDDEN, Some("administration=read"))
    );
    github.set_org_access(TOKEN, ORG, fake_github::Access::FineGrainedWithoutAdminPermissions);
    let fine_grained = send(reqwest::Method::POST, &org_jit, TOKEN, Some(jit_body("a", 1, &["x"]))).await;
    assert_eq!(fine_grained.status, StatusCode::FORBIDDEN);
    assert!(github.runners_of(ORG).is_empty() && github.runners_of(REPO).is_empty());

    // An installation token reaches runners with the runner permission only.
    let _all_the_apps = installation_token(&github, 12, &["acme/api"]).await;
    let mint = format!("{}/app/installations/12/access_tokens", github.url());
    let body = serde_json::json!({"permissions": {"actions": "read", "metadata": "read"}});
    let read_only = send(reqwest::Method::POST, &mint, &jwt(31, github.now()), Some(body)).await;
    let read_only = read_only.json()["token"].as_str().unwrap().to_owned();
    let refused = send(reqwest::Method::POST, &repo_jit, &read_only, Some(jit_body("a", 1, &["x"]))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("Resource not accessible by integration"), "{}", refused.body);
    assert_eq!(refused.header("x-accepted-github-permissions"), Some("administration=write"));
    let body =
        serde_json::json!({"permissions": {"administration": "write", "organization_self_hosted_runners": "write"}});
    let runner_admin = send(reqwest::Method::POST, &mint, &jwt(31, github.now()), Some(body)).await;
    assert_eq!(runner_admin.json()["permissions"]["administration"], "write");
    let runner_admin = runner_admin.json()["token"].as_str().unwrap().to_owned();
    let repo_ok = send(reqwest::Method::POST, &repo_jit, &runner_admin, Some(jit_body("a", 1, &["x"]))).await;
    assert_eq!(repo_ok.status, StatusCode::CREATED, "{}", repo_ok.body);
    let org_ok = send(reqwest::Method::POST, &org_jit, &runner_admin, Some(jit_body("b", 1, &["x"]))).await;
    assert_eq!(org_ok.status, StatusCode::CREATED, "{}", org_ok.body);
    github.add_org("beta");
    let other_org = format!("{}/orgs/beta/actions/runners/generate-jitconfig", github.url());
    let outside = send(reqwest::Method::POST, &other_org, &runner_admin, Some(jit_body("c", 1, &["x"]))).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN, "the installation is not on beta");
    assert_eq!(github.installation_credits_used(12), 2);
}

#[tokio::test]
async fn faults_and_rate_limits_reach_the_runner_endpoints() {
    let github = github().await;
    github.add_repo(REPO);
    let url = format!("{}/repos/{REPO}/actions/runners/generate-jitconfig", github.url());

    github.inject_on("generate-jitconfig", Fault::SecondaryLimit { retry_after_secs: 30, status: 429 });
    let limited = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("a", 1, &["x"]))).await;
    assert_eq!((limited.status, limited.header("retry-after")), (StatusCode::TOO_MANY_REQUESTS, Some("30")));
    github.inject_on("/actions/runners", Fault::ServerError { status: 502 });
    assert_eq!(get(&format!("{}/repos/{REPO}/actions/runners", github.url())).await.status, StatusCode::BAD_GATEWAY);
    assert!(github.runners_of(REPO).is_empty() && github.jit_configs_minted().is_empty());

    github.set_remaining(TOKEN, 1);
    let last = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("a", 1, &["x"]))).await;
    assert_eq!((last.status, last.number("x-ratelimit-remaining")), (StatusCode::CREATED, 0));
    let exhausted = send(reqwest::Method::POST, &url, TOKEN, Some(jit_body("b", 1, &["x"]))).await;
    assert_eq!(exhausted.status, StatusCode::FORBIDDEN);
    assert!(exhausted.body.contains("rate limit"), "{}", exhausted.body);
    assert_eq!(github.runners_of(REPO).len(), 1);
}
