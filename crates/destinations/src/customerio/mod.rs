//! Customer.io, through its Track API: people are identified (upserted) and events tracked
//! through `POST /api/v2/batch`; anonymous events through `POST /api/v1/events`.

pub mod attributes;
pub mod device;
pub mod event;
pub mod object;
pub mod person;
pub mod relationship;
pub mod segment;
mod settings;

use base64::Engine;
use reqwest::StatusCode;
use sallyport_core::Mapping;
use sallyport_sources::Column;
use serde::Deserialize;

use crate::delivery::{SendError, Sender};
use crate::{DestinationError, ObjectMapper, ObjectSettings, Op, OpResults, Route, SettingProblem};

use settings::CustomerIo as Settings;
pub use settings::{redact_url, CustomerIo, Region};

pub use event::{dedup_id, is_ulid, timestamp_seconds, EventMapper};
pub use person::PersonMapper;

pub const US_URL: &str = "https://track.customer.io";
pub const EU_URL: &str = "https://track-eu.customer.io";

/// Customer.io's limits, checked before anything is sent.
pub mod limits {
    pub const ID_BYTES: usize = 150;
    pub const ATTRIBUTE_NAME_BYTES: usize = 150;
    pub const ATTRIBUTE_VALUE_BYTES: usize = 1000;
    pub const ATTRIBUTES: usize = 300;
    pub const EVENT_NAME_BYTES: usize = 100;
    pub const EVENT_DATA_BYTES: usize = 100_000;
    /// One op of a batch (Customer.io: 32 KB; taken as 32,000 bytes to be safe).
    pub const OP_BYTES: usize = 32_000;
    /// People added to or removed from a manual segment in one request.
    pub const SEGMENT_IDS: usize = 1000;
}

/// The bytes a batch adds around its ops: `{"batch":[` and `]}`, and a comma between two.
pub const BATCH_OVERHEAD: (usize, usize) = (12, 1);

/// The bytes a segment request adds around its ids: `{"ids":[` and `]}`, and a comma.
pub const SEGMENT_OVERHEAD: (usize, usize) = (10, 1);

/// A Customer.io workspace.
pub struct Workspace {
    name: String,
    base: String,
    region: Region,
    pinned: bool,
    auth: String,
    sender: Sender,
    /// What a request may never show (the API key, the credentials as sent).
    secrets: Vec<String>,
}

#[derive(Deserialize)]
struct RegionAnswer {
    url: String,
    region: String,
}

impl Workspace {
    /// A workspace whose requests share `pace` with every other sender to it.
    pub fn new(name: &str, s: &Settings, pace: std::sync::Arc<crate::delivery::Pace>) -> Self {
        let (base, pinned) = match (&s.track_url, s.region) {
            (Some(u), _) => (u.trim_end_matches('/').to_string(), true),
            (None, Region::Eu) => (EU_URL.to_string(), true),
            (None, Region::Us) => (US_URL.to_string(), true),
            (None, Region::Auto) => (US_URL.to_string(), false),
        };
        let creds = format!("{}:{}", s.site_id.expose(), s.api_key.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&creds);
        Self {
            secrets: vec![
                s.api_key.expose().to_string(),
                creds.clone(),
                encoded.clone(),
            ],
            name: name.to_string(),
            base,
            region: s.region,
            pinned,
            auth: format!("Basic {encoded}"),
            sender: Sender::paced(&s.delivery, pace),
        }
    }

    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Writes every request of run `run_id` of `sync` down in `inspector`, secrets blanked.
    pub fn record(
        &mut self,
        inspector: std::sync::Arc<crate::delivery::Inspector>,
        sync: &str,
        run_id: i64,
    ) {
        self.sender.record(crate::delivery::Recording {
            inspector,
            sync: sync.to_string(),
            run_id,
            secrets: self.secrets.clone(),
        });
    }

    /// The Track API URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn credentials_error(&self, status: StatusCode) -> DestinationError {
        DestinationError::Credentials(format!(
            "Customer.io rejected the Site ID / API key of app `{}` ({status}): check site_id and api_key (a Track API key, not an App API key) and the region",
            self.name
        ))
    }

    /// Asks `GET /api/v1/accounts/region`: validates the credentials and, with `region: auto`,
    /// learns the workspace's host.
    pub async fn check(&mut self) -> Result<String, DestinationError> {
        let url = format!("{}/api/v1/accounts/region", self.base);
        let auth = self.auth.clone();
        let answer = self
            .sender
            .send(|c| c.get(&url).header("Authorization", &auth))
            .await
            .map_err(|e| match e {
                SendError::Unauthorized { status } => self.credentials_error(status),
                SendError::GaveUp { last, .. } => DestinationError::Unreachable(format!(
                    "Customer.io app `{}` did not answer at {}: {last}",
                    self.name,
                    settings::redact_url(&self.base)
                )),
            })?;
        if !answer.status.is_success() {
            return Err(DestinationError::Unreachable(format!(
                "Customer.io app `{}`: the region endpoint answered {}",
                self.name, answer.status
            )));
        }
        let region: RegionAnswer = serde_json::from_slice(&answer.body).map_err(|e| {
            DestinationError::Unreachable(format!(
                "Customer.io app `{}`: unexpected region answer: {e}",
                self.name
            ))
        })?;
        if !self.pinned && self.region == Region::Auto {
            self.base = region.url.trim_end_matches('/').to_string();
            self.pinned = true;
        }
        Ok(format!(
            "credentials accepted; workspace region {} ({}), sending to {}",
            region.region,
            region.url,
            settings::redact_url(&self.base)
        ))
    }

    /// Delivers a batch (`POST /api/v2/batch`) or one anonymous event (`POST /api/v1/events`).
    pub async fn deliver(&self, route: Route, ops: &[&Op]) -> Result<OpResults, DestinationError> {
        let (url, body) = match route {
            Route::Batch => {
                let mut body = String::with_capacity(
                    ops.iter().map(|o| o.body.len() + 1).sum::<usize>() + BATCH_OVERHEAD.0,
                );
                body.push_str("{\"batch\":[");
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&op.body);
                }
                body.push_str("]}");
                (format!("{}/api/v2/batch", self.base), body)
            }
            Route::Single => {
                assert_eq!(ops.len(), 1, "a single-route delivery carries one op");
                (format!("{}/api/v1/events", self.base), ops[0].body.clone())
            }
            Route::Segment {
                segment,
                add,
                by_email,
            } => {
                let mut body = String::with_capacity(
                    ops.iter().map(|o| o.body.len() + 1).sum::<usize>() + SEGMENT_OVERHEAD.0,
                );
                body.push_str("{\"ids\":[");
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&op.body);
                }
                body.push_str("]}");
                (
                    format!(
                        "{}/api/v1/segments/{segment}/{}?id_type={}",
                        self.base,
                        if add {
                            "add_customers"
                        } else {
                            "remove_customers"
                        },
                        if by_email { "email" } else { "id" }
                    ),
                    body,
                )
            }
        };
        let body = bytes::Bytes::from(body);
        let auth = &self.auth;
        let sent = self
            .sender
            .send(|c| {
                c.post(&url)
                    .header("Authorization", auth)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
            })
            .await;
        let answer = match sent {
            Ok(a) => a,
            Err(SendError::Unauthorized { status }) => return Err(self.credentials_error(status)),
            Err(e @ SendError::GaveUp { .. }) => {
                return Err(DestinationError::GaveUp(e.to_string()))
            }
        };
        Ok(read_answer(answer.status, &answer.body, ops.len()))
    }
}

#[derive(Deserialize)]
struct ErrorItem {
    batch_index: Option<usize>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorsBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

fn item_message(e: &ErrorItem) -> String {
    let msg = e
        .message
        .clone()
        .or_else(|| e.reason.clone())
        .unwrap_or_else(|| "rejected".into());
    match e.field.as_deref() {
        Some(f) if !f.is_empty() => format!("Customer.io rejected it: {msg} (field `{f}`)"),
        _ => format!("Customer.io rejected it: {msg}"),
    }
}

/// Maps an answer back to the ops: a 207 fails the ops its `batch_index`es name; a 4xx fails
/// them all with Customer.io's message.
fn read_answer(status: StatusCode, body: &[u8], n: usize) -> OpResults {
    if status.is_success() && status != StatusCode::MULTI_STATUS {
        return vec![Ok(()); n];
    }
    let parsed: Option<ErrorsBody> = serde_json::from_slice(body).ok();
    if status == StatusCode::MULTI_STATUS {
        // Only errors tied to an op fail that op; an answer that cannot be read, or an error
        // that names no op of the batch, fails them all (they are retried next run) rather than
        // marking anything as accepted that may not have been.
        let mut out = vec![Ok(()); n];
        let unmatched = match &parsed {
            Some(p) if !p.errors.is_empty() => p
                .errors
                .iter()
                .find(|e| !matches!(e.batch_index, Some(i) if i < n)),
            _ => None,
        };
        match (&parsed, unmatched) {
            (Some(p), None) if !p.errors.is_empty() => {
                for e in &p.errors {
                    if let Some(i) = e.batch_index {
                        out[i] = Err(item_message(e));
                    }
                }
            }
            (_, Some(e)) => {
                let msg = format!(
                    "{} (Customer.io's 207 names no operation of this batch)",
                    item_message(e)
                );
                out = vec![Err(msg); n];
            }
            _ => {
                let msg = "Customer.io answered 207 without errors that could be read".to_string();
                out = vec![Err(msg); n];
            }
        }
        return out;
    }
    let message = parsed
        .and_then(|p| {
            if let Some(first) = p.errors.first() {
                return Some(item_message(first));
            }
            let meta = p.meta?;
            let m = meta
                .get("error")
                .and_then(|e| e.as_str().map(str::to_string))
                .or_else(|| meta.get("errors").map(|e| e.to_string()))?;
            Some(format!("Customer.io rejected it: {m}"))
        })
        // An answer not in Customer.io's error shape is said by its status only.
        .unwrap_or_else(|| format!("Customer.io answered {status}"));
    vec![Err(message); n]
}

/// The mapper for a sync's object, checked against the model's columns. `sync_id` keys what
/// must stay the same across renames (event dedup ids).
pub fn mapper(
    sync_id: &str,
    object: &ObjectSettings,
    mapping: &Mapping,
    columns: &[Column],
) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
    object.mapper(sync_id, mapping, columns)
}

/// A JSON text written straight into one buffer, without a value tree or temporary strings.
pub(crate) struct JsonBuf(Vec<u8>);

impl JsonBuf {
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Appends JSON text as it is.
    pub fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// Appends `s` as a JSON string.
    pub fn str(&mut self, s: &str) {
        serde_json::to_writer(&mut self.0, s).expect("writing to memory cannot fail");
    }

    /// Appends a value.
    pub fn value(&mut self, v: &serde_json::Value) {
        serde_json::to_writer(&mut self.0, v).expect("writing to memory cannot fail");
    }

    /// Appends a JSON object of `fields`, in order.
    pub fn object<'a>(&mut self, fields: impl Iterator<Item = (&'a str, &'a serde_json::Value)>) {
        self.raw("{");
        for (i, (name, value)) in fields.enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.str(name);
            self.raw(":");
            self.value(value);
        }
        self.raw("}");
    }

    pub fn into_string(self) -> String {
        String::from_utf8(self.0).expect("JSON text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_207_fails_only_the_named_ops() {
        let body = br#"{"errors":[{"batch_index":1,"reason":"too_long","field":"attributes.bio","message":"value too long"}]}"#;
        let r = read_answer(StatusCode::MULTI_STATUS, body, 3);
        assert_eq!(r[0], Ok(()));
        assert_eq!(
            r[1],
            Err("Customer.io rejected it: value too long (field `attributes.bio`)".into())
        );
        assert_eq!(r[2], Ok(()));
    }

    #[test]
    fn a_207_that_cannot_be_matched_fails_every_op() {
        for body in [
            &b"not json"[..],
            br#"{"errors":[]}"#,
            br#"{"errors":[{"batch_index":9,"message":"x"}]}"#,
            br#"{"errors":[{"message":"x"}]}"#,
        ] {
            let r = read_answer(StatusCode::MULTI_STATUS, body, 2);
            assert!(
                r.iter().all(Result::is_err),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_400_fails_every_op_with_the_message() {
        let r = read_answer(
            StatusCode::BAD_REQUEST,
            br#"{"meta":{"error":"event name must not be blank"}}"#,
            2,
        );
        assert_eq!(
            r,
            vec![Err("Customer.io rejected it: event name must not be blank".to_string()); 2]
        );
        let r = read_answer(StatusCode::NOT_FOUND, b"nope", 1);
        assert_eq!(
            r,
            vec![Err("Customer.io answered 404 Not Found".to_string())]
        );
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use sallyport_core::Mapping;
    use sallyport_sources::{Column, Row};
    use serde_json::{json, Value};

    use super::person::{PersonMapper, Settings};
    use super::JsonBuf;
    use crate::ObjectMapper;

    fn person_mapper() -> PersonMapper {
        let columns: Vec<Column> = ["id", "name", "score", "secret"]
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                type_name: "text".into(),
            })
            .collect();
        let settings = Settings {
            mode: super::person::PersonMode::Upsert,
            primary_key: Some("id".into()),
            identifier: None,
            on_removal: None,
            max_removals: None,
            nulls: None,
        };
        let mapping = Mapping {
            exclude: vec!["secret".into()],
            ..Default::default()
        };
        PersonMapper::new(&settings, &mapping, &columns).unwrap()
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_json_that_reads_back_the_same(s in any::<String>()) {
            let mut b = JsonBuf::with_capacity(0);
            b.str(&s);
            let v: Value = serde_json::from_str(&b.into_string()).unwrap();
            prop_assert_eq!(v, Value::String(s));
        }

        #[test]
        fn objects_are_written_as_json_that_reads_back_the_same(
            fields in proptest::collection::btree_map(any::<String>(), any::<i64>(), 0..8)
        ) {
            let values: Vec<(String, Value)> =
                fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let mut b = JsonBuf::with_capacity(0);
            b.object(values.iter().map(|(k, v)| (k.as_str(), v)));
            let back: BTreeMap<String, i64> = serde_json::from_str(&b.into_string()).unwrap();
            prop_assert_eq!(back, fields);
        }

        /// A person's fingerprint changes exactly when what is sent changes: a mapped value,
        /// not an excluded one.
        #[test]
        fn a_person_fingerprint_follows_what_is_sent(
            a in "\\PC{0,40}", b in "\\PC{0,40}", score in any::<i32>(), secret in any::<i64>()
        ) {
            let m = person_mapper();
            let row = |name: &str, secret: i64| {
                Row::new(Some("7".into()), vec![json!("7"), json!(name), json!(score), json!(secret)])
            };
            let one = m.map("7", &row(&a, secret), crate::Before::New).unwrap();
            let same = m.map("7", &row(&a, secret.wrapping_add(1)), crate::Before::New).unwrap();
            let other = m.map("7", &row(&b, secret), crate::Before::New).unwrap();
            prop_assert_eq!(one.fingerprint, same.fingerprint, "an excluded column changes nothing");
            prop_assert_eq!(one.fingerprint == other.fingerprint, a == b);
            let body: Value = serde_json::from_str(&one.body).unwrap();
            prop_assert_eq!(&body["attributes"]["name"], &json!(a));
            prop_assert!(body["attributes"].get("secret").is_none());
        }
    }
}
