//! The web UI: server-rendered pages (no build step; the little script and style are embedded),
//! behind a login with the server's token (an HttpOnly, SameSite=Strict session cookie; every
//! form carries the session's CSRF token).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sallyport_config::{object_kind, App, FieldKind, Model, OBJECTS};
use sallyport_destinations::Destination;
use sallyport_sources::{Source, WAREHOUSES};
use serde_json::{json, Value};

use crate::{api, entities, scheduler, ApiError, Server};

const STYLE: &str = include_str!("ui.css");
const SCRIPT: &str = include_str!("ui.js");
const COOKIE: &str = "sallyport_session";

type FormData = Form<HashMap<String, String>>;

pub fn routes(server: Arc<Server>) -> Router {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/syncs") }))
        .route("/syncs", get(syncs_page))
        .route("/syncs/new", get(new_sync_page).post(new_sync_submit))
        .route("/syncs/{name}", get(sync_page))
        .route("/syncs/{name}/live", get(sync_live))
        .route("/syncs/{name}/{action}", post(sync_action_route))
        .route("/syncs/{name}/preview", get(sync_preview))
        .route("/apps", get(apps_page).post(app_create))
        .route("/apps/test", post(app_test_unsaved))
        .route("/apps/{name}/test", post(app_test))
        .route("/warehouses", get(warehouses_page).post(warehouse_create))
        .route("/warehouses/{name}/test", post(warehouse_test))
        .route("/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            session,
        ));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route(
            "/assets/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .route(
            "/assets/ui.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }),
        )
        .merge(pages)
        .with_state(server)
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

/// The session's CSRF token, if the request belongs to a session.
fn csrf_of(server: &Server, headers: &HeaderMap) -> Option<String> {
    let sid = session_id(headers)?;
    server
        .sessions
        .lock()
        .expect("sessions lock")
        .get(&sid)
        .cloned()
}

/// The largest form a page posts.
const FORM_LIMIT: usize = 1 << 20;

/// Every page needs a session; every state-changing request (anything but GET and HEAD) also
/// needs the session's CSRF token, in the `x-csrf-token` header (set by the page's script) or
/// in the form's `csrf` field. Checked here once, for every route, so that no handler can
/// forget it.
async fn session(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let Some(csrf) = csrf_of(&server, req.headers()) else {
        return Redirect::to("/login").into_response();
    };
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let header = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response(),
    };
    let field = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    let given = header.or(field);
    if !given.is_some_and(|g| crate::constant_time_eq(g.as_bytes(), csrf.as_bytes())) {
        return (
            StatusCode::FORBIDDEN,
            "the form is stale or forged: reload the page",
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Random hex from the system's source; without one there is no safe session, so it panics.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("the system's random source (/dev/urandom)");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A whole page.
fn page(title: &str, csrf: Option<&str>, body: &str) -> Html<String> {
    let nav = if csrf.is_some() {
        format!(
            r#"<nav><a href="/syncs">Syncs</a><a href="/apps">Apps</a><a href="/warehouses">Warehouses</a>
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button class="link">Log out</button></form></nav>"#,
            esc(csrf.unwrap_or_default())
        )
    } else {
        String::new()
    };
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{} · Sallyport</title>
<meta name="csrf" content="{}"><link rel="stylesheet" href="/assets/style.css"><script src="/assets/ui.js" defer></script></head>
<body><header><strong>Sallyport</strong>{nav}</header><main><h1>{}</h1>{body}</main></body></html>"#,
        esc(title),
        esc(csrf.unwrap_or_default()),
        esc(title)
    ))
}

fn hidden_csrf(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

fn banner(kind: &str, text: &str) -> String {
    format!(
        r#"<p class="banner {kind}" role="status">{}</p>"#,
        esc(text)
    )
}

// ---- Login

async fn login_page() -> Html<String> {
    page(
        "Log in",
        None,
        r#"<form method="post" action="/login" class="card"><label>Server token <input type="password" name="token" autocomplete="current-password" required></label>
<p class="hint">Printed by <code>sallyport serve</code> at first start, or set with SALLYPORT_TOKEN.</p><button>Log in</button></form>"#,
    )
}

async fn login(State(server): State<Arc<Server>>, Form(form): FormData) -> Response {
    let given = form.get("token").cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {given}")
            .parse()
            .unwrap_or(header::HeaderValue::from_static("")),
    );
    if !server.authorized(&headers) {
        let mut resp = page(
            "Log in",
            None,
            &format!(
                "{}{}",
                banner("error", "That is not the server's token."),
                r#"<form method="post" action="/login" class="card"><label>Server token <input type="password" name="token" required></label><button>Log in</button></form>"#
            ),
        )
        .into_response();
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    let sid = random_hex(24);
    server
        .sessions
        .lock()
        .expect("sessions lock")
        .insert(sid.clone(), random_hex(16));
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200"),
        )],
        Redirect::to("/syncs"),
    )
        .into_response()
}

async fn logout(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Some(sid) = session_id(&headers) {
        server.sessions.lock().expect("sessions lock").remove(&sid);
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Max-Age=0; Path=/"))],
        Redirect::to("/login"),
    )
        .into_response()
}

// ---- Apps

fn region_options(selected: &str) -> String {
    ["auto", "us", "eu"]
        .iter()
        .map(|r| {
            format!(
                r#"<option value="{r}"{}>{r}</option>"#,
                if *r == selected { " selected" } else { "" }
            )
        })
        .collect()
}

async fn apps_body(server: &Arc<Server>, csrf: &str, message: Option<(&str, String)>) -> String {
    let e = server.engine();
    let mut rows = String::new();
    for (name, app) in &e.config.apps {
        let App::Customerio(c) = app;
        let _ = write!(
            rows,
            r#"<tr><td>{}</td><td>Customer.io</td><td>{:?}</td><td>{}</td><td>saved</td><td>{}</td>
<td><form method="post" action="/apps/{}/test" class="inline">{}<button>Test connection</button></form></td></tr>"#,
            esc(name),
            c.region,
            esc(c.track_url.as_deref().unwrap_or("")),
            if e.config.defined_in(entities::APP, name) == sallyport_config::FROM_FILE {
                "defined in sallyport.yaml"
            } else {
                "made here"
            },
            esc(name),
            hidden_csrf(csrf)
        );
    }
    let msg = message.map(|(k, m)| banner(k, &m)).unwrap_or_default();
    format!(
        r#"{msg}<table><thead><tr><th>Name</th><th>App</th><th>Region</th><th>Track URL</th><th>Keys</th><th>Where</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<h2>New Customer.io connection</h2>
<form method="post" action="/apps" class="card" id="new-app">{}
<label>Name <input name="name" required pattern="[A-Za-z0-9_-]+"></label>
<label>Site ID <input name="site_id" required autocomplete="off"></label>
<label>API Key <input name="api_key" type="password" required autocomplete="off"></label>
<label>Region <select name="region">{}</select></label>
<label>Track URL (optional: a proxy or the sandbox) <input name="track_url" placeholder="https://track.customer.io"></label>
<p class="actions"><button type="button" data-test-app>Test connection</button> <button>Save</button></p>
<p id="test-result" role="status"></p></form>"#,
        hidden_csrf(csrf),
        region_options("auto")
    )
}

async fn apps_page(State(server): State<Arc<Server>>, headers: HeaderMap) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    page("Apps", Some(&csrf), &apps_body(&server, &csrf, None).await)
}

fn app_json_from_form(form: &HashMap<String, String>) -> Value {
    let mut v = json!({
        "name": form.get("name").cloned().unwrap_or_default().trim(),
        "type": "customerio",
        "site_id": form.get("site_id").cloned().unwrap_or_default().trim(),
        "api_key": form.get("api_key").cloned().unwrap_or_default().trim(),
        "region": form.get("region").cloned().unwrap_or_else(|| "auto".into()),
    });
    if let Some(u) = form
        .get("track_url")
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        v["track_url"] = json!(u);
    }
    v
}

async fn app_create(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Form(form): FormData,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let message = match api::store(
        &server,
        entities::APP,
        None,
        app_json_from_form(&form),
        true,
    )
    .await
    {
        Ok((_, v)) => (
            "ok",
            format!(
                "Saved the connection `{}`.",
                v["name"].as_str().unwrap_or("")
            ),
        ),
        Err(e) => ("error", e.message),
    };
    page(
        "Apps",
        Some(&csrf),
        &apps_body(&server, &csrf, Some(message)).await,
    )
    .into_response()
}

/// Tests credentials typed into the form, before they are saved: answers JSON for the page's
/// script, and never echoes the key.
async fn app_test_unsaved(Form(form): FormData) -> Response {
    let mut body = app_json_from_form(&form);
    if let Some(m) = body.as_object_mut() {
        m.remove("name");
    }
    let app: App = match serde_json::from_value(body) {
        Ok(a) => a,
        Err(e) => return Json(json!({"ok": false, "message": e.to_string()})).into_response(),
    };
    let mut d = Destination::new(form.get("name").map(String::as_str).unwrap_or("new"), &app);
    Json(match d.check().await {
        Ok(m) => json!({"ok": true, "message": format!("Connected: {m}")}),
        Err(e) => json!({"ok": false, "message": e.to_string()}),
    })
    .into_response()
}

async fn app_test(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let message = match server.engine().config.apps.get(&name).cloned() {
        None => ("error", format!("no app named `{name}`")),
        Some(app) => match Destination::new(&name, &app).check().await {
            Ok(m) => ("ok", format!("{name}: connected: {m}")),
            Err(e) => ("error", e.to_string()),
        },
    };
    page(
        "Apps",
        Some(&csrf),
        &apps_body(&server, &csrf, Some(message)).await,
    )
    .into_response()
}

// ---- Warehouses

async fn warehouses_body(
    server: &Arc<Server>,
    csrf: &str,
    message: Option<(&str, String)>,
) -> String {
    let e = server.engine();
    let mut rows = String::new();
    for (name, w) in &e.config.warehouses {
        let detail = esc(&w.describe());
        let _ = write!(
            rows,
            r#"<tr><td>{}</td><td>{detail}</td><td>{}</td><td><form method="post" action="/warehouses/{}/test" class="inline">{}<button>Test connection</button></form></td></tr>"#,
            esc(name),
            if e.config.defined_in(entities::WAREHOUSE, name) == sallyport_config::FROM_FILE {
                "defined in sallyport.yaml"
            } else {
                "made here"
            },
            esc(name),
            hidden_csrf(csrf)
        );
    }
    let msg = message.map(|(k, m)| banner(k, &m)).unwrap_or_default();
    // Each kind's settings, drawn from what its module describes.
    let kinds: String = WAREHOUSES
        .iter()
        .map(|w| format!(r#"<option value="{}">{}</option>"#, w.name, esc(w.label)))
        .collect();
    let mut fieldsets = String::new();
    for w in WAREHOUSES {
        let _ = write!(fieldsets, r#"<fieldset data-type="{}">"#, w.name);
        for f in w.fields {
            let _ = write!(
                fieldsets,
                "<label>{} {}</label>",
                esc(f.label),
                field_control(f, None, &[])
            );
        }
        fieldsets.push_str("</fieldset>");
    }
    format!(
        r#"{msg}<table><thead><tr><th>Name</th><th>Kind</th><th>Where</th><th></th></tr></thead><tbody>{rows}</tbody></table>
<h2>New warehouse</h2>
<form method="post" action="/warehouses" class="card" id="new-warehouse">{}
<label>Name <input name="name" required pattern="[A-Za-z0-9_-]+"></label>
<label>Kind <select name="type">{kinds}</select></label>
{fieldsets}
<p class="actions"><button>Save and test</button></p></form>"#,
        hidden_csrf(csrf)
    )
}

async fn warehouses_page(State(server): State<Arc<Server>>, headers: HeaderMap) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    page(
        "Warehouses",
        Some(&csrf),
        &warehouses_body(&server, &csrf, None).await,
    )
}

async fn test_warehouse_named(server: &Arc<Server>, name: &str) -> (&'static str, String) {
    match server.engine().config.warehouses.get(name).cloned() {
        None => ("error", format!("no warehouse named `{name}`")),
        Some(w) => match Source::open(&w).await {
            Ok(_) => ("ok", format!("{name}: connected ({})", w.kind())),
            Err(e) => ("error", format!("{name}: {e}")),
        },
    }
}

async fn warehouse_create(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Form(form): FormData,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let name = form
        .get("name")
        .cloned()
        .unwrap_or_default()
        .trim()
        .to_string();
    let kind = form
        .get("type")
        .and_then(|t| sallyport_sources::warehouse_kind(t))
        .unwrap_or(&WAREHOUSES[0]);
    let mut body = json!({"name": name, "type": kind.name});
    for f in kind.fields {
        if let Some(v) = form.get(f.name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            body[f.name] = json!(v);
        }
    }
    let message = match api::store(&server, entities::WAREHOUSE, None, body, true).await {
        Ok(_) => {
            let (k, m) = test_warehouse_named(&server, &name).await;
            (k, format!("Saved. {m}"))
        }
        Err(e) => ("error", e.message),
    };
    page(
        "Warehouses",
        Some(&csrf),
        &warehouses_body(&server, &csrf, Some(message)).await,
    )
    .into_response()
}

async fn warehouse_test(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let message = test_warehouse_named(&server, &name).await;
    page(
        "Warehouses",
        Some(&csrf),
        &warehouses_body(&server, &csrf, Some(message)).await,
    )
    .into_response()
}

// ---- Syncs

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

async fn syncs_page(State(server): State<Arc<Server>>, headers: HeaderMap) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    let paused = e.state.paused().await.unwrap_or_default();
    let mut rows = String::new();
    for (name, s) in &e.config.syncs {
        let last = e
            .state
            .runs(Some(name), 1)
            .await
            .ok()
            .and_then(|r| r.into_iter().next());
        let running = server
            .running
            .lock()
            .expect("running lock")
            .contains_key(name);
        let state = if running {
            "running"
        } else if paused.contains(name) {
            "paused"
        } else {
            "idle"
        };
        let _ = write!(
            rows,
            r#"<tr><td><a href="/syncs/{0}">{0}</a></td><td>{1} → {2} {3}</td><td>{4}</td><td>{5}</td><td>{6}</td></tr>"#,
            esc(name),
            esc(&s.warehouse),
            esc(&s.app),
            s.object.name(),
            state,
            last.map(|r| format!(
                "{} ({} sent, {} failed)",
                r.status, r.rows_sent, r.rows_failed
            ))
            .unwrap_or_else(|| "never run".into()),
            scheduler::next_run(&server, name)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "manual".into()),
        );
    }
    page(
        "Syncs",
        Some(&csrf),
        &format!(
            r#"<p><a class="button" href="/syncs/new">New sync</a></p>
<table><thead><tr><th>Sync</th><th>From → to</th><th>State</th><th>Last run</th><th>Next run</th></tr></thead><tbody>{rows}</tbody></table>"#
        ),
    )
}

fn runs_table(runs: &[sallyport_state::RunRecord]) -> String {
    let mut rows = String::new();
    for r in runs {
        let took = r
            .finished_at
            .map(|f| format!("{:.1}s", (f - r.started_at) as f64 / 1000.0))
            .unwrap_or_else(|| "…".into());
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{took}</td><td class=\"status-{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.id,
            time(Some(r.started_at)),
            esc(&r.status),
            esc(&r.status),
            r.rows_read,
            r.rows_new,
            r.rows_changed,
            r.rows_sent,
            r.rows_failed
        );
    }
    format!(
        r#"<table id="runs"><thead><tr><th>Run</th><th>Started</th><th>Duration</th><th>Status</th><th>Read</th><th>New</th><th>Changed</th><th>Sent</th><th>Failed</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

async fn sync_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    let Some(s) = e.config.syncs.get(&name).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                Some(&csrf),
                &banner("error", &format!("no sync named `{name}`")),
            ),
        )
            .into_response();
    };
    let paused = e.state.paused().await.unwrap_or_default().contains(&name);
    let runs = e.state.runs(Some(&name), 20).await.unwrap_or_default();
    let failures = e
        .state
        .failures(&e.state_key(&name))
        .await
        .unwrap_or_default();
    let settings = serde_json::to_string_pretty(&s).unwrap_or_default();
    let mut fails = String::new();
    for f in &failures {
        let _ = write!(
            fails,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.key),
            esc(&f.reason),
            f.run_id,
            f.attempts
        );
    }
    let running = server
        .running
        .lock()
        .expect("running lock")
        .contains_key(&name);
    let pause_action = if paused { "resume" } else { "pause" };
    let body = format!(
        r#"<p id="state" data-live="/syncs/{n}/live">{state}</p>
<p class="actions"><form method="post" action="/syncs/{n}/run" class="inline">{c}<button>Run now</button></form>
<form method="post" action="/syncs/{n}/{pause_action}" class="inline">{c}<button>{pause_label}</button></form>
<a class="button" href="/syncs/{n}/preview">Preview</a></p>
<h2>Settings</h2><pre>{settings}</pre>
<h2>Run history</h2><div id="history">{runs}</div>
<h2>Failed rows</h2><table id="failures"><thead><tr><th>Key</th><th>Reason</th><th>Last run</th><th>Attempts</th></tr></thead><tbody>{fails}</tbody></table>"#,
        n = esc(&name),
        c = hidden_csrf(&csrf),
        state = if running {
            "running"
        } else if paused {
            "paused"
        } else {
            "idle"
        },
        pause_label = if paused { "Resume" } else { "Pause" },
        settings = esc(&settings),
        runs = runs_table(&runs),
    );
    page(&format!("Sync {name}"), Some(&csrf), &body).into_response()
}

/// What the sync page's script polls: the state and the history, so that a run in progress
/// shows without a full reload.
async fn sync_live(State(server): State<Arc<Server>>, Path(name): Path<String>) -> Response {
    let e = server.engine();
    let running = server
        .running
        .lock()
        .expect("running lock")
        .contains_key(&name);
    let paused = e.state.paused().await.unwrap_or_default().contains(&name);
    let runs = e.state.runs(Some(&name), 20).await.unwrap_or_default();
    Json(json!({
        "state": if running { "running" } else if paused { "paused" } else { "idle" },
        "history": runs_table(&runs),
    }))
    .into_response()
}

async fn sync_action(
    server: &Arc<Server>,
    headers: &HeaderMap,
    name: &str,
    action: &str,
) -> Response {
    let e = server.engine();
    if !e.config.syncs.contains_key(name) {
        let csrf = csrf_of(server, headers).unwrap_or_default();
        let body = banner("error", &format!("no sync named `{name}`"));
        return (StatusCode::NOT_FOUND, page("Not found", Some(&csrf), &body)).into_response();
    }
    let result = match action {
        "run" => server
            .start_run(name, "manual")
            .map(|_| ())
            .map_err(|e| e.message),
        "pause" => e
            .state
            .set_paused(name, true)
            .await
            .map_err(|e| e.to_string()),
        _ => e
            .state
            .set_paused(name, false)
            .await
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => Redirect::to(&format!("/syncs/{}", path_segment(name))).into_response(),
        Err(message) => {
            let csrf = csrf_of(server, headers).unwrap_or_default();
            let body = format!(
                "{}<p><a href=\"/syncs/{}\">Back to {}</a></p>",
                banner("error", &message),
                esc(&path_segment(name)),
                esc(name)
            );
            (
                StatusCode::CONFLICT,
                page(&format!("Sync {name}"), Some(&csrf), &body),
            )
                .into_response()
        }
    }
}

/// A name as one URL path segment.
fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `run`, `pause` or `resume`.
async fn sync_action_route(
    State(s): State<Arc<Server>>,
    h: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if !matches!(action.as_str(), "run" | "pause" | "resume") {
        return (StatusCode::NOT_FOUND, "no such action").into_response();
    }
    sync_action(&s, &h, &name, &action).await
}

async fn sync_preview(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let body = match server.engine().preview(&name, 5, false).await {
        Ok(p) => {
            let mut ops = String::new();
            for op in &p.ops {
                let _ = write!(
                    ops,
                    "<h3>{} ({}) {}</h3><pre>{}</pre>",
                    esc(&op.key),
                    esc(&op.change),
                    esc(&op.endpoint),
                    esc(&serde_json::to_string_pretty(&op.body).unwrap_or_default())
                );
            }
            let fails: String = p
                .failures
                .iter()
                .map(|f| format!("<li>{}</li>", esc(f)))
                .collect();
            format!(
                "<p>Would send new {} · changed {} · unchanged {} · failed {} (of {} read).</p>{ops}<h2>Rows that would fail</h2><ul>{fails}</ul><p><a href=\"/syncs/{}\">Back</a></p>",
                p.rows_new, p.rows_changed, p.rows_unchanged, p.rows_failed, p.rows_read, esc(&name)
            )
        }
        Err(e) => banner("error", &e.to_string()),
    };
    page(&format!("Preview of {name}"), Some(&csrf), &body).into_response()
}

// ---- New sync, in the order of the work: model, then object and its settings, mapping, schedule.

/// The form control of a setting, as its module describes it: a column of the model, a choice,
/// text or a secret.
fn field_control(f: &sallyport_config::Field, current: Option<&str>, columns: &[String]) -> String {
    match f.kind {
        FieldKind::Column => format!(
            r#"<select name="{}">{}</select>"#,
            f.name,
            options(columns, current, true)
        ),
        FieldKind::Choice(values) => {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            format!(
                r#"<select name="{}">{}</select>"#,
                f.name,
                options(&values, current, false)
            )
        }
        FieldKind::Text => format!(
            r#"<input name="{}" value="{}" placeholder="{}">"#,
            f.name,
            esc(current.unwrap_or("")),
            esc(f.help)
        ),
        FieldKind::Secret => format!(
            r#"<input name="{}" type="password" autocomplete="off" placeholder="{}">"#,
            f.name,
            esc(f.help)
        ),
    }
}

fn options(values: &[String], selected: Option<&str>, blank: bool) -> String {
    let mut out = String::new();
    if blank {
        out.push_str(r#"<option value="">—</option>"#);
    }
    for v in values {
        let _ = write!(
            out,
            r#"<option value="{0}"{1}>{0}</option>"#,
            esc(v),
            if Some(v.as_str()) == selected {
                " selected"
            } else {
                ""
            }
        );
    }
    out
}

async fn new_sync_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    new_sync_form(&server, &csrf, &q, None)
        .await
        .into_response()
}

async fn new_sync_form(
    server: &Arc<Server>,
    csrf: &str,
    q: &HashMap<String, String>,
    error: Option<ApiError>,
) -> Html<String> {
    let e = server.engine();
    let get = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // Problems are placed by the setting they concern, as the config's checks name it.
    let field_errors: HashMap<String, String> = error
        .as_ref()
        .map(|e| e.fields.iter().cloned().collect())
        .unwrap_or_default();
    let error = error.map(|e| e.message);
    let err = |k: &str| -> String {
        field_errors
            .get(k)
            .map(|m| {
                format!(
                    r#"<span class="field-error" data-field="{k}">{}</span>"#,
                    esc(m)
                )
            })
            .unwrap_or_default()
    };
    let warehouses: Vec<String> = e.config.warehouses.keys().cloned().collect();
    let apps: Vec<String> = e.config.apps.keys().cloned().collect();
    let warehouse = get("warehouse");
    let model_kind = get("model_kind").unwrap_or_else(|| "table".into());
    let model_text = get("model");
    let mut html = error.map(|m| banner("error", &m)).unwrap_or_default();
    let _ = write!(
        html,
        r#"<form method="get" action="/syncs/new" class="card" id="step-model"><h2>1. Warehouse and model</h2>
<label>Warehouse <select name="warehouse" required>{}</select></label>
<label>Model <select name="model_kind"><option value="table"{}>Table</option><option value="sql"{}>SQL query</option></select></label>
<label>Table or query <textarea name="model" rows="2" required>{}</textarea></label>
<p class="actions"><button>Preview the model</button></p></form>"#,
        options(&warehouses, warehouse.as_deref(), true),
        if model_kind == "table" {
            " selected"
        } else {
            ""
        },
        if model_kind == "sql" { " selected" } else { "" },
        esc(model_text.as_deref().unwrap_or(""))
    );
    let (Some(wname), Some(text)) = (warehouse.clone(), model_text.clone()) else {
        return page("New sync", Some(csrf), &html);
    };
    let model = if model_kind == "sql" {
        Model::Sql(text.clone())
    } else {
        Model::Table(text.clone())
    };
    let Some(w) = e.config.warehouses.get(&wname).cloned() else {
        html.push_str(&banner("error", &format!("no warehouse named `{wname}`")));
        return page("New sync", Some(csrf), &html);
    };
    let sample = match Source::open(&w).await {
        Ok(src) => src.sample(&model, 5).await,
        Err(err) => Err(err),
    };
    let (columns, rows) = match sample {
        Ok(s) => s,
        Err(err) => {
            html.push_str(&banner("error", &format!("The model does not run: {err}")));
            return page("New sync", Some(csrf), &html);
        }
    };
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let mut table = String::from("<table id=\"model-preview\"><thead><tr>");
    for c in &columns {
        let _ = write!(
            table,
            "<th>{}<br><small>{}</small></th>",
            esc(&c.name),
            esc(&c.type_name)
        );
    }
    table.push_str("</tr></thead><tbody>");
    for r in &rows {
        table.push_str("<tr>");
        for v in &r.values {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(table, "<td>{}</td>", esc(&text));
        }
        table.push_str("</tr>");
    }
    table.push_str("</tbody></table>");
    // Each object's settings, rendered from the description its module gives: a new object
    // needs nothing here.
    let object = get("object").unwrap_or_else(|| OBJECTS[0].name.to_string());
    let mut fieldsets = String::new();
    for kind in OBJECTS {
        let _ = write!(
            fieldsets,
            r#"<fieldset data-object="{}" data-modes="{}"><legend>{}</legend>"#,
            kind.name,
            kind.modes.join(" "),
            esc(kind.label)
        );
        for f in kind.fields {
            let current = if kind.name == object {
                get(f.name)
            } else {
                None
            };
            let control = field_control(f, current.as_deref(), &names);
            let when = f
                .when
                .map(|(k, v)| format!(r#" data-when="{k}={v}""#))
                .unwrap_or_default();
            let _ = write!(
                fieldsets,
                r#"<label{when} title="{}">{} {control}{}</label>"#,
                esc(f.help),
                esc(f.label),
                if kind.name == object {
                    err(f.name)
                } else {
                    String::new()
                }
            );
        }
        fieldsets.push_str("</fieldset>");
    }
    let object_names: Vec<String> = OBJECTS.iter().map(|o| o.name.to_string()).collect();
    let modes: Vec<String> = object_kind(&object)
        .unwrap_or(&OBJECTS[0])
        .modes
        .iter()
        .map(|m| m.to_string())
        .collect();
    let mut mapping = String::new();
    for n in &names {
        let _ = write!(
            mapping,
            r#"<tr><td>{0}</td><td><input type="checkbox" name="send:{0}" checked></td><td><input name="as:{0}" value="{0}"></td></tr>"#,
            esc(n)
        );
    }
    let _ = write!(
        html,
        r#"<h2>Model preview</h2>{table}
<form method="post" action="/syncs/new" class="card" id="step-sync">{csrf_field}
<input type="hidden" name="warehouse" value="{w}"><input type="hidden" name="model_kind" value="{mk}"><input type="hidden" name="model" value="{mt}">
<h2>2. App and object</h2>
<label>Name of the sync <input name="name" required pattern="[A-Za-z0-9_-]+" value="{sync_name}">{name_err}</label>
<label>App <select name="app" required>{apps}</select>{app_err}</label>
<label>Object <select name="object" data-reload>{objects}</select>{object_err}</label>
{fieldsets}
<h2>3. Sync mode</h2><label>Mode <select name="mode">{modes}</select>{mode_err}</label>
<h2>4. Field mapping</h2><p class="hint">Every column is sent under its own name unless you rename or untick it. Columns used above are not sent as attributes.</p>
<table id="mapping"><thead><tr><th>Column</th><th>Send</th><th>As attribute</th></tr></thead><tbody>{mapping}</tbody></table>
<h2>5. Schedule</h2><label>Schedule <input name="schedule" value="{schedule}" placeholder="every 15m, or a cron like 0 */2 * * *, or empty for manual">{schedule_err}</label>
<p class="actions"><button>Create sync</button></p></form>"#,
        csrf_field = hidden_csrf(csrf),
        w = esc(&wname),
        mk = esc(&model_kind),
        mt = esc(&text),
        apps = options(&apps, get("app").as_deref(), false),
        objects = options(&object_names, Some(&object), false),
        modes = options(&modes, get("mode").as_deref(), false),
        sync_name = esc(get("name").as_deref().unwrap_or("")),
        schedule = esc(get("schedule").as_deref().unwrap_or("")),
        name_err = err("name"),
        app_err = err("app"),
        object_err = err("object"),
        mode_err = err("mode"),
        schedule_err = err("schedule"),
    );
    page("New sync", Some(csrf), &html)
}

async fn new_sync_submit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Form(form): FormData,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let get = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let object = get("object").unwrap_or_else(|| OBJECTS[0].name.to_string());
    let kind = object_kind(&object).unwrap_or(&OBJECTS[0]);
    let model = if get("model_kind").as_deref() == Some("sql") {
        json!({"sql": get("model")})
    } else {
        json!({"table": get("model")})
    };
    let mut sync = json!({
        "name": get("name"),
        "warehouse": get("warehouse"),
        "model": model,
        "app": get("app"),
        "object": object,
        "mode": get("mode").unwrap_or_else(|| kind.modes[0].to_string()),
    });
    // The chosen object's settings, as its module describes them; one shown only for another
    // value of a setting (`event_name` for track events) is left out otherwise.
    for f in kind.fields {
        if let Some((k, v)) = f.when {
            if get(k).as_deref() != Some(v) {
                continue;
            }
        }
        if let Some(v) = get(f.name) {
            sync[f.name] = json!(v);
        }
    }
    // Mapping: every column offered; unticked ones excluded, renamed ones renamed.
    let mut fields = serde_json::Map::new();
    let mut exclude = Vec::new();
    for (k, v) in &form {
        if let Some(col) = k.strip_prefix("as:") {
            let sent = form.contains_key(&format!("send:{col}"));
            if !sent {
                exclude.push(json!(col));
            } else if !v.trim().is_empty() && v.trim() != col {
                fields.insert(col.to_string(), json!(v.trim()));
            }
        }
    }
    let used: Vec<String> = kind
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::Column)
        .filter_map(|f| sync.get(f.name).and_then(Value::as_str).map(str::to_string))
        .collect();
    exclude.retain(|c| !used.iter().any(|u| Some(u.as_str()) == c.as_str()));
    sync["mapping"] = json!({"auto": true, "fields": fields, "exclude": exclude});
    if let Some(s) = get("schedule") {
        sync["schedule"] = if s.starts_with("every") {
            json!(s)
        } else {
            json!({"cron": s})
        };
    }
    match api::store(&server, entities::SYNC, None, sync, true).await {
        Ok((_, v)) => Redirect::to(&format!(
            "/syncs/{}",
            path_segment(v["name"].as_str().unwrap_or(""))
        ))
        .into_response(),
        Err(e) => {
            let q: HashMap<String, String> = form.clone();
            let mut resp = new_sync_form(&server, &csrf, &q, Some(e))
                .await
                .into_response();
            *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            resp
        }
    }
}
