//! GitHub's rate-limit headers, and how long an answer tells us to wait.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The least GitHub asks us to wait after a secondary limit that names no time.
pub const SECONDARY_MIN_WAIT: Duration = Duration::from_secs(60);

/// The `X-RateLimit-*` headers of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub used: u64,
    /// When the window resets, in Unix seconds.
    pub reset: i64,
    /// `core`, `search`, …
    pub resource: Option<String>,
}

impl RateLimit {
    /// The rate limit an answer reports; `None` without `X-RateLimit-Remaining`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let remaining = header_number(headers, "x-ratelimit-remaining")?;
        Some(Self {
            limit: header_number(headers, "x-ratelimit-limit").unwrap_or(0),
            remaining,
            used: header_number(headers, "x-ratelimit-used").unwrap_or(0),
            reset: header_str(headers, "x-ratelimit-reset").and_then(|v| v.parse().ok()).unwrap_or(0),
            resource: header_str(headers, "x-ratelimit-resource").map(str::to_string),
        })
    }

    /// How long from `now` (Unix seconds) until the window resets; zero once it has.
    pub fn resets_in(&self, now: i64) -> Duration {
        Duration::from_secs(u64::try_from(self.reset.saturating_sub(now)).unwrap_or(0))
    }
}

/// Whether an answer is a rate limit, how long to wait and whether it is a secondary limit,
/// following GitHub's "Rate limits for the REST API" (*Exceeding the rate limit*):
/// 1. a `Retry-After` header wins (seconds, or an HTTP date);
/// 2. else `X-RateLimit-Remaining: 0` means wait until `X-RateLimit-Reset` (Unix seconds);
/// 3. else a 429, or a 403 whose message speaks of a rate limit, waits at least a minute.
///
/// A 403 with none of these is a permission problem, not a limit: `None`. Waits are at least a
/// second, so a zero or past time never turns into a busy loop. `now` is Unix seconds.
pub fn rate_limit_wait(status: u16, headers: &HeaderMap, message: &str, now: i64) -> Option<(Duration, bool)> {
    if status != 403 && status != 429 {
        return None;
    }
    let message = message.to_ascii_lowercase();
    let says_secondary = message.contains("secondary rate limit") || message.contains("abuse");
    let says_limit = says_secondary || message.contains("rate limit");
    let exhausted = RateLimit::from_headers(headers).filter(|rate| rate.remaining == 0);
    let at_least_a_second = |wait: Duration| wait.max(Duration::from_secs(1));
    if let Some(wait) = header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now)) {
        // Retry-After is how GitHub sets a secondary-limit pause; only an exhausted primary
        // quota that does not call itself secondary counts as primary.
        return Some((at_least_a_second(wait), says_secondary || exhausted.is_none()));
    }
    if let Some(rate) = exhausted {
        let wait = if rate.reset > 0 { rate.resets_in(now) } else { SECONDARY_MIN_WAIT };
        return Some((at_least_a_second(wait), says_secondary));
    }
    (status == 429 || says_limit).then_some((SECONDARY_MIN_WAIT, true))
}

fn parse_retry_after(value: &str, now: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(value).ok()?;
    Some(Duration::from_secs(u64::try_from(at.as_second().saturating_sub(now)).unwrap_or(0)))
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn rate_limit_headers_parse() {
        let rate = RateLimit::from_headers(&headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4987"),
            ("x-ratelimit-used", "13"),
            ("x-ratelimit-reset", "1767225600"),
            ("x-ratelimit-resource", "core"),
        ]))
        .unwrap();
        assert_eq!(
            rate,
            RateLimit { limit: 5000, remaining: 4987, used: 13, reset: 1_767_225_600, resource: Some("core".into()) }
        );
        assert_eq!(rate.resets_in(1_767_225_570), Duration::from_secs(30));
        assert_eq!(rate.resets_in(1_767_225_700), Duration::ZERO);
        assert_eq!(RateLimit::from_headers(&headers(&[("x-ratelimit-limit", "5000")])), None);
    }

    #[test]
    fn retry_after_wins_and_marks_a_secondary_limit() {
        let h = headers(&[("retry-after", "7"), ("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limit_wait(403, &h, "", 0), Some((Duration::from_secs(7), true)));
        let h = headers(&[("retry-after", "Thu, 01 Jan 1970 00:01:40 GMT")]);
        assert_eq!(rate_limit_wait(429, &h, "", 70), Some((Duration::from_secs(30), true)));
        assert_eq!(
            rate_limit_wait(429, &headers(&[("retry-after", "0")]), "", 0),
            Some((Duration::from_secs(1), true))
        );
    }

    #[test]
    fn an_exhausted_quota_waits_for_its_reset() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")]);
        assert_eq!(
            rate_limit_wait(403, &h, "API rate limit exceeded for user ID 1.", 1000),
            Some((Duration::from_secs(30), false))
        );
        // A reset already past (clock skew) still pauses a moment rather than not at all.
        assert_eq!(rate_limit_wait(429, &h, "", 2000), Some((Duration::from_secs(1), false)));
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1030")]);
        let message = "You have exceeded a secondary rate limit. Please wait a few minutes.";
        assert_eq!(rate_limit_wait(403, &h, message, 1000), Some((Duration::from_secs(30), true)));
    }

    #[test]
    fn a_secondary_limit_without_headers_waits_a_minute() {
        assert_eq!(rate_limit_wait(429, &HeaderMap::new(), "", 0), Some((SECONDARY_MIN_WAIT, true)));
        let message = "You have exceeded a secondary rate limit and have been temporarily blocked.";
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limit_wait(403, &h, message, 0), Some((SECONDARY_MIN_WAIT, true)));
    }

    #[test]
    fn a_plain_forbidden_is_no_rate_limit() {
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limit_wait(403, &h, "Resource not accessible by integration", 0), None);
        assert_eq!(rate_limit_wait(500, &headers(&[("retry-after", "5")]), "", 0), None);
    }
}
