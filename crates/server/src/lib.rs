//! `sallyport serve`: a JSON API, a scheduler and health and metrics endpoints over the engine
//! and its state store.
//!
//! Every route but `/healthz` needs the server's token (`Authorization: Bearer TOKEN`).

mod api;
mod entities;
mod metrics;
pub mod openapi;
mod scheduler;
mod ui;
mod vault;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use sallyport_config::Schedule;
use sallyport_engine::{Engine, RunOptions, RunSummary};
use serde_json::json;

pub use metrics::Metrics;
use sallyport_core::net::{address_kind, AddressKind};
pub use vault::Vault;

/// An error as the API answers it: `{"error": {"code", "message"}}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Problems with named settings of the entity: (setting, message). The API lists them as
    /// `details`; forms show each next to its field.
    pub fields: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn not_found(what: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} named `{name}`"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.fields.is_empty() {
            error["details"] = self
                .fields
                .iter()
                .map(|(field, message)| json!({"field": field, "message": message}))
                .collect();
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// A UI session, kept by the server (the cookie only names it).
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub csrf: String,
    pub created: std::time::Instant,
    pub last_used: std::time::Instant,
}

/// A session ends 12 hours after login, or after an hour without use.
const SESSION_ABSOLUTE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Server {
    /// What a client may take of the server (set before `serve`).
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets what a client may take of the server (before `serve`).
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The address people reach the server at; an `https://` one makes its cookies `Secure`.
    pub fn set_public_url(&self, url: &str) {
        self.behind_https.store(
            url.to_ascii_lowercase().starts_with("https://"),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Lets connections made in the UI or the API reach loopback and private addresses
    /// (`serve --allow-private-networks`); link-local addresses stay refused.
    pub fn set_allow_private_networks(&self, allow: bool) {
        self.allow_private
            .store(allow, std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks where a connection made in the UI or the API would go: every address each host
    /// resolves to. Link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services)
    /// are never reached; loopback and private ones only when allowed.
    pub(crate) async fn check_hosts(&self, hosts: &[(String, u16)]) -> Result<(), String> {
        let allow = self
            .allow_private
            .load(std::sync::atomic::Ordering::Relaxed);
        for (name, port) in hosts {
            let addrs = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::net::lookup_host((name.as_str(), *port)),
            )
            .await
            .map_err(|_| format!("`{name}` did not resolve within 10 s"))?
            .map_err(|e| format!("`{name}` does not resolve: {e}"))?;
            for addr in addrs {
                match address_kind(addr.ip()) {
                    AddressKind::LinkLocal => {
                        return Err(format!(
                            "`{name}` is a link-local address ({}): connections made here never go there",
                            addr.ip()
                        ))
                    }
                    AddressKind::Private if !allow => {
                        return Err(format!(
                            "`{name}` is a loopback or private address ({}): start the server with --allow-private-networks to allow it",
                            addr.ip()
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Sets the folder that SQLite warehouses made in the UI or the API must be in.
    pub fn set_data_dir(&self, dir: std::path::PathBuf) {
        *self.data_dir.lock().unwrap_or_else(|p| p.into_inner()) = dir;
    }

    /// The file a warehouse made in the UI or the API may name: relative, inside the data folder
    /// after every symlink is followed; answered as the absolute path it resolves to.
    pub(crate) fn local_file(&self, given: &str) -> Result<String, String> {
        let dir = self
            .data_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let p = std::path::Path::new(given);
        if given.starts_with("file:") {
            return Err(format!(
                "path `{given}`: a file: URI is not allowed; give a file name in the data folder"
            ));
        }
        if p.is_absolute() {
            return Err(format!("path `{given}`: an absolute path is not allowed; give a file name in the data folder ({})", dir.display()));
        }
        if p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!(
                "path `{given}`: `..` is not allowed; the file must be in the data folder ({})",
                dir.display()
            ));
        }
        let root = dir
            .canonicalize()
            .map_err(|e| format!("the data folder {} cannot be read: {e}", dir.display()))?;
        let resolved = root
            .join(p)
            .canonicalize()
            .map_err(|e| format!("path `{given}`: {e}"))?;
        let state_file = self.state_file.as_ref().and_then(|f| f.canonicalize().ok());
        if state_file.is_some_and(|f| resolved == f) {
            return Err(format!(
                "path `{given}` is the server's own state store: it cannot be a warehouse"
            ));
        }
        if !resolved.starts_with(&root) {
            return Err(format!(
                "path `{given}` leads outside the data folder ({}) through a link",
                dir.display()
            ));
        }
        Ok(resolved.display().to_string())
    }

    /// Sets how long sessions last (after login, and after their last use).
    pub fn set_session_limits(&self, absolute: std::time::Duration, idle: std::time::Duration) {
        *self
            .session_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (absolute, idle);
    }

    /// The CSRF token of a live session, which this use keeps alive; an expired one is removed.
    pub(crate) fn session(&self, sid: &str) -> Option<String> {
        self.session_used(sid, true)
    }

    /// The CSRF token of a live session; with `touch`, the use keeps it alive (a page's own
    /// background polling does not: a tab left open still expires).
    pub(crate) fn session_used(&self, sid: &str, touch: bool) -> Option<String> {
        let (absolute, idle) = *self
            .session_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let live = |s: &Session| {
            now.duration_since(s.created) < absolute && now.duration_since(s.last_used) < idle
        };
        match sessions.get_mut(sid) {
            Some(s) if live(s) => {
                if touch {
                    s.last_used = now;
                }
                Some(s.csrf.clone())
            }
            Some(_) => {
                sessions.remove(sid);
                None
            }
            None => None,
        }
    }

    /// Starts a session; expired ones are pruned on the way.
    pub(crate) fn new_session(&self, sid: String, csrf: String) {
        let (absolute, idle) = *self
            .session_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        sessions.retain(|_, s| {
            now.duration_since(s.created) < absolute && now.duration_since(s.last_used) < idle
        });
        sessions.insert(
            sid,
            Session {
                csrf,
                created: now,
                last_used: now,
            },
        );
    }

    /// Ends a session.
    pub(crate) fn end_session(&self, sid: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sid);
    }
}

/// A run in progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Running {
    pub started_at: DateTime<Utc>,
    /// `manual` or `schedule`.
    pub trigger: &'static str,
    /// Rows read, sent and failed so far.
    #[serde(skip)]
    pub live: Arc<Live>,
    /// Stops this run the way Ctrl-C stops a CLI run.
    #[serde(skip)]
    pub(crate) cancel: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A run's figures as it goes, updated by the engine.
#[derive(Debug, Default)]
pub struct Live {
    pub rows_read: std::sync::atomic::AtomicU64,
    pub rows_sent: std::sync::atomic::AtomicU64,
    pub rows_failed: std::sync::atomic::AtomicU64,
}

impl sallyport_engine::Progress for Live {
    fn update(&self, rows_read: u64, rows_sent: u64, rows_failed: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.rows_read.store(rows_read, Relaxed);
        self.rows_sent.store(rows_sent, Relaxed);
        self.rows_failed.store(rows_failed, Relaxed);
    }
}

/// How a run is started.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct How {
    pub allow_removals: bool,
    pub full_resync: bool,
    /// A scheduled run: only if no run of the sync started after this (Unix ms).
    pub unless_started_after: Option<i64>,
}

/// Everything the routes and the scheduler share.
pub struct Server {
    /// The config as the file gives it; entities made in the UI or the API are added to it.
    base: sallyport_config::Config,
    engine: RwLock<Arc<Engine>>,
    pub(crate) vault: Vault,
    token: String,
    pub(crate) running: Mutex<HashMap<String, Running>>,
    /// When each sync's last run started, as the scheduler knows it.
    pub(crate) last_start: Mutex<HashMap<String, DateTime<Utc>>>,
    pub(crate) started: DateTime<Utc>,
    pub metrics: Metrics,
    /// Serializes changes to stored entities.
    pub(crate) edits: tokio::sync::Mutex<()>,
    /// UI sessions, by session id.
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    /// How long a session lasts: at most `absolute` after login, and `idle` after its last use.
    session_limits: Mutex<(std::time::Duration, std::time::Duration)>,
    /// The folder SQLite warehouses made in the UI or the API must be in.
    data_dir: Mutex<std::path::PathBuf>,
    /// The state store's file, when it is SQLite: never a warehouse.
    state_file: Option<std::path::PathBuf>,
    /// Whether people reach the server over HTTPS (`serve --public-url https://...`): its
    /// cookies are then `Secure`.
    pub(crate) behind_https: std::sync::atomic::AtomicBool,
    /// What a client may take of the server.
    limits: Mutex<Limits>,
    /// Wrong tokens sent to `/login`, by client address.
    pub(crate) login_failures: Mutex<HashMap<String, Vec<std::time::Instant>>>,
    /// Whether connections made in the UI or the API may reach loopback and private addresses.
    allow_private: std::sync::atomic::AtomicBool,
    /// Turns true when the server stops: every run stops as Ctrl-C stops a CLI run.
    stop: tokio::sync::watch::Sender<bool>,
    /// This process as the other workers over the same state store see it.
    pub(crate) worker: sallyport_state::WorkerRecord,
    /// The fingerprint of the stored entities the current config was built from.
    loaded: Mutex<Option<u64>>,
}

impl Server {
    /// A server over `engine` (whose config is the file's), answering to `token`, with the
    /// entities stored by earlier UI and API sessions loaded.
    pub async fn start(engine: Engine, token: String, vault: Vault) -> Result<Arc<Server>, String> {
        // SQLite warehouses made in the UI or the API live beside the state file (or the
        // config, when the state is in PostgreSQL) unless `set_data_dir` says otherwise.
        let engine_state = engine.config.state.clone();
        let engine_state_dir = match &engine.config.state {
            sallyport_config::StateLocation::Sqlite(p) => p.parent().map(|d| d.to_path_buf()),
            sallyport_config::StateLocation::Postgres(_) => {
                engine.config.path.parent().map(|d| d.to_path_buf())
            }
        };
        let server = Arc::new(Server {
            base: (*engine.config).clone(),
            engine: RwLock::new(Arc::new(engine)),
            vault,
            token,
            running: Mutex::new(HashMap::new()),
            last_start: Mutex::new(HashMap::new()),
            started: Utc::now(),
            metrics: Metrics::default(),
            edits: tokio::sync::Mutex::new(()),
            sessions: Mutex::new(HashMap::new()),
            session_limits: Mutex::new((SESSION_ABSOLUTE, SESSION_IDLE)),
            stop: tokio::sync::watch::channel(false).0,
            allow_private: std::sync::atomic::AtomicBool::new(false),
            state_file: match &engine_state {
                sallyport_config::StateLocation::Sqlite(p) => Some(p.clone()),
                sallyport_config::StateLocation::Postgres(_) => None,
            },
            login_failures: Mutex::new(HashMap::new()),
            limits: Mutex::new(Limits::default()),
            behind_https: std::sync::atomic::AtomicBool::new(false),
            data_dir: Mutex::new(match &engine_state_dir {
                Some(d) => d.clone(),
                None => std::path::PathBuf::from("."),
            }),
            worker: this_worker(),
            loaded: Mutex::new(None),
        });
        // Secrets an earlier version stored without their address binding are sealed again.
        let upgraded = entities::upgrade(&server.engine().state, &server.vault).await?;
        if upgraded > 0 {
            tracing::info!(
                entities = upgraded,
                "secrets stored by an earlier version were sealed again, bound to their address"
            );
        }
        server.reload().await?;
        // Runs that a stopped process left `running` (killed, crashed) are over.
        match server.engine().interrupt_runs_of(None).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "runs left running by a stopped process were marked interrupted"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot look for runs left running"),
        }
        Ok(server)
    }

    /// The engine over the current config.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The schedules of the current config.
    pub(crate) fn schedules(&self) -> BTreeMap<String, Schedule> {
        self.engine()
            .config
            .syncs
            .iter()
            .filter_map(|(name, s)| {
                let spec = s.schedule.as_ref()?;
                Schedule::parse(spec).ok().map(|sch| (name.clone(), sch))
            })
            .collect()
    }

    /// Rebuilds the config from the file and the stored entities.
    pub(crate) async fn reload(&self) -> Result<(), String> {
        // Taken before the entities are read: a change made meanwhile is loaded next time.
        let fingerprint = entities_fingerprint(self).await;
        let engine = self.engine();
        let config = entities::merged(&self.base, &engine.state, &self.vault)
            .await
            .map_err(|e| entities::messages(&e))?;
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Engine {
            config: Arc::new(config),
            state: engine.state.clone(),
            pacing: engine.pacing.clone(),
            lock_lease: engine.lock_lease,
            check_timeout: engine.check_timeout,
            stop_grace: engine.stop_grace,
            inspector: engine.inspector.clone(),
        });
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
        Ok(())
    }

    /// Whether a request carries the token.
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.token.as_bytes())
    }

    /// Refuses (409) a run of `sync` that another process is running now: it would only find the
    /// lock taken after the request had been answered.
    pub(crate) async fn refuse_if_held(&self, sync: &str) -> Result<(), ApiError> {
        let engine = self.engine();
        if !engine.config.syncs.contains_key(sync) {
            return Ok(());
        }
        match engine.run_holder(sync).await {
            Ok(Some(holder)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_running",
                format!(
                    "{sync} is already running (in {})",
                    holder.split('|').next().unwrap_or("another process")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Starts a run of `sync` in the background, unless one is going.
    pub fn start_run(
        self: &Arc<Self>,
        sync: &str,
        trigger: &'static str,
    ) -> Result<Running, ApiError> {
        self.start_run_with(sync, trigger, false)
    }

    /// This worker's id, as the run history and `GET /api/v1/workers` name it.
    pub fn worker_id(&self) -> &str {
        &self.worker.id
    }

    /// Starts a scheduled run of `sync` unless a run of it started after `last` (Unix ms):
    /// of several workers that find it due, one runs it.
    pub(crate) fn start_scheduled(
        self: &Arc<Self>,
        sync: &str,
        last: Option<i64>,
    ) -> Result<Running, ApiError> {
        self.launch(
            sync,
            "schedule",
            How {
                unless_started_after: Some(last.unwrap_or(0)),
                ..Default::default()
            },
        )
    }

    /// [`Server::start_run`], letting the run remove more rows than the sync's `max_removals`
    /// allows when `allow_removals`.
    pub fn start_run_with(
        self: &Arc<Self>,
        sync: &str,
        trigger: &'static str,
        allow_removals: bool,
    ) -> Result<Running, ApiError> {
        self.launch(
            sync,
            trigger,
            How {
                allow_removals,
                ..Default::default()
            },
        )
    }

    /// Starts a run that sends every row of the model again.
    pub fn start_full_resync(self: &Arc<Self>, sync: &str) -> Result<Running, ApiError> {
        self.launch(
            sync,
            "manual",
            How {
                full_resync: true,
                ..Default::default()
            },
        )
    }

    /// Stops the run of `sync` going in this process (as Ctrl-C stops a CLI run): `false` when
    /// none is.
    pub fn stop_run(&self, sync: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(sync) {
            Some(r) => {
                r.cancel.send_replace(true);
                true
            }
            None => false,
        }
    }

    pub(crate) fn launch(
        self: &Arc<Self>,
        sync: &str,
        trigger: &'static str,
        how: How,
    ) -> Result<Running, ApiError> {
        let engine = self.engine();
        engine
            .sync(sync)
            .map_err(|_| ApiError::not_found("sync", sync))?;
        if *self.stop.borrow() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the server is stopping: no new run starts",
            ));
        }
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let info = Running {
            started_at: Utc::now(),
            trigger,
            live: Arc::default(),
            cancel: Arc::new(cancel),
        };
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(sync) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_running",
                    format!("{sync} is already running"),
                ));
            }
            running.insert(sync.to_string(), info.clone());
        }
        self.last_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sync.to_string(), info.started_at);
        let server = self.clone();
        let name = sync.to_string();
        let shown = info.clone();
        let app = engine
            .config
            .syncs
            .get(sync)
            .map(|s| s.app.clone())
            .unwrap_or_default();
        tokio::spawn(async move {
            // However the run ends (even by a panic), the sync is free again afterwards.
            let _free = Release(server.clone(), name.clone());
            // The server stopping stops the run too.
            let forward = {
                let (mut stopping, cancel) = (server.stop.subscribe(), info.cancel.clone());
                AbortOnDrop(tokio::spawn(async move {
                    while !*stopping.borrow_and_update() {
                        if stopping.changed().await.is_err() {
                            return;
                        }
                    }
                    cancel.send_replace(true);
                }))
            };
            let options = RunOptions {
                cancel: Some(cancelled),
                allow_removals: how.allow_removals,
                full_resync: how.full_resync,
                progress: Some(info.live.clone() as Arc<dyn sallyport_engine::Progress>),
                worker: Some(server.worker.id.clone()),
                unless_started_after: how.unless_started_after,
            };
            let result = engine.run(&name, options).await;
            drop(forward);
            // The schedule keeps time by the history: a run made here or by another worker
            // is learned from it again (a run that could not start is tried again a schedule
            // later, not at once).
            // A run that another worker holds keeps this attempt's time: the sync is tried
            // again a schedule later, not at every tick while that run goes on.
            if result.is_ok() {
                server
                    .last_start
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
            }
            match &result {
                Ok(summary) => server.metrics.record(summary, &app),
                Err(sallyport_engine::RunError::AlreadyRunning(_)) => {
                    tracing::debug!(sync = %name, "run made by another worker");
                }
                Err(e) => {
                    tracing::warn!(sync = %name, error = %e, "run could not start");
                    server.metrics.record(
                        &RunSummary {
                            sync: name.clone(),
                            status: sallyport_engine::RunStatus::Failed,
                            error: Some(e.to_string()),
                            ..Default::default()
                        },
                        &app,
                    );
                }
            }
        });
        Ok(shown)
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Marks a sync as no longer running when dropped.
struct Release(Arc<Server>, String);

impl Drop for Release {
    fn drop(&mut self) {
        if let Ok(mut running) = self.0.running.lock() {
            running.remove(&self.1);
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The whole HTTP surface, every answer with the security headers.
pub fn app(server: Arc<Server>) -> axum::Router {
    let limits = server.limits();
    ui::routes(server.clone())
        .merge(api::routes(server))
        .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Answers 503 to a request that takes longer than the server's request limit.
async fn request_timeout(
    axum::extract::State(limits): axum::extract::State<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limits.request, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s",
                limits.request.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The page may load only this server's own script and style (no inline script), may not be
/// framed, sends no referrer, and nothing but the static assets is cached (pages and API
/// answers carry customer data).
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let cacheable = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    if !cacheable {
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    resp
}

/// Serves on `listener` and runs the scheduler until `shutdown` resolves.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower_service::Service;

    let scheduler = tokio::spawn(scheduler::run(server.clone()));
    let heartbeat = tokio::spawn(heartbeat(server.clone()));
    let watch = tokio::spawn(watch_alerts(server.clone()));
    let router = app(server.clone());
    let limits = server.limits();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        // Bounded: past `connections` open at once, a new one waits for a slot (the kernel's
        // backlog holds it); each connection must send its headers within `header_read`.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    let mut router = router.clone();
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(addr));
                    async move { router.call(req.map(axum::body::Body::new)).await }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    // No new run starts, and the runs going stop: they let requests in flight finish, commit
    // what was acknowledged and end `interrupted`.
    scheduler.abort();
    server.stop.send_replace(true);
    server.beat().await;
    server.wait_for_runs(RUNS_DRAIN).await;
    heartbeat.abort();
    watch.abort();
    if let Err(e) = server.engine().state.worker_gone(&server.worker.id).await {
        tracing::warn!(error = %e, "cannot remove this worker from the list of workers");
    }
    Ok(())
}

/// How often a worker tells the others that it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// This process as a worker: host, process id and a random part (a restarted process is a new
/// worker).
fn this_worker() -> sallyport_state::WorkerRecord {
    let host = sallyport_engine::host_name();
    let pid = std::process::id();
    sallyport_state::WorkerRecord {
        id: format!("{host}-{pid}-{:04x}", fastrand::u16(..)),
        host,
        pid: pid as i64,
        started_at: Utc::now().timestamp_millis(),
        ..Default::default()
    }
}

impl Server {
    /// Records this worker's heartbeat: alive, what it runs, whether it is stopping.
    pub(crate) async fn beat(&self) {
        let mut me = self.worker.clone();
        me.running = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let mut names: Vec<String> = running.keys().cloned().collect();
            names.sort();
            names
        };
        me.stopping = *self.stop.borrow();
        if let Err(e) = self.engine().state.worker_beat(&me).await {
            tracing::warn!(error = %e, "cannot record this worker's heartbeat");
        }
    }
}

/// A worker as `GET /api/v1/workers` and the UI show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerView {
    #[serde(flatten)]
    pub worker: sallyport_state::WorkerRecord,
    /// It beat within the run lease: its runs still hold their syncs.
    pub alive: bool,
    /// It is the worker that answered.
    pub this: bool,
}

impl Server {
    /// The workers sharing the state store, the most recently heard first.
    pub async fn workers(&self) -> Result<Vec<WorkerView>, sallyport_state::StateError> {
        let engine = self.engine();
        let lease = engine.lock_lease.as_millis() as i64;
        let now = Utc::now().timestamp_millis();
        Ok(engine
            .state
            .workers()
            .await?
            .into_iter()
            .map(|w| WorkerView {
                alive: now - w.heartbeat_at <= lease,
                this: w.id == self.worker.id,
                worker: w,
            })
            .collect())
    }
}

/// How often `serve` looks for syncs that have not succeeded for longer than an alert allows.
const ALERT_WATCH: std::time::Duration = std::time::Duration::from_secs(10);

async fn watch_alerts(server: Arc<Server>) {
    loop {
        tokio::time::sleep(ALERT_WATCH).await;
        server.engine().alert_not_succeeded().await;
    }
}

async fn heartbeat(server: Arc<Server>) {
    loop {
        server.beat().await;
        // Warehouses, apps and syncs made, edited or deleted through another worker: this
        // worker's config follows within a heartbeat.
        let now = entities_fingerprint(&server).await;
        let loaded = *server.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_some() && now != loaded {
            if let Err(e) = server.reload().await {
                tracing::warn!(error = %e, "cannot load the entities another worker changed");
            }
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// A fingerprint of every entity stored by the UI or the API.
async fn entities_fingerprint(server: &Server) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let state = server.engine().state.clone();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for kind in [entities::WAREHOUSE, entities::APP, entities::SYNC] {
        state.entities(kind).await.ok()?.hash(&mut h);
    }
    Some(h.finish())
}

/// What a client may take of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// Time to send a request's headers (a slow client is cut off past it).
    pub header_read: std::time::Duration,
    /// Time to answer a request.
    pub request: std::time::Duration,
    /// The largest request body.
    pub body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 256,
            header_read: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(60),
            body_bytes: 1 << 20,
        }
    }
}

/// How long a stopping server waits for its runs to commit and end.
const RUNS_DRAIN: std::time::Duration = std::time::Duration::from_secs(120);

impl Server {
    /// Waits until no run is going, or `limit` has passed.
    pub async fn wait_for_runs(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let going = self.running.lock().map(|r| r.len()).unwrap_or(0);
            if going == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(runs = going, "stopping with runs still going");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The shortest token `SALLYPORT_TOKEN` may hold.
const MIN_TOKEN: usize = 32;

/// Refuses a file of secrets (the token file, the key file) that another user owns or that
/// others may read.
pub fn owner_only(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        // The process's own user: the owner of its /proc entry.
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if me.is_some_and(|me| meta.uid() != me) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to another user: it must be this user's own",
                    path.display()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} may be read by others (mode {:o}): run chmod 600 on it",
                    path.display(),
                    meta.mode() & 0o777
                ),
            ));
        }
    }
    Ok(())
}

/// The server's token: `SALLYPORT_TOKEN`, or the one kept in `path` (created on first start with
/// owner-only permissions). Answers the token and whether it was just created.
pub fn load_token(path: &std::path::Path) -> std::io::Result<(String, bool)> {
    if let Ok(t) = std::env::var("SALLYPORT_TOKEN") {
        let t = t.trim();
        if !t.is_empty() {
            if t.len() < MIN_TOKEN {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "SALLYPORT_TOKEN is {} characters; it must be at least {MIN_TOKEN}",
                        t.len()
                    ),
                ));
            }
            return Ok((t.to_string(), false));
        }
    }
    if path.exists() {
        owner_only(path)?;
    }
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), false)),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is empty: delete it to have a new token made",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    Ok((token, true))
}

/// Re-encrypts every stored secret under a new key, all in one transaction, then replaces the
/// key file: `key_file.new` is written first (owner-only) and renamed over `key_file` once the
/// store holds the new ciphertexts. A rotation that stopped between the two is finished by the
/// next one. With `SALLYPORT_SECRET_KEY` set, the key lives outside any file: refused, so that
/// no key is printed. Answers how many entities were re-encrypted.
pub async fn rotate_key(
    key_file: &std::path::Path,
    state: &sallyport_state::StateStore,
) -> Result<usize, String> {
    if std::env::var("SALLYPORT_SECRET_KEY").is_ok_and(|k| !k.trim().is_empty()) {
        return Err(
            "SALLYPORT_SECRET_KEY is set: rotate the key where it is kept, not here".into(),
        );
    }
    let pending = key_file.with_extension("key.new");
    let kinds = [entities::WAREHOUSE, entities::APP, entities::SYNC];
    // A rotation that stopped after its commit: the pending key opens the store; finish it.
    if pending.exists() {
        let candidate =
            Vault::from_hex(&std::fs::read_to_string(&pending).map_err(|e| e.to_string())?)?;
        let mut opens = true;
        for kind in kinds {
            if entities::load(kind, state, &candidate).await.is_err() {
                opens = false;
            }
        }
        if opens {
            std::fs::rename(&pending, key_file).map_err(|e| e.to_string())?;
        } else {
            std::fs::remove_file(&pending).map_err(|e| e.to_string())?;
        }
    }
    let old = Vault::load(key_file)?;
    entities::upgrade(state, &old).await?;
    let mut plain = Vec::new();
    for kind in kinds {
        for (name, body) in entities::load(kind, state, &old).await? {
            plain.push((kind, name, body));
        }
    }
    let (new, hex_key) = Vault::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&pending)
        .map_err(|e| format!("cannot write {}: {e}", pending.display()))?;
    std::io::Write::write_all(&mut f, hex_key.as_bytes()).map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    let sealed: Vec<(String, String, String)> = plain
        .into_iter()
        .map(|(kind, name, body)| {
            let body = entities::seal(kind, &name, body, &new).to_string();
            (kind.to_string(), name, body)
        })
        .collect();
    if let Err(e) = state.put_entities(&sealed).await {
        let _ = std::fs::remove_file(&pending);
        return Err(format!("the store was left as it was: {e}"));
    }
    std::fs::rename(&pending, key_file).map_err(|e| {
        format!(
            "the store holds the new ciphertexts but {} could not replace {}: {e}; run rotate-key again to finish",
            pending.display(),
            key_file.display()
        )
    })?;
    Ok(sealed.len())
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn token_and_key_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("sallyport.token");
        let (made, created) = load_token(&token).unwrap();
        assert!(created && made.len() >= MIN_TOKEN);
        assert_eq!(load_token(&token).unwrap(), (made, false));
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_token(&token).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let key = dir.path().join("sallyport.key");
        Vault::load(&key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Vault::load(&key).err().unwrap();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
