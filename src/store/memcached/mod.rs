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

mod client;
mod credentials;
mod error;
mod ring;
mod shared_kv;
mod store_url;

pub use client::{Memcached, MemcachedConfigError, MemcachedOptions, MultiGet, MultiGetFailure, Protocol};
pub use credentials::{Credentials, CredentialsError};
pub use error::{ErrorKind, MemcachedError, Operation};
pub use ring::Ring;
pub use store_url::{DEFAULT_PORT, StoreUrl, StoreUrlError};
