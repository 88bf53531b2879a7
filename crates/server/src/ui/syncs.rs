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
        let recent = e.state.runs(Some(name), 30).await.unwrap_or_default();
        let last = recent.first().cloned();
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
        let health = match last.as_ref().map(|r| r.status) {
            Some(sallyport_state::RunStatus::Succeeded) => ("ok", "healthy"),
            Some(sallyport_state::RunStatus::Partial) => ("warn", "some rows failed"),
            Some(sallyport_state::RunStatus::Failed) => ("bad", "last run failed"),
            Some(sallyport_state::RunStatus::Interrupted) => ("warn", "interrupted"),
            Some(sallyport_state::RunStatus::Running) => ("ok", "running"),
            None => ("none", "never run"),
        };
        let _ = write!(
            rows,
            r#"<tr><td><a href="/syncs/{0}">{1}</a></td><td>{2} → {3} {4}</td><td>{5}</td><td><span class="health health-{6}">{7}</span> {8}</td><td>{9}</td><td>{10}</td></tr>"#,
            path_segment(name),
            esc(name),
            esc(&s.warehouse),
            esc(&s.app),
            s.object.name(),
            state,
            health.0,
            health.1,
            last.map(|r| format!("({} sent, {} failed)", r.rows_sent, r.rows_failed))
                .unwrap_or_default(),
            charts::sparkline(&recent),
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
<div class="scroll" tabindex="0"><table id="overview"><thead><tr><th>Sync</th><th>From → to</th><th>State</th><th>Health</th><th>Last 30 runs (rows sent)</th><th>Next run</th></tr></thead><tbody>{rows}</tbody></table></div>
<h2>Workers</h2>
<p>The <code>serve</code> processes sharing this state store. Each run is made by one of them; a worker that stops beating loses its runs to another within the lease.</p>
<table id="workers"><thead><tr><th>Worker</th><th>Process</th><th>Started</th><th>Last heartbeat</th><th>State</th><th>Running</th></tr></thead><tbody>{worker_rows}</tbody></table>
<h2>Alerts</h2>
{alerts}"#
        ),
    )
}

/// What the sync page's script polls: the state and the history, so that a run in progress
/// shows without a full reload.
pub(super) async fn sync_live(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
) -> Response {
    let e = server.engine();
    let here = server
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&name);
    let running = here
        || server
            .workers()
            .await
            .unwrap_or_default()
            .iter()
            .any(|w| w.alive && w.worker.running.contains(&name));
    let paused = e.state.paused().await.unwrap_or_default().contains(&name);
    let runs = e.state.runs(Some(&name), 20).await.unwrap_or_default();
    // Rows read, sent and failed so far, and the pace, while this server runs the sync.
    let progress = server
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .map(|r| {
            use std::sync::atomic::Ordering::Relaxed;
            let secs = (chrono::Utc::now() - r.started_at)
                .num_milliseconds()
                .max(1) as f64
                / 1000.0;
            let read = r.live.rows_read.load(Relaxed);
            json!({
                "rows_read": read,
                "rows_sent": r.live.rows_sent.load(Relaxed),
                "rows_failed": r.live.rows_failed.load(Relaxed),
                "seconds": (secs * 10.0).round() / 10.0,
                "rows_per_second": (read as f64 / secs).round(),
            })
        });
    Json(json!({
        "state": if running { "running" } else if paused { "paused" } else { "idle" },
        "history": runs_table(&name, &runs),
        "progress": progress,
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
        return not_found(&csrf, &format!("no sync named `{name}`"));
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
    match action.as_str() {
        "run" | "run-allowing-removals" | "pause" | "resume" => {
            sync_action(&s, &h, &name, &action).await
        }
        "full-resync" | "stop" | "delete" | "duplicate" => sync_more(&s, &h, &name, &action).await,
        _ => (StatusCode::NOT_FOUND, "no such action").into_response(),
    }
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
