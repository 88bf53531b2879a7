//! Attributes, the same for people, objects, relationships and devices: mapped columns written
//! into the body within Customer.io's limits, and NULLs sent or skipped.
//!
//! - `nulls: skip` (the default): a NULL is left out of a new key's body; for a key sent
//!   before, a NULL is sent (as `""`, the form the Track API documents for removing an
//!   attribute) only when the attribute had a value when the key was last sent, to clear it.
//!   Which attributes were NULL is kept as a note beside the key in the state (only for rows
//!   that have one).
//! - `nulls: send`: every NULL is sent as `""`, clearing the attribute.
//!
//! The fingerprint is taken over the attributes with NULLs as `null`, whatever is sent: a row
//! is resent when its values change, not when what the state knew did.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

use super::{limits, JsonBuf};
use crate::mapping::FieldMap;
use crate::{Before, RowFailure};
use sallyport_sources::Row;

/// What a NULL becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nulls {
    /// Sent as `""` (clears the attribute).
    Send,
    /// Left out, unless the attribute had a value when the key was last sent.
    #[default]
    Skip,
}

/// The choice as forms offer it.
pub const NULLS_CHOICE: &[&str] = &["", "skip", "send"];

/// What [`write`] made.
pub struct Written {
    pub body: String,
    pub fingerprint: u64,
    pub note: Option<String>,
}

/// The mapped attributes of a row, ready to write.
pub struct Attributes<'a> {
    pub fields: &'a FieldMap,
    /// The model's column names, by index.
    pub columns: &'a [String],
    pub nulls: Nulls,
    /// `person`, `object`, `relationship`, `device`: for messages.
    pub what: &'static str,
    /// Values are sent as text (numbers and booleans as their JSON text; arrays and objects
    /// fail the row): device attributes.
    pub as_text: bool,
}

fn names_hash(fields: &FieldMap) -> u64 {
    let mut names = Vec::new();
    for (_, n) in &fields.fields {
        names.extend_from_slice(n.as_bytes());
        names.push(0x1f);
    }
    xxh3_64(&names)
}

/// Reads a note: which attributes (by position) were NULL when the key was last sent, if the
/// note is of the same mapping.
fn nulls_of_note(note: &str, hash: u64) -> Option<Vec<usize>> {
    let rest = note.strip_prefix("n1:")?;
    let (h, list) = rest.split_once(':')?;
    if u64::from_str_radix(h, 16).ok()? != hash {
        return None;
    }
    if list.is_empty() {
        return Some(Vec::new());
    }
    list.split(',').map(|i| i.parse().ok()).collect()
}

impl Attributes<'_> {
    /// Writes `head`, the attributes object, and `tail`. The fingerprint covers the body with
    /// NULLs as `null`.
    pub fn write(
        &self,
        head: &str,
        tail: &str,
        row: &Row,
        before: Before<'_>,
    ) -> Result<Written, RowFailure> {
        let fields = &self.fields.fields;
        if fields.len() > limits::ATTRIBUTES {
            return Err(RowFailure::row(format!(
                "{} attributes; Customer.io allows at most {} per {}",
                fields.len(),
                limits::ATTRIBUTES,
                self.what
            )));
        }
        // The body as if every NULL were sent as `null`: what the fingerprint covers (and,
        // when there is no NULL, what is sent).
        let mut body = JsonBuf::with_capacity(head.len() + tail.len() + 24 * fields.len());
        body.raw(head);
        let mut nulls = Vec::new();
        for (n, (i, name)) in fields.iter().enumerate() {
            if name.len() > limits::ATTRIBUTE_NAME_BYTES {
                return Err(RowFailure::column(
                    &self.columns[*i],
                    format!(
                        "the attribute name is {} bytes; Customer.io allows at most {} bytes",
                        name.len(),
                        limits::ATTRIBUTE_NAME_BYTES
                    ),
                ));
            }
            if n > 0 {
                body.raw(",");
            }
            body.str(name);
            body.raw(":");
            let v: &Value = &row.values[*i];
            if v.is_null() {
                nulls.push(n);
            }
            let start = body.len();
            match v {
                Value::Number(_) | Value::Bool(_) if self.as_text => body.str(&v.to_string()),
                Value::Array(_) | Value::Object(_) if self.as_text => {
                    return Err(RowFailure::column(
                        &self.columns[*i],
                        format!(
                            "a {} attribute is text, a number or a boolean; this value is {}",
                            self.what,
                            if v.is_array() {
                                "an array"
                            } else {
                                "an object"
                            }
                        ),
                    ))
                }
                _ => body.value(v),
            }
            let size = match v {
                Value::String(s) => s.len(),
                _ => body.len() - start,
            };
            if size > limits::ATTRIBUTE_VALUE_BYTES {
                return Err(RowFailure::column(
                    &self.columns[*i],
                    format!(
                        "the value is {size} bytes; Customer.io allows at most {} bytes per attribute value",
                        limits::ATTRIBUTE_VALUE_BYTES
                    ),
                ));
            }
        }
        body.raw(tail);
        let canonical = body.into_string();
        let fingerprint = xxh3_64(canonical.as_bytes());
        let hash = names_hash(self.fields);
        let had_note = matches!(before, Before::Sent(Some(n)) if !n.is_empty());
        // The note: which attributes are NULL now, kept only while some are.
        let note = match self.nulls {
            // An earlier note (from a time of `skip`) is forgotten.
            Nulls::Send => had_note.then(String::new),
            Nulls::Skip if nulls.is_empty() => had_note.then(String::new),
            Nulls::Skip => Some(format!(
                "n1:{hash:016x}:{}",
                nulls
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        };
        if nulls.is_empty() {
            return self.checked(canonical, fingerprint, note);
        }
        // Which NULLs are sent (as `""`, clearing the attribute).
        let clear = |n: usize| -> bool {
            match (self.nulls, before) {
                (Nulls::Send, _) => true,
                (Nulls::Skip, Before::New) => false,
                // Sent before without a note: every attribute had a value then.
                (Nulls::Skip, Before::Sent(None)) => true,
                (Nulls::Skip, Before::Sent(Some(""))) => true,
                (Nulls::Skip, Before::Sent(Some(note))) => match nulls_of_note(note, hash) {
                    Some(was_null) => !was_null.contains(&n),
                    // Another mapping: whether it had a value is not known; it is cleared.
                    None => true,
                },
            }
        };
        let mut sent = JsonBuf::with_capacity(canonical.len());
        sent.raw(head);
        let mut first = true;
        for (n, (i, name)) in fields.iter().enumerate() {
            let v: &Value = &row.values[*i];
            if v.is_null() && !clear(n) {
                continue;
            }
            if !first {
                sent.raw(",");
            }
            first = false;
            sent.str(name);
            sent.raw(":");
            match v {
                Value::Null => sent.raw("\"\""),
                Value::Number(_) | Value::Bool(_) if self.as_text => sent.str(&v.to_string()),
                _ => sent.value(v),
            }
        }
        sent.raw(tail);
        self.checked(sent.into_string(), fingerprint, note)
    }

    fn checked(
        &self,
        body: String,
        fingerprint: u64,
        note: Option<String>,
    ) -> Result<Written, RowFailure> {
        if body.len() > limits::OP_BYTES {
            return Err(RowFailure::row(format!(
                "the operation is {} bytes; Customer.io allows at most {} bytes per operation",
                body.len(),
                limits::OP_BYTES
            )));
        }
        Ok(Written {
            body,
            fingerprint,
            note,
        })
    }
}

/// Checks an identifier (a person's id or email, an object's id, a device's token) against
/// Customer.io's limits.
pub fn check_id(column: &str, what: &str, value: &str) -> Result<(), RowFailure> {
    if value.trim().is_empty() {
        return Err(RowFailure::column(column, format!("the {what} is empty")));
    }
    if value.len() > limits::ID_BYTES {
        return Err(RowFailure::column(
            column,
            format!(
                "the {what} is {} bytes; Customer.io allows at most {} bytes",
                value.len(),
                limits::ID_BYTES
            ),
        ));
    }
    Ok(())
}

/// Checks a person's identifier: within Customer.io's limits, and an email address where the
/// sync matches people by email.
pub fn check_person(
    column: &str,
    what: &str,
    value: &str,
    by_email: bool,
) -> Result<(), RowFailure> {
    check_id(column, what, value)?;
    if by_email && !value.contains('@') {
        return Err(RowFailure::column(
            column,
            format!("`{value}` is not an email address, and this sync identifies people by email"),
        ));
    }
    Ok(())
}

/// The opening of a person op, up to its identifier's value.
pub fn person_head(by_email: bool) -> &'static str {
    if by_email {
        "{\"type\":\"person\",\"identifiers\":{\"email\":"
    } else {
        "{\"type\":\"person\",\"identifiers\":{\"id\":"
    }
}

/// A cell as an identifier's text: strings as they are, numbers as written; `None` for NULL.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(nulls: Nulls) -> (FieldMap, Vec<String>, Nulls) {
        (
            FieldMap {
                fields: vec![(1, "name".into()), (2, "plan".into())],
            },
            vec!["id".into(), "name".into(), "plan".into()],
            nulls,
        )
    }

    fn write(nulls: Nulls, plan: Value, before: Before<'_>) -> Written {
        let (fields, columns, nulls) = attrs(nulls);
        let a = Attributes {
            fields: &fields,
            columns: &columns,
            nulls,
            what: "person",
            as_text: false,
        };
        let row = Row::new(Some("1".into()), vec![json!("1"), json!("Jo"), plan]);
        a.write("{\"attributes\":{", "}}", &row, before).unwrap()
    }

    #[test]
    fn nulls_are_skipped_for_a_new_key_and_cleared_once_they_had_a_value() {
        let new = write(Nulls::Skip, Value::Null, Before::New);
        assert_eq!(new.body, r#"{"attributes":{"name":"Jo"}}"#);
        let note = new.note.clone().unwrap();
        // Sent again with the same NULL: it had no value, so it is still left out.
        let again = write(Nulls::Skip, Value::Null, Before::Sent(Some(&note)));
        assert_eq!(again.body, r#"{"attributes":{"name":"Jo"}}"#);
        assert_eq!(again.fingerprint, new.fingerprint);
        // It had a value (no note: every attribute had one): the NULL clears it.
        let cleared = write(Nulls::Skip, Value::Null, Before::Sent(None));
        assert_eq!(cleared.body, r#"{"attributes":{"name":"Jo","plan":""}}"#);
        // A value again: sent, and the note is forgotten.
        let back = write(Nulls::Skip, json!("pro"), Before::Sent(Some(&note)));
        assert_eq!(back.body, r#"{"attributes":{"name":"Jo","plan":"pro"}}"#);
        assert_eq!(back.note.as_deref(), Some(""));
        assert_ne!(back.fingerprint, new.fingerprint);
        // With no NULL and no earlier note, nothing is noted.
        assert_eq!(write(Nulls::Skip, json!("pro"), Before::New).note, None);
    }

    #[test]
    fn nulls_send_clears_every_null() {
        let w = write(Nulls::Send, Value::Null, Before::New);
        assert_eq!(w.body, r#"{"attributes":{"name":"Jo","plan":""}}"#);
        assert_eq!(w.note, None);
    }
}
