//! What a request may cost before its signature is checked. Anyone can reach the webhook
//! endpoint, so its body is read only under a cap per request and a budget of bytes shared by
//! every request in flight; a stranger's request holds at most that much memory, and only
//! while it is being read and checked.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures::StreamExt;

/// The largest body taken. GitHub's `workflow_job` deliveries are about 8–20 KB (the repository
/// object is most of it), `ping` a few KB; 1 MiB leaves room for very long label lists while a
/// stranger's body stays cheap to read, hash and refuse.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Bodies of GitHub's size draw only on the shared budget; larger ones also on a share of it
/// (`large`), so large bodies can never take the room GitHub-sized deliveries need.
pub const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The bytes every unverified body in flight may hold together, by default.
pub const DEFAULT_BUDGET_BYTES: usize = 32 * 1024 * 1024;

/// Why a body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("payload larger than {} KiB", MAX_BODY_BYTES / 1024)]
    TooLarge,
    #[error("too many payloads are being received at once; retry shortly")]
    Busy,
    #[error("reading the body: {0}")]
    Read(String),
}

/// A count of bytes in use under a limit.
#[derive(Debug)]
struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Self { used: AtomicUsize::new(0), limit }
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The shared budget of unverified body bytes.
#[derive(Debug)]
pub struct Intake {
    all: Budget,
    large: Budget,
}

impl Default for Intake {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET_BYTES)
    }
}

impl Intake {
    /// A budget of `bytes` for every body in flight, three quarters of it open to large ones.
    pub fn new(bytes: usize) -> Self {
        Self { all: Budget::new(bytes), large: Budget::new(bytes / 4 * 3) }
    }

    /// Bytes held by bodies being read or checked now.
    pub fn in_use(&self) -> usize {
        self.all.used.load(Ordering::Acquire)
    }

    /// Reads `body` whole, refusing it as soon as it is known to be over [`MAX_BODY_BYTES`]
    /// (from `Content-Length`, before a byte is read, or as it arrives) or when the budget has
    /// no room for it. The bytes stay counted until the returned [`Held`] is dropped.
    pub async fn read(&self, headers: &HeaderMap, body: Body) -> Result<(Bytes, Held<'_>), BodyError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(BodyError::TooLarge);
        }
        let mut held = Held { intake: self, all: 0, large: 0 };
        if let Some(length) = declared {
            held.grow(usize::try_from(length).unwrap_or(MAX_BODY_BYTES))?;
        }
        let mut collected = Vec::with_capacity(held.all);
        let mut frames = body.into_data_stream();
        while let Some(frame) = frames.next().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            let total = collected.len() + frame.len();
            if total > MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            held.grow(total)?;
            collected.extend_from_slice(&frame);
        }
        Ok((Bytes::from(collected), held))
    }
}

/// Body bytes counted against the [`Intake`] budget until dropped.
#[derive(Debug)]
pub struct Held<'a> {
    intake: &'a Intake,
    all: usize,
    large: usize,
}

impl Held<'_> {
    /// Counts the body as `bytes` long (never less than already counted).
    fn grow(&mut self, bytes: usize) -> Result<(), BodyError> {
        if bytes > self.all {
            if !self.intake.all.try_take(bytes - self.all) {
                return Err(BodyError::Busy);
            }
            self.all = bytes;
        }
        let large = if bytes > SMALL_BODY_BYTES { bytes } else { 0 };
        if large > self.large {
            if !self.intake.large.try_take(large - self.large) {
                return Err(BodyError::Busy);
            }
            self.large = large;
        }
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.intake.all.give(self.all);
        self.intake.large.give(self.large);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(length: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, length.to_string().parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let intake = Intake::default();
        // The body would fail to read: refusing must not have touched it.
        let body = Body::from_stream(futures::stream::once(async { Err::<Bytes, _>(std::io::Error::other("unread")) }));
        let refused = intake.read(&with_length(MAX_BODY_BYTES + 1), body).await;
        assert_eq!(refused.err(), Some(BodyError::TooLarge));
        assert_eq!(intake.in_use(), 0);
    }

    #[tokio::test]
    async fn an_undeclared_body_is_cut_off_once_it_passes_the_cap() {
        let intake = Intake::default();
        let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 * 1024])));
        let refused = intake.read(&HeaderMap::new(), Body::from_stream(futures::stream::iter(chunks))).await;
        assert_eq!(refused.err(), Some(BodyError::TooLarge));
        assert_eq!(intake.in_use(), 0, "nothing stays counted after a refusal");
    }

    #[tokio::test]
    async fn bytes_are_counted_while_held_and_large_bodies_cannot_crowd_out_small_ones() {
        let intake = Intake::new(4 * MAX_BODY_BYTES);
        let big = vec![b'x'; MAX_BODY_BYTES];
        let mut held = Vec::new();
        for _ in 0..3 {
            let (bytes, guard) = intake.read(&with_length(big.len()), Body::from(big.clone())).await.unwrap();
            assert_eq!(bytes.len(), big.len());
            held.push(guard);
        }
        assert_eq!(intake.in_use(), 3 * MAX_BODY_BYTES);
        let fourth = intake.read(&with_length(big.len()), Body::from(big.clone())).await;
        assert_eq!(fourth.err(), Some(BodyError::Busy), "large bodies may take three quarters of the budget");
        let small = vec![b'y'; 8 * 1024];
        let (bytes, _small) = intake.read(&with_length(small.len()), Body::from(small.clone())).await.unwrap();
        assert_eq!(bytes, small, "a GitHub-sized delivery still fits");
        drop(held);
        assert_eq!(intake.in_use(), small.len());
    }
}
