//! Durations as the original CRDs and READMEs wrote them: int64 nanoseconds (the Go
//! `time.Duration` the original CRD schema exposed) or Go-style strings such as `1m` or `1h30m`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// The grammar is the command line's too; it lives with the flags so that config imports nothing.
pub use crate::config::duration::{DurationError, parse_duration};

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
