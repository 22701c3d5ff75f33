//! Wall-clock timestamps as RFC 3339 strings (UTC, second precision) in JSON.
//! Only what people read is wall-clock; TTLs and latencies use monotonic time.

/// serde helpers for `SystemTime` as RFC 3339.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `2026-11-25T12:00:00Z`.
    ///
    /// # Errors
    /// Never fails on its own; returns the serializer's error.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    /// Parses an RFC 3339 timestamp.
    ///
    /// # Errors
    /// When the string is not RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

/// serde helpers for `Option<SystemTime>` as RFC 3339 or null.
pub mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `2026-11-25T12:00:00Z` or null.
    ///
    /// # Errors
    /// The serializer's errors.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Parses an RFC 3339 timestamp or null.
    ///
    /// # Errors
    /// When the string is not RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Formats a wall-clock time for people: `2026-11-25T12:00:00Z`.
#[must_use]
pub fn format(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
