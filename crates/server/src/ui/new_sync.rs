//! New sync, in the order of the work: model, then object and its settings (drawn from the object's description), mapping, schedule.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use sallyport_config::{object_kind, FieldKind, Model, OBJECTS};
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
{editing_model}<p class="actions"><button>Preview the model</button></p></form>"#,
        options(&warehouses, warehouse.as_deref(), true),
        if model_kind == "table" {
            " selected"
        } else {
            ""
        },
        if model_kind == "sql" { " selected" } else { "" },
        esc(model_text.as_deref().unwrap_or("")),
        csrf_field = hidden_csrf(csrf),
        editing_model = get("editing")
            .map(|n| format!(
                r#"<input type="hidden" name="editing" value="{}">"#,
                esc(&n)
            ))
            .unwrap_or_default(),
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
    let sample = match e.open_for_person(&w).await {
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
    let mut table = String::from(
        "<div class=\"scroll\" tabindex=\"0\"><table id=\"model-preview\"><thead><tr>",
    );
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
    table.push_str("</tbody></table></div>");
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
    // A form filled in before (an edit, or one sent back with a problem) keeps its mapping;
    // a new one sends every column under its own name.
    let prefilled = q.keys().any(|k| k.starts_with("as:"));
    let mut mapping = String::new();
    for n in &names {
        let send = !prefilled || q.contains_key(&format!("send:{n}"));
        let as_name = q
            .get(&format!("as:{n}"))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| n.clone());
        let _ = write!(
            mapping,
            r#"<tr><td>{0}</td><td><input type="checkbox" name="send:{0}" aria-label="Send {0}"{1}></td><td><input name="as:{0}" value="{2}" aria-label="Attribute name for {0}"></td></tr>"#,
            esc(n),
            if send { " checked" } else { "" },
            esc(&as_name)
        );
    }
    let editing = get("editing");
    let (action, submit) = match &editing {
        Some(n) => (
            format!("/syncs/{}/edit", path_segment(n)),
            "Review the changes",
        ),
        None => ("/syncs/new".to_string(), "Create sync"),
    };
    let _ = write!(
        html,
        r#"<h2>Model preview</h2>{table}
<form method="post" action="{action}" class="card" id="step-sync">{csrf_field}
<input type="hidden" name="warehouse" value="{w}"><input type="hidden" name="model_kind" value="{mk}"><input type="hidden" name="model" value="{mt}">
<h2>2. App and object</h2>
<label>Name of the sync <input name="name" required pattern="[A-Za-z0-9_-]+" value="{sync_name}"{name_readonly}>{name_err}</label>
<label>App <select name="app" required>{apps}</select>{app_err}</label>
<label>Object <select name="object" data-reload>{objects}</select>{object_err}</label>
{fieldsets}
<h2>3. Sync mode</h2><label>Mode <select name="mode">{modes}</select>{mode_err}</label>
<h2>4. Field mapping</h2><p class="hint">Every column is sent under its own name unless you rename or untick it. Columns used above are not sent as attributes.</p>
<div class="scroll" tabindex="0"><table id="mapping"><thead><tr><th>Column</th><th>Send</th><th>As attribute</th></tr></thead><tbody>{mapping}</tbody></table></div>
<h2>5. Schedule</h2><div class="presets" role="group" aria-label="Schedule presets"><button type="button" class="secondary" data-preset="">Manual only</button><button type="button" class="secondary" data-preset="every 15m">Every 15 minutes</button><button type="button" class="secondary" data-preset="every 1h">Hourly</button><button type="button" class="secondary" data-preset="daily">Daily at</button><label class="inline-label">Time (UTC) <input type="time" name="daily_at" value="09:00"></label></div>
<label>Schedule <input name="schedule" value="{schedule}" placeholder="every 15m, or a cron like 0 */2 * * *, or empty for manual" aria-describedby="schedule-next">{schedule_err}</label><p id="schedule-next" aria-live="polite">{schedule_next}</p>
<label title="local: the model is read and compared here on every run; warehouse ({hosts}): the warehouse compares it with a snapshot table and only changed rows leave it">Change detection <select name="change_detection">{detection}</select>{detection_err}</label>
{editing_field}<p class="actions"><button>{submit}</button></p></form>"#,
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
        name_readonly = if editing.is_some() { " readonly" } else { "" },
        schedule_next = esc(&next_runs_text(get("schedule").as_deref().unwrap_or(""))),
        editing_field = editing
            .as_ref()
            .map(|n| format!(r#"<input type="hidden" name="editing" value="{}">"#, esc(n)))
            .unwrap_or_default(),
    );
    let title = match &editing {
        Some(n) => format!("Edit sync {n}"),
        None => "New sync".into(),
    };
    page(&title, Some(csrf), &html)
}

pub(super) async fn new_sync_submit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Form(form): FormData,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let sync = sync_from_form(&form);
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

/// A sync's settings as the form gives them (the API's JSON).
fn sync_from_form(form: &HashMap<String, String>) -> Value {
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
    for (k, v) in form {
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
    // In one order, whatever order the form's fields came in.
    exclude.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
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
    sync
}

/// The schedule a form's text names.
fn schedule_spec(text: &str) -> Option<sallyport_config::ScheduleSpec> {
    let t = text.trim();
    if t.is_empty() {
        None
    } else if t.starts_with("every") {
        Some(sallyport_config::ScheduleSpec::Every(t.to_string()))
    } else {
        Some(sallyport_config::ScheduleSpec::Cron(
            sallyport_config::CronSpec {
                cron: t.to_string(),
            },
        ))
    }
}

/// The next three times a schedule runs, or what is wrong with it.
fn next_runs(text: &str) -> Result<Vec<String>, String> {
    let Some(spec) = schedule_spec(text) else {
        return Ok(Vec::new());
    };
    let schedule = sallyport_config::Schedule::parse(&spec)?;
    let now = chrono::Utc::now();
    let mut at = schedule.next_after(None, now);
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(at.format("%a %Y-%m-%d %H:%M:%S UTC").to_string());
        at = schedule.next_after(Some(at), now);
    }
    Ok(out)
}

fn next_runs_text(text: &str) -> String {
    match next_runs(text) {
        Ok(n) if n.is_empty() => "Manual runs only.".into(),
        Ok(n) => format!("Next runs: {}", n.join(", ")),
        Err(e) => e,
    }
}

/// `GET /schedule/next?spec=...`: the next three run times, for the form's preview.
pub(super) async fn schedule_next(Query(q): Query<HashMap<String, String>>) -> Response {
    let spec = q.get("spec").map(String::as_str).unwrap_or("");
    axum::Json(match next_runs(spec) {
        Ok(next) => json!({ "next": next }),
        Err(e) => json!({ "error": e }),
    })
    .into_response()
}

/// The form's fields of an existing sync, to edit it.
async fn form_of(server: &Arc<Server>, name: &str) -> Option<HashMap<String, String>> {
    let e = server.engine();
    let s = e.config.syncs.get(name)?;
    let v = serde_json::to_value(s).ok()?;
    let mut q = HashMap::new();
    q.insert("editing".to_string(), name.to_string());
    q.insert("name".to_string(), name.to_string());
    q.insert("warehouse".to_string(), s.warehouse.clone());
    q.insert("app".to_string(), s.app.clone());
    match &s.model {
        Model::Sql(sql) => {
            q.insert("model_kind".into(), "sql".into());
            q.insert("model".into(), sql.clone());
        }
        Model::Table(t) => {
            q.insert("model_kind".into(), "table".into());
            q.insert("model".into(), t.clone());
        }
    }
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            if let Some(text) = val.as_str() {
                q.entry(k.clone()).or_insert_with(|| text.to_string());
            } else if val.is_number() || val.is_boolean() {
                q.entry(k.clone()).or_insert_with(|| val.to_string());
            }
        }
    }
    q.insert(
        "schedule".into(),
        match &v["schedule"] {
            Value::String(t) => t.clone(),
            Value::Object(c) => c.get("cron").and_then(Value::as_str).unwrap_or("").into(),
            _ => String::new(),
        },
    );
    // The mapping, column by column, over the columns the model has now.
    for (column, _) in super::sync_view::columns_of(server, s)
        .await
        .unwrap_or_default()
    {
        let m = &s.mapping;
        if !m.exclude.contains(&column) && (m.auto || m.fields.contains_key(&column)) {
            q.insert(format!("send:{column}"), "on".into());
        }
        let to = m.fields.get(&column).cloned().unwrap_or(column.clone());
        q.insert(format!("as:{column}"), to);
    }
    Some(q)
}

pub(super) async fn edit_sync_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    if e.config.defined_in(entities::SYNC, &name) == sallyport_config::FROM_FILE {
        let body = banner(
            "error",
            &format!("`{name}` is defined in sallyport.yaml (or does not exist): change it there, or duplicate it to edit a copy here"),
        );
        return (StatusCode::CONFLICT, page("Edit", Some(&csrf), &body)).into_response();
    }
    match form_of(&server, &name).await {
        Some(q) => new_sync_form(&server, &csrf, &q, None)
            .await
            .into_response(),
        None => not_found(&csrf, &format!("no sync named `{name}`")),
    }
}

/// The settings as `path = value` lines, to compare an edit with what is saved.
fn flat(v: &Value, at: &str, out: &mut std::collections::BTreeMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                flat(x, &p, out);
            }
        }
        Value::Null => {}
        Value::Array(a) if a.is_empty() => {}
        // A list (the excluded columns) compares as a set.
        Value::Array(a) => {
            let mut items: Vec<String> = a.iter().map(Value::to_string).collect();
            items.sort();
            out.insert(at.to_string(), format!("[{}]", items.join(",")));
        }
        other => {
            out.insert(at.to_string(), other.to_string());
        }
    }
}

/// An edit posted: first a review of what changes (and whether rows are sent again); once
/// confirmed, saved.
pub(super) async fn edit_sync_submit(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    Form(form): FormData,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let mut new = sync_from_form(&form);
    new["name"] = json!(name);
    let e = server.engine();
    let Some(current) = e.config.syncs.get(&name) else {
        return not_found(&csrf, &format!("no sync named `{name}`"));
    };
    if form.get("confirmed").map(String::as_str) == Some("yes") {
        // The saved sync keeps its state id, so that its delivered rows stay on record.
        if let Some(id) = &current.id {
            new["id"] = json!(id);
        }
        return match api::store(&server, entities::SYNC, Some(name.clone()), new, false).await {
            Ok(_) => Redirect::to(&format!("/syncs/{}", path_segment(&name))).into_response(),
            Err(err) => {
                let mut resp = new_sync_form(&server, &csrf, &form, Some(err))
                    .await
                    .into_response();
                *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                resp
            }
        };
    }
    let mut before = std::collections::BTreeMap::new();
    let mut saved = serde_json::to_value(current).unwrap_or_default();
    if let Some(o) = saved.as_object_mut() {
        o.remove("id");
    }
    flat(&saved, "", &mut before);
    let mut after = std::collections::BTreeMap::new();
    let mut proposed = new.clone();
    if let Some(o) = proposed.as_object_mut() {
        o.remove("name");
    }
    flat(&proposed, "", &mut after);
    let mut rows = String::new();
    let mut changed = Vec::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let (b, a) = (before.get(k), after.get(k));
        if b != a {
            changed.push(k.clone());
            let _ = write!(
                rows,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(k),
                esc(b.map(String::as_str).unwrap_or("—")),
                esc(a.map(String::as_str).unwrap_or("—"))
            );
        }
    }
    // What is fingerprinted (the mapping, the object and its settings, the model's rows) decides
    // whether rows go again; when and how changes are found does not.
    let quiet = |k: &str| k == "schedule" || k.starts_with("schedule.") || k == "change_detection";
    let on_record = e.state.count(&e.state_key(&name)).await.unwrap_or(0);
    let note = if changed.is_empty() {
        banner("ok", "Nothing changes.")
    } else if changed.iter().all(|k| quiet(k)) {
        banner(
            "ok",
            "No row is sent again because of this change: only when and how changes are found change.",
        )
    } else if changed.iter().any(|k| k.starts_with("model")) && changed.len() == 1 {
        banner(
            "warning",
            &format!("The next run reads the new model: its rows whose values differ from what was delivered ({on_record} rows on record) are sent again, new keys are sent, and keys that left the model are handled as the sync says."),
        )
    } else {
        banner(
            "warning",
            &format!("This change resends rows: what is sent for each row changes (mapping, object or its settings), so the next run sends every row of the model again ({on_record} rows were delivered so far)."),
        )
    };
    let mut hidden = String::new();
    for (k, v) in &form {
        if k == "csrf" || k == "confirmed" {
            continue;
        }
        let _ = write!(
            hidden,
            r#"<input type="hidden" name="{}" value="{}">"#,
            esc(k),
            esc(v)
        );
    }
    let body = format!(
        r#"<h2>What changes</h2><div class="scroll" tabindex="0"><table id="diff"><thead><tr><th>Setting</th><th>Now</th><th>After</th></tr></thead><tbody>{rows}</tbody></table></div>{note}
<form method="post" action="/syncs/{n}/edit" class="inline">{c}{hidden}<input type="hidden" name="confirmed" value="yes"><button>Save the changes</button></form> <a class="button secondary" href="/syncs/{n}">Cancel</a>"#,
        n = path_segment(&name),
        c = hidden_csrf(&csrf),
    );
    page(&format!("Edit sync {name}: review"), Some(&csrf), &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_columns_compare_as_a_set() {
        let (mut a, mut b) = (Default::default(), Default::default());
        flat(
            &json!({"mapping": {"exclude": ["notes", "bio"]}}),
            "",
            &mut a,
        );
        flat(
            &json!({"mapping": {"exclude": ["bio", "notes"]}}),
            "",
            &mut b,
        );
        assert_eq!(a, b);
        let form: HashMap<String, String> = [
            ("as:notes", ""),
            ("as:bio", ""),
            ("as:email", "email"),
            ("send:email", "on"),
            ("model", "t"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            sync_from_form(&form)["mapping"]["exclude"],
            json!(["bio", "notes"])
        );
    }
}
