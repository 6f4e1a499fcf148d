//! From ScaledActionRunner and Secret objects to what the server needs: the runner index that
//! demand is assigned by, and the webhook secrets that may sign each repository's deliveries.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use secrecy::ExposeSecret;

use crate::crd::ScaledActionRunner;
use crate::demand::{ForcedScaleUp, Runner, RunnerIndex, RunnerKey, ScaleFactor, Scope};
use crate::github::GitHubApp;
use crate::github::app::AppCredentialsError;
use crate::webhook::{SecretBytes, WebhookSecrets, secret_bytes};

/// The Secret key that holds a repository webhook's secret.
pub const WEBHOOK_SECRET_KEY: &str = "webhook-secret";

/// The namespace of objects that do not name one, as with `kubectl apply`.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Default)]
pub struct Catalog {
    pub runners: RunnerIndex,
    pub secrets: WebhookSecrets,
    /// GitHub tokens that may read each repository (lower-cased `owner/name`), from the Secrets
    /// the runners' `githubTokenSecret` name: every key starting with `token`, as the original.
    pub tokens: HashMap<String, Vec<SecretBytes>>,
    /// GitHub Apps that may read each repository, from the same Secrets when they hold
    /// [`APP_ID_KEY`] (or [`CLIENT_ID_KEY`]) and [`PRIVATE_KEY_KEY`] instead of tokens.
    pub apps: HashMap<String, Vec<GitHubApp>>,
}

/// Secret keys that hold GitHub tokens start with this.
pub const TOKEN_KEY_PREFIX: &str = "token";
/// The Secret key of a GitHub App's id.
pub const APP_ID_KEY: &str = "app-id";
/// The Secret key of a GitHub App's client id (GitHub's preferred JWT issuer).
pub const CLIENT_ID_KEY: &str = "client-id";
/// The Secret key of a GitHub App's private key (PEM, as GitHub generated it).
pub const PRIVATE_KEY_KEY: &str = "private-key";
/// The Secret key of a GitHub App installation's id (optional: else it is looked up).
pub const INSTALLATION_ID_KEY: &str = "installation-id";
/// Every Secret key of GitHub App credentials.
pub const APP_KEYS: [&str; 4] = [APP_ID_KEY, CLIENT_ID_KEY, PRIVATE_KEY_KEY, INSTALLATION_ID_KEY];

/// Why a runner cannot be used, or can be used only in part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerProblem {
    #[error("spec.owner must not be empty")]
    NoRepository,
    #[error("spec.maxRunners must not be negative (is {0})")]
    NegativeMax(i32),
    #[error("spec.minRunners must not be negative (is {0})")]
    NegativeMin(i32),
    #[error("{0}")]
    ScaleFactor(String),
    #[error(
        "webhook Secret {namespace}/{name} not found; deliveries for {repo} are verified only with the organisation-wide secret"
    )]
    SecretMissing { namespace: String, name: String, repo: String },
    #[error("webhook Secret {namespace}/{name} has no non-empty key {key:?}")]
    SecretKeyMissing { namespace: String, name: String, key: &'static str },
    #[error(
        "GitHub token Secret {namespace}/{name} not found, or holds neither a key starting with \"token\" nor GitHub App credentials (app-id or client-id, and private-key); {repo} is served by webhooks alone"
    )]
    TokenMissing { namespace: String, name: String, repo: String },
    #[error(
        "GitHub token Secret {namespace}/{name} holds both tokens and GitHub App credentials; {repo} is served by webhooks alone until it holds one kind"
    )]
    MixedCredentials { namespace: String, name: String, repo: String },
    #[error(
        "GitHub App credentials in Secret {namespace}/{name} cannot be used: {reason}; {repo} is served by webhooks alone"
    )]
    AppCredentials { namespace: String, name: String, repo: String, reason: AppCredentialsError },
}

impl RunnerProblem {
    /// Whether the runner is still served despite the problem.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Self::SecretMissing { .. }
                | Self::SecretKeyMissing { .. }
                | Self::TokenMissing { .. }
                | Self::MixedCredentials { .. }
                | Self::AppCredentials { .. }
        )
    }
}

/// The demand view of one ScaledActionRunner.
pub fn runner_from_crd(object: &ScaledActionRunner) -> Result<Runner, RunnerProblem> {
    let spec = &object.spec;
    if spec.owner.trim().is_empty() {
        return Err(RunnerProblem::NoRepository);
    }
    let max = u32::try_from(spec.max_runners).map_err(|_| RunnerProblem::NegativeMax(spec.max_runners))?;
    let min = u32::try_from(spec.min_runners()).map_err(|_| RunnerProblem::NegativeMin(spec.min_runners()))?;
    let scale_factor: ScaleFactor = spec
        .scale_factor()
        .parse()
        .map_err(|e: crate::demand::scaling::ScaleFactorError| RunnerProblem::ScaleFactor(e.to_string()))?;
    let key = RunnerKey::new(object.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.into()), object.name_any());
    let forced = forced_scale_up(object, &key);
    let (owner, labels) = (spec.owner.trim(), spec.runner_labels());
    let mut runner = match spec.repository() {
        Some(repo) => Runner::new(key, owner, repo, labels, min, max, scale_factor),
        None => Runner::organization(key, owner, labels, min, max, scale_factor),
    };
    runner.forced = forced;
    runner.ephemeral = spec.ephemeral();
    runner.runner_group = spec.runner_group().map(str::to_string);
    Ok(runner)
}

/// Forced scale-ups keep pre-registered runners (`runnerSecrets`) known to GitHub; runners that
/// register when they start need none, unless the spec asks for them. Unparsable durations
/// (the operator reports them) turn them off.
fn forced_scale_up(object: &ScaledActionRunner, key: &RunnerKey) -> Option<ForcedScaleUp> {
    use sha2::Digest;
    let spec = &object.spec;
    let asked = spec.force_scale_up_window.is_some() || spec.force_scale_up_frequency.is_some();
    if spec.runner_secrets.is_empty() && !asked {
        return None;
    }
    let digest = sha2::Sha256::digest(format!("{}/{}", key.namespace, key.name).as_bytes());
    let seed = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    ForcedScaleUp::new(spec.force_scale_up_frequency().ok()?, spec.force_scale_up_window().ok()?, seed)
}

/// Bytes of `key` in a Secret, from `data` or `stringData` (which wins, as the API server merges it).
pub fn secret_value(secret: &Secret, key: &str) -> Option<SecretBytes> {
    if let Some(text) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(secret_bytes(text.as_bytes()));
    }
    secret.data.as_ref().and_then(|d| d.get(key)).map(|bytes| secret_bytes(bytes.0.clone()))
}

/// Every non-empty value whose key starts with `token`, in key order.
fn token_values(secret: &Secret) -> Vec<SecretBytes> {
    let mut keys: Vec<&String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .filter(|k| k.starts_with(TOKEN_KEY_PREFIX))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter_map(|k| secret_value(secret, k)).filter(|v| !v.expose_secret().is_empty()).collect()
}

/// The GitHub credentials a `githubTokenSecret` holds.
#[derive(Debug)]
enum SecretCredentials {
    Tokens(Vec<SecretBytes>),
    App(GitHubApp),
}

/// Why a `githubTokenSecret` gives no credentials.
#[derive(Debug, Clone)]
enum CredentialsProblem {
    Missing,
    Mixed,
    App(AppCredentialsError),
}

/// The tokens, or the GitHub App, of a `githubTokenSecret`; holding both kinds is a problem (the
/// server would have to guess which the owner meant).
fn secret_credentials(secret: &Secret) -> Result<SecretCredentials, CredentialsProblem> {
    let tokens = token_values(secret);
    let present = |key: &str| secret_value(secret, key).filter(|v| !v.expose_secret().trim_ascii().is_empty());
    let text = |key: &str| present(key).map(|v| String::from_utf8_lossy(v.expose_secret()).trim().to_string());
    let has_app = [APP_ID_KEY, CLIENT_ID_KEY, PRIVATE_KEY_KEY].into_iter().any(|key| present(key).is_some());
    match (tokens.is_empty(), has_app) {
        (true, false) => Err(CredentialsProblem::Missing),
        (false, false) => Ok(SecretCredentials::Tokens(tokens)),
        (false, true) => Err(CredentialsProblem::Mixed),
        (true, true) => {
            let id = text(CLIENT_ID_KEY).or_else(|| text(APP_ID_KEY)).unwrap_or_default();
            let key = present(PRIVATE_KEY_KEY);
            let key = key.as_ref().map_or(&[][..], |k| k.expose_secret());
            let installation = text(INSTALLATION_ID_KEY);
            GitHubApp::new(&id, key, installation.as_deref())
                .map(SecretCredentials::App)
                .map_err(CredentialsProblem::App)
        }
    }
}

impl Catalog {
    /// Builds the catalog; each problem is returned with the index of the runner it concerns.
    /// Runners with errors are left out; runners with warnings are kept.
    pub fn build<'a>(
        runners: impl IntoIterator<Item = &'a ScaledActionRunner>,
        secrets: impl IntoIterator<Item = &'a Secret>,
        organisation: Option<SecretBytes>,
    ) -> (Self, Vec<(usize, RunnerProblem)>) {
        Self::build_with(runners, secrets, organisation, None)
    }

    /// [`build`](Self::build), reading every `githubTokenSecret` from `token_namespace` when given
    /// (the core's `apiServerPatTokenNamespace`) instead of the runner's own namespace.
    pub fn build_with<'a>(
        runners: impl IntoIterator<Item = &'a ScaledActionRunner>,
        secrets: impl IntoIterator<Item = &'a Secret>,
        organisation: Option<SecretBytes>,
        token_namespace: Option<&str>,
    ) -> (Self, Vec<(usize, RunnerProblem)>) {
        let secrets: HashMap<(String, String), &Secret> = secrets
            .into_iter()
            .map(|s| ((s.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.into()), s.name_any()), s))
            .collect();
        let mut webhook_secrets = WebhookSecrets::new(organisation);
        let mut tokens: HashMap<String, Vec<SecretBytes>> = HashMap::new();
        let mut apps: HashMap<String, Vec<GitHubApp>> = HashMap::new();
        // Each Secret read once, however many runners name it.
        let mut read: HashMap<(String, String), Result<SecretCredentials, CredentialsProblem>> = HashMap::new();
        let mut problems = Vec::new();
        let mut index = Vec::new();
        for (position, object) in runners.into_iter().enumerate() {
            let runner = match runner_from_crd(object) {
                Ok(runner) => runner,
                Err(problem) => {
                    problems.push((position, problem));
                    continue;
                }
            };
            webhook_secrets.serve_owner(runner.owner());
            if let Some(name) = object.spec.webhook_secret.as_deref().filter(|n| !n.is_empty()) {
                let namespace = runner.key.namespace.clone();
                match secrets.get(&(namespace.clone(), name.to_string())) {
                    None => problems.push((
                        position,
                        RunnerProblem::SecretMissing { namespace, name: name.into(), repo: runner.repo.clone() },
                    )),
                    Some(secret) => match secret_value(secret, WEBHOOK_SECRET_KEY)
                        .filter(|v| !v.expose_secret().is_empty())
                    {
                        // An organisation runner's secret signs for every repository of its owner.
                        Some(value) => match runner.scope {
                            Scope::Repository => webhook_secrets.add(&runner.repo, value),
                            Scope::Organization => webhook_secrets.add_owner(&runner.repo, value),
                        },
                        None => problems.push((
                            position,
                            RunnerProblem::SecretKeyMissing { namespace, name: name.into(), key: WEBHOOK_SECRET_KEY },
                        )),
                    },
                }
            }
            if let Some(name) = object.spec.github_token_secret.as_deref().filter(|n| !n.is_empty()) {
                let namespace = token_namespace.map_or_else(|| runner.key.namespace.clone(), str::to_string);
                let key = (namespace.clone(), name.to_string());
                let credentials = read.entry(key.clone()).or_insert_with(|| {
                    secrets.get(&key).map_or(Err(CredentialsProblem::Missing), |secret| secret_credentials(secret))
                });
                let (name, repo) = (name.to_string(), runner.repo.clone());
                match credentials {
                    Err(CredentialsProblem::Missing) => {
                        problems.push((position, RunnerProblem::TokenMissing { namespace, name, repo }));
                    }
                    Err(CredentialsProblem::Mixed) => {
                        problems.push((position, RunnerProblem::MixedCredentials { namespace, name, repo }));
                    }
                    Err(CredentialsProblem::App(reason)) => {
                        let reason = reason.clone();
                        problems.push((position, RunnerProblem::AppCredentials { namespace, name, repo, reason }));
                    }
                    Ok(SecretCredentials::Tokens(found)) => {
                        let repo_tokens = tokens.entry(repo).or_default();
                        for token in found.iter() {
                            if !repo_tokens.iter().any(|known| known.expose_secret() == token.expose_secret()) {
                                repo_tokens.push(token.clone());
                            }
                        }
                    }
                    Ok(SecretCredentials::App(app)) => {
                        let repo_apps = apps.entry(repo).or_default();
                        if !repo_apps.contains(app) {
                            repo_apps.push(app.clone());
                        }
                    }
                }
            }
            index.push(runner);
        }
        (Self { runners: RunnerIndex::new(index), secrets: webhook_secrets, tokens, apps }, problems)
    }
}
