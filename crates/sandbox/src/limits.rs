//! The Track API's limits and the messages it answers with when one is broken.
//!
//! Kept apart from the destination's own checks on purpose: the sandbox models the service, so a
//! mistake in the client's checks shows up as a rejection here.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub const MAX_ID_BYTES: usize = 150;
/// A device token (not a documented limit: the sandbox's own, to catch runaway values).
pub const MAX_DEVICE_TOKEN_BYTES: usize = 1000;
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 150;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1000;
pub const MAX_ATTRIBUTES: usize = 300;
pub const MAX_EVENT_NAME_BYTES: usize = 100;
pub const MAX_EVENT_DATA_BYTES: usize = 100_000;
/// A v2 entity request or one batch item must not be larger than this.
pub const MAX_ITEM_BYTES: usize = 32_000;
/// A v2 batch request must be smaller than this.
pub const MAX_BATCH_BYTES: usize = 500_000;
/// Timestamps at or above this are taken for milliseconds (the year 5138 in seconds).
pub const MILLISECONDS_THRESHOLD: i64 = 100_000_000_000;

/// One broken rule: the field it concerns and a message in Customer.io's words.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The size in bytes that a value counts for: a string's UTF-8 length, otherwise its JSON text.
pub fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Bool(true) | Value::Null => 4,
        Value::Bool(false) => 5,
        other => serde_json::to_string(other).map(|s| s.len()).unwrap_or(0),
    }
}

/// Checks identify attributes against the attribute limits.
pub fn check_attributes(attrs: &Map<String, Value>) -> Result<(), Violation> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(Violation::new(
            "too_many",
            "attributes",
            format!("cannot identify more than {MAX_ATTRIBUTES} attributes in one request"),
        ));
    }
    for (name, value) in attrs {
        if name.len() > MAX_ATTRIBUTE_NAME_BYTES {
            return Err(Violation::new(
                "too_long",
                format!("attributes.{name}"),
                format!("attribute name cannot be longer than {MAX_ATTRIBUTE_NAME_BYTES} bytes"),
            ));
        }
        if value_bytes(value) > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(Violation::new(
                "too_long",
                format!("attributes.{name}"),
                format!(
                    "value for attribute '{name}' cannot be longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
                ),
            ));
        }
    }
    Ok(())
}

/// Attributes as they arrived: each name with its value's JSON text, in order.
pub struct RawEntries<'a>(pub Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawEntries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RawEntries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, v)) =
                    m.next_entry::<std::borrow::Cow<'de, str>, &'de RawValue>()?
                {
                    out.push((k, v));
                }
                Ok(RawEntries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The same checks as [`check_attributes`], on attributes still in their JSON text.
pub fn check_raw_attributes(entries: &RawEntries<'_>) -> Result<(), Violation> {
    // A name given twice counts once, as in a parsed object.
    let count = if entries.0.len() > MAX_ATTRIBUTES {
        entries
            .0
            .iter()
            .map(|(n, _)| n.as_ref())
            .collect::<std::collections::HashSet<_>>()
            .len()
    } else {
        entries.0.len()
    };
    if count > MAX_ATTRIBUTES {
        return Err(Violation::new(
            "too_many",
            "attributes",
            format!("cannot identify more than {MAX_ATTRIBUTES} attributes in one request"),
        ));
    }
    for (name, raw) in &entries.0 {
        if name.len() > MAX_ATTRIBUTE_NAME_BYTES {
            return Err(Violation::new(
                "too_long",
                format!("attributes.{name}"),
                format!("attribute name cannot be longer than {MAX_ATTRIBUTE_NAME_BYTES} bytes"),
            ));
        }
        // A string's text bounds its size from above; other values are measured as the general
        // path measures them (their JSON written anew, where `1e2` becomes `100.0`) once their
        // text is long enough for that to matter.
        let text = raw.get();
        let long = if text.starts_with('"') {
            text.len() > MAX_ATTRIBUTE_VALUE_BYTES
        } else {
            text.len() * 5 > MAX_ATTRIBUTE_VALUE_BYTES
        };
        if long {
            let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if value_bytes(&value) > MAX_ATTRIBUTE_VALUE_BYTES {
                return Err(Violation::new(
                    "too_long",
                    format!("attributes.{name}"),
                    format!(
                        "value for attribute '{name}' cannot be longer than {MAX_ATTRIBUTE_VALUE_BYTES} bytes"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a person identifier value (`id` or `email`).
pub fn check_identifier(field: &str, value: &str) -> Result<(), Violation> {
    if value.trim().is_empty() {
        return Err(Violation::new(
            "required",
            field,
            format!("{field} attribute must be present"),
        ));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(Violation::new(
            "too_long",
            field,
            format!("{field} cannot be longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    if field == "email" && !is_email(value) {
        return Err(Violation::new(
            "invalid",
            field,
            format!("{value:?} is not a valid email address"),
        ));
    }
    Ok(())
}

/// An email address as Customer.io accepts one: `local@domain.tld`, no spaces.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !s.chars().any(char::is_whitespace)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|p| !p.is_empty())
}

/// Checks an event's name, data, dedup id and timestamp.
pub fn check_event(
    name: Option<&Value>,
    data: Option<&Value>,
    data_field: &str,
    id: Option<&Value>,
    timestamp: Option<&Value>,
) -> Result<(), Violation> {
    let name = match name {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(Violation::new(
                "invalid",
                "name",
                "event name must be a string",
            ))
        }
        None => {
            return Err(Violation::new(
                "required",
                "name",
                "event name must not be blank",
            ))
        }
    };
    if name.trim().is_empty() {
        return Err(Violation::new(
            "required",
            "name",
            "event name must not be blank",
        ));
    }
    if name.len() > MAX_EVENT_NAME_BYTES {
        return Err(Violation::new(
            "too_long",
            "name",
            format!("event name cannot be longer than {MAX_EVENT_NAME_BYTES} bytes"),
        ));
    }
    match data {
        None | Some(Value::Null) => {}
        Some(d @ Value::Object(_)) => {
            let len = serde_json::to_string(d).map(|s| s.len()).unwrap_or(0);
            if len > MAX_EVENT_DATA_BYTES {
                return Err(Violation::new(
                    "too_long",
                    data_field,
                    format!("event data cannot be longer than {MAX_EVENT_DATA_BYTES} bytes"),
                ));
            }
        }
        Some(_) => {
            return Err(Violation::new(
                "invalid",
                data_field,
                "event data must be a hash",
            ))
        }
    }
    match id {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if is_ulid(s) => {}
        Some(_) => {
            return Err(Violation::new(
                "invalid",
                "id",
                "event id must be a valid ULID (26 Crockford base32 characters)",
            ))
        }
    }
    check_timestamp(timestamp)
}

/// A timestamp must be an integer number of seconds; milliseconds are refused.
pub fn check_timestamp(timestamp: Option<&Value>) -> Result<(), Violation> {
    match timestamp {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if t.abs() >= MILLISECONDS_THRESHOLD => Err(Violation::new(
                "invalid",
                "timestamp",
                format!("timestamp {t} looks like milliseconds: send Unix seconds"),
            )),
            Some(_) => Ok(()),
            None => Err(Violation::new(
                "invalid",
                "timestamp",
                "timestamp must be an integer number of seconds",
            )),
        },
        Some(_) => Err(Violation::new(
            "invalid",
            "timestamp",
            "timestamp must be an integer number of seconds",
        )),
    }
}

/// Whether `s` is a ULID: 26 characters of Crockford's base32, the first at most `7`.
pub fn is_ulid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 26
        && matches!(b[0], b'0'..=b'7')
        && b.iter().all(|c| {
            let c = c.to_ascii_uppercase();
            c.is_ascii_digit()
                || (c.is_ascii_uppercase() && !matches!(c, b'I' | b'L' | b'O' | b'U'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ulids() {
        assert!(is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(is_ulid("01arz3ndektsv4rrffq69g5fav"));
        assert!(!is_ulid("81ARZ3NDEKTSV4RRFFQ69G5FAV"), "overflows 128 bits");
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAU"), "U is not Crockford");
        assert!(!is_ulid("purchase-1"));
    }

    #[test]
    fn emails() {
        assert!(is_email("a+b@x.com"));
        assert!(!is_email("a@x"));
        assert!(!is_email("a b@x.com"));
        assert!(!is_email("@x.com"));
    }

    #[test]
    fn timestamps() {
        assert!(check_timestamp(Some(&json!(1_700_000_000))).is_ok());
        assert!(check_timestamp(Some(&json!(1_700_000_000_000i64))).is_err());
        assert!(check_timestamp(Some(&json!(1.5))).is_err());
        assert!(check_timestamp(Some(&json!("1700000000"))).is_err());
    }

    #[test]
    fn attribute_limits() {
        let mut m = Map::new();
        m.insert("a".repeat(151), json!(1));
        assert!(check_attributes(&m)
            .unwrap_err()
            .message
            .contains("150 bytes"));
        let mut m = Map::new();
        m.insert("bio".into(), json!("x".repeat(1001)));
        assert_eq!(
            check_attributes(&m).unwrap_err().message,
            "value for attribute 'bio' cannot be longer than 1000 bytes"
        );
        let m: Map<String, Value> = (0..301).map(|i| (format!("a{i}"), json!(i))).collect();
        assert!(check_attributes(&m)
            .unwrap_err()
            .message
            .contains("300 attributes"));
    }
}
