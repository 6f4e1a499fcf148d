//! A GitHub token: sent only in the Authorization header, known elsewhere by a short digest.

use std::fmt;

use reqwest::header::HeaderValue;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::error::GitHubError;

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

    /// The SHA-256 of the token: the key of what is kept per token (pages, rate limits).
    pub(super) fn digest(&self) -> [u8; 32] {
        self.digest
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
        f.debug_struct("Token").field("id", &self.id()).finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {}", self.id())
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
