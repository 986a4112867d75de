//! Time on the API (RFC 3339 or Unix seconds) and inside (Unix milliseconds).

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix time in milliseconds; the only time representation inside Cascade.
pub type Millis = i64;

/// Wall-clock now in Unix milliseconds.
pub fn now_millis() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as Millis
}

/// A point in time given by a client: an RFC 3339 string or a number of Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInput(pub Millis);

impl TimeInput {
    pub fn millis(self) -> Millis {
        self.0
    }
}

/// Parses an RFC 3339 string into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 (UTC).
pub fn format_rfc3339(ms: Millis) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The shape of an RFC 3339 timestamp (years from 1970; the parser checks the calendar).
pub const RFC3339_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$";

// Bounds keep arithmetic on timestamps far from overflow: years 1970..=9999.
const MAX_SECONDS: f64 = 253_402_300_799.0;

impl<'de> Deserialize<'de> for TimeInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or a number of Unix seconds")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TimeInput, E> {
                if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
                    return Err(E::custom("Unix seconds out of range (1970..9999)"));
                }
                Ok(TimeInput((v * 1000.0).round() as Millis))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeInput, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeInput, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeInput, E> {
                match parse_rfc3339(v) {
                    Some(ms) if ms >= 0 => Ok(TimeInput(ms)),
                    Some(_) => Err(E::custom("timestamp before 1970")),
                    None => Err(E::custom(format!(
                        "`{v}` is not an RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for TimeInput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(self.0))
    }
}

impl utoipa::PartialSchema for TimeInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .pattern(Some(RFC3339_PATTERN)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0))
                    .maximum(Some(MAX_SECONDS))
                    .description(Some("Unix seconds")),
            )
            .into()
    }
}

impl utoipa::ToSchema for TimeInput {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let a: TimeInput = serde_json::from_str("\"1970-01-01T00:00:10Z\"").expect("rfc");
        let b: TimeInput = serde_json::from_str("10").expect("int");
        let c: TimeInput = serde_json::from_str("10.5").expect("float");
        assert_eq!(a.0, 10_000);
        assert_eq!(b.0, 10_000);
        assert_eq!(c.0, 10_500);
        assert!(serde_json::from_str::<TimeInput>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<TimeInput>("-5").is_err());
        assert_eq!(format_rfc3339(10_000), "1970-01-01T00:00:10Z");
    }
}
