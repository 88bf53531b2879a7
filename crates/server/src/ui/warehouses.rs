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
            r#"<tr><td><a href="/warehouses/{}">{}</a></td><td>{detail}</td><td>{}</td><td><form method="post" action="/warehouses/{}/test" class="inline">{}<button>Test connection</button></form></td></tr>"#,
            path_segment(name),
            esc(name),
            if e.config.defined_in(entities::WAREHOUSE, name) == sallyport_config::FROM_FILE {
                "defined in sallyport.yaml"
            } else {
                "made here"
            },
            path_segment(name),
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
        r#"{msg}<div class="scroll" tabindex="0"><table><thead><tr><th>Name</th><th>Kind</th><th>Where</th><th></th></tr></thead><tbody>{rows}</tbody></table></div><p class="hint">Open a warehouse to browse its schemas, tables and columns, and to start a sync from a table.</p>
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

/// A table's columns: name and type.
type Columns = Vec<(String, String)>;

/// The most columns the browser lists.
const BROWSE_COLUMNS: usize = 20_000;

/// A warehouse's schemas and tables with their columns, each table with a shortcut to a new
/// sync from it.
pub(super) async fn warehouse_browse(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    let Some(w) = e.config.warehouses.get(&name).cloned() else {
        return not_found(&csrf, &format!("no warehouse named `{name}`"));
    };
    let title = format!("Warehouse {name}");
    let Some(sql) = w.catalog_sql() else {
        let body = banner(
            "error",
            &format!("Browsing is not available for {} warehouses yet: write the table's name or a query in New sync.", w.kind()),
        );
        return page(&title, Some(&csrf), &body).into_response();
    };
    let listed = match e.open_for_person(&w).await {
        Ok(src) => {
            src.sample(
                &sallyport_config::Model::Sql(sql.to_string()),
                BROWSE_COLUMNS,
            )
            .await
        }
        Err(err) => Err(err),
    };
    let rows = match listed {
        Ok((_, rows)) => rows,
        Err(err) => {
            let body = banner(
                "error",
                &format!("The warehouse did not list its tables: {err}"),
            );
            return page(&title, Some(&csrf), &body).into_response();
        }
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // schema → table → columns, in the order the catalog gives.
    let mut tables: Vec<(String, String, Columns)> = Vec::new();
    for r in &rows {
        let v: Vec<String> = r.values.iter().map(text).collect();
        let [schema, table, column, kind] = [&v[0], &v[1], &v[2], &v[3]];
        match tables.last_mut() {
            Some((s, t, cols)) if s == schema && t == table => {
                cols.push((column.clone(), kind.clone()))
            }
            _ => tables.push((
                schema.clone(),
                table.clone(),
                vec![(column.clone(), kind.clone())],
            )),
        }
    }
    let mut html = format!(
        r#"<p>{} · {} tables and views in {} schemas. Open one to see its columns; "New sync from this table" starts the form with it.</p>"#,
        esc(&w.describe()),
        tables.len(),
        tables
            .iter()
            .map(|t| &t.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    let mut schema_open: Option<String> = None;
    for (schema, table, cols) in &tables {
        if schema_open.as_deref() != Some(schema) {
            if schema_open.is_some() {
                html.push_str("</section>");
            }
            let _ = write!(html, r#"<section class="schema"><h2>{}</h2>"#, esc(schema));
            schema_open = Some(schema.clone());
        }
        let qualified = if w.kind() == "sqlite" {
            table.clone()
        } else {
            format!("{schema}.{table}")
        };
        let columns: String = cols
            .iter()
            .map(|(c, t)| format!("<tr><td>{}</td><td>{}</td></tr>", esc(c), esc(t)))
            .collect();
        let _ = write!(
            html,
            r#"<details class="table" data-table="{q}"><summary>{t} <span class="hint">({n} columns)</span></summary><div class="scroll" tabindex="0"><table><thead><tr><th>Column</th><th>Type</th></tr></thead><tbody>{columns}</tbody></table></div><form method="post" action="/syncs/new/model" class="inline">{c}<input type="hidden" name="warehouse" value="{w}"><input type="hidden" name="model_kind" value="table"><input type="hidden" name="model" value="{q}"><button>New sync from this table</button></form></details>"#,
            q = esc(&qualified),
            t = esc(table),
            n = cols.len(),
            c = hidden_csrf(&csrf),
            w = esc(&name),
        );
    }
    if schema_open.is_some() {
        html.push_str("</section>");
    }
    if rows.len() >= BROWSE_COLUMNS {
        html.push_str(&banner(
            "warning",
            &format!("Only the first {BROWSE_COLUMNS} columns are listed."),
        ));
    }
    page(&title, Some(&csrf), &html).into_response()
}
