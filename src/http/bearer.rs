//! Bearer authentication of reads (KEDA's `authMode: bearer`; gRPC's `authorization` metadata).
//!
//! Whether a request carries the token is decided without a socket ([`BearerToken::matches`],
//! [`bearer_in`]); [`require_bearer`] applies it to routes.

use std::io;
use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{FromExtractorLayer, from_extractor_with_state};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

/// The token that reads must carry; `Debug` shows it redacted, and it is zeroed on drop.
#[derive(Debug, Clone)]
pub struct BearerToken(SecretString);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("is empty")]
    Empty,
    #[error("holds bytes other than visible ASCII, which an Authorization header cannot carry")]
    NotHeaderSafe,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the token file {} {problem}", path.display())]
    File { path: PathBuf, problem: TokenProblem },
    #[error("the token {0}")]
    Invalid(TokenProblem),
}

impl BearerToken {
    /// Trailing newlines (from `echo token > file`) are not part of the token.
    pub fn new(token: impl AsRef<[u8]>) -> Result<Self, TokenError> {
        Self::checked(token.as_ref()).map_err(TokenError::Invalid)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenError::Read { path: path.into(), source })?;
        Self::checked(&bytes).map_err(|problem| TokenError::File { path: path.into(), problem })
    }

    fn checked(token: &[u8]) -> Result<Self, TokenProblem> {
        let end = token.iter().rposition(|b| *b != b'\n' && *b != b'\r').map_or(0, |last| last + 1);
        let token = &token[..end];
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        // Visible ASCII only, so the bytes are one `str` and fit a header.
        match std::str::from_utf8(token) {
            Ok(text) if token.iter().all(u8::is_ascii_graphic) => Ok(Self(SecretString::from(text))),
            _ => Err(TokenProblem::NotHeaderSafe),
        }
    }

    /// Constant time in the presented token's content: digests of equal length are compared whole.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = Sha256::digest(self.0.expose_secret().as_bytes());
        let presented = Sha256::digest(presented);
        let difference = presented.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// The token after `Bearer ` (scheme matched case-insensitively, RFC 7235), if any.
fn presented_bearer(headers: &HeaderMap) -> Option<&[u8]> {
    bearer_in(headers.get(AUTHORIZATION)?.as_bytes())
}

/// The token of an `Authorization` value (HTTP header or gRPC metadata) `Bearer <token>`, if any.
pub fn bearer_in(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii_start())
}

/// Marks a request that carried the metrics bearer token; the extractor behind [`require_bearer`].
#[derive(Debug, Clone, Copy)]
pub struct BearerAuthorized;

impl FromRequestParts<BearerToken> for BearerAuthorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, token: &BearerToken) -> Result<Self, Response> {
        match presented_bearer(&parts.headers) {
            Some(presented) if token.matches(presented) => Ok(Self),
            Some(_) => {
                tracing::debug!(path = %parts.uri.path(), "rejected a request with the wrong bearer token");
                Err(unauthorized(true))
            }
            None => {
                tracing::debug!(path = %parts.uri.path(), "rejected a request without a bearer token");
                Err(unauthorized(false))
            }
        }
    }
}

/// RFC 6750: a request without credentials gets a bare challenge, a wrong token `invalid_token`.
fn unauthorized(invalid_token: bool) -> Response {
    let challenge =
        if invalid_token { r#"Bearer realm="metrics", error="invalid_token""# } else { r#"Bearer realm="metrics""# };
    (StatusCode::UNAUTHORIZED, [(WWW_AUTHENTICATE, HeaderValue::from_static(challenge))], "unauthorized\n")
        .into_response()
}

/// Answers 401 with `WWW-Authenticate: Bearer` unless the request carries `Authorization: Bearer
/// <token>`. Apply with `route_layer` on the sub-router to protect, before merging the health routes.
pub fn require_bearer(token: BearerToken) -> FromExtractorLayer<BearerAuthorized, BearerToken> {
    from_extractor_with_state(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_trailing_newlines_are_trimmed() {
        let token = BearerToken::new("s3cret\r\n\n").unwrap();
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cret\n"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn empty_or_unsendable_tokens_are_refused() {
        assert!(matches!(BearerToken::new("\n"), Err(TokenError::Invalid(TokenProblem::Empty))));
        assert!(matches!(BearerToken::new("two words"), Err(TokenError::Invalid(TokenProblem::NotHeaderSafe))));
        assert!(matches!(BearerToken::new("naïve"), Err(TokenError::Invalid(TokenProblem::NotHeaderSafe))));
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = BearerToken::new("hunter2").unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("hunter2") && shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer  abc"));
        assert_eq!(presented_bearer(&headers), Some(&b"abc"[..]));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic YWxhZGRpbjpvcGVuc2VzYW1l"));
        assert_eq!(presented_bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(presented_bearer(&headers), None);
    }
}
