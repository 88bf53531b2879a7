//! The JSON API under `/api/v1`, health and metrics.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sallyport_config::{App, Model, Sync, Warehouse};
use sallyport_destinations::Destination;
use sallyport_engine::RunError;
use sallyport_sources::Source;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{scheduler, ApiError, Server};

pub fn routes(server: Arc<Server>) -> Router {
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/warehouses", get(warehouses))
        .route("/api/v1/warehouses/{name}", get(warehouse))
        .route("/api/v1/warehouses/{name}/test", post(test_warehouse))
        .route("/api/v1/apps", get(apps))
        .route("/api/v1/apps/{name}", get(app))
        .route("/api/v1/apps/{name}/test", post(test_app))
        .route("/api/v1/syncs", get(syncs))
        .route("/api/v1/syncs/{name}", get(sync))
        .route("/api/v1/syncs/{name}/runs", get(runs).post(run_now))
        .route("/api/v1/syncs/{name}/failures", get(failures))
        .route("/api/v1/syncs/{name}/preview", post(preview))
        .route("/api/v1/syncs/{name}/pause", post(pause))
        .route("/api/v1/syncs/{name}/resume", post(resume))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(server.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .with_state(server)
}

async fn auth(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    if server.authorized(req.headers()) {
        next.run(req).await
    } else {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the server's token: Authorization: Bearer TOKEN",
        )
        .into_response();
        resp.headers_mut().insert(
            "WWW-Authenticate",
            "Bearer".parse().expect("a header value"),
        );
        resp
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    let running = server.running.lock().expect("running lock").len();
    (
        [("content-type", "text/plain; version=0.0.4")],
        server.metrics.render(running),
    )
        .into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// Where an entity is defined.
const FROM_FILE: &str = "sallyport.yaml";

fn warehouse_json(name: &str, w: &Warehouse) -> Value {
    // The URL can carry a password: it is never shown.
    match w {
        Warehouse::Postgres { .. } => {
            json!({"name": name, "type": "postgres", "defined_in": FROM_FILE})
        }
        Warehouse::Sqlite { path } => {
            json!({"name": name, "type": "sqlite", "path": path, "defined_in": FROM_FILE})
        }
    }
}

fn app_json(name: &str, a: &App) -> Value {
    let App::Customerio(c) = a;
    // Site ID and API key are never shown.
    json!({
        "name": name,
        "type": "customerio",
        "region": c.region,
        "track_url": c.track_url,
        "delivery": c.delivery,
        "defined_in": FROM_FILE,
    })
}

async fn warehouses(State(s): State<Arc<Server>>) -> Json<Value> {
    let list: Vec<Value> = s
        .engine
        .config
        .warehouses
        .iter()
        .map(|(n, w)| warehouse_json(n, w))
        .collect();
    Json(json!({ "warehouses": list }))
}

async fn warehouse(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let w = s
        .engine
        .config
        .warehouses
        .get(&name)
        .ok_or_else(|| ApiError::not_found("warehouse", &name))?;
    Ok(Json(warehouse_json(&name, w)))
}

async fn test_warehouse(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let w = s
        .engine
        .config
        .warehouses
        .get(&name)
        .ok_or_else(|| ApiError::not_found("warehouse", &name))?;
    Ok(Json(match Source::open(w).await {
        Ok(_) => json!({"ok": true, "message": format!("{} reachable", w.kind())}),
        Err(e) => json!({"ok": false, "message": e.to_string()}),
    }))
}

async fn apps(State(s): State<Arc<Server>>) -> Json<Value> {
    let list: Vec<Value> = s
        .engine
        .config
        .apps
        .iter()
        .map(|(n, a)| app_json(n, a))
        .collect();
    Json(json!({ "apps": list }))
}

async fn app(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = s
        .engine
        .config
        .apps
        .get(&name)
        .ok_or_else(|| ApiError::not_found("app", &name))?;
    Ok(Json(app_json(&name, a)))
}

async fn test_app(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = s
        .engine
        .config
        .apps
        .get(&name)
        .ok_or_else(|| ApiError::not_found("app", &name))?;
    let mut d = Destination::new(&name, a);
    Ok(Json(match d.check().await {
        Ok(m) => json!({"ok": true, "message": m}),
        Err(e) => json!({"ok": false, "message": e.to_string()}),
    }))
}

async fn sync_json(s: &Arc<Server>, name: &str, sync: &Sync, paused: &[String]) -> Value {
    let last = s
        .engine
        .state
        .runs(Some(name), 1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next());
    let running = s.running.lock().expect("running lock").get(name).cloned();
    let model = match &sync.model {
        Model::Sql(q) => json!({"sql": q}),
        Model::Table(t) => json!({"table": t}),
    };
    json!({
        "name": name,
        "defined_in": FROM_FILE,
        "warehouse": sync.warehouse,
        "model": model,
        "app": sync.app,
        "object": sync.object.name(),
        "mode": sync.mode,
        "settings": {
            "primary_key": sync.primary_key, "identifier": sync.identifier,
            "event_type": sync.event_type, "event_id": sync.event_id,
            "customer_id": sync.customer_id, "anonymous_id": sync.anonymous_id,
            "timestamp": sync.timestamp, "event_name": sync.event_name, "page_url": sync.page_url,
        },
        "mapping": sync.mapping,
        "schedule": sync.schedule,
        "paused": paused.iter().any(|p| p == name),
        "running": running,
        "next_run_at": scheduler::next_run(s, name),
        "last_run": last,
    })
}

async fn syncs(State(s): State<Arc<Server>>) -> Result<Json<Value>, ApiError> {
    let paused = s.engine.state.paused().await.map_err(internal)?;
    let mut list = Vec::new();
    for (name, sync) in &s.engine.config.syncs {
        list.push(sync_json(&s, name, sync, &paused).await);
    }
    Ok(Json(json!({ "syncs": list })))
}

fn find_sync<'a>(s: &'a Server, name: &str) -> Result<&'a Sync, ApiError> {
    s.engine
        .config
        .syncs
        .get(name)
        .ok_or_else(|| ApiError::not_found("sync", name))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

async fn sync(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sync = find_sync(&s, &name)?;
    let paused = s.engine.state.paused().await.map_err(internal)?;
    Ok(Json(sync_json(&s, &name, sync, &paused).await))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn runs(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    let runs = s
        .engine
        .state
        .runs(Some(&name), q.limit.unwrap_or(50))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "runs": runs })))
}

async fn run_now(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let started = s.start_run(&name, "manual")?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"sync": name, "running": started})),
    )
        .into_response())
}

async fn failures(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    let f = s.engine.state.failures(&name).await.map_err(internal)?;
    Ok(Json(json!({ "failures": f })))
}

async fn preview(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    match s.engine.preview(&name, q.limit.unwrap_or(5), false).await {
        Ok(p) => Ok(Json(serde_json::to_value(p).map_err(internal)?)),
        Err(e) => Err(run_error(e)),
    }
}

fn run_error(e: RunError) -> ApiError {
    let code = match &e {
        RunError::Config(_) => "invalid_settings",
        RunError::AlreadyRunning(_) => "already_running",
        RunError::Warehouse(_) => "warehouse_error",
        RunError::Credentials(_) => "credentials_rejected",
        RunError::App(_) => "app_error",
        RunError::State(_) => "state_error",
    };
    let status = match &e {
        RunError::AlreadyRunning(_) => StatusCode::CONFLICT,
        RunError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, code, e.to_string())
}

async fn pause(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    s.engine
        .state
        .set_paused(&name, true)
        .await
        .map_err(internal)?;
    Ok(Json(json!({"sync": name, "paused": true})))
}

async fn resume(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    s.engine
        .state
        .set_paused(&name, false)
        .await
        .map_err(internal)?;
    Ok(Json(json!({"sync": name, "paused": false})))
}
