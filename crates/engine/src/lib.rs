//! The engine: one run of a sync from read to commit.
//!
//! ```text
//! warehouse ──rows──▶ change detection ──changes──▶ mapping ──ops──▶ delivery ──acks──▶ state commit
//! ```
//!
//! Rows stream in chunks; each chunk's keys are looked up in the state store; new and changed
//! rows become ops, packed into batches and delivered with bounded concurrency; each answered
//! batch commits the fingerprints of exactly the ops the app accepted. A bad row becomes a
//! failed row with a reason and never stops the run.

pub mod alerts;
mod classify;
mod run;
mod snapshot_writer;

use std::sync::Arc;

use sallyport_config::{Config, ConfigError, Problem};
use sallyport_destinations::delivery::Pacing;
use sallyport_destinations::DestinationError;
use sallyport_sources::SourceError;
use sallyport_state::StateError;
use sallyport_state::StateStore;
use serde::Serialize;

pub use run::{host_name, place as lock_place, Change, Preview, PreviewOp, Progress, RunOptions};

pub use sallyport_state::{RowCounts, RunStatus};

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub sync: String,
    pub run_id: i64,
    /// `succeeded`, `partial` (some rows failed), `failed` (the run could not complete) or
    /// `interrupted` (stopped by a signal).
    pub status: RunStatus,
    #[serde(flatten)]
    pub counts: RowCounts,
    pub duration_ms: u64,
    pub requests: u64,
    pub retries: u64,
    /// Milliseconds spent in requests to the app.
    pub request_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first few failure reasons.
    pub failures: Vec<String>,
    /// What `rows_removed` counts: `removed` (the app accepted their removal: mirror syncs,
    /// people with `on_removal`), or `forgotten` (the state forgot them; the app keeps them).
    pub removals: &'static str,
    /// Why the run's log could not be written to the warehouse (`writeback:`); the run itself
    /// is not failed by it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writeback_error: Option<String>,
}

impl std::ops::Deref for RunSummary {
    type Target = RowCounts;
    fn deref(&self) -> &RowCounts {
        &self.counts
    }
}

/// What kind of failure an error is: it decides whether trying again may help, the CLI's exit
/// code and the API's HTTP status, so that no caller reads an error's text to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The config or a sync's settings are wrong: fix them first.
    Config,
    /// Another run of the sync holds its lock.
    Busy,
    /// The warehouse could not be reached, or the model failed.
    Warehouse,
    /// The app refused the credentials.
    Credentials,
    /// The app could not be reached, or stopped answering.
    App,
    /// The state store failed.
    State,
    /// More rows left the model than `max_removals` lets a run remove: nothing was removed.
    RemovalGuard,
}

impl ErrorKind {
    /// Whether the same run may succeed when tried again later, unchanged.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Busy | ErrorKind::Warehouse | ErrorKind::App | ErrorKind::State
        )
    }

    /// The CLI's exit code: 1, "the run could not complete" (README, Exit codes).
    pub fn exit_code(self) -> u8 {
        1
    }

    /// The API's HTTP status.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Config => 422,
            ErrorKind::Busy => 409,
            ErrorKind::State => 500,
            ErrorKind::RemovalGuard => 409,
            ErrorKind::Warehouse | ErrorKind::Credentials | ErrorKind::App => 502,
        }
    }

    /// The API's error code.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Config => "invalid_settings",
            ErrorKind::Busy => "already_running",
            ErrorKind::Warehouse => "warehouse_error",
            ErrorKind::Credentials => "credentials_rejected",
            ErrorKind::App => "app_error",
            ErrorKind::State => "state_error",
            ErrorKind::RemovalGuard => "removal_guard",
        }
    }
}

/// Why a run could not start (or a check or a preview could not finish).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config or the sync's settings are wrong, each problem at its line.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Another run of the sync holds its lock.
    #[error("{0} is already running")]
    AlreadyRunning(String),
    /// The warehouse could not be reached, or the model failed: `context` says which.
    #[error("{context}: {source}")]
    Warehouse {
        context: String,
        #[source]
        source: SourceError,
    },
    /// The app refused the credentials.
    #[error(transparent)]
    Credentials(DestinationError),
    /// The app could not be reached, or answered in a way that stops the run.
    #[error(transparent)]
    App(DestinationError),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A run stopped before its end (a preview: reading or comparing failed).
    #[error(transparent)]
    Stopped(#[from] Stop),
}

impl RunError {
    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Config(_) => ErrorKind::Config,
            RunError::AlreadyRunning(_) => ErrorKind::Busy,
            RunError::Warehouse { .. } => ErrorKind::Warehouse,
            RunError::Credentials(_) => ErrorKind::Credentials,
            RunError::App(_) => ErrorKind::App,
            RunError::State(_) => ErrorKind::State,
            RunError::Stopped(s) => s.kind(),
        }
    }
}

/// Why a run that had started stopped before its end: recorded as the run's error.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// Reading the model failed (the connection broke, a value could not be decoded).
    #[error("reading the model failed: {0}")]
    Warehouse(#[source] SourceError),
    /// The state store failed: nothing more could be committed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The app refused the credentials in the middle of the run.
    #[error(transparent)]
    App(#[from] DestinationError),
    /// The app gave no usable answer to several batches in a row.
    #[error("{0}")]
    Outage(String),
    /// The run's lock was lost or could not be renewed.
    #[error("{0}")]
    LockLost(String),
    /// A delivery task failed: its batch's outcome is unknown.
    #[error("a delivery task failed: {0}")]
    Task(String),
    /// More rows left the model than the sync's `max_removals` allows.
    #[error("{0}")]
    RemovalGuard(String),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Self {
        Stop::Warehouse(e)
    }
}

impl Stop {
    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Stop::Warehouse(_) => ErrorKind::Warehouse,
            Stop::State(_) => ErrorKind::State,
            Stop::App(DestinationError::Credentials(_)) => ErrorKind::Credentials,
            Stop::App(_) | Stop::Outage(_) => ErrorKind::App,
            Stop::LockLost(_) | Stop::Task(_) => ErrorKind::State,
            Stop::RemovalGuard(_) => ErrorKind::RemovalGuard,
        }
    }
}

use sallyport_destinations::delivery::{Inspected, Inspector, INSPECTED_REQUESTS};

/// Writes the requests an inspector holds to the state store, each sync keeping its last 100.
async fn keep_inspected(state: &StateStore, inspector: &Inspector) {
    let pending = inspector.take_pending();
    if pending.is_empty() {
        return;
    }
    let entries: Vec<(String, i64, String)> = pending
        .into_iter()
        .enumerate()
        .map(|(i, (sync, r))| {
            // Ordered by when each was sent; the index keeps those of one millisecond apart.
            let ms = chrono::DateTime::parse_from_rfc3339(&r.at)
                .map(|t| t.timestamp_millis())
                .unwrap_or_default();
            let entry = serde_json::to_string(&r).unwrap_or_default();
            (sync, ms * 1000 + (i % 1000) as i64, entry)
        })
        .collect();
    if let Err(e) = state.inspected_add(&entries, INSPECTED_REQUESTS).await {
        tracing::warn!(error = %e, "the inspector's requests could not be written to the state store");
    }
}

/// The engine over one config and its state store.
pub struct Engine {
    pub config: Arc<Config>,
    pub state: Arc<StateStore>,
    /// Each app's pace (rate limit and requests in flight), shared by every run of this
    /// process. Processes do not share paces: each sends at its own settings.
    pub pacing: Arc<Pacing>,
    /// How long a run's lock lasts without renewal: a holder that crashed blocks its sync no
    /// longer than this. Renewed every quarter of it; a failed renewal stops the run.
    pub lock_lease: std::time::Duration,
    /// The longest one warehouse statement may run in a check or a preview.
    pub check_timeout: std::time::Duration,
    /// After a stop is asked for, how long batches already sent are given to settle (their
    /// retries included); those still unsettled are abandoned uncommitted, and sent again by
    /// the next run (people are upserted, events carry their dedup ids).
    pub stop_grace: std::time::Duration,
    /// The last requests of each sync to its app (the API inspector), in this process's memory.
    pub inspector: Arc<sallyport_destinations::delivery::Inspector>,
}

/// How long a stopping run waits for its batches in flight unless the engine is told otherwise.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a check's or a preview's statement may run unless the engine is told otherwise.
pub const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The lease of a run's lock unless the engine is told otherwise.
pub const LOCK_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

impl Engine {
    /// Opens the state store the config names.
    pub async fn open(config: Config) -> Result<Engine, RunError> {
        let state = Arc::new(StateStore::open(&config.state).await?);
        let inspector = Arc::new(match config.inspector {
            sallyport_config::InspectorMode::Memory => Inspector::default(),
            sallyport_config::InspectorMode::Persist => Inspector::persisting(),
        });
        if inspector.persists() {
            // Requests reach the store every second (and at the end of each run).
            let (state, inspector) = (state.clone(), inspector.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    keep_inspected(&state, &inspector).await;
                }
            });
        }
        Ok(Engine {
            config: Arc::new(config),
            state,
            pacing: Arc::default(),
            lock_lease: LOCK_LEASE,
            check_timeout: CHECK_TIMEOUT,
            stop_grace: STOP_GRACE,
            inspector,
        })
    }

    /// Opens a warehouse for a person who waits (a check, a preview, a page of the UI): each
    /// statement stops after `check_timeout`.
    pub async fn open_for_person(
        &self,
        w: &sallyport_config::Warehouse,
    ) -> Result<sallyport_sources::Source, sallyport_sources::SourceError> {
        let options = sallyport_sources::OpenOptions {
            statement_timeout: Some(self.check_timeout),
        };
        sallyport_sources::Source::open_with(w, &options).await
    }

    /// A sync's last requests to its app, the newest first: from the state store with
    /// `inspector: persist` (every worker's and the CLI's), else from this process's memory.
    pub async fn requests(&self, sync: &str) -> Result<Vec<Inspected>, RunError> {
        if !self.inspector.persists() {
            return Ok(self.inspector.requests(sync));
        }
        keep_inspected(&self.state, &self.inspector).await;
        Ok(self
            .state
            .inspected(sync)
            .await?
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect())
    }

    /// Writes the requests the inspector holds to the state store (`inspector: persist`).
    pub async fn keep_inspected(&self) {
        keep_inspected(&self.state, &self.inspector).await;
    }

    /// A config error located at a setting of a sync.
    pub(crate) fn sync_problem(&self, sync: &str, path: &[String], message: &str) -> Problem {
        let mut full: Vec<&str> = vec!["syncs", sync];
        full.extend(path.iter().map(String::as_str));
        self.config
            .problem_at(&full, format!("sync `{sync}`: {message}"))
    }

    /// The key of a sync's state (what was delivered, failed rows, its lock): its `id:`, or
    /// its name.
    pub fn state_key(&self, name: &str) -> String {
        self.config
            .syncs
            .get(name)
            .map(|s| s.state_id(name))
            .unwrap_or(name)
            .to_string()
    }

    /// Syncs that would start over though the state store holds the state of a sync that no
    /// longer exists (most likely a renamed one): a warning each, naming the `id:` that keeps it.
    pub async fn rename_warnings(&self) -> Result<Vec<(String, String)>, RunError> {
        let stored = self.state.state_ids().await?;
        let used: std::collections::BTreeSet<String> = self
            .config
            .syncs
            .iter()
            .map(|(n, s)| s.state_id(n).to_string())
            .collect();
        let orphans: Vec<&String> = stored.iter().filter(|id| !used.contains(*id)).collect();
        if orphans.is_empty() {
            return Ok(Vec::new());
        }
        let orphans_text = orphans
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(self
            .config
            .syncs
            .iter()
            .filter(|(n, s)| !stored.iter().any(|id| id == s.state_id(n)))
            .map(|(name, _)| {
                (
                    name.clone(),
                    format!(
                        "no delivered rows on record, so its next run sends every row; the state store holds the state of {orphans_text}, which no sync uses now. If `{name}` was renamed from one of them, add `id: <old name>` to `{name}` to keep that state"
                    ),
                )
            })
            .collect())
    }

    /// The sync of that name, or an error listing the defined ones.
    pub fn sync(&self, name: &str) -> Result<&sallyport_config::Sync, RunError> {
        self.config.syncs.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.config.syncs.keys().map(String::as_str).collect();
            RunError::Config(
                Problem {
                    file: self.config.path.display().to_string(),
                    line: None,
                    path: Vec::new(),
                    message: format!(
                        "no sync named `{name}` (defined: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                }
                .into(),
            )
        })
    }
}
