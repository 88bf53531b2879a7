//! The Track API routes: region, v1 people and events, v2 entity and batch.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::limits::{self, Violation};
use crate::store::{Device, Event, PersonRef, RawFindings, Store};
use crate::Shared;

pub fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/accounts/region", get(region))
        .route(
            "/api/v1/customers/{identifier}",
            put(identify_v1).delete(delete_v1),
        )
        .route(
            "/api/v1/customers/{identifier}/events",
            post(customer_event_v1),
        )
        .route("/api/v1/events", post(anonymous_event_v1))
        .route("/api/v2/entity", post(entity_v2))
        .route("/api/v2/batch", post(batch_v2))
        .route(
            "/api/v1/segments/{segment_id}/add_customers",
            post(segment_add),
        )
        .route(
            "/api/v1/segments/{segment_id}/remove_customers",
            post(segment_remove),
        )
        .route_layer(axum::middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// HTTP Basic auth: user = Site ID, password = API key; standard or URL-safe base64.
async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        })
        .and_then(decode_basic)
        .is_some_and(|(user, pass)| user == shared.config.site_id && pass == shared.config.api_key);
    if !ok {
        shared.store.lock().expect("store lock").stats.unauthorized += 1;
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"Customer.io\"")],
            Json(json!({"meta": {"error": "Unauthorized request"}})),
        )
            .into_response();
    }
    next.run(req).await
}

fn decode_basic(encoded: &str) -> Option<(String, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let encoded = encoded.trim();
    let raw = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(encoded).ok())?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

fn v1_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"meta": {"error": message.into()}}))).into_response()
}

fn v2_errors(status: StatusCode, errors: Vec<Value>) -> Response {
    (status, Json(json!({ "errors": errors }))).into_response()
}

fn violation_json(v: &Violation, index: Option<usize>) -> Value {
    let mut m = Map::new();
    if let Some(i) = index {
        m.insert("batch_index".into(), json!(i));
    }
    m.insert("reason".into(), json!(v.reason));
    m.insert("field".into(), json!(v.field));
    m.insert("message".into(), json!(v.message));
    Value::Object(m)
}

fn ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

fn reject_v1(shared: &Shared, v: Violation) -> Response {
    shared
        .store
        .lock()
        .expect("store lock")
        .stats
        .rejected_requests += 1;
    v1_error(StatusCode::BAD_REQUEST, v.message)
}

async fn region(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({
        "url": shared.base_url(),
        "region": shared.config.region,
        "environment_id": 1,
    }))
    .into_response()
}

fn parse_object(body: &[u8], what: &str) -> Result<Map<String, Value>, Violation> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Violation::new(
            "invalid",
            "",
            format!("{what} must be a JSON object"),
        )),
        Err(e) => Err(Violation::new(
            "invalid",
            "",
            format!("malformed JSON: {e}"),
        )),
    }
}

/// The identifier field of a path identifier, for limit messages.
fn check_person_ref(r: &PersonRef) -> Result<(), Violation> {
    match r {
        PersonRef::Id(v) => limits::check_identifier("id", v),
        PersonRef::Email(v) => limits::check_identifier("email", v),
        PersonRef::CioId(v) => limits::check_identifier("cio_id", v),
    }
}

async fn identify_v1(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    body: Bytes,
) -> Response {
    let person = PersonRef::from_path(&identifier, shared.config.identify_by);
    let attrs = match parse_object(&body, "the request body")
        .and_then(|attrs| check_person_ref(&person).map(|_| attrs))
        .and_then(|attrs| limits::check_attributes(&attrs).map(|_| attrs))
    {
        Ok(a) => a,
        Err(v) => return reject_v1(&shared, v),
    };
    let mut store = shared.store.lock().expect("store lock");
    store.stats.ops += 1;
    store.identify(&person, attrs);
    drop(store);
    ok()
}

async fn delete_v1(State(shared): State<Arc<Shared>>, Path(identifier): Path<String>) -> Response {
    let person = PersonRef::from_path(&identifier, shared.config.identify_by);
    if let Err(v) = check_person_ref(&person) {
        return reject_v1(&shared, v);
    }
    let mut store = shared.store.lock().expect("store lock");
    store.stats.ops += 1;
    store.delete(&person);
    drop(store);
    ok()
}

fn event_kind(v: Option<&Value>) -> Result<String, Violation> {
    match v {
        None | Some(Value::Null) => Ok("event".into()),
        Some(Value::String(s)) if matches!(s.as_str(), "event" | "page" | "screen") => {
            Ok(s.clone())
        }
        Some(other) => Err(Violation::new(
            "invalid",
            "type",
            format!("type must be one of event, page, screen; got {other}"),
        )),
    }
}

/// Builds a v1 event from its body, checking every rule.
fn v1_event(body: &[u8], customer_id: Option<String>) -> Result<Event, Violation> {
    let m = parse_object(body, "the request body")?;
    let kind = event_kind(m.get("type"))?;
    limits::check_event(
        m.get("name"),
        m.get("data"),
        "data",
        m.get("id"),
        m.get("timestamp"),
    )?;
    let data = match m.get("data") {
        Some(Value::Object(d)) => d.clone(),
        _ => Map::new(),
    };
    let anonymous_id = match m.get("anonymous_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => None,
        Some(_) => {
            return Err(Violation::new(
                "invalid",
                "anonymous_id",
                "anonymous_id must be a string",
            ))
        }
    };
    if customer_id.is_none() && anonymous_id.is_none() && !data.contains_key("recipient") {
        return Err(Violation::new(
            "required",
            "anonymous_id",
            "an anonymous event needs anonymous_id, or data.recipient for an invite event",
        ));
    }
    Ok(Event {
        id: m.get("id").and_then(Value::as_str).map(str::to_string),
        name: m["name"].as_str().unwrap_or_default().to_string(),
        kind,
        timestamp: m.get("timestamp").and_then(Value::as_i64),
        attributes: data,
        customer_id,
        anonymous_id,
    })
}

async fn customer_event_v1(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    body: Bytes,
) -> Response {
    let person = PersonRef::from_path(&identifier, shared.config.identify_by);
    let event = check_person_ref(&person).and_then(|_| v1_event(&body, Some(identifier)));
    match event {
        Ok(e) => {
            let mut store = shared.store.lock().expect("store lock");
            store.stats.ops += 1;
            store.track(e);
            drop(store);
            ok()
        }
        Err(v) => reject_v1(&shared, v),
    }
}

async fn anonymous_event_v1(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match v1_event(&body, None) {
        Ok(e) => {
            let mut store = shared.store.lock().expect("store lock");
            store.stats.ops += 1;
            store.track(e);
            drop(store);
            ok()
        }
        Err(v) => reject_v1(&shared, v),
    }
}

/// What one valid v2 operation does to the workspace.
enum Action {
    Identify(PersonRef, Map<String, Value>),
    /// An identify whose attributes were checked as text (the fast path of batches).
    IdentifyRaw(PersonRef, Box<RawValue>, RawFindings),
    Delete(PersonRef),
    Track(Event),
    Suppress(PersonRef),
    Unsuppress(PersonRef),
    AddDevice(Device),
    DeleteDevice(String, String),
    IdentifyObject(String, String, Map<String, Value>),
    DeleteObject(String, String),
    /// (object type, object id, person, relationship attributes)
    Relate(Vec<(String, String, String, Map<String, Value>)>),
    Unrelate(Vec<(String, String, String)>),
    Several(Vec<Action>),
    /// A valid operation of a kind the sandbox acknowledges but does not model (deliveries,
    /// merges, anonymous objects).
    Acknowledge,
}

const OTHER_PERSON_ACTIONS: &[&str] = &["merge"];

/// Checks an operation against the official document's v2 operation schema.
fn check_document(op: &Map<String, Value>) -> Result<(), Violation> {
    sallyport_contract::check_request_cached("/api/v2/entity", "post", &Value::Object(op.clone()))
        .map_err(|e| {
            let e: String = e.chars().take(600).collect();
            Violation::new(
                "invalid",
                "",
                format!("the operation does not match Customer.io's Track API document: {e}"),
            )
        })
}

/// An object's identifiers: its type id and id, within Customer.io's limits.
fn object_ids(ids: Option<&Value>, at: &str) -> Result<(String, String), Violation> {
    let text = |k: &str| -> Result<String, Violation> {
        match ids.and_then(|i| i.get(k)) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(Violation::new(
                "required",
                format!("{at}.{k}"),
                format!("{at}.{k} must be present"),
            )),
        }
    };
    let type_id = text("object_type_id")?;
    let id = text("object_id")?;
    if id.trim().is_empty() {
        return Err(Violation::new(
            "required",
            format!("{at}.object_id"),
            "object_id must not be blank",
        ));
    }
    if id.len() > limits::MAX_ID_BYTES {
        return Err(Violation::new(
            "too_long",
            format!("{at}.object_id"),
            format!(
                "object_id cannot be longer than {} bytes",
                limits::MAX_ID_BYTES
            ),
        ));
    }
    Ok((type_id, id))
}

fn attributes_of(v: Option<Value>, field: &str) -> Result<Map<String, Value>, Violation> {
    let m = match v {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Violation::new(
                "invalid",
                field,
                format!("{field} must be an object"),
            ))
        }
    };
    limits::check_attributes(&m).map_err(|mut v| {
        v.field = format!("{field}.{}", v.field);
        v
    })?;
    Ok(m)
}

fn relationships(op: &mut Map<String, Value>) -> Vec<Map<String, Value>> {
    match op.remove("cio_relationships") {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A person related to an object, with the relationship's attributes.
type Related = (String, Map<String, Value>);
/// An object (type id, id) related to a person, with the relationship's attributes.
type RelatedObject = (String, String, Map<String, Value>);

/// A `type: object` operation.
fn prepare_object(mut op: Map<String, Value>) -> Result<Action, Violation> {
    check_document(&op)?;
    let action = op
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if action == "identify_anonymous" {
        return Ok(Action::Acknowledge);
    }
    let (type_id, id) = object_ids(op.get("identifiers"), "identifiers")?;
    let people = |op: &mut Map<String, Value>| -> Result<Vec<Related>, Violation> {
        relationships(op)
            .into_iter()
            .enumerate()
            .map(|(n, mut r)| {
                let mut holder = Map::new();
                holder.insert(
                    "identifiers".into(),
                    r.remove("identifiers").unwrap_or(Value::Null),
                );
                let person = v2_person_ref(&holder).map_err(|mut v| {
                    v.field = format!("cio_relationships[{n}].{}", v.field);
                    v
                })?;
                let attrs = attributes_of(
                    r.remove("relationship_attributes"),
                    &format!("cio_relationships[{n}].relationship_attributes"),
                )?;
                Ok((person.text(), attrs))
            })
            .collect()
    };
    match action.as_str() {
        "identify" => {
            let attrs = attributes_of(op.remove("attributes"), "attributes")?;
            let related = people(&mut op)?;
            let mut all = vec![Action::IdentifyObject(type_id.clone(), id.clone(), attrs)];
            if !related.is_empty() {
                all.push(Action::Relate(
                    related
                        .into_iter()
                        .map(|(p, a)| (type_id.clone(), id.clone(), p, a))
                        .collect(),
                ));
            }
            Ok(Action::Several(all))
        }
        "delete" => Ok(Action::DeleteObject(type_id, id)),
        "add_relationships" => Ok(Action::Relate(
            people(&mut op)?
                .into_iter()
                .map(|(p, a)| (type_id.clone(), id.clone(), p, a))
                .collect(),
        )),
        "delete_relationships" => Ok(Action::Unrelate(
            people(&mut op)?
                .into_iter()
                .map(|(p, _)| (type_id.clone(), id.clone(), p))
                .collect(),
        )),
        other => Err(Violation::new(
            "invalid",
            "action",
            format!("unknown object action `{other}`"),
        )),
    }
}

/// The person actions beyond identify, delete and events.
fn prepare_person_other(
    mut op: Map<String, Value>,
    person: PersonRef,
    action: &str,
) -> Result<Action, Violation> {
    check_document(&op)?;
    let objects = |op: &mut Map<String, Value>| -> Result<Vec<RelatedObject>, Violation> {
        relationships(op)
            .into_iter()
            .enumerate()
            .map(|(n, mut r)| {
                let at = format!("cio_relationships[{n}]");
                let (t, id) = object_ids(r.get("identifiers"), &format!("{at}.identifiers"))?;
                let attrs = attributes_of(
                    r.remove("relationship_attributes"),
                    &format!("{at}.relationship_attributes"),
                )?;
                Ok((t, id, attrs))
            })
            .collect()
    };
    let token = |op: &Map<String, Value>| -> Result<String, Violation> {
        let t = op
            .get("device")
            .and_then(|d| d.get("token"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if t.trim().is_empty() {
            return Err(Violation::new(
                "required",
                "device.token",
                "device.token must be present",
            ));
        }
        if t.len() > limits::MAX_DEVICE_TOKEN_BYTES {
            return Err(Violation::new(
                "too_long",
                "device.token",
                format!(
                    "device.token cannot be longer than {} bytes",
                    limits::MAX_DEVICE_TOKEN_BYTES
                ),
            ));
        }
        Ok(t.to_string())
    };
    let who = person.text();
    match action {
        "suppress" => Ok(Action::Suppress(person)),
        "unsuppress" => Ok(Action::Unsuppress(person)),
        "add_device" => {
            let token = token(&op)?;
            let mut device = match op.remove("device") {
                Some(Value::Object(d)) => d,
                _ => Map::new(),
            };
            let platform = device
                .get("platform")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let last_used = device.get("last_used").and_then(Value::as_i64);
            let attributes = attributes_of(device.remove("attributes"), "device.attributes")?;
            Ok(Action::AddDevice(Device {
                token,
                person: who,
                platform,
                last_used,
                attributes,
            }))
        }
        "delete_device" => Ok(Action::DeleteDevice(who, token(&op)?)),
        "add_relationships" => Ok(Action::Relate(
            objects(&mut op)?
                .into_iter()
                .map(|(t, id, a)| (t, id, who.clone(), a))
                .collect(),
        )),
        "delete_relationships" => Ok(Action::Unrelate(
            objects(&mut op)?
                .into_iter()
                .map(|(t, id, _)| (t, id, who.clone()))
                .collect(),
        )),
        _ => Ok(Action::Acknowledge),
    }
}

fn v2_person_ref(op: &Map<String, Value>) -> Result<PersonRef, Violation> {
    let ids = match op.get("identifiers") {
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(Violation::new(
                "invalid",
                "identifiers",
                "identifiers must be an object",
            ))
        }
        None => {
            return Err(Violation::new(
                "required",
                "identifiers",
                "identifiers must be present",
            ))
        }
    };
    if ids.len() != 1 {
        return Err(Violation::new(
            "invalid",
            "identifiers",
            "identifiers must hold exactly one of id, email, phone or cio_id",
        ));
    }
    let (field, value) = ids.iter().next().expect("one identifier");
    let value = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(Violation::new(
                "invalid",
                format!("identifiers.{field}"),
                format!("identifiers.{field} must be a string"),
            ))
        }
    };
    let r = match field.as_str() {
        "id" => PersonRef::Id(value),
        "email" => PersonRef::Email(value),
        "cio_id" => PersonRef::CioId(value),
        "phone" => {
            return Err(Violation::new(
                "invalid",
                "identifiers.phone",
                "phone is not enabled as an identifier in this workspace",
            ))
        }
        other => {
            return Err(Violation::new(
                "invalid",
                format!("identifiers.{other}"),
                format!("unknown identifier `{other}`: use id, email, phone or cio_id"),
            ))
        }
    };
    check_person_ref(&r).map_err(|mut v| {
        v.field = format!("identifiers.{field}");
        v
    })?;
    Ok(r)
}

fn prepare_v2(op: Value) -> Result<Action, Violation> {
    let Value::Object(mut op) = op else {
        return Err(Violation::new(
            "invalid",
            "",
            "an operation must be a JSON object",
        ));
    };
    let kind = op.get("type").and_then(Value::as_str);
    let action = op.get("action").and_then(Value::as_str);
    match kind {
        Some("person") => {}
        Some("object") if action.is_some() => return prepare_object(op),
        Some("object") | Some("delivery") => {
            return match action {
                Some(_) => Ok(Action::Acknowledge),
                None => Err(Violation::new(
                    "required",
                    "action",
                    "action must be present",
                )),
            }
        }
        Some(other) => {
            return Err(Violation::new(
                "invalid",
                "type",
                format!("unknown type `{other}`: use person, object or delivery"),
            ))
        }
        None => return Err(Violation::new("required", "type", "type must be present")),
    }
    let person = v2_person_ref(&op)?;
    match action {
        Some("identify") => {
            limits::check_timestamp(op.get("timestamp"))?;
            let attrs = match op.remove("attributes") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => {
                    return Err(Violation::new(
                        "invalid",
                        "attributes",
                        "attributes must be an object",
                    ))
                }
            };
            limits::check_attributes(&attrs)?;
            Ok(Action::Identify(person, attrs))
        }
        Some("delete") => Ok(Action::Delete(person)),
        Some("event" | "page" | "screen") => {
            limits::check_event(
                op.get("name"),
                op.get("attributes"),
                "attributes",
                op.get("id"),
                op.get("timestamp"),
            )?;
            let customer_id = match &person {
                PersonRef::Id(v) | PersonRef::Email(v) => v.clone(),
                PersonRef::CioId(v) => format!("cio_{v}"),
            };
            let kind = op["action"].as_str().unwrap_or("event").to_string();
            Ok(Action::Track(Event {
                id: op.get("id").and_then(Value::as_str).map(str::to_string),
                name: op["name"].as_str().unwrap_or_default().to_string(),
                kind,
                timestamp: op.get("timestamp").and_then(Value::as_i64),
                attributes: match op.remove("attributes") {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                },
                customer_id: Some(customer_id),
                anonymous_id: None,
            }))
        }
        Some(
            a @ ("suppress"
            | "unsuppress"
            | "add_device"
            | "delete_device"
            | "add_relationships"
            | "delete_relationships"),
        ) => {
            let a = a.to_string();
            prepare_person_other(op, person, &a)
        }
        Some(a) if OTHER_PERSON_ACTIONS.contains(&a) => Ok(Action::Acknowledge),
        Some(a) => Err(Violation::new(
            "invalid",
            "action",
            format!("unknown person action `{a}`"),
        )),
        None => Err(Violation::new(
            "required",
            "action",
            "action must be present",
        )),
    }
}

/// The head of a v2 operation, read without building a value tree.
#[derive(Deserialize)]
struct OpHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    action: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    identifiers: Option<&'a RawValue>,
    #[serde(borrow)]
    attributes: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
}

/// The fast path for a person `identify` with an object of attributes: they are checked and
/// kept as text. `None` sends the op down the general path (which gives every error its
/// message).
fn prepare_identify(text: &str) -> Option<Result<Action, Violation>> {
    let head: OpHead = serde_json::from_str(text).ok()?;
    if head.kind.as_deref() != Some("person")
        || head.action.as_deref() != Some("identify")
        || head.timestamp.is_some()
    {
        return None;
    }
    let attrs = head.attributes?;
    if !attrs.get().starts_with('{') {
        return None;
    }
    let ids: Value = serde_json::from_str(head.identifiers?.get()).ok()?;
    let mut op = Map::new();
    op.insert("identifiers".into(), ids);
    let person = match v2_person_ref(&op) {
        Ok(p) => p,
        Err(v) => return Some(Err(v)),
    };
    let entries: limits::RawEntries = serde_json::from_str(attrs.get()).ok()?;
    if let Err(v) = limits::check_raw_attributes(&entries) {
        return Some(Err(v));
    }
    let mut found = RawFindings::default();
    for (name, raw) in &entries.0 {
        match name.as_ref() {
            "email" => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::String(e)) => found.email = Some(e),
                _ => found.reserved = true,
            },
            "id" | "_update" => found.reserved = true,
            _ => {}
        }
    }
    let raw = RawValue::from_string(attrs.get().to_string()).ok()?;
    Some(Ok(Action::IdentifyRaw(person, raw, found)))
}

fn apply(store: &mut Store, action: Action) {
    store.stats.ops += 1;
    match action {
        Action::Identify(p, attrs) => store.identify(&p, attrs),
        Action::IdentifyRaw(p, raw, found) => store.identify_raw(&p, raw, &found),
        Action::Delete(p) => {
            store.delete(&p);
        }
        Action::Track(e) => {
            store.track(e);
        }
        Action::Suppress(p) => store.suppress(&p),
        Action::Unsuppress(p) => store.unsuppress(&p),
        Action::AddDevice(d) => store.add_device(d),
        Action::DeleteDevice(p, t) => store.delete_device(&p, &t),
        Action::IdentifyObject(t, id, attrs) => store.identify_object(&t, &id, attrs),
        Action::DeleteObject(t, id) => store.delete_object(&t, &id),
        Action::Relate(all) => {
            for (t, id, p, attrs) in all {
                store.relate(&t, &id, &p, attrs);
            }
        }
        Action::Unrelate(all) => {
            for (t, id, p) in all {
                store.unrelate(&t, &id, &p);
            }
        }
        Action::Several(all) => {
            for a in all {
                apply(store, a);
            }
            store.stats.ops -= 1;
        }
        Action::Acknowledge => {}
    }
}

#[derive(Deserialize)]
struct SegmentQuery {
    id_type: Option<String>,
}

async fn segment_add(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    axum::extract::Query(q): axum::extract::Query<SegmentQuery>,
    body: Bytes,
) -> Response {
    segment_change(shared, segment, q, body, true)
}

async fn segment_remove(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    axum::extract::Query(q): axum::extract::Query<SegmentQuery>,
    body: Bytes,
) -> Response {
    segment_change(shared, segment, q, body, false)
}

/// `POST /api/v1/segments/{segment_id}/add_customers|remove_customers`: up to 1000 ids of the
/// `id_type` (`id` by default, `email`, `cio_id`); ids of another kind are ignored.
fn segment_change(
    shared: Arc<Shared>,
    segment: String,
    q: SegmentQuery,
    body: Bytes,
    add: bool,
) -> Response {
    let path = if add {
        "/api/v1/segments/{segment_id}/add_customers"
    } else {
        "/api/v1/segments/{segment_id}/remove_customers"
    };
    let prepared = (|| {
        let segment: u64 = segment
            .parse()
            .map_err(|_| Violation::new("invalid", "segment_id", "segment_id must be a number"))?;
        let id_type = q.id_type.unwrap_or_else(|| "id".into());
        if !["id", "email", "cio_id"].contains(&id_type.as_str()) {
            return Err(Violation::new(
                "invalid",
                "id_type",
                format!("id_type must be id, email or cio_id, not `{id_type}`"),
            ));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| Violation::new("invalid", "", format!("malformed JSON: {e}")))?;
        sallyport_contract::check_request_cached(path, "post", &value).map_err(|e| {
            Violation::new(
                "invalid",
                "ids",
                format!("the request does not match Customer.io's Track API document: {e}"),
            )
        })?;
        let ids: Vec<String> = value["ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let ids = ids
            .into_iter()
            .filter(|i| match id_type.as_str() {
                "email" => limits::is_email(i),
                _ => !i.trim().is_empty(),
            })
            .map(|i| match id_type.as_str() {
                "email" => i.to_lowercase(),
                "cio_id" => format!("cio_{i}"),
                _ => i,
            })
            .collect::<Vec<_>>();
        Ok((segment, ids))
    })();
    let mut store = shared.store.lock().expect("store lock");
    match prepared {
        Ok((segment, ids)) => {
            store.segment(segment, ids, add);
            drop(store);
            ok()
        }
        Err(v) => {
            store.stats.rejected_requests += 1;
            drop(store);
            v1_error(StatusCode::BAD_REQUEST, v.message)
        }
    }
}

async fn entity_v2(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let prepared = if body.len() > limits::MAX_ITEM_BYTES {
        Err(Violation::new(
            "too_large",
            "",
            format!(
                "request is {} bytes: an entity request must be {} bytes or smaller",
                body.len(),
                limits::MAX_ITEM_BYTES
            ),
        ))
    } else {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| Violation::new("invalid", "", format!("malformed JSON: {e}")))
            .and_then(prepare_v2)
    };
    let mut store = shared.store.lock().expect("store lock");
    match prepared {
        Ok(action) => {
            apply(&mut store, action);
            drop(store);
            ok()
        }
        Err(v) => {
            store.stats.rejected_requests += 1;
            drop(store);
            v2_errors(StatusCode::BAD_REQUEST, vec![violation_json(&v, None)])
        }
    }
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

async fn batch_v2(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let whole = |message: String| {
        vec![violation_json(
            &Violation::new("invalid", "batch", message),
            None,
        )]
    };
    if body.len() >= limits::MAX_BATCH_BYTES {
        shared
            .store
            .lock()
            .expect("store lock")
            .stats
            .rejected_requests += 1;
        return v2_errors(
            StatusCode::BAD_REQUEST,
            whole(format!(
                "batch request is {} bytes: it must be smaller than {} bytes",
                body.len(),
                limits::MAX_BATCH_BYTES
            )),
        );
    }
    let parsed: BatchBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            shared
                .store
                .lock()
                .expect("store lock")
                .stats
                .rejected_requests += 1;
            return v2_errors(
                StatusCode::BAD_REQUEST,
                whole(format!("the body must be {{\"batch\": [operations]}}: {e}")),
            );
        }
    };
    let prepared: Vec<Result<Action, Violation>> = parsed
        .batch
        .iter()
        .map(|raw| {
            let text = raw.get();
            if text.len() > limits::MAX_ITEM_BYTES {
                return Err(Violation::new(
                    "too_large",
                    "",
                    format!(
                        "operation is {} bytes: each must be {} bytes or smaller",
                        text.len(),
                        limits::MAX_ITEM_BYTES
                    ),
                ));
            }
            if let Some(fast) = prepare_identify(text) {
                return fast;
            }
            serde_json::from_str::<Value>(text)
                .map_err(|e| Violation::new("invalid", "", format!("malformed JSON: {e}")))
                .and_then(prepare_v2)
        })
        .collect();
    let mut errors = Vec::new();
    let mut store = shared.store.lock().expect("store lock");
    store.stats.batches += 1;
    for (i, p) in prepared.into_iter().enumerate() {
        match p {
            Ok(action) => apply(&mut store, action),
            Err(v) => {
                store.stats.rejected_ops += 1;
                errors.push(violation_json(&v, Some(i)));
            }
        }
    }
    drop(store);
    if errors.is_empty() {
        ok()
    } else {
        v2_errors(StatusCode::MULTI_STATUS, errors)
    }
}
