//! One run of a sync, and its dry run (preview).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sallyport_config::{ConfigError, Model};
use sallyport_destinations::{
    Destination, DestinationError, Keying, ObjectMapper, Op, OpResults, Route,
};
use sallyport_sources::{DiffSpec, ReadSpec, Row, RowStream, Snapshot, SnapshotRow, Source};
use sallyport_state::{Commit, RowCounts, RunRecord, RunStatus, StateStore};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use crate::classify::Change;
use crate::classify::{key_rows, map_chunk, Classifier, Duplicates, MappedChunk};
use crate::snapshot_writer::{self, SnapshotWriter};
use crate::{Engine, RunError, RunSummary, Stop};
use sallyport_sources::writeback::RunLog;

/// How many failure reasons a summary quotes.
const SUMMARY_FAILURES: usize = 5;

/// Receives a run's progress.
pub trait Progress: Send + Sync {
    fn update(&self, rows_read: u64, rows_sent: u64, rows_failed: u64);
}

/// Options of one run.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Send every row again, whatever the state says.
    pub full_resync: bool,
    /// Becomes `true` to stop the run: it stops reading, lets requests in flight finish,
    /// commits what was acknowledged and ends `interrupted`.
    pub cancel: Option<watch::Receiver<bool>>,
    pub progress: Option<Arc<dyn Progress>>,
    /// Lets this run remove more rows than the sync's `max_removals` allows (once).
    pub allow_removals: bool,
    /// The `serve` worker running it, named in the run history.
    pub worker: Option<String>,
    /// A scheduled run: it starts only if no run of the sync started after this time (Unix
    /// milliseconds), checked again once the lock is held, so that of several workers that
    /// find a sync due, one runs it and the others answer [`RunError::AlreadyRunning`].
    pub unless_started_after: Option<i64>,
}

/// An op as a preview shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewOp {
    pub key: String,
    /// `new` or `changed` (`unchanged` with a full resync).
    pub change: Change,
    /// Method and path it goes to.
    pub endpoint: String,
    pub body: serde_json::Value,
}

/// What a dry run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Preview {
    pub sync: String,
    /// What a run would count (nothing is sent nor removed by a preview).
    #[serde(flatten)]
    pub counts: RowCounts,
    pub ops: Vec<PreviewOp>,
    pub failures: Vec<String>,
    /// Keys that left the model and that a run would remove (syncs that remove them).
    pub rows_to_remove: u64,
    /// The first of those removals, as they would be sent.
    pub removals: Vec<PreviewOp>,
    /// Why a run would stop before removing them (the runaway-removal guard), if it would.
    pub removal_guard: Option<String>,
}

impl std::ops::Deref for Preview {
    type Target = RowCounts;
    fn deref(&self) -> &RowCounts {
        &self.counts
    }
}

/// What the read side needs for a run.
struct Prepared {
    source: Source,
    destination: Destination,
    mapper: Arc<dyn ObjectMapper>,
    model: Model,
    /// Where the sync's snapshot table is (or would be), on warehouses that host change
    /// detection.
    snapshot_home: Option<Snapshot>,
    /// `change_detection: warehouse`.
    in_warehouse: bool,
    /// Where run logs go in the warehouse (`writeback:`).
    writeback: Option<sallyport_sources::writeback::WriteBack>,
}

impl Engine {
    /// Opens what a run of `name` needs. A run (`check_app`) has no statement timeout; a check
    /// or a preview, where a person waits, has the engine's `check_timeout`.
    async fn prepare(&self, name: &str, check_app: bool) -> Result<Prepared, RunError> {
        let sync = self.sync(name)?;
        let warehouse = self
            .config
            .warehouses
            .get(&sync.warehouse)
            .expect("config validation checked the warehouse");
        let options = sallyport_sources::OpenOptions {
            statement_timeout: (!check_app).then_some(self.check_timeout),
        };
        let source = Source::open_with(warehouse, &options)
            .await
            .map_err(|source| RunError::Warehouse {
                context: format!("warehouse `{}`", sync.warehouse),
                source,
            })?;
        let columns = source
            .describe(&sync.model)
            .await
            .map_err(|source| RunError::Warehouse {
                context: format!("sync `{name}`: model on warehouse `{}`", sync.warehouse),
                source,
            })?;
        let app = self
            .config
            .apps
            .get(&sync.app)
            .expect("config validation checked the app");
        let mut destination = Destination::paced(&sync.app, app, &self.pacing);
        let mapper = destination
            // Event dedup ids derive from the sync's state id: a renamed sync with an `id:`
            // sends the same ids.
            .mapper(sync.state_id(name), &sync.object, &sync.mapping, &columns)
            .map_err(|problems| {
                RunError::Config(ConfigError {
                    problems: problems
                        .iter()
                        .map(|p| self.sync_problem(name, &p.path, &p.message))
                        .collect(),
                })
            })?;
        let snapshot_home = warehouse.sallyport_schema().map(|schema| Snapshot {
            schema,
            sync: sync.state_id(name).to_string(),
        });
        let in_warehouse = sync.change_detection == sallyport_config::ChangeDetection::Warehouse;
        if in_warehouse {
            let why = if mapper.keying() != Keying::Column {
                Some("change_detection: warehouse works with syncs keyed by one column compared exactly; relationships and people or memberships matched by email use change_detection: local for now".to_string())
            } else {
                source.snapshots().err().map(|e| e.to_string())
            };
            if let Some(why) = why {
                return Err(RunError::Config(ConfigError {
                    problems: vec![self.sync_problem(name, &["change_detection".into()], &why)],
                }));
            }
        }
        if check_app {
            destination.check().await.map_err(|e| match e {
                DestinationError::Credentials(_) => RunError::Credentials(e),
                other => RunError::App(other),
            })?;
        }
        Ok(Prepared {
            source,
            destination,
            mapper: Arc::from(mapper),
            model: sync.model.clone(),
            snapshot_home,
            in_warehouse,
            writeback: warehouse.writeback().cloned(),
        })
    }

    /// Refuses a scheduled run when a run of the sync started after `after` (another worker
    /// made it).
    async fn still_due(&self, name: &str, after: Option<i64>) -> Result<(), RunError> {
        let Some(after) = after else {
            return Ok(());
        };
        match self.state.runs(Some(name), 1).await?.first() {
            Some(last) if last.started_at > after => {
                Err(RunError::AlreadyRunning(name.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Takes the lock of a run that died on this machine.
    async fn take_dead_lock(&self, name: &str, holder: &str) -> Result<bool, RunError> {
        match self.state.lock_holder(name).await? {
            Some(old) if holder_is_dead(&old, &place()) => {
                tracing::warn!(sync = name, previous = %old, "taking over the lock of a run that died");
                Ok(self
                    .state
                    .take_lock(name, &old, holder, self.lock_lease)
                    .await?)
            }
            _ => Ok(false),
        }
    }

    /// Records as `interrupted` the runs still recorded as `running` whose process is gone: of
    /// `only` (whose lock the caller holds), or of every sync whose lock no live run holds (a
    /// lapsed lease, or a holder proven dead). Answers how many were marked.
    pub async fn interrupt_runs_of(&self, only: Option<&str>) -> Result<usize, RunError> {
        let here = place();
        let mut marked = 0;
        for (id, sync) in self.state.running_runs().await? {
            let orphaned = match only {
                Some(name) => sync == name,
                None => match self.state.lock_holder(&self.state_key(&sync)).await? {
                    None => true,
                    Some(holder) => holder_is_dead(&holder, &here),
                },
            };
            if orphaned
                && self
                    .state
                    .interrupt_run(id, "the process running it stopped before the run finished")
                    .await?
            {
                tracing::warn!(sync = %sync, run_id = id, "a run left running by a stopped process is marked interrupted");
                marked += 1;
            }
        }
        Ok(marked)
    }

    /// Checks a sync without reading its rows: the model runs, its columns fit the settings,
    /// and the app accepts the credentials. A line for the user.
    pub async fn check_sync(&self, name: &str) -> Result<String, RunError> {
        let p = self.prepare(name, false).await?;
        let columns = p
            .source
            .describe(&p.model)
            .await
            .map_err(|source| RunError::Warehouse {
                context: format!("sync `{name}`: the model"),
                source,
            })?;
        if let (true, Some(home)) = (p.in_warehouse, &p.snapshot_home) {
            p.source
                .snapshot_check(&home.schema)
                .await
                .map_err(|source| RunError::Warehouse {
                    context: format!("sync `{name}`: change detection in the warehouse"),
                    source,
                })?;
        }
        Ok(format!(
            "model has {} columns; key column `{}`{}",
            columns.len(),
            p.mapper.key_column(),
            if p.in_warehouse {
                "; change detection in the warehouse: the schema's grants are in place"
            } else {
                ""
            }
        ))
    }

    /// A dry run: what a sync would send, with the first `limit` ops. Sends and commits nothing.
    pub async fn preview(
        &self,
        name: &str,
        limit: usize,
        full_resync: bool,
    ) -> Result<Preview, RunError> {
        let p = self.prepare(name, false).await?;
        let key = p.mapper.key_column().to_string();
        let key_of_state = self.state_key(name);
        let scope = format!("{key_of_state}#preview-{:016x}", fastrand::u64(..));
        let dups = duplicates(
            &self.state,
            &p.source,
            &p.model,
            p.mapper.as_ref(),
            &key,
            scope.clone(),
        )
        .await?;
        // Compared as a run compares, so that the preview tells what a run would send: in the
        // warehouse once its snapshot is there (until then, the first run carries the state
        // over and compares here).
        let fingerprint = fingerprint_spec(&p.source, p.mapper.as_ref());
        let snapshot = match (&p.snapshot_home, p.in_warehouse) {
            (Some(home), true) => p
                .source
                .snapshot_count(home)
                .await
                .map_err(Stop::Warehouse)?
                .map(|_| home.clone()),
            _ => None,
        };
        let warehouse_fingerprint = p.mapper.fingerprint_spec();
        let diff = snapshot.as_ref().map(|s| DiffSpec {
            snapshot: s,
            fingerprint: warehouse_fingerprint.as_ref(),
            all: full_resync,
            empty: false,
        });
        let spec = ReadSpec {
            key: read_key(p.mapper.as_ref(), &key),
            fingerprint: fingerprint.as_ref(),
            diff: diff.as_ref(),
        };
        let mut stream = mapped_stream(
            self.state.clone(),
            &key_of_state,
            full_resync,
            &p.source,
            &p.model,
            p.mapper.clone(),
            dups,
            &spec,
            Arc::default(),
        )
        .await?;
        let mut classifier = Classifier::new(&key_of_state, p.mapper.as_ref(), full_resync);
        let mut preview = Preview {
            sync: name.to_string(),
            ..Default::default()
        };
        while let Some(chunk) = stream.recv().await {
            let chunk = chunk?;
            let out = classifier.chunk(chunk, &self.state).await?;
            for (op, change) in out.send.into_iter().zip(out.changes) {
                if preview.ops.len() < limit {
                    preview.ops.push(preview_op(p.mapper.as_ref(), op, change));
                }
            }
            for (_, reason) in out.failed {
                if preview.failures.len() < limit.max(SUMMARY_FAILURES) {
                    preview.failures.push(reason);
                }
            }
        }
        let _ = self.state.duplicates_reset(&scope).await;
        preview.counts = classifier.counts;
        if let (Some(snap), Some(r)) = (&snapshot, p.mapper.removals()) {
            // The snapshot's keys that left the model, as the warehouse finds them.
            let n = p
                .source
                .snapshot_absent_count(snap, &p.model, &key)
                .await
                .map_err(Stop::Warehouse)?;
            let synced = p
                .source
                .snapshot_count(snap)
                .await
                .map_err(Stop::Warehouse)?
                .unwrap_or(0);
            preview.rows_to_remove = n;
            if n > r.max.allowed(synced) {
                preview.removal_guard = Some(guard_message(name, r, n, synced));
            }
            let mut absent = p
                .source
                .snapshot_absent(snap, &p.model, &key)
                .await
                .map_err(Stop::Warehouse)?;
            'pages: while let Some(chunk) = absent.recv().await {
                for row in chunk.map_err(Stop::Warehouse)? {
                    if preview.removals.len() >= limit {
                        break 'pages;
                    }
                    let k = row.key.unwrap_or_default();
                    let note = row.values.first().and_then(|v| v.as_str());
                    match p.mapper.removal(&k, note) {
                        Ok(op) => preview.removals.push(preview_op(
                            p.mapper.as_ref(),
                            op,
                            Change::Removed,
                        )),
                        Err(f) => preview.failures.push(f.reason(&k)),
                    }
                }
            }
        } else if let Some(r) = p.mapper.removals() {
            // Which keys left the model, without touching the state.
            let present = format!("{scope}-present");
            collect_present(
                &self.state,
                &p.source,
                &p.model,
                p.mapper.as_ref(),
                &key,
                &present,
            )
            .await?;
            let n = self.state.absent_count(&key_of_state, &present).await?;
            let synced = self.state.count(&key_of_state).await?;
            preview.rows_to_remove = n;
            if n > r.max.allowed(synced) {
                preview.removal_guard = Some(guard_message(name, r, n, synced));
            }
            for (k, note) in self
                .state
                .absent(&key_of_state, &present, "", limit)
                .await?
            {
                match p.mapper.removal(&k, note.as_deref()) {
                    Ok(op) => {
                        preview
                            .removals
                            .push(preview_op(p.mapper.as_ref(), op, Change::Removed))
                    }
                    Err(f) => preview.failures.push(f.reason(&k)),
                }
            }
            let _ = self.state.retain_begin(&present).await;
        }
        Ok(preview)
    }

    /// Runs a sync: reads, detects changes, delivers, commits. `Err` when it could not start;
    /// a run that started ends with a summary (status `failed` if it could not complete).
    /// Afterwards, the alerts that watch the sync are weighed.
    pub async fn run(&self, name: &str, opts: RunOptions) -> Result<RunSummary, RunError> {
        let result = self.run_once(name, opts).await;
        self.alert_after_run(name, &result).await;
        if self.inspector.persists() {
            self.keep_inspected().await;
        }
        result
    }

    async fn run_once(&self, name: &str, opts: RunOptions) -> Result<RunSummary, RunError> {
        let started = Instant::now();
        // A scheduled run that another worker already made is not made again, and a sync
        // that a live run holds answers so before its warehouse and app are opened.
        self.still_due(name, opts.unless_started_after).await?;
        if self.run_holder(name).await?.is_some() {
            return Err(RunError::AlreadyRunning(name.to_string()));
        }
        // The app's check retries what is transient; a stop asked for meanwhile ends it.
        let p = match opts.cancel.clone() {
            Some(mut c) => tokio::select! {
                biased;
                _ = wait_true(&mut c) => return Err(RunError::App(
                    sallyport_destinations::DestinationError::Unreachable(format!(
                        "stopped while checking the app of `{name}`: the run did not start"
                    )),
                )),
                p = self.prepare(name, true) => p?,
            },
            None => self.prepare(name, true).await?,
        };
        let holder = holder_name();
        // State and lock go by the sync's state id; the run history by its name.
        let key = self.state_key(name);
        if !self.state.try_lock(&key, &holder, self.lock_lease).await?
            && !self.take_dead_lock(&key, &holder).await?
        {
            return Err(RunError::AlreadyRunning(name.to_string()));
        }
        // The lease is renewed while the run goes on; should another process take the lock
        // (this one stalled past its lease), the run stops instead of committing beside it.
        let lock_lost: Arc<std::sync::OnceLock<String>> = Arc::default();
        let renew = AbortOnDrop({
            let state = self.state.clone();
            let (name, holder) = (key.clone(), holder.clone());
            let lost = lock_lost.clone();
            let lease = self.lock_lease;
            tokio::spawn(async move {
                let mut renewed = tokio::time::Instant::now();
                let mut wait = lease / 4;
                loop {
                    tokio::time::sleep(wait).await;
                    match state.renew_lock(&name, &holder, lease).await {
                        Ok(true) => {
                            renewed = tokio::time::Instant::now();
                            wait = lease / 4;
                        }
                        Ok(false) => {
                            let _ = lost.set("the run lock was lost: another run of this sync took over after this one stalled past its lease".into());
                            tracing::error!(sync = %name, "the run lock was taken by another run");
                            return;
                        }
                        // A passing failure of the state store is tried again while the
                        // lease still holds for a good while.
                        Err(e) if renewed.elapsed() < lease / 2 => {
                            tracing::warn!(sync = %name, error = %e, "could not renew the run lock; trying again");
                            wait = lease / 16;
                        }
                        Err(e) => {
                            // Unable to say that it still holds the lock, the run cannot know
                            // that no other run took it over: it stops.
                            let _ = lost.set(format!("the run stopped because its lock could not be renewed ({e}): another run may take this sync over"));
                            tracing::error!(sync = %name, error = %e, "could not renew the run lock");
                            return;
                        }
                    }
                }
            })
        });
        // This run holds the sync now: a run of it still recorded as `running` belongs to a
        // process that stopped without finishing it.
        let checked = match self.still_due(name, opts.unless_started_after).await {
            Ok(()) => self.interrupt_runs_of(Some(name)).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            renew.0.abort();
            let _ = self.state.unlock(&key, &holder).await;
            return Err(e);
        }
        let run_id = match self
            .state
            .begin_run(name, opts.full_resync, opts.worker.as_deref())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                renew.0.abort();
                let _ = self.state.unlock(&key, &holder).await;
                return Err(e.into());
            }
        };
        // The span goes with the future (a guard held across `.await` would leak into
        // whatever else runs on this thread).
        let span = tracing::info_span!("run", sync = name, run_id);
        let mut record = RunRecord {
            id: run_id,
            sync: name.to_string(),
            full_resync: opts.full_resync,
            worker: opts.worker.clone(),
            started_at: sallyport_state::now_ms(),
            ..Default::default()
        };
        let timings: Arc<Timings> = Arc::default();
        let mut changelog = Changelog {
            cap: if p.writeback.is_some() {
                WRITEBACK_CHANGES
            } else {
                CHANGES_KEPT
            },
            ..Default::default()
        };
        let mut destination = p.destination;
        destination.record(self.inspector.clone(), name, run_id);
        let destination = Arc::new(destination);
        let outcome = Pipeline {
            engine: self,
            name: &key,
            run_id,
            opts: &opts,
            destination: destination.clone(),
            record: &mut record,
            failures: Vec::new(),
            fatal: None,
            delivery_failed: 0,
            read_failed: 0,
            failures_on_record: false,
            gave_up_in_a_row: 0,
            stop_after: destination.stop_after_failed_batches(),
            held_back: Vec::new(),
            outage: None,
            lock_lost,
            source: &p.source,
            snapshot: p.in_warehouse.then(|| p.snapshot_home.clone()).flatten(),
            home: p.snapshot_home.clone(),
            snap_rows: Vec::new(),
            snap_removed: Vec::new(),
            snap_writer: None,
            duplicates_found: false,
            changelog: &mut changelog,
            timings: timings.clone(),
        }
        .run(&p.source, p.mapper.clone(), &p.model)
        .instrument(span)
        .await;
        renew.0.abort();
        let (status, error, failures) = match outcome {
            Ok((interrupted, failures)) => {
                let status = if interrupted {
                    RunStatus::Interrupted
                } else if record.rows_failed > 0 {
                    RunStatus::Partial
                } else {
                    RunStatus::Succeeded
                };
                (status, None, failures)
            }
            Err((e, failures)) => {
                tracing::error!(sync = name, run_id, error = %e, kind = ?e.kind(), "the run stopped");
                (RunStatus::Failed, Some(e.to_string()), failures)
            }
        };
        record.status = status;
        record.error = error.clone();
        record.finished_at = Some(sallyport_state::now_ms());
        record.stages = timings.stages();
        let finish = self.state.finish_run(&record).await;
        let _ = self.state.unlock(&key, &holder).await;
        finish?;
        let stats = destination.stats();
        // What the run did to each key, for its page (the first CHANGES_KEPT).
        let kept = &changelog.entries[..changelog.entries.len().min(CHANGES_KEPT)];
        if let Err(e) = self
            .state
            .changes_add(name, run_id, kept, CHANGES_RUNS)
            .await
        {
            tracing::warn!(sync = name, run_id, error = %e, "the run's changes could not be kept");
        }
        // The run's log in the warehouse: a failure there is reported, and fails nothing.
        let writeback_error = match &p.writeback {
            Some(w) => {
                let failures = self
                    .state
                    .failures(&key)
                    .await
                    .map(|all| {
                        all.into_iter()
                            .filter(|f| f.run_id == run_id)
                            .map(|f| (f.key, f.reason, f.attempts))
                            .collect()
                    })
                    .unwrap_or_default();
                let log = RunLog {
                    sync: name.to_string(),
                    run_id,
                    status: status.as_str().to_string(),
                    started_at: record.started_at,
                    finished_at: record.finished_at.unwrap_or_default(),
                    full_resync: opts.full_resync,
                    rows_read: record.rows_read as i64,
                    rows_new: record.rows_new as i64,
                    rows_changed: record.rows_changed as i64,
                    rows_unchanged: record.rows_unchanged as i64,
                    rows_sent: record.rows_sent as i64,
                    rows_failed: record.rows_failed as i64,
                    rows_removed: record.rows_removed as i64,
                    requests: stats.requests.load(Ordering::Relaxed) as i64,
                    retries: stats.retries.load(Ordering::Relaxed) as i64,
                    error: error.clone(),
                    worker: opts.worker.clone(),
                    failures,
                    changelog: std::mem::take(&mut changelog.entries),
                };
                match p.source.write_back(w, &log).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(sync = name, run_id, error = %e, "the run's log could not be written to the warehouse");
                        Some(format!("writeback to `{}` failed: {e}", w.schema))
                    }
                }
            }
            None => None,
        };
        Ok(RunSummary {
            writeback_error,
            sync: name.to_string(),
            run_id,
            status,
            counts: record.counts,
            duration_ms: started.elapsed().as_millis() as u64,
            requests: stats.requests.load(Ordering::Relaxed),
            retries: stats.retries.load(Ordering::Relaxed),
            request_ms: stats.request_ms.load(Ordering::Relaxed),
            error,
            failures,
            removals: if p.mapper.removals().is_some() {
                "removed"
            } else {
                "forgotten"
            },
        })
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|t| t.trim().to_string());
    read("/proc/sys/kernel/hostname")
        .or_else(|_| read("/etc/hostname"))
        .unwrap_or_else(|_| "localhost".into())
}

/// Where a process runs, as lock holders record it: the host's name, the kernel's boot id and
/// the process's PID namespace. Two processes share a place only when they see the same process
/// table: containers on one host share a boot id but not a PID namespace, and a host name alone
/// is shared by many containers.
pub fn place() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|t| t.trim().to_string());
    let host = host_name();
    let boot = read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    format!("{host}|{boot}|{pid_ns}")
}

/// A lock holder's name: its place, its process id and a random part (two runs of one process
/// are two holders).
fn holder_name() -> String {
    format!(
        "{}/{}/{:016x}",
        place(),
        std::process::id(),
        fastrand::u64(..)
    )
}

impl Engine {
    /// Who holds the run lock of `name`, when a live run holds it (in this process or another):
    /// a run started now would only find it taken.
    pub async fn run_holder(&self, name: &str) -> Result<Option<String>, RunError> {
        let holder = self.state.lock_holder(&self.state_key(name)).await?;
        Ok(holder.filter(|h| !holder_is_dead(h, &place())))
    }
}

/// Whether a lock holder is proven dead: a process of this very place (same host, same boot,
/// same PID namespace) that no longer exists. Then its lock is taken at once instead of waiting
/// for its lease to run out. Anything less certain (another host, another container, an older
/// boot, a holder name in another form) waits for the lease.
fn holder_is_dead(holder: &str, here: &str) -> bool {
    let mut parts = holder.rsplitn(3, '/');
    let (Some(_random), Some(pid), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (_, boot, pid_ns) = match at.split('|').collect::<Vec<_>>()[..] {
        [h, b, n] => (h, b, n),
        _ => return false,
    };
    at == here
        && !boot.is_empty()
        && !pid_ns.is_empty()
        && pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id()
                && Path::new("/proc/self").exists()
                && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

type Flight = (Vec<Op>, Result<OpResults, DestinationError>);

struct Pipeline<'a> {
    engine: &'a Engine,
    /// The sync's state key (its `id:`, or its name).
    name: &'a str,
    run_id: i64,
    opts: &'a RunOptions,
    destination: Arc<Destination>,
    record: &'a mut RunRecord,
    failures: Vec<String>,
    /// The error that stops the run (credentials refused mid-run).
    fatal: Option<Stop>,
    /// Rows the app refused.
    delivery_failed: u64,
    /// Rows that failed before delivery.
    read_failed: u64,
    /// Whether the sync had failed rows on record when the run began.
    failures_on_record: bool,
    /// Batches in a row the app gave no usable answer to.
    gave_up_in_a_row: u32,
    /// After how many such batches in a row the run stops.
    stop_after: u32,
    /// Rows of those batches: recorded as failed once the app answers another batch, left for
    /// the next run if the run stops.
    held_back: Vec<(String, String)>,
    /// Why the run stopped for an outage.
    outage: Option<String>,
    /// Set when another run took this run's lock.
    lock_lost: Arc<std::sync::OnceLock<String>>,
    source: &'a Source,
    /// The snapshot table, with change detection in the warehouse.
    snapshot: Option<Snapshot>,
    /// Where a snapshot table would be (a sync switched back to local change detection
    /// carries it over).
    home: Option<Snapshot>,
    /// Acknowledged keys (and removals) not yet handed to the snapshot's writer.
    snap_rows: Vec<SnapshotRow>,
    snap_removed: Vec<String>,
    /// Merges them into the snapshot beside the run (while [`Pipeline::run`] goes on).
    snap_writer: Option<SnapshotWriter>,
    /// Whether the model has keys in more than one row.
    duplicates_found: bool,
    /// What each delivered key went through, for the warehouse's `writeback:` changelog.
    changelog: &'a mut Changelog,
    /// Where the run's time goes.
    timings: Arc<Timings>,
}

/// The keys a run delivered and what happened to each, up to `cap` of them: past it no key is
/// followed any more (nothing is kept per row once the list is full).
#[derive(Default)]
pub(crate) struct Changelog {
    /// The most entries kept.
    cap: usize,
    /// Keys sent and not yet answered, with what the classifier found.
    pending: std::collections::HashMap<String, Change>,
    /// Delivered keys: `added`, `changed`, `removed` or `resent`.
    pub(crate) entries: Vec<(String, &'static str)>,
}

impl Changelog {
    fn full(&self) -> bool {
        self.entries.len() + self.pending.len() >= self.cap
    }

    fn sent(&mut self, ops: &[sallyport_destinations::Op], changes: &[Change]) {
        for (op, change) in ops.iter().zip(changes) {
            if self.full() {
                return;
            }
            self.pending.insert(op.key.clone(), *change);
        }
    }

    fn delivered(&mut self, key: &str, removal: bool) {
        let what = if removal {
            if self.full() {
                return;
            }
            "removed"
        } else {
            match self.pending.remove(key) {
                Some(Change::New) => "added",
                Some(Change::Changed) => "changed",
                Some(Change::Unchanged) => "resent",
                Some(Change::Removed) => "removed",
                // Sent after the list was full.
                None => return,
            }
        };
        self.entries.push((key.to_string(), what));
    }
}

/// Milliseconds each stage of a run was busy, added to from the tasks that do the work.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    read: AtomicU64,
    map: AtomicU64,
    compare: AtomicU64,
    deliver: AtomicU64,
}

impl Timings {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn stages(&self) -> sallyport_state::StageTimes {
        sallyport_state::StageTimes {
            read_ms: self.read.load(Ordering::Relaxed),
            map_ms: self.map.load(Ordering::Relaxed),
            compare_ms: self.compare.load(Ordering::Relaxed),
            deliver_ms: self.deliver.load(Ordering::Relaxed),
        }
    }
}

/// Adds the time since it was made to delivery when dropped (however the scope ends).
struct TimeTo(Arc<Timings>, Instant);

impl Drop for TimeTo {
    fn drop(&mut self) {
        Timings::add(&self.0.deliver, self.1);
    }
}

/// The changes of a run kept for its page, and how many runs of a sync keep theirs.
pub const CHANGES_KEPT: usize = 100_000;
/// The most changed keys of one run written to a warehouse's `sync_changelog` (they are held
/// in memory until the run ends).
pub const WRITEBACK_CHANGES: usize = 1_000_000;
pub const CHANGES_RUNS: usize = 30;

/// How many acknowledged keys are merged into a snapshot at once.
const SNAPSHOT_FLUSH: usize = 20_000;

impl Pipeline<'_> {
    /// Runs the read–send–commit loop. `Ok(interrupted)`, or the error that stopped it; both
    /// with the first failure reasons.
    async fn run(
        mut self,
        source: &Source,
        mapper: Arc<dyn ObjectMapper>,
        model: &Model,
    ) -> Result<(bool, Vec<String>), (Stop, Vec<String>)> {
        // With change detection in the warehouse, merges into the snapshot run beside the
        // run's own work (in this task: the writer borrows the source as the run does).
        let (writer, merging) = match self.snapshot.clone() {
            Some(snap) => {
                let (w, merging) = snapshot_writer::start(self.source, snap);
                (Some(w), Some(merging))
            }
            None => (None, None),
        };
        self.snap_writer = writer;
        let work = async {
            let mut result = self.inner(source, mapper, model).await;
            // What was acknowledged reaches the snapshot however the run ends (should the
            // warehouse refuse it now, those keys are sent again next run).
            if let Err(e) = self.flush_snapshot().await {
                if result.is_ok() {
                    result = Err(e);
                }
            }
            // The writer's work ends with it.
            self.snap_writer = None;
            result
        };
        let result = match merging {
            Some(merging) => tokio::join!(work, merging).0,
            None => work.await,
        };
        let failures = std::mem::take(&mut self.failures);
        match result {
            Ok(i) => Ok((i, failures)),
            Err(e) => Err((e, failures)),
        }
    }

    async fn inner(
        &mut self,
        source: &Source,
        mapper: Arc<dyn ObjectMapper>,
        model: &Model,
    ) -> Result<bool, Stop> {
        let state = &self.engine.state;
        let key = mapper.key_column().to_string();
        // Accepted keys clear their failures on record; only asked for when there are any, and
        // never loaded whole (they may be many).
        self.failures_on_record = state.has_failures(self.name).await?;
        // What was delivered moves with the sync between local change detection and the
        // warehouse's: the state store's rows into the snapshot table, or back.
        let state_count = match self.snapshot.clone() {
            Some(snap) => self.carry_over(&snap).await?,
            None => {
                self.carry_back().await?;
                if mapper.keying() == Keying::CaseInsensitive {
                    self.fold_keys().await?;
                }
                state.count(self.name).await?
            }
        };
        let scope = format!("{}#run-{}", self.name, self.run_id);
        let dups = duplicates(
            &self.engine.state,
            source,
            model,
            mapper.as_ref(),
            &key,
            scope,
        )
        .await?;
        self.duplicates_found = dups.is_some();
        let mut classifier = Classifier::new(self.name, mapper.as_ref(), self.opts.full_resync);
        // Where the warehouse's rows are fingerprinted as they arrive (before being decoded), the
        // state keeps those fingerprints, and unchanged rows are never decoded nor built.
        let fingerprint = fingerprint_spec(source, mapper.as_ref());
        let warehouse_fingerprint = mapper.fingerprint_spec();
        let diff = self.snapshot.as_ref().map(|s| DiffSpec {
            snapshot: s,
            fingerprint: warehouse_fingerprint.as_ref(),
            all: self.opts.full_resync,
            empty: state_count == 0,
        });
        let spec = ReadSpec {
            key: read_key(mapper.as_ref(), &key),
            fingerprint: fingerprint.as_ref(),
            diff: diff.as_ref(),
        };
        let mut stream = mapped_stream(
            self.engine.state.clone(),
            self.name,
            self.opts.full_resync,
            source,
            model,
            mapper.clone(),
            dups,
            &spec,
            self.timings.clone(),
        )
        .await?;
        let concurrency = self.destination.concurrency().max(1);
        let mut inflight: JoinSet<Flight> = JoinSet::new();
        let mut batches = Batches::default();
        let mut cancel = self.opts.cancel.clone();
        let mut interrupted = false;
        let mut fatal: Option<Stop> = None;

        'read: loop {
            let next = match cancel.as_mut() {
                Some(c) => tokio::select! {
                    biased;
                    _ = wait_true(c) => { interrupted = true; break 'read; }
                    next = stream.recv() => next,
                },
                None => stream.recv().await,
            };
            let Some(chunk) = next else { break };
            if let Some(why) = self.lock_lost.get() {
                fatal = Some(Stop::LockLost(why.clone()));
                break;
            }
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            };
            let comparing = Instant::now();
            let out = classifier.chunk(chunk, state).await?;
            self.record_counts(&classifier);
            self.commit_failures(out.failed).await?;
            // Rows the warehouse read out that turn out unchanged (carried over from local
            // change detection): their warehouse fingerprints join the snapshot.
            self.snap_rows.extend(out.refresh);
            self.flush_snapshot_when_full().await?;
            self.changelog.sent(&out.send, &out.changes);
            Timings::add(&self.timings.compare, comparing);
            for op in out.send {
                if let Some((route, full)) = batches.add(&self.destination, op) {
                    let sending = Instant::now();
                    self.dispatch(&mut inflight, full, route, concurrency)
                        .await?;
                    Timings::add(&self.timings.deliver, sending);
                }
                if let Some(e) = self.fatal.take() {
                    fatal = Some(e);
                    break 'read;
                }
            }
            self.progress();
        }
        // From here on the run only delivers what is left and waits for the answers.
        let delivering = Instant::now();
        let _delivered = TimeTo(self.timings.clone(), delivering);
        if fatal.is_none() {
            for (route, full) in batches.drain() {
                self.dispatch(&mut inflight, full, route, concurrency)
                    .await?;
            }
        }
        // Batches in flight settle; once a stop is asked for (before or while they do), they
        // get `stop_grace`, and those still unsettled then are abandoned uncommitted.
        let mut grace = interrupted.then(|| tokio::time::Instant::now() + self.engine.stop_grace);
        loop {
            let done = match (grace, cancel.as_mut()) {
                (Some(deadline), _) => {
                    match tokio::time::timeout_at(deadline, inflight.join_next()).await {
                        Ok(d) => d,
                        Err(_) => {
                            tracing::warn!(
                                batches = inflight.len(),
                                "stopping: batches still in flight (retrying) are abandoned; the next run sends them again"
                            );
                            inflight.abort_all();
                            // A batch that finished before the abort took hold is settled:
                            // what Customer.io acknowledged is committed.
                            while let Some(done) = inflight.join_next().await {
                                if let Ok(flight) = done {
                                    self.settle(flight).await?;
                                }
                            }
                            break;
                        }
                    }
                }
                (None, Some(c)) => tokio::select! {
                    biased;
                    _ = wait_true(c) => {
                        interrupted = true;
                        grace = Some(tokio::time::Instant::now() + self.engine.stop_grace);
                        continue;
                    }
                    d = inflight.join_next() => d,
                },
                (None, None) => inflight.join_next().await,
            };
            let Some(done) = done else { break };
            match done {
                Ok(flight) => self.settle(flight).await?,
                Err(e) => {
                    self.fatal.get_or_insert(Stop::Task(e.to_string()));
                }
            }
            if fatal.is_none() {
                fatal = self.fatal.take();
            }
        }
        // The lock may have been lost while the last batches were settled (or the last one
        // was never sent): then nothing more is committed, and the run does not finish.
        if fatal.is_none() {
            fatal = self.fatal.take();
        }
        if fatal.is_none() {
            if let Some(why) = self.lock_lost.get() {
                fatal = Some(Stop::LockLost(why.clone()));
            }
        }
        if fatal.is_none() && !self.held_back.is_empty() {
            // Fewer batches in a row than an outage: their rows failed.
            let held_back = std::mem::take(&mut self.held_back);
            self.delivery_failed += held_back.len() as u64;
            self.record.rows_failed = self.read_failed + self.delivery_failed;
            self.commit_failures(held_back).await?;
        }
        self.progress();
        if let Some(e) = fatal {
            return Err(e);
        }
        if interrupted {
            return Ok(true);
        }
        let interrupted = self
            .finish(
                source,
                mapper.as_ref(),
                model,
                &key,
                &classifier,
                state_count,
            )
            .await?;
        Ok(interrupted)
    }

    /// The end of a run that read the whole model: keys that left it are removed from the app
    /// (syncs that remove them, within the guard) or leave the state, and failures not tried
    /// again are forgotten. `Ok(true)` when a stop came while removals were being sent.
    async fn finish(
        &mut self,
        source: &Source,
        mapper: &dyn ObjectMapper,
        model: &Model,
        key: &str,
        classifier: &Classifier<'_>,
        state_count: u64,
    ) -> Result<bool, Stop> {
        self.progress();
        if let Some(snap) = self.snapshot.clone() {
            // Without duplicate keys, how many keys left the model follows from counts: the
            // model's keys less those the snapshot did not hold are those it held.
            let left = match self.duplicates_found {
                true => None,
                false => {
                    let in_model = self
                        .source
                        .count_keys(model, key)
                        .await
                        .map_err(Stop::Warehouse)?;
                    Some(state_count.saturating_sub(in_model.saturating_sub(classifier.unknown)))
                }
            };
            return self
                .finish_in_warehouse(&snap, mapper, model, key, state_count, left)
                .await;
        }
        let left = classifier.matched < state_count || classifier.duplicate_in_state;
        match mapper.removals() {
            None if left => {
                self.record.rows_removed = self.retain(source, mapper, model, key).await?;
            }
            Some(r) if left => {
                let state = &self.engine.state;
                let present = format!("{}#present-{}", self.name, self.run_id);
                collect_present(state, source, model, mapper, key, &present).await?;
                let n = state.absent_count(self.name, &present).await?;
                if n > r.max.allowed(state_count) && !self.opts.allow_removals {
                    let _ = state.retain_begin(&present).await;
                    return Err(Stop::RemovalGuard(guard_message(
                        &self.record.sync,
                        r,
                        n,
                        state_count,
                    )));
                }
                let stopped = if n > 0 {
                    tracing::info!(
                        removals = n,
                        action = r.action,
                        "removing rows that left the model"
                    );
                    let pages = Absent::State {
                        present: present.clone(),
                        after: String::new(),
                    };
                    self.send_removals(mapper, pages).await?
                } else {
                    false
                };
                let _ = state.retain_begin(&present).await;
                if stopped {
                    return Ok(true);
                }
            }
            _ => {}
        }
        self.engine
            .state
            .forget_stale_failures(self.name, self.run_id)
            .await?;
        Ok(false)
    }

    /// [`Pipeline::finish`] with change detection in the warehouse: the snapshot's keys that
    /// left the model are found by the warehouse, and removed from the app (within the guard)
    /// or from the snapshot.
    async fn finish_in_warehouse(
        &mut self,
        snap: &Snapshot,
        mapper: &dyn ObjectMapper,
        model: &Model,
        key: &str,
        synced: u64,
        left: Option<u64>,
    ) -> Result<bool, Stop> {
        // The snapshot first holds everything acknowledged so far, ready to be looked up.
        self.flush_snapshot().await?;
        let source = self.source;
        source.snapshot_seal(snap).await.map_err(Stop::Warehouse)?;
        let n = match left {
            Some(n) => n,
            None => source
                .snapshot_absent_count(snap, model, key)
                .await
                .map_err(Stop::Warehouse)?,
        };
        if n > 0 {
            match mapper.removals() {
                None => {
                    let mut absent = source
                        .snapshot_absent(snap, model, key)
                        .await
                        .map_err(Stop::Warehouse)?;
                    while let Some(chunk) = absent.recv().await {
                        let keys: Vec<String> = chunk
                            .map_err(Stop::Warehouse)?
                            .into_iter()
                            .filter_map(|r| r.key)
                            .collect();
                        self.record.rows_removed += keys.len() as u64;
                        source
                            .snapshot_write(snap, &[], &keys)
                            .await
                            .map_err(Stop::Warehouse)?;
                    }
                }
                Some(r) => {
                    if n > r.max.allowed(synced) && !self.opts.allow_removals {
                        return Err(Stop::RemovalGuard(guard_message(
                            &self.record.sync,
                            r,
                            n,
                            synced,
                        )));
                    }
                    tracing::info!(
                        removals = n,
                        action = r.action,
                        "removing rows that left the model"
                    );
                    let pages = Absent::Warehouse(
                        source
                            .snapshot_absent(snap, model, key)
                            .await
                            .map_err(Stop::Warehouse)?,
                    );
                    if self.send_removals(mapper, pages).await? {
                        return Ok(true);
                    }
                }
            }
        }
        self.engine
            .state
            .forget_stale_failures(self.name, self.run_id)
            .await?;
        Ok(false)
    }

    /// Sends the removal of every key that left the model, in batches like any op; each
    /// accepted removal takes its key out of the state. `Ok(true)` when a stop came first.
    async fn send_removals(
        &mut self,
        mapper: &dyn ObjectMapper,
        mut pages: Absent,
    ) -> Result<bool, Stop> {
        let concurrency = self.destination.concurrency().max(1);
        let mut inflight: JoinSet<Flight> = JoinSet::new();
        let mut batches = Batches::default();
        let mut cancel = self.opts.cancel.clone();
        let mut stopped = false;
        loop {
            if cancel.as_mut().is_some_and(|c| *c.borrow_and_update()) {
                stopped = true;
                break;
            }
            let Some(page) = pages.next(&self.engine.state, self.name).await? else {
                break;
            };
            let mut failed = Vec::new();
            for (k, note) in page {
                match mapper.removal(&k, note.as_deref()) {
                    Ok(op) => {
                        if let Some((route, full)) = batches.add(&self.destination, op) {
                            self.dispatch(&mut inflight, full, route, concurrency)
                                .await?;
                        }
                    }
                    Err(f) => {
                        let reason = f.reason(&k);
                        failed.push((k, reason));
                    }
                }
            }
            self.delivery_failed += failed.len() as u64;
            self.record.rows_failed = self.read_failed + self.delivery_failed;
            self.commit_failures(failed).await?;
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
        }
        if !stopped {
            for (route, full) in batches.drain() {
                self.dispatch(&mut inflight, full, route, concurrency)
                    .await?;
            }
        }
        while let Some(done) = inflight.join_next().await {
            match done {
                Ok(flight) => self.settle(flight).await?,
                Err(e) => {
                    self.fatal.get_or_insert(Stop::Task(e.to_string()));
                }
            }
        }
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        if !self.held_back.is_empty() {
            let held_back = std::mem::take(&mut self.held_back);
            self.delivery_failed += held_back.len() as u64;
            self.record.rows_failed = self.read_failed + self.delivery_failed;
            self.commit_failures(held_back).await?;
        }
        self.progress();
        Ok(stopped)
    }

    /// Records rows that failed before delivery.
    async fn commit_failures(&mut self, failed: Vec<(String, String)>) -> Result<(), Stop> {
        if failed.is_empty() {
            return Ok(());
        }
        self.note_failures(failed.iter().map(|(_, r)| r));
        let commit = Commit {
            failed,
            ..Default::default()
        };
        self.engine
            .state
            .commit(self.name, self.run_id, commit)
            .await
            .map_err(Stop::from)
    }

    fn record_counts(&mut self, c: &Classifier<'_>) {
        self.record.rows_read = c.counts.rows_read;
        self.record.rows_new = c.counts.rows_new;
        self.record.rows_changed = c.counts.rows_changed;
        self.record.rows_unchanged = c.counts.rows_unchanged;
        self.read_failed = c.counts.rows_failed;
        self.record.rows_failed = self.read_failed + self.delivery_failed;
    }

    fn progress(&self) {
        if let Some(p) = &self.opts.progress {
            p.update(
                self.record.rows_read,
                self.record.rows_sent,
                self.record.rows_failed,
            );
        }
    }

    fn note_failures<'r>(&mut self, reasons: impl Iterator<Item = &'r String>) {
        for r in reasons {
            if self.failures.len() >= SUMMARY_FAILURES {
                break;
            }
            self.failures.push(r.clone());
        }
    }

    /// Sends a batch once a slot is free, settling finished batches meanwhile.
    async fn dispatch(
        &mut self,
        inflight: &mut JoinSet<Flight>,
        ops: Vec<Op>,
        route: Route,
        concurrency: usize,
    ) -> Result<(), Stop> {
        if let Some(why) = self.lock_lost.get() {
            // Another run may hold the sync now: nothing more is sent.
            self.fatal.get_or_insert(Stop::LockLost(why.clone()));
            return Ok(());
        }
        while inflight.len() >= concurrency {
            match inflight.join_next().await {
                Some(Ok(flight)) => self.settle(flight).await?,
                Some(Err(e)) => {
                    // The batch's outcome is unknown: nothing of it is committed, and the run
                    // stops rather than end as if it had been delivered.
                    self.fatal.get_or_insert(Stop::Task(e.to_string()));
                }
                None => break,
            }
        }
        let destination = self.destination.clone();
        inflight.spawn(async move {
            let refs: Vec<&Op> = ops.iter().collect();
            let result = destination.deliver(route, &refs).await;
            (ops, result)
        });
        Ok(())
    }

    /// Commits what the app answered for one batch.
    async fn settle(&mut self, (ops, result): Flight) -> Result<(), Stop> {
        let results = match result {
            Ok(r) => r,
            Err(DestinationError::GaveUp(last)) => {
                // The app did not answer this batch after every attempt. One such batch costs
                // failed rows; `stop_after` in a row is an outage: the run stops, and what it
                // held back is left for the next run instead of being recorded as failed.
                if self.outage.is_some() {
                    return Ok(());
                }
                self.gave_up_in_a_row += 1;
                self.held_back.extend(ops.into_iter().map(|op| {
                    let reason = format!("row {}: {last}", op.key);
                    (op.key, reason)
                }));
                if self.gave_up_in_a_row >= self.stop_after {
                    self.held_back.clear();
                    let why = format!(
                        "the app gave no usable answer to {} batches in a row; the run stopped and left the rows it had not delivered for the next run. Last answer: {last}",
                        self.gave_up_in_a_row
                    );
                    self.outage = Some(why.clone());
                    self.fatal.get_or_insert(Stop::Outage(why));
                }
                return Ok(());
            }
            Err(e) => {
                // Credentials refused: nothing of this batch is marked, and the run stops.
                self.fatal.get_or_insert(Stop::App(e));
                return Ok(());
            }
        };
        let mut commit = Commit::default();
        let warehouse = self.snapshot.is_some();
        let (mut snap_rows, mut snap_removed) = (Vec::new(), Vec::new());
        // The app answered: the batches it gave up on before were not an outage.
        self.gave_up_in_a_row = 0;
        commit.failed.append(&mut self.held_back);
        let mut results = results.into_iter();
        for op in ops {
            // An op the answer says nothing of is not taken as accepted.
            let r = results
                .next()
                .unwrap_or_else(|| Err("the app's answer says nothing of this row".into()));
            match r {
                Ok(()) if op.removal => {
                    self.record.rows_removed += 1;
                    self.changelog.delivered(&op.key, true);
                    if warehouse {
                        snap_removed.push(op.key);
                    } else {
                        commit.removed.push(op.key);
                    }
                }
                Ok(()) => {
                    if self.failures_on_record {
                        commit.cleared.push(op.key.clone());
                    }
                    self.record.rows_sent += 1;
                    self.changelog.delivered(&op.key, false);
                    if warehouse {
                        snap_rows.push(SnapshotRow {
                            key: op.key,
                            warehouse_fingerprint: op.snapshot,
                            fingerprint: op.fingerprint,
                            note: op.note,
                        });
                        continue;
                    }
                    if let Some(note) = op.note {
                        commit.noted.push((op.key.clone(), note));
                    }
                    commit.accepted.push((op.key, op.fingerprint));
                }
                Err(msg) => {
                    let reason = format!("row {}: {msg}", op.key);
                    commit.failed.push((op.key, reason));
                }
            }
        }
        self.delivery_failed += commit.failed.len() as u64;
        self.record.rows_failed = self.read_failed + self.delivery_failed;
        self.note_failures(commit.failed.iter().map(|(_, r)| r));
        // With change detection in the warehouse, what was delivered goes to its snapshot, a
        // merge per SNAPSHOT_FLUSH keys made beside the run (a crash before one is made leaves
        // those keys to be sent again).
        self.snap_rows.append(&mut snap_rows);
        self.snap_removed.append(&mut snap_removed);
        self.flush_snapshot_when_full().await?;
        self.engine
            .state
            .commit(self.name, self.run_id, commit)
            .await?;
        self.progress();
        Ok(())
    }

    /// Hands the acknowledged keys waiting to the snapshot's writer once they are a batch.
    async fn flush_snapshot_when_full(&mut self) -> Result<(), Stop> {
        if self.snap_rows.len() + self.snap_removed.len() >= SNAPSHOT_FLUSH {
            self.hand_over().await?;
        }
        Ok(())
    }

    async fn hand_over(&mut self) -> Result<(), Stop> {
        let Some(writer) = &self.snap_writer else {
            return Ok(());
        };
        let rows = std::mem::take(&mut self.snap_rows);
        let removed = std::mem::take(&mut self.snap_removed);
        writer.merge(rows, removed).await.map_err(Stop::Warehouse)
    }

    /// Merges every acknowledged key into the snapshot, and waits until it is there.
    async fn flush_snapshot(&mut self) -> Result<(), Stop> {
        self.hand_over().await?;
        match &self.snap_writer {
            Some(writer) => writer.settled().await.map_err(Stop::Warehouse),
            None => Ok(()),
        }
    }

    /// Keys compared without regard to case (emails) are kept in lower case: a state written
    /// before (emails as the model wrote them) is brought to it once, so that no key looks
    /// removed (and no person is deleted) for its case alone.
    async fn fold_keys(&mut self) -> Result<(), Stop> {
        let state = &self.engine.state;
        let marker = format!("keys-in-lower-case/{}", self.name);
        if state
            .entities("meta")
            .await?
            .iter()
            .any(|(n, _)| *n == marker)
        {
            return Ok(());
        }
        let mut after = String::new();
        loop {
            let page = state.rows(self.name, &after, 5000).await?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            after = last.clone();
            let mut commit = Commit::default();
            for (key, fingerprint, note) in page {
                let lower = key.to_lowercase();
                if lower != key {
                    if let Some(n) = note {
                        commit.noted.push((lower.clone(), n));
                    }
                    commit.accepted.push((lower, fingerprint));
                    commit.removed.push(key);
                }
            }
            state.commit(self.name, self.run_id, commit).await?;
        }
        state.put_entity("meta", &marker, "1").await?;
        Ok(())
    }

    /// Change detection in the warehouse: makes the snapshot table when missing, and moves
    /// what the state store held for the sync into it (the warehouse fingerprints follow as the
    /// rows are next read); the keys it holds.
    async fn carry_over(&mut self, snap: &Snapshot) -> Result<u64, Stop> {
        let state = &self.engine.state;
        let (held, _) = self
            .source
            .snapshot_prepare(snap)
            .await
            .map_err(Stop::Warehouse)?;
        let mut after = String::new();
        let mut moved = 0u64;
        loop {
            let page = state.rows(self.name, &after, 5000).await?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            after = last.clone();
            moved += page.len() as u64;
            let rows: Vec<SnapshotRow> = page
                .into_iter()
                .map(|(key, fingerprint, note)| SnapshotRow {
                    key,
                    warehouse_fingerprint: None,
                    fingerprint,
                    note,
                })
                .collect();
            self.source
                .snapshot_write(snap, &rows, &[])
                .await
                .map_err(Stop::Warehouse)?;
        }
        if moved == 0 {
            // Nothing carried over: the snapshot holds what it held (counted once: a count is a
            // scan of the snapshot, 0.2 s for 10,000,000 keys in PostgreSQL).
            return Ok(held);
        }
        // The run's keys may be among those carried over: it upserts them.
        self.source
            .snapshot_seal(snap)
            .await
            .map_err(Stop::Warehouse)?;
        // Only once every row is in the snapshot: a crash before leaves them to be carried
        // over again.
        state.clear(self.name).await?;
        tracing::info!(
            keys = moved,
            "carried the state over to the warehouse's snapshot"
        );
        Ok(self
            .source
            .snapshot_count(snap)
            .await
            .map_err(Stop::Warehouse)?
            .unwrap_or(0))
    }

    /// Local change detection for a sync that had it in the warehouse: the snapshot's rows come
    /// back into the state store, and the table goes.
    async fn carry_back(&mut self) -> Result<(), Stop> {
        let Some(home) = self.home.clone() else {
            return Ok(());
        };
        if self.source.snapshots().is_err()
            || self
                .source
                .snapshot_count(&home)
                .await
                .map_err(Stop::Warehouse)?
                .is_none()
        {
            return Ok(());
        }
        let mut after = String::new();
        let mut moved = 0u64;
        loop {
            let page = self
                .source
                .snapshot_rows(&home, &after, 5000)
                .await
                .map_err(Stop::Warehouse)?;
            let Some(last) = page.last() else { break };
            after = last.key.clone();
            moved += page.len() as u64;
            let mut commit = Commit::default();
            for r in page {
                if let Some(n) = r.note {
                    commit.noted.push((r.key.clone(), n));
                }
                commit.accepted.push((r.key, r.fingerprint));
            }
            self.engine
                .state
                .commit(self.name, self.run_id, commit)
                .await?;
        }
        self.source
            .snapshot_drop(&home)
            .await
            .map_err(Stop::Warehouse)?;
        tracing::info!(
            keys = moved,
            "carried the warehouse's snapshot back to the state store"
        );
        Ok(())
    }

    /// Drops the state of keys that left the model.
    async fn retain(
        &self,
        source: &Source,
        mapper: &dyn ObjectMapper,
        model: &Model,
        key: &str,
    ) -> Result<u64, Stop> {
        let state = &self.engine.state;
        collect_present(state, source, model, mapper, key, self.name).await?;
        state.retain_finish(self.name).await.map_err(Stop::from)
    }
}

/// Streams the model's rows, mapped on a task of their own: while one chunk is compared with
/// the state and sent, the next is being read and mapped. Keys in more than one row of the
/// model are found first, by the warehouse.
#[allow(clippy::too_many_arguments)]
async fn mapped_stream(
    state: Arc<StateStore>,
    sync: &str,
    full_resync: bool,
    source: &Source,
    model: &Model,
    mapper: Arc<dyn ObjectMapper>,
    duplicates: Option<Arc<Duplicates>>,
    spec: &ReadSpec<'_>,
    timings: Arc<Timings>,
) -> Result<mpsc::Receiver<Result<MappedChunk, Stop>>, Stop> {
    let mut rows = source.read(model, spec).await?;
    let (tx, rx) = mpsc::channel(2);
    let sync = sync.to_string();
    // A thread of its own: mapping is CPU work, and the runtime's workers must stay free to
    // drain the warehouse connection and to deliver.
    let handle = tokio::runtime::Handle::current();
    let failed = tx.clone();
    let mapping = tokio::task::spawn_blocking(move || loop {
        let waited = Instant::now();
        let Some(chunk) = rows.blocking_recv() else {
            return;
        };
        Timings::add(&timings.read, waited);
        {
            let mapping_started = Instant::now();
            let mapped = match chunk {
                Ok(rows) => handle.block_on(map_chunk(
                    &sync,
                    mapper.as_ref(),
                    rows,
                    duplicates.as_deref(),
                    &state,
                    full_resync,
                )),
                Err(e) => Err(Stop::Warehouse(e)),
            };
            Timings::add(&timings.map, mapping_started);
            let failed = mapped.is_err();
            if tx.blocking_send(mapped).is_err() || failed {
                return;
            }
        }
    });
    // Should mapping panic, the stream ends with an error: never as if every row had been read.
    tokio::spawn(async move {
        if mapping.await.is_err() {
            let _ = failed
                .send(Err(Stop::Warehouse(sallyport_sources::SourceError::Other(
                    "mapping the rows stopped unexpectedly: the model was not read to its end"
                        .into(),
                ))))
                .await;
        }
    });
    Ok(rx)
}

/// What the warehouse's rows are fingerprinted over, where they are fingerprinted as they arrive
/// (before being decoded): the state then keeps those fingerprints, and unchanged rows are
/// never decoded nor built.
fn fingerprint_spec(
    source: &Source,
    mapper: &dyn ObjectMapper,
) -> Option<sallyport_sources::FingerprintSpec> {
    if source.computes_fingerprints() {
        mapper.fingerprint_spec()
    } else {
        None
    }
}

/// Finds the keys that more than one row of the model has and keeps them in the state store
/// under `scope`, never all in memory: `Some` when there are any. The warehouse finds them
/// where a key is one column compared exactly; otherwise (emails without regard to case, keys
/// of two columns) the state store does, from the model's keys.
async fn duplicates(
    state: &StateStore,
    source: &Source,
    model: &Model,
    mapper: &dyn ObjectMapper,
    key: &str,
    scope: String,
) -> Result<Option<Arc<Duplicates>>, Stop> {
    state.duplicates_reset(&scope).await?;
    let mut spellings = std::collections::HashMap::new();
    let mut any = false;
    if mapper.keying() == Keying::Column {
        let mut stream = source.duplicate_keys(model, key).await?;
        while let Some(chunk) = stream.recv().await {
            let keys: Vec<String> = chunk?.into_iter().filter_map(|r| r.key).collect();
            any |= !keys.is_empty();
            state.duplicates_add(&scope, &keys).await?;
        }
    } else {
        state.seen_reset(&scope).await?;
        let mut stream = key_stream(source, model, mapper, key).await?;
        while let Some(chunk) = stream.recv().await {
            state.seen_add(&scope, &chunk_keys(mapper, chunk?)?).await?;
        }
        let found = state.seen_duplicates(&scope).await?;
        state.seen_reset(&scope).await?;
        let keys: Vec<String> = found.iter().map(|(k, _)| k.clone()).collect();
        any = !keys.is_empty();
        state.duplicates_add(&scope, &keys).await?;
        for (k, mut written) in found {
            written.dedup();
            if written.len() > 1 {
                spellings.insert(k, written);
            }
        }
    }
    Ok(any.then(|| Arc::new(Duplicates { scope, spellings })))
}

/// The key to read with each row: the key column, unless keys are made of several columns.
fn read_key<'k>(mapper: &dyn ObjectMapper, key: &'k str) -> Option<&'k str> {
    (mapper.keying() != Keying::Composite).then_some(key)
}

/// Every row of the model with what its key is made of: the key column alone, or (for keys of
/// several columns) the whole row.
async fn key_stream(
    source: &Source,
    model: &Model,
    mapper: &dyn ObjectMapper,
    key: &str,
) -> Result<RowStream, Stop> {
    Ok(match mapper.keying() {
        Keying::Composite => source.stream(model, None).await?,
        _ => source.keys(model, key).await?,
    })
}

/// A chunk's keys as `(compared, as written)`; rows without a key are left out.
fn chunk_keys(
    mapper: &dyn ObjectMapper,
    mut rows: Vec<Row>,
) -> Result<Vec<(String, String)>, Stop> {
    let written = key_rows(mapper, &mut rows)?;
    Ok(rows
        .into_iter()
        .zip(written)
        .filter_map(|(r, w)| {
            let k = r.key?;
            let w = w.unwrap_or_else(|| k.clone());
            Some((k, w))
        })
        .collect())
}

/// Adds every key of the model under `scope` (see [`StateStore::absent`]).
async fn collect_present(
    state: &StateStore,
    source: &Source,
    model: &Model,
    mapper: &dyn ObjectMapper,
    key: &str,
    scope: &str,
) -> Result<(), Stop> {
    state.retain_begin(scope).await?;
    let mut keys = key_stream(source, model, mapper, key).await?;
    while let Some(chunk) = keys.recv().await {
        let present: Vec<String> = chunk_keys(mapper, chunk?)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        state.retain_add(scope, &present).await?;
    }
    Ok(())
}

/// What the runaway-removal guard says when it stops a run.
fn guard_message(sync: &str, r: sallyport_destinations::Removals, n: u64, synced: u64) -> String {
    format!(
        "{n} rows left the model since the last run and would be removed ({}), more than max_removals allows ({}): nothing was removed. Check the model; to let them through once, run `sallyport sync {sync} --allow-removals`",
        r.action,
        r.max.describe(synced)
    )
}

/// An op as a preview shows it: a segment's op as the request it would be part of.
fn preview_op(mapper: &dyn ObjectMapper, op: Op, change: Change) -> PreviewOp {
    let body = serde_json::from_str(&op.body).unwrap_or(serde_json::Value::Null);
    let body = match op.route {
        Route::Segment { .. } => serde_json::json!({ "ids": [body] }),
        _ => body,
    };
    PreviewOp {
        change,
        endpoint: mapper.endpoint(op.route),
        body,
        key: op.key,
    }
}

/// Where the keys that left the model come from: the state store (local change detection:
/// keys not among the model's, collected under `present`), or the warehouse.
enum Absent {
    State { present: String, after: String },
    Warehouse(RowStream),
}

impl Absent {
    /// The next page of keys that left the model, each with its note.
    async fn next(
        &mut self,
        state: &StateStore,
        sync: &str,
    ) -> Result<Option<Vec<(String, Option<String>)>>, Stop> {
        match self {
            Absent::State { present, after } => {
                let page = state.absent(sync, present, after, 1000).await?;
                match page.last() {
                    None => Ok(None),
                    Some((last, _)) => {
                        *after = last.clone();
                        Ok(Some(page))
                    }
                }
            }
            Absent::Warehouse(rows) => match rows.recv().await {
                None => Ok(None),
                Some(chunk) => Ok(Some(
                    chunk
                        .map_err(Stop::Warehouse)?
                        .into_iter()
                        .filter_map(|r| {
                            let note = r
                                .values
                                .first()
                                .and_then(|v| v.as_str())
                                .map(str::to_string);
                            Some((r.key?, note))
                        })
                        .collect(),
                )),
            },
        }
    }
}

/// Ops waiting to be sent, one open batch per route.
#[derive(Default)]
struct Batches {
    open: Vec<(Route, Vec<Op>, usize)>,
}

impl Batches {
    /// Adds an op; answers a batch to send first when the op does not fit in its route's open
    /// one (an op that travels alone is answered at once).
    fn add(&mut self, destination: &Destination, op: Op) -> Option<(Route, Vec<Op>)> {
        let route = op.route;
        if route == Route::Single {
            return Some((route, vec![op]));
        }
        let limits = destination.batch_limits(route);
        let (open, comma) = destination.batch_overhead(route);
        let at = match self.open.iter().position(|(r, _, _)| *r == route) {
            Some(i) => i,
            None => {
                self.open.push((route, Vec::new(), open));
                self.open.len() - 1
            }
        };
        let (_, batch, len) = &mut self.open[at];
        let mut full = None;
        let by_count = limits.records.is_some_and(|n| batch.len() >= n);
        if !batch.is_empty() && (by_count || *len + comma + op.body.len() > limits.bytes) {
            full = Some((route, std::mem::take(batch)));
            *len = open;
        }
        *len += op.body.len() + if batch.is_empty() { 0 } else { comma };
        batch.push(op);
        full
    }

    /// The batches still open.
    fn drain(&mut self) -> Vec<(Route, Vec<Op>)> {
        self.open
            .drain(..)
            .filter(|(_, b, _)| !b.is_empty())
            .map(|(r, b, _)| (r, b))
            .collect()
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A task that is stopped when its handle goes: the lock's renewal ends with the run, even when
/// the run's future is dropped before it finishes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn only_a_holder_of_this_place_that_is_gone_is_dead() {
        let here = place();
        let gone = 999_999_999u32;
        assert!(holder_is_dead(&format!("{here}/{gone}/00ff"), &here));
        assert!(
            !holder_is_dead(&format!("{here}/{}/00ff", std::process::id()), &here),
            "this process is alive"
        );
        let (host, rest) = here.split_once('|').unwrap();
        let (boot, _) = rest.split_once('|').unwrap();
        // Another container on the same host with the same host name: same boot, another PID
        // namespace, where pid `gone` may well be alive.
        let other_ns = format!("{host}|{boot}|pid:[1]");
        assert!(!holder_is_dead(&format!("{other_ns}/{gone}/00ff"), &here));
        // The same host name after a reboot, or the old `host/pid/random` form.
        let other_boot = format!("{host}|another-boot|{}", here.rsplit('|').next().unwrap());
        assert!(!holder_is_dead(&format!("{other_boot}/{gone}/00ff"), &here));
        assert!(!holder_is_dead(&format!("{host}/{gone}/00ff"), &here));
    }
}

#[cfg(test)]
mod changelog_tests {
    use super::*;
    use sallyport_destinations::{Op, Route};

    #[test]
    fn the_changelog_follows_keys_up_to_its_cap_and_no_further() {
        let mut log = Changelog {
            cap: 3,
            ..Default::default()
        };
        let ops: Vec<Op> = (1..=5)
            .map(|i| Op::new(i.to_string(), 0, "{}".into(), Route::Batch))
            .collect();
        let changes = [
            Change::New,
            Change::Changed,
            Change::Unchanged,
            Change::New,
            Change::New,
        ];
        log.sent(&ops, &changes);
        assert_eq!(log.pending.len(), 3, "nothing is kept past the cap");
        for i in 1..=5 {
            log.delivered(&i.to_string(), false);
        }
        log.delivered("gone", true);
        assert_eq!(
            log.entries,
            vec![
                ("1".to_string(), "added"),
                ("2".to_string(), "changed"),
                ("3".to_string(), "resent")
            ]
        );
        assert!(log.pending.is_empty());
    }
}
