//! A GitHub token: sent only in the Authorization header, known elsewhere by a short digest, and
//! the budget (rate limit) it spends.

use std::fmt;

use reqwest::header::HeaderValue;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::error::GitHubError;

/// Whose rate limit a token spends. GitHub counts a personal token's requests on the token (its
/// user), an installation token's on the installation (every token minted for it shares one
/// limit), and a JWT's on the App itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Budget {
    /// A personal (classic or fine-grained) token, by [`Token::id`].
    Token(String),
    /// A GitHub App installation, by its id.
    Installation(u64),
    /// A GitHub App's own requests (installation lookups, token minting), by App or client id.
    App(String),
}

impl Budget {
    /// The metric label of this budget: its kind and an id that is no secret.
    pub fn label(&self) -> (&'static str, String) {
        match self {
            Self::Token(id) => ("token", id.clone()),
            Self::Installation(id) => ("installation", id.to_string()),
            Self::App(id) => ("app", id.clone()),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(id) => write!(f, "token {id}"),
            Self::Installation(id) => write!(f, "installation {id}"),
            Self::App(id) => write!(f, "app {id}"),
        }
    }
}

/// A GitHub token. Neither `Debug` nor `Display` shows it: only [`Token::id`] and its budget.
#[derive(Clone)]
pub struct Token {
    secret: SecretString,
    digest: [u8; 32],
    budget: Budget,
}

impl Token {
    /// A token as read from a file or the environment: trailing whitespace (the newline a
    /// secret file ends with) is dropped.
    pub fn new(secret: impl Into<String>) -> Self {
        let mut secret = secret.into();
        secret.truncate(secret.trim_end().len());
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let budget = Budget::Token(hex::encode(&digest[..4]));
        Self { secret: SecretString::from(secret), digest, budget }
    }

    /// An installation token GitHub minted for installation `installation`.
    pub fn for_installation(secret: impl Into<String>, installation: u64) -> Self {
        Self { budget: Budget::Installation(installation), ..Self::new(secret) }
    }

    /// A GitHub App's JWT (`app`: its App or client id).
    pub fn for_app(jwt: impl Into<String>, app: &str) -> Self {
        Self { budget: Budget::App(app.to_string()), ..Self::new(jwt) }
    }

    /// The rate limit this token spends.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// What the pages kept for conditional requests are filed under: the token itself, except
    /// that the tokens of one installation, which see the same, share theirs (a rotated token
    /// may then still get a free 304 for its predecessor's validator).
    pub(super) fn cache_scope(&self) -> [u8; 32] {
        match &self.budget {
            Budget::Token(_) => self.digest,
            other => Sha256::digest(other.to_string().as_bytes()).into(),
        }
    }

    /// The first 8 hex digits of the token's SHA-256: safe for logs and metric labels.
    pub fn id(&self) -> String {
        hex::encode(&self.digest[..4])
    }

    pub fn is_empty(&self) -> bool {
        self.secret.expose_secret().is_empty()
    }

    pub(super) fn authorization(&self) -> Result<HeaderValue, GitHubError> {
        // The header text is a copy of the secret: zeroed once the header holds it.
        let text = Zeroizing::new(format!("Bearer {}", self.secret.expose_secret()));
        let mut value = HeaderValue::from_str(&text).map_err(|_| GitHubError::InvalidToken)?;
        // Keeps the value out of hyper's and reqwest's debug output.
        value.set_sensitive(true);
        Ok(value)
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
        f.debug_struct("Token").field("id", &self.id()).field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.budget {
            Budget::Token(_) => write!(f, "token {}", self.id()),
            budget => write!(f, "token {} of {budget}", self.id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_drops_its_trailing_newline_and_never_prints() {
        let token = Token::new("ghp_secretvalue\r\n");
        assert_eq!(token, Token::new("ghp_secretvalue"));
        assert!(!format!("{token:?} {token}").contains("secretvalue"));
        assert!(format!("{token:?}").contains(&token.id()));
    }

    #[test]
    fn installation_tokens_share_their_installation_budget_and_pages() {
        let (first, second) = (Token::for_installation("ghs_one", 7), Token::for_installation("ghs_two", 7));
        assert_eq!(first.budget(), &Budget::Installation(7));
        assert_eq!(first.cache_scope(), second.cache_scope());
        assert_ne!(first.cache_scope(), Token::for_installation("ghs_one", 8).cache_scope());
        assert_eq!(Token::new("ghp_x").budget(), &Budget::Token(Token::new("ghp_x").id()));
        assert_ne!(Token::new("ghp_x").cache_scope(), Token::new("ghp_y").cache_scope());
        let shown = format!("{first:?} {first} {}", Token::for_app("eyJ.secret.jwt", "42"));
        assert!(!shown.contains("ghs_one") && !shown.contains("secret"), "{shown}");
        assert!(shown.contains("installation 7") && shown.contains("app 42"), "{shown}");
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
}
