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

mod classify;
mod run;

use std::sync::Arc;

use sallyport_config::{Config, ConfigError, Problem};
use sallyport_destinations::delivery::Pacing;
use sallyport_state::StateStore;
use serde::Serialize;

pub use run::{place as lock_place, Preview, PreviewOp, Progress, RunOptions};

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub sync: String,
    pub run_id: i64,
    /// `succeeded`, `partial` (some rows failed), `failed` (the run could not complete) or
    /// `interrupted` (stopped by a signal).
    pub status: String,
    pub rows_read: u64,
    pub rows_new: u64,
    pub rows_changed: u64,
    pub rows_unchanged: u64,
    pub rows_sent: u64,
    pub rows_failed: u64,
    pub rows_removed: u64,
    pub duration_ms: u64,
    pub requests: u64,
    pub retries: u64,
    /// Milliseconds spent in requests to the app.
    pub request_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first few failure reasons.
    pub failures: Vec<String>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0} is already running")]
    AlreadyRunning(String),
    #[error("{0}")]
    Warehouse(String),
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    App(String),
    #[error("{0}")]
    State(String),
}

impl From<sallyport_state::StateError> for RunError {
    fn from(e: sallyport_state::StateError) -> Self {
        RunError::State(e.to_string())
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
}

/// The lease of a run's lock unless the engine is told otherwise.
pub const LOCK_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// Opens the state store the config names.
    pub async fn open(config: Config) -> Result<Engine, RunError> {
        let state = StateStore::open(&config.state).await?;
        Ok(Engine {
            config: Arc::new(config),
            state: Arc::new(state),
            pacing: Arc::default(),
            lock_lease: LOCK_LEASE,
        })
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
