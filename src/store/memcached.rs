//! Synchronous memcached access for the shared demand store.
//!
//! Several API server replicas keep demand in the same memcached servers, so every replica must map
//! a key to the same server ([`Ring`]) and update values with compare-and-swap ([`Memcached::gets`]
//! then [`Memcached::cas`]). Calls block: they run on dedicated OS threads, never on the async
//! runtime. Every call is bounded by [`MemcachedOptions::timeout`], and an unreachable server is an
//! error of that call only: the process starts and keeps serving while memcached is down.
//!
//! Built on the `memcache` crate's `Client`, with one single-connection client per server so that
//! routing is ours and a failing server only fails its own keys.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use memcache::{ClientError, CommandError, ConnectionManager, MemcacheError, ServerError, Url};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Port memcached listens on when the store URL names a host without one.
pub const DEFAULT_PORT: u16 = 11211;

/// Virtual points per server on the ring: enough that each server's share of the keys stays
/// within a few percent of the mean.
const POINTS_PER_SERVER: usize = 160;

/// memcached refuses longer keys.
const MAX_KEY_LEN: usize = 250;

/// Keys per multi-get request: the binary protocol writes every request before reading any
/// answer, so an unbounded batch could fill both socket buffers and stall until the timeout.
const MULTI_GET_BATCH: usize = 100;

/// memcached reads a relative expiry above 30 days as a Unix timestamp.
const MAX_RELATIVE_EXPIRY_SECS: u64 = 30 * 24 * 60 * 60;

/// Longest server-provided text kept in an error.
const MAX_CAUSE_LEN: usize = 200;

// ---------------------------------------------------------------------------------------------
// Store URL

/// The memcached servers of the shared store, parsed from
/// `memcached://HOST:PORT[,HOST:PORT…]` (`memcache://` is accepted too).
///
/// The order is kept, although the [`Ring`] does not depend on it. A host without a port gets
/// [`DEFAULT_PORT`]; IPv6 addresses need brackets (`[::1]:11211`). Credentials are refused here
/// so that a URL can be logged: they come from [`Credentials`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    servers: Vec<String>,
}

impl StoreUrl {
    /// The servers as `host:port`, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memcached://{}", self.servers.join(","))
    }
}

/// Why a store URL was refused. Messages quote the offending server, never the whole URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    #[error("store URL must look like memcached://HOST:PORT[,HOST:PORT...]")]
    NotAUrl,
    #[error("store URL scheme must be memcached:// or memcache://, not {0:?}")]
    Scheme(String),
    #[error("store URL must not contain credentials: give the username and password as files or environment")]
    Credentials,
    #[error("store URL must not have a path, query or fragment, only servers")]
    Path,
    #[error("store URL lists no servers")]
    NoServers,
    #[error("store URL has an empty entry at position {0} of its server list")]
    EmptyServer(usize),
    #[error("memcached server {0:?} has no host")]
    NoHost(String),
    #[error("memcached server {0:?}: host has characters a host name cannot have (IPv6 addresses need brackets)")]
    Host(String),
    #[error("memcached server {0:?}: port must be a number from 1 to 65535")]
    Port(String),
    #[error("memcached server {0:?} is listed twice")]
    Duplicate(String),
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = url.trim().split_once("://").ok_or(StoreUrlError::NotAUrl)?;
        if !scheme.eq_ignore_ascii_case("memcached") && !scheme.eq_ignore_ascii_case("memcache") {
            return Err(StoreUrlError::Scheme(scheme.to_string()));
        }
        if rest.contains('@') {
            return Err(StoreUrlError::Credentials);
        }
        let list = rest.strip_suffix('/').unwrap_or(rest);
        if list.contains(['/', '?', '#']) {
            return Err(StoreUrlError::Path);
        }
        if list.trim().is_empty() {
            return Err(StoreUrlError::NoServers);
        }
        let mut servers: Vec<String> = Vec::new();
        for (position, entry) in list.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(StoreUrlError::EmptyServer(position + 1));
            }
            let server = parse_server(entry)?;
            if servers.contains(&server) {
                return Err(StoreUrlError::Duplicate(server));
            }
            servers.push(server);
        }
        Ok(StoreUrl { servers })
    }
}

/// Normalises one `host[:port]` entry to `host:port`.
fn parse_server(entry: &str) -> Result<String, StoreUrlError> {
    let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']').ok_or_else(|| StoreUrlError::Host(entry.to_string()))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(StoreUrlError::Host(entry.to_string()));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| StoreUrlError::Host(entry.to_string()))?),
        };
        (&entry[..address.len() + 2], port)
    } else {
        match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err(StoreUrlError::NoHost(entry.to_string()));
    }
    if !host.starts_with('[') && !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return Err(StoreUrlError::Host(entry.to_string()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(StoreUrlError::Port(entry.to_string())),
        },
    };
    Ok(format!("{host}:{port}"))
}

// ---------------------------------------------------------------------------------------------
// Consistent hashing

/// Consistent hashing of keys onto servers, ketama style.
///
/// Each server owns [`POINTS_PER_SERVER`] points on a `u64` circle, taken from SHA-256 of
/// `"host:port-i"`; a key belongs to the first point at or after the hash of the key. Every
/// replica given the same server names therefore routes a key to the same server, and adding a
/// server only moves the keys that the new server takes over.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Sorted by point; the server index breaks (improbable) ties deterministically.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new(servers: &[String]) -> Self {
        let mut points: Vec<(u64, usize)> = servers
            .iter()
            .enumerate()
            .flat_map(|(index, server)| {
                (0..POINTS_PER_SERVER).map(move |i| (hash64(format!("{server}-{i}").as_bytes()), index))
            })
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// Index into the `servers` given to [`Ring::new`]; 0 for a ring without servers.
    pub fn server_for(&self, key: &str) -> usize {
        let hash = hash64(key.as_bytes());
        let next = self.points.partition_point(|&(point, _)| point < hash);
        self.points.get(next).or(self.points.first()).map_or(0, |&(_, server)| server)
    }
}

fn hash64(bytes: &[u8]) -> u64 {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = digest;
    u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// memcached credentials: SASL PLAIN on the binary protocol (`memcached -S`), or the ASCII `auth`
/// of `memcached -Y <file>`. The password never appears in `Debug`, errors or logs.
#[derive(Clone, Debug)]
pub struct Credentials {
    username: String,
    password: SecretString,
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.username == other.username && self.password.expose_secret() == other.password.expose_secret()
    }
}

impl Eq for Credentials {}

/// Why credentials were refused. Never includes the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the memcached {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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

    /// Reads both values from files (Kubernetes secret mounts), dropping trailing line breaks.
    pub fn from_files(username_file: &Path, password_file: &Path) -> Result<Self, CredentialsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| CredentialsError::Read { what, path: path.to_path_buf(), source })
        };
        Credentials::new(read("username", username_file)?, read("password", password_file)?)
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// Puts the credentials into a connection URL, failing with the name of the part the URL
    /// would alter.
    fn apply(&self, url: &mut Url) -> Result<(), &'static str> {
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

// ---------------------------------------------------------------------------------------------
// Options

/// Wire protocol spoken to memcached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Default: the only protocol in which the memcache crate tells a refused `add` from a stored
    /// one; authenticates with SASL PLAIN (`memcached -S`).
    #[default]
    Binary,
    /// For servers that only speak ASCII, such as `memcached -Y <auth file>`. `add` is
    /// unsupported: the crate answers `Ok` whether memcached stored the value or not.
    Ascii,
}

/// How to reach the servers.
#[derive(Clone, Debug)]
pub struct MemcachedOptions {
    /// Bounds connecting and every read and write, so a dead server costs a call at most about
    /// this long instead of hanging the thread.
    pub timeout: Duration,
    pub credentials: Option<Credentials>,
    pub protocol: Protocol,
}

impl Default for MemcachedOptions {
    fn default() -> Self {
        MemcachedOptions { timeout: Duration::from_millis(500), credentials: None, protocol: Protocol::Binary }
    }
}

/// Why a [`Memcached`] could not be built (never because a server is down).
#[derive(Debug, thiserror::Error)]
pub enum MemcachedConfigError {
    #[error("the memcached timeout must be greater than zero")]
    ZeroTimeout,
    #[error("memcached server {0}: cannot build a connection address for it")]
    Address(String),
}

/// How long an item lives. memcached reads relative expiries above 30 days as Unix timestamps
/// and 0 as "never", so [`Expiry::after`] clamps into 1 s ..= 30 days.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiry(u32);

impl Expiry {
    pub const NEVER: Expiry = Expiry(0);

    /// Rounded up to whole seconds, at least 1 s and at most 30 days.
    pub fn after(ttl: Duration) -> Self {
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = seconds.clamp(1, MAX_RELATIVE_EXPIRY_SECS);
        Expiry(u32::try_from(seconds).unwrap_or(u32::MAX))
    }

    /// The value sent to memcached: 0 is never.
    pub fn seconds(self) -> u32 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The memcached operation that failed, for messages and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Gets,
    GetMulti,
    Add,
    Cas,
    Set,
    Delete,
    FlushAll,
    Ping,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Gets => "gets",
            Operation::GetMulti => "get_multi",
            Operation::Add => "add",
            Operation::Cas => "cas",
            Operation::Set => "set",
            Operation::Delete => "delete",
            Operation::FlushAll => "flush_all",
            Operation::Ping => "ping",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure, coarse enough to decide what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Refused, reset or closed connection, or no connection could be made.
    Unreachable,
    /// The server did not answer within the timeout.
    Timeout,
    /// memcached refused the value as larger than its item size limit (`-I`, 1 MiB by default).
    ValueTooLarge,
    /// Wrong or missing credentials.
    Authentication,
    /// A key memcached cannot store (empty, over 250 bytes, whitespace or control characters).
    InvalidKey,
    /// The operation cannot be done reliably with this protocol or server configuration.
    Unsupported,
    /// Any other answer the client did not expect.
    Protocol,
}

impl ErrorKind {
    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::Authentication => "authentication",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Protocol => "protocol",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unreachable => "server unreachable",
            ErrorKind::Timeout => "timed out",
            ErrorKind::ValueTooLarge => "value too large",
            ErrorKind::Authentication => "authentication failed",
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Protocol => "unexpected answer",
        })
    }
}

/// A failed memcached call: which server, which operation, what kind of failure, and a short
/// cause. Never contains the password or the connection URL.
#[derive(Clone, Debug, thiserror::Error)]
#[error("memcached {operation} on {server}: {kind}: {cause}")]
pub struct MemcachedError {
    server: String,
    operation: Operation,
    kind: ErrorKind,
    cause: String,
}

impl MemcachedError {
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server could not be reached or did not answer in time: worth retrying later, and no
    /// reason to believe the data is wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unreachable | ErrorKind::Timeout)
    }

    pub fn is_value_too_large(&self) -> bool {
        self.kind == ErrorKind::ValueTooLarge
    }
}

/// Maps a `memcache` crate error onto our kinds. The crate reports connect failures as an r2d2
/// pool timeout whose text carries the last connect error, hence the text matching.
fn classify(error: &MemcacheError) -> ErrorKind {
    match error {
        MemcacheError::IOError(e) => match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
            _ => ErrorKind::Unreachable,
        },
        MemcacheError::PoolError(e) => {
            let text = e.to_string().to_ascii_lowercase();
            let last_connect_error = text.strip_prefix("timed out waiting for connection").unwrap_or(&text);
            if last_connect_error.contains("auth") {
                ErrorKind::Authentication
            } else if last_connect_error.trim().is_empty()
                || last_connect_error.contains("timed out")
                || last_connect_error.contains("temporarily unavailable")
            {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unreachable
            }
        }
        MemcacheError::CommandError(CommandError::ValueTooLarge) => ErrorKind::ValueTooLarge,
        MemcacheError::CommandError(CommandError::AuthenticationRequired) => ErrorKind::Authentication,
        MemcacheError::ServerError(ServerError::Error(text)) if text.contains("too large") => ErrorKind::ValueTooLarge,
        MemcacheError::ClientError(ClientError::KeyTooLong) => ErrorKind::InvalidKey,
        MemcacheError::ClientError(ClientError::Error(text)) if text.to_ascii_lowercase().contains("auth") => {
            ErrorKind::Authentication
        }
        _ => ErrorKind::Protocol,
    }
}

/// Whether the connection may be out of step with the server after this error. The crate's
/// pool never discards a broken connection itself, and a late answer left in the socket would be
/// read as the answer to the next command, so such a client is dropped and rebuilt.
fn leaves_connection_unusable(error: &MemcacheError) -> bool {
    match error {
        // No connection was checked out; the pool keeps one reconnect attempt in flight.
        MemcacheError::PoolError(_) => false,
        // The server answered this very command.
        MemcacheError::CommandError(_) => false,
        MemcacheError::ClientError(ClientError::KeyTooLong) => false,
        MemcacheError::ServerError(ServerError::Error(text)) => !text.contains("too large"),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Result of [`Memcached::get_multi`]: what the reachable servers returned, and which keys could
/// not be read because their server failed. A key in neither is absent from memcached.
#[derive(Debug, Default)]
pub struct MultiGet {
    /// Value and CAS token of every key found.
    pub values: HashMap<String, (Vec<u8>, u64)>,
    pub failures: Vec<MultiGetFailure>,
}

/// Keys whose value is unknown, and why.
#[derive(Debug)]
pub struct MultiGetFailure {
    pub error: MemcachedError,
    pub keys: Vec<String>,
}

impl MultiGet {
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }

    /// All-or-nothing view: the values, or the first failure.
    pub fn into_complete(self) -> Result<HashMap<String, (Vec<u8>, u64)>, MemcachedError> {
        match self.failures.into_iter().next() {
            Some(failure) => Err(failure.error),
            None => Ok(self.values),
        }
    }
}

/// One server: its client is built on first use and again after an error that may have left the
/// connection out of step.
struct Node {
    server: String,
    /// May carry the password: never printed.
    url: Url,
    client: Mutex<Option<memcache::Client>>,
}

impl Node {
    /// Poisoning means a call panicked mid-command: start over with a fresh client.
    fn lock(&self) -> MutexGuard<'_, Option<memcache::Client>> {
        match self.client.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                *guard = None;
                self.client.clear_poison();
                guard
            }
        }
    }
}

/// Blocking access to the memcached servers of the shared store.
///
/// Construction never connects. Each server has one connection, used by one call at a time (its
/// mutex is held for the whole command, so an answer is never read by the wrong caller). A
/// connect failure keeps the server's pool, which retries in the background at most every
/// `timeout / 2`; an error on an open connection drops the client and the next call connects
/// anew. A call against a down server fails after at most about `timeout`.
pub struct Memcached {
    servers: Vec<String>,
    ring: Ring,
    nodes: Vec<Node>,
    timeout: Duration,
    protocol: Protocol,
    /// Only to scrub it from error texts, should a dependency ever echo it.
    password: Option<SecretString>,
}

impl fmt::Debug for Memcached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memcached")
            .field("servers", &self.servers)
            .field("protocol", &self.protocol)
            .field("timeout", &self.timeout)
            .field("authenticated", &self.password.is_some())
            .finish()
    }
}

impl Memcached {
    pub fn new(url: &StoreUrl, options: MemcachedOptions) -> Result<Self, MemcachedConfigError> {
        if options.timeout.is_zero() {
            return Err(MemcachedConfigError::ZeroTimeout);
        }
        let nodes = url
            .servers()
            .iter()
            .map(|server| {
                let url =
                    connection_url(server, &options).ok_or_else(|| MemcachedConfigError::Address(server.clone()))?;
                Ok(Node { server: server.clone(), url, client: Mutex::new(None) })
            })
            .collect::<Result<Vec<_>, MemcachedConfigError>>()?;
        Ok(Memcached {
            servers: url.servers().to_vec(),
            ring: Ring::new(url.servers()),
            nodes,
            timeout: options.timeout,
            protocol: options.protocol,
            password: options.credentials.map(|c| c.password),
        })
    }

    /// The servers as `host:port`, in configuration order.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The server a key lives on.
    pub fn server_for(&self, key: &str) -> &str {
        self.servers.get(self.ring.server_for(key)).map_or("", String::as_str)
    }

    /// The value and its CAS token, or `None` when the key is absent.
    pub fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, MemcachedError> {
        let node = self.node_for(key, Operation::Gets)?;
        let found = self.call(node, Operation::Gets, |client| client.get::<(Vec<u8>, u32, Option<u64>)>(key))?;
        Ok(found.map(|(value, _flags, token)| (value, token.unwrap_or(0))))
    }

    /// Reads many keys with one round trip per server (batches of [`MULTI_GET_BATCH`] keys), one
    /// server after the other. A failing server does not hide the others' values: its keys are
    /// listed in [`MultiGet::failures`], as are invalid keys. Duplicate keys are read once.
    pub fn get_multi(&self, keys: &[String]) -> MultiGet {
        let mut result = MultiGet::default();
        let mut by_server: Vec<Vec<&str>> = vec![Vec::new(); self.nodes.len()];
        let mut seen = HashSet::new();
        let mut invalid: HashMap<usize, Vec<String>> = HashMap::new();
        for key in keys {
            if !seen.insert(key.as_str()) {
                continue;
            }
            let server = self.ring.server_for(key);
            if check_key(key).is_err() {
                invalid.entry(server).or_default().push(key.clone());
            } else if let Some(group) = by_server.get_mut(server) {
                group.push(key);
            }
        }
        for (server, keys) in invalid {
            let name = self.servers.get(server).cloned().unwrap_or_default();
            let error = MemcachedError {
                server: name,
                operation: Operation::GetMulti,
                kind: ErrorKind::InvalidKey,
                cause: "keys must be 1 to 250 bytes without whitespace or control characters".to_string(),
            };
            result.failures.push(MultiGetFailure { error, keys });
        }
        for (node, keys) in self.nodes.iter().zip(&by_server) {
            for (batch_index, batch) in keys.chunks(MULTI_GET_BATCH).enumerate() {
                let found =
                    self.call(node, Operation::GetMulti, |client| client.gets::<(Vec<u8>, u32, Option<u64>)>(batch));
                match found {
                    Ok(found) => {
                        for (key, (value, _flags, token)) in found {
                            // Only what was asked for, should a server answer more.
                            if batch.contains(&key.as_str()) {
                                result.values.insert(key, (value, token.unwrap_or(0)));
                            }
                        }
                    }
                    Err(error) => {
                        let unread = keys.iter().skip(batch_index * MULTI_GET_BATCH).map(|k| k.to_string()).collect();
                        result.failures.push(MultiGetFailure { error, keys: unread });
                        break;
                    }
                }
            }
        }
        result
    }

    /// Stores the value only if the key is absent: `Ok(false)` when it exists. Binary protocol
    /// only (see [`Protocol::Ascii`]).
    pub fn add(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<bool, MemcachedError> {
        let node = self.node_for(key, Operation::Add)?;
        if self.protocol == Protocol::Ascii {
            return Err(self.refuse(
                node,
                Operation::Add,
                ErrorKind::Unsupported,
                "the memcache crate's ASCII add cannot tell NOT_STORED from STORED",
            ));
        }
        self.call(node, Operation::Add, |client| match client.add(key, value, expiry.seconds()) {
            Ok(()) => Ok(true),
            Err(MemcacheError::CommandError(CommandError::KeyExists)) => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// Replaces the value only if it is unchanged since [`Memcached::gets`] returned `token`:
    /// `Ok(false)` when another writer got there first or the key is gone.
    pub fn cas(&self, key: &str, value: &[u8], token: u64, expiry: Expiry) -> Result<bool, MemcachedError> {
        let node = self.node_for(key, Operation::Cas)?;
        // A binary set with CAS 0 is an unconditional set; servers run with -C hand out 0.
        if token == 0 {
            return Err(self.refuse(
                node,
                Operation::Cas,
                ErrorKind::Unsupported,
                "CAS token 0: the server does not hand out CAS tokens (memcached -C?)",
            ));
        }
        self.call(node, Operation::Cas, |client| client.cas(key, value, expiry.seconds(), token))
    }

    /// Stores the value whatever is there.
    pub fn set(&self, key: &str, value: &[u8], expiry: Expiry) -> Result<(), MemcachedError> {
        let node = self.node_for(key, Operation::Set)?;
        self.call(node, Operation::Set, |client| client.set(key, value, expiry.seconds()))
    }

    /// `Ok(false)` when the key was absent.
    pub fn delete(&self, key: &str) -> Result<bool, MemcachedError> {
        let node = self.node_for(key, Operation::Delete)?;
        self.call(node, Operation::Delete, |client| client.delete(key))
    }

    /// Empties every server (tests). Tries them all and returns the first failure.
    pub fn flush_all(&self) -> Result<(), MemcachedError> {
        let mut first_error = None;
        for node in &self.nodes {
            if let Err(error) = self.call(node, Operation::FlushAll, |client| client.flush()) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Each server's version, in configuration order: a health check.
    pub fn ping(&self) -> Vec<Result<String, MemcachedError>> {
        self.nodes
            .iter()
            .map(|node| {
                self.call(node, Operation::Ping, |client| {
                    // The crate pairs each version with the connection URL, which may hold the
                    // password: keep only the version.
                    let mut versions = client.version()?;
                    versions.pop().map(|(_url, version)| version).ok_or_else(|| {
                        MemcacheError::ServerError(ServerError::BadResponse("no version in the answer".into()))
                    })
                })
            })
            .collect()
    }

    fn node_for(&self, key: &str, operation: Operation) -> Result<&Node, MemcachedError> {
        let node = self.nodes.get(self.ring.server_for(key)).ok_or_else(|| MemcachedError {
            server: String::new(),
            operation,
            kind: ErrorKind::Unsupported,
            cause: "no memcached servers configured".to_string(),
        })?;
        check_key(key).map_err(|cause| self.refuse(node, operation, ErrorKind::InvalidKey, cause))?;
        Ok(node)
    }

    /// Runs one command on a server's client, building the client if needed and dropping it when
    /// the error may have left its connection out of step.
    fn call<T>(
        &self,
        node: &Node,
        operation: Operation,
        command: impl FnOnce(&memcache::Client) -> Result<T, MemcacheError>,
    ) -> Result<T, MemcachedError> {
        let mut slot = node.lock();
        let client = match slot.take() {
            Some(client) => client,
            None => self.client(node).map_err(|e| self.error(node, operation, &e))?,
        };
        match command(&client) {
            Ok(value) => {
                *slot = Some(client);
                Ok(value)
            }
            Err(e) => {
                if !leaves_connection_unusable(&e) {
                    *slot = Some(client);
                }
                Err(self.error(node, operation, &e))
            }
        }
    }

    /// A single-connection pool that connects on first use: `build_unchecked` because the crate's
    /// own constructors wait for a connection and fail while memcached is down.
    fn client(&self, node: &Node) -> Result<memcache::Client, MemcacheError> {
        let pool = memcache::Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            // The check costs a round trip per call and cannot catch a connection out of step.
            .test_on_check_out(false)
            .connection_timeout(self.timeout)
            .build_unchecked(ConnectionManager::new(node.url.clone()));
        memcache::Client::with_pool(pool)
    }

    fn error(&self, node: &Node, operation: Operation, error: &MemcacheError) -> MemcachedError {
        MemcachedError { server: node.server.clone(), operation, kind: classify(error), cause: self.scrub(error) }
    }

    fn refuse(&self, node: &Node, operation: Operation, kind: ErrorKind, cause: &str) -> MemcachedError {
        MemcachedError { server: node.server.clone(), operation, kind, cause: cause.to_string() }
    }

    /// The error's text, one line, bounded, without the password.
    fn scrub(&self, error: &MemcacheError) -> String {
        let text = match error {
            // r2d2 words every connect failure as "timed out waiting for connection: <last error>".
            MemcacheError::PoolError(e) => {
                let text = e.to_string();
                let last = text.strip_prefix("timed out waiting for connection").unwrap_or(&text);
                match last.trim_start_matches(':').trim() {
                    "" => format!("no connection within {:?}", self.timeout),
                    last => format!("no connection within {:?}: {last}", self.timeout),
                }
            }
            other => other.to_string(),
        };
        let mut text = text.trim().replace(['\r', '\n'], " ");
        if let Some(password) = self.password.as_ref().map(ExposeSecret::expose_secret).filter(|p| !p.is_empty()) {
            text = text.replace(password, "<redacted>");
        }
        if text.len() > MAX_CAUSE_LEN {
            let mut end = MAX_CAUSE_LEN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        if text.is_empty() { "no details".to_string() } else { text }
    }
}

/// The memcache crate's connection URL for one server: timeouts for every new connection,
/// protocol, and credentials, which it uses to authenticate each connection it opens.
fn connection_url(server: &str, options: &MemcachedOptions) -> Option<Url> {
    let mut url = Url::parse(&format!("memcache://{server}")).ok()?;
    url.query_pairs_mut().append_pair("timeout", &options.timeout.as_secs_f64().to_string());
    if options.protocol == Protocol::Ascii {
        url.query_pairs_mut().append_pair("protocol", "ascii");
    }
    if let Some(credentials) = &options.credentials {
        credentials.apply(&mut url).ok()?;
    }
    Some(url)
}

/// Keys travel unquoted in the ASCII protocol: whitespace or control characters would split or
/// inject commands, so both protocols refuse them.
fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        Err("empty key")
    } else if key.len() > MAX_KEY_LEN {
        Err("key longer than 250 bytes")
    } else if key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        Err("key contains whitespace or control characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn keys(count: usize) -> impl Iterator<Item = String> {
        (0..count).map(|i| format!("demand/org-{}/runner-{i}", i % 7))
    }

    #[test]
    fn store_url_keeps_servers_in_order() {
        let url: StoreUrl = "memcached://mc-1:11211,10.0.0.2:11300, [::1]:5000".parse().unwrap();
        assert_eq!(url.servers(), ["mc-1:11211", "10.0.0.2:11300", "[::1]:5000"]);
        assert_eq!(url.to_string(), "memcached://mc-1:11211,10.0.0.2:11300,[::1]:5000");
    }

    #[test]
    fn store_url_accepts_memcache_scheme_trailing_slash_and_default_port() {
        let url: StoreUrl = "memcache://cache.ci.svc/".parse().unwrap();
        assert_eq!(url.servers(), ["cache.ci.svc:11211"]);
    }

    #[test]
    fn store_url_rejects_what_is_not_a_server_list() {
        let cases = [
            ("redis://a:1", StoreUrlError::Scheme("redis".into())),
            ("a:1", StoreUrlError::NotAUrl),
            ("memcached://", StoreUrlError::NoServers),
            ("memcached://a:1,,b:2", StoreUrlError::EmptyServer(2)),
            ("memcached://a:1,", StoreUrlError::EmptyServer(2)),
            ("memcached://:11211", StoreUrlError::NoHost(":11211".into())),
            ("memcached://a:0", StoreUrlError::Port("a:0".into())),
            ("memcached://a:65536", StoreUrlError::Port("a:65536".into())),
            ("memcached://a:+1", StoreUrlError::Port("a:+1".into())),
            ("memcached://a:", StoreUrlError::Port("a:".into())),
            ("memcached://a:port", StoreUrlError::Port("a:port".into())),
            ("memcached://::1:11211", StoreUrlError::Host("::1:11211".into())),
            ("memcached://[nope]:1", StoreUrlError::Host("[nope]:1".into())),
            ("memcached://a b:1", StoreUrlError::Host("a b:1".into())),
            ("memcached://a:1/path", StoreUrlError::Path),
            ("memcached://a:1?timeout=1", StoreUrlError::Path),
            ("memcached://user:secret@a:1", StoreUrlError::Credentials),
            ("memcached://a:11211,a", StoreUrlError::Duplicate("a:11211".into())),
        ];
        for (url, expected) in cases {
            assert_eq!(url.parse::<StoreUrl>(), Err(expected), "{url}");
        }
    }

    #[test]
    fn store_url_errors_never_quote_credentials() {
        let error = "memcached://alice:hunter2@a:1".parse::<StoreUrl>().unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn ring_routes_every_key_the_same_way_every_time() {
        let names = servers(&["a:11211", "b:11211", "c:11211"]);
        let (first, second) = (Ring::new(&names), Ring::new(&names));
        for key in keys(1000) {
            assert_eq!(first.server_for(&key), second.server_for(&key), "{key}");
        }
    }

    #[test]
    fn ring_does_not_depend_on_server_order() {
        let forward = servers(&["a:11211", "b:11211", "c:11211"]);
        let backward: Vec<String> = forward.iter().rev().cloned().collect();
        let (forward_ring, backward_ring) = (Ring::new(&forward), Ring::new(&backward));
        for key in keys(1000) {
            assert_eq!(forward[forward_ring.server_for(&key)], backward[backward_ring.server_for(&key)]);
        }
    }

    #[test]
    fn ring_gives_every_server_a_fair_share_of_100k_keys() {
        for names in
            [servers(&["a:11211", "b:11211", "c:11211"]), servers(&["10.0.0.1:1", "10.0.0.2:1", "x:2", "y:3", "z:4"])]
        {
            let ring = Ring::new(&names);
            let mut counts = vec![0usize; names.len()];
            for key in keys(100_000) {
                counts[ring.server_for(&key)] += 1;
            }
            let mean = 100_000 / names.len();
            for (server, count) in names.iter().zip(&counts) {
                assert!(count.abs_diff(mean) * 4 <= mean, "{server} got {count} keys, mean {mean}: {counts:?}");
            }
        }
    }

    #[test]
    fn adding_a_fourth_server_moves_about_a_quarter_of_the_keys_all_to_the_new_server() {
        let three = servers(&["a:11211", "b:11211", "c:11211"]);
        let mut four = three.clone();
        four.push("d:11211".to_string());
        let (before, after) = (Ring::new(&three), Ring::new(&four));
        let mut moved = 0;
        for key in keys(100_000) {
            let (old, new) = (before.server_for(&key), after.server_for(&key));
            if old != new {
                moved += 1;
                assert_eq!(new, 3, "{key} moved from {} to {}, not to the new server", three[old], four[new]);
            }
        }
        assert!(moved > 15_000 && moved < 35_000, "{moved} of 100000 keys moved");
    }

    #[test]
    fn a_ring_without_servers_does_not_panic() {
        assert_eq!(Ring::new(&[]).server_for("key"), 0);
    }

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

    #[test]
    fn credentials_from_files_drop_the_trailing_newline_and_name_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (user, password) = (dir.path().join("username"), dir.path().join("password"));
        std::fs::write(&user, "alice\n").unwrap();
        std::fs::write(&password, "hunter2\r\n").unwrap();
        assert_eq!(Credentials::from_files(&user, &password).unwrap(), Credentials::new("alice", "hunter2").unwrap());

        let missing = dir.path().join("absent");
        let error = Credentials::from_files(&user, &missing).unwrap_err().to_string();
        assert!(error.contains("password file") && error.contains("absent"), "{error}");
    }

    #[test]
    fn connection_url_carries_credentials_timeout_and_protocol() {
        let options = MemcachedOptions {
            timeout: Duration::from_millis(250),
            credentials: Some(Credentials::new("alice", "hunter2").unwrap()),
            protocol: Protocol::Ascii,
        };
        let url = connection_url("[::1]:11211", &options).unwrap();
        assert_eq!((url.username(), url.password()), ("alice", Some("hunter2")));
        assert_eq!(url.query(), Some("timeout=0.25&protocol=ascii"));
        assert_eq!(url.port(), Some(11211));
    }

    #[test]
    fn expiry_stays_relative_and_never_rounds_down_to_never() {
        assert_eq!(Expiry::NEVER.seconds(), 0);
        assert_eq!(Expiry::after(Duration::ZERO).seconds(), 1);
        assert_eq!(Expiry::after(Duration::from_millis(1500)).seconds(), 2);
        assert_eq!(Expiry::after(Duration::from_secs(600)).seconds(), 600);
        assert_eq!(Expiry::after(Duration::from_secs(365 * 24 * 3600)).seconds(), 2_592_000);
    }

    #[test]
    fn keys_that_would_break_the_ascii_protocol_are_invalid() {
        assert!(check_key("demand/acme/api/linux").is_ok());
        assert!(check_key(&"k".repeat(250)).is_ok());
        for key in ["", "a b", "a\r\nflush_all", "tab\t", "del\u{7f}", &"k".repeat(251)] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn errors_are_classified_by_what_can_be_done_about_them() {
        let io = |kind| MemcacheError::IOError(io::Error::from(kind));
        assert_eq!(classify(&io(io::ErrorKind::WouldBlock)), ErrorKind::Timeout);
        assert_eq!(classify(&io(io::ErrorKind::ConnectionReset)), ErrorKind::Unreachable);
        assert_eq!(classify(&io(io::ErrorKind::UnexpectedEof)), ErrorKind::Unreachable);
        assert_eq!(classify(&MemcacheError::CommandError(CommandError::ValueTooLarge)), ErrorKind::ValueTooLarge);
        let ascii_too_large = ServerError::Error("SERVER_ERROR object too large for cache\r\n".into());
        assert_eq!(classify(&MemcacheError::ServerError(ascii_too_large)), ErrorKind::ValueTooLarge);
        assert_eq!(
            classify(&MemcacheError::CommandError(CommandError::AuthenticationRequired)),
            ErrorKind::Authentication
        );
        let unauthenticated = ClientError::Error("CLIENT_ERROR unauthenticated\r\n".into());
        assert_eq!(classify(&MemcacheError::ClientError(unauthenticated)), ErrorKind::Authentication);
        assert_eq!(classify(&MemcacheError::ServerError(ServerError::BadMagic(0))), ErrorKind::Protocol);
    }

    #[test]
    fn a_server_that_answered_keeps_its_connection_and_a_broken_exchange_does_not() {
        assert!(!leaves_connection_unusable(&MemcacheError::CommandError(CommandError::KeyExists)));
        assert!(!leaves_connection_unusable(&MemcacheError::CommandError(CommandError::ValueTooLarge)));
        assert!(leaves_connection_unusable(&MemcacheError::IOError(io::ErrorKind::WouldBlock.into())));
        assert!(leaves_connection_unusable(&MemcacheError::ServerError(ServerError::BadMagic(0))));
    }

    fn unreachable_store() -> Memcached {
        // Port 1 on loopback: nothing listens there.
        let url: StoreUrl = "memcached://127.0.0.1:1".parse().unwrap();
        let options = MemcachedOptions { timeout: Duration::from_millis(200), ..Default::default() };
        Memcached::new(&url, options).unwrap()
    }

    #[test]
    fn invalid_keys_are_refused_before_touching_the_network() {
        let store = unreachable_store();
        let error = store.set("two words", b"v", Expiry::NEVER).unwrap_err();
        assert_eq!(
            (error.kind(), error.server(), error.operation()),
            (ErrorKind::InvalidKey, "127.0.0.1:1", Operation::Set)
        );
        let multi = store.get_multi(&["bad key".to_string()]);
        assert_eq!(multi.failures.len(), 1);
        assert_eq!(multi.failures[0].error.kind(), ErrorKind::InvalidKey);
        assert_eq!(multi.failures[0].keys, ["bad key"]);
    }

    #[test]
    fn a_zero_cas_token_is_refused_because_the_binary_protocol_would_set_unconditionally() {
        let error = unreachable_store().cas("key", b"v", 0, Expiry::NEVER).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        let url: StoreUrl = "memcached://127.0.0.1:1".parse().unwrap();
        let options = MemcachedOptions { timeout: Duration::ZERO, ..Default::default() };
        assert!(matches!(Memcached::new(&url, options), Err(MemcachedConfigError::ZeroTimeout)));
    }

    #[test]
    fn construction_succeeds_and_calls_fail_as_unavailable_while_nothing_listens() {
        let store = unreachable_store();
        let started = std::time::Instant::now();
        let error = store.gets("key").unwrap_err();
        assert!(error.is_unavailable(), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    }
}
