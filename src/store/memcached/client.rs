//! Blocking memcached calls routed through the ring, one connection per server.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use memcache::{CommandError, ConnectionManager, MemcacheError, Url};
use secrecy::{ExposeSecret, SecretString};

use super::credentials::Credentials;
use super::error::{ErrorKind, MemcachedError, Operation, classify, leaves_connection_unusable};
use super::ring::Ring;
use super::store_url::StoreUrl;

/// memcached refuses longer keys.
const MAX_KEY_LEN: usize = 250;

/// Keys per multi-get request: the binary protocol writes every request before reading any
/// answer, so an unbounded batch could fill both socket buffers and stall until the timeout.
const MULTI_GET_BATCH: usize = 100;

/// Items never expire: a repository's value lives until memcached evicts it or restarts.
const NEVER_EXPIRES: u32 = 0;

/// Longest server-provided text kept in an error.
const MAX_CAUSE_LEN: usize = 200;

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
            password: options.credentials.as_ref().map(|c| c.password().clone()),
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
    pub fn add(&self, key: &str, value: &[u8]) -> Result<bool, MemcachedError> {
        let node = self.node_for(key, Operation::Add)?;
        if self.protocol == Protocol::Ascii {
            return Err(self.refuse(
                node,
                Operation::Add,
                ErrorKind::Unsupported,
                "the memcache crate's ASCII add cannot tell NOT_STORED from STORED",
            ));
        }
        self.call(node, Operation::Add, |client| match client.add(key, value, NEVER_EXPIRES) {
            Ok(()) => Ok(true),
            Err(MemcacheError::CommandError(CommandError::KeyExists)) => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// Replaces the value only if it is unchanged since [`Memcached::gets`] returned `token`:
    /// `Ok(false)` when another writer got there first or the key is gone.
    pub fn cas(&self, key: &str, value: &[u8], token: u64) -> Result<bool, MemcachedError> {
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
        self.call(node, Operation::Cas, |client| client.cas(key, value, NEVER_EXPIRES, token))
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
    fn keys_that_would_break_the_ascii_protocol_are_invalid() {
        assert!(check_key("demand/acme/api/linux").is_ok());
        assert!(check_key(&"k".repeat(250)).is_ok());
        for key in ["", "a b", "a\r\nflush_all", "tab\t", "del\u{7f}", &"k".repeat(251)] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
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
        let error = store.add("two words", b"v").unwrap_err();
        assert_eq!(
            (error.kind(), error.server(), error.operation()),
            (ErrorKind::InvalidKey, "127.0.0.1:1", Operation::Add)
        );
        let multi = store.get_multi(&["bad key".to_string()]);
        assert_eq!(multi.failures.len(), 1);
        assert_eq!(multi.failures[0].error.kind(), ErrorKind::InvalidKey);
        assert_eq!(multi.failures[0].keys, ["bad key"]);
    }

    #[test]
    fn a_zero_cas_token_is_refused_because_the_binary_protocol_would_set_unconditionally() {
        let error = unreachable_store().cas("key", b"v", 0).unwrap_err();
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
