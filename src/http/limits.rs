//! The decisions of the accept loop, pure: how many connections a listener may hold, when a
//! connection has stalled for too long, and which one gives up its slot to a newcomer.
//!
//! A connection is *busy* while a request it sent in full is being answered (a webhook waiting
//! for the journal, a KEDA `StreamIsActive` stream): busy connections are never timed out or
//! evicted. Every other connection is *stalled* since some moment: since it was accepted (no
//! request yet: handshaking, idle, or trickling a request head), since its last answer (idle
//! keep-alive), or since a request head arrived whose body is still coming. A stalled connection
//! is closed once its stall exceeds the matching timeout, and when a listener is full the one
//! stalled longest makes room for the newcomer, so idle and trickling clients can never keep a
//! client with a complete request out.

use std::time::{Duration, Instant};

use crate::config::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT, LimitsArgs,
};
/// File descriptors kept out of the connection budget: the journal's files, the memcached pool,
/// the GitHub and Kubernetes clients, the runtime, standard streams.
pub const FD_RESERVE: u64 = 128;

/// How long a client may take over each step, and how many connections a listener holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once by one listener (handshakes included).
    pub max_connections: usize,
    /// From accept to a completed TLS handshake.
    pub handshake_timeout: Duration,
    /// From accept to the first complete request head.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight (nor a complete head of the next one)
    /// is closed after this.
    pub idle_timeout: Duration,
    /// From a request head to the end of its body.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

impl From<&LimitsArgs> for Limits {
    /// The limits of every listener, before the cap is fitted to the open-files limit.
    fn from(args: &LimitsArgs) -> Self {
        Self {
            max_connections: args.max_connections,
            handshake_timeout: args.tls_handshake_timeout,
            header_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            body_timeout: args.body_read_timeout,
        }
    }
}

/// The per-listener cap: `wanted`, lowered so that `listeners` full listeners plus
/// [`FD_RESERVE`] stay within the open-files limit (`None`: unlimited or unknown). At least one.
pub fn connection_cap(wanted: usize, listeners: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return wanted.max(1);
    };
    let listeners = u64::try_from(listeners.max(1)).unwrap_or(u64::MAX);
    let budget = usize::try_from(limit.saturating_sub(FD_RESERVE) / listeners).unwrap_or(usize::MAX);
    wanted.min(budget).max(1)
}

/// The soft "Max open files" limit from the text of `/proc/self/limits`; `None` when unlimited
/// or not found.
pub fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// This process's soft open-files limit, read without `unsafe` from `/proc/self/limits`
/// (Linux); `None` elsewhere or when unlimited.
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_open_files_limit)
}

/// Where one connection stands; updated by the connection as requests come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub accepted: Instant,
    /// Requests whose head arrived and whose answer is not yet sent in full.
    pub active: u32,
    /// Of those, the ones whose body is still arriving.
    pub reading: u32,
    /// When `reading` last went from zero to one.
    pub reading_since: Option<Instant>,
    /// Requests answered in full.
    pub served: u64,
    /// When `active` last fell to zero (the accept time before the first request).
    pub idle_since: Instant,
}

/// Why a stalled connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No complete request head within the header timeout of the accept.
    NoRequest,
    /// Kept alive without a request for the idle timeout.
    Idle,
    /// A request body did not arrive whole within the body timeout.
    SlowBody,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRequest => "no complete request in time",
            Self::Idle => "idle",
            Self::SlowBody => "request body too slow",
        }
    }
}

impl Progress {
    pub fn new(now: Instant) -> Self {
        Self { accepted: now, active: 0, reading: 0, reading_since: None, served: 0, idle_since: now }
    }

    /// Whether a request received in full is being answered.
    pub fn busy(&self) -> bool {
        self.active > self.reading
    }

    /// Since when nothing moved forward; `None` while busy.
    pub fn stalled_since(&self) -> Option<Instant> {
        if self.busy() {
            None
        } else if self.reading > 0 {
            self.reading_since.or(Some(self.idle_since))
        } else {
            Some(self.idle_since)
        }
    }

    /// Whether the connection has stalled past its timeout at `now`.
    pub fn expired(&self, now: Instant, limits: &Limits) -> Option<Expiry> {
        let since = self.stalled_since()?;
        let stalled = now.saturating_duration_since(since);
        let (limit, expiry) = if self.reading > 0 {
            (limits.body_timeout, Expiry::SlowBody)
        } else if self.served == 0 {
            (limits.header_timeout, Expiry::NoRequest)
        } else {
            (limits.idle_timeout, Expiry::Idle)
        };
        (stalled >= limit).then_some(expiry)
    }
}

/// The connection that makes room for a newcomer on a full listener: the one stalled longest
/// (on a tie, one that never completed a request); `None` when every connection is busy.
pub fn victim<K>(connections: impl IntoIterator<Item = (K, Progress)>) -> Option<K> {
    connections
        .into_iter()
        .filter_map(|(key, progress)| Some((progress.stalled_since()?, progress.served > 0, key)))
        .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .map(|(_, _, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n";

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc_limits() {
        assert_eq!(parse_open_files_limit(LIMITS), Some(1024));
        assert_eq!(parse_open_files_limit(&LIMITS.replace("1024 ", "unlimited ")), None);
        assert_eq!(parse_open_files_limit("Max cpu time unlimited unlimited seconds"), None);
    }

    #[test]
    fn the_cap_leaves_room_for_every_listener_and_the_reserve_under_the_open_files_limit() {
        assert_eq!(connection_cap(512, 1, None), 512);
        assert_eq!(connection_cap(512, 1, Some(1_048_576)), 512);
        assert_eq!(connection_cap(512, 1, Some(1024)), 512);
        assert_eq!(connection_cap(512, 3, Some(1024)), (1024 - 128) / 3);
        assert_eq!(connection_cap(512, 1, Some(256)), 128);
        assert_eq!(connection_cap(512, 2, Some(100)), 1, "never zero");
    }

    #[test]
    fn a_connection_that_never_sends_a_request_expires_after_the_header_timeout() {
        let start = Instant::now();
        let limits = Limits::default();
        let fresh = Progress::new(start);
        assert_eq!(fresh.expired(at(start, 9), &limits), None);
        assert_eq!(fresh.expired(at(start, 10), &limits), Some(Expiry::NoRequest));
    }

    #[test]
    fn a_kept_alive_connection_expires_after_the_idle_timeout_and_a_busy_one_never() {
        let start = Instant::now();
        let limits = Limits::default();
        let idle = Progress { served: 3, idle_since: at(start, 100), ..Progress::new(start) };
        assert_eq!(idle.expired(at(start, 159), &limits), None);
        assert_eq!(idle.expired(at(start, 160), &limits), Some(Expiry::Idle));
        let streaming = Progress { active: 1, ..idle };
        assert_eq!(streaming.expired(at(start, 100_000), &limits), None);
    }

    #[test]
    fn a_body_that_does_not_arrive_in_time_expires_from_the_moment_its_head_arrived() {
        let start = Instant::now();
        let limits = Limits::default();
        let trickling = Progress { active: 1, reading: 1, reading_since: Some(at(start, 5)), ..Progress::new(start) };
        assert_eq!(trickling.expired(at(start, 14), &limits), None);
        assert_eq!(trickling.expired(at(start, 15), &limits), Some(Expiry::SlowBody));
    }

    #[test]
    fn the_newcomer_replaces_the_connection_stalled_longest_and_never_a_busy_one() {
        let start = Instant::now();
        let busy = Progress { active: 1, ..Progress::new(start) };
        let idle_long = Progress { served: 1, idle_since: at(start, 1), ..Progress::new(start) };
        let trickling =
            Progress { active: 1, reading: 1, reading_since: Some(at(start, 2)), ..Progress::new(at(start, 2)) };
        let fresh = Progress::new(at(start, 3));
        let all = [("busy", busy), ("fresh", fresh), ("trickling", trickling), ("idle", idle_long)];
        assert_eq!(victim(all), Some("idle"));
        assert_eq!(victim([("busy", busy), ("fresh", fresh), ("trickling", trickling)]), Some("trickling"));
        assert_eq!(victim([("busy", busy)]), None);
    }

    #[test]
    fn on_a_tie_the_connection_that_never_completed_a_request_goes_first() {
        let start = Instant::now();
        let served = Progress { served: 1, idle_since: start, ..Progress::new(start) };
        let never = Progress::new(start);
        assert_eq!(victim([("served", served), ("never", never)]), Some("never"));
    }
}
