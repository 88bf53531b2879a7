//! Prometheus metrics: runs, rows sent and failed per sync, requests, retries and request time to
//! each app.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use sallyport_engine::RunSummary;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    runs: BTreeMap<(String, String), u64>,
    rows_sent: BTreeMap<String, u64>,
    rows_failed: BTreeMap<String, u64>,
    requests: BTreeMap<String, u64>,
    retries: BTreeMap<String, u64>,
    request_seconds: BTreeMap<String, f64>,
    run_seconds: BTreeMap<String, f64>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a finished run of a sync that sends to `app`.
    pub fn record(&self, s: &RunSummary, app: &str) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *c.runs
            .entry((s.sync.clone(), s.status.to_string()))
            .or_default() += 1;
        *c.rows_sent.entry(s.sync.clone()).or_default() += s.rows_sent;
        *c.rows_failed.entry(s.sync.clone()).or_default() += s.rows_failed;
        *c.requests.entry(app.to_string()).or_default() += s.requests;
        *c.retries.entry(app.to_string()).or_default() += s.retries;
        *c.request_seconds.entry(app.to_string()).or_default() += s.request_ms as f64 / 1000.0;
        *c.run_seconds.entry(s.sync.clone()).or_default() += s.duration_ms as f64 / 1000.0;
    }

    /// The text exposition format.
    pub fn render(&self, running: usize) -> String {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut family = |name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "sallyport_runs_total",
            "Runs that ended, by sync and status.",
            "counter",
        );
        let mut text = String::new();
        for ((sync, status), n) in &c.runs {
            let _ = writeln!(
                text,
                "sallyport_runs_total{{sync=\"{}\",status=\"{}\"}} {n}",
                label(sync),
                label(status)
            );
        }
        out.push_str(&text);
        let series =
            |out: &mut String, name: &str, help: &str, kind: &str, m: &BTreeMap<String, f64>| {
                let key = if name.starts_with("sallyport_app_") {
                    "app"
                } else {
                    "sync"
                };
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (k, v) in m {
                    let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {v}", label(k));
                }
            };
        let as_f64 = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| (k.clone(), *v as f64))
                .collect::<BTreeMap<_, _>>()
        };
        series(
            &mut out,
            "sallyport_rows_sent_total",
            "Rows the app accepted.",
            "counter",
            &as_f64(&c.rows_sent),
        );
        series(
            &mut out,
            "sallyport_rows_failed_total",
            "Rows that failed.",
            "counter",
            &as_f64(&c.rows_failed),
        );
        series(
            &mut out,
            "sallyport_app_requests_total",
            "Requests to the app, retries included.",
            "counter",
            &as_f64(&c.requests),
        );
        series(
            &mut out,
            "sallyport_app_retries_total",
            "Requests retried after a transient failure.",
            "counter",
            &as_f64(&c.retries),
        );
        series(
            &mut out,
            "sallyport_app_request_seconds_total",
            "Time spent in requests to the app.",
            "counter",
            &c.request_seconds,
        );
        series(
            &mut out,
            "sallyport_run_seconds_total",
            "Time spent in runs.",
            "counter",
            &c.run_seconds,
        );
        let _ = writeln!(out, "# HELP sallyport_runs_in_progress Runs going now.\n# TYPE sallyport_runs_in_progress gauge\nsallyport_runs_in_progress {running}");
        out
    }
}
