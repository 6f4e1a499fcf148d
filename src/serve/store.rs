//! The journal in `--data-dir` and, with `--store memcached://…`, the demand shared with every
//! replica.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::ServeError;
use crate::config::StoreArgs;
use crate::store::WriterConfig;
use crate::store::memcached::{Credentials, Memcached, MemcachedOptions, StoreUrl, StoreUrlError};
use crate::store::shared::SyncConfig;
use crate::store::writer::SharedSetup;

/// Creates the data directory and configures the writer, shared store included.
pub(super) fn writer_config(args: &StoreArgs) -> Result<WriterConfig, ServeError> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| ServeError::DataDir { path: args.data_dir.display().to_string(), source })?;
    Ok(WriterConfig { shared: shared_store(args)?, ..WriterConfig::from(args) })
}

/// The shared store from `--store`, or `None` for the embedded one.
fn shared_store(args: &StoreArgs) -> Result<Option<SharedSetup>, ServeError> {
    let store = args.store.trim();
    if store.is_empty() || store == "sled" {
        return Ok(None);
    }
    let url: StoreUrl = store.parse().map_err(|e: StoreUrlError| ServeError::Store(e.to_string()))?;
    let credentials = match &args.memcached_user {
        None => None,
        Some(user) => {
            let password = memcached_password(args)?;
            Some(
                Credentials::new(user.clone(), password.expose_secret().to_owned())
                    .map_err(|e| ServeError::Store(e.to_string()))?,
            )
        }
    };
    let options = MemcachedOptions { credentials, ..MemcachedOptions::default() };
    let memcached = Memcached::new(&url, options).map_err(|e| ServeError::Store(e.to_string()))?;
    tracing::info!(servers = ?memcached.servers(), "demand shared through memcached");
    Ok(Some(SharedSetup { kv: Arc::new(memcached), config: SyncConfig::from(args) }))
}

/// `--memcached-password-file`, else `GAA_MEMCACHED_PASSWORD`.
fn memcached_password(args: &StoreArgs) -> Result<SecretString, ServeError> {
    match (&args.memcached_password_file, &args.memcached_password) {
        (Some(path), _) => Ok(SecretString::from(
            std::fs::read_to_string(path)
                .map_err(|e| ServeError::Store(format!("reading {}: {e}", path.display())))?
                .trim_end_matches(['\n', '\r']),
        )),
        (None, Some(password)) => Ok(password.clone()),
        (None, None) => {
            Err(ServeError::Store("--memcached-user needs --memcached-password-file or GAA_MEMCACHED_PASSWORD".into()))
        }
    }
}
