//! The GitHub REST client the reconciler uses to list queued and in-progress Actions work.
//!
//! Cheap on the rate limit by construction:
//! - every listing asks for `per_page=100` and follows the `Link` header's `rel="next"` URL;
//! - every GET is conditional once we hold an `ETag` for its URL: a `304 Not Modified` costs no
//!   primary-limit credit (GitHub, "Best practices for using the REST API", *Use conditional
//!   requests if appropriate*), and we reuse the page we kept;
//! - rate-limit answers (403/429) become [`GitHubError::RateLimited`] with the wait GitHub asks
//!   for, so the caller stops instead of hammering (see [`rate_limit_wait`] and [`backoff`]).
//!
//! The remembered pages are keyed by token *and* URL. GitHub answers with
//! `Vary: Accept, Authorization, Cookie`: the ETag is a property of what this authorization
//! sees, a validator from one token does not produce a 304 for another (github/docs#34689), and
//! a 304 is only free "if the request was made while correctly authorized with an Authorization
//! header". Sharing pages across tokens would also hand one token's view to another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::models::{WorkflowJob, WorkflowJobList, WorkflowRun, WorkflowRunList};
use crate::clock::{Clock, system_clock};
use crate::metrics::Metrics;

/// Sent on every request, as GitHub asks (requests without one are rejected).
pub const USER_AGENT: &str = concat!("github-action-autoscaler/", env!("CARGO_PKG_VERSION"));
/// The REST API version these models follow.
pub const API_VERSION: &str = "2022-11-28";
/// GitHub's maximum page size: fewer pages, fewer requests.
pub const PER_PAGE: u32 = 100;
/// How many pages the conditional-request cache keeps, least recently used evicted first.
/// One entry is one page for one token; the reconciler touches a few per repository.
pub const CACHE_MAX_ENTRIES: usize = 50_000;
/// The cache's byte budget. Pages are kept re-serialized from our slim models (a job is a few
/// hundred bytes, not GitHub's several kilobytes), so this is rarely the binding limit.
pub const CACHE_MAX_BYTES: usize = 64 << 20;
/// The least GitHub asks us to wait after a secondary limit that names no time.
pub const SECONDARY_MIN_WAIT: Duration = Duration::from_secs(60);
/// The longest [`backoff`] ever asks for.
pub const BACKOFF_CAP: Duration = Duration::from_secs(15 * 60);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A listing longer than this is refused rather than silently cut: a partial listing would make
/// the reconciler believe jobs had vanished. (`status=` filters return at most 1,000 runs.)
const MAX_PAGES: usize = 100;
const MAX_BODY_BYTES: usize = 32 << 20;
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
const MAX_ERROR_MESSAGE_CHARS: usize = 300;
/// Tokens whose last rate-limit headers we keep; rotating App tokens would otherwise pile up.
const MAX_TRACKED_TOKENS: usize = 1024;

const X_GITHUB_API_VERSION: HeaderName = HeaderName::from_static("x-github-api-version");
const ACCEPT_GITHUB_JSON: &str = "application/vnd.github+json";

/// A GitHub token. Neither `Debug` nor `Display` shows it: only [`Token::id`].
#[derive(Clone)]
pub struct Token {
    secret: SecretString,
    digest: [u8; 32],
}

impl Token {
    /// A token as read from a file or the environment: trailing whitespace (the newline a
    /// secret file ends with) is dropped.
    pub fn new(secret: impl Into<String>) -> Self {
        let mut secret = secret.into();
        secret.truncate(secret.trim_end().len());
        let digest = Sha256::digest(secret.as_bytes()).into();
        Self { secret: SecretString::from(secret), digest }
    }

    /// The first 8 hex digits of the token's SHA-256: safe for logs and metric labels.
    pub fn id(&self) -> String {
        hex::encode(&self.digest[..4])
    }

    pub fn is_empty(&self) -> bool {
        self.secret.expose_secret().is_empty()
    }

    fn authorization(&self) -> Result<HeaderValue, GitHubError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.secret.expose_secret()))
            .map_err(|_| GitHubError::InvalidToken)?;
        // Keeps the value out of hyper's and reqwest's debug output.
        value.set_sensitive(true);
        Ok(value)
    }
}

impl From<&str> for Token {
    fn from(secret: &str) -> Self {
        Self::new(secret)
    }
}

impl From<String> for Token {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Token {}

impl std::hash::Hash for Token {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("id", &self.id()).finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {}", self.id())
    }
}

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
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Fetched<U> {
        Fetched {
            value: f(self.value),
            requests: self.requests,
            not_modified: self.not_modified,
            credits: self.credits,
        }
    }

    fn cost_only(value: T) -> Self {
        Self { value, requests: 0, not_modified: 0, credits: 0 }
    }
}

/// The `X-RateLimit-*` headers of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub used: u64,
    /// When the window resets, in Unix seconds.
    pub reset: i64,
    /// `core`, `search`, …
    pub resource: Option<String>,
}

impl RateLimit {
    /// The rate limit an answer reports; `None` without `X-RateLimit-Remaining`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let remaining = header_number(headers, "x-ratelimit-remaining")?;
        Some(Self {
            limit: header_number(headers, "x-ratelimit-limit").unwrap_or(0),
            remaining,
            used: header_number(headers, "x-ratelimit-used").unwrap_or(0),
            reset: header_str(headers, "x-ratelimit-reset").and_then(|v| v.parse().ok()).unwrap_or(0),
            resource: header_str(headers, "x-ratelimit-resource").map(str::to_string),
        })
    }

    /// How long from `now` (Unix seconds) until the window resets; zero once it has.
    pub fn resets_in(&self, now: i64) -> Duration {
        Duration::from_secs(u64::try_from(self.reset.saturating_sub(now)).unwrap_or(0))
    }
}

/// Why a GitHub call failed. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub {} rate limit: retry after {}s", if *.secondary { "secondary" } else { "primary" }, .retry_after.as_secs())]
    RateLimited { retry_after: Duration, secondary: bool },
    #[error("GitHub rejected the token (401)")]
    Unauthorized,
    #[error("GitHub refused the request (403): {message}")]
    Forbidden { message: String },
    #[error("GitHub has no such resource, or the token cannot see it (404)")]
    NotFound,
    #[error("GitHub server error ({status})")]
    Server { status: u16 },
    #[error("unexpected GitHub answer ({status})")]
    Unexpected { status: u16 },
    #[error("GitHub request failed: {0}")]
    Http(String),
    #[error("GitHub answer did not decode: {0}")]
    Decode(String),
    #[error("GitHub pagination: {0}")]
    Pagination(String),
    #[error("not an owner/name repository: {0:?}")]
    InvalidRepository(String),
    #[error("the token cannot be sent as an HTTP header")]
    InvalidToken,
    #[error("invalid GitHub API URL: {0}")]
    InvalidUrl(String),
}

impl GitHubError {
    /// A fixed label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::RateLimited { secondary: false, .. } => "rate_limited",
            Self::RateLimited { secondary: true, .. } => "secondary_rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound => "not_found",
            Self::Server { .. } => "server",
            Self::Unexpected { .. } => "unexpected",
            Self::Http(_) => "http",
            Self::Decode(_) => "decode",
            Self::Pagination(_) => "pagination",
            Self::InvalidRepository(_) => "invalid_repository",
            Self::InvalidToken => "invalid_token",
            Self::InvalidUrl(_) => "invalid_url",
        }
    }

    /// How long to stop calling GitHub with this token after a rate-limit answer; `previous` is
    /// the wait that preceded this failure when it is a repeat (`None` the first time). A
    /// primary limit waits for its reset; a repeated secondary limit backs off exponentially,
    /// never less than GitHub named.
    pub fn rate_limit_pause(&self, previous: Option<Duration>) -> Option<Duration> {
        match *self {
            Self::RateLimited { retry_after, secondary: false } => Some(retry_after),
            Self::RateLimited { retry_after, secondary: true } => {
                Some(if previous.is_some() { retry_after.max(backoff(previous)) } else { retry_after })
            }
            _ => None,
        }
    }
}

/// The wait after a secondary rate limit, growing on repeats as GitHub asks: the first is
/// [`SECONDARY_MIN_WAIT`] (one minute), each repeat doubles the previous wait, never under a
/// minute and capped at [`BACKOFF_CAP`] (15 minutes).
pub fn backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => SECONDARY_MIN_WAIT,
        Some(previous) => previous.saturating_mul(2).clamp(SECONDARY_MIN_WAIT, BACKOFF_CAP),
    }
}

/// Whether an answer is a rate limit, how long to wait and whether it is a secondary limit,
/// following GitHub's "Rate limits for the REST API" (*Exceeding the rate limit*):
/// 1. a `Retry-After` header wins (seconds, or an HTTP date);
/// 2. else `X-RateLimit-Remaining: 0` means wait until `X-RateLimit-Reset` (Unix seconds);
/// 3. else a 429, or a 403 whose message speaks of a rate limit, waits at least a minute.
///
/// A 403 with none of these is a permission problem, not a limit: `None`. Waits are at least a
/// second, so a zero or past time never turns into a busy loop. `now` is Unix seconds.
pub fn rate_limit_wait(status: u16, headers: &HeaderMap, message: &str, now: i64) -> Option<(Duration, bool)> {
    if status != 403 && status != 429 {
        return None;
    }
    let message = message.to_ascii_lowercase();
    let says_secondary = message.contains("secondary rate limit") || message.contains("abuse");
    let says_limit = says_secondary || message.contains("rate limit");
    let exhausted = RateLimit::from_headers(headers).filter(|rate| rate.remaining == 0);
    let at_least_a_second = |wait: Duration| wait.max(Duration::from_secs(1));
    if let Some(wait) = header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now)) {
        // Retry-After is how GitHub sets a secondary-limit pause; only an exhausted primary
        // quota that does not call itself secondary counts as primary.
        return Some((at_least_a_second(wait), says_secondary || exhausted.is_none()));
    }
    if let Some(rate) = exhausted {
        let wait = if rate.reset > 0 { rate.resets_in(now) } else { SECONDARY_MIN_WAIT };
        return Some((at_least_a_second(wait), says_secondary));
    }
    (status == 429 || says_limit).then_some((SECONDARY_MIN_WAIT, true))
}

fn parse_retry_after(value: &str, now: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    Some(Duration::from_secs(u64::try_from(at.as_second().saturating_sub(now)).unwrap_or(0)))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name)?.parse().ok()
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
fn checked_repository(repo: &str) -> Result<&str, GitHubError> {
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
    limits: Arc<Mutex<HashMap<[u8; 32], RateLimit>>>,
    clock: Clock,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient").field("api_url", &self.base_text).finish_non_exhaustive()
    }
}

/// What one GET brought.
enum Answer {
    Fresh { etag: Option<String>, next: Option<Url>, body: Bytes },
    Unchanged { next: Option<Url>, body: Bytes },
    NotFound,
}

/// A page body type the client can list, cache and deduplicate.
trait Page: DeserializeOwned + Serialize {
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

    /// The API root, without a trailing slash.
    pub fn api_url(&self) -> &str {
        &self.base_text
    }

    /// The rate-limit headers GitHub last sent for this token.
    pub fn rate_limit(&self, token: &Token) -> Option<RateLimit> {
        lock(&self.limits).get(&token.digest).cloned()
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

    /// Every job of the latest attempt of run `run_id`, all pages.
    pub async fn list_jobs(
        &self,
        token: &Token,
        repo: &str,
        run_id: u64,
    ) -> Result<Fetched<Vec<WorkflowJob>>, GitHubError> {
        let repo = checked_repository(repo)?;
        let url = self.url(&format!("/repos/{repo}/actions/runs/{run_id}/jobs?per_page={PER_PAGE}"))?;
        self.list::<WorkflowJobList>(token, "jobs", url).await
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
        let mut fetched = Fetched::cost_only(None);
        match self.get(token, "job", &url, &mut fetched).await? {
            Answer::NotFound => {}
            Answer::Fresh { etag, next: _, body } => {
                let job: WorkflowJob = decode(&body)?;
                self.keep(token, &url, etag, &job, None);
                fetched.value = Some(job);
            }
            Answer::Unchanged { body, .. } => fetched.value = Some(decode(&body)?),
        }
        Ok(fetched)
    }

    fn url(&self, path_and_query: &str) -> Result<Url, GitHubError> {
        Url::parse(&format!("{}{path_and_query}", self.base_text)).map_err(|e| GitHubError::InvalidUrl(e.to_string()))
    }

    /// Follows `rel="next"` from `first`, the union of all pages with duplicates (items that
    /// moved to a later page while we read) dropped.
    async fn list<P: Page>(
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
        let key = CacheKey { token: token.digest, url: url.as_str().to_string() };
        let mut cache = lock(&self.cache);
        match etag.zip(serde_json::to_vec(value).ok()) {
            Some((etag, body)) => cache.insert(key, etag, Bytes::from(body), next),
            None => cache.remove(&key),
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
        let key = CacheKey { token: token.digest, url: url.as_str().to_string() };
        // Taken before sending, so a 304 always has the page it validated, whatever the cache
        // evicts meanwhile.
        let cached = lock(&self.cache).get(&key);
        let mut request = self.http.get(url.clone()).header(header::AUTHORIZATION, token.authorization()?);
        let validator = cached.as_ref().and_then(|c| HeaderValue::from_str(&c.etag).ok());
        if let Some(etag) = validator.clone() {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        fetched.requests += 1;
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.metrics.github_request(endpoint, None);
                tracing::debug!(endpoint, token = %token.id(), error = %describe(&error), "GitHub request failed");
                return Err(GitHubError::Http(describe(&error)));
            }
        };
        let status = response.status();
        self.metrics.github_request(endpoint, Some(status.as_u16()));
        tracing::debug!(endpoint, token = %token.id(), status = status.as_u16(), "GitHub answered");
        if let Some(rate) = RateLimit::from_headers(response.headers()) {
            self.remember_rate_limit(token, rate);
        }
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
                let headers = response.headers().clone();
                let message = error_message(response).await;
                match rate_limit_wait(status.as_u16(), &headers, &message, (self.clock)()) {
                    Some((retry_after, secondary)) => {
                        tracing::warn!(endpoint, token = %token.id(), secondary, wait_s = retry_after.as_secs(), "GitHub rate limit");
                        Err(GitHubError::RateLimited { retry_after, secondary })
                    }
                    None => Err(GitHubError::Forbidden { message }),
                }
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
        self.metrics.github_credits(&token.id(), i64::try_from(rate.remaining).unwrap_or(i64::MAX));
        let mut limits = lock(&self.limits);
        if limits.len() >= MAX_TRACKED_TOKENS && !limits.contains_key(&token.digest) {
            // The token whose window reset longest ago is the one least likely still in use.
            if let Some(stalest) = limits.iter().min_by_key(|(_, r)| r.reset).map(|(k, _)| *k) {
                limits.remove(&stalest);
            }
        }
        limits.insert(token.digest, rate);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every await-free step, so a panic elsewhere leaves
    // nothing half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GitHubError> {
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    /// The token's SHA-256: pages are per authorization (see the module documentation).
    token: [u8; 32],
    url: String,
}

#[derive(Debug, Clone)]
struct CachedPage {
    etag: String,
    body: Bytes,
    next: Option<Url>,
}

struct CacheSlot {
    page: CachedPage,
    used: u64,
    bytes: usize,
}

/// Least-recently-used pages by token and URL, bounded in entries and bytes.
struct EtagCache {
    slots: HashMap<CacheKey, CacheSlot>,
    recency: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl EtagCache {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { slots: HashMap::new(), recency: BTreeMap::new(), tick: 0, bytes: 0, max_entries, max_bytes }
    }

    fn get(&mut self, key: &CacheKey) -> Option<CachedPage> {
        self.tick += 1;
        let slot = self.slots.get_mut(key)?;
        self.recency.remove(&slot.used);
        slot.used = self.tick;
        self.recency.insert(self.tick, key.clone());
        Some(slot.page.clone())
    }

    fn insert(&mut self, key: CacheKey, etag: String, body: Bytes, next: Option<Url>) {
        self.remove(&key);
        // The key is held twice (map and recency order); the rest is the page.
        let bytes = 2 * key.url.len() + etag.len() + body.len() + next.as_ref().map_or(0, |u| u.as_str().len()) + 128;
        if bytes > self.max_bytes || self.max_entries == 0 {
            return;
        }
        self.tick += 1;
        self.recency.insert(self.tick, key.clone());
        self.slots.insert(key, CacheSlot { page: CachedPage { etag, body, next }, used: self.tick, bytes });
        self.bytes += bytes;
        while self.slots.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.recency.pop_first() else { break };
            if let Some(slot) = self.slots.remove(&oldest) {
                self.bytes -= slot.bytes;
            }
        }
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.recency.remove(&slot.used);
            self.bytes -= slot.bytes;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn key(url: &str) -> CacheKey {
        CacheKey { token: [1; 32], url: url.to_string() }
    }

    #[test]
    fn a_token_drops_its_trailing_newline_and_never_prints() {
        let token = Token::new("ghp_secretvalue\r\n");
        assert_eq!(token, Token::new("ghp_secretvalue"));
        assert!(!format!("{token:?} {token}").contains("secretvalue"));
        assert!(format!("{token:?}").contains(&token.id()));
    }

    #[test]
    fn a_token_id_is_the_start_of_its_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea …
        assert_eq!(Token::new("abc").id(), "ba7816bf");
    }

    #[test]
    fn the_authorization_header_is_marked_sensitive() {
        let value = Token::new("abc").authorization().unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer abc");
        assert_eq!(Token::new("a\u{0}b").authorization(), Err(GitHubError::InvalidToken));
    }

    #[test]
    fn the_next_link_is_found_among_the_others() {
        let link = r#"<https://api.github.com/repositories/1300192/issues?page=2>; rel="prev", <https://api.github.com/repositories/1300192/issues?page=4>; rel="next", <https://api.github.com/repositories/1300192/issues?page=515>; rel="last""#;
        assert_eq!(next_link(link), Some("https://api.github.com/repositories/1300192/issues?page=4"));
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="first", <https://x/?page=9>; rel="last""#), None);
        assert_eq!(next_link(r#"<https://x/?page=2>; REL=next"#), Some("https://x/?page=2"));
        assert_eq!(next_link(r#"<https://x/?a=1,2&page=3>; rel="next last""#), Some("https://x/?a=1,2&page=3"));
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("<unterminated; rel=\"next\""), None);
    }

    #[test]
    fn rate_limit_headers_parse() {
        let rate = RateLimit::from_headers(&headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4987"),
            ("x-ratelimit-used", "13"),
            ("x-ratelimit-reset", "1767225600"),
            ("x-ratelimit-resource", "core"),
        ]))
        .unwrap();
        assert_eq!(
            rate,
            RateLimit { limit: 5000, remaining: 4987, used: 13, reset: 1_767_225_600, resource: Some("core".into()) }
        );
        assert_eq!(rate.resets_in(1_767_225_570), Duration::from_secs(30));
        assert_eq!(rate.resets_in(1_767_225_700), Duration::ZERO);
        assert_eq!(RateLimit::from_headers(&headers(&[("x-ratelimit-limit", "5000")])), None);
    }

    #[test]
    fn retry_after_wins_and_marks_a_secondary_limit() {
        let h = headers(&[("retry-after", "7"), ("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limit_wait(403, &h, "", 0), Some((Duration::from_secs(7), true)));
        let h = headers(&[("retry-after", "Thu, 01 Jan 1970 00:01:40 GMT")]);
        assert_eq!(rate_limit_wait(429, &h, "", 70), Some((Duration::from_secs(30), true)));
        assert_eq!(
            rate_limit_wait(429, &headers(&[("retry-after", "0")]), "", 0),
            Some((Duration::from_secs(1), true))
        );
    }

    #[test]
    fn an_exhausted_quota_waits_for_its_reset() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")]);
        assert_eq!(
            rate_limit_wait(403, &h, "API rate limit exceeded for user ID 1.", 1000),
            Some((Duration::from_secs(30), false))
        );
        // A reset already past (clock skew) still pauses a moment rather than not at all.
        assert_eq!(rate_limit_wait(429, &h, "", 2000), Some((Duration::from_secs(1), false)));
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")]);
        let message = "You have exceeded a secondary rate limit. Please wait a few minutes.";
        assert_eq!(rate_limit_wait(403, &h, message, 1000), Some((Duration::from_secs(30), true)));
    }

    #[test]
    fn a_secondary_limit_without_headers_waits_a_minute() {
        assert_eq!(rate_limit_wait(429, &HeaderMap::new(), "", 0), Some((SECONDARY_MIN_WAIT, true)));
        let message = "You have exceeded a secondary rate limit and have been temporarily blocked.";
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limit_wait(403, &h, message, 0), Some((SECONDARY_MIN_WAIT, true)));
    }

    #[test]
    fn a_plain_forbidden_is_no_rate_limit() {
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limit_wait(403, &h, "Resource not accessible by integration", 0), None);
        assert_eq!(rate_limit_wait(500, &headers(&[("retry-after", "5")]), "", 0), None);
    }

    #[test]
    fn backoff_doubles_from_a_minute_up_to_its_cap() {
        let waits: Vec<u64> = std::iter::successors(Some(backoff(None)), |w| Some(backoff(Some(*w))))
            .take(7)
            .map(|w| w.as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(backoff(Some(Duration::from_secs(7))), SECONDARY_MIN_WAIT);
    }

    #[test]
    fn a_repeated_secondary_limit_pauses_longer_than_it_says() {
        let limited = GitHubError::RateLimited { retry_after: Duration::from_secs(7), secondary: true };
        assert_eq!(limited.rate_limit_pause(None), Some(Duration::from_secs(7)));
        assert_eq!(limited.rate_limit_pause(Some(Duration::from_secs(7))), Some(Duration::from_secs(60)));
        assert_eq!(limited.rate_limit_pause(Some(Duration::from_secs(120))), Some(Duration::from_secs(240)));
        let primary = GitHubError::RateLimited { retry_after: Duration::from_secs(1800), secondary: false };
        assert_eq!(primary.rate_limit_pause(Some(Duration::from_secs(60))), Some(Duration::from_secs(1800)));
        assert_eq!(GitHubError::Server { status: 502 }.rate_limit_pause(None), None);
    }

    #[test]
    fn repository_names_are_checked_before_they_reach_a_path() {
        assert_eq!(checked_repository("acme/api.rs"), Ok("acme/api.rs"));
        for bad in ["acme", "acme/", "/api", "acme/api/x", "acme/..", "acme/a?b", "acme/a b", "../x"] {
            assert!(matches!(checked_repository(bad), Err(GitHubError::InvalidRepository(_))), "{bad}");
        }
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_page() {
        let mut cache = EtagCache::new(2, usize::MAX);
        cache.insert(key("a"), "\"1\"".into(), Bytes::from_static(b"A"), None);
        cache.insert(key("b"), "\"2\"".into(), Bytes::from_static(b"B"), None);
        assert!(cache.get(&key("a")).is_some());
        cache.insert(key("c"), "\"3\"".into(), Bytes::from_static(b"C"), None);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("b")).is_none());
        assert_eq!(cache.get(&key("a")).unwrap().body, Bytes::from_static(b"A"));
        assert_eq!(cache.get(&key("c")).unwrap().etag, "\"3\"");
    }

    #[test]
    fn the_cache_keeps_within_its_byte_budget() {
        let mut cache = EtagCache::new(100, 1000);
        for i in 0..10 {
            cache.insert(key(&i.to_string()), "e".into(), Bytes::from(vec![b'x'; 300]), None);
        }
        assert!(cache.bytes <= 1000);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("9")).is_some());
        // A page larger than the whole budget is not kept, and does not flush the others.
        cache.insert(key("huge"), "e".into(), Bytes::from(vec![b'x'; 2000]), None);
        assert!(cache.get(&key("huge")).is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replacing_a_page_keeps_the_accounting_straight() {
        let mut cache = EtagCache::new(10, usize::MAX);
        cache.insert(key("a"), "\"1\"".into(), Bytes::from_static(b"old"), None);
        cache.insert(key("a"), "\"2\"".into(), Bytes::from_static(b"new"), None);
        assert_eq!((cache.len(), cache.recency.len()), (1, 1));
        cache.remove(&key("a"));
        assert_eq!((cache.len(), cache.recency.len(), cache.bytes), (0, 0, 0));
    }

    #[test]
    fn the_client_accepts_http_and_strips_a_trailing_slash() {
        let metrics = Arc::new(Metrics::new());
        let client = GitHubClient::new("http://127.0.0.1:9/", metrics.clone()).unwrap();
        assert_eq!(client.api_url(), "http://127.0.0.1:9");
        let client = GitHubClient::new("https://ghe.example.com/api/v3/", metrics.clone()).unwrap();
        assert_eq!(client.url("/repos/a/b").unwrap().as_str(), "https://ghe.example.com/api/v3/repos/a/b");
        assert!(matches!(GitHubClient::new("ftp://x", metrics.clone()), Err(GitHubError::InvalidUrl(_))));
        let Err(error) = GitHubClient::new("https://user:hunter2@api.github.com", metrics) else {
            panic!("credentials in the URL must be refused")
        };
        assert!(!error.to_string().contains("hunter2"));
    }
}
