//! Run logs in the warehouse (`writeback:` on a warehouse): after each run, one row in
//! `sync_runs`, its failed rows in `sync_failures`, and the keys it added, changed or removed in
//! `sync_changelog` (kept for the last `keep_runs` runs of each sync). Each warehouse writes them
//! with its own SQL (`<warehouse>/writeback.rs`); every statement is idempotent (a run's rows
//! are keyed by sync and run), so a retried or repeated write leaves one copy.

use serde::{Deserialize, Serialize};

/// `writeback: {schema: sallyport_audit, keep_runs: 30}` on a warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBack {
    /// The schema (database, on MySQL) of the tables, created on first use.
    pub schema: String,
    /// How many of each sync's latest runs keep their changelog.
    #[serde(default = "default_keep_runs")]
    pub keep_runs: u32,
}

fn default_keep_runs() -> u32 {
    30
}

/// What one run writes back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunLog {
    pub sync: String,
    pub run_id: i64,
    pub status: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub full_resync: bool,
    pub rows_read: i64,
    pub rows_new: i64,
    pub rows_changed: i64,
    pub rows_unchanged: i64,
    pub rows_sent: i64,
    pub rows_failed: i64,
    pub rows_removed: i64,
    pub requests: i64,
    pub retries: i64,
    pub error: Option<String>,
    pub worker: Option<String>,
    /// Failed rows: key, reason, attempts.
    pub failures: Vec<(String, String, i64)>,
    /// Delivered keys and what happened to them: `added`, `changed`, `removed`, or `resent` (a
    /// full resync's unchanged rows).
    pub changelog: Vec<(String, &'static str)>,
}

impl RunLog {
    /// The run's figures in the order of [`RUN_COLUMNS`] after `sync, run_id, status`.
    pub(crate) fn figures(&self) -> [i64; 9] {
        [
            self.rows_read,
            self.rows_new,
            self.rows_changed,
            self.rows_unchanged,
            self.rows_sent,
            self.rows_failed,
            self.rows_removed,
            self.requests,
            self.retries,
        ]
    }

    pub(crate) fn duration_ms(&self) -> i64 {
        (self.finished_at - self.started_at).max(0)
    }
}

/// The columns of `sync_runs`, in the order the writers give them.
pub(crate) const RUN_COLUMNS: &str = "sync, run_id, status, started_at, finished_at, duration_ms, \
    full_resync, rows_read, rows_new, rows_changed, rows_unchanged, rows_sent, rows_failed, \
    rows_removed, requests, retries, error, worker";

/// Rows per insert statement.
pub(crate) const PER_STATEMENT: usize = 1000;
