//! The Warehouses page: the warehouses, a new one (its settings drawn from its kind's description), Test connection.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use sallyport_sources::WAREHOUSES;
use serde_json::json;

use super::*;
use crate::{api, entities, Server};

pub(super) async fn warehouses_body(
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

pub(super) async fn warehouses_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    page(
        "Warehouses",
        Some(&csrf),
        &warehouses_body(&server, &csrf, None).await,
    )
}

pub(super) async fn test_warehouse_named(
    server: &Arc<Server>,
    name: &str,
) -> (&'static str, String) {
    match api::check_warehouse(server, name).await {
        Err(e) => ("error", e.message),
        Ok(t) if t.ok => ("ok", format!("{name}: {}", t.message)),
        Ok(t) => ("error", format!("{name}: {}", t.message)),
    }
}

pub(super) async fn warehouse_create(
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

pub(super) async fn warehouse_test(
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
