//! The `--store` URL: which memcached servers hold the shared demand.

use std::fmt;
use std::str::FromStr;

/// Port memcached listens on when the store URL names a host without one.
pub const DEFAULT_PORT: u16 = 11211;

/// The memcached servers of the shared store, parsed from
/// `memcached://HOST:PORT[,HOST:PORT…]` (`memcache://` is accepted too).
///
/// The order is kept, although the [`Ring`](super::Ring) does not depend on it. A host without a port gets
/// [`DEFAULT_PORT`]; IPv6 addresses need brackets (`[::1]:11211`). Credentials are refused here
/// so that a URL can be logged: they come from [`Credentials`](super::Credentials).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
