//! Who may read demand on a listener: the rule every listener applies.

use super::bearer::BearerToken;

/// Who may read demand (read API, custom metrics, `/metrics`, the gRPC scaler) on one listener.
///
/// The rule: a listener serves reads only if it authenticates, or `--unauthenticated-reads`
/// says otherwise. Where both are configured, a client certificate *and* the token are needed:
/// the certificate is checked during the TLS handshake, the token on every read.
#[derive(Debug, Clone)]
pub enum ReadAccess {
    /// Reads are not served: the listener authenticates nobody.
    Closed,
    /// Whoever completes the connection reads: the TLS handshake verified a client certificate,
    /// or `--unauthenticated-reads` was given.
    Open,
    /// Reads carry `Authorization: Bearer <token>` (gRPC: the `authorization` metadata).
    Token(BearerToken),
}

impl ReadAccess {
    /// The access of a listener that does (`client_certificates`) or does not verify client
    /// certificates, given the read token and `--unauthenticated-reads`.
    pub fn of_listener(client_certificates: bool, token: Option<&BearerToken>, unauthenticated_reads: bool) -> Self {
        match token {
            Some(token) => Self::Token(token.clone()),
            None if client_certificates || unauthenticated_reads => Self::Open,
            None => Self::Closed,
        }
    }

    /// For logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Closed => "not served (the listener authenticates nobody)",
            Self::Open => "served",
            Self::Token(_) => "served with the bearer token",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_serves_reads_only_if_it_authenticates_or_is_told_to() {
        let token = BearerToken::new("t").unwrap();
        assert!(matches!(ReadAccess::of_listener(false, None, false), ReadAccess::Closed));
        assert!(matches!(ReadAccess::of_listener(false, None, true), ReadAccess::Open));
        assert!(matches!(ReadAccess::of_listener(true, None, false), ReadAccess::Open));
        assert!(matches!(ReadAccess::of_listener(false, Some(&token), false), ReadAccess::Token(_)));
        assert!(
            matches!(ReadAccess::of_listener(true, Some(&token), true), ReadAccess::Token(_)),
            "the token is always required"
        );
    }
}
