//! New sync, in the order of the work: model, then object and its settings (drawn from the object's description), mapping, schedule.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use sallyport_config::{object_kind, FieldKind, Model, OBJECTS};
use sallyport_sources::Source;
use serde_json::{json, Value};

use super::*;
use crate::{api, entities, ApiError, Server};

pub(super) async fn new_sync_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    // A GET only preselects; the model runs on the form's POST (it runs SQL on the warehouse).
    let q: HashMap<String, String> = q.into_iter().filter(|(k, _)| k == "warehouse").collect();
    new_sync_form(&server, &csrf, &q, None)
        .await
        .into_response()
}

/// Step 1 posted: the model runs (with the CSRF check of every POST) and its first rows show.
pub(super) async fn new_sync_model(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Form(form): FormData,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    new_sync_form(&server, &csrf, &form, None)
        .await
        .into_response()
}

pub(super) async fn new_sync_form(
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
        r#"<form method="post" action="/syncs/new/model" class="card" id="step-model">{csrf_field}<h2>1. Warehouse and model</h2>
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
        esc(model_text.as_deref().unwrap_or("")),
        csrf_field = hidden_csrf(csrf),
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
    let open_options = sallyport_sources::OpenOptions {
        statement_timeout: Some(e.check_timeout),
    };
    let sample = match Source::open_with(&w, &open_options).await {
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
<label title="local: the model is read and compared here on every run; warehouse ({hosts}): the warehouse compares it with a snapshot table and only changed rows leave it">Change detection <select name="change_detection">{detection}</select>{detection_err}</label>
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
        detection = options(
            &["local".to_string(), "warehouse".to_string()],
            get("change_detection").as_deref(),
            false
        ),
        detection_err = err("change_detection"),
        hosts = esc(&sallyport_sources::change_detection_hosts()),
    );
    page("New sync", Some(csrf), &html)
}

pub(super) async fn new_sync_submit(
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
            let chosen = get(k);
            if !v.split('|').any(|v| chosen.as_deref() == Some(v)) {
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
    if let Some(d) = get("change_detection").filter(|d| d != "local") {
        sync["change_detection"] = json!(d);
    }
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
