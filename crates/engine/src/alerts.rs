//! Alerts (`alerts:` in the config): after each run, and every so often under `serve`, each
//! alert's conditions are weighed for the syncs it watches. An incident opens in the state store
//! (one row per alert, kind and sync) and its webhook is told once; when the condition is gone,
//! the row goes and the webhook is told once more. The store decides, so several workers over
//! one store tell each incident once.

use std::time::Duration;

use sallyport_config::alerts::{
    Alert, AlertFormat, NOT_SUCCEEDED_FOR, ROWS_FAILED, ROWS_SENT_DEVIATES, RUN_FAILED,
};
use sallyport_state::{Incident, RunStatus};
use serde_json::json;

use crate::{Engine, RunError, RunSummary};

/// How many of a sync's completed runs the rows-sent median is taken over.
const MEDIAN_OF: usize = 10;
/// The fewest earlier runs a median needs.
const MEDIAN_MIN: usize = 3;

impl Engine {
    /// Weighs the alerts that watch `sync` after a run of it (or a run that could not start).
    pub async fn alert_after_run(&self, sync: &str, result: &Result<RunSummary, RunError>) {
        let alerts: Vec<&Alert> = self
            .config
            .alerts
            .iter()
            .filter(|a| a.watches(sync))
            .collect();
        if alerts.is_empty() || !self.config.syncs.contains_key(sync) {
            return;
        }
        let (status, run_id, summary) = match result {
            Ok(s) => (s.status, Some(s.run_id), Some(s)),
            // Another run has the sync: nothing about it changed.
            Err(RunError::AlreadyRunning(_)) => return,
            Err(_) => (RunStatus::Failed, None, None),
        };
        let completed = matches!(status, RunStatus::Succeeded | RunStatus::Partial);
        for a in alerts {
            let w = &a.when;
            if w.run_failed {
                if status == RunStatus::Failed {
                    let why = match result {
                        Ok(s) => s.error.clone().unwrap_or_default(),
                        Err(e) => e.to_string(),
                    };
                    self.fire(
                        a,
                        RUN_FAILED,
                        sync,
                        run_id,
                        format!("{sync}: the run failed: {why}"),
                    )
                    .await;
                } else if completed {
                    self.resolve(a, RUN_FAILED, sync, run_id, format!("{sync}: runs again"))
                        .await;
                }
            }
            let Some(s) = summary.filter(|_| completed) else {
                continue;
            };
            if let Some(t) = &w.rows_failed {
                if t.exceeded(s.rows_failed, s.rows_read).unwrap_or(false) {
                    let m = format!(
                        "{sync}: {} of {} rows failed (the alert's limit is {}); see `sallyport failures {sync}`",
                        s.rows_failed,
                        s.rows_read,
                        t.text()
                    );
                    self.fire(a, ROWS_FAILED, sync, run_id, m).await;
                } else {
                    let m = format!("{sync}: {} rows failed, within the limit", s.rows_failed);
                    self.resolve(a, ROWS_FAILED, sync, run_id, m).await;
                }
            }
            if let Some(factor) = w.rows_sent_deviates {
                if let Some(median) = self.sent_median(sync, s.run_id).await {
                    let sent = s.rows_sent as f64;
                    let high = sent > median.max(1.0) * factor;
                    // A run that sent nothing is not low: with incremental runs, a model that
                    // did not change is the usual case.
                    let low = median >= 1.0 && sent > 0.0 && sent * factor < median;
                    if high || low {
                        let m = format!(
                            "{sync}: {} rows sent, against a median of {median} over its last runs (more than {factor}× {})",
                            s.rows_sent,
                            if high { "above" } else { "below" }
                        );
                        self.fire(a, ROWS_SENT_DEVIATES, sync, run_id, m).await;
                    } else {
                        let m = format!(
                            "{sync}: {} rows sent, near the median of {median}",
                            s.rows_sent
                        );
                        self.resolve(a, ROWS_SENT_DEVIATES, sync, run_id, m).await;
                    }
                }
            }
            if w.not_succeeded_for.is_some() && status == RunStatus::Succeeded {
                self.resolve(
                    a,
                    NOT_SUCCEEDED_FOR,
                    sync,
                    run_id,
                    format!("{sync}: succeeded"),
                )
                .await;
            }
        }
    }

    /// Opens a `not_succeeded_for` incident for each watched sync whose last success (or, with
    /// none, its first run) is older than the alert allows. Answers how many it opened.
    pub async fn alert_not_succeeded(&self) -> usize {
        let now = sallyport_state::now_ms();
        let mut opened = 0;
        for a in &self.config.alerts {
            let Some(limit) = a
                .when
                .not_succeeded_for
                .as_deref()
                .and_then(|d| sallyport_config::parse_duration(d).ok())
            else {
                continue;
            };
            for sync in self.config.syncs.keys().filter(|s| a.watches(s)) {
                let runs = match self.state.runs(Some(sync), 500).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(sync = %sync, error = %e, "cannot read the run history for alerts");
                        continue;
                    }
                };
                let since = runs
                    .iter()
                    .find(|r| r.status == RunStatus::Succeeded)
                    .and_then(|r| r.finished_at)
                    .or_else(|| runs.last().map(|r| r.started_at));
                let Some(since) = since else { continue };
                if now - since > limit.as_millis() as i64 {
                    let m = format!(
                        "{sync}: no successful run for {} (the alert allows {})",
                        crate::alerts::human(Duration::from_millis((now - since) as u64)),
                        a.when.not_succeeded_for.as_deref().unwrap_or_default()
                    );
                    if self.fire(a, NOT_SUCCEEDED_FOR, sync, None, m).await {
                        opened += 1;
                    }
                }
            }
        }
        opened
    }

    /// The median of rows sent by the sync's last completed runs before `run_id`, when there
    /// are enough of them.
    async fn sent_median(&self, sync: &str, run_id: i64) -> Option<f64> {
        let runs = self.state.runs(Some(sync), 50).await.ok()?;
        let mut sent: Vec<u64> = runs
            .iter()
            .filter(|r| {
                r.id != run_id && matches!(r.status, RunStatus::Succeeded | RunStatus::Partial)
            })
            .take(MEDIAN_OF)
            .map(|r| r.rows_sent)
            .collect();
        if sent.len() < MEDIAN_MIN {
            return None;
        }
        sent.sort_unstable();
        let n = sent.len();
        Some(if n % 2 == 1 {
            sent[n / 2] as f64
        } else {
            (sent[n / 2 - 1] + sent[n / 2]) as f64 / 2.0
        })
    }

    /// Opens the incident and tells the webhook, when it was not open. A webhook that cannot
    /// be told leaves it closed, to be opened (and told) at the next chance.
    async fn fire(
        &self,
        a: &Alert,
        kind: &str,
        sync: &str,
        run_id: Option<i64>,
        message: String,
    ) -> bool {
        let incident = Incident {
            alert: a.name.clone(),
            kind: kind.to_string(),
            sync: sync.to_string(),
            opened_at: sallyport_state::now_ms(),
            message,
        };
        match self.state.incident_open(&incident).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(alert = %a.name, error = %e, "cannot record the alert");
                return false;
            }
        }
        tracing::warn!(alert = %a.name, kind, sync, message = %incident.message, "alert firing");
        if let Err(e) = post(a, "firing", &incident, run_id).await {
            tracing::warn!(alert = %a.name, kind, sync, error = %e, "the alert's webhook could not be told; it is tried again at the next chance");
            let _ = self.state.incident_close(&a.name, kind, sync).await;
            return false;
        }
        true
    }

    /// Closes the incident and tells the webhook, when it was open.
    async fn resolve(
        &self,
        a: &Alert,
        kind: &str,
        sync: &str,
        run_id: Option<i64>,
        message: String,
    ) {
        match self.state.incident_close(&a.name, kind, sync).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(alert = %a.name, error = %e, "cannot record the alert");
                return;
            }
        }
        let incident = Incident {
            alert: a.name.clone(),
            kind: kind.to_string(),
            sync: sync.to_string(),
            opened_at: sallyport_state::now_ms(),
            message,
        };
        tracing::info!(alert = %a.name, kind, sync, "alert resolved");
        if let Err(e) = post(a, "resolved", &incident, run_id).await {
            tracing::warn!(alert = %a.name, kind, sync, error = %e, "the alert's webhook could not be told it resolved");
        }
    }

    /// Posts a test message to an alert's webhook (the UI's and the API's "Send a test").
    pub async fn alert_test(&self, name: &str) -> Result<(), String> {
        let a = self
            .config
            .alerts
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| format!("no alert named `{name}`"))?;
        let incident = Incident {
            alert: a.name.clone(),
            kind: "test".into(),
            sync: String::new(),
            opened_at: sallyport_state::now_ms(),
            message: format!("a test of alert `{}`: its webhook works", a.name),
        };
        post(a, "test", &incident, None).await
    }
}

/// The body an alert's webhook gets.
pub fn body(a: &Alert, state: &str, i: &Incident, run_id: Option<i64>) -> serde_json::Value {
    match a.format {
        AlertFormat::Json => json!({
            "alert": a.name,
            "kind": i.kind,
            "state": state,
            "sync": i.sync,
            "run_id": run_id,
            "message": i.message,
            "at": chrono::DateTime::from_timestamp_millis(i.opened_at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }),
        AlertFormat::Slack => {
            let mark = match state {
                "firing" => ":rotating_light: *Firing*",
                "resolved" => ":white_check_mark: *Resolved*",
                _ => ":information_source: *Test*",
            };
            json!({ "text": format!("{mark}: {} (alert `{}`)", i.message, a.name) })
        }
    }
}

/// Posts to the webhook: three tries, 10 s each. Errors never carry the URL (a Slack
/// webhook's URL is its credential).
async fn post(a: &Alert, state: &str, i: &Incident, run_id: Option<i64>) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let payload = body(a, state, i, run_id);
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match client.post(a.webhook.expose()).json(&payload).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("the webhook answered {}", r.status()),
            Err(e) => last = format!("the webhook could not be reached: {}", e.without_url()),
        }
    }
    Err(last)
}

/// A duration in words: `3h 5m`, `42s`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}
