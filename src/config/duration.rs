//! Durations as flags and manifests write them: Go-style strings such as `300ms`, `1h30m` or
//! `4d`. The CRD types parse their duration fields with the same grammar.

use std::time::Duration;

/// Why a duration could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text was empty or only whitespace.
    #[error("a duration cannot be empty")]
    Empty,
    /// A number was not followed by a unit (only a bare `0` may omit it).
    #[error("missing unit in duration {input:?} (use ns, us, ms, s, m, h or d)")]
    MissingUnit {
        /// The text that was parsed.
        input: String,
    },
    /// A unit was not one this parser knows.
    #[error("unknown unit {unit:?} in duration {input:?} (use ns, us, ms, s, m, h or d)")]
    UnknownUnit {
        /// The unrecognised unit.
        unit: String,
        /// The text that was parsed.
        input: String,
    },
    /// Something other than a number stood where a number was expected.
    #[error("invalid number in duration {input:?}")]
    InvalidNumber {
        /// The text that was parsed.
        input: String,
    },
    /// The duration was negative; waits and windows cannot be.
    #[error("duration {input:?} is negative")]
    Negative {
        /// The text (or nanosecond count) that was parsed.
        input: String,
    },
    /// The duration does not fit in 2^64 nanoseconds (about 584 years).
    #[error("duration {input:?} is too large")]
    Overflow {
        /// The text that was parsed.
        input: String,
    },
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Nanoseconds in one `unit`: Go's units, `d` for days, and the long names the README used.
fn unit_nanos(unit: &str) -> Option<u128> {
    let nanos = match unit {
        "ns" | "nsec" | "nsecs" => 1,
        "us" | "µs" | "μs" | "usec" | "usecs" => 1_000,
        "ms" | "msec" | "msecs" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SECOND,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_SECOND,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * NANOS_PER_SECOND,
        "d" | "day" | "days" => 86_400 * NANOS_PER_SECOND,
        _ => return None,
    };
    Some(nanos)
}

/// Parses a Go-style duration: one or more `<number><unit>` terms, e.g. `300ms`, `1h30m`,
/// `1.5h`, plus `d` for days. Spaces between terms and before a unit are allowed, as are the
/// long unit names the README used (`20 mins`, `20 days`). A bare `0` needs no unit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::InvalidNumber { input: input.to_owned() };
    let overflow = || DurationError::Overflow { input: input.to_owned() };

    let mut total: u128 = 0;
    let mut rest = body.trim_start();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }

        let after_space = after_number.trim_start();
        let unit_len = after_space
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after_space.len());
        let (unit, after_unit) = after_space.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { input: input.to_owned() });
        }
        let scale = unit_nanos(unit)
            .ok_or_else(|| DurationError::UnknownUnit { unit: unit.to_owned(), input: input.to_owned() })?;

        let whole =
            int_digits.bytes().try_fold(0u128, |acc, digit| acc.checked_mul(10)?.checked_add(u128::from(digit - b'0')));
        let whole = whole.ok_or_else(overflow)?;
        // The fraction's nanoseconds, rounded down, read from its last digit back: each step is
        // exact (floor((d + y) / 10) == floor((d + floor(y)) / 10) for a whole d) and stays under
        // `scale`, so every digit counts and none can overflow.
        let fraction =
            frac_digits.bytes().rev().fold(0u128, |below, digit| (u128::from(digit - b'0') * scale + below) / 10);
        let term = whole.checked_mul(scale).and_then(|nanos| nanos.checked_add(fraction)).ok_or_else(overflow)?;
        total = total.checked_add(term).ok_or_else(overflow)?;
        rest = after_unit.trim_start();
    }

    if negative && total > 0 {
        return Err(DurationError::Negative { input: input.to_owned() });
    }
    u64::try_from(total).map(Duration::from_nanos).map_err(|_| overflow())
}
