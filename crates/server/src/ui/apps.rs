//! The Apps page: the app connections, a new Customer.io connection, Test connection.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use sallyport_config::App;
use serde_json::{json, Value};

use super::*;
use crate::{api, entities, Server};

pub(super) fn region_options(selected: &str) -> String {
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

pub(super) async fn apps_body(
    server: &Arc<Server>,
    csrf: &str,
    message: Option<(&str, String)>,
) -> String {
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
            esc(&sallyport_destinations::redact_url(
                c.track_url.as_deref().unwrap_or("")
            )),
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

pub(super) async fn apps_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    page("Apps", Some(&csrf), &apps_body(&server, &csrf, None).await)
}

pub(super) fn app_json_from_form(form: &HashMap<String, String>) -> Value {
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

pub(super) async fn app_create(
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
pub(super) async fn app_test_unsaved(
    State(server): State<Arc<Server>>,
    Form(form): FormData,
) -> Response {
    let mut body = app_json_from_form(&form);
    if let Some(m) = body.as_object_mut() {
        m.remove("name");
    }
    let app: App = match serde_json::from_value(body) {
        Ok(a) => a,
        Err(e) => return Json(json!({"ok": false, "message": e.to_string()})).into_response(),
    };
    if let Err(m) = server.check_hosts(&app.hosts()).await {
        return Json(json!({"ok": false, "message": m})).into_response();
    }
    let name = form.get("name").map(String::as_str).unwrap_or("new");
    let t = api::check_app_settings(name, &app).await;
    let message = if t.ok {
        format!("Connected: {}", t.message)
    } else {
        t.message
    };
    Json(json!({"ok": t.ok, "message": message})).into_response()
}

pub(super) async fn app_test(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let message = match api::check_app(&server, &name).await {
        Err(e) => ("error", e.message),
        Ok(t) if t.ok => ("ok", format!("{name}: connected: {}", t.message)),
        Ok(t) => ("error", t.message),
    };
    page(
        "Apps",
        Some(&csrf),
        &apps_body(&server, &csrf, Some(message)).await,
    )
    .into_response()
}
