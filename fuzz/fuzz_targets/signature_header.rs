//! `X-Hub-Signature-256`: which header values parse, and that a parsed signature matches a body
//! exactly when it is the one GitHub would send for it.
#![no_main]

use gaa::webhook::signature::{Signature, SignatureError, sign, verify};
use libfuzzer_sys::fuzz_target;

/// The input is `header\nsecret\nbody`: readable seeds, and the body may hold anything.
fn split(input: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let mut parts = input.splitn(3, |b| *b == b'\n');
    let header = std::str::from_utf8(parts.next()?).ok()?;
    Some((header, parts.next().unwrap_or_default(), parts.next().unwrap_or_default()))
}

/// The grammar, written out: `sha256=` and 64 hex digits, surrounding whitespace ignored.
fn well_formed(header: &str) -> bool {
    header
        .trim()
        .strip_prefix("sha256=")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fuzz_target!(|input: &[u8]| {
    let Some((header, secret, body)) = split(input) else {
        return;
    };
    let parsed = Signature::parse(Some(header));
    assert_eq!(parsed.is_ok(), well_formed(header), "{header:?}: {parsed:?}");
    if let Err(error) = parsed {
        assert_eq!(error, SignatureError::Malformed);
        assert_eq!(verify(Some(header), body, [secret]), Err(SignatureError::Malformed));
    }
    let expected = sign(secret, body);
    if let Ok(signature) = parsed {
        // Hex digits are read in either case; the digest compared is the same.
        let lower = header.trim().to_ascii_lowercase();
        assert_eq!(Signature::parse(Some(&lower)), Ok(signature));
        assert_eq!(signature.matches(secret, body), lower == expected, "{header:?} against {expected}");
    }
    assert_eq!(verify(Some(&expected), body, [secret]), Ok(()));
    assert_eq!(verify(Some(&expected), body, [b"another secret".as_slice(), secret]), Ok(()));
    let mut altered = body.to_vec();
    altered.push(0);
    assert_eq!(verify(Some(&expected), &altered, [secret]), Err(SignatureError::Mismatch));
    assert_eq!(verify(Some(&expected), body, []), Err(SignatureError::Mismatch));
    assert_eq!(verify(None, body, [secret]), Err(SignatureError::Missing));
});
