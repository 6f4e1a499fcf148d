//! `X-Hub-Signature-256` verification: HMAC-SHA256 over the raw body, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";

/// Why a signature header was refused. The texts are safe to return to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// A parsed `sha256=<hex>` header value: the 32 digest bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 32]);

impl Signature {
    pub fn parse(header: Option<&str>) -> Result<Self, SignatureError> {
        let value = header.ok_or(SignatureError::Missing)?.trim();
        let hex_digest = value.strip_prefix(PREFIX).ok_or(SignatureError::Malformed)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| SignatureError::Malformed)?;
        Ok(Self(digest))
    }

    /// Constant-time check of this signature against `body` under `secret`.
    pub fn matches(&self, secret: &[u8], body: &[u8]) -> bool {
        let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&self.0).is_ok()
    }
}

/// The header value GitHub would send for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies `header` against `body` with any of `secrets`.
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    secrets: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), SignatureError> {
    let signature = Signature::parse(header)?;
    if secrets.into_iter().any(|secret| signature.matches(secret, body)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_test_vector_is_reproduced() {
        assert_eq!(sign(GITHUB_SECRET, GITHUB_BODY), GITHUB_SIGNATURE);
        assert_eq!(verify(Some(GITHUB_SIGNATURE), GITHUB_BODY, [GITHUB_SECRET]), Ok(()));
    }

    #[test]
    fn any_of_several_secrets_may_match() {
        let secrets: [&[u8]; 2] = [b"other", GITHUB_SECRET];
        assert_eq!(verify(Some(GITHUB_SIGNATURE), GITHUB_BODY, secrets), Ok(()));
    }

    #[test]
    fn wrong_missing_and_malformed_signatures_are_refused() {
        assert_eq!(verify(Some(GITHUB_SIGNATURE), b"Hello, World?", [GITHUB_SECRET]), Err(SignatureError::Mismatch));
        assert_eq!(verify(None, GITHUB_BODY, [GITHUB_SECRET]), Err(SignatureError::Missing));
        assert_eq!(verify(Some("sha1=abcd"), GITHUB_BODY, [GITHUB_SECRET]), Err(SignatureError::Malformed));
        assert_eq!(verify(Some("sha256=zz"), GITHUB_BODY, [GITHUB_SECRET]), Err(SignatureError::Malformed));
        assert_eq!(verify(Some(&GITHUB_SIGNATURE[..40]), GITHUB_BODY, [GITHUB_SECRET]), Err(SignatureError::Malformed));
    }

    #[test]
    fn no_secret_means_no_match() {
        assert_eq!(verify(Some(GITHUB_SIGNATURE), GITHUB_BODY, []), Err(SignatureError::Mismatch));
    }
}
