//! memcached as the shared store: the `SharedKv` operations on `Memcached`.

use super::client::Memcached;
use super::error::MemcachedError;
use crate::store::shared::{KvError, MultiRead, SharedKv};

fn kv_error(error: MemcachedError) -> KvError {
    KvError { unavailable: error.is_unavailable(), message: error.to_string() }
}

impl SharedKv for Memcached {
    fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, KvError> {
        Memcached::gets(self, key).map_err(kv_error)
    }

    fn add(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        Memcached::add(self, key, value).map_err(kv_error)
    }

    fn cas(&self, key: &str, value: &[u8], token: u64) -> Result<bool, KvError> {
        Memcached::cas(self, key, value, token).map_err(kv_error)
    }

    fn get_multi(&self, keys: &[String]) -> MultiRead {
        let read = Memcached::get_multi(self, keys);
        let mut out = MultiRead {
            values: read.values.into_iter().map(|(key, (value, _))| (key, value)).collect(),
            ..MultiRead::default()
        };
        for failure in read.failures {
            out.failed.extend(failure.keys);
            out.error.get_or_insert_with(|| kv_error(failure.error));
        }
        out
    }

    fn server_of(&self, key: &str) -> usize {
        let server = self.server_for(key);
        self.servers().iter().position(|s| s == server).unwrap_or(0)
    }
}
