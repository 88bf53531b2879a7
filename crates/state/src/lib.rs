//! The state store: what each sync last delivered (a fingerprint per row key), run history,
//! failed rows and run locks. An SQLite file by default; PostgreSQL for teams. Both hold the
//! same schema and answer the same calls.
//!
//! Only what the app acknowledged is ever written here: a crash between delivery and commit
//! costs a re-send, never a lost row.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::time::Duration;

use sallyport_config::StateLocation;
use serde::Serialize;

/// How a run ended (or that it is going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Going.
    #[default]
    Running,
    /// Every row was delivered.
    Succeeded,
    /// The run completed, but some rows failed.
    Partial,
    /// The run could not complete.
    Failed,
    /// Stopped by a signal (or its process stopped): what was acknowledged is committed.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// The status a store's text names (an unknown text reads as `failed`).
    pub fn from_text(t: &str) -> RunStatus {
        match t {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "interrupted" => RunStatus::Interrupted,
            _ => RunStatus::Failed,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What a run (or a preview) counted: one type for the run summary, the run history and the
/// preview.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RowCounts {
    pub rows_read: u64,
    pub rows_new: u64,
    pub rows_changed: u64,
    pub rows_unchanged: u64,
    pub rows_sent: u64,
    pub rows_failed: u64,
    /// Keys that left the model and so left the state.
    pub rows_removed: u64,
}

/// A run as the history shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub sync: String,
    pub status: RunStatus,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub full_resync: bool,
    #[serde(flatten)]
    pub counts: RowCounts,
    pub error: Option<String>,
    /// The `serve` worker that ran it (none for a CLI run).
    pub worker: Option<String>,
    /// Where the run's time went, stage by stage (the stages overlap: the next rows are read
    /// while earlier ones are sent).
    #[serde(flatten)]
    pub stages: StageTimes,
}

/// Milliseconds each stage of a run was busy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageTimes {
    /// Waiting for the warehouse's rows.
    pub read_ms: u64,
    /// Mapping rows to what the app is sent.
    pub map_ms: u64,
    /// Comparing with what was delivered before.
    pub compare_ms: u64,
    /// Sending to the app and committing its answers.
    pub deliver_ms: u64,
}

/// An alert's open incident: what fired, for which sync, since when.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Incident {
    pub alert: String,
    pub kind: String,
    pub sync: String,
    /// Unix milliseconds.
    pub opened_at: i64,
    pub message: String,
}

/// A `serve` process sharing the state store, as its last heartbeat left it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// Unix milliseconds.
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// The syncs it was running at its last heartbeat.
    pub running: Vec<String>,
    /// It was draining (stopping) at its last heartbeat.
    pub stopping: bool,
}

impl std::ops::Deref for RunRecord {
    type Target = RowCounts;
    fn deref(&self) -> &RowCounts {
        &self.counts
    }
}

impl std::ops::DerefMut for RunRecord {
    fn deref_mut(&mut self) -> &mut RowCounts {
        &mut self.counts
    }
}

/// A row that could not be delivered, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub key: String,
    pub reason: String,
    /// The run that last tried it.
    pub run_id: i64,
    /// How many runs have tried it.
    pub attempts: i64,
    pub first_failed_at: i64,
    pub last_failed_at: i64,
}

/// What one acknowledged batch changes in the state, written in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// Keys the app accepted, with the fingerprint of what it accepted.
    pub accepted: Vec<(String, u64)>,
    /// Accepted keys that had a failure on record, now cleared.
    pub cleared: Vec<String>,
    /// Keys that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Notes kept beside accepted keys: what a later run needs to know of what was sent (the
    /// person a device was added to, which attributes had values).
    pub noted: Vec<(String, String)>,
    /// Keys whose removal the app accepted: they leave the state (and their failures).
    pub removed: Vec<String>,
}

impl Commit {
    fn is_empty(&self) -> bool {
        self.accepted.is_empty()
            && self.failed.is_empty()
            && self.cleared.is_empty()
            && self.noted.is_empty()
            && self.removed.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store: {0}")]
    Postgres(String),
    #[error("state store: {0}")]
    Other(String),
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StateError::Postgres(db.message().to_string()),
            None => StateError::Postgres(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An open state store.
pub enum StateStore {
    Sqlite(sqlite::SqliteState),
    Postgres(postgres::PgState),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            StateStore::Sqlite($s) => $e,
            StateStore::Postgres($s) => $e,
        }
    };
}

impl StateStore {
    /// Opens (and creates or migrates) the store.
    pub async fn open(location: &StateLocation) -> Result<StateStore> {
        match location {
            StateLocation::Sqlite(path) => Ok(StateStore::Sqlite(sqlite::SqliteState::open(path)?)),
            StateLocation::Postgres(url) => Ok(StateStore::Postgres(
                postgres::PgState::connect(url.expose()).await?,
            )),
        }
    }

    /// Takes the run lock of `sync` for `lease`, unless a live holder has it. A holder that
    /// crashed stops blocking when its lease runs out.
    pub async fn try_lock(&self, sync: &str, holder: &str, lease: Duration) -> Result<bool> {
        let now = now_ms();
        let expires = now + lease.as_millis() as i64;
        each!(self, s => s.try_lock(sync, holder, now, expires).await)
    }

    /// Who holds the run lock of `sync` (a lease that has not run out), if anyone.
    pub async fn lock_holder(&self, sync: &str) -> Result<Option<String>> {
        each!(self, s => s.lock_holder(sync, now_ms()).await)
    }

    /// The state ids that have delivered rows on record.
    pub async fn state_ids(&self) -> Result<Vec<String>> {
        each!(self, s => s.state_ids().await)
    }

    /// The runs recorded as `running`: (run id, sync).
    pub async fn running_runs(&self) -> Result<Vec<(i64, String)>> {
        each!(self, s => s.running_runs().await)
    }

    /// Records a run that is no longer going (its process stopped) as `interrupted`, with
    /// why; `false` when it was not `running`.
    pub async fn interrupt_run(&self, id: i64, reason: &str) -> Result<bool> {
        each!(self, s => s.interrupt_run(id, now_ms(), reason).await)
    }

    /// Takes the lock of `sync` from `from` (a holder known to be dead), unless it changed hands
    /// meanwhile.
    pub async fn take_lock(
        &self,
        sync: &str,
        from: &str,
        to: &str,
        lease: Duration,
    ) -> Result<bool> {
        let expires = now_ms() + lease.as_millis() as i64;
        each!(self, s => s.take_lock(sync, from, to, expires).await)
    }

    /// Extends a held lock; `false` when `holder` no longer holds it.
    pub async fn renew_lock(&self, sync: &str, holder: &str, lease: Duration) -> Result<bool> {
        let expires = now_ms() + lease.as_millis() as i64;
        each!(self, s => s.renew_lock(sync, holder, expires).await)
    }

    /// Releases a held lock.
    pub async fn unlock(&self, sync: &str, holder: &str) -> Result<()> {
        each!(self, s => s.unlock(sync, holder).await)
    }

    /// Records the start of a run; its id.
    pub async fn begin_run(
        &self,
        sync: &str,
        full_resync: bool,
        worker: Option<&str>,
    ) -> Result<i64> {
        each!(self, s => s.begin_run(sync, full_resync, worker, now_ms()).await)
    }

    /// Records that worker `w` is alive now (and what it runs); workers silent for a day are
    /// forgotten on the way.
    pub async fn worker_beat(&self, w: &WorkerRecord) -> Result<()> {
        let mut w = w.clone();
        w.heartbeat_at = now_ms();
        let forget_before = w.heartbeat_at - 24 * 3600 * 1000;
        each!(self, s => s.worker_beat(&w, forget_before).await)
    }

    /// The workers that beat in the last day, the most recent first.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        each!(self, s => s.workers().await)
    }

    /// Opens an incident unless it is open: `true` when this call opened it (whichever process
    /// asks, one of them does).
    pub async fn incident_open(&self, i: &Incident) -> Result<bool> {
        each!(self, s => s.incident_open(i).await)
    }

    /// Closes an open incident: `true` when this call closed it.
    pub async fn incident_close(&self, alert: &str, kind: &str, sync: &str) -> Result<bool> {
        each!(self, s => s.incident_close(alert, kind, sync).await)
    }

    /// The open incidents, the oldest first.
    pub async fn incidents(&self) -> Result<Vec<Incident>> {
        each!(self, s => s.incidents().await)
    }

    /// Keeps what a run did to each key it delivered (`added`, `changed`, `removed`,
    /// `resent`); each sync keeps the changes of its last `keep_runs` runs.
    pub async fn changes_add(
        &self,
        sync: &str,
        run_id: i64,
        changes: &[(String, &'static str)],
        keep_runs: usize,
    ) -> Result<()> {
        each!(self, s => s.changes_add(sync, run_id, changes, keep_runs as i64).await)
    }

    /// A page of a run's changes, in key order after `after`.
    pub async fn changes(
        &self,
        sync: &str,
        run_id: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        each!(self, s => s.changes(sync, run_id, after, limit as i64).await)
    }

    /// Keeps requests of the API inspector (`inspector: persist`): `(sync, sequence, entry as
    /// JSON)`; each sync keeps its last `keep`.
    pub async fn inspected_add(
        &self,
        entries: &[(String, i64, String)],
        keep: usize,
    ) -> Result<()> {
        each!(self, s => s.inspected_add(entries, keep as i64).await)
    }

    /// A sync's kept inspector entries (JSON), the newest first.
    pub async fn inspected(&self, sync: &str) -> Result<Vec<String>> {
        each!(self, s => s.inspected(sync).await)
    }

    /// Forgets a worker that stopped.
    pub async fn worker_gone(&self, id: &str) -> Result<()> {
        each!(self, s => s.worker_gone(id).await)
    }

    /// Records a run's outcome and counters.
    pub async fn finish_run(&self, run: &RunRecord) -> Result<()> {
        each!(self, s => s.finish_run(run).await)
    }

    /// How many keys the state holds for `sync`.
    pub async fn count(&self, sync: &str) -> Result<u64> {
        each!(self, s => s.count(sync).await)
    }

    /// The last accepted fingerprints of those of `keys` the state knows.
    pub async fn fingerprints(&self, sync: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        each!(self, s => s.fingerprints(sync, keys).await)
    }

    /// The last accepted fingerprints and notes of those of `keys` the state knows.
    pub async fn previous(
        &self,
        sync: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, (u64, Option<String>)>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        each!(self, s => s.previous(sync, keys).await)
    }

    /// Keys of `sync` in the state that are not among the keys added under `scope` (with
    /// [`StateStore::retain_add`]): rows that left the model. Up to `limit` after `after`, in
    /// key order, each with its note.
    pub async fn absent(
        &self,
        sync: &str,
        scope: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Option<String>)>> {
        each!(self, s => s.absent(sync, scope, after, limit as i64).await)
    }

    /// A page of what the state holds for `sync`, in key order after `after`: each key with
    /// its fingerprint and note.
    pub async fn rows(
        &self,
        sync: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64, Option<String>)>> {
        each!(self, s => s.rows(sync, after, limit as i64).await)
    }

    /// How many keys [`StateStore::absent`] would list in all.
    pub async fn absent_count(&self, sync: &str, scope: &str) -> Result<u64> {
        each!(self, s => s.absent_count(sync, scope).await)
    }

    /// Forgets the keys seen under `scope` (see [`StateStore::seen_add`]).
    pub async fn seen_reset(&self, scope: &str) -> Result<()> {
        each!(self, s => s.seen_reset(scope).await)
    }

    /// Records keys of the model as `(compared, as written)`: keys that compare equal (emails
    /// without regard to case, pairs of columns) are found by [`StateStore::seen_duplicates`]
    /// without holding them all in memory.
    pub async fn seen_add(&self, scope: &str, keys: &[(String, String)]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        each!(self, s => s.seen_add(scope, keys).await)
    }

    /// The compared keys seen more than once under `scope`, each with how it was written.
    pub async fn seen_duplicates(&self, scope: &str) -> Result<Vec<(String, Vec<String>)>> {
        each!(self, s => s.seen_duplicates(scope).await)
    }

    /// Writes one acknowledged batch's outcome (taken by value: the SQLite store writes it on
    /// a blocking thread without copying it).
    pub async fn commit(&self, sync: &str, run_id: i64, mut commit: Commit) -> Result<()> {
        if commit.is_empty() {
            return Ok(());
        }
        // One failure per key (the last): a duplicated key fails once per row, and PostgreSQL's
        // upsert refuses to touch a row twice in one statement. Accepted keys are unique already
        // (a key is sent at most once per batch), so the hot path is left alone.
        if commit.failed.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(commit.failed.len());
            let mut kept: Vec<(String, String)> = Vec::with_capacity(commit.failed.len());
            for (k, reason) in commit.failed.drain(..).rev() {
                if seen.insert(k.clone()) {
                    kept.push((k, reason));
                }
            }
            kept.reverse();
            commit.failed = kept;
        }
        match self {
            StateStore::Sqlite(s) => s.commit(sync, run_id, commit, now_ms()).await,
            StateStore::Postgres(s) => s.commit(sync, run_id, &commit, now_ms()).await,
        }
    }

    /// Forgets the duplicate keys collected for `sync` (at the start of a run).
    pub async fn duplicates_reset(&self, sync: &str) -> Result<()> {
        each!(self, s => s.duplicates_reset(sync).await)
    }

    /// Records keys that more than one row of `sync`'s model has: kept by the store, not in
    /// memory, since a model may have many.
    pub async fn duplicates_add(&self, sync: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        each!(self, s => s.duplicates_add(sync, keys).await)
    }

    /// Those of `keys` recorded as duplicates of `sync`.
    pub async fn duplicates_among(&self, sync: &str, keys: &[&str]) -> Result<Vec<String>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        each!(self, s => s.duplicates_among(sync, keys).await)
    }

    /// Starts collecting the model's keys for [`StateStore::retain_finish`] (or, under another
    /// scope, for [`StateStore::absent`]); also forgets a scope's keys once used.
    pub async fn retain_begin(&self, sync: &str) -> Result<()> {
        each!(self, s => s.retain_begin(sync).await)
    }

    /// Adds keys that are in the model now.
    pub async fn retain_add(&self, sync: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        each!(self, s => s.retain_add(sync, keys).await)
    }

    /// Drops the state (and failures) of every key of `sync` that was not added: rows that left
    /// the model leave the state, so that one that comes back is sent again. Answers how many
    /// keys were dropped.
    pub async fn retain_finish(&self, sync: &str) -> Result<u64> {
        each!(self, s => s.retain_finish(sync).await)
    }

    /// Forgets failures of `sync` that the run `run_id` did not try again (their rows left the
    /// model or no longer differ from what was delivered).
    pub async fn forget_stale_failures(&self, sync: &str, run_id: i64) -> Result<()> {
        each!(self, s => s.forget_stale_failures(sync, run_id).await)
    }

    /// Whether `sync` has any failed row on record.
    pub async fn has_failures(&self, sync: &str) -> Result<bool> {
        each!(self, s => s.has_failures(sync).await)
    }

    /// Run history, newest first.
    pub async fn runs(&self, sync: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        each!(self, s => s.runs(sync, None, limit).await)
    }

    /// A page of run history, newest first: at most `limit` runs older than run `before`.
    pub async fn runs_page(
        &self,
        sync: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        each!(self, s => s.runs(sync, before, limit).await)
    }

    /// Failed rows of `sync`, by key.
    pub async fn failures(&self, sync: &str) -> Result<Vec<Failure>> {
        each!(self, s => s.failures(sync, None, None).await)
    }

    /// A page of failed rows of `sync`, by key: at most `limit` with keys after `after`.
    pub async fn failures_page(
        &self,
        sync: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Failure>> {
        each!(self, s => s.failures(sync, after, Some(limit)).await)
    }

    /// Stores an entity made in the UI or the API (`kind`: warehouse, app, sync) as JSON text
    /// whose secrets the caller has encrypted.
    pub async fn put_entity(&self, kind: &str, name: &str, body: &str) -> Result<()> {
        each!(self, s => s.put_entity(kind, name, body).await)
    }

    /// Stores several entities in one transaction: all or none (kind, name, body).
    pub async fn put_entities(&self, all: &[(String, String, String)]) -> Result<()> {
        each!(self, s => s.put_entities(all).await)
    }

    /// Deletes a stored entity; answers whether there was one.
    pub async fn delete_entity(&self, kind: &str, name: &str) -> Result<bool> {
        each!(self, s => s.delete_entity(kind, name).await)
    }

    /// The stored entities of a kind: (name, body), by name.
    pub async fn entities(&self, kind: &str) -> Result<Vec<(String, String)>> {
        each!(self, s => s.entities(kind).await)
    }

    /// Pauses or resumes the schedule of `sync`.
    pub async fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        each!(self, s => s.set_paused(sync, paused).await)
    }

    /// The syncs whose schedules are paused.
    pub async fn paused(&self) -> Result<Vec<String>> {
        each!(self, s => s.paused().await)
    }

    /// Forgets every delivered fingerprint of `sync`.
    pub async fn clear(&self, sync: &str) -> Result<()> {
        each!(self, s => s.clear(sync).await)
    }
}

/// Rows `(compared key, as written)` in key order, grouped by compared key.
fn group_seen(rows: Vec<(String, String)>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (norm, raw) in rows {
        match out.last_mut() {
            Some((n, raws)) if *n == norm => raws.push(raw),
            _ => out.push((norm, vec![raw])),
        }
    }
    out
}

/// What the app last accepted for each key of each sync. (SQLite stores it `WITHOUT ROWID`, so
/// that a lookup is one B-tree search.)
const SYNC_ROWS: &str = "
CREATE TABLE IF NOT EXISTS sync_rows (
    sync TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint BIGINT NOT NULL,
    run_id BIGINT NOT NULL,
    note TEXT,
    PRIMARY KEY (sync, key)
)";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS failures (
    sync TEXT NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    first_failed_at BIGINT NOT NULL,
    last_failed_at BIGINT NOT NULL,
    PRIMARY KEY (sync, key)
);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS sync_flags (
    sync TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    sync TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_incidents (
    alert TEXT NOT NULL,
    kind TEXT NOT NULL,
    sync TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (alert, kind, sync)
);
CREATE TABLE IF NOT EXISTS run_changes (
    sync TEXT NOT NULL,
    run_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    operation TEXT NOT NULL,
    PRIMARY KEY (sync, run_id, key)
);
CREATE TABLE IF NOT EXISTS inspected (
    sync TEXT NOT NULL,
    seq BIGINT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (sync, seq)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    running TEXT NOT NULL,
    stopping BOOLEAN NOT NULL
);
";

/// The run history table, with the backend's auto-numbered primary key.
fn runs_table(id: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS runs (
            id {id},
            sync TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at BIGINT NOT NULL,
            finished_at BIGINT,
            full_resync BOOLEAN NOT NULL,
            rows_read BIGINT NOT NULL DEFAULT 0,
            rows_new BIGINT NOT NULL DEFAULT 0,
            rows_changed BIGINT NOT NULL DEFAULT 0,
            rows_unchanged BIGINT NOT NULL DEFAULT 0,
            rows_sent BIGINT NOT NULL DEFAULT 0,
            rows_failed BIGINT NOT NULL DEFAULT 0,
            rows_removed BIGINT NOT NULL DEFAULT 0,
            error TEXT,
            worker TEXT,
            read_ms BIGINT NOT NULL DEFAULT 0,
            map_ms BIGINT NOT NULL DEFAULT 0,
            compare_ms BIGINT NOT NULL DEFAULT 0,
            deliver_ms BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS runs_by_sync ON runs (sync, id);"
    )
}

const RUN_COLUMNS: &str =
    "id, sync, status, started_at, finished_at, full_resync, rows_read, rows_new, \
    rows_changed, rows_unchanged, rows_sent, rows_failed, rows_removed, error, worker, read_ms, \
    map_ms, compare_ms, deliver_ms";

/// Columns added to the run history after its first version: (name, type).
const RUN_COLUMNS_ADDED: &[(&str, &str)] = &[
    ("worker", "TEXT"),
    ("read_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("map_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("compare_ms", "BIGINT NOT NULL DEFAULT 0"),
    ("deliver_ms", "BIGINT NOT NULL DEFAULT 0"),
];
