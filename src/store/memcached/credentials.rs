//! The memcached username and password, checked so the memcache crate can send them unchanged.

use memcache::Url;
use secrecy::{ExposeSecret, SecretString};

/// memcached credentials: SASL PLAIN on the binary protocol (`memcached -S`), or the ASCII `auth`
/// of `memcached -Y <file>`. The password never appears in `Debug`, errors or logs.
#[derive(Clone, Debug)]
pub struct Credentials {
    username: String,
    password: SecretString,
}

/// Why credentials were refused. Never includes the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the memcached {0} is empty")]
    Empty(&'static str),
    #[error("the memcached {0} contains whitespace or control characters, which the auth command cannot carry")]
    Whitespace(&'static str),
    #[error("the memcached username contains ':', the separator of memcached's auth file")]
    Colon,
    #[error(
        "the memcached {0} contains characters that URLs escape (such as @ : / ? # [ ] ^ | or non-ASCII); \
         the memcache crate would send them escaped, so authentication could never succeed"
    )]
    UrlEscaped(&'static str),
}

impl Credentials {
    /// Checks that the memcache crate can transmit both values unchanged: it reads them back from
    /// a connection URL without decoding, so anything URL syntax would escape is refused.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Result<Self, CredentialsError> {
        let credentials = Credentials { username: username.into(), password: SecretString::from(password.into()) };
        for (what, value) in
            [("username", credentials.username.as_str()), ("password", credentials.password.expose_secret())]
        {
            if value.is_empty() {
                return Err(CredentialsError::Empty(what));
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CredentialsError::Whitespace(what));
            }
        }
        if credentials.username.contains(':') {
            return Err(CredentialsError::Colon);
        }
        let mut probe =
            Url::parse("memcache://127.0.0.1:11211").map_err(|_| CredentialsError::UrlEscaped("username"))?;
        credentials.apply(&mut probe).map_err(CredentialsError::UrlEscaped)?;
        Ok(credentials)
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// For the client, to scrub it from any error text a dependency might echo.
    pub(super) fn password(&self) -> &SecretString {
        &self.password
    }

    /// Puts the credentials into a connection URL, failing with the name of the part the URL
    /// would alter.
    pub(super) fn apply(&self, url: &mut Url) -> Result<(), &'static str> {
        url.set_username(&self.username).map_err(|()| "username")?;
        if url.username() != self.username {
            return Err("username");
        }
        let password = self.password.expose_secret();
        url.set_password(Some(password)).map_err(|()| "password")?;
        if url.password() != Some(password) {
            return Err("password");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memcached::MemcachedOptions;

    #[test]
    fn credentials_debug_never_shows_the_password() {
        let credentials = Credentials::new("alice", "hunter2").unwrap();
        let printed = format!(
            "{credentials:?} {:?}",
            MemcachedOptions { credentials: Some(credentials.clone()), ..Default::default() }
        );
        assert!(printed.contains("alice"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn credentials_the_crate_would_send_escaped_are_refused() {
        for password in ["p@ss", "a:b", "x/y", "q?", "h#", "é"] {
            assert!(
                matches!(Credentials::new("alice", password), Err(CredentialsError::UrlEscaped("password"))),
                "{password}"
            );
        }
        assert!(matches!(Credentials::new("al@ce", "pw"), Err(CredentialsError::UrlEscaped("username"))));
        assert!(Credentials::new("alice", "S3cr3t-_.~!$&'()*+,%41").is_ok());
    }

    #[test]
    fn credentials_that_cannot_authenticate_are_refused() {
        assert!(matches!(Credentials::new("", "pw"), Err(CredentialsError::Empty("username"))));
        assert!(matches!(Credentials::new("alice", ""), Err(CredentialsError::Empty("password"))));
        assert!(matches!(Credentials::new("alice", "two words"), Err(CredentialsError::Whitespace("password"))));
        assert!(matches!(Credentials::new("al:ice", "pw"), Err(CredentialsError::Colon)));
    }
}
