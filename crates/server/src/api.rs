//! The JSON API under `/api/v1`, health and metrics.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sallyport_config::{App, Config, Model, Sync, Warehouse};
use sallyport_destinations::Destination;
use sallyport_engine::{Engine, RunError};
use sallyport_sources::Source;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{entities, scheduler, ApiError, Server};

pub fn routes(server: Arc<Server>) -> Router {
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/warehouses",
            get(warehouses).post(create::<Warehouses>),
        )
        .route(
            "/api/v1/warehouses/{name}",
            get(warehouse)
                .put(update::<Warehouses>)
                .delete(delete::<Warehouses>),
        )
        .route("/api/v1/warehouses/{name}/test", post(test_warehouse))
        .route("/api/v1/apps", get(apps).post(create::<Apps>))
        .route(
            "/api/v1/apps/{name}",
            get(app).put(update::<Apps>).delete(delete::<Apps>),
        )
        .route("/api/v1/apps/{name}/test", post(test_app))
        .route("/api/v1/syncs", get(syncs).post(create::<Syncs>))
        .route(
            "/api/v1/syncs/{name}",
            get(sync).put(update::<Syncs>).delete(delete::<Syncs>),
        )
        .route("/api/v1/syncs/{name}/runs", get(runs).post(run_now))
        .route("/api/v1/syncs/{name}/failures", get(failures))
        .route("/api/v1/syncs/{name}/requests", get(requests))
        .route("/api/v1/syncs/{name}/preview", post(preview))
        .route("/api/v1/syncs/{name}/pause", post(pause))
        .route("/api/v1/syncs/{name}/resume", post(resume))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{name}/test", post(alert_test))
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
    let running = server
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    (
        [("content-type", "text/plain; version=0.0.4")],
        server.metrics.render(running),
    )
        .into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

fn warehouse_json(config: &Config, name: &str, w: &Warehouse) -> Value {
    let defined_in = config.defined_in(entities::WAREHOUSE, name);
    // Secret settings (a URL can carry a password) are never shown.
    let mut shown = w.public();
    shown.insert("name".into(), json!(name));
    shown.insert("defined_in".into(), json!(defined_in));
    Value::Object(shown)
}

fn app_json(config: &Config, name: &str, a: &App) -> Value {
    // Secrets are never shown; credentials in a track_url neither.
    let mut shown = a.public();
    shown.insert("name".into(), json!(name));
    shown.insert(
        "defined_in".into(),
        json!(config.defined_in(entities::APP, name)),
    );
    Value::Object(shown)
}

async fn warehouses(State(s): State<Arc<Server>>) -> Json<Value> {
    let e = s.engine();
    let list: Vec<Value> = e
        .config
        .warehouses
        .iter()
        .map(|(n, w)| warehouse_json(&e.config, n, w))
        .collect();
    Json(json!({ "warehouses": list }))
}

fn find_warehouse(e: &Engine, name: &str) -> Result<Warehouse, ApiError> {
    e.config
        .warehouses
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("warehouse", name))
}

fn find_app(e: &Engine, name: &str) -> Result<App, ApiError> {
    e.config
        .apps
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("app", name))
}

async fn warehouse(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = s.engine();
    let w = find_warehouse(&e, &name)?;
    Ok(Json(warehouse_json(&e.config, &name, &w)))
}

/// A connection test's outcome: whether it worked, and a line for people. The API and the UI
/// both answer with this.
pub(crate) struct Tested {
    pub ok: bool,
    pub message: String,
}

/// Connects to a warehouse of the config.
pub(crate) async fn check_warehouse(s: &Server, name: &str) -> Result<Tested, ApiError> {
    let w = find_warehouse(&s.engine(), name)?;
    Ok(check_warehouse_settings(&w).await)
}

/// Connects to a warehouse, saved or not.
pub(crate) async fn check_warehouse_settings(w: &sallyport_config::Warehouse) -> Tested {
    match Source::open(w).await {
        Ok(_) => Tested {
            ok: true,
            message: format!("connected ({})", w.kind()),
        },
        Err(e) => Tested {
            ok: false,
            message: e.to_string(),
        },
    }
}

/// Asks an app of the config whether it takes the credentials.
pub(crate) async fn check_app(s: &Server, name: &str) -> Result<Tested, ApiError> {
    let a = find_app(&s.engine(), name)?;
    Ok(check_app_settings(name, &a).await)
}

/// Asks an app, saved or not, whether it takes the credentials.
pub(crate) async fn check_app_settings(name: &str, a: &App) -> Tested {
    match Destination::new(name, a).check().await {
        Ok(m) => Tested {
            ok: true,
            message: m,
        },
        Err(e) => Tested {
            ok: false,
            message: e.to_string(),
        },
    }
}

async fn test_warehouse(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = check_warehouse(&s, &name).await?;
    Ok(Json(json!({"ok": t.ok, "message": t.message})))
}

async fn apps(State(s): State<Arc<Server>>) -> Json<Value> {
    let e = s.engine();
    let list: Vec<Value> = e
        .config
        .apps
        .iter()
        .map(|(n, a)| app_json(&e.config, n, a))
        .collect();
    Json(json!({ "apps": list }))
}

async fn app(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = s.engine();
    let a = find_app(&e, &name)?;
    Ok(Json(app_json(&e.config, &name, &a)))
}

async fn test_app(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = check_app(&s, &name).await?;
    Ok(Json(json!({"ok": t.ok, "message": t.message})))
}

async fn sync_json(s: &Arc<Server>, name: &str, sync: &Sync, paused: &[String]) -> Value {
    let defined_in = s.engine().config.defined_in(entities::SYNC, name);
    let last = s
        .engine()
        .state
        .runs(Some(name), 1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next());
    let running = s
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned();
    let model = match &sync.model {
        Model::Sql(q) => json!({"sql": q}),
        Model::Table(t) => json!({"table": t}),
    };
    json!({
        "name": name,
        "id": sync.state_id(name),
        "defined_in": defined_in,
        "warehouse": sync.warehouse,
        "model": model,
        "app": sync.app,
        "object": sync.object.name(),
        "mode": sync.object.mode(),
        "settings": sync.object.settings(),
        "mapping": sync.mapping,
        "schedule": sync.schedule,
        "paused": paused.iter().any(|p| p == name),
        "running": running,
        "next_run_at": scheduler::next_run(s, name),
        "last_run": last,
    })
}

async fn syncs(State(s): State<Arc<Server>>) -> Result<Json<Value>, ApiError> {
    let e = s.engine();
    let paused = e.state.paused().await.map_err(internal)?;
    let mut list = Vec::new();
    for (name, sync) in &e.config.syncs {
        list.push(sync_json(&s, name, sync, &paused).await);
    }
    Ok(Json(json!({ "syncs": list })))
}

fn find_sync(s: &Server, name: &str) -> Result<Sync, ApiError> {
    s.engine()
        .config
        .syncs
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("sync", name))
}

/// An error of the server's own (the state store, a task): logged with an incident id, and
/// answered with that id only, never with its text.
fn internal(e: impl std::fmt::Display) -> ApiError {
    let incident = format!("{:08x}", fastrand::u32(..));
    tracing::error!(incident = %incident, error = %e, "internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!(
            "an internal error occurred (incident {incident}); the server's log has the details"
        ),
    )
}

async fn sync(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sync = find_sync(&s, &name)?;
    let paused = s.engine().state.paused().await.map_err(internal)?;
    Ok(Json(sync_json(&s, &name, &sync, &paused).await))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// The largest page any listing answers with.
pub const MAX_PAGE: usize = 1000;

/// A page of a listing: `limit` (at most [`MAX_PAGE`]) items after the cursor `after`.
#[derive(serde::Deserialize)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

impl Page {
    fn limit(&self, default: usize) -> usize {
        self.limit.unwrap_or(default).clamp(1, MAX_PAGE)
    }
}

/// Runs, newest first, a page at a time: `next` is the cursor (`after`) of the next page.
async fn runs(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(q): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    let limit = q.limit(50);
    let before = match q.after.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Err(invalid("`after` is a run id")),
    };
    let runs = s
        .engine()
        .state
        .runs_page(Some(&name), before, limit)
        .await
        .map_err(internal)?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({ "runs": runs, "next": next })))
}

/// `POST /api/v1/syncs/{name}/runs?allow_removals=true` lets the run remove more rows than
/// the sync's `max_removals` allows (once).
#[derive(Deserialize, Default)]
struct RunQuery {
    #[serde(default)]
    allow_removals: bool,
}

async fn run_now(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, ApiError> {
    s.refuse_if_held(&name).await?;
    let started = s.start_run_with(&name, "manual", q.allow_removals)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"sync": name, "running": started})),
    )
        .into_response())
}

/// Failed rows by key, a page at a time: `next` is the cursor (`after`) of the next page.
async fn failures(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(q): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    let limit = q.limit(100);
    let f = s
        .engine()
        .state
        .failures_page(&s.engine().state_key(&name), q.after.as_deref(), limit)
        .await
        .map_err(internal)?;
    let next = (f.len() == limit)
        .then(|| f.last().map(|x| x.key.clone()))
        .flatten();
    Ok(Json(json!({ "failures": f, "next": next })))
}

/// The API inspector: the sync's last requests to the app, the newest first, as this process
/// made them.
async fn requests(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    Ok(Json(
        json!({ "requests": s.engine().requests(&name).await.map_err(run_error)? }),
    ))
}

async fn alerts(State(s): State<Arc<Server>>) -> Result<Json<Value>, ApiError> {
    let e = s.engine();
    let open = e.state.incidents().await.map_err(internal)?;
    // The webhook is a secret (a Slack webhook's URL is its credential): shown as ***.
    let list: Vec<Value> = e
        .config
        .alerts
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["open"] = json!(open
                .iter()
                .filter(|i| i.alert == a.name)
                .collect::<Vec<_>>());
            v
        })
        .collect();
    Ok(Json(json!({ "alerts": list })))
}

async fn alert_test(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = s.engine();
    if !e.config.alerts.iter().any(|a| a.name == name) {
        return Err(ApiError::not_found("alert", &name));
    }
    match e.alert_test(&name).await {
        Ok(()) => Ok(Json(json!({"sent": true}))),
        Err(m) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "webhook_failed", m)),
    }
}

async fn workers(State(s): State<Arc<Server>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "workers": s.workers().await.map_err(internal)? }),
    ))
}

async fn preview(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    let limit = q.limit.unwrap_or(5).clamp(1, MAX_PAGE);
    match s.engine().preview(&name, limit, false).await {
        Ok(p) => Ok(Json(serde_json::to_value(p).map_err(internal)?)),
        Err(e) => Err(run_error(e)),
    }
}

fn run_error(e: RunError) -> ApiError {
    // The error's kind decides the status and the code; its text says what happened in the
    // user's words (it carries no internal detail: a state store failure is logged, not sent).
    let kind = e.kind();
    let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    if kind == sallyport_engine::ErrorKind::State {
        return internal(e);
    }
    ApiError::new(status, kind.code(), e.to_string())
}

async fn pause(
    State(s): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find_sync(&s, &name)?;
    s.engine()
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
    s.engine()
        .state
        .set_paused(&name, false)
        .await
        .map_err(internal)?;
    Ok(Json(json!({"sync": name, "paused": false})))
}

// ---- Entities made through the API (or the UI): create, update, delete.

pub(crate) async fn save(
    s: &Arc<Server>,
    kind: &'static str,
    name: Option<String>,
    request: Value,
    create: bool,
) -> Result<Response, ApiError> {
    let (status, shown) = store(s, kind, name, request, create).await?;
    Ok((status, Json(shown)).into_response())
}

/// Checks and stores an entity; the status and what may be shown of it.
pub(crate) async fn store(
    s: &Arc<Server>,
    kind: &'static str,
    name: Option<String>,
    request: Value,
    create: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let _edit = s.edits.lock().await;
    let (named, mut body) = entities::body_of(request).map_err(invalid)?;
    let name = match (name, named) {
        (Some(path), Some(n)) if path != n => {
            return Err(invalid(format!(
                "the body names `{n}`, the URL `{path}`: renaming is not supported"
            )))
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => return Err(invalid("`name` is required")),
    };
    if !entities::valid_name(&name) {
        return Err(invalid(format!(
            "name `{name}`: use letters, digits, `-` and `_` (at most 64)"
        )));
    }
    let engine = s.engine();
    let exists = match kind {
        entities::WAREHOUSE => engine.config.warehouses.contains_key(&name),
        entities::APP => engine.config.apps.contains_key(&name),
        _ => engine.config.syncs.contains_key(&name),
    };
    if exists && engine.config.defined_in(kind, &name) == sallyport_config::FROM_FILE {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "read_only",
            format!("{kind} `{name}` is defined in sallyport.yaml: change it there"),
        ));
    }
    if create && exists {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("a {kind} named `{name}` exists already"),
        ));
    }
    if !create && !exists {
        return Err(ApiError::not_found(kind, &name));
    }
    let mut stored_id = None;
    if !create {
        let stored = entities::load(kind, &engine.state, &s.vault)
            .await
            .map_err(internal)?;
        if let Some(old) = stored.get(&name) {
            if let Err((missing, address)) = entities::keep_secrets(kind, &mut body, old) {
                let message = format!(
                    "`{address}` changed: give {} again (a saved secret is only ever sent where it was saved for)",
                    missing
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                );
                let mut err = invalid(message.clone());
                err.fields = missing
                    .iter()
                    .map(|f| (f.to_string(), message.clone()))
                    .collect();
                return Err(err);
            }
            stored_id = old.get("id").cloned();
        }
    }
    if kind == entities::SYNC {
        // A sync's state follows its id, which it keeps for life: generated when it is made,
        // never changed by an update.
        if let Value::Object(fields) = &mut body {
            let id = match stored_id {
                Some(id) => id,
                None if create => fields
                    .get("id")
                    .cloned()
                    .unwrap_or_else(|| json!(format!("sync-{:016x}", fastrand::u64(..)))),
                None => json!(name),
            };
            fields.insert("id".into(), id);
        }
    }
    if kind == entities::WAREHOUSE {
        // Settings that name a file on this machine (an SQLite warehouse): only inside the data
        // folder, whatever the user typed.
        let files = body
            .get("type")
            .and_then(Value::as_str)
            .and_then(sallyport_sources::warehouse_kind)
            .map(|w| w.fields)
            .unwrap_or_default()
            .iter()
            .filter(|f| f.kind == sallyport_config::FieldKind::File);
        for f in files {
            let given = match body.get(f.name) {
                None | Some(Value::Null) if !f.required => continue,
                Some(Value::String(v)) if v.is_empty() && !f.required => {
                    body.as_object_mut().map(|m| m.remove(f.name));
                    continue;
                }
                // The system's trusted roots are no file.
                Some(Value::String(v)) if f.name == "sslrootcert" && v == "system" => continue,
                other => other
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
            let resolved = s.local_file(&given).map_err(|m| {
                let mut err = invalid(m.clone());
                err.fields = vec![(f.name.to_string(), m)];
                err
            })?;
            body[f.name] = json!(resolved);
        }
    }
    entities::check(kind, &body).map_err(invalid)?;
    // Where a connection made here goes: never to a link-local address, and to a private one
    // only when the server allows it.
    let hosts = match kind {
        entities::WAREHOUSE => serde_json::from_value::<sallyport_config::Warehouse>(body.clone())
            .map(|w| w.hosts())
            .unwrap_or_default(),
        entities::APP => serde_json::from_value::<App>(body.clone())
            .map(|a| a.hosts())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    s.check_hosts(&hosts).await.map_err(invalid)?;
    entities::merged_with(
        &s.base,
        &engine.state,
        &s.vault,
        Some((kind, &name, Some(&body))),
    )
    .await
    .map_err(|e| {
        let mut err = invalid(entities::messages(&e));
        err.fields = entities::fields_of(kind, &name, &e);
        err
    })?;
    let sealed = entities::seal(kind, &name, body.clone(), &s.vault);
    engine
        .state
        .put_entity(kind, &name, &sealed.to_string())
        .await
        .map_err(internal)?;
    s.reload().await.map_err(internal)?;
    let mut shown = entities::public(kind, &body);
    shown.insert("name".into(), json!(name));
    shown.insert("defined_in".into(), json!(sallyport_config::FROM_STORE));
    let status = if create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Value::Object(shown)))
}

/// Deletes an entity made in the UI or the API.
pub(crate) async fn remove_entity(
    s: &Arc<Server>,
    kind: &'static str,
    name: &str,
) -> Result<(), ApiError> {
    remove(s, kind, name).await.map(|_| ())
}

async fn remove(s: &Arc<Server>, kind: &'static str, name: &str) -> Result<Response, ApiError> {
    let _edit = s.edits.lock().await;
    let engine = s.engine();
    if engine.config.defined_in(kind, name) == sallyport_config::FROM_FILE {
        let exists = match kind {
            entities::WAREHOUSE => engine.config.warehouses.contains_key(name),
            entities::APP => engine.config.apps.contains_key(name),
            _ => engine.config.syncs.contains_key(name),
        };
        return Err(if exists {
            ApiError::new(
                StatusCode::CONFLICT,
                "read_only",
                format!("{kind} `{name}` is defined in sallyport.yaml: change it there"),
            )
        } else {
            ApiError::not_found(kind, name)
        });
    }
    entities::merged_with(&s.base, &engine.state, &s.vault, Some((kind, name, None)))
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "in_use", entities::messages(&e)))?;
    engine
        .state
        .delete_entity(kind, name)
        .await
        .map_err(internal)?;
    s.reload().await.map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// The kind of entity a route edits.
trait Kind {
    const NAME: &'static str;
}
struct Warehouses;
struct Apps;
struct Syncs;
impl Kind for Warehouses {
    const NAME: &'static str = entities::WAREHOUSE;
}
impl Kind for Apps {
    const NAME: &'static str = entities::APP;
}
impl Kind for Syncs {
    const NAME: &'static str = entities::SYNC;
}

async fn create<K: Kind>(
    State(s): State<Arc<Server>>,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    save(&s, K::NAME, None, b, true).await
}

async fn update<K: Kind>(
    State(s): State<Arc<Server>>,
    Path(n): Path<String>,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    save(&s, K::NAME, Some(n), b, false).await
}

async fn delete<K: Kind>(
    State(s): State<Arc<Server>>,
    Path(n): Path<String>,
) -> Result<Response, ApiError> {
    remove(&s, K::NAME, &n).await
}
