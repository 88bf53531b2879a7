//! The web UI: server-rendered pages (no build step; the little script and style are embedded),
//! behind a login with the server's token (an HttpOnly, SameSite=Strict session cookie; every
//! form carries the session's CSRF token).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::Form;
use axum::http::header;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::Router;
use sallyport_config::FieldKind;

use crate::Server;

mod apps;
mod charts;
mod new_sync;
mod session;
mod sync_view;
mod syncs;
mod warehouses;

use apps::*;
use new_sync::*;
use session::*;
use sync_view::*;
use syncs::*;
use warehouses::*;

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
        .route("/syncs/{name}/runs/{id}", get(run_page))
        .route(
            "/syncs/{name}/edit",
            get(edit_sync_page).post(edit_sync_submit),
        )
        .route(
            "/syncs/{name}/{action}",
            get(confirm_page).post(sync_action_route),
        )
        .route("/schedule/next", get(schedule_next))
        .route("/syncs/new/model", post(new_sync_model))
        .route("/syncs/{name}/preview", post(sync_preview))
        .route("/alerts/{name}/test", post(alert_test))
        .route("/apps", get(apps_page).post(app_create))
        .route("/apps/test", post(app_test_unsaved))
        .route("/apps/{name}/test", post(app_test))
        .route("/warehouses", get(warehouses_page).post(warehouse_create))
        .route("/warehouses/{name}", get(warehouse_browse))
        .route("/warehouses/{name}/test", post(warehouse_test))
        .route("/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            session,
        ));
    Router::new()
        .route(
            "/login",
            get(login_page)
                .post(login)
                .route_layer(axum::middleware::from_fn_with_state(
                    server.clone(),
                    login_limit,
                )),
        )
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

/// Random hex from the system's source; without one there is no safe session, so it panics.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the system's random source");
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
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="csrf" content="{}"><link rel="stylesheet" href="/assets/style.css"><script src="/assets/ui.js" defer></script></head>
<body><header><strong>Sallyport</strong>{nav}</header><main><h1>{}</h1>{body}</main></body></html>"#,
        esc(title),
        esc(csrf.unwrap_or_default()),
        esc(title)
    ))
}

/// A 404 page saying what is missing.
fn not_found(csrf: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::NOT_FOUND,
        page("Not found", Some(csrf), &banner("error", message)),
    )
        .into_response()
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
        FieldKind::Text | FieldKind::File => format!(
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
            r#"<option value="{0}"{1}>{2}</option>"#,
            esc(v),
            if Some(v.as_str()) == selected {
                " selected"
            } else {
                ""
            },
            if v.is_empty() {
                "automatic".to_string()
            } else {
                esc(v)
            }
        );
    }
    out
}

/// A name as one URL path segment.
fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}
