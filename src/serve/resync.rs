//! The resync from GitHub: its tokens, and the Lease that lets one replica at a time run it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ServeError;
use super::catalog::ReconcilerCatalogs;
use crate::config::{GitHubArgs, LeaseArgs};
use crate::demand::RunnerIndex;
use crate::github::reconciler::{Reconciler, ReconcilerConfig, RepoTokens};
use crate::github::{Credential, GitHubApp, GitHubClient, Token};
use crate::lease::LeaseConfig;
use crate::metrics::Metrics;
use crate::store::StoreHandle;

/// How long a stopping resync may take before it is aborted (it stops at its next await).
const RESYNC_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// The credentials of `--github-token-file` or `--github-app-*`, for repositories whose runners
/// name none.
pub(super) fn default_credential(args: &GitHubArgs) -> Result<Option<Credential>, ServeError> {
    match (&args.github_token_file, &args.github_app_id, &args.github_app_private_key_file) {
        (Some(_), Some(_), _) => Err(ServeError::TokenAndApp),
        (Some(_), None, _) => Ok(default_token(args)?.map(Credential::Token)),
        (None, Some(id), Some(path)) => {
            let reason = |reason: String| ServeError::AppKey { path: path.display().to_string(), reason };
            // The key is read into a buffer that is zeroed once parsed.
            let key = secrecy::SecretSlice::from(std::fs::read(path).map_err(|e| reason(e.to_string()))?);
            let installation = args.github_app_installation_id.map(|id| id.to_string());
            let app = GitHubApp::new(id, secrecy::ExposeSecret::expose_secret(&key), installation.as_deref())
                .map_err(|e| reason(e.to_string()))?;
            tracing::info!(app = %app, "GitHub App credentials for repositories whose runners name no githubTokenSecret");
            Ok(Some(Credential::App(app)))
        }
        (None, Some(_), None) => Err(ServeError::AppIncomplete("--github-app-private-key-file is missing")),
        (None, None, Some(_)) => Err(ServeError::AppIncomplete("--github-app-id is missing")),
        (None, None, None) if args.github_app_installation_id.is_some() => {
            Err(ServeError::AppIncomplete("--github-app-installation-id needs them"))
        }
        (None, None, None) => Ok(None),
    }
}

/// The token of `--github-token-file`, for repositories whose runners name none.
fn default_token(args: &GitHubArgs) -> Result<Option<Token>, ServeError> {
    let Some(path) = &args.github_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|source| ServeError::SecretFile { path: path.display().to_string(), source })?;
    let token = Token::new(text);
    if token.is_empty() {
        return Err(ServeError::EmptySecretFile(path.display().to_string()));
    }
    Ok(Some(token))
}

/// What the resync starts from.
pub(super) struct Start<'a> {
    pub github: &'a GitHubArgs,
    pub lease: &'a LeaseArgs,
    pub runners: &'a RunnerIndex,
    pub tokens: RepoTokens,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    /// In a cluster: the catalogs to follow.
    pub catalogs: Option<ReconcilerCatalogs>,
}

/// The tasks that run beside the listeners (watches, resync, lease) until they have drained.
pub(super) struct Workers {
    stop: CancellationToken,
    resync: Option<JoinHandle<()>>,
    followers: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(super) fn new(stop: CancellationToken, resync: Option<JoinHandle<()>>, followers: Vec<JoinHandle<()>>) -> Self {
        Self { stop, resync, followers }
    }

    /// Stops them: the resync drops any pass in flight, the cluster's watches end at once. The
    /// caller's final checkpoint comes next, so nothing here may hold it up for long.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        if let Some(mut resync) = self.resync
            && tokio::time::timeout(RESYNC_STOP, &mut resync).await.is_err()
        {
            tracing::warn!("the resync did not stop in time; aborting it");
            resync.abort();
        }
        for follower in self.followers {
            follower.abort();
        }
    }
}

/// Starts the resync loop when any repository has a token, or, following the cluster's
/// `catalogs`, always (tokens may come later); only the replica holding the lease resyncs.
pub(super) fn start(start: Start<'_>, stop: CancellationToken) -> Result<Option<JoinHandle<()>>, ServeError> {
    let Start { github, lease, runners, tokens, store, metrics, catalogs } = start;
    let with_token = tokens.0.values().filter(|t| !t.is_empty()).count();
    let clock = crate::clock::system_clock();
    let client =
        GitHubClient::new(&github.github_api_url, metrics.clone()).map_err(|e| ServeError::GitHub(e.to_string()))?;
    let mut reconciler = Reconciler::new(Arc::new(client), store, ReconcilerConfig::from(github), metrics);
    reconciler.set_catalog(runners.clone(), tokens, clock());
    if with_token == 0 && catalogs.is_none() {
        tracing::info!("no GitHub token or App: demand comes from webhooks alone (no resync)");
        return Ok(None);
    }
    tracing::info!(
        repositories = with_token,
        api = %github.github_api_url,
        cache_window = ?github.cache_window,
        cache_window_when_empty = ?github.cache_window_when_empty,
        "resyncing from GitHub"
    );
    let lease: Option<LeaseConfig> = lease.into();
    let (leading_tx, leading) = watch::channel(lease.is_none());
    if let Some(config) = lease {
        let (clock, stop) = (clock.clone(), stop.clone());
        tokio::spawn(async move {
            match kube::Client::try_default().await {
                Ok(client) => {
                    let api = kube::Api::namespaced(client, &config.namespace);
                    crate::lease::run(api, config, clock, leading_tx, stop).await;
                }
                Err(error) => tracing::error!(%error, "no Kubernetes client for the resync lease: not resyncing"),
            }
        });
    }
    Ok(Some(tokio::spawn(reconciler.run(clock, leading, stop, catalogs))))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn github(args: &[&str]) -> GitHubArgs {
        let argv = ["github-action-autoscaler", "serve"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Serve(args)) => args.github,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn app_flags_that_cannot_be_used_stop_serve_with_the_reason_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("app.pem");
        std::fs::write(
            &key,
            "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0IGtleSBieXRlcw==\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let key = key.to_str().unwrap();
        let error = default_credential(&github(&["--github-app-id", "1", "--github-app-private-key-file", key]))
            .expect_err("not an RSA key")
            .to_string();
        assert!(error.contains(key) && error.contains("not an RSA private key"), "{error}");
        assert!(!error.contains("c2VjcmV0"), "{error}");
        let missing = dir.path().join("missing.pem");
        let args = github(&["--github-app-id", "1", "--github-app-private-key-file", missing.to_str().unwrap()]);
        assert!(matches!(default_credential(&args), Err(ServeError::AppKey { .. })));
        let args = github(&["--github-app-id", "1"]);
        assert!(matches!(default_credential(&args), Err(ServeError::AppIncomplete(_))));
        let mut args = github(&["--github-app-id", "1", "--github-app-private-key-file", key]);
        args.github_token_file = Some("token".into());
        assert!(matches!(default_credential(&args), Err(ServeError::TokenAndApp)));
        assert!(default_credential(&github(&[])).unwrap().is_none());
    }
}
