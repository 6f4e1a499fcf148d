//! The GitHub calls onboarding makes with the admin token: read the repository or organisation,
//! list, create and update its hooks, list an organisation's runner groups, get a runner
//! registration token. Same User-Agent, API version, timeouts,
//! TLS provider, error type and rate-limit reading as the reconciler's [`GitHubClient`]
//! (crate::github::client), which only GETs with conditional caching.
//!
//! [`GitHubClient`]: crate::github::GitHubClient

use std::collections::HashSet;

use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use secrecy::ExposeSecret;

use super::hook::ListedHook;
use super::target::Target;
use crate::github::GitHubError;
use crate::github::client::{PER_PAGE, api_base, describe, http_client, next_link};
use crate::github::rate_limit::rate_limit_wait;
use crate::webhook::{SecretBytes, secret_bytes};

/// A repository or organisation with more hooks (or runner groups) than this many pages is
/// refused rather than half-searched.
const MAX_PAGES: usize = 50;
const MAX_MESSAGE_CHARS: usize = 300;

/// A failed call: the error, and what GitHub said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: GitHubError,
    /// GitHub's `message`, shortened (empty when it sent none).
    pub message: String,
    /// `X-Accepted-GitHub-Permissions`: the fine-grained permissions the endpoint takes.
    pub accepted_permissions: Option<String>,
}

impl From<GitHubError> for Failure {
    fn from(error: GitHubError) -> Self {
        Self { error, message: String::new(), accepted_permissions: None }
    }
}

/// `GET /repos/{owner}/{repo}`, the fields onboarding reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
    /// What the token's account may do; absent for anonymous calls.
    #[serde(default)]
    pub permissions: Option<Permissions>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub admin: bool,
}

/// `GET /orgs/{org}`, the fields onboarding reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Organisation {
    pub login: String,
}

/// A page of `GET /orgs/{org}/actions/runner-groups`.
#[derive(Deserialize)]
struct RunnerGroupPage {
    #[serde(default)]
    runner_groups: Vec<RunnerGroup>,
}

/// A runner group of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
}

/// A registration token's answer; the token never shows in `Debug`.
#[derive(Deserialize)]
struct RegistrationAnswer {
    token: String,
}

/// An HTTP client for one API root.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    base_text: String,
}

impl Api {
    /// A client for `api_url` (`https://api.github.com`, `https://HOST/api/v3`, or `http://`
    /// for a test server).
    pub fn new(api_url: &str) -> Result<Self, GitHubError> {
        let (base, base_text) = api_base(api_url)?;
        let http = http_client()?;
        Ok(Self { http, base, base_text })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub async fn repository(&self, token: &SecretBytes, owner: &str, repo: &str) -> Result<Repository, Failure> {
        let url = self.url(&format!("/repos/{owner}/{repo}"))?;
        let (body, _) = self.send(Method::GET, url, token, None).await?;
        decode(&body)
    }

    /// `GET /orgs/{org}`: 404 for an unknown organisation, and for a user's login.
    pub async fn organisation(&self, token: &SecretBytes, org: &str) -> Result<Organisation, Failure> {
        let url = self.url(&format!("/orgs/{org}"))?;
        let (body, _) = self.send(Method::GET, url, token, None).await?;
        decode(&body)
    }

    /// Every hook of the repository or organisation, all pages.
    pub async fn hooks(&self, token: &SecretBytes, target: &Target) -> Result<Vec<ListedHook>, Failure> {
        let first = self.url(&format!("{}/hooks?per_page={PER_PAGE}", target.api_path()))?;
        let pages: Vec<Vec<ListedHook>> = self.all_pages(token, first).await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Every runner group of organisation `org`, all pages.
    pub async fn runner_groups(&self, token: &SecretBytes, org: &str) -> Result<Vec<RunnerGroup>, Failure> {
        let first = self.url(&format!("/orgs/{org}/actions/runner-groups?per_page={PER_PAGE}"))?;
        let pages: Vec<RunnerGroupPage> = self.all_pages(token, first).await?;
        Ok(pages.into_iter().flat_map(|page| page.runner_groups).collect())
    }

    /// `POST …/hooks` of the repository or organisation: the new hook's id.
    pub async fn create_hook(
        &self,
        token: &SecretBytes,
        target: &Target,
        body: &serde_json::Value,
    ) -> Result<u64, Failure> {
        let url = self.url(&format!("{}/hooks", target.api_path()))?;
        let (answer, _) = self.send(Method::POST, url, token, Some(body)).await?;
        Ok(decode::<ListedHook>(&answer)?.id)
    }

    /// `PATCH …/hooks/{id}` of the repository or organisation.
    pub async fn update_hook(
        &self,
        token: &SecretBytes,
        target: &Target,
        id: u64,
        body: &serde_json::Value,
    ) -> Result<(), Failure> {
        let url = self.url(&format!("{}/hooks/{id}", target.api_path()))?;
        self.send(Method::PATCH, url, token, Some(body)).await.map(|_| ())
    }

    /// `POST …/actions/runners/registration-token` of the repository or organisation: valid for
    /// an hour, for any number of runners.
    pub async fn registration_token(&self, token: &SecretBytes, target: &Target) -> Result<SecretBytes, Failure> {
        let url = self.url(&format!("{}/actions/runners/registration-token", target.api_path()))?;
        let (body, _) = self.send(Method::POST, url, token, None).await?;
        let answer: RegistrationAnswer = decode(&body)?;
        Ok(secret_bytes(answer.token))
    }

    /// Every page from `first` on, following `rel="next"`, each decoded as `P`.
    async fn all_pages<P: DeserializeOwned>(&self, token: &SecretBytes, first: Url) -> Result<Vec<P>, Failure> {
        let mut next = Some(first);
        let mut visited = HashSet::new();
        let mut pages = Vec::new();
        while let Some(url) = next.take() {
            if !visited.insert(url.to_string()) || visited.len() > MAX_PAGES {
                return Err(
                    GitHubError::Pagination(format!("stopped at {url}: the Link header loops or runs on")).into()
                );
            }
            let (body, link) = self.send(Method::GET, url.clone(), token, None).await?;
            pages.push(decode::<P>(&body)?);
            next = match link.as_deref().and_then(next_link) {
                Some(target) => Some(self.same_origin(&url, target)?),
                None => None,
            };
        }
        Ok(pages)
    }

    fn url(&self, path_and_query: &str) -> Result<Url, GitHubError> {
        Url::parse(&format!("{}{path_and_query}", self.base_text)).map_err(|e| GitHubError::InvalidUrl(e.to_string()))
    }

    /// A `Link` target resolved against `current`; the token goes with it, so it must stay on
    /// the API's origin.
    fn same_origin(&self, current: &Url, target: &str) -> Result<Url, GitHubError> {
        let next = current.join(target).map_err(|e| GitHubError::Pagination(format!("bad next link: {e}")))?;
        if next.origin() != self.base.origin() {
            return Err(GitHubError::Pagination(format!("next link leaves {}: {next}", self.base_text)));
        }
        Ok(next)
    }

    /// One request; a 2xx gives its body and `Link` header.
    async fn send(
        &self,
        method: Method,
        url: Url,
        token: &SecretBytes,
        body: Option<&serde_json::Value>,
    ) -> Result<(bytes::Bytes, Option<String>), Failure> {
        let mut authorization = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), token.expose_secret()].concat())
            .map_err(|_| GitHubError::InvalidToken)?;
        // Keeps the token out of hyper's and reqwest's debug output.
        authorization.set_sensitive(true);
        let mut request = self.http.request(method.clone(), url.clone()).header(header::AUTHORIZATION, authorization);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| GitHubError::Http(describe(&e)))?;
        let status = response.status();
        tracing::debug!(%method, path = url.path(), status = status.as_u16(), "GitHub answered");
        let headers = response.headers().clone();
        let link = headers.get(header::LINK).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await.map_err(|e| GitHubError::Http(describe(&e)))?;
        if status.is_success() {
            return Ok((body, link));
        }
        let message = error_message(&body);
        let accepted_permissions = headers
            .get("x-accepted-github-permissions")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let now = jiff::Timestamp::now().as_second();
        let error = match status {
            StatusCode::UNAUTHORIZED => GitHubError::Unauthorized,
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                match rate_limit_wait(status.as_u16(), &headers, &message, now) {
                    Some((retry_after, secondary)) => GitHubError::RateLimited { retry_after, secondary },
                    None => GitHubError::Forbidden { message: message.clone() },
                }
            }
            StatusCode::NOT_FOUND => GitHubError::NotFound,
            status if status.is_server_error() => GitHubError::Server { status: status.as_u16() },
            status => GitHubError::Unexpected { status: status.as_u16() },
        };
        Err(Failure { error, message, accepted_permissions })
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| GitHubError::Decode(e.to_string()).into())
}

/// GitHub's `message` (and the first validation error's, for a 422), shortened.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Detail {
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Detail>,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            let detail = parsed.errors.into_iter().find_map(|d| d.message);
            match (parsed.message, detail) {
                (Some(message), Some(detail)) => format!("{message}: {detail}"),
                (message, detail) => message.or(detail).unwrap_or_default(),
            }
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    text.trim().chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_error_keeps_its_detail() {
        let body = br#"{"message":"Validation Failed","errors":[{"resource":"Hook","code":"custom","message":"Hook already exists on this repository"}]}"#;
        assert_eq!(error_message(body), "Validation Failed: Hook already exists on this repository");
        assert_eq!(error_message(br#"{"message":"Not Found"}"#), "Not Found");
    }

    #[test]
    fn an_api_url_with_credentials_is_refused_without_echoing_them() {
        let Err(error) = Api::new("https://user:hunter2@api.github.com") else { panic!("accepted credentials") };
        assert!(!error.to_string().contains("hunter2"));
    }
}
