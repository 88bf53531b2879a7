//! A local Customer.io Track API: the destination of `sallyport demo`, of the integration tests
//! and of the benchmarks.
//!
//! It serves the region endpoint, v1 people and events, and v2 `entity` and `batch`, with
//! Customer.io's auth, limits, error shapes and event deduplication, keeps its workspace in
//! memory, lets tests look inside (`/_sandbox/...`) and misbehaves on demand (seeded 429, 500,
//! 503, connection resets and latency).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sandbox = sallyport_sandbox::start(Default::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! println!("Customer.io sandbox at {}", sandbox.url());
//! # Ok(()) }
//! ```

mod api;
mod config;
mod control;
mod limits;
mod store;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

pub use config::{Faults, IdentifyBy, SandboxConfig};
pub use limits::is_ulid;
pub use store::{Event, Person, Stats};

/// State shared by every connection.
pub struct Shared {
    config: SandboxConfig,
    store: Mutex<store::Store>,
    faults: Mutex<FaultState>,
    window: Mutex<VecDeque<Instant>>,
    /// Track API requests being answered now.
    in_flight: std::sync::atomic::AtomicU64,
    base_url: OnceLock<String>,
}

/// Counts a request out of `in_flight` when its answer is ready (or it was dropped).
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct FaultState {
    faults: Faults,
    rng: fastrand::Rng,
    /// Track API requests since the faults were set.
    seen: u64,
}

/// What the fault injector decided for one request.
enum Fault {
    None,
    Status(StatusCode, Option<u64>),
    Reset,
}

impl Shared {
    fn new(config: SandboxConfig) -> Self {
        let faults = config.faults.clone();
        Self {
            store: Mutex::new(store::Store::default()),
            faults: Mutex::new(FaultState {
                rng: fastrand::Rng::with_seed(faults.seed),
                seen: 0,
                faults,
            }),
            window: Mutex::new(VecDeque::new()),
            in_flight: std::sync::atomic::AtomicU64::new(0),
            base_url: OnceLock::new(),
            config,
        }
    }

    fn base_url(&self) -> &str {
        self.base_url.get().map(String::as_str).unwrap_or("")
    }

    /// The counters, as `GET /_sandbox/stats` reports them.
    pub fn stats(&self) -> Stats {
        self.store.lock().expect("store lock").stats.clone()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.faults.lock().expect("fault lock").faults.clone()
    }

    /// Replaces the faults in force and restarts the fault sequence from their seed.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        let mut f = self.faults.lock().expect("fault lock");
        f.rng = fastrand::Rng::with_seed(faults.seed);
        f.seen = 0;
        f.faults = faults;
        Ok(())
    }

    /// Clears people, events and counters.
    pub fn reset(&self) {
        self.store.lock().expect("store lock").reset();
        self.window.lock().expect("window lock").clear();
    }

    /// Counts a Track API request and draws its fault.
    fn admit(&self) -> (Fault, Duration, InFlight<'_>) {
        let in_flight = self
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let guard = InFlight(self);
        let now = Instant::now();
        let peak = {
            let mut w = self.window.lock().expect("window lock");
            w.push_back(now);
            while w
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                w.pop_front();
            }
            w.len() as u64
        };
        let (fault, latency) = {
            let mut f = self.faults.lock().expect("fault lock");
            f.seen += 1;
            let x = if f.seen <= f.faults.after_requests {
                1.0
            } else {
                f.rng.f64()
            };
            let faults = &f.faults;
            let mut edge = faults.rate_429;
            let fault = if x < edge {
                Fault::Status(StatusCode::TOO_MANY_REQUESTS, Some(faults.retry_after))
            } else if x < {
                edge += faults.rate_500;
                edge
            } {
                Fault::Status(StatusCode::INTERNAL_SERVER_ERROR, None)
            } else if x < {
                edge += faults.rate_503;
                edge
            } {
                Fault::Status(StatusCode::SERVICE_UNAVAILABLE, None)
            } else if x < edge + faults.rate_reset {
                Fault::Reset
            } else {
                Fault::None
            };
            (fault, Duration::from_millis(faults.latency_ms))
        };
        let mut store = self.store.lock().expect("store lock");
        store.stats.requests += 1;
        store.stats.peak_requests_per_second = store.stats.peak_requests_per_second.max(peak);
        store.stats.peak_in_flight = store.stats.peak_in_flight.max(in_flight);
        if !matches!(fault, Fault::None) {
            store.stats.faults_injected += 1;
        }
        (fault, latency, guard)
    }
}

/// The whole HTTP surface, without fault injection (which lives at the connection layer so that
/// it can drop connections).
pub fn app(shared: Arc<Shared>) -> Router {
    api::routes(shared.clone()).merge(control::routes(shared))
}

/// A sandbox serving on a socket.
pub struct RunningSandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:8091`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state behind it, for in-process inspection.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting connections and closes the open ones.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts a sandbox on `listen` (`127.0.0.1:0` picks a free port).
pub async fn start(config: SandboxConfig, listen: SocketAddr) -> std::io::Result<RunningSandbox> {
    config
        .faults
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let _ = shared.base_url.set(format!("http://{addr}"));
    let router = app(shared.clone());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, router, shared.clone(), stopped));
    Ok(RunningSandbox {
        addr,
        shared,
        stop,
        task,
    })
}

async fn serve(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shared = shared.clone();
        let mut conn_stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut router = router.clone();
                let shared = shared.clone();
                async move { handle(&mut router, &shared, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_stopped.changed() => {}
            }
        });
    }
}

async fn handle(
    router: &mut Router,
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let mut _in_flight = None;
    if req.uri().path().starts_with("/api/") {
        let (fault, latency, guard) = shared.admit();
        _in_flight = Some(guard);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Fault::None => {}
            Fault::Reset => {
                // An error from the service makes the connection close without a response.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection reset",
                ));
            }
            Fault::Status(status, retry_after) => {
                let mut resp = Response::builder().status(status);
                if let Some(s) = retry_after {
                    resp = resp.header("Retry-After", s.to_string());
                }
                let body =
                    serde_json::json!({"meta": {"error": format!("injected fault: {status}")}});
                return Ok(resp
                    .header("Content-Type", "application/json")
                    .body(Body::from(body.to_string()))
                    .expect("valid response"));
            }
        }
    }
    let resp = router
        .call(req.map(Body::new))
        .await
        .unwrap_or_else(|never| match never {});
    Ok(resp)
}
