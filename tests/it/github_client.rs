//! The GitHub REST client against small axum stubs on loopback: pagination, conditional
//! requests, rate-limit answers, errors, and the token staying secret.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Response};
use gaa::github::{GitHubClient, GitHubError, JobFilter, RunStatus, Token};
use gaa::metrics::Metrics;
use serde_json::{Value, json};

const SECRET: &str = "ghp_thisIsTheSecretTokenValue0123456789";

/// One request the stub saw.
#[derive(Clone)]
struct Seen {
    /// Path and query, as sent.
    uri: String,
    headers: HeaderMap,
    /// `http://127.0.0.1:PORT`, for absolute `Link` targets.
    base: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    fn page(&self) -> u32 {
        self.query("page").and_then(|p| p.parse().ok()).unwrap_or(1)
    }
}

type Reply = dyn Fn(&Seen) -> Response<Body> + Send + Sync;

struct StubState {
    reply: Box<Reply>,
    seen: Mutex<Vec<Seen>>,
    base: String,
}

/// A loopback HTTP server answering every request with `reply`.
struct Stub {
    state: Arc<StubState>,
    server: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start(reply: impl Fn(&Seen) -> Response<Body> + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(StubState { reply: Box::new(reply), seen: Mutex::new(Vec::new()), base });
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { state, server }
    }

    /// The API URL to give the client, with a trailing slash the client must strip.
    fn api_url(&self) -> String {
        format!("{}/", self.state.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(state): State<Arc<StubState>>, request: Request) -> Response<Body> {
    let uri = request.uri().path_and_query().map_or_else(|| request.uri().path().to_string(), |pq| pq.to_string());
    let seen = Seen { uri, headers: request.headers().clone(), base: state.base.clone() };
    let response = (state.reply)(&seen);
    state.seen.lock().unwrap().push(seen);
    response
}

fn answer(status: u16, headers: &[(&str, String)], body: Option<Value>) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    match body {
        Some(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

fn rate_headers(remaining: u64) -> Vec<(&'static str, String)> {
    vec![
        ("x-ratelimit-limit", "5000".into()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining).to_string()),
        ("x-ratelimit-reset", "1767225600".into()),
        ("x-ratelimit-resource", "core".into()),
    ]
}

/// Job and run times are relative to the day the test runs, never fixed dates.
fn an_hour_ago() -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn run(id: u64) -> Value {
    json!({"id": id, "name": "CI", "status": "queued", "conclusion": null, "run_attempt": 1,
           "created_at": an_hour_ago(), "updated_at": an_hour_ago(),
           "head_branch": "main", "event": "push", "workflow_id": 7})
}

fn job(id: u64) -> Value {
    json!({"id": id, "run_id": 42, "run_attempt": 1, "status": "queued", "conclusion": null,
           "labels": ["self-hosted", "linux"], "created_at": an_hour_ago(), "started_at": null,
           "runner_id": null, "runner_name": null, "name": format!("job {id}"), "steps": []})
}

fn client(stub: &Stub) -> (GitHubClient, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (GitHubClient::new(&stub.api_url(), metrics.clone()).unwrap(), metrics)
}

/// Runs 1..=230 over three pages: absolute link, then a relative one; id 100 also shows up
/// again on page 2, as an item does when the list shifts between requests.
fn three_pages_of_runs(seen: &Seen) -> Response<Body> {
    let status = seen.query("status").unwrap_or_default();
    let path = format!("/repos/acme/api/actions/runs?status={status}&per_page=100");
    let (ids, link): (Vec<u64>, Option<String>) = match seen.page() {
        1 => (
            (1..=100).collect(),
            Some(format!(r#"<{base}{path}&page=2>; rel="next", <{base}{path}&page=3>; rel="last""#, base = seen.base)),
        ),
        2 => (
            (100..=200).collect(),
            Some(format!(r#"<{path}&page=1>; rel="prev", <{path}&page=3>; rel="next", <{path}&page=3>; rel="last""#)),
        ),
        _ => ((201..=230).collect(), None),
    };
    let mut headers = rate_headers(4990);
    headers.extend(link.map(|l| ("link", l)));
    let runs: Vec<Value> = ids.iter().map(|id| run(*id)).collect();
    answer(200, &headers, Some(json!({"total_count": 230, "workflow_runs": runs})))
}

/// Three pages of jobs, each with an ETag; a matching `If-None-Match` gets a bodiless 304.
fn jobs_with_etags(seen: &Seen) -> Response<Body> {
    let page = seen.page();
    let etag = format!("\"jobs-page-{page}\"");
    let mut headers = rate_headers(4000);
    if seen.header("if-none-match") == Some(etag.as_str()) {
        headers.push(("etag", etag));
        return answer(304, &headers, None);
    }
    headers.push(("etag", etag));
    if page < 3 {
        headers.push((
            "link",
            format!(
                r#"<{}/repos/acme/api/actions/runs/42/jobs?per_page=100&page={}>; rel="next""#,
                seen.base,
                page + 1
            ),
        ));
    }
    let jobs: Vec<Value> = (1..=3).map(|i| job(u64::from(page) * 10 + i)).collect();
    answer(200, &headers, Some(json!({"total_count": 9, "jobs": jobs})))
}

#[tokio::test]
async fn three_pages_are_followed_through_the_link_header() {
    let stub = Stub::start(three_pages_of_runs).await;
    let (client, metrics) = client(&stub);

    let fetched = client.list_runs(&Token::new(SECRET), "acme/api", RunStatus::Queued).await.unwrap();

    let ids: Vec<u64> = fetched.value.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=230).collect::<Vec<_>>());
    assert_eq!((fetched.requests, fetched.credits, fetched.not_modified), (3, 3, 0));
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].uri, "/repos/acme/api/actions/runs?status=queued&per_page=100");
    assert_eq!(seen[2].page(), 3);
    assert!(metrics.encode().contains(r#"gaa_github_requests_total{endpoint="runs",status="200"} 3"#));
}

#[tokio::test]
async fn every_request_carries_the_headers_github_asks_for() {
    let stub = Stub::start(three_pages_of_runs).await;
    let (client, _) = client(&stub);

    client.list_runs(&Token::new(format!("{SECRET}\n")), "acme/api", RunStatus::InProgress).await.unwrap();

    for seen in stub.seen() {
        assert_eq!(seen.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
        assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
        assert!(seen.header("user-agent").unwrap().starts_with("github-action-autoscaler/"));
        assert_eq!(seen.query("status").as_deref(), Some("in_progress"));
        assert_eq!(seen.query("per_page").as_deref(), Some("100"));
    }
}

#[tokio::test]
async fn a_second_listing_revalidates_and_reuses_the_pages() {
    let stub = Stub::start(jobs_with_etags).await;
    let (client, metrics) = client(&stub);
    let token = Token::new(SECRET);

    let first = client.list_jobs(&token, "acme/api", 42, JobFilter::Latest).await.unwrap();
    let second = client.list_jobs(&token, "acme/api", 42, JobFilter::Latest).await.unwrap();

    assert_eq!((first.requests, first.credits, first.not_modified), (3, 3, 0));
    assert_eq!((second.requests, second.credits, second.not_modified), (3, 0, 3));
    assert_eq!(second.value, first.value);
    assert_eq!(second.value.len(), 9);
    let seen = stub.seen();
    assert!(seen[..3].iter().all(|s| s.header("if-none-match").is_none()));
    let validators: Vec<_> = seen[3..].iter().map(|s| s.header("if-none-match").unwrap().to_string()).collect();
    assert_eq!(validators, ["\"jobs-page-1\"", "\"jobs-page-2\"", "\"jobs-page-3\""]);
    assert!(metrics.encode().contains("gaa_github_not_modified_total 3"));
}

#[tokio::test]
async fn validators_are_not_shared_between_tokens() {
    let stub = Stub::start(jobs_with_etags).await;
    let (client, _) = client(&stub);

    client.list_jobs(&Token::new(SECRET), "acme/api", 42, JobFilter::Latest).await.unwrap();
    let other = client.list_jobs(&Token::new("ghp_another"), "acme/api", 42, JobFilter::Latest).await.unwrap();

    assert_eq!((other.credits, other.not_modified), (3, 0));
    assert!(stub.seen()[3..].iter().all(|s| s.header("if-none-match").is_none()));
}

#[tokio::test]
async fn a_changed_resource_replaces_the_remembered_copy() {
    let version = Arc::new(AtomicU32::new(1));
    let current = version.clone();
    let stub = Stub::start(move |seen| {
        let version = current.load(Ordering::SeqCst);
        let etag = format!("\"v{version}\"");
        if seen.header("if-none-match") == Some(etag.as_str()) {
            return answer(304, &[("etag", etag)], None);
        }
        let status = if version == 1 { "queued" } else { "in_progress" };
        answer(200, &[("etag", etag)], Some(json!({"id": 5, "run_id": 42, "status": status, "runner_id": version})))
    })
    .await;
    let (client, _) = client(&stub);
    let token = Token::new(SECRET);

    let first = client.get_job(&token, "acme/api", 5).await.unwrap();
    version.store(2, Ordering::SeqCst);
    let changed = client.get_job(&token, "acme/api", 5).await.unwrap();
    let unchanged = client.get_job(&token, "acme/api", 5).await.unwrap();

    assert_eq!(first.value.unwrap().status.as_deref(), Some("queued"));
    assert_eq!((changed.credits, changed.not_modified), (1, 0));
    assert_eq!(changed.value.as_ref().unwrap().status.as_deref(), Some("in_progress"));
    assert_eq!((unchanged.credits, unchanged.not_modified), (0, 1));
    assert_eq!(unchanged.value, changed.value);
    assert_eq!(stub.seen()[2].header("if-none-match"), Some("\"v2\""));
}

#[tokio::test]
async fn retry_after_on_a_403_is_a_secondary_limit() {
    let stub = Stub::start(|_| {
        answer(
            403,
            &[("retry-after", "7".into()), ("x-ratelimit-remaining", "4000".into())],
            Some(json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."})),
        )
    })
    .await;
    let (client, _) = client(&stub);

    let error = client.list_runs(&Token::new(SECRET), "acme/api", RunStatus::Queued).await.unwrap_err();

    assert_eq!(error, GitHubError::RateLimited { retry_after: Duration::from_secs(7), secondary: true });
}

#[tokio::test]
async fn an_exhausted_quota_waits_until_its_reset() {
    let reset = jiff::Timestamp::now().as_second() + 30;
    let stub = Stub::start(move |_| {
        let headers = [
            ("x-ratelimit-limit", "5000".to_string()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-used", "5000".into()),
            ("x-ratelimit-reset", reset.to_string()),
        ];
        answer(403, &headers, Some(json!({"message": "API rate limit exceeded for user ID 1."})))
    })
    .await;
    let (client, _) = client(&stub);
    let token = Token::new(SECRET);

    let error = client.list_jobs(&token, "acme/api", 42, JobFilter::Latest).await.unwrap_err();
    let GitHubError::RateLimited { retry_after, secondary: false } = error else { panic!("{error:?}") };
    assert!((28..=31).contains(&retry_after.as_secs()), "{retry_after:?}");

    // With the clock pinned, the wait is exact.
    let pinned = client.clone().with_clock(move || reset - 30);
    let error = pinned.list_jobs(&token, "acme/api", 42, JobFilter::Latest).await.unwrap_err();
    assert_eq!(error, GitHubError::RateLimited { retry_after: Duration::from_secs(30), secondary: false });
    assert_eq!(client.rate_limit(&token).map(|r| (r.remaining, r.reset)), Some((0, reset)));
}

#[tokio::test]
async fn a_429_without_headers_waits_at_least_a_minute() {
    let stub = Stub::start(|_| answer(429, &[], None)).await;
    let (client, _) = client(&stub);

    let error = client.get_job(&Token::new(SECRET), "acme/api", 5).await.unwrap_err();

    let GitHubError::RateLimited { retry_after, secondary: true } = error else { panic!("{error:?}") };
    assert!(retry_after >= Duration::from_secs(60));
}

#[tokio::test]
async fn a_403_that_is_no_rate_limit_is_forbidden() {
    let stub = Stub::start(|_| {
        answer(403, &rate_headers(4000), Some(json!({"message": "Resource not accessible by integration"})))
    })
    .await;
    let (client, _) = client(&stub);

    let error = client.list_runs(&Token::new(SECRET), "acme/api", RunStatus::Waiting).await.unwrap_err();

    assert_eq!(error, GitHubError::Forbidden { message: "Resource not accessible by integration".into() });
}

#[tokio::test]
async fn server_errors_and_refusals_are_told_apart() {
    let stub = Stub::start(|seen| match seen.uri.as_str() {
        u if u.starts_with("/repos/acme/down/") => answer(502, &[], Some(json!({"message": "Server Error"}))),
        u if u.starts_with("/repos/acme/locked/") => answer(401, &[], Some(json!({"message": "Bad credentials"}))),
        _ => answer(404, &rate_headers(4000), Some(json!({"message": "Not Found"}))),
    })
    .await;
    let (client, metrics) = client(&stub);
    let token = Token::new(SECRET);

    assert_eq!(
        client.list_runs(&token, "acme/down", RunStatus::Queued).await,
        Err(GitHubError::Server { status: 502 })
    );
    assert_eq!(client.list_jobs(&token, "acme/locked", 1, JobFilter::Latest).await, Err(GitHubError::Unauthorized));
    assert_eq!(client.list_jobs(&token, "acme/gone", 1, JobFilter::Latest).await, Err(GitHubError::NotFound));
    let missing = client.get_job(&token, "acme/gone", 5).await.unwrap();
    assert_eq!((missing.value, missing.requests, missing.credits), (None, 1, 0));
    assert!(metrics.encode().contains(r#"gaa_github_requests_total{endpoint="job",status="404"} 1"#));
}

#[tokio::test]
async fn answers_missing_optional_fields_still_decode() {
    let stub = Stub::start(|seen| {
        if seen.uri.contains("/actions/jobs/") {
            return answer(200, &[], Some(json!({"id": 5, "status": "queued", "labels": null})));
        }
        answer(
            200,
            &[],
            Some(json!({"jobs": [{"id": 6}, {"id": 7, "run_id": 42, "runner_id": 3, "unknown": {"x": 1}}]})),
        )
    })
    .await;
    let (client, _) = client(&stub);
    let token = Token::new(SECRET);

    let job = client.get_job(&token, "acme/api", 5).await.unwrap().value.unwrap();
    assert_eq!((job.id, job.status.as_deref(), job.labels.len(), job.run_attempt), (5, Some("queued"), 0, None));
    let jobs = client.list_jobs(&token, "acme/api", 42, JobFilter::Latest).await.unwrap().value;
    assert_eq!(jobs.iter().map(|j| (j.id, j.runner_id)).collect::<Vec<_>>(), [(6, None), (7, Some(3))]);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_decode_error() {
    let stub = Stub::start(|_| Response::builder().status(200).body(Body::from("<html>oops</html>")).unwrap()).await;
    let (client, _) = client(&stub);

    let error = client.list_runs(&Token::new(SECRET), "acme/api", RunStatus::Queued).await.unwrap_err();

    assert!(matches!(error, GitHubError::Decode(_)), "{error:?}");
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_refused() {
    let stub = Stub::start(|_| {
        let link = r#"<https://evil.example.com/steal?page=2>; rel="next""#.to_string();
        answer(200, &[("link", link)], Some(json!({"total_count": 1, "workflow_runs": [{"id": 1}]})))
    })
    .await;
    let (client, _) = client(&stub);

    let error = client.list_runs(&Token::new(SECRET), "acme/api", RunStatus::Queued).await.unwrap_err();

    assert!(matches!(error, GitHubError::Pagination(_)), "{error:?}");
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn no_answer_is_an_http_error_counted_as_such() {
    // A port that was just free: nothing listens there any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let metrics = Arc::new(Metrics::new());
    let client = GitHubClient::new(&format!("http://{addr}"), metrics.clone()).unwrap();

    let error = client.list_jobs(&Token::new(SECRET), "acme/api", 1, JobFilter::Latest).await.unwrap_err();

    assert!(matches!(error, GitHubError::Http(_)), "{error:?}");
    assert!(metrics.encode().contains(r#"gaa_github_requests_total{endpoint="jobs",status="error"} 1"#));
}

#[tokio::test]
async fn the_token_appears_in_no_error() {
    let stub = Stub::start(|seen| {
        let secret_echo = json!({"message": "Bad credentials"});
        match seen.uri.split('/').nth(3).unwrap_or("") {
            "unauthorized" => answer(401, &[], Some(secret_echo)),
            "forbidden" => answer(403, &[], Some(json!({"message": "Must have admin rights to Repository."}))),
            "limited" => answer(429, &[("retry-after", "3".into())], None),
            "exhausted" => answer(403, &[("x-ratelimit-remaining", "0".into())], None),
            "broken" => answer(503, &[], None),
            "garbled" => answer(200, &[], Some(json!({"workflow_runs": "not a list"}))),
            _ => answer(200, &[("link", "<http://elsewhere.invalid/x>; rel=\"next\"".into())], Some(json!({}))),
        }
    })
    .await;
    let (client, _) = client(&stub);
    let token = Token::new(SECRET);

    let mut errors = Vec::new();
    for repo in ["unauthorized", "forbidden", "limited", "exhausted", "broken", "garbled", "leaky"] {
        errors.push(client.list_runs(&token, &format!("acme/{repo}"), RunStatus::Queued).await.unwrap_err());
    }
    errors.push(client.list_runs(&token, "acme/../../x", RunStatus::Queued).await.unwrap_err());
    errors.push(client.get_job(&Token::new("bad\ntoken\u{7f}"), "acme/api", 1).await.unwrap_err());
    let closed = GitHubClient::new("http://127.0.0.1:1", Arc::new(Metrics::new())).unwrap();
    errors.push(closed.get_job(&token, "acme/api", 1).await.unwrap_err());

    assert_eq!(errors.len(), 10);
    for error in &errors {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(SECRET) && !shown.contains("TheSecret"), "{shown}");
    }
    let shown = format!("{token} {token:?} {client:?}");
    assert!(!shown.contains("TheSecret"), "{shown}");
}

#[tokio::test]
async fn rate_limit_headers_are_remembered_per_token() {
    let stub = Stub::start(|seen| {
        let remaining = if seen.header("authorization") == Some("Bearer ghp_first") { 4999 } else { 12 };
        answer(200, &rate_headers(remaining), Some(json!({"total_count": 0, "workflow_runs": []})))
    })
    .await;
    let (client, metrics) = client(&stub);
    let (first, second) = (Token::new("ghp_first"), Token::new("ghp_second"));

    client.list_runs(&first, "acme/api", RunStatus::Queued).await.unwrap();
    client.list_runs(&second, "acme/web", RunStatus::Queued).await.unwrap();

    let first_limit = client.rate_limit(&first).unwrap();
    assert_eq!((first_limit.limit, first_limit.remaining, first_limit.used), (5000, 4999, 1));
    assert_eq!((first_limit.reset, first_limit.resource.as_deref()), (1_767_225_600, Some("core")));
    assert_eq!(client.rate_limit(&second).unwrap().remaining, 12);
    assert_eq!(client.rate_limit(&Token::new("ghp_unused")), None);
    let text = metrics.encode();
    assert!(text.contains(&format!(r#"gaa_github_credits_remaining{{token="{}"}} 4999"#, first.id())), "{text}");
    assert!(text.contains(&format!(r#"gaa_github_credits_remaining{{token="{}"}} 12"#, second.id())), "{text}");
}

#[tokio::test]
async fn a_run_is_read_conditionally_and_a_runs_jobs_of_every_attempt_asked_for_by_filter() {
    let stub = Stub::start(|seen| {
        let mut headers = rate_headers(4000);
        headers.push(("etag", "\"run-9\"".into()));
        match seen.uri.split('?').next().unwrap_or_default() {
            "/repos/acme/api/actions/runs/9" if seen.header("if-none-match") == Some("\"run-9\"") => {
                answer(304, &headers, None)
            }
            "/repos/acme/api/actions/runs/9" => {
                answer(200, &headers, Some(json!({"id": 9, "status": "completed", "conclusion": "cancelled"})))
            }
            "/repos/acme/api/actions/runs/9/jobs" => {
                answer(200, &headers, Some(json!({"total_count": 1, "jobs": [job(1)]})))
            }
            _ => answer(404, &rate_headers(4000), Some(json!({"message": "Not Found"}))),
        }
    })
    .await;
    let (client, metrics) = client(&stub);
    let token = Token::new(SECRET);

    let first = client.get_run(&token, "acme/api", 9).await.unwrap();
    let run = first.value.clone().unwrap();
    assert_eq!((run.id, run.status.as_deref(), run.conclusion.as_deref()), (9, Some("completed"), Some("cancelled")));
    let again = client.get_run(&token, "acme/api", 9).await.unwrap();
    assert_eq!((again.value, again.credits, again.not_modified), (first.value, 0, 1));
    assert_eq!(client.get_run(&token, "acme/api", 10).await.unwrap().value, None, "a deleted run is None");
    assert!(metrics.encode().contains(r#"gaa_github_requests_total{endpoint="run",status="200"} 1"#));

    client.list_jobs(&token, "acme/api", 9, JobFilter::All).await.unwrap();
    let seen = stub.seen();
    assert_eq!(seen.last().unwrap().uri, "/repos/acme/api/actions/runs/9/jobs?per_page=100&filter=all");
}
