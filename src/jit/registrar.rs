//! GitHub's side of just-in-time registrations, with the runner's credential: a token as it
//! is; a GitHub App through a token of its installation that may only administer runners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;

use super::{Deleted, EphemeralRunner, Listed, Minted, Place, Registered, Registrar, RegistrarError};
use crate::clock::Clock;
use crate::github::installations::Installations;
use crate::github::runners::RunnerStatus;
use crate::github::runners::{DEFAULT_RUNNER_GROUP_ID, RunnerScope};
use crate::github::{Credential, GitHubApp, GitHubClient, GitHubError, Token};

/// The work folder of a just-in-time runner (relative to its home, as GitHub's default).
const WORK_FOLDER: &str = "_work";

/// Renew a cached runner token this long before GitHub expires it.
const RENEW_BEFORE: i64 = 5 * 60;

pub struct GitHubRegistrar {
    client: Arc<GitHubClient>,
    installations: Installations,
    clock: Clock,
    /// Runner-administration tokens of App installations, by (App, installation).
    runner_tokens: Mutex<HashMap<(String, u64), (Token, i64)>>,
    /// Runner group ids by (organisation, group name).
    groups: Mutex<HashMap<(String, String), u64>>,
}

impl GitHubRegistrar {
    pub fn new(client: Arc<GitHubClient>, clock: Clock) -> Self {
        Self {
            installations: Installations::new(client.clone()),
            client,
            clock,
            runner_tokens: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn scope(place: &Place) -> RunnerScope {
        match place {
            Place::Repository { owner, repo } => RunnerScope::repository(owner, repo),
            Place::Organization { org, .. } => RunnerScope::organization(org),
        }
    }

    /// A token that may administer the runner's runners.
    async fn token(&self, runner: &EphemeralRunner) -> Result<Token, GitHubError> {
        match &runner.credential {
            Credential::Token(token) => Ok(token.clone()),
            Credential::App(app) => self.app_token(app, &runner.place).await,
        }
    }

    async fn app_token(&self, app: &GitHubApp, place: &Place) -> Result<Token, GitHubError> {
        let now = (self.clock)();
        let key = match place {
            Place::Repository { owner, repo } => format!("{owner}/{repo}"),
            Place::Organization { org, .. } => org.clone(),
        };
        // The installation, looked up once (and cached) as the resync does.
        let installation = self.installations.installation(app, &key, now, &mut 0).await?;
        let cache_key = (app.issuer().to_string(), installation);
        if let Some((token, expires_at)) = self.lock_tokens().get(&cache_key)
            && *expires_at - RENEW_BEFORE > now
        {
            return Ok(token.clone());
        }
        let jwt = self.installations.jwt(app, now)?;
        let minted = self.client.create_runner_installation_token(&jwt, installation, &Self::scope(place)).await?;
        let minted = minted.value.ok_or_else(|| GitHubError::NotInstalled(key.clone()))?;
        self.lock_tokens().insert(cache_key, (minted.token.clone(), minted.expires_at));
        Ok(minted.token)
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), (Token, i64)>> {
        self.runner_tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn group_id(&self, token: &Token, place: &Place) -> Result<u64, RegistrarError> {
        let Place::Organization { org, group } = place else { return Ok(DEFAULT_RUNNER_GROUP_ID) };
        let key = (org.clone(), group.to_ascii_lowercase());
        if let Some(id) = self.groups.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(*id);
        }
        let id = self
            .client
            .runner_group_id(token, org, group)
            .await
            .map_err(failed)?
            .ok_or_else(|| RegistrarError::Failed(format!("organisation {org} has no runner group {group}")))?;
        self.groups.lock().unwrap_or_else(PoisonError::into_inner).insert(key, id);
        Ok(id)
    }

    async fn mint_inner(&self, runner: &EphemeralRunner, name: &str) -> Result<Minted, RegistrarError> {
        let token = self.token(runner).await.map_err(failed)?;
        let group = self.group_id(&token, &runner.place).await?;
        let scope = Self::scope(&runner.place);
        let config = self
            .client
            .generate_jitconfig(&token, &scope, name, group, &runner.labels, Some(WORK_FOLDER))
            .await
            .map_err(failed)?;
        Ok(Minted { runner_id: config.runner_id, runner_name: config.name, encoded: config.encoded_jit_config })
    }

    async fn find_inner(&self, runner: &EphemeralRunner, name: &str) -> Result<Option<Registered>, RegistrarError> {
        let token = self.token(runner).await.map_err(failed)?;
        let found = self.client.runner_named(&token, &Self::scope(&runner.place), name).await.map_err(failed)?;
        Ok(found.value.map(|r| Registered { id: r.id, busy: r.busy }))
    }

    async fn delete_inner(&self, runner: &EphemeralRunner, id: u64) -> Result<Deleted, RegistrarError> {
        let token = self.token(runner).await.map_err(failed)?;
        match self.client.delete_runner(&token, &Self::scope(&runner.place), id).await {
            Ok(_) => Ok(Deleted::Gone),
            Err(GitHubError::RunnerBusy { .. }) => Ok(Deleted::Busy),
            Err(error) => Err(failed(error)),
        }
    }
}

/// GitHub's answer as the rule reads it (never with a token or configuration: the client's
/// errors hold neither).
fn failed(error: GitHubError) -> RegistrarError {
    match error {
        GitHubError::Conflict { .. } => RegistrarError::NameTaken,
        GitHubError::RateLimited { retry_after, .. } => RegistrarError::RateLimited { retry_after },
        error => RegistrarError::Failed(error.to_string()),
    }
}

impl Registrar for GitHubRegistrar {
    fn mint<'a>(&'a self, runner: &'a EphemeralRunner, name: &'a str) -> BoxFuture<'a, Result<Minted, RegistrarError>> {
        Box::pin(self.mint_inner(runner, name))
    }

    fn find<'a>(
        &'a self,
        runner: &'a EphemeralRunner,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Registered>, RegistrarError>> {
        Box::pin(self.find_inner(runner, name))
    }

    fn delete<'a>(&'a self, runner: &'a EphemeralRunner, id: u64) -> BoxFuture<'a, Result<Deleted, RegistrarError>> {
        Box::pin(self.delete_inner(runner, id))
    }

    fn list<'a>(&'a self, runner: &'a EphemeralRunner) -> BoxFuture<'a, Result<Vec<Listed>, RegistrarError>> {
        Box::pin(async move {
            let token = self.token(runner).await.map_err(failed)?;
            // Conditional: an unchanged list answers 304, which costs no credit.
            let listed = self.client.list_runners(&token, &Self::scope(&runner.place)).await.map_err(failed)?;
            Ok(listed
                .value
                .into_iter()
                .map(|r| Listed { id: r.id, name: r.name, online: r.status == RunnerStatus::Online, busy: r.busy })
                .collect())
        })
    }
}
