//! Event (INSERT): a row becomes a Track Event or a Track Page View, sent once per event id.
//! Identified events travel as v2 person `event` / `page` ops; anonymous ones through
//! `POST /api/v1/events`. Each carries a ULID derived from the sync and the event id, so that a
//! re-send is deduplicated by Customer.io.

use sallyport_core::{Field, FieldKind, Mapping};
use sallyport_sources::{parse_datetime, Column, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use super::{limits, JsonBuf};
use crate::mapping::{find_column, resolve, FieldMap, SettingProblem};
use crate::{Before, ChangePolicy, ObjectMapper, Op, Route, RowFailure};

/// `object: event`: a row is an event, sent once: a Track Event or a Track Page View.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `insert`: the only mode an event supports.
    pub mode: EventMode,
    /// `track` or `page_view`.
    pub event_type: Option<String>,
    /// The column uniquely identifying the event.
    pub event_id: Option<String>,
    /// The column with the person's Customer.io id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The column with an anonymous id, used when there is no customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// The column with the time of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Track event: the column with the event's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Page view: the column with the page URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
}

/// How an event sync writes: `insert` (each event once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventMode {
    Insert,
}

impl EventMode {
    pub fn as_str(self) -> &'static str {
        "insert"
    }
}

/// The settings of an event sync, as forms and the API describe them.
pub const FIELDS: &[Field] = &[
    Field {
        name: "event_type",
        label: "Event type",
        kind: FieldKind::Choice(&["track", "page_view", "screen"]),
        required: true,
        when: None,
        help: "`track` (Track Event), `page_view` (Track Page View) or `screen` (Track Screen View, mobile)",
    },
    Field {
        name: "event_id",
        label: "Event id column",
        kind: FieldKind::Column,
        required: true,
        when: None,
        help: "the column uniquely identifying the event",
    },
    Field {
        name: "customer_id",
        label: "Customer id column",
        kind: FieldKind::Column,
        required: false,
        when: None,
        help: "the column with the person's Customer.io id",
    },
    Field {
        name: "anonymous_id",
        label: "Anonymous id column",
        kind: FieldKind::Column,
        required: false,
        when: None,
        help: "the column with an anonymous id, used when a row has no customer id",
    },
    Field {
        name: "timestamp",
        label: "Timestamp column",
        kind: FieldKind::Column,
        required: false,
        when: None,
        help: "the column with the time of the event",
    },
    Field {
        name: "event_name",
        label: "Event (or screen) name column",
        kind: FieldKind::Column,
        required: true,
        when: Some(("event_type", "track|screen")),
        help: "track events: the column with the event's name; screen views: the screen's name",
    },
    Field {
        name: "page_url",
        label: "Page URL column (page view)",
        kind: FieldKind::Column,
        required: true,
        when: Some(("event_type", "page_view")),
        help: "page views: the column with the page URL",
    },
];

/// The modes an event supports.
pub const MODES: &[&str] = &["insert"];

impl Settings {
    /// What is wrong with the settings on their own (before the model is known).
    pub fn validate(&self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        if self.event_id.is_none() {
            p.push(SettingProblem::new(
                &["event_id"],
                "missing `event_id`: the column uniquely identifying the event",
            ));
        }
        match self.event_type.as_deref() {
            None => p.push(SettingProblem::new(
                &["event_type"],
                "missing `event_type`: track, page_view or screen",
            )),
            Some(t @ ("track" | "screen")) => {
                if self.event_name.is_none() {
                    p.push(SettingProblem::new(
                        &["event_name"],
                        if t == "track" {
                            "a track event needs `event_name`: the column with the event's name"
                        } else {
                            "a screen view needs `event_name`: the column with the screen's name"
                        },
                    ));
                }
                if self.page_url.is_some() {
                    p.push(SettingProblem::new(
                        &["page_url"],
                        format!("`page_url` belongs to page_view events, not to {t} events"),
                    ));
                }
            }
            Some("page_view") => {
                if self.page_url.is_none() {
                    p.push(SettingProblem::new(
                        &["page_url"],
                        "a page_view event needs `page_url`: the column with the page URL",
                    ));
                }
                if self.event_name.is_some() {
                    p.push(SettingProblem::new(
                        &["event_name"],
                        "`event_name` belongs to track events, not to page_view events",
                    ));
                }
            }
            Some(other) => p.push(SettingProblem::new(
                &["event_type"],
                format!("event_type must be `track`, `page_view` or `screen`, not `{other}`"),
            )),
        }
        p
    }

    /// The columns these settings use (not sent as attributes).
    pub fn columns(&self) -> Vec<&str> {
        [
            &self.event_id,
            &self.customer_id,
            &self.anonymous_id,
            &self.timestamp,
            &self.event_name,
            &self.page_url,
        ]
        .into_iter()
        .filter_map(|c| c.as_deref())
        .collect()
    }
}

/// Timestamps at or above this are milliseconds (in seconds, the year 5138).
const MILLISECONDS_FROM: f64 = 100_000_000_000.0;

/// What an event row becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Track Event: a named event.
    Track,
    /// Track Page View: a page URL.
    PageView,
    /// Track Screen View (mobile): a screen's name.
    Screen,
}

use EventType as Kind;

impl Settings {
    /// The event type (validated settings name one).
    pub fn event_type(&self) -> EventType {
        match self.event_type.as_deref() {
            Some("page_view") => EventType::PageView,
            Some("screen") => EventType::Screen,
            _ => EventType::Track,
        }
    }
}

pub struct EventMapper {
    sync: String,
    kind: Kind,
    key_column: String,
    name: (usize, String),
    customer_id: Option<(usize, String)>,
    anonymous_id: Option<(usize, String)>,
    timestamp: Option<(usize, String)>,
    fields: FieldMap,
}

impl EventMapper {
    pub fn new(
        sync_name: &str,
        sync: &Settings,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Self, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        let mut col = |setting: &'static str, name: Option<&String>| -> Option<(usize, String)> {
            let name = name?;
            match find_column(columns, name, &[setting]) {
                Ok(i) => Some((i, name.clone())),
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        };
        let kind = sync.event_type();
        let key = col("event_id", sync.event_id.as_ref());
        let name = match kind {
            Kind::Track | Kind::Screen => col("event_name", sync.event_name.as_ref()),
            Kind::PageView => col("page_url", sync.page_url.as_ref()),
        };
        let customer_id = col("customer_id", sync.customer_id.as_ref());
        let anonymous_id = col("anonymous_id", sync.anonymous_id.as_ref());
        let timestamp = col("timestamp", sync.timestamp.as_ref());
        let used: Vec<usize> = [&key, &name, &customer_id, &anonymous_id, &timestamp]
            .iter()
            .filter_map(|c| c.as_ref().map(|(i, _)| *i))
            .collect();
        let fields = resolve(mapping, columns, &used);
        match (key, name, fields) {
            (Some(key), Some(name), Ok(fields)) if problems.is_empty() => Ok(Self {
                sync: sync_name.to_string(),
                kind,
                key_column: key.1,
                name,
                customer_id,
                anonymous_id,
                timestamp,
                fields,
            }),
            (_, _, fields) => {
                if let Err(p) = fields {
                    problems.extend(p);
                }
                Err(problems)
            }
        }
    }

    /// The dedup id of an event: the event id itself when it is a ULID, otherwise a ULID made
    /// from a hash of the sync's name and the event id (the same on every run).
    pub fn dedup_id(&self, event_id: &str) -> String {
        dedup_id(&self.sync, event_id)
    }
}

/// See [`EventMapper::dedup_id`].
pub fn dedup_id(sync: &str, event_id: &str) -> String {
    if is_ulid(event_id) {
        return event_id.to_ascii_uppercase();
    }
    let mut seed = Vec::with_capacity(sync.len() + event_id.len() + 1);
    seed.extend_from_slice(sync.as_bytes());
    seed.push(0);
    seed.extend_from_slice(event_id.as_bytes());
    encode_ulid(xxh3_128(&seed))
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn encode_ulid(x: u128) -> String {
    (0..26)
        .map(|i| CROCKFORD[((x >> (125 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// Whether `s` is a ULID: 26 characters of Crockford's base32, the first at most `7`.
pub fn is_ulid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 26
        && matches!(b[0], b'0'..=b'7')
        && b.iter()
            .all(|c| CROCKFORD.contains(&c.to_ascii_uppercase()))
}

/// Unix seconds from a timestamp value: integer seconds, integer milliseconds (detected),
/// float seconds, or an ISO-8601 / RFC 3339 string.
pub fn timestamp_seconds(v: &Value) -> Result<Option<i64>, String> {
    let from_f64 = |f: f64| -> Result<i64, String> {
        if !f.is_finite() {
            return Err(format!("`{f}` is not a time"));
        }
        let secs = if f.abs() >= MILLISECONDS_FROM {
            f / 1000.0
        } else {
            f
        };
        Ok(secs.floor() as i64)
    };
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (i as f64).abs() >= MILLISECONDS_FROM => Ok(Some(i.div_euclid(1000))),
            Some(i) => Ok(Some(i)),
            None => from_f64(n.as_f64().unwrap_or(f64::NAN)).map(Some),
        },
        Value::String(s) => match parse_datetime(s) {
            Some(t) => Ok(Some(t)),
            None => match s.trim().parse::<f64>() {
                Ok(f) => from_f64(f).map(Some),
                Err(_) => Err(format!("`{s}` is not a time: use Unix seconds or milliseconds, or an ISO-8601 date-time")),
            },
        },
        other => Err(format!("`{other}` is not a time")),
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl ObjectMapper for EventMapper {
    fn uses_column(&self, index: usize) -> bool {
        self.name.0 == index
            || [&self.customer_id, &self.anonymous_id, &self.timestamp]
                .into_iter()
                .any(|c| c.as_ref().is_some_and(|(i, _)| *i == index))
            || self.fields.fields.iter().any(|(i, _)| *i == index)
    }

    fn key_column(&self) -> &str {
        &self.key_column
    }

    fn policy(&self) -> ChangePolicy {
        ChangePolicy::InsertOnce
    }

    fn endpoint(&self, route: Route) -> String {
        match route {
            Route::Batch => "POST /api/v2/batch",
            _ => "POST /api/v1/events",
        }
        .into()
    }

    fn map(&self, key: &str, row: &Row, _before: Before<'_>) -> Result<Op, RowFailure> {
        let (name_col, name_column) = &self.name;
        let what = match self.kind {
            Kind::Track => "event name",
            Kind::PageView => "page URL",
            Kind::Screen => "screen name",
        };
        let name = text_of(&row.values[*name_col])
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| RowFailure::column(name_column, format!("the {what} is blank")))?;
        if name.len() > limits::EVENT_NAME_BYTES {
            return Err(RowFailure::column(
                name_column,
                format!(
                    "the {what} is {} bytes; Customer.io allows at most {} bytes for an event name",
                    name.len(),
                    limits::EVENT_NAME_BYTES
                ),
            ));
        }
        let timestamp = match &self.timestamp {
            Some((i, c)) => {
                timestamp_seconds(&row.values[*i]).map_err(|e| RowFailure::column(c, e))?
            }
            None => None,
        };
        let customer = match &self.customer_id {
            Some((i, c)) => match text_of(&row.values[*i]).filter(|s| !s.is_empty()) {
                Some(id) if id.len() > limits::ID_BYTES => {
                    return Err(RowFailure::column(
                        c,
                        format!(
                            "the customer id is {} bytes; Customer.io allows at most {} bytes",
                            id.len(),
                            limits::ID_BYTES
                        ),
                    ))
                }
                other => other,
            },
            None => None,
        };
        let anonymous = self
            .anonymous_id
            .as_ref()
            .and_then(|(i, _)| text_of(&row.values[*i]))
            .filter(|s| !s.is_empty());
        // An event is never updated, so a NULL says nothing: it is left out (and a reserved
        // property such as `recipient` must be a string when present).
        let attributes = || {
            self.fields
                .fields
                .iter()
                .map(|(i, n)| (n.as_str(), &row.values[*i] as &Value))
                .filter(|(_, v)| !v.is_null())
        };
        let mut data = JsonBuf::with_capacity(64);
        data.object(attributes());
        let data = data.into_string();
        if data.len() > limits::EVENT_DATA_BYTES {
            return Err(RowFailure::row(format!(
                "the attributes are {} bytes; Customer.io allows at most {} bytes of event data",
                data.len(),
                limits::EVENT_DATA_BYTES
            )));
        }
        let id = self.dedup_id(key);
        let kind = match self.kind {
            Kind::Track => "event",
            Kind::PageView => "page",
            Kind::Screen => "screen",
        };
        let mut body = JsonBuf::with_capacity(data.len() + name.len() + 160);
        let route = match customer {
            Some(customer) => {
                body.raw("{\"type\":\"person\",\"identifiers\":{\"id\":");
                body.str(&customer);
                body.raw("},\"action\":\"");
                body.raw(kind);
                body.raw("\",\"name\":");
                body.str(&name);
                body.raw(",\"id\":\"");
                body.raw(&id);
                body.raw("\"");
                if let Some(t) = timestamp {
                    body.raw(&format!(",\"timestamp\":{t}"));
                }
                body.raw(",\"attributes\":");
                body.raw(&data);
                body.raw("}");
                if body.len() > limits::OP_BYTES {
                    return Err(RowFailure::row(format!(
                        "the operation is {} bytes; Customer.io allows at most {} bytes per operation",
                        body.len(),
                        limits::OP_BYTES
                    )));
                }
                Route::Batch
            }
            None => {
                let has_recipient = self
                    .fields
                    .fields
                    .iter()
                    .any(|(i, n)| n == "recipient" && !matches!(row.values[*i], Value::Null));
                if anonymous.is_none() && !has_recipient {
                    return Err(RowFailure::row(
                        "anonymous event needs anonymous_id or recipient (no customer id in this row)",
                    ));
                }
                body.raw("{\"name\":");
                body.str(&name);
                body.raw(",\"type\":\"");
                body.raw(kind);
                body.raw("\",\"id\":\"");
                body.raw(&id);
                body.raw("\"");
                if let Some(a) = &anonymous {
                    body.raw(",\"anonymous_id\":");
                    body.str(a);
                }
                if let Some(t) = timestamp {
                    body.raw(&format!(",\"timestamp\":{t}"));
                }
                body.raw(",\"data\":");
                body.raw(&data);
                body.raw("}");
                Route::Single
            }
        };
        let body = body.into_string();
        Ok(Op::new(key, xxh3_64(body.as_bytes()), body, route))
    }
}

impl crate::Object for Settings {
    const KIND: crate::ObjectKind = crate::ObjectKind {
        name: "event",
        label: "Event",
        fields: FIELDS,
        modes: MODES,
    };

    fn mode(&self) -> &'static str {
        self.mode.as_str()
    }

    fn validate(&self) -> Vec<SettingProblem> {
        Settings::validate(self)
    }

    fn columns(&self) -> Vec<&str> {
        Settings::columns(self)
    }

    fn mapper(
        &self,
        sync_id: &str,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        Ok(Box::new(EventMapper::new(sync_id, self, mapping, columns)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dedup_ids_are_stable_ulids() {
        let a = dedup_id("purchases", "p-1");
        assert!(is_ulid(&a), "{a}");
        assert_eq!(a, dedup_id("purchases", "p-1"));
        assert_ne!(a, dedup_id("purchases", "p-2"));
        assert_ne!(a, dedup_id("signups", "p-1"), "two syncs never share an id");
        assert_eq!(
            dedup_id("x", "01arz3ndektsv4rrffq69g5fav"),
            "01ARZ3NDEKTSV4RRFFQ69G5FAV"
        );
        assert_eq!(encode_ulid(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(encode_ulid(0), "00000000000000000000000000");
    }

    #[test]
    fn every_timestamp_form() {
        assert_eq!(
            timestamp_seconds(&json!(1_700_000_000)),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(
            timestamp_seconds(&json!(1_700_000_000_123i64)),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(
            timestamp_seconds(&json!(1_700_000_000.75)),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(
            timestamp_seconds(&json!("2023-11-14T22:13:20Z")),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(
            timestamp_seconds(&json!("2023-11-14 23:13:20+01:00")),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(
            timestamp_seconds(&json!("1700000000")),
            Ok(Some(1_700_000_000))
        );
        assert_eq!(timestamp_seconds(&Value::Null), Ok(None));
        assert!(timestamp_seconds(&json!("last tuesday"))
            .unwrap_err()
            .contains("`last tuesday`"));
        assert!(timestamp_seconds(&json!(true)).is_err());
    }
}
