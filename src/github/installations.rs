//! Installation tokens of GitHub Apps: which installation covers each repository, one token per
//! installation shared by all its repositories, and each App's JWT, each kept until shortly
//! before it expires.
//!
//! [`InstallationCache`] decides (pure, over an injected `now`); [`Installations`] asks GitHub
//! for what the cache lacks. Lookups and minting are the App's own requests, made with its JWT:
//! GitHub counts them against the App, not against the installation whose token they mint.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::app::{AppIdentity, GitHubApp};
use super::client::{GitHubClient, InstallationToken};
use super::error::GitHubError;
use super::token::Token;

/// A JWT is signed anew once it has less than this to live (it lives 10 minutes).
pub const JWT_RENEW_BEFORE_SECS: i64 = 120;
/// An installation token is replaced this long before it expires (it lives an hour)...
pub const TOKEN_RENEW_BEFORE_SECS: i64 = 300;
/// ...or, for a token GitHub gave a shorter life, once half of it is gone.
const TOKEN_RENEW_AT_LEAST: i64 = 2;
/// How long a repository the App is not installed on is left alone before it is asked again.
pub const NOT_INSTALLED_RETRY_SECS: i64 = 600;

type InstallationKey = (AppIdentity, u64);

#[derive(Debug)]
struct CachedToken {
    token: Token,
    renew_at: i64,
}

/// What is known of Apps' installations and tokens. Not `Clone`: one per reconciler.
#[derive(Debug, Default)]
pub struct InstallationCache {
    jwts: HashMap<AppIdentity, (Token, i64)>,
    repos: HashMap<(AppIdentity, String), u64>,
    not_installed: HashMap<(AppIdentity, String), i64>,
    tokens: HashMap<InstallationKey, CachedToken>,
}

/// What the cache holds, for tests and the reconciler's footprint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheFootprint {
    pub jwts: usize,
    pub repositories: usize,
    pub tokens: usize,
}

impl InstallationCache {
    /// The App's JWT, while it has more than [`JWT_RENEW_BEFORE_SECS`] to live.
    pub fn jwt(&self, app: &AppIdentity, now: i64) -> Option<Token> {
        self.jwts.get(app).filter(|(_, expires_at)| now < expires_at - JWT_RENEW_BEFORE_SECS).map(|(t, _)| t.clone())
    }

    pub fn set_jwt(&mut self, app: &AppIdentity, token: Token, expires_at: i64) {
        self.jwts.insert(app.clone(), (token, expires_at));
    }

    /// GitHub refused the App's JWT (a clock far off, a key replaced): the next one is signed anew.
    pub fn drop_jwt(&mut self, app: &AppIdentity) {
        self.jwts.remove(app);
    }

    /// The installation of `app` that covers `repo`: named by the credentials, else as looked up.
    pub fn installation(&self, app: &GitHubApp, repo: &str) -> Option<u64> {
        app.installation().or_else(|| self.repos.get(&(app.identity().clone(), repo.to_string())).copied())
    }

    pub fn set_installation(&mut self, app: &GitHubApp, repo: &str, installation: u64) {
        let key = (app.identity().clone(), repo.to_string());
        self.not_installed.remove(&key);
        self.repos.insert(key, installation);
    }

    /// Until when `repo` is known not to have the App installed (then it is asked again).
    pub fn not_installed_until(&self, app: &GitHubApp, repo: &str) -> Option<i64> {
        self.not_installed.get(&(app.identity().clone(), repo.to_string())).copied()
    }

    pub fn set_not_installed(&mut self, app: &GitHubApp, repo: &str, until: i64) {
        let key = (app.identity().clone(), repo.to_string());
        self.repos.remove(&key);
        self.not_installed.insert(key, until);
    }

    /// The installation's token while it is not due for renewal.
    pub fn token(&self, app: &AppIdentity, installation: u64, now: i64) -> Option<Token> {
        self.tokens
            .get(&(app.clone(), installation))
            .filter(|cached| now < cached.renew_at)
            .map(|cached| cached.token.clone())
    }

    /// Keeps a token minted at `now` until [`TOKEN_RENEW_BEFORE_SECS`] before it expires, or
    /// half its life for a short-lived one.
    pub fn set_token(&mut self, app: &AppIdentity, installation: u64, minted: InstallationToken, now: i64) {
        let life = (minted.expires_at - now).max(0);
        let renew_at = minted.expires_at - TOKEN_RENEW_BEFORE_SECS.min(life / TOKEN_RENEW_AT_LEAST);
        self.tokens.insert((app.clone(), installation), CachedToken { token: minted.token, renew_at });
    }

    /// GitHub refused `token` (401): it is dropped, unless a newer one replaced it already.
    pub fn drop_token(&mut self, app: &AppIdentity, installation: u64, token: &Token) {
        let key = (app.clone(), installation);
        if self.tokens.get(&key).is_some_and(|cached| cached.token == *token) {
            self.tokens.remove(&key);
        }
    }

    /// GitHub knows no such installation (any more): its token and the repositories that pointed
    /// to it are forgotten, so they are looked up again.
    pub fn forget_installation(&mut self, app: &AppIdentity, installation: u64) {
        self.tokens.remove(&(app.clone(), installation));
        self.repos.retain(|(identity, _), id| !(identity == app && *id == installation));
    }

    /// Keeps what concerns `apps`, the repositories in `repos` and the installations they use
    /// (those looked up, and those `named` by the credentials) only.
    pub fn retain(&mut self, apps: &HashSet<AppIdentity>, repos: &HashSet<String>, named: &HashSet<u64>) {
        self.jwts.retain(|app, _| apps.contains(app));
        self.repos.retain(|(app, repo), _| apps.contains(app) && repos.contains(repo));
        self.not_installed.retain(|(app, repo), _| apps.contains(app) && repos.contains(repo));
        let looked_up: HashSet<u64> = self.repos.values().copied().collect();
        self.tokens.retain(|(app, id), _| apps.contains(app) && (looked_up.contains(id) || named.contains(id)));
    }

    pub fn footprint(&self) -> CacheFootprint {
        CacheFootprint { jwts: self.jwts.len(), repositories: self.repos.len(), tokens: self.tokens.len() }
    }
}

/// An installation token to resync a repository with, and what the App spent to get it.
#[derive(Debug, Clone)]
pub struct Obtained {
    pub token: Token,
    pub installation: u64,
}

/// JWTs signed and installation tokens minted since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Minted {
    pub jwts: u64,
    pub tokens: u64,
}

/// The cache and the requests that fill it. Shared by the reconciler's tasks.
pub struct Installations {
    client: Arc<GitHubClient>,
    cache: Mutex<InstallationCache>,
    /// One mint at a time per installation: repositories resynced together share its token.
    minting: Mutex<HashMap<InstallationKey, Arc<tokio::sync::Mutex<()>>>>,
    jwts_signed: AtomicU64,
    tokens_minted: AtomicU64,
}

impl std::fmt::Debug for Installations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installations").field("cache", &self.footprint()).finish_non_exhaustive()
    }
}

impl Installations {
    pub fn new(client: Arc<GitHubClient>) -> Self {
        Self {
            client,
            cache: Mutex::new(InstallationCache::default()),
            minting: Mutex::new(HashMap::new()),
            jwts_signed: AtomicU64::new(0),
            tokens_minted: AtomicU64::new(0),
        }
    }

    pub fn cache(&self) -> MutexGuard<'_, InstallationCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn footprint(&self) -> CacheFootprint {
        self.cache().footprint()
    }

    pub fn minted(&self) -> Minted {
        Minted { jwts: self.jwts_signed.load(Ordering::Relaxed), tokens: self.tokens_minted.load(Ordering::Relaxed) }
    }

    /// An installation token that reads `repo` (`owner/name`, or an organisation's name for its
    /// installation on the organisation), from the cache or minted (looking the installation up
    /// first when it is not known). Returns with it the App's requests made
    /// (each spends the App's budget), also when it fails.
    pub async fn token(&self, app: &GitHubApp, repo: &str, now: i64) -> (Result<Obtained, GitHubError>, u32) {
        let mut spent = 0;
        let result = self.obtain(app, repo, now, &mut spent).await;
        (result, spent)
    }

    async fn obtain(&self, app: &GitHubApp, repo: &str, now: i64, spent: &mut u32) -> Result<Obtained, GitHubError> {
        let obtained = self.obtain_once(app, repo, now, spent).await;
        if let Err(GitHubError::JwtRejected { .. }) = &obtained {
            self.cache().drop_jwt(app.identity());
        }
        obtained
    }

    async fn obtain_once(
        &self,
        app: &GitHubApp,
        repo: &str,
        now: i64,
        spent: &mut u32,
    ) -> Result<Obtained, GitHubError> {
        let identity = app.identity();
        let installation = self.installation(app, repo, now, spent).await?;
        if let Some(token) = self.cache().token(identity, installation, now) {
            return Ok(Obtained { token, installation });
        }
        let gate = {
            let mut minting = self.minting.lock().unwrap_or_else(PoisonError::into_inner);
            minting.retain(|_, gate| Arc::strong_count(gate) > 1);
            minting.entry((identity.clone(), installation)).or_default().clone()
        };
        let _minting = gate.lock().await;
        // Another task may have minted it while this one waited.
        if let Some(token) = self.cache().token(identity, installation, now) {
            return Ok(Obtained { token, installation });
        }
        let jwt = self.jwt(app, now)?;
        let minted = self.client.create_installation_token(&jwt, installation).await;
        *spent += 1;
        match minted?.value {
            Some(minted) => {
                self.tokens_minted.fetch_add(1, Ordering::Relaxed);
                let token = minted.token.clone();
                self.cache().set_token(identity, installation, minted, now);
                tracing::debug!(app = %app.issuer(), installation, "installation token minted");
                Ok(Obtained { token, installation })
            }
            None => {
                // Uninstalled, or a named installation of another App.
                let mut cache = self.cache();
                cache.forget_installation(identity, installation);
                cache.set_not_installed(app, repo, now + NOT_INSTALLED_RETRY_SECS);
                Err(GitHubError::NotInstalled(repo.to_string()))
            }
        }
    }

    /// The App's installation that reads `repo` (`owner/name`, or an organisation's name), from
    /// the cache or looked up with the App's JWT (counted in `spent`); no token is minted.
    pub async fn installation(
        &self,
        app: &GitHubApp,
        repo: &str,
        now: i64,
        spent: &mut u32,
    ) -> Result<u64, GitHubError> {
        if let Some(id) = self.cache().installation(app, repo) {
            return Ok(id);
        }
        let jwt = self.jwt(app, now)?;
        // A name without `/` is an organisation: its installation reads all it was given.
        let found = if repo.contains('/') {
            self.client.find_installation(&jwt, repo).await
        } else {
            self.client.find_org_installation(&jwt, repo).await
        };
        *spent += 1;
        match found?.value {
            Some(id) => {
                self.cache().set_installation(app, repo, id);
                Ok(id)
            }
            None => {
                self.cache().set_not_installed(app, repo, now + NOT_INSTALLED_RETRY_SECS);
                Err(GitHubError::NotInstalled(repo.to_string()))
            }
        }
    }

    /// GitHub answered 401 to `token`: the next [`token`](Self::token) mints a new one.
    pub fn refused(&self, app: &GitHubApp, installation: u64, token: &Token) {
        self.cache().drop_token(app.identity(), installation, token);
    }

    /// The App's JWT: the cached one, or one signed now.
    pub fn jwt(&self, app: &GitHubApp, now: i64) -> Result<Token, GitHubError> {
        if let Some(jwt) = self.cache().jwt(app.identity(), now) {
            return Ok(jwt);
        }
        let signed = app.jwt(now)?;
        self.jwts_signed.fetch_add(1, Ordering::Relaxed);
        self.cache().set_jwt(app.identity(), signed.token.clone(), signed.expires_at);
        Ok(signed.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> AppIdentity {
        AppIdentity::for_tests(name)
    }

    fn minted(secret: &str, installation: u64, expires_at: i64) -> InstallationToken {
        InstallationToken { token: Token::for_installation(secret, installation), expires_at }
    }

    #[test]
    fn a_jwt_is_reused_until_two_minutes_before_it_expires() {
        let mut cache = InstallationCache::default();
        let app = identity("1");
        cache.set_jwt(&app, Token::for_app("jwt", "1"), 1000);
        assert!(cache.jwt(&app, 879).is_some());
        assert!(cache.jwt(&app, 880).is_none());
        assert!(cache.jwt(&identity("2"), 0).is_none());
        cache.drop_jwt(&app);
        assert!(cache.jwt(&app, 0).is_none(), "a refused JWT is not sent again");
    }

    #[test]
    fn an_installation_token_is_renewed_five_minutes_before_expiry_or_at_half_a_short_life() {
        let mut cache = InstallationCache::default();
        let app = identity("1");
        cache.set_token(&app, 7, minted("ghs_hour", 7, 3600), 0);
        assert!(cache.token(&app, 7, 3299).is_some());
        assert!(cache.token(&app, 7, 3300).is_none());
        cache.set_token(&app, 8, minted("ghs_short", 8, 200), 0);
        assert!(cache.token(&app, 8, 99).is_some());
        assert!(cache.token(&app, 8, 100).is_none());
    }

    #[test]
    fn a_refused_token_is_dropped_unless_already_replaced() {
        let mut cache = InstallationCache::default();
        let app = identity("1");
        cache.set_token(&app, 7, minted("ghs_new", 7, 3600), 0);
        cache.drop_token(&app, 7, &Token::for_installation("ghs_old", 7));
        assert!(cache.token(&app, 7, 1).is_some(), "a newer token stays");
        cache.drop_token(&app, 7, &Token::for_installation("ghs_new", 7));
        assert!(cache.token(&app, 7, 1).is_none());
    }

    #[test]
    fn what_no_app_or_repository_needs_is_forgotten() {
        let mut cache = InstallationCache::default();
        let (one, two) = (identity("1"), identity("2"));
        cache.repos.insert((one.clone(), "acme/api".into()), 7);
        cache.repos.insert((one.clone(), "acme/web".into()), 7);
        cache.repos.insert((two.clone(), "beta/x".into()), 9);
        cache.set_token(&one, 7, minted("ghs_a", 7, 3600), 0);
        cache.set_token(&two, 9, minted("ghs_b", 9, 3600), 0);
        cache.set_jwt(&two, Token::for_app("jwt", "2"), 600);
        cache.set_token(&one, 3, minted("ghs_named", 3, 3600), 0);
        cache.set_token(&one, 4, minted("ghs_unused", 4, 3600), 0);
        cache.retain(&HashSet::from([one.clone()]), &HashSet::from(["acme/api".to_string()]), &HashSet::from([3]));
        assert_eq!(cache.footprint(), CacheFootprint { jwts: 0, repositories: 1, tokens: 2 });
        assert!(cache.token(&one, 3, 1).is_some() && cache.token(&one, 4, 1).is_none());
        cache.retain(&HashSet::from([one.clone()]), &HashSet::from(["acme/api".to_string()]), &HashSet::new());
        assert_eq!(cache.footprint(), CacheFootprint { jwts: 0, repositories: 1, tokens: 1 });
        cache.forget_installation(&one, 7);
        assert_eq!(cache.footprint(), CacheFootprint { jwts: 0, repositories: 0, tokens: 0 });
    }
}
