//! The delivery layer every destination shares: a token bucket over all requests to an app, a
//! per-request timeout, and retries of what is transient (timeouts, connection errors, 408, 429,
//! 500, 502, 503, 504) with exponential backoff and full jitter, honouring `Retry-After`.
//!
//! Destinations build requests and read answers; they never loop on retries themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::{header::HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Delivery settings of an app: the defaults are safe for Customer.io.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    /// Token bucket over all requests to this app.
    pub requests_per_second: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per request, e.g. `30s`, `500ms`.
    #[serde(
        deserialize_with = "sallyport_core::units::duration",
        serialize_with = "sallyport_core::units::duration_text"
    )]
    pub timeout: std::time::Duration,
    /// Attempts per request for transient failures.
    pub max_attempts: u32,
    /// Largest request body, e.g. `450KB` (1 KB = 1000 bytes): must stay under 500 KB.
    #[serde(deserialize_with = "sallyport_core::units::bytes")]
    pub batch_bytes: usize,
    /// Batches in a row the app may give no usable answer to (after every attempt) before a
    /// run stops as `failed`: an outage stops the run and leaves its rows for the next one,
    /// instead of recording every remaining row as failed.
    pub stop_after_failed_batches: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            requests_per_second: 100.0,
            concurrency: 8,
            timeout: std::time::Duration::from_secs(30),
            max_attempts: 6,
            batch_bytes: 450_000,
            stop_after_failed_batches: 3,
        }
    }
}

impl Delivery {
    /// What is wrong with the settings, at their paths below the app.
    pub fn validate(&self) -> Vec<sallyport_core::SettingProblem> {
        use sallyport_core::SettingProblem;
        let at = |k: &str| vec!["delivery".to_string(), k.to_string()];
        let mut p = Vec::new();
        let mut problem = |k: &str, m: String| {
            p.push(SettingProblem {
                path: at(k),
                message: m,
            })
        };
        if self.requests_per_second.is_nan() || self.requests_per_second <= 0.0 {
            problem(
                "requests_per_second",
                "requests_per_second must be more than 0".into(),
            );
        }
        if self.concurrency == 0 {
            problem("concurrency", "concurrency must be at least 1".into());
        }
        if self.max_attempts == 0 {
            problem("max_attempts", "max_attempts must be at least 1".into());
        }
        if self.stop_after_failed_batches == 0 {
            problem(
                "stop_after_failed_batches",
                "stop_after_failed_batches must be at least 1".into(),
            );
        }
        if self.timeout.is_zero() {
            problem("timeout", "timeout must be more than 0".into());
        }
        if !(40_000..500_000).contains(&self.batch_bytes) {
            problem(
                "batch_bytes",
                format!(
                    "batch_bytes is {} bytes; it must be at least 40KB (one 32 KB operation) and under Customer.io's 500KB",
                    self.batch_bytes
                ),
            );
        }
        p
    }
}

/// Base and ceiling of the backoff between attempts.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured; a longer one is cut to this.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);

/// A token bucket of one token refilled `rate` times a second: requests are spaced at least
/// `1/rate` apart, so no one-second window ever holds more than `rate` of them.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            burst: 1.0,
            state: Mutex::new((1.0, Instant::now())),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let (tokens, last) = *s;
                let tokens =
                    (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
                if tokens >= 1.0 {
                    *s = (tokens - 1.0, now);
                    return;
                }
                *s = (tokens, now);
                Duration::from_secs_f64((1.0 - tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The answer of a request that was not retried further.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why a request produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// 401 or 403: the credentials are wrong; the run must stop.
    #[error("{status}")]
    Unauthorized { status: StatusCode },
    /// Transient failures until the attempts ran out.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// Counters a run reports.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub requests: AtomicU64,
    /// Milliseconds spent in requests (attempts included).
    pub request_ms: AtomicU64,
    pub retries: AtomicU64,
    pub waited_ms: AtomicU64,
}

/// The pace of one app: its token bucket and its slots for requests in flight. One per app in a
/// process, shared by every run that sends to it, so that N syncs running at once still send at
/// most `requests_per_second` and `concurrency` to one workspace.
pub struct Pace {
    limiter: RateLimiter,
    slots: tokio::sync::Semaphore,
}

impl Pace {
    pub fn new(settings: &Delivery) -> Self {
        Self {
            limiter: RateLimiter::new(settings.requests_per_second),
            slots: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
        }
    }
}

/// The paces of a process's apps, by app name and delivery settings (an app whose settings
/// change gets a new pace).
#[derive(Default)]
pub struct Pacing {
    by_app: std::sync::Mutex<std::collections::HashMap<String, Arc<Pace>>>,
}

impl Pacing {
    /// The pace every run sending to the workspace `app` (a key naming it) with `settings`
    /// shares. Paces no run holds any more are let go.
    pub fn pace(&self, app: &str, settings: &Delivery) -> Arc<Pace> {
        let key = format!(
            "{app}\u{0}{}\u{0}{}",
            settings.requests_per_second, settings.concurrency
        );
        let mut by_app = self.by_app.lock().unwrap_or_else(|p| p.into_inner());
        by_app.retain(|k, p| *k == key || Arc::strong_count(p) > 1);
        by_app
            .entry(key)
            .or_insert_with(|| Arc::new(Pace::new(settings)))
            .clone()
    }
}

/// Sends requests to one app under its delivery settings.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    pace: Arc<Pace>,
    settings: Delivery,
    pub stats: Arc<DeliveryStats>,
    /// Where each attempt is written down for the API inspector, when a run asked for it.
    recording: Option<Recording>,
}

/// The most of a request's body the inspector keeps.
pub const INSPECTED_BODY: usize = 4096;

/// Requests the inspector keeps per sync.
pub const INSPECTED_REQUESTS: usize = 100;

/// A request to the app as the API inspector shows it: never a header (the credentials travel
/// there), the body cut at 4 KB with every secret of the app blanked out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inspected {
    /// When it was sent (RFC 3339, UTC).
    pub at: String,
    pub run_id: i64,
    pub method: String,
    /// The path and query, without the host.
    pub path: String,
    /// The answer's status; none when no answer came.
    pub status: Option<u16>,
    /// Why no answer came.
    pub error: Option<String>,
    pub attempt: u32,
    pub duration_ms: u64,
    pub body: String,
    /// The body was longer than what is kept.
    pub truncated: bool,
}

/// The last requests of each sync, kept in the memory of the process that made them, and,
/// when it persists (`inspector: persist`), also held until the engine writes them to the
/// state store.
#[derive(Debug, Default)]
pub struct Inspector {
    by_sync:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Inspected>>>,
    persist: bool,
    pending: std::sync::Mutex<Vec<(String, Inspected)>>,
}

impl Inspector {
    /// An inspector whose requests are also to be kept in the state store.
    pub fn persisting() -> Self {
        Self {
            persist: true,
            ..Default::default()
        }
    }

    /// Whether its requests are kept in the state store.
    pub fn persists(&self) -> bool {
        self.persist
    }

    /// The requests not yet written to the state store, `(sync, request)`, oldest first.
    pub fn take_pending(&self) -> Vec<(String, Inspected)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn add(&self, sync: &str, r: Inspected) {
        if self.persist {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: past this, the oldest unwritten requests go first.
            if pending.len() >= 10 * INSPECTED_REQUESTS {
                pending.remove(0);
            }
            pending.push((sync.to_string(), r.clone()));
        }
        let mut all = self.by_sync.lock().unwrap_or_else(|p| p.into_inner());
        let kept = all.entry(sync.to_string()).or_default();
        if kept.len() == INSPECTED_REQUESTS {
            kept.pop_front();
        }
        kept.push_back(r);
    }

    /// A sync's last requests, the newest first.
    pub fn requests(&self, sync: &str) -> Vec<Inspected> {
        let all = self.by_sync.lock().unwrap_or_else(|p| p.into_inner());
        all.get(sync)
            .map(|k| k.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

/// Where a sender writes its requests down: the inspector, the run, and the secrets to blank
/// out of bodies.
#[derive(Debug, Clone)]
pub struct Recording {
    pub inspector: Arc<Inspector>,
    pub sync: String,
    pub run_id: i64,
    pub secrets: Vec<String>,
}

/// What is kept of a request before its answer comes.
struct Seen {
    at: String,
    method: String,
    path: String,
    body: String,
    truncated: bool,
}

impl Recording {
    fn seen(&self, req: &reqwest::Request) -> Seen {
        let url = req.url();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let bytes = req.body().and_then(|b| b.as_bytes()).unwrap_or_default();
        // Only the start is kept, and only the start is read: a batch's body is hundreds of
        // kilobytes, and copying and searching all of it for every request cost a run of
        // 10,000,000 rows seconds. Every secret that begins in the part kept is found in the
        // whole body and blanked whole, so no piece of one is ever kept.
        let mut secrets: Vec<&[u8]> = self
            .secrets
            .iter()
            .filter(|s| s.len() >= 4)
            .map(|s| s.as_bytes())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut kept = Vec::with_capacity(bytes.len().min(INSPECTED_BODY) + 8);
        let mut at = 0;
        while at < bytes.len() && kept.len() < INSPECTED_BODY {
            match secrets.iter().find(|s| bytes[at..].starts_with(s)) {
                Some(secret) => {
                    kept.extend_from_slice(b"[secret]");
                    at += secret.len();
                }
                None => {
                    kept.push(bytes[at]);
                    at += 1;
                }
            }
        }
        let mut body = String::from_utf8_lossy(&kept).into_owned();
        let truncated = at < bytes.len() || body.len() > INSPECTED_BODY;
        if truncated {
            let mut end = INSPECTED_BODY.min(body.len());
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
        }
        Seen {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            method: req.method().to_string(),
            path,
            body,
            truncated,
        }
    }

    fn write(&self, seen: Seen, attempt: u32, took: Duration, outcome: Result<u16, String>) {
        let (status, error) = match outcome {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        self.inspector.add(
            &self.sync,
            Inspected {
                at: seen.at,
                run_id: self.run_id,
                method: seen.method,
                path: seen.path,
                status,
                error,
                attempt,
                duration_ms: took.as_millis() as u64,
                body: seen.body,
                truncated: seen.truncated,
            },
        );
    }
}

/// How an attempt ended, for the retry decision.
enum Verdict {
    Done(Answer),
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Stop(SendError),
}

/// Resolves names as the system does, without the link-local addresses (cloud metadata
/// services): a name that resolved elsewhere when it was checked cannot lead there later.
struct Reachable;

impl reqwest::dns::Resolve for Reachable {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs = sallyport_core::net::resolve_reachable(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Sender {
    /// A sender with a pace of its own (nothing else sends to the app from this process).
    pub fn new(settings: &Delivery) -> Self {
        Self::paced(settings, Arc::new(Pace::new(settings)))
    }

    /// A sender that shares `pace` with every other sender to the same app.
    pub fn paced(settings: &Delivery, pace: Arc<Pace>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(settings.concurrency.max(1))
            .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(Reachable))
            .build()
            .expect("an HTTP client with default TLS");
        Self {
            client,
            pace,
            settings: settings.clone(),
            stats: Arc::new(DeliveryStats::default()),
            recording: None,
        }
    }

    /// Writes each attempt down in `r` from now on.
    pub fn record(&mut self, r: Recording) {
        self.recording = Some(r);
    }

    pub fn settings(&self) -> &Delivery {
        &self.settings
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request that `build` makes, retrying what is transient. `build` is called once
    /// per attempt.
    pub async fn send<F>(&self, build: F) -> Result<Answer, SendError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let max = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A slot for the request's whole life (not for the wait between attempts), then a
            // token: both shared with every other run sending to this app.
            let slot = self
                .pace
                .slots
                .acquire()
                .await
                .expect("the slots of a pace are never closed");
            self.pace.limiter.acquire().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            let (verdict, seen) = match build(&self.client).build() {
                Ok(req) => {
                    let seen = self.recording.as_ref().map(|r| r.seen(&req));
                    match self.client.execute(req).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            (classify(resp, attempt).await, seen.map(|s| (s, Ok(status))))
                        }
                        Err(e) => {
                            let why = describe_transport_error(&e);
                            let seen = seen.map(|s| (s, Err(why.clone())));
                            (Verdict::Retry { why, after: None }, seen)
                        }
                    }
                }
                Err(e) => (
                    Verdict::Retry {
                        why: describe_transport_error(&e),
                        after: None,
                    },
                    None,
                ),
            };
            drop(slot);
            if let (Some(r), Some((seen, outcome))) = (&self.recording, seen) {
                r.write(seen, attempt, sent.elapsed(), outcome);
            }
            self.stats
                .request_ms
                .fetch_add(sent.elapsed().as_millis() as u64, Ordering::Relaxed);
            match verdict {
                Verdict::Done(a) => return Ok(a),
                Verdict::Stop(e) => return Err(e),
                Verdict::Retry { why, after } => {
                    if attempt >= max {
                        return Err(SendError::GaveUp {
                            attempts: attempt,
                            last: why,
                        });
                    }
                    let wait = after.unwrap_or_else(|| backoff(attempt));
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, why = %why, "retrying");
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .waited_ms
                        .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The most of an answer that is read; the rest is left unread (an app's answers are small).
pub const MAX_ANSWER: usize = 1 << 20;

/// Reads at most `limit` bytes of an answer's body.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - out.len();
        if chunk.len() >= room {
            out.extend_from_slice(&chunk[..room]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

async fn classify(resp: reqwest::Response, attempt: u32) -> Verdict {
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Verdict::Stop(SendError::Unauthorized { status });
    }
    let body = match read_capped(resp, MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            return Verdict::Retry {
                why: format!(
                    "reading the answer failed: {}",
                    describe_transport_error(&e)
                ),
                after: None,
            }
        }
    };
    if is_transient(status) {
        // The status only: a foreign body (a proxy's page, say) is never echoed.
        return Verdict::Retry {
            why: status.to_string(),
            after: retry_after,
        };
    }
    Verdict::Done(Answer {
        status,
        body,
        attempts: attempt,
    })
}

/// Whether a status is worth another attempt.
pub fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Full jitter: a random wait between 0 and `min(cap, base × 2^(attempt-1))`.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(fastrand::f64())
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(RETRY_AFTER_CAP))
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "connection error"
    };
    // The URL may name a proxy's credentials; say what happened, not where.
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

#[cfg(test)]
mod pacing_tests {
    use super::*;

    #[test]
    fn paces_are_shared_while_held_and_let_go_after() {
        let pacing = Pacing::default();
        let d = Delivery::default();
        let a = pacing.pace("w1", &d);
        let b = pacing.pace("w1", &d);
        assert!(Arc::ptr_eq(&a, &b), "one pace per workspace");
        assert!(!Arc::ptr_eq(&a, &pacing.pace("w2", &d)));
        drop((a, b));
        let _c = pacing.pace("w3", &d);
        let held = pacing.by_app.lock().unwrap().len();
        assert_eq!(held, 1, "paces no run holds are let go");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_inspector_keeps_no_secret_cuts_bodies_and_keeps_the_last_hundred() {
        let client = reqwest::Client::new();
        let body = format!("{{\"key\":\"sk-1234\",\"pad\":\"{}\"}}", "é".repeat(3000));
        let req = client
            .post("http://127.0.0.1:1/api/v2/batch?x=1")
            .header("Authorization", "Basic c2stMTIzNA==")
            .body(body)
            .build()
            .unwrap();
        let long = "sk_live_0123456789abcdefghijklmnopqrstuv";
        let rec = Recording {
            inspector: Arc::default(),
            sync: "people".into(),
            run_id: 7,
            secrets: vec!["sk-1234".into(), long.into()],
        };
        let seen = rec.seen(&req);
        rec.write(seen, 2, Duration::from_millis(5), Err("timed out".into()));
        let got = rec.inspector.requests("people");
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v2/batch?x=1")
        );
        assert_eq!((r.run_id, r.attempt, r.status), (7, 2, None));
        assert_eq!(r.error.as_deref(), Some("timed out"));
        assert!(!r.body.contains("sk-1234") && r.body.contains("[secret]"));
        assert!(r.truncated && r.body.len() <= INSPECTED_BODY && r.body.len() > 4000);
        assert!(
            !format!("{r:?}").contains("c2stMTIzNA"),
            "no header is kept"
        );
        // A long secret across the cut, after another one blanked before it (which moves
        // what follows nearer the start): no piece of either is kept.
        let body = format!(
            "{long}{}{long}{}",
            "x".repeat(4120 - long.len()),
            "y".repeat(5000)
        );
        let req = client
            .post("http://127.0.0.1:1/l")
            .body(body)
            .build()
            .unwrap();
        let seen = rec.seen(&req);
        assert!(seen.truncated && seen.body.len() <= INSPECTED_BODY);
        assert!(!seen.body.contains("sk_live"), "{}", &seen.body[4000..]);
        assert!(seen.body.starts_with("[secret]xxx"));
        // A secret across the cut is blanked before the body is cut: no start of it is kept.
        let across = format!(
            "{}sk-1234{}",
            "x".repeat(INSPECTED_BODY - 3),
            "y".repeat(9000)
        );
        let req = client
            .post("http://127.0.0.1:1/a")
            .body(across)
            .build()
            .unwrap();
        let seen = rec.seen(&req);
        assert!(seen.truncated && seen.body.len() == INSPECTED_BODY);
        assert!(seen.body.ends_with("x[se"), "{}", &seen.body[4000..]);
        for n in 0..150 {
            let req = client
                .post(format!("http://127.0.0.1:1/n/{n}"))
                .build()
                .unwrap();
            rec.write(rec.seen(&req), 1, Duration::ZERO, Ok(200));
        }
        let got = rec.inspector.requests("people");
        assert_eq!(got.len(), INSPECTED_REQUESTS);
        assert_eq!(got[0].path, "/n/149", "the newest first");
        assert_eq!(got[99].path, "/n/50");
        assert!(rec.inspector.requests("other").is_empty());
    }

    use super::*;

    #[test]
    fn backoff_is_jittered_under_a_growing_ceiling() {
        for attempt in 1..10 {
            let ceiling = BACKOFF_BASE * 2u32.pow(attempt - 1);
            for _ in 0..50 {
                assert!(backoff(attempt) <= ceiling.min(BACKOFF_CAP));
            }
        }
        assert!(backoff(40) <= BACKOFF_CAP);
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(s).unwrap()));
        }
        for s in [200, 207, 400, 401, 404, 413] {
            assert!(!is_transient(StatusCode::from_u16(s).unwrap()));
        }
    }

    #[tokio::test]
    async fn the_bucket_paces_requests() {
        let limiter = RateLimiter::new(50.0);
        let start = Instant::now();
        for _ in 0..26 {
            limiter.acquire().await;
        }
        // One token up front, then 25 at 50/s: about half a second.
        assert!(
            start.elapsed() >= Duration::from_millis(450),
            "{:?}",
            start.elapsed()
        );
    }
}
