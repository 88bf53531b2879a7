//! `/_sandbox`: inspection and control for tests, the demo and benchmarks. No auth: the sandbox
//! listens on loopback and holds no real data.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::Faults;
use crate::Shared;

pub fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/people", get(people))
        .route("/_sandbox/people/{identifier}", get(person))
        .route("/_sandbox/events", get(events))
        .route("/_sandbox/objects", get(objects))
        .route("/_sandbox/relationships", get(relationships))
        .route("/_sandbox/devices", get(devices))
        .route("/_sandbox/segments", get(segments))
        .route("/_sandbox/segments/{segment_id}", get(segment))
        .route("/_sandbox/suppressed", get(suppressed))
        .route("/_sandbox/deleted", get(deleted))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/faults", put(set_faults).get(get_faults))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn people(State(shared): State<Arc<Shared>>, Query(q): Query<PageQuery>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let page = store.people_page(q.limit.unwrap_or(100), q.offset.unwrap_or(0));
    Json(json!({ "total": store.stats.people, "people": page })).into_response()
}

async fn person(State(shared): State<Arc<Shared>>, Path(identifier): Path<String>) -> Response {
    let store = shared.store.lock().expect("store lock");
    match store.find(&identifier) {
        Some(p) => Json(p).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no person with identifier {identifier:?}")})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct EventQuery {
    customer_id: Option<String>,
    anonymous_id: Option<String>,
    limit: Option<usize>,
}

async fn events(State(shared): State<Arc<Shared>>, Query(q): Query<EventQuery>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let events = store.events(
        q.customer_id.as_deref(),
        q.anonymous_id.as_deref(),
        q.limit.unwrap_or(1000),
    );
    Json(json!({ "events": events })).into_response()
}

async fn objects(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let all: Vec<_> = store.objects.values().collect();
    Json(json!({ "objects": all })).into_response()
}

async fn relationships(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let all: Vec<_> = store.relationships.values().collect();
    Json(json!({ "relationships": all })).into_response()
}

async fn devices(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let all: Vec<_> = store.devices.values().collect();
    Json(json!({ "devices": all })).into_response()
}

async fn segments(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.lock().expect("store lock");
    Json(json!({ "segments": store.segments })).into_response()
}

async fn segment(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    let store = shared.store.lock().expect("store lock");
    let members: Vec<&String> = store
        .segments
        .get(&id)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    Json(json!({ "segment_id": id, "members": members })).into_response()
}

async fn suppressed(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.lock().expect("store lock");
    Json(json!({ "suppressed": store.suppressed })).into_response()
}

async fn deleted(State(shared): State<Arc<Shared>>) -> Response {
    let store = shared.store.lock().expect("store lock");
    Json(json!({ "deleted": store.deleted })).into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    Json(json!({})).into_response()
}

async fn set_faults(State(shared): State<Arc<Shared>>, Json(faults): Json<Faults>) -> Response {
    match shared.set_faults(faults) {
        Ok(()) => Json(shared.faults()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults()).into_response()
}
