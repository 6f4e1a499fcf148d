//! The repository webhook onboarding creates or updates: which URL GitHub may deliver to, the
//! request body, and whether an existing hook is updated or a new one created. Pure.

use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};

use secrecy::ExposeSecret;

use crate::webhook::SecretBytes;

/// The event the server scales on; GitHub also sends `ping` to every hook unasked.
pub const WORKFLOW_JOB: &str = "workflow_job";

/// Why GitHub should not be told to deliver to a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlProblem {
    #[error("not a URL ({0}): give the full address of the server's /webhook, e.g. https://ci.example.com/webhook")]
    Unparsable(String),
    #[error(
        "GitHub cannot deliver to a {0}:// URL: use https:// (http:// is accepted only for loopback hosts, for tests and demos)"
    )]
    Scheme(String),
    #[error(
        "deliveries carry job data and are signed with a secret an eavesdropper could replay: use https:// (http:// is accepted only for loopback hosts)"
    )]
    PlainHttp,
    #[error("put no credentials in the URL: deliveries are authenticated by their signature")]
    Credentials,
}

/// `text` as a URL GitHub may deliver to: `https://`, or `http://` to a loopback host.
pub fn check_webhook_url(text: &str) -> Result<Url, WebhookUrlProblem> {
    let url = Url::parse(text.trim()).map_err(|e| WebhookUrlProblem::Unparsable(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(WebhookUrlProblem::PlainHttp),
        other => return Err(WebhookUrlProblem::Scheme(other.to_owned())),
    }
    if url.host().is_none() {
        return Err(WebhookUrlProblem::Unparsable("it names no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookUrlProblem::Credentials);
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A hook as GitHub lists it (`GET /repos/{owner}/{repo}/hooks`); the secret is never listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedHook {
    pub id: u64,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub config: ListedConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ListedConfig {
    #[serde(default)]
    pub url: Option<String>,
}

/// What to do to the repository's hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookChange {
    /// No hook delivers to the URL yet.
    Create { events: Vec<String> },
    /// Hook `id` already delivers there: rewrite it in place (a new secret, our events added
    /// to the ones it had). `duplicates` are further hooks with the same URL, left alone.
    Update { id: u64, events: Vec<String>, duplicates: Vec<u64> },
}

impl HookChange {
    pub fn events(&self) -> &[String] {
        match self {
            Self::Create { events } | Self::Update { events, .. } => events,
        }
    }
}

/// Creates a hook for `url` unless one already delivers there (same URL once parsed, so
/// `HTTPS://Host:443/webhook` is `https://host/webhook`); the lowest id wins when several do.
pub fn plan(hooks: &[ListedHook], url: &Url) -> HookChange {
    let mut same: Vec<&ListedHook> =
        hooks.iter().filter(|hook| hook.config.url.as_deref().is_some_and(|listed| same_url(listed, url))).collect();
    same.sort_by_key(|hook| hook.id);
    match same.split_first() {
        None => HookChange::Create { events: vec![WORKFLOW_JOB.to_owned()] },
        Some((first, rest)) => {
            let mut events = first.events.clone();
            if !events.iter().any(|event| event == WORKFLOW_JOB || event == "*") {
                events.push(WORKFLOW_JOB.to_owned());
            }
            HookChange::Update { id: first.id, events, duplicates: rest.iter().map(|hook| hook.id).collect() }
        }
    }
}

fn same_url(listed: &str, url: &Url) -> bool {
    match Url::parse(listed.trim()) {
        Ok(parsed) => parsed == *url,
        Err(_) => listed.trim() == url.as_str(),
    }
}

/// The body of the create (POST) or update (PATCH) request: an active JSON hook signed with
/// `secret`, TLS verified. Holds the secret: never log it.
pub fn request_body(url: &Url, secret: &SecretBytes, events: &[String]) -> Value {
    json!({
        "name": "web",
        "active": true,
        "events": events,
        "config": {
            "url": url.as_str(),
            "content_type": "json",
            "secret": String::from_utf8_lossy(secret.expose_secret()),
            "insecure_ssl": "0",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::secret_bytes;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn listed(id: u64, url: &str, events: &[&str]) -> ListedHook {
        ListedHook {
            id,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            config: ListedConfig { url: Some(url.to_owned()) },
        }
    }

    #[test]
    fn https_urls_are_accepted() {
        assert_eq!(check_webhook_url(" https://ci.example.com/webhook\n").unwrap().host_str(), Some("ci.example.com"));
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback_hosts() {
        for loopback in ["http://127.0.0.1:8080/webhook", "http://localhost/webhook", "http://[::1]:9/webhook"] {
            assert!(check_webhook_url(loopback).is_ok(), "{loopback}");
        }
        assert_eq!(check_webhook_url("http://ci.example.com/webhook"), Err(WebhookUrlProblem::PlainHttp));
    }

    #[test]
    fn other_schemes_and_credentials_are_refused_with_what_to_use() {
        let ftp = check_webhook_url("ftp://ci.example.com/webhook").unwrap_err();
        assert_eq!(ftp, WebhookUrlProblem::Scheme("ftp".into()));
        assert!(ftp.to_string().contains("use https://"));
        assert!(matches!(check_webhook_url("ci.example.com/webhook"), Err(WebhookUrlProblem::Unparsable(_))));
        assert_eq!(check_webhook_url("https://u:p@ci.example.com/webhook"), Err(WebhookUrlProblem::Credentials));
    }

    #[test]
    fn no_hook_for_the_url_means_create_one_for_workflow_jobs() {
        let hooks = [listed(1, "https://elsewhere.example.com/hook", &["push"])];
        assert_eq!(
            plan(&hooks, &url("https://ci.example.com/webhook")),
            HookChange::Create { events: vec!["workflow_job".into()] }
        );
    }

    #[test]
    fn a_hook_with_the_same_url_is_updated_keeping_its_other_events() {
        let hooks = [listed(7, "https://CI.example.com:443/webhook", &["push"]), listed(3, "https://x.test/", &[])];
        assert_eq!(
            plan(&hooks, &url("https://ci.example.com/webhook")),
            HookChange::Update { id: 7, events: vec!["push".into(), "workflow_job".into()], duplicates: vec![] }
        );
    }

    #[test]
    fn of_several_hooks_with_the_url_the_oldest_is_updated_and_the_rest_reported() {
        let target = "https://ci.example.com/webhook";
        let hooks = [listed(9, target, &["workflow_job"]), listed(4, target, &["*"])];
        assert_eq!(
            plan(&hooks, &url(target)),
            HookChange::Update { id: 4, events: vec!["*".into()], duplicates: vec![9] }
        );
    }

    #[test]
    fn the_request_body_is_an_active_json_hook_with_tls_verified() {
        let body =
            request_body(&url("https://ci.example.com/webhook"), &secret_bytes("s3cret"), &["workflow_job".into()]);
        assert_eq!(body["events"], json!(["workflow_job"]));
        assert_eq!(body["active"], json!(true));
        assert_eq!(body["config"]["content_type"], "json");
        assert_eq!(body["config"]["insecure_ssl"], "0");
        assert_eq!(body["config"]["secret"], "s3cret");
        assert_eq!(body["config"]["url"], "https://ci.example.com/webhook");
    }
}
