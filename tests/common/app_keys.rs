//! RSA key pairs for GitHub Apps in tests, made at test time with `openssl` (never a committed
//! private key): one per name and process.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A GitHub App's key pair in the forms GitHub and its clients use.
#[derive(Clone, Debug)]
pub struct AppKeyPair {
    /// `-----BEGIN RSA PRIVATE KEY-----`: what GitHub's "Generate a private key" downloads.
    pub pkcs1: String,
    /// `-----BEGIN PRIVATE KEY-----`: the same key as PKCS#8.
    pub pkcs8: String,
    /// `-----BEGIN PUBLIC KEY-----`: what the fake GitHub verifies JWTs with.
    pub public: String,
}

/// The key pair called `name`, made on first use (2048 bits, as GitHub's).
pub fn app_key_pair(name: &str) -> AppKeyPair {
    static PAIRS: OnceLock<Mutex<HashMap<String, AppKeyPair>>> = OnceLock::new();
    let pairs = PAIRS.get_or_init(Default::default);
    if let Some(pair) = pairs.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return pair.clone();
    }
    let pair = generate();
    pairs.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_owned()).or_insert(pair).clone()
}

fn generate() -> AppKeyPair {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = |file: &str| dir.path().join(file).to_str().expect("a UTF-8 path").to_owned();
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl").args(args).output().expect("openssl (scripts/test.sh installs it)");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let (pkcs8, pkcs1, public) = (path("key.pem"), path("rsa.pem"), path("public.pem"));
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &pkcs8]);
    openssl(&["pkey", "-in", &pkcs8, "-traditional", "-out", &pkcs1]);
    openssl(&["pkey", "-in", &pkcs8, "-pubout", "-out", &public]);
    let read = |file: &str| std::fs::read_to_string(file).expect("a key file openssl wrote");
    AppKeyPair { pkcs1: read(&pkcs1), pkcs8: read(&pkcs8), public: read(&public) }
}
