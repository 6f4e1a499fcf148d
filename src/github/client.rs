//! The GitHub REST client the reconciler uses to list queued and in-progress Actions work, and
//! to ask about the runs of jobs those lists no longer show.
//!
//! Cheap on the rate limit by construction:
//! - every listing asks for `per_page=100` and follows the `Link` header's `rel="next"` URL;
//! - every GET is conditional once we hold an `ETag` for its URL: a `304 Not Modified` costs no
//!   primary-limit credit (GitHub, "Best practices for using the REST API", *Use conditional
//!   requests if appropriate*), and we reuse the page we kept;
//! - rate-limit answers (403/429) become [`GitHubError::RateLimited`] with the wait GitHub asks
//!   for, so the caller stops instead of hammering (see [`rate_limit_wait`]).
//!
//! The remembered pages are keyed by token *and* URL. GitHub answers with
//! `Vary: Accept, Authorization, Cookie`: the ETag is a property of what this authorization
//! sees, a validator from one token does not produce a 304 for another (github/docs#34689), and
//! a 304 is only free "if the request was made while correctly authorized with an Authorization
//! header". Sharing pages across tokens would also hand one token's view to another.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::GitHubError;
use super::etag_cache::{CACHE_MAX_BYTES, CACHE_MAX_ENTRIES, CacheKey, EtagCache};
use super::models::{WorkflowJob, WorkflowJobList, WorkflowRun, WorkflowRunList};
use super::rate_limit::{RateLimit, header_str};
// Kept at their old paths for callers outside github/; new code imports them from github/.
use super::rate_limit::rate_limit_wait;
use super::token::{Budget, Token};
use crate::clock::{Clock, system_clock};
use crate::metrics::Metrics;

/// Sent on every request, as GitHub asks (requests without one are rejected).
pub const USER_AGENT: &str = concat!("github-action-autoscaler/", env!("CARGO_PKG_VERSION"));
/// The REST API version these models follow.
pub const API_VERSION: &str = "2022-11-28";
/// GitHub's maximum page size: fewer pages, fewer requests.
pub const PER_PAGE: u32 = 100;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A listing longer than this is refused rather than silently cut: a partial listing would make
/// the reconciler believe jobs had vanished. (`status=` filters return at most 1,000 runs.)
const MAX_PAGES: usize = 100;
const MAX_BODY_BYTES: usize = 32 << 20;
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
const MAX_ERROR_MESSAGE_CHARS: usize = 300;
/// Budgets (tokens, installations, Apps) whose last rate-limit headers we keep.
const MAX_TRACKED_TOKENS: usize = 1024;

const X_GITHUB_API_VERSION: HeaderName = HeaderName::from_static("x-github-api-version");
const ACCEPT_GITHUB_JSON: &str = "application/vnd.github+json";

/// The `status=` filter of a runs listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    InProgress,
    /// Held by a deployment protection rule.
    Waiting,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Waiting => "waiting",
        }
    }
}

/// The `filter=` of a run's jobs listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobFilter {
    /// The jobs of the run's latest attempt.
    Latest,
    /// The jobs of every attempt.
    All,
}

impl JobFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::All => "all",
        }
    }
}

/// A value and what fetching it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<T> {
    pub value: T,
    /// HTTP requests sent.
    pub requests: u32,
    /// Of those, answers `304 Not Modified` (free).
    pub not_modified: u32,
    /// Of those, `200` answers: what the primary rate limit was charged.
    pub credits: u32,
}

impl<T> Fetched<T> {
    pub(super) fn cost_only(value: T) -> Self {
        Self { value, requests: 0, not_modified: 0, credits: 0 }
    }
}

/// The `rel="next"` target of a `Link` header, as written (maybe relative).
pub(crate) fn next_link(value: &str) -> Option<&str> {
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params = &after[close + 1..];
        // Up to the next link, without the comma that separates the two.
        let params = params[..params.find('<').unwrap_or(params.len())].trim_end().trim_end_matches(',');
        let is_next = params.split(';').filter_map(|p| p.trim().split_once('=')).any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("rel")
                && value.trim().trim_matches('"').split_ascii_whitespace().any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.trim());
        }
        rest = &after[close + 1..];
    }
    None
}

/// `owner/name` with GitHub's name characters only, so it is safe in a URL path.
pub(super) fn checked_repository(repo: &str) -> Result<&str, GitHubError> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(repo),
        _ => Err(GitHubError::InvalidRepository(repo.chars().take(200).collect())),
    }
}

/// Makes ring the process's rustls provider unless one is installed already: reqwest is built
/// with `rustls-no-provider` and panics at client construction without one. Losing a race to
/// another installer is fine, any installed provider serves.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A reqwest error with its causes ("connection refused"), never a header.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { format!("timed out: {error}") } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The GitHub REST client. Cheap to clone; clones share the connection pool, the ETag cache and
/// the rate-limit records.
#[derive(Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    base: Url,
    /// `base` without a trailing slash, for joining paths.
    base_text: String,
    metrics: Arc<Metrics>,
    cache: Arc<Mutex<EtagCache>>,
    limits: Arc<Mutex<HashMap<Budget, RateLimit>>>,
    clock: Clock,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient").field("api_url", &self.base_text).finish_non_exhaustive()
    }
}

/// An installation token as GitHub minted it.
#[derive(Debug, Clone)]
pub struct InstallationToken {
    pub token: Token,
    /// When GitHub lets it expire, in Unix seconds (an hour after minting).
    pub expires_at: i64,
}

/// Whether a refusal's message names the permissions GitHub's answer asked for.
#[derive(Debug, Clone, Copy)]
enum Permissions {
    Named,
    Unnamed,
}

/// What one GET brought.
enum Answer {
    Fresh { etag: Option<String>, next: Option<Url>, body: Bytes },
    Unchanged { next: Option<Url>, body: Bytes },
    NotFound,
}

/// What [`GitHubClient::send`] brought back, short of an error.
pub(super) enum Sent {
    Done {
        body: Bytes,
    },
    /// A 404, 409 or 422, with GitHub's message.
    Refused {
        status: StatusCode,
        message: String,
    },
}

/// A page body type the client can list, cache and deduplicate.
pub(super) trait Page: DeserializeOwned + Serialize {
    type Item;
    fn into_items(self) -> Vec<Self::Item>;
    fn id(item: &Self::Item) -> u64;
}

impl Page for WorkflowRunList {
    type Item = WorkflowRun;
    fn into_items(self) -> Vec<WorkflowRun> {
        self.workflow_runs
    }
    fn id(item: &WorkflowRun) -> u64 {
        item.id
    }
}

impl Page for WorkflowJobList {
    type Item = WorkflowJob;
    fn into_items(self) -> Vec<WorkflowJob> {
        self.jobs
    }
    fn id(item: &WorkflowJob) -> u64 {
        item.id
    }
}

/// The API root of `api_url`, checked (http(s), a host, no credentials, no query), and its text
/// without a trailing slash.
pub(crate) fn api_base(api_url: &str) -> Result<(Url, String), GitHubError> {
    let base_text = api_url.trim().trim_end_matches('/').to_string();
    let base = Url::parse(&base_text).map_err(|e| GitHubError::InvalidUrl(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return Err(GitHubError::InvalidUrl(format!("{base_text:?} is not an http(s) URL")));
    }
    if !base.username().is_empty() || base.password().is_some() {
        // Said without the URL: it holds a credential.
        return Err(GitHubError::InvalidUrl("credentials in the URL are not supported".into()));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(GitHubError::InvalidUrl(format!("{base_text:?} has a query or fragment")));
    }
    Ok((base, base_text))
}

/// An HTTP client for GitHub's REST API: its media type and API version, our User-Agent, and
/// timeouts.
pub(crate) fn http_client() -> Result<reqwest::Client, GitHubError> {
    install_crypto_provider();
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_GITHUB_JSON));
    headers.insert(X_GITHUB_API_VERSION, HeaderValue::from_static(API_VERSION));
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| GitHubError::Http(describe(&e)))
}

impl GitHubClient {
    /// A client for `api_url` (`https://api.github.com`, or `https://HOST/api/v3` for GitHub
    /// Enterprise Server; `http://` works too, for tests). A trailing slash is ignored.
    pub fn new(api_url: &str, metrics: Arc<Metrics>) -> Result<Self, GitHubError> {
        let (base, base_text) = api_base(api_url)?;
        let http = http_client()?;
        Ok(Self {
            http,
            base,
            base_text,
            metrics,
            cache: Arc::new(Mutex::new(EtagCache::new(CACHE_MAX_ENTRIES, CACHE_MAX_BYTES))),
            limits: Arc::new(Mutex::new(HashMap::new())),
            clock: system_clock(),
        })
    }

    /// Replaces the wall clock (Unix seconds) used to turn `X-RateLimit-Reset` into a wait.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The rate-limit headers GitHub last sent for this token's budget (an installation's
    /// tokens share one).
    pub fn rate_limit(&self, token: &Token) -> Option<RateLimit> {
        self.budget_limit(token.budget())
    }

    /// The rate-limit headers GitHub last sent for any token of `budget`.
    pub fn budget_limit(&self, budget: &Budget) -> Option<RateLimit> {
        lock(&self.limits).get(budget).cloned()
    }

    /// Every run of `repo` (`owner/name`) in `status`, all pages.
    pub async fn list_runs(
        &self,
        token: &Token,
        repo: &str,
        status: RunStatus,
    ) -> Result<Fetched<Vec<WorkflowRun>>, GitHubError> {
        let repo = checked_repository(repo)?;
        let url = self.url(&format!("/repos/{repo}/actions/runs?status={}&per_page={PER_PAGE}", status.as_str()))?;
        self.list::<WorkflowRunList>(token, "runs", url).await
    }

    /// Every job of run `run_id` (of its latest attempt, or of all), all pages.
    pub async fn list_jobs(
        &self,
        token: &Token,
        repo: &str,
        run_id: u64,
        filter: JobFilter,
    ) -> Result<Fetched<Vec<WorkflowJob>>, GitHubError> {
        let url = self.jobs_url(repo, run_id, filter)?;
        self.list::<WorkflowJobList>(token, "jobs", url).await
    }

    /// One run (its status and conclusion); `None` when GitHub answers 404.
    pub async fn get_run(
        &self,
        token: &Token,
        repo: &str,
        run_id: u64,
    ) -> Result<Fetched<Option<WorkflowRun>>, GitHubError> {
        let url = self.run_url(repo, run_id)?;
        self.get_one(token, "run", url).await
    }

    /// One job; `None` when GitHub answers 404.
    pub async fn get_job(
        &self,
        token: &Token,
        repo: &str,
        job_id: u64,
    ) -> Result<Fetched<Option<WorkflowJob>>, GitHubError> {
        let repo = checked_repository(repo)?;
        let url = self.url(&format!("/repos/{repo}/actions/jobs/{job_id}"))?;
        self.get_one(token, "job", url).await
    }

    /// The id of the installation of the App whose JWT this is that covers `repo`
    /// (`GET /repos/{owner}/{repo}/installation`); `None` when the App is not installed there.
    pub async fn find_installation(&self, jwt: &Token, repo: &str) -> Result<Fetched<Option<u64>>, GitHubError> {
        #[derive(serde::Deserialize)]
        struct Installation {
            id: u64,
        }
        let repo = checked_repository(repo)?;
        let url = self.url(&format!("/repos/{repo}/installation"))?;
        let mut fetched = Fetched::cost_only(None);
        if let Some(body) = self.send_as_app(jwt, "installation", self.http.get(url), &mut fetched).await? {
            fetched.value = Some(decode::<Installation>(&body)?.id).filter(|id| *id != 0);
        }
        Ok(fetched)
    }

    /// A new token of installation `installation`, read-only on Actions
    /// (`POST /app/installations/{id}/access_tokens`, with the App's JWT); `None` when GitHub
    /// knows no such installation of the App.
    pub async fn create_installation_token(
        &self,
        jwt: &Token,
        installation: u64,
    ) -> Result<Fetched<Option<InstallationToken>>, GitHubError> {
        // Only what the resync reads: a token that leaks cannot change anything.
        let permissions = serde_json::json!({"actions": "read", "metadata": "read"});
        self.mint_installation_token(jwt, installation, permissions).await
    }

    /// A new token of installation `installation` narrowed to `permissions` (GitHub's
    /// `{"name": "read"|"write"}` object; a 422 when the installation lacks one of them).
    pub(super) async fn mint_installation_token(
        &self,
        jwt: &Token,
        installation: u64,
        permissions: serde_json::Value,
    ) -> Result<Fetched<Option<InstallationToken>>, GitHubError> {
        #[derive(serde::Deserialize)]
        struct Minted {
            token: String,
            expires_at: String,
        }
        let url = self.url(&format!("/app/installations/{installation}/access_tokens"))?;
        let body = serde_json::json!({ "permissions": permissions });
        let request = self.http.post(url).json(&body);
        let mut fetched = Fetched::cost_only(None);
        if let Some(body) = self.send_as_app(jwt, "access_token", request, &mut fetched).await? {
            let minted: Minted = decode(&body)?;
            let expires_at = minted
                .expires_at
                .parse::<jiff::Timestamp>()
                .map_err(|e| GitHubError::Decode(format!("expires_at: {e}")))?
                .as_second();
            let token = Token::for_installation(minted.token, installation);
            if token.is_empty() {
                return Err(GitHubError::Decode("an empty installation token".into()));
            }
            fetched.value = Some(InstallationToken { token, expires_at });
        }
        Ok(fetched)
    }

    /// One request authenticated with an App's JWT (never conditional, never cached); the body of
    /// a 2xx, `None` on 404.
    pub(super) async fn send_as_app<T>(
        &self,
        jwt: &Token,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        fetched: &mut Fetched<T>,
    ) -> Result<Option<Bytes>, GitHubError> {
        let request = request.header(header::AUTHORIZATION, jwt.authorization()?);
        let response = self.dispatch(jwt, endpoint, request, fetched).await?;
        let status = response.status();
        match status {
            status if status.is_success() => {
                fetched.credits += 1;
                Ok(Some(read_body(response, MAX_ERROR_BODY_BYTES).await?))
            }
            StatusCode::NOT_FOUND => Ok(None),
            // GitHub says what it found wrong with the JWT (its times, its issuer).
            StatusCode::UNAUTHORIZED => Err(GitHubError::JwtRejected { message: error_message(response).await }),
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                let headers = response.headers().clone();
                let message = error_message(response).await;
                match rate_limit_wait(status.as_u16(), &headers, &message, (self.clock)()) {
                    Some((retry_after, secondary)) => Err(GitHubError::RateLimited { retry_after, secondary }),
                    None => Err(GitHubError::Forbidden { message }),
                }
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                Err(GitHubError::Unprocessable { message: error_message(response).await })
            }
            status if status.is_server_error() => Err(GitHubError::Server { status: status.as_u16() }),
            status => Err(GitHubError::Unexpected { status: status.as_u16() }),
        }
    }

    /// One request authenticated with `token`, never conditional and never cached (for
    /// mutations): a 2xx, or a 404, 409 or 422 with GitHub's message, which each endpoint reads
    /// its own way. Any other answer is the error it is everywhere; a 403 that is no rate limit
    /// names the fine-grained permissions GitHub accepts (`X-Accepted-GitHub-Permissions`).
    pub(super) async fn send<T>(
        &self,
        token: &Token,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        fetched: &mut Fetched<T>,
    ) -> Result<Sent, GitHubError> {
        let request = request.header(header::AUTHORIZATION, token.authorization()?);
        let response = self.dispatch(token, endpoint, request, fetched).await?;
        let status = response.status();
        match status {
            status if status.is_success() => {
                fetched.credits += 1;
                Ok(Sent::Done { body: read_body(response, MAX_BODY_BYTES).await? })
            }
            StatusCode::NOT_FOUND | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                Ok(Sent::Refused { status, message: error_message(response).await })
            }
            StatusCode::UNAUTHORIZED => Err(GitHubError::Unauthorized),
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                Err(self.refusal(endpoint, token, response, Permissions::Named).await)
            }
            status if status.is_server_error() => Err(GitHubError::Server { status: status.as_u16() }),
            status => Err(GitHubError::Unexpected { status: status.as_u16() }),
        }
    }

    /// One object, conditional like every GET; `None` on 404.
    async fn get_one<T: DeserializeOwned + Serialize>(
        &self,
        token: &Token,
        endpoint: &'static str,
        url: Url,
    ) -> Result<Fetched<Option<T>>, GitHubError> {
        let mut fetched = Fetched::cost_only(None);
        match self.get(token, endpoint, &url, &mut fetched).await? {
            Answer::NotFound => {}
            Answer::Fresh { etag, next: _, body } => {
                let value: T = decode(&body)?;
                self.keep(token, &url, etag, &value, None);
                fetched.value = Some(value);
            }
            Answer::Unchanged { body, .. } => fetched.value = Some(decode(&body)?),
        }
        Ok(fetched)
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(super) fn url(&self, path_and_query: &str) -> Result<Url, GitHubError> {
        Url::parse(&format!("{}{path_and_query}", self.base_text)).map_err(|e| GitHubError::InvalidUrl(e.to_string()))
    }

    fn jobs_url(&self, repo: &str, run_id: u64, filter: JobFilter) -> Result<Url, GitHubError> {
        let repo = checked_repository(repo)?;
        self.url(&format!("/repos/{repo}/actions/runs/{run_id}/jobs?per_page={PER_PAGE}&filter={}", filter.as_str()))
    }

    fn run_url(&self, repo: &str, run_id: u64) -> Result<Url, GitHubError> {
        let repo = checked_repository(repo)?;
        self.url(&format!("/repos/{repo}/actions/runs/{run_id}"))
    }

    /// Forgets the pages kept for run `run_id` of `repo` (its job lists, every page, and the
    /// run): once a run has left the open lists nothing revalidates them, and kept they would
    /// pile up (one or two pages a run) until the cache's bounds, hours later.
    pub fn forget_run(&self, token: &Token, repo: &str, run_id: u64) {
        let urls = [self.jobs_url(repo, run_id, JobFilter::Latest), self.jobs_url(repo, run_id, JobFilter::All)]
            .into_iter()
            .chain([self.run_url(repo, run_id)]);
        let mut cache = lock(&self.cache);
        for url in urls.flatten() {
            cache.remove_pages(&CacheKey { token: token.cache_scope(), url: url.as_str().to_string() });
        }
    }

    /// Drops the pages not asked for since `before` (clock seconds), whatever token they were
    /// kept for: what no resync asks for within its windows is not asked for again (a finished
    /// run's lookup, a token no longer used). Returns how many went.
    pub fn expire_pages(&self, before: i64) -> usize {
        lock(&self.cache).expire(before)
    }

    /// How many pages are kept for conditional requests.
    pub fn cached_pages(&self) -> usize {
        lock(&self.cache).len()
    }

    /// Follows `rel="next"` from `first`, the union of all pages with duplicates (items that
    /// moved to a later page while we read) dropped.
    pub(super) async fn list<P: Page>(
        &self,
        token: &Token,
        endpoint: &'static str,
        first: Url,
    ) -> Result<Fetched<Vec<P::Item>>, GitHubError> {
        let mut fetched = Fetched::cost_only(Vec::new());
        let mut seen_ids = HashSet::new();
        let mut visited = HashSet::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            if !visited.insert(url.as_str().to_string()) {
                return Err(GitHubError::Pagination(format!("the Link header loops back to {url}")));
            }
            if visited.len() > MAX_PAGES {
                return Err(GitHubError::Pagination(format!("more than {MAX_PAGES} pages")));
            }
            let page: P = match self.get(token, endpoint, &url, &mut fetched).await? {
                Answer::NotFound => return Err(GitHubError::NotFound),
                Answer::Fresh { etag, next: link, body } => {
                    let page: P = decode(&body)?;
                    self.keep(token, &url, etag, &page, link.clone());
                    next = link;
                    page
                }
                Answer::Unchanged { next: link, body } => {
                    next = link;
                    decode(&body)?
                }
            };
            for item in page.into_items() {
                let id = P::id(&item);
                if id == 0 || seen_ids.insert(id) {
                    fetched.value.push(item);
                }
            }
        }
        Ok(fetched)
    }

    /// Remembers a decoded page for conditional requests, re-serialized from our models so only
    /// the fields we read take memory. Without an ETag there is nothing to revalidate with.
    fn keep<T: Serialize>(&self, token: &Token, url: &Url, etag: Option<String>, value: &T, next: Option<Url>) {
        let key = CacheKey { token: token.cache_scope(), url: url.as_str().to_string() };
        let mut cache = lock(&self.cache);
        match etag.zip(serde_json::to_vec(value).ok()) {
            Some((etag, body)) => cache.insert(key, etag, Bytes::from(body), next, (self.clock)()),
            None => cache.remove(&key),
        }
    }

    /// Sends one request authenticated with `token` (a token, or an App's JWT): counts it,
    /// records its status, and remembers the rate limit its answer reports.
    async fn dispatch<T>(
        &self,
        token: &Token,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        fetched: &mut Fetched<T>,
    ) -> Result<reqwest::Response, GitHubError> {
        fetched.requests += 1;
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.metrics.github_request(endpoint, None);
                tracing::debug!(endpoint, budget = %token.budget(), error = %describe(&error), "GitHub request failed");
                return Err(GitHubError::Http(describe(&error)));
            }
        };
        let status = response.status();
        self.metrics.github_request(endpoint, Some(status.as_u16()));
        tracing::debug!(endpoint, budget = %token.budget(), status = status.as_u16(), "GitHub answered");
        if let Some(rate) = RateLimit::from_headers(response.headers()) {
            self.remember_rate_limit(token, rate);
        }
        Ok(response)
    }

    /// A 403 or 429: a rate limit (primary or secondary, with how long to wait), else a refusal,
    /// naming the permissions GitHub asked for when `permissions` says so.
    async fn refusal(
        &self,
        endpoint: &'static str,
        token: &Token,
        response: reqwest::Response,
        permissions: Permissions,
    ) -> GitHubError {
        let status = response.status();
        let headers = response.headers().clone();
        let message = error_message(response).await;
        match rate_limit_wait(status.as_u16(), &headers, &message, (self.clock)()) {
            Some((retry_after, secondary)) => {
                tracing::warn!(endpoint, token = %token.id(), secondary, wait_s = retry_after.as_secs(), "GitHub rate limit");
                GitHubError::RateLimited { retry_after, secondary }
            }
            None => GitHubError::Forbidden {
                message: match permissions {
                    Permissions::Named => with_accepted_permissions(message, &headers),
                    Permissions::Unnamed => message,
                },
            },
        }
    }

    /// One GET, conditional when a page for this token and URL is cached.
    async fn get<T>(
        &self,
        token: &Token,
        endpoint: &'static str,
        url: &Url,
        fetched: &mut Fetched<T>,
    ) -> Result<Answer, GitHubError> {
        let key = CacheKey { token: token.cache_scope(), url: url.as_str().to_string() };
        // Taken before sending, so a 304 always has the page it validated, whatever the cache
        // evicts meanwhile.
        let cached = lock(&self.cache).get(&key, (self.clock)());
        let mut request = self.http.get(url.clone()).header(header::AUTHORIZATION, token.authorization()?);
        let validator = cached.as_ref().and_then(|c| HeaderValue::from_str(&c.etag).ok());
        if let Some(etag) = validator.clone() {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let response = self.dispatch(token, endpoint, request, fetched).await?;
        let status = response.status();
        match status {
            StatusCode::NOT_MODIFIED => match cached.filter(|_| validator.is_some()) {
                Some(page) => {
                    fetched.not_modified += 1;
                    Ok(Answer::Unchanged { next: page.next, body: page.body })
                }
                None => Err(GitHubError::Unexpected { status: 304 }),
            },
            status if status.is_success() => {
                fetched.credits += 1;
                let headers = response.headers();
                let etag = header_str(headers, "etag").filter(|e| !e.is_empty()).map(str::to_string);
                let next = match header_str(headers, "link").and_then(next_link) {
                    Some(target) => Some(self.checked_next(url, target)?),
                    None => None,
                };
                let body = read_body(response, MAX_BODY_BYTES).await?;
                Ok(Answer::Fresh { etag, next, body })
            }
            StatusCode::NOT_FOUND => {
                lock(&self.cache).remove(&key);
                Ok(Answer::NotFound)
            }
            StatusCode::UNAUTHORIZED => Err(GitHubError::Unauthorized),
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                Err(self.refusal(endpoint, token, response, Permissions::Unnamed).await)
            }
            status if status.is_server_error() => Err(GitHubError::Server { status: status.as_u16() }),
            status => Err(GitHubError::Unexpected { status: status.as_u16() }),
        }
    }

    /// A `Link` target resolved against the page it came from. It must stay on the API's
    /// origin: the token goes with every page.
    fn checked_next(&self, current: &Url, target: &str) -> Result<Url, GitHubError> {
        let next = current.join(target).map_err(|e| GitHubError::Pagination(format!("bad next link: {e}")))?;
        if next.origin() != self.base.origin() {
            return Err(GitHubError::Pagination(format!("next link leaves {}: {next}", self.base_text)));
        }
        Ok(next)
    }

    fn remember_rate_limit(&self, token: &Token, rate: RateLimit) {
        let budget = token.budget();
        let (kind, id) = budget.label();
        self.metrics.github_credits(kind, id, i64::try_from(rate.remaining).unwrap_or(i64::MAX));
        let mut limits = lock(&self.limits);
        if limits.len() >= MAX_TRACKED_TOKENS && !limits.contains_key(budget) {
            // The budget whose window reset longest ago is the one least likely still in use.
            if let Some(stalest) = limits.iter().min_by_key(|(_, r)| r.reset).map(|(k, _)| k.clone()) {
                limits.remove(&stalest);
            }
        }
        limits.insert(budget.clone(), rate);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every await-free step, so a panic elsewhere leaves
    // nothing half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GitHubError> {
    serde_json::from_slice(body).map_err(|e| GitHubError::Decode(e.to_string()))
}

async fn read_body(mut response: reqwest::Response, cap: usize) -> Result<Bytes, GitHubError> {
    if response.content_length().is_some_and(|length| length > cap as u64) {
        return Err(GitHubError::Decode(format!("answer larger than {cap} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| GitHubError::Http(describe(&e)))? {
        if body.len() + chunk.len() > cap {
            return Err(GitHubError::Decode(format!("answer larger than {cap} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// The `message` of a GitHub error body, or its text, shortened; empty when unreadable.
async fn error_message(response: reqwest::Response) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: Option<String>,
    }
    let Ok(body) = read_body(response, MAX_ERROR_BODY_BYTES).await else { return String::new() };
    let text = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { message: Some(message) }) => message,
        _ => String::from_utf8_lossy(&body).into_owned(),
    };
    text.trim().chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
}

/// GitHub's message, and the fine-grained permissions the endpoint accepts when it says them:
/// what a 403 needs to be acted on.
fn with_accepted_permissions(message: String, headers: &HeaderMap) -> String {
    match header_str(headers, "x-accepted-github-permissions").filter(|p| !p.is_empty()) {
        Some(permissions) => {
            let permissions: String = permissions.chars().take(MAX_ERROR_MESSAGE_CHARS).collect();
            format!("{message} (accepted permissions: {permissions})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_permissions_github_accepts() {
        let mut headers = HeaderMap::new();
        assert_eq!(with_accepted_permissions("Forbidden".into(), &headers), "Forbidden");
        headers.insert("x-accepted-github-permissions", HeaderValue::from_static("administration=write"));
        assert_eq!(
            with_accepted_permissions("Resource not accessible by integration".into(), &headers),
            "Resource not accessible by integration (accepted permissions: administration=write)"
        );
    }

    #[test]
    fn repository_names_are_checked_before_they_reach_a_path() {
        assert_eq!(checked_repository("acme/api.rs"), Ok("acme/api.rs"));
        for bad in ["acme", "acme/", "/api", "acme/api/x", "acme/..", "acme/a?b", "acme/a b", "../x"] {
            assert!(matches!(checked_repository(bad), Err(GitHubError::InvalidRepository(_))), "{bad}");
        }
    }

    #[test]
    fn the_client_accepts_http_and_strips_a_trailing_slash() {
        let metrics = Arc::new(Metrics::new());
        let client = GitHubClient::new("http://127.0.0.1:9/", metrics.clone()).unwrap();
        assert_eq!(client.url("/repos/a/b").unwrap().as_str(), "http://127.0.0.1:9/repos/a/b");
        let client = GitHubClient::new("https://ghe.example.com/api/v3/", metrics.clone()).unwrap();
        assert_eq!(client.url("/repos/a/b").unwrap().as_str(), "https://ghe.example.com/api/v3/repos/a/b");
        assert!(matches!(GitHubClient::new("ftp://x", metrics.clone()), Err(GitHubError::InvalidUrl(_))));
        let Err(error) = GitHubClient::new("https://user:hunter2@api.github.com", metrics) else {
            panic!("credentials in the URL must be refused")
        };
        assert!(!error.to_string().contains("hunter2"));
    }
}
