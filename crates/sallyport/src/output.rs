//! What the commands print: summaries, tables, a progress bar on terminals.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sallyport_engine::{Progress, RunSummary};

/// A spinner with rows read, rows/s, sent and failed, on a terminal only (never in CI or when
/// stderr is redirected).
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(sync: &str) -> Option<Arc<Bar>> {
        let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        if !interactive {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix}: {human_pos} rows read ({rate}) {msg} [{elapsed}]",
            )
            .expect("a valid template")
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} rows/s", state.per_sec());
                },
            ),
        );
        bar.set_prefix(sync.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(Arc::new(Bar(bar)))
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn update(&self, read: u64, sent: u64, failed: u64) {
        self.0.set_position(read);
        self.0
            .set_message(format!("· {sent} sent · {failed} failed"));
    }
}

/// Milliseconds as `1.2s` or `340ms`.
pub fn duration(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

/// The text summary of a run.
pub fn summary(s: &RunSummary) -> String {
    let mut out = format!(
        "{}: {} in {} (run {})\n  read {} · new {} · changed {} · unchanged {} · sent {} · failed {}",
        s.sync,
        s.status,
        duration(s.duration_ms),
        s.run_id,
        s.rows_read,
        s.rows_new,
        s.rows_changed,
        s.rows_unchanged,
        s.rows_sent,
        s.rows_failed
    );
    if s.rows_removed > 0 {
        if s.removals == "removed" {
            out.push_str(&format!(" · removed {}", s.rows_removed));
        } else {
            out.push_str(&format!(" · left the model {}", s.rows_removed));
        }
    }
    if s.retries > 0 {
        out.push_str(&format!(
            "\n  {} requests, {} retried",
            s.requests, s.retries
        ));
    }
    if let Some(e) = &s.writeback_error {
        out.push_str(&format!("\n  warning: {e}"));
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("\n  error: {e}"));
    }
    if !s.failures.is_empty() {
        out.push_str("\n  failed rows (see `sallyport failures ");
        out.push_str(&s.sync);
        out.push_str("`):");
        for f in &s.failures {
            out.push_str("\n    ");
            out.push_str(f);
        }
    }
    out
}

/// Formats Unix milliseconds as UTC.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}
