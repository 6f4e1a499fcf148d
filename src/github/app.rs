//! A GitHub App as the resync authenticates with it: its App id (or client id), its private key
//! and, when known, the installation; the JWT it signs (RS256) for GitHub's `/app` endpoints.
//!
//! GitHub's rules for the JWT ("Generating a JSON Web Token (JWT) for a GitHub App"): `iat` a
//! little in the past against clock drift, `exp` at most 10 minutes ahead, `iss` the client id
//! or App id. The key never leaves this type: `Debug` and `Display` show the id alone.

use std::fmt;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use super::error::GitHubError;
use super::token::Token;

/// How far back `iat` is set, for clocks that run ahead of GitHub's.
pub const JWT_BACKDATE_SECS: i64 = 60;
/// A JWT's whole life, `iat` to `exp`: GitHub's maximum.
pub const JWT_LIFETIME_SECS: i64 = 600;

/// Why App credentials cannot be used. Never carries the key or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppCredentialsError {
    #[error("the GitHub App id (or client id) is empty")]
    NoId,
    #[error("the GitHub App id {0:?} is neither a number nor a client id")]
    InvalidId(String),
    #[error("no GitHub App private key")]
    NoKey,
    #[error("the GitHub App private key is not an RSA private key in PEM form (PKCS#1 or PKCS#8)")]
    InvalidKey,
    #[error("the GitHub App installation id {0:?} is not a positive number")]
    InvalidInstallation(String),
}

/// Who an App is for the caches: its id and a digest of its key, so two Secrets holding the same
/// App share its JWT and installation tokens, and a changed key starts afresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppIdentity {
    pub issuer: String,
    key_digest: [u8; 8],
}

#[cfg(test)]
impl AppIdentity {
    pub(crate) fn for_tests(issuer: &str) -> Self {
        Self { issuer: issuer.to_string(), key_digest: [0; 8] }
    }
}

/// A GitHub App's credentials. Cheap to clone.
#[derive(Clone)]
pub struct GitHubApp {
    identity: AppIdentity,
    /// The PEM text of the private key, zeroed when the last clone goes.
    key: Arc<SecretSlice<u8>>,
    installation: Option<u64>,
}

/// A signed JWT and when it expires (Unix seconds).
#[derive(Debug, Clone)]
pub struct Jwt {
    pub token: Token,
    pub expires_at: i64,
}

/// The claims of a JWT issued at `now` by `issuer`: a numeric App id is sent as a number, a
/// client id as a string, as GitHub's examples do.
pub fn jwt_claims(issuer: &str, now: i64) -> serde_json::Value {
    let iss = match issuer.parse::<u64>() {
        Ok(number) => serde_json::json!(number),
        Err(_) => serde_json::json!(issuer),
    };
    let iat = now - JWT_BACKDATE_SECS;
    serde_json::json!({"iat": iat, "exp": iat + JWT_LIFETIME_SECS, "iss": iss})
}

impl GitHubApp {
    /// Credentials from their parts as a Secret or the flags hold them: `id` the App id or client
    /// id, `private_key` the PEM GitHub generated, `installation` its id when known.
    pub fn new(id: &str, private_key: &[u8], installation: Option<&str>) -> Result<Self, AppCredentialsError> {
        let issuer = id.trim();
        if issuer.is_empty() {
            return Err(AppCredentialsError::NoId);
        }
        // App ids are numbers and client ids (`Iv1.…`, `Iv23…`) letters, digits and dots: this
        // keeps a key pasted into the wrong field out of logs.
        if issuer.len() > 64 || !issuer.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(AppCredentialsError::InvalidId(issuer.chars().take(8).collect::<String>() + "…"));
        }
        let installation = match installation.map(str::trim).filter(|text| !text.is_empty()) {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(id) if id > 0 => Some(id),
                _ => return Err(AppCredentialsError::InvalidInstallation(text.chars().take(24).collect())),
            },
        };
        let pem = trimmed(private_key);
        if pem.is_empty() {
            return Err(AppCredentialsError::NoKey);
        }
        if EncodingKey::from_rsa_pem(pem).is_err() {
            return Err(AppCredentialsError::InvalidKey);
        }
        let digest = Sha256::digest(pem);
        let mut key_digest = [0u8; 8];
        key_digest.copy_from_slice(&digest[..8]);
        Ok(Self {
            identity: AppIdentity { issuer: issuer.to_string(), key_digest },
            key: Arc::new(SecretSlice::from(pem.to_vec())),
            installation,
        })
    }

    /// The App id or client id: the JWT's `iss`, safe for logs and metric labels.
    pub fn issuer(&self) -> &str {
        &self.identity.issuer
    }

    pub fn identity(&self) -> &AppIdentity {
        &self.identity
    }

    /// The installation, when the credentials name it (else it is looked up per repository).
    pub fn installation(&self) -> Option<u64> {
        self.installation
    }

    /// A JWT issued at `now` (Unix seconds), valid for GitHub's maximum of 10 minutes from its
    /// backdated `iat`.
    pub fn jwt(&self, now: i64) -> Result<Jwt, GitHubError> {
        let claims = jwt_claims(self.issuer(), now);
        let expires_at = claims["exp"].as_i64().unwrap_or(now);
        let key = EncodingKey::from_rsa_pem(self.key.expose_secret())
            .map_err(|_| GitHubError::AppKey("not an RSA private key in PEM form".into()))?;
        // ring refuses keys it cannot use (shorter than 2048 bits, inconsistent) only here.
        let signed = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
            .map_err(|_| GitHubError::AppKey("ring refused the RSA key (GitHub's are 2048 bits or more)".into()))?;
        Ok(Jwt { token: Token::for_app(signed, self.issuer()), expires_at })
    }
}

/// The key without the whitespace a file or a Secret adds around it.
fn trimmed(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

impl PartialEq for GitHubApp {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity && self.installation == other.installation
    }
}

impl Eq for GitHubApp {}

impl std::hash::Hash for GitHubApp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity.hash(state);
        self.installation.hash(state);
    }
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app", &self.identity.issuer)
            .field("installation", &self.installation)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.installation {
            Some(installation) => write!(f, "GitHub App {} (installation {installation})", self.identity.issuer),
            None => write!(f, "GitHub App {}", self.identity.issuer),
        }
    }
}

/// What reads a repository: a token, or a GitHub App that mints installation tokens for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    Token(Token),
    App(GitHubApp),
}

impl From<Token> for Credential {
    fn from(token: Token) -> Self {
        Self::Token(token)
    }
}

impl From<GitHubApp> for Credential {
    fn from(app: GitHubApp) -> Self {
        Self::App(app)
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(token) => token.fmt(f),
            Self::App(app) => app.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claims_are_backdated_a_minute_and_live_ten() {
        let claims = jwt_claims("12345", 1_000_000);
        assert_eq!(claims["iat"], 1_000_000 - 60);
        assert_eq!(claims["exp"], 1_000_000 + 540);
        assert_eq!(claims["iss"], 12345, "a numeric App id goes as a number");
        assert_eq!(jwt_claims("Iv23liAbC", 0)["iss"], "Iv23liAbC");
    }

    #[test]
    fn credentials_that_cannot_be_used_say_why_without_the_key() {
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(GitHubApp::new("1", pem, None).unwrap_err(), AppCredentialsError::InvalidKey);
        assert_eq!(GitHubApp::new(" ", pem, None).unwrap_err(), AppCredentialsError::NoId);
        let pasted = "-----BEGIN RSA PRIVATE KEY-----MIIEow";
        let error = GitHubApp::new(pasted, pem, None).unwrap_err().to_string();
        assert!(!error.contains("MIIEow"), "{error}");
        let error = GitHubApp::new("1", b"not a key at all: hunter2", None).unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
