//! Certificates for the TLS listeners, reloaded from files: cert-manager rotates them, and
//! mutual TLS (the Kubernetes API aggregator, KEDA's `authMode: tls`) trusts CAs that may appear
//! after the server starts.
//!
//! The decisions are pure and tested without a socket: which bytes make a server configuration
//! (`server_config`) and when a change on disk is applied (`ChangeDetector`). The edge reads the
//! files and polls.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsArgs;

/// How often the certificate files are re-read unless the caller says otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Where the server's certificate chain, its key and (for mutual TLS) the client CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (cert-manager's `tls.crt`).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
    /// PEM CA bundles; when any is given, every client must present a certificate one of them
    /// signed. A file that does not exist (yet) is skipped until it appears.
    pub client_ca: Vec<PathBuf>,
}

impl TlsFiles {
    /// The files of `--tls-cert`, `--tls-key` and `--client-ca`; `None` unless both the
    /// certificate and the key are given.
    pub fn from_args(args: &TlsArgs) -> Option<Self> {
        let (cert, key) = (args.tls_cert.clone()?, args.tls_key.clone()?);
        Some(Self { cert, key, client_ca: args.client_ca.clone() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: &'static str },
    #[error("{}: {source}", path.display())]
    Rejected { path: PathBuf, source: rustls::Error },
    #[error("client CA {}: {source}", path.display())]
    ClientVerifier { path: PathBuf, source: VerifierBuilderError },
    #[error("none of the client CA files exists: {}", display_paths(.0))]
    NoClientCa(Vec<PathBuf>),
    #[error("TLS protocol versions: {0}")]
    Protocol(rustls::Error),
    #[error("the TLS file poller needs a tokio runtime")]
    NoRuntime,
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The bytes of one look at the files. Deliberately not `Debug`: it holds the private key.
struct FileSet {
    cert: Vec<u8>,
    key: Vec<u8>,
    /// One per client CA path, `None` where the file does not exist (yet).
    client_ca: Vec<Option<Vec<u8>>>,
}

impl FileSet {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source });
        // A CA from a ConfigMap the operator mirrors may be mounted after the server starts.
        let read_if_present = |path: &PathBuf| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TlsError::Read { path: path.clone(), source }),
        };
        Ok(Self {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.iter().map(read_if_present).collect::<Result<_, _>>()?,
        })
    }

    /// The client CA paths whose files do not exist.
    fn absent_client_cas<'a>(&self, files: &'a TlsFiles) -> Vec<&'a Path> {
        files.client_ca.iter().zip(&self.client_ca).filter(|(_, b)| b.is_none()).map(|(p, _)| p.as_path()).collect()
    }
}

/// One warning per client CA file that is not there, each time a configuration is built.
fn warn_absent_client_cas(files: &TlsFiles, set: &FileSet) {
    for path in set.absent_client_cas(files) {
        tracing::warn!(client_ca = %path.display(), "client CA file does not exist yet; trusted once it appears");
    }
}

type Fingerprint = [u8; 32];

/// Identifies what a poll saw: the file contents, or the error that kept them from being read.
fn fingerprint(seen: &Result<FileSet, TlsError>) -> Fingerprint {
    let mut hash = Sha256::new();
    match seen {
        Ok(set) => {
            let parts = [Some(&set.cert), Some(&set.key)].into_iter().chain(set.client_ca.iter().map(Option::as_ref));
            for part in parts {
                // Length-prefixed so moving bytes between files changes the fingerprint.
                match part {
                    Some(bytes) => {
                        hash.update((bytes.len() as u64 + 1).to_be_bytes());
                        hash.update(bytes);
                    }
                    None => hash.update(0u64.to_be_bytes()),
                }
            }
        }
        Err(error) => {
            hash.update(b"unreadable:");
            hash.update(error.to_string().as_bytes());
        }
    }
    hash.finalize().into()
}

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration from file contents: ring only, ALPN `h2` then `http/1.1`.
fn server_config(files: &TlsFiles, set: &FileSet) -> Result<ServerConfig, TlsError> {
    let provider = ring();
    let certs = certificates(&files.cert, &set.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&set.key)
        .map_err(|e| TlsError::Pem { path: files.key.clone(), reason: pem_reason(&e, "no PRIVATE KEY block") })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = if files.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        // The union of every CA present; absent ones never drop client authentication.
        let mut roots = RootCertStore::empty();
        for (path, bytes) in files.client_ca.iter().zip(&set.client_ca) {
            let Some(bytes) = bytes else { continue };
            for cert in certificates(path, bytes)? {
                roots.add(cert).map_err(|source| TlsError::Rejected { path: path.clone(), source })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::NoClientCa(files.client_ca.clone()));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| TlsError::ClientVerifier { path: files.client_ca[0].clone(), source })?;
        builder.with_client_cert_verifier(verifier)
    };
    // Checks that the key matches the leaf certificate, so a half-rotated pair is refused.
    let mut config = builder.with_single_cert(certs, key).map_err(|source| {
        let path = if matches!(source, rustls::Error::InconsistentKeys(_)) { &files.cert } else { &files.key };
        TlsError::Rejected { path: path.clone(), source }
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.into(), reason: pem_reason(&e, "no CERTIFICATE block") })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.into(), reason: "no CERTIFICATE block" });
    }
    Ok(certs)
}

/// A fixed reason per kind: the PEM error's own text may quote the file, and the file may be a key.
fn pem_reason(error: &pem::Error, nothing_found: &'static str) -> &'static str {
    match error {
        pem::Error::NoItemsFound => nothing_found,
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        _ => "the file is not valid PEM",
    }
}

/// What to do after one look at the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nothing new: the served files, or a set already found unusable.
    Keep,
    /// Something changed; wait one more poll, since rotations replace the files one by one.
    Settle,
    /// The same new set was seen twice in a row: build it.
    Rebuild,
}

/// Decides when changed files are applied. Pure: the poller feeds it fingerprints.
#[derive(Debug, Clone)]
struct ChangeDetector {
    served: Fingerprint,
    last_seen: Fingerprint,
    failed: Option<Fingerprint>,
}

impl ChangeDetector {
    fn new(served: Fingerprint) -> Self {
        Self { served, last_seen: served, failed: None }
    }

    fn observe(&mut self, seen: Fingerprint) -> Verdict {
        let previous = std::mem::replace(&mut self.last_seen, seen);
        if seen == self.served {
            self.failed = None;
            Verdict::Keep
        } else if seen != previous {
            Verdict::Settle
        } else if self.failed == Some(seen) {
            Verdict::Keep
        } else {
            Verdict::Rebuild
        }
    }

    fn rebuilt(&mut self, seen: Fingerprint) {
        self.served = seen;
        self.failed = None;
    }

    fn rejected(&mut self, seen: Fingerprint) {
        self.failed = Some(seen);
    }
}

/// The server configuration in force, replaced when the files on disk change.
///
/// Cloning is cheap and every clone sees reloads. The poller stops when the last clone is dropped.
#[derive(Clone)]
pub struct ReloadingTls {
    files: Arc<TlsFiles>,
    config: watch::Receiver<Arc<ServerConfig>>,
}

impl fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Loads the files now (an unusable set is an error: the server must not start without TLS),
    /// then re-reads them every `poll_interval` on the current tokio runtime.
    ///
    /// A new set is applied once it has been seen unchanged on two consecutive polls, so a
    /// rotation shows up within two intervals. An unusable set is logged once and the previous
    /// configuration stays in force.
    pub fn start(files: TlsFiles, poll_interval: Duration) -> Result<Self, TlsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
        let seen = FileSet::read(&files);
        let served = fingerprint(&seen);
        let seen = seen?;
        let config = Arc::new(server_config(&files, &seen)?);
        warn_absent_client_cas(&files, &seen);
        let files = Arc::new(files);
        let (publish, config) = watch::channel(config);
        runtime.spawn(poll_files(files.clone(), publish, ChangeDetector::new(served), poll_interval));
        Ok(Self { files, config })
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.borrow().clone()
    }

    /// An acceptor over [`current`](Self::current); take a fresh one per connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

async fn poll_files(
    files: Arc<TlsFiles>,
    publish: watch::Sender<Arc<ServerConfig>>,
    mut detector: ChangeDetector,
    poll_interval: Duration,
) {
    let mut ticks = tokio::time::interval(poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = publish.closed() => return,
        }
        let reader = files.clone();
        // A slow volume must not stall a runtime worker.
        let seen = match tokio::task::spawn_blocking(move || FileSet::read(&reader)).await {
            Ok(seen) => seen,
            Err(error) => {
                tracing::error!(%error, "reading the TLS files did not finish");
                continue;
            }
        };
        let print = fingerprint(&seen);
        match detector.observe(print) {
            Verdict::Keep => {}
            Verdict::Settle => {
                tracing::debug!(cert = %files.cert.display(), "TLS files changed; waiting for them to settle")
            }
            Verdict::Rebuild => match seen.and_then(|set| server_config(&files, &set).map(|c| (c, set))) {
                Ok((config, set)) => {
                    warn_absent_client_cas(&files, &set);
                    detector.rebuilt(print);
                    publish.send_replace(Arc::new(config));
                    tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                }
                Err(error) => {
                    detector.rejected(print);
                    tracing::error!(%error, "the new TLS files are unusable; still serving the previous certificate");
                }
            },
        }
    }
}

/// The client's certificate chain (leaf first), put into the request extensions by the accept
/// loop when the client presented one.
#[derive(Debug, Clone)]
pub struct ClientCertChain(pub Arc<[CertificateDer<'static>]>);

#[cfg(test)]
mod tests {
    use super::*;

    fn print(tag: &str) -> Fingerprint {
        Sha256::digest(tag.as_bytes()).into()
    }

    #[test]
    fn unchanged_files_are_kept() {
        let mut detector = ChangeDetector::new(print("a"));
        assert_eq!(detector.observe(print("a")), Verdict::Keep);
        assert_eq!(detector.observe(print("a")), Verdict::Keep);
    }

    #[test]
    fn a_change_is_rebuilt_once_it_has_settled() {
        let mut detector = ChangeDetector::new(print("a"));
        assert_eq!(detector.observe(print("b")), Verdict::Settle);
        assert_eq!(detector.observe(print("c")), Verdict::Settle);
        assert_eq!(detector.observe(print("c")), Verdict::Rebuild);
        detector.rebuilt(print("c"));
        assert_eq!(detector.observe(print("c")), Verdict::Keep);
    }

    #[test]
    fn an_unusable_set_is_reported_once_and_a_later_fix_is_applied() {
        let mut detector = ChangeDetector::new(print("a"));
        detector.observe(print("broken"));
        assert_eq!(detector.observe(print("broken")), Verdict::Rebuild);
        detector.rejected(print("broken"));
        assert_eq!(detector.observe(print("broken")), Verdict::Keep);
        assert_eq!(detector.observe(print("fixed")), Verdict::Settle);
        assert_eq!(detector.observe(print("fixed")), Verdict::Rebuild);
    }

    #[test]
    fn returning_to_the_served_files_forgets_a_failure() {
        let mut detector = ChangeDetector::new(print("a"));
        detector.observe(print("broken"));
        detector.observe(print("broken"));
        detector.rejected(print("broken"));
        assert_eq!(detector.observe(print("a")), Verdict::Keep);
        assert_eq!(detector.observe(print("broken")), Verdict::Settle);
        assert_eq!(detector.observe(print("broken")), Verdict::Rebuild);
    }

    #[test]
    fn fingerprints_tell_apart_bytes_moved_between_files() {
        let set = |cert: &[u8], key: &[u8], client_ca: Vec<Option<Vec<u8>>>| FileSet {
            cert: cert.to_vec(),
            key: key.to_vec(),
            client_ca,
        };
        assert_ne!(fingerprint(&Ok(set(b"ab", b"c", vec![]))), fingerprint(&Ok(set(b"a", b"bc", vec![]))));
        assert_ne!(fingerprint(&Ok(set(b"a", b"bc", vec![]))), fingerprint(&Ok(set(b"a", b"bc", vec![Some(vec![])]))));
    }

    #[test]
    fn fingerprints_change_when_a_client_ca_file_appears() {
        let set = |client_ca: Vec<Option<Vec<u8>>>| FileSet { cert: b"c".to_vec(), key: b"k".to_vec(), client_ca };
        let absent = fingerprint(&Ok(set(vec![Some(b"core".to_vec()), None])));
        let present = fingerprint(&Ok(set(vec![Some(b"core".to_vec()), Some(b"proxy".to_vec())])));
        assert_ne!(absent, present);
        let moved = fingerprint(&Ok(set(vec![None, Some(b"core".to_vec())])));
        assert_ne!(absent, moved);
    }
}
