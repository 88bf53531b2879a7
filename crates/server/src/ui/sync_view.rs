//! What a marketer reads of a sync: its settings in words and its mapping as a table, a chart of
//! its last runs, a page per run (its figures, its requests, its failed rows, live while it
//! goes, with a Stop button), and the actions that need a second look (full resync, delete)
//! behind a page that says what they do.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sallyport_config::{object_kind, FieldKind, Sync};
use serde_json::Value;

use super::*;
use crate::{api, entities, Server};

/// The model's columns (name, type), when the warehouse answers within a few seconds.
pub(super) async fn columns_of(server: &Server, s: &Sync) -> Option<Vec<(String, String)>> {
    let e = server.engine();
    let w = e.config.warehouses.get(&s.warehouse)?.clone();
    let described = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let src = e.open_for_person(&w).await?;
        src.describe(&s.model).await
    })
    .await
    .ok()?
    .ok()?;
    Some(
        described
            .into_iter()
            .map(|c| (c.name, c.type_name))
            .collect(),
    )
}

/// A schedule in words.
pub(super) fn schedule_words(v: &Value) -> String {
    match v {
        Value::String(every) => {
            let t = every.trim().trim_start_matches("every").trim();
            let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
            let unit = match unit.trim() {
                "s" => "second",
                "m" => "minute",
                "h" => "hour",
                "d" => "day",
                other => other,
            };
            match n {
                "1" => format!("every {unit}"),
                _ => format!("every {n} {unit}s"),
            }
        }
        Value::Object(o) => format!(
            "on the cron schedule `{}` (UTC)",
            o.get("cron").and_then(Value::as_str).unwrap_or_default()
        ),
        _ => "manual runs only".into(),
    }
}

/// What each column of the model becomes: (column, type, what it becomes).
fn mapping_rows(
    s: &Sync,
    v: &Value,
    columns: &[(String, String)],
) -> Vec<(String, String, String)> {
    let kind = object_kind(s.object.name());
    let used: Vec<(String, &str)> = kind
        .map(|k| {
            k.fields
                .iter()
                .filter(|f| f.kind == FieldKind::Column)
                .filter_map(|f| {
                    v.get(f.name)
                        .and_then(Value::as_str)
                        .map(|c| (c.to_string(), f.label))
                })
                .collect()
        })
        .unwrap_or_default();
    let m = &s.mapping;
    columns
        .iter()
        .map(|(c, t)| {
            let becomes = if let Some((_, label)) = used.iter().find(|(u, _)| u == c) {
                format!("used as {}", label.to_lowercase())
            } else if m.exclude.iter().any(|x| x == c) {
                "not sent (excluded)".into()
            } else if let Some(to) = m.fields.get(c) {
                if to == c {
                    format!("sent as `{c}`")
                } else {
                    format!("sent as `{to}` (renamed)")
                }
            } else if m.auto {
                format!("sent as `{c}`")
            } else {
                "not sent (not in the mapping)".into()
            };
            (c.clone(), t.clone(), becomes)
        })
        .collect()
}

/// The sync's settings in one sentence.
fn sentence(s: &Sync, v: &Value, mapping: Option<&[(String, String, String)]>) -> String {
    let model = match &v["model"] {
        Value::Object(o) if o.contains_key("table") => format!(
            "Rows of <code>{}</code>",
            esc(o["table"].as_str().unwrap_or_default())
        ),
        Value::Object(o) if o.contains_key("dbt") => format!(
            "Rows of the dbt model <code>{}</code>",
            esc(o["dbt"].as_str().unwrap_or_default())
        ),
        _ => "Rows of a SQL query".into(),
    };
    let col = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|c| format!("<code>{}</code>", esc(c)))
            .unwrap_or_else(|| "—".into())
    };
    let object = match s.object.name() {
        "person" => format!(
            "Customer.io people, matched by <code>{}</code> from {}",
            esc(v.get("identifier").and_then(Value::as_str).unwrap_or("id")),
            col("primary_key")
        ),
        "event" => format!(
            "Customer.io {} events, each sent once by {}, for the person in {}",
            esc(v
                .get("event_type")
                .and_then(Value::as_str)
                .unwrap_or("track")),
            col("event_id"),
            col("customer_id")
        ),
        other => format!(
            "Customer.io {}",
            esc(&object_kind(other)
                .map(|k| k.label.to_lowercase())
                .unwrap_or_else(|| other.to_string()))
        ),
    };
    let columns = match mapping {
        Some(rows) => {
            let sent = rows.iter().filter(|r| r.2.starts_with("sent as")).count();
            let renamed = rows.iter().filter(|r| r.2.ends_with("(renamed)")).count();
            let excluded = rows.iter().filter(|r| r.2.starts_with("not sent")).count();
            format!(
                "; {sent} column{} sent, {renamed} renamed, {excluded} excluded",
                if sent == 1 { "" } else { "s" }
            )
        }
        None => String::new(),
    };
    let mode = v.get("mode").and_then(Value::as_str).unwrap_or_default();
    let detection = if v.get("change_detection").and_then(Value::as_str) == Some("warehouse") {
        "; changes found in the warehouse"
    } else {
        ""
    };
    format!(
        r#"<p id="in-words">{model} → {object} (mode {}){columns}; {}{detection}.</p>"#,
        esc(mode),
        esc(&schedule_words(&v["schedule"]))
    )
}

pub(super) async fn sync_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    let Some(s) = e.config.syncs.get(&name).cloned() else {
        return not_found(&csrf, &format!("no sync named `{name}`"));
    };
    let v = serde_json::to_value(&s).unwrap_or_default();
    let paused = e.state.paused().await.unwrap_or_default().contains(&name);
    let runs = e.state.runs(Some(&name), 30).await.unwrap_or_default();
    let failures = e
        .state
        .failures_page(&e.state_key(&name), None, 100)
        .await
        .unwrap_or_default();
    let columns = columns_of(&server, &s).await;
    let mapping = columns.as_ref().map(|c| mapping_rows(&s, &v, c));
    let mut mapping_html = String::new();
    match &mapping {
        Some(rows) => {
            for (c, t, becomes) in rows {
                let _ = write!(
                    mapping_html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(c),
                    esc(t),
                    esc(becomes)
                );
            }
            mapping_html = format!(
                r#"<div class="scroll" tabindex="0"><table id="mapping-table"><caption>What each column of the model becomes</caption><thead><tr><th>Column</th><th>Type</th><th>In Customer.io</th></tr></thead><tbody>{mapping_html}</tbody></table></div>"#
            );
        }
        None => {
            mapping_html = format!(
                "<p>The warehouse did not describe the model just now, so the mapping is shown as set: {}.</p>",
                esc(&serde_json::to_string(&s.mapping).unwrap_or_default())
            )
        }
    }
    let mut fails = String::new();
    for f in &failures {
        let _ = write!(
            fails,
            r#"<tr><td>{}</td><td>{}</td><td><a href="/syncs/{}/runs/{}">{}</a></td><td>{}</td></tr>"#,
            esc(&f.key),
            esc(&f.reason),
            path_segment(&name),
            f.run_id,
            f.run_id,
            f.attempts
        );
    }
    if fails.is_empty() {
        fails = r#"<tr><td colspan="4">No failed row.</td></tr>"#.into();
    }
    let mut requests = String::new();
    for r in e.requests(&name).await.unwrap_or_default() {
        requests.push_str(&request_row(&r));
    }
    if requests.is_empty() {
        requests = r#"<tr><td colspan="7">No request on record.</td></tr>"#.into();
    }
    let running = server
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&name);
    let pause_action = if paused { "resume" } else { "pause" };
    // The runaway-removal guard stopped the last run: say why, and offer to let it through.
    let guard = match runs.first().and_then(|r| r.error.as_deref()) {
        Some(why) if why.contains("--allow-removals") => format!(
            r#"{}<form method="post" action="/syncs/{n}/run-allowing-removals" class="inline">{c}<button>Run once, allowing these removals</button></form>"#,
            banner("error", why),
            n = path_segment(&name),
            c = hidden_csrf(&csrf),
        ),
        _ => String::new(),
    };
    let from_file = e.config.defined_in(entities::SYNC, &name) == sallyport_config::FROM_FILE;
    let edits = if from_file {
        r#"<p class="hint">Defined in sallyport.yaml: change it there. Duplicate makes an editable copy here.</p>"#.to_string()
    } else {
        format!(
            r#"<a class="button" href="/syncs/{n}/edit">Edit</a> <a class="button secondary" href="/syncs/{n}/delete">Delete…</a>"#,
            n = path_segment(&name)
        )
    };
    let body = format!(
        r#"{sentence}
<p>State: <strong id="state" data-live="/syncs/{n}/live">{state}</strong> <span id="progress" aria-live="polite"></span></p>{guard}
<div class="actions"><form method="post" action="/syncs/{n}/run" class="inline">{c}<button>Run now</button></form>
<form method="post" action="/syncs/{n}/stop" class="inline">{c}<button class="secondary" id="stop">Stop</button></form>
<form method="post" action="/syncs/{n}/{pause_action}" class="inline">{c}<button class="secondary">{pause_label}</button></form>
<form method="post" action="/syncs/{n}/preview" class="inline">{c}<button class="secondary">Preview</button></form>
<a class="button secondary" href="/syncs/{n}/full-resync">Full resync…</a>
<form method="post" action="/syncs/{n}/duplicate" class="inline">{c}<button class="secondary">Duplicate</button></form>
{edits}</div>
<h2>Mapping</h2>{mapping_html}
<h2>Last 30 runs</h2>{chart}
<h2>Run history</h2><div id="history" class="scroll" tabindex="0">{history}</div>
<h2>Failed rows</h2><div class="scroll" tabindex="0"><table id="failures"><thead><tr><th>Key</th><th>Reason</th><th>Last run</th><th>Attempts</th></tr></thead><tbody>{fails}</tbody></table></div>
<h2>Requests to the app</h2><p>The last 100 requests of this sync (no header is kept; secrets are blanked out; bodies are cut at 4 KB). Also at <code>GET /api/v1/syncs/{n}/requests</code>.</p>
<div class="scroll" tabindex="0"><table id="requests"><thead><tr><th>At</th><th>Run</th><th>Request</th><th>Answer</th><th>Attempt</th><th>Took</th><th>Body</th></tr></thead><tbody>{requests}</tbody></table></div>"#,
        sentence = sentence(&s, &v, mapping.as_deref()),
        n = path_segment(&name),
        c = hidden_csrf(&csrf),
        state = if running {
            "running"
        } else if paused {
            "paused"
        } else {
            "idle"
        },
        pause_label = if paused { "Resume" } else { "Pause" },
        chart = charts::runs_chart(&runs),
        history = runs_table(&name, &runs),
    );
    page(&format!("Sync {name}"), Some(&csrf), &body).into_response()
}

/// One request of the API inspector as a table row.
fn request_row(r: &sallyport_destinations::delivery::Inspected) -> String {
    let answer = match (r.status, &r.error) {
        (Some(st), _) => st.to_string(),
        (None, Some(why)) => format!("no answer: {why}"),
        (None, None) => String::new(),
    };
    format!(
        "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{} ms</td><td><details><summary>{} bytes{}</summary><pre>{}</pre></details></td></tr>",
        esc(&r.at),
        r.run_id,
        esc(&r.method),
        esc(&r.path),
        esc(&answer),
        r.attempt,
        r.duration_ms,
        r.body.len(),
        if r.truncated { ", cut at 4 KB" } else { "" },
        esc(&r.body)
    )
}

/// The run history, each run linking to its page.
pub(super) fn runs_table(name: &str, runs: &[sallyport_state::RunRecord]) -> String {
    let mut rows = String::new();
    for r in runs.iter().take(20) {
        let took = r
            .finished_at
            .map(|f| format!("{:.1}s", (f - r.started_at) as f64 / 1000.0))
            .unwrap_or_else(|| "…".into());
        let _ = write!(
            rows,
            r#"<tr><td><a href="/syncs/{}/runs/{}">{}</a></td><td>{}</td><td>{took}</td><td class="status-{}">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            path_segment(name),
            r.id,
            r.id,
            time(Some(r.started_at)),
            esc(r.status.as_str()),
            esc(r.status.as_str()),
            r.rows_read,
            r.rows_new,
            r.rows_changed,
            r.rows_sent,
            r.rows_failed,
            esc(r.worker.as_deref().unwrap_or("CLI")),
        );
    }
    format!(
        r#"<table id="runs"><thead><tr><th>Run</th><th>Started</th><th>Duration</th><th>Status</th><th>Read</th><th>New</th><th>Changed</th><th>Sent</th><th>Failed</th><th>Worker</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

#[derive(serde::Deserialize, Default)]
pub(super) struct RunQuery {
    /// The page of changes after this key.
    #[serde(default)]
    changes_after: Option<String>,
    /// Failed rows whose key contains this.
    #[serde(default)]
    q: Option<String>,
    /// The page of failed rows after this key.
    #[serde(default)]
    after: Option<String>,
}

/// Failed rows shown per page of a run.
const FAILED_PAGE: usize = 50;

pub(super) async fn run_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Query(q): Query<RunQuery>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    if !e.config.syncs.contains_key(&name) {
        return not_found(&csrf, &format!("no sync named `{name}`"));
    }
    let Some(r) = e
        .state
        .runs_page(Some(&name), Some(id + 1), 1)
        .await
        .ok()
        .and_then(|r| r.into_iter().next())
        .filter(|r| r.id == id)
    else {
        return not_found(&csrf, &format!("no run {id} of `{name}`"));
    };
    let took = r.finished_at.map(|f| f - r.started_at);
    let requests: Vec<_> = e
        .requests(&name)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x.run_id == id)
        .collect();
    let retried = requests.iter().filter(|x| x.attempt > 1).count();
    let request_ms: u64 = requests.iter().map(|x| x.duration_ms).sum();
    let mut request_rows: String = requests.iter().map(request_row).collect();
    if request_rows.is_empty() {
        request_rows = r#"<tr><td colspan="7">None of this run's requests is on record (the inspector keeps each sync's last 100).</td></tr>"#.into();
    }
    // The failed rows whose last try was this run, searchable by key, a page at a time.
    let search = q.q.clone().unwrap_or_default();
    let mut after = q.after.clone();
    let mut shown = Vec::new();
    let mut more = false;
    'pages: for _ in 0..20 {
        let page_rows = e
            .state
            .failures_page(&e.state_key(&name), after.as_deref(), 1000)
            .await
            .unwrap_or_default();
        let Some(last) = page_rows.last().map(|f| f.key.clone()) else {
            break;
        };
        for f in page_rows {
            if f.run_id == id && (search.is_empty() || f.key.contains(&search)) {
                if shown.len() == FAILED_PAGE {
                    more = true;
                    break 'pages;
                }
                shown.push(f);
            }
        }
        after = Some(last);
    }
    let mut fails = String::new();
    for f in &shown {
        let _ = write!(
            fails,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.key),
            esc(&f.reason),
            f.attempts
        );
    }
    if fails.is_empty() {
        fails = r#"<tr><td colspan="3">No failed row of this run matches.</td></tr>"#.into();
    }
    let next = match (more, shown.last()) {
        (true, Some(last)) => format!(
            r#"<p><a href="/syncs/{}/runs/{id}?q={}&amp;after={}">Next failed rows</a></p>"#,
            path_segment(&name),
            path_segment(&search),
            path_segment(&last.key)
        ),
        _ => String::new(),
    };
    // What the run did to each key it delivered, a page at a time.
    let changes = e
        .state
        .changes(&name, id, q.changes_after.as_deref(), FAILED_PAGE + 1)
        .await
        .unwrap_or_default();
    let mut change_rows = String::new();
    for (key, op) in changes.iter().take(FAILED_PAGE) {
        let _ = write!(
            change_rows,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(key),
            esc(op)
        );
    }
    if change_rows.is_empty() {
        change_rows = r#"<tr><td colspan="2">No key on record for this page.</td></tr>"#.into();
    }
    let changes_next = match (changes.len() > FAILED_PAGE, changes.get(FAILED_PAGE - 1)) {
        (true, Some((last, _))) => format!(
            r#"<p><a href="/syncs/{}/runs/{id}?changes_after={}">Next changes</a></p>"#,
            path_segment(&name),
            path_segment(last)
        ),
        _ => String::new(),
    };
    let running = r.status == sallyport_state::RunStatus::Running;
    let here = r.worker.as_deref() == Some(server.worker_id());
    let live = if running && !here {
        format!(
            r#"<p>Running in worker <code>{}</code>: its figures and its Stop button are on that worker's page (<a href="/syncs/{}">the sync's state</a> updates here).</p>"#,
            esc(r.worker.as_deref().unwrap_or("a CLI process")),
            path_segment(&name)
        )
    } else if running {
        format!(
            r#"<p>Live: <span id="progress" aria-live="polite">starting…</span> <span id="state" data-live="/syncs/{n}/live" hidden>running</span></p>
<form method="post" action="/syncs/{n}/stop" class="inline">{c}<button id="stop">Stop this run</button></form>"#,
            n = path_segment(&name),
            c = hidden_csrf(&csrf)
        )
    } else {
        String::new()
    };
    let figure = |label: &str, value: String| {
        format!("<tr><th scope=\"row\">{label}</th><td>{value}</td></tr>")
    };
    let figures = [
        figure(
            "Status",
            format!(
                r#"<span class="status-{0}">{0}</span>"#,
                esc(r.status.as_str())
            ),
        ),
        figure("Started", time(Some(r.started_at))),
        figure("Finished", time(r.finished_at)),
        figure(
            "Duration",
            took.map(|t| format!("{:.1} s", t as f64 / 1000.0))
                .unwrap_or_else(|| "going".into()),
        ),
        figure(
            "Time by stage",
            {
                let st = r.stages;
                let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
                format!(
                    r#"<span id="stages">reading {} · mapping {} · comparing {} · delivery {}</span> <span class="hint">(the stages overlap: the next rows are read while earlier ones are sent)</span>"#,
                    secs(st.read_ms),
                    secs(st.map_ms),
                    secs(st.compare_ms),
                    secs(st.deliver_ms)
                )
            },
        ),
        figure("Worker", esc(r.worker.as_deref().unwrap_or("CLI"))),
        figure(
            "Full resync",
            if r.full_resync { "yes" } else { "no" }.into(),
        ),
        figure("Rows read", r.rows_read.to_string()),
        figure("New", r.rows_new.to_string()),
        figure("Changed", r.rows_changed.to_string()),
        figure("Unchanged", r.rows_unchanged.to_string()),
        figure("Sent", r.rows_sent.to_string()),
        figure("Failed", r.rows_failed.to_string()),
        figure("Removed", r.rows_removed.to_string()),
        figure(
            "Requests on record",
            format!(
                "{} ({retried} retries; {request_ms} ms waiting for the app)",
                requests.len()
            ),
        ),
        figure("Error", esc(r.error.as_deref().unwrap_or("—"))),
    ]
    .concat();
    let body = format!(
        r#"<p><a href="/syncs/{n}">← Sync {name_text}</a></p>{live}
<table id="run-figures"><tbody>{figures}</tbody></table>
<h2>Failed rows of this run</h2>
<form method="get" action="/syncs/{n}/runs/{id}" role="search"><label>Key contains <input name="q" value="{search_text}"></label><button>Search</button></form>
<div class="scroll" tabindex="0"><table id="run-failures"><thead><tr><th>Key</th><th>Reason</th><th>Attempts</th></tr></thead><tbody>{fails}</tbody></table></div>{next}
<h2>What changed</h2><p>{added} added · {changed} changed · {removed} removed. Each key this run delivered, and what it went through (the first 100,000 of a run are kept, for the last 30 runs).</p>
<div class="scroll" tabindex="0"><table id="run-changes"><thead><tr><th>Key</th><th>What happened</th></tr></thead><tbody>{change_rows}</tbody></table></div>{changes_next}
<h2>Requests of this run</h2><div class="scroll" tabindex="0"><table id="run-requests"><thead><tr><th>At</th><th>Run</th><th>Request</th><th>Answer</th><th>Attempt</th><th>Took</th><th>Body</th></tr></thead><tbody>{request_rows}</tbody></table></div>"#,
        n = path_segment(&name),
        name_text = esc(&name),
        search_text = esc(&search),
        added = r.rows_new,
        changed = r.rows_changed,
        removed = r.rows_removed,
    );
    page(&format!("Run {id} of {name}"), Some(&csrf), &body).into_response()
}

/// A page that asks before an action that cannot be taken back, saying what it does.
pub(super) async fn confirm_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    if !e.config.syncs.contains_key(&name) {
        return not_found(&csrf, &format!("no sync named `{name}`"));
    }
    let on_record = e.state.count(&e.state_key(&name)).await.unwrap_or(0);
    let (title, text, button) = match action.as_str() {
        "full-resync" => (
            format!("Full resync of {name}?"),
            format!(
                "A full resync sends every row of the model to Customer.io again, whether it changed or not ({on_record} rows were delivered so far), at the app's pace. People are updated to what the warehouse holds; events are sent with the ids they had, so Customer.io keeps each once."
            ),
            format!("Resync every row of {name}"),
        ),
        "delete" => (
            format!("Delete the sync {name}?"),
            format!(
                "Deleting `{name}` stops its schedule and removes it from Sallyport with its settings. Nothing is removed from Customer.io. Its history stays in the state store ({on_record} delivered rows on record)."
            ),
            format!("Delete {name}"),
        ),
        _ => return (StatusCode::NOT_FOUND, "no such page").into_response(),
    };
    let body = format!(
        r#"<p class="banner warning" role="alert">{}</p><form method="post" action="/syncs/{n}/{action}" class="inline">{c}<button class="danger">{}</button></form> <a class="button secondary" href="/syncs/{n}">Cancel</a>"#,
        esc(&text),
        esc(&button),
        n = path_segment(&name),
        c = hidden_csrf(&csrf),
    );
    page(&title, Some(&csrf), &body).into_response()
}

/// The actions of the sync page that are not a run's: full resync, delete, duplicate, stop.
pub(super) async fn sync_more(
    server: &Arc<Server>,
    headers: &HeaderMap,
    name: &str,
    action: &str,
) -> Response {
    let csrf = csrf_of(server, headers).unwrap_or_default();
    let back = |msg: Result<String, String>| {
        let body = match msg {
            Ok(m) => banner("ok", &m),
            Err(m) => banner("error", &m),
        };
        page(
            &format!("Sync {name}"),
            Some(&csrf),
            &format!(
                r#"{body}<p><a href="/syncs/{}">Back to the sync</a></p>"#,
                path_segment(name)
            ),
        )
        .into_response()
    };
    match action {
        "full-resync" => match server.refuse_if_held(name).await {
            Err(e) => back(Err(e.message)),
            Ok(()) => match server.start_full_resync(name) {
                Ok(_) => Redirect::to(&format!("/syncs/{}", path_segment(name))).into_response(),
                Err(e) => back(Err(e.message)),
            },
        },
        "stop" => {
            if server.stop_run(name) {
                back(Ok(format!(
                    "Stopping `{name}`: requests in flight finish, what Customer.io acknowledged is kept, and the run ends interrupted."
                )))
            } else {
                back(Err(format!("`{name}` is not running in this server")))
            }
        }
        "delete" => match api::remove_entity(server, entities::SYNC, name).await {
            Ok(()) => Redirect::to("/syncs").into_response(),
            Err(e) => back(Err(e.message)),
        },
        "duplicate" => {
            let e = server.engine();
            let Some(s) = e.config.syncs.get(name) else {
                return back(Err(format!("no sync named `{name}`")));
            };
            let mut copy = serde_json::to_value(s).unwrap_or_default();
            let mut n = 1;
            let new_name = loop {
                let candidate = if n == 1 {
                    format!("{name}-copy")
                } else {
                    format!("{name}-copy-{n}")
                };
                if !e.config.syncs.contains_key(&candidate) {
                    break candidate;
                }
                n += 1;
            };
            if let Some(o) = copy.as_object_mut() {
                // A copy has state of its own, and waits for a person to start it.
                o.remove("id");
                o.remove("schedule");
                o.insert("name".into(), Value::String(new_name.clone()));
            }
            match api::store(server, entities::SYNC, None, copy, true).await {
                Ok(_) => {
                    Redirect::to(&format!("/syncs/{}", path_segment(&new_name))).into_response()
                }
                Err(e) => back(Err(e.message)),
            }
        }
        _ => (StatusCode::NOT_FOUND, "no such action").into_response(),
    }
}
