//! Durable state: the sled journal, the single writer that owns it, the board the read API
//! serves from, and shared mode (the memcached client and the sync thread that merges with the
//! other replicas).

pub mod board;
pub mod durable;
pub mod journal;
pub mod memcached;
pub mod shared;
pub mod writer;

pub use board::{Board, Registrations, ResyncInfo};
// The read API's view lives with the demand it reports; kept here for existing callers.
pub use journal::{Journal, JournalError};
pub use writer::{Recorded, StoreError, StoreHandle, WriterConfig};

impl From<&crate::config::StoreArgs> for WriterConfig {
    /// The writer's timings; the shared store (`--store`) is set up by the caller.
    fn from(args: &crate::config::StoreArgs) -> Self {
        Self {
            checkpoint_every: args.checkpoint_interval,
            commit_delay: args.commit_delay,
            retention: args.journal_retention,
            ..Self::default()
        }
    }
}

impl From<&crate::config::StoreArgs> for shared::SyncConfig {
    fn from(args: &crate::config::StoreArgs) -> Self {
        Self { prefix: args.store_prefix.clone(), refresh_every: args.store_refresh_interval, ..Self::default() }
    }
}
