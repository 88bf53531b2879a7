//! The Syncs pages: the list, a sync's page with its history and failed rows, live updates, run / pause / resume, preview.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::json;

use super::*;
use crate::{scheduler, Server};

pub(super) async fn syncs_page(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let e = server.engine();
    let paused = e.state.paused().await.unwrap_or_default();
    let workers = server.workers().await.unwrap_or_default();
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
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
            || workers
                .iter()
                .any(|w| w.alive && w.worker.running.contains(name));
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
    let mut worker_rows = String::new();
    for w in &workers {
        let state = match (w.alive, w.worker.stopping) {
            (false, _) => "lost (no heartbeat within the lease)",
            (true, true) => "stopping",
            (true, false) => "alive",
        };
        let _ = write!(
            worker_rows,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{}</td></tr>",
            esc(&w.worker.id),
            if w.this { " (this one)" } else { "" },
            w.worker.pid,
            time(Some(w.worker.started_at)),
            time(Some(w.worker.heartbeat_at)),
            if w.worker.running.is_empty() {
                "—".to_string()
            } else {
                esc(&w.worker.running.join(", "))
            },
        );
    }
    let incidents = e.state.incidents().await.unwrap_or_default();
    let mut alert_rows = String::new();
    for a in &e.config.alerts {
        let w = &a.when;
        let mut when = Vec::new();
        if w.run_failed {
            when.push("a run fails".to_string());
        }
        if let Some(t) = &w.rows_failed {
            when.push(format!("more than {} rows fail", t.text()));
        }
        if let Some(f) = w.rows_sent_deviates {
            when.push(format!("rows sent move more than {f}× from the median"));
        }
        if let Some(d) = &w.not_succeeded_for {
            when.push(format!("no success for {d}"));
        }
        let open: Vec<String> = incidents
            .iter()
            .filter(|i| i.alert == a.name)
            .map(|i| format!("{} (since {})", esc(&i.message), time(Some(i.opened_at))))
            .collect();
        let _ = write!(
            alert_rows,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method="post" action="/alerts/{}/test" class="inline">{}<button>Send a test</button></form></td></tr>"#,
            esc(&a.name),
            if a.syncs.is_empty() {
                "every sync".to_string()
            } else {
                esc(&a.syncs.join(", "))
            },
            esc(&when.join("; ")),
            match a.format {
                sallyport_config::alerts::AlertFormat::Slack => "Slack",
                sallyport_config::alerts::AlertFormat::Json => "JSON webhook",
            },
            if open.is_empty() {
                "none".to_string()
            } else {
                open.join("<br>")
            },
            esc(&a.name),
            hidden_csrf(&csrf),
        );
    }
    let alerts = if e.config.alerts.is_empty() {
        "<p>No alert is set: add <code>alerts:</code> to the config to be told when a run fails, rows fail, the rows sent move away from the usual, or a sync stops succeeding.</p>".to_string()
    } else {
        format!(
            r#"<table id="alerts"><thead><tr><th>Alert</th><th>Watches</th><th>Fires when</th><th>Goes to</th><th>Open incidents</th><th></th></tr></thead><tbody>{alert_rows}</tbody></table>"#
        )
    };
    page(
        "Syncs",
        Some(&csrf),
        &format!(
            r#"<p><a class="button" href="/syncs/new">New sync</a></p>
<table><thead><tr><th>Sync</th><th>From → to</th><th>State</th><th>Last run</th><th>Next run</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Workers</h2>
<p>The <code>serve</code> processes sharing this state store. Each run is made by one of them; a worker that stops beating loses its runs to another within the lease.</p>
<table id="workers"><thead><tr><th>Worker</th><th>Process</th><th>Started</th><th>Last heartbeat</th><th>State</th><th>Running</th></tr></thead><tbody>{worker_rows}</tbody></table>
<h2>Alerts</h2>
{alerts}"#
        ),
    )
}

pub(super) fn runs_table(runs: &[sallyport_state::RunRecord]) -> String {
    let mut rows = String::new();
    for r in runs {
        let took = r
            .finished_at
            .map(|f| format!("{:.1}s", (f - r.started_at) as f64 / 1000.0))
            .unwrap_or_else(|| "…".into());
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{took}</td><td class=\"status-{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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

pub(super) async fn sync_page(
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
        .failures_page(&e.state_key(&name), None, 100)
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
    // The API inspector: the last requests this process made for the sync.
    let mut requests = String::new();
    for r in e.requests(&name).await.unwrap_or_default() {
        let answer = match (r.status, &r.error) {
            (Some(st), _) => st.to_string(),
            (None, Some(why)) => format!("no answer: {why}"),
            (None, None) => String::new(),
        };
        let _ = write!(
            requests,
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
        );
    }
    if requests.is_empty() {
        requests = r#"<tr><td colspan="7">No request since this server started.</td></tr>"#.into();
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
            n = esc(&name),
            c = hidden_csrf(&csrf),
        ),
        _ => String::new(),
    };
    let body = format!(
        r#"<p id="state" data-live="/syncs/{n}/live">{state}</p>{guard}
<p class="actions"><form method="post" action="/syncs/{n}/run" class="inline">{c}<button>Run now</button></form>
<form method="post" action="/syncs/{n}/{pause_action}" class="inline">{c}<button>{pause_label}</button></form>
<form method="post" action="/syncs/{n}/preview" class="inline">{c}<button>Preview</button></form></p>
<h2>Settings</h2><pre>{settings}</pre>
<h2>Run history</h2><div id="history">{runs}</div>
<h2>Failed rows</h2><table id="failures"><thead><tr><th>Key</th><th>Reason</th><th>Last run</th><th>Attempts</th></tr></thead><tbody>{fails}</tbody></table>
<h2>Requests to the app</h2><p>The last 100 requests of this sync made by this server (no header is kept; secrets are blanked out; bodies are cut at 4 KB). Also at <code>GET /api/v1/syncs/{n}/requests</code>.</p>
<table id="requests"><thead><tr><th>At</th><th>Run</th><th>Request</th><th>Answer</th><th>Attempt</th><th>Took</th><th>Body</th></tr></thead><tbody>{requests}</tbody></table>"#,
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
pub(super) async fn sync_live(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Response {
    let e = server.engine();
    let running = server
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&name);
    let paused = e.state.paused().await.unwrap_or_default().contains(&name);
    let runs = e.state.runs(Some(&name), 20).await.unwrap_or_default();
    Json(json!({
        "state": if running { "running" } else if paused { "paused" } else { "idle" },
        "history": runs_table(&runs),
    }))
    .into_response()
}

pub(super) async fn sync_action(
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
        "run" | "run-allowing-removals" => match server.refuse_if_held(name).await {
            Err(e) => Err(e.message),
            Ok(()) => server
                .start_run_with(name, "manual", action == "run-allowing-removals")
                .map(|_| ())
                .map_err(|e| e.message),
        },
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

/// `run`, `pause` or `resume`.
pub(super) async fn sync_action_route(
    State(s): State<Arc<Server>>,
    h: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if !matches!(
        action.as_str(),
        "run" | "run-allowing-removals" | "pause" | "resume"
    ) {
        return (StatusCode::NOT_FOUND, "no such action").into_response();
    }
    sync_action(&s, &h, &name, &action).await
}

pub(super) async fn sync_preview(
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
                    esc(op.change.as_str()),
                    esc(&op.endpoint),
                    esc(&serde_json::to_string_pretty(&op.body).unwrap_or_default())
                );
            }
            let fails: String = p
                .failures
                .iter()
                .map(|f| format!("<li>{}</li>", esc(f)))
                .collect();
            // Removals are listed apart, with the guard's verdict.
            let mut removals = String::new();
            if p.rows_to_remove > 0 {
                let _ = write!(
                    removals,
                    "<h2>Would remove {} rows that left the model</h2>",
                    p.rows_to_remove
                );
                if let Some(why) = &p.removal_guard {
                    removals.push_str(&banner(
                        "error",
                        &format!("A run would stop before removing anything: {why}"),
                    ));
                }
                for op in &p.removals {
                    let _ = write!(
                        removals,
                        "<h3>{} ({}) {}</h3><pre>{}</pre>",
                        esc(&op.key),
                        esc(op.change.as_str()),
                        esc(&op.endpoint),
                        esc(&serde_json::to_string_pretty(&op.body).unwrap_or_default())
                    );
                }
            }
            format!(
                "<p>Would send new {} · changed {} · unchanged {} · failed {} (of {} read) · remove {}.</p>{ops}{removals}<h2>Rows that would fail</h2><ul>{fails}</ul><p><a href=\"/syncs/{}\">Back</a></p>",
                p.rows_new, p.rows_changed, p.rows_unchanged, p.rows_failed, p.rows_read, p.rows_to_remove, esc(&name)
            )
        }
        Err(e) => banner("error", &e.to_string()),
    };
    page(&format!("Preview of {name}"), Some(&csrf), &body).into_response()
}

pub(super) async fn alert_test(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Html<String> {
    let csrf = csrf_of(&server, &headers).unwrap_or_default();
    let said = match server.engine().alert_test(&name).await {
        Ok(()) => banner(
            "ok",
            &format!("A test message went to the webhook of alert `{name}`."),
        ),
        Err(e) => banner("error", &format!("alert `{name}`: {e}")),
    };
    page(
        "Alert test",
        Some(&csrf),
        &format!(r#"{said}<p><a href="/syncs">Back to the syncs</a></p>"#),
    )
}
