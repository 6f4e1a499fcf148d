//! What went wrong with a memcached call, classified by what can be done about it.

use std::fmt;
use std::io;

use memcache::{ClientError, CommandError, MemcacheError, ServerError};

/// The memcached operation that failed, for messages and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Gets,
    GetMulti,
    Add,
    Cas,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Gets => "gets",
            Operation::GetMulti => "get_multi",
            Operation::Add => "add",
            Operation::Cas => "cas",
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
    pub(super) server: String,
    pub(super) operation: Operation,
    pub(super) kind: ErrorKind,
    pub(super) cause: String,
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
}

/// Maps a `memcache` crate error onto our kinds. The crate reports connect failures as an r2d2
/// pool timeout whose text carries the last connect error, hence the text matching.
pub(super) fn classify(error: &MemcacheError) -> ErrorKind {
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
pub(super) fn leaves_connection_unusable(error: &MemcacheError) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
