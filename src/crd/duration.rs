//! Durations as the original CRDs and READMEs wrote them: int64 nanoseconds (the Go
//! `time.Duration` the original CRD schema exposed) or Go-style strings such as `1m` or `1h30m`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// A duration field that accepts both spellings existing manifests use: an integer count of
/// nanoseconds (what the original CRD schema declared) or a Go-style string such as `300ms`,
/// `30s`, `10m`, `1h30m`, `1.5h` or `2d` (what the README documented).
///
/// The value is kept as written so that serializing it back gives the user's own spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoDuration {
    /// An integer number of nanoseconds.
    Nanoseconds(i64),
    /// A duration string, parsed on demand by [`parse_duration`].
    Text(String),
}

impl GoDuration {
    /// The duration this value denotes.
    pub fn as_duration(&self) -> Result<Duration, DurationError> {
        match self {
            GoDuration::Nanoseconds(nanos) => u64::try_from(*nanos)
                .map(Duration::from_nanos)
                .map_err(|_| DurationError::Negative { input: nanos.to_string() }),
            GoDuration::Text(text) => parse_duration(text),
        }
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoDuration::Nanoseconds(nanos) => write!(f, "{nanos}ns"),
            GoDuration::Text(text) => f.write_str(text),
        }
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        GoDuration::Text(text.to_owned())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GoDuration::Nanoseconds(nanos) => serializer.serialize_i64(*nanos),
            GoDuration::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(GoDurationVisitor)
    }
}

struct GoDurationVisitor;

impl Visitor<'_> for GoDurationVisitor {
    type Value = GoDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer number of nanoseconds or a duration string such as \"1m30s\"")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<GoDuration, E> {
        Ok(GoDuration::Nanoseconds(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<GoDuration, E> {
        i64::try_from(value)
            .map(GoDuration::Nanoseconds)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<GoDuration, E> {
        Ok(GoDuration::Text(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<GoDuration, E> {
        Ok(GoDuration::Text(value))
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
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

/// Fraction digits beyond this many cannot change the result by a nanosecond, even in days.
const MAX_FRACTION_DIGITS: u32 = 18;

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
        let mut fraction: u128 = 0;
        let mut fraction_scale: u128 = 1;
        for digit in frac_digits.bytes().take(MAX_FRACTION_DIGITS as usize) {
            fraction = fraction * 10 + u128::from(digit - b'0');
            fraction_scale *= 10;
        }
        let term = whole
            .checked_mul(scale)
            .and_then(|nanos| nanos.checked_add(fraction * scale / fraction_scale))
            .ok_or_else(overflow)?;
        total = total.checked_add(term).ok_or_else(overflow)?;
        rest = after_unit.trim_start();
    }

    if negative && total > 0 {
        return Err(DurationError::Negative { input: input.to_owned() });
    }
    u64::try_from(total).map(Duration::from_nanos).map_err(|_| overflow())
}
