//! Durable state: the sled journal, the single writer that owns it, the board the read API
//! serves from, and shared mode (the memcached client and the sync thread that merges with the
//! other replicas).

pub mod board;
pub mod durable;
pub mod journal;
pub mod memcached;
pub mod shared;
pub mod writer;

pub use board::{Board, ResyncInfo};
// The read API's view lives with the demand it reports; kept here for existing callers.
pub use crate::demand::RunnerDemand;
pub use journal::{Journal, JournalError};
pub use writer::{Recorded, StoreError, StoreHandle, WriterConfig};
