//! Several `sallyport serve` workers over one PostgreSQL state store: 20 syncs on `every 2s`
//! schedules while rows change, a random worker SIGKILLed every few seconds and a new one
//! started, for two minutes; then the rows stop changing and the workers settle. Afterwards the
//! run history shows no two runs of a sync overlapping and no sync waiting longer than its
//! schedule and the lease, the sandbox holds exactly the final model of every sync, and every
//! event is there once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sallyport_sandbox::SandboxConfig;
use serde_json::Value;

/// People syncs and event syncs (as many of each).
const GROUPS: i64 = 10;
/// People in each people sync.
const PEOPLE: i64 = 200;
/// Workers running at once.
const WORKERS: usize = 3;
/// How long workers are killed and started.
const CHAOS: Duration = Duration::from_secs(120);
/// The schedule of every sync, and the run lease of every worker (`serve --lease`).
const EVERY_MS: i64 = 2_000;
const LEASE_S: u64 = 30;

const TOKEN: &str = "workers-test-token-0123456789abcdef0123";
const KEY: &str = "7f3a9c1e5b2d4f6081a3c5e7092b4d6f8e0a1c3e5f7092b4d6f8a0c2e4f60819";

struct Worker {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_worker(dir: &std::path::Path, n: usize) -> Worker {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("worker-{n}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .current_dir(dir)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lease",
            &LEASE_S.to_string(),
        ])
        .env_remove("SALLYPORT_CONFIG")
        .env("SALLYPORT_TOKEN", TOKEN)
        .env("SALLYPORT_SECRET_KEY", KEY)
        .env("RUST_LOG", "warn")
        .env("CI", "true")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Worker { child, port }
}

/// A run as the state store's history holds it.
#[derive(Debug, Clone)]
struct Run {
    sync: String,
    status: String,
    started: i64,
    finished: Option<i64>,
    worker: Option<String>,
}

async fn history(state: &tokio_postgres::Client) -> Vec<Run> {
    state
        .query(
            "SELECT sync, status, started_at, finished_at, worker FROM runs ORDER BY started_at, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Run {
            sync: r.get(0),
            status: r.get(1),
            started: r.get(2),
            finished: r.get(3),
            worker: r.get(4),
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_share_twenty_schedules_through_sigkills() {
    sallyport_testkit::needs_postgres!();
    let f = sallyport_testkit::Fixture::start(SandboxConfig::default()).await;
    f.sql(&format!(
        "CREATE TABLE {{s}}.users AS
            SELECT g AS user_id, g % {GROUPS} AS grp, 'user' || g || '@example.com' AS email,
                   0 AS score
            FROM generate_series(1, {}) g;
         CREATE TABLE {{s}}.events (event_id TEXT PRIMARY KEY, grp INT NOT NULL, user_id INT NOT NULL,
            name TEXT NOT NULL, at BIGINT NOT NULL);
         INSERT INTO {{s}}.events
            SELECT 'ev-' || g, g % {GROUPS}, g, 'signup', 1700000000 + g FROM generate_series(1, 500) g;",
        GROUPS * PEOPLE
    ))
    .await;
    let mut syncs = String::new();
    for k in 0..GROUPS {
        f.sql(&format!(
            "CREATE VIEW {{s}}.users_{k} AS SELECT user_id, email, score FROM {{s}}.users WHERE grp = {k};
             CREATE VIEW {{s}}.events_{k} AS SELECT event_id, user_id, name, at FROM {{s}}.events WHERE grp = {k};"
        ))
        .await;
        syncs.push_str(&format!(
            "  people_{k}: {{warehouse: pg, model: {{table: \"{s}.users_{k}\"}}, app: cio, object: person, mode: upsert, primary_key: user_id, schedule: every 2s}}
  events_{k}: {{warehouse: pg, model: {{table: \"{s}.events_{k}\"}}, app: cio, object: event, mode: insert, event_type: track, event_id: event_id, customer_id: user_id, event_name: name, timestamp: at, schedule: every 2s}}
",
            s = &*f.schema
        ));
    }
    let state_url = sallyport_testkit::database().await;
    let dir = f.dir.path().to_path_buf();
    std::fs::write(
        dir.join("sallyport.yaml"),
        format!(
            "state: \"{state_url}\"\nwarehouses:\n  pg: {{type: postgres, url: \"{}\"}}\napps:\n  cio: {{type: customerio, site_id: sandbox-site, api_key: sandbox-key, track_url: \"{}\"}}\nsyncs:\n{syncs}",
            sallyport_testkit::pg_url(),
            f.sandbox.url(),
        ),
    )
    .unwrap();
    let state = sallyport_testkit::connect(&state_url).await;
    let began = now_ms();
    let mut started = 0;
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|_| {
            started += 1;
            start_worker(&dir, started)
        })
        .collect();

    // Rows change all along: scores of some people, new events.
    let changing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mutator = {
        let changing = changing.clone();
        let wh = sallyport_testkit::connect(&sallyport_testkit::pg_url()).await;
        let s = f.schema.to_string();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut next_event = 501;
            while changing.load(std::sync::atomic::Ordering::SeqCst) {
                let ids: Vec<String> = (0..30)
                    .map(|_| rng.i64(1..=GROUPS * PEOPLE).to_string())
                    .collect();
                wh.batch_execute(&format!(
                    "UPDATE {s}.users SET score = score + 1 WHERE user_id IN ({});
                     INSERT INTO {s}.events
                        SELECT 'ev-' || g, g % {GROUPS}, g % {} + 1, 'purchase', 1700000000 + g
                        FROM generate_series({next_event}, {}) g;",
                    ids.join(","),
                    GROUPS * PEOPLE,
                    next_event + 19
                ))
                .await
                .unwrap();
                next_event += 20;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        })
    };

    // Two minutes of SIGKILLs: a random worker every 2 to 6 s, and a new one in its place.
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut kills: Vec<(u32, i64)> = Vec::new();
    let chaos = Instant::now();
    while chaos.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_millis(rng.u64(2_000..6_000))).await;
        let i = rng.usize(..WORKERS);
        let pid = workers[i].child.id();
        workers[i].child.kill().unwrap(); // SIGKILL
        let _ = workers[i].child.wait();
        kills.push((pid, now_ms()));
        started += 1;
        workers[i] = start_worker(&dir, started);
    }

    // The rows stop changing; every sync then has a run that started afterwards and succeeded.
    changing.store(false, std::sync::atomic::Ordering::SeqCst);
    mutator.await.unwrap();
    let settled_from = now_ms();
    let wait = Instant::now();
    loop {
        let runs = history(&state).await;
        let done: HashSet<&str> = runs
            .iter()
            .filter(|r| r.started > settled_from && r.status == "succeeded")
            .map(|r| r.sync.as_str())
            .collect();
        if done.len() as i64 == 2 * GROUPS {
            break;
        }
        assert!(
            wait.elapsed() < Duration::from_secs(120),
            "only {} syncs ran after the rows stopped changing",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The workers list names the three live ones, alive, and which answered.
    let http = reqwest::Client::new();
    let listed: Value = http
        .get(format!(
            "http://127.0.0.1:{}/api/v1/workers",
            workers[0].port
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed["workers"].as_array().unwrap().clone();
    let pid_of = |w: &Value| w["pid"].as_u64().unwrap() as u32;
    for w in &workers {
        let shown = listed
            .iter()
            .find(|l| pid_of(l) == w.child.id())
            .unwrap_or_else(|| panic!("worker {} not listed: {listed:?}", w.child.id()));
        assert_eq!(shown["alive"], true, "{shown}");
        assert!(shown["heartbeat_at"].as_i64().unwrap() > settled_from - 10_000);
    }
    assert_eq!(
        listed.iter().filter(|l| l["this"] == true).count(),
        1,
        "{listed:?}"
    );

    // SIGTERM drains: each worker finishes or hands back its runs, exits 0 and leaves the list.
    for w in &mut workers {
        let _ = Command::new("kill")
            .args(["-TERM", &w.child.id().to_string()])
            .status();
    }
    for w in &mut workers {
        let status = w.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "a drained worker exits 0");
    }
    let left: Vec<i64> = state
        .query("SELECT pid FROM workers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for w in &workers {
        assert!(
            !left.contains(&(w.child.id() as i64)),
            "a drained worker leaves the list"
        );
    }

    // The history: every run names a worker; no overlap; no wait past schedule + lease.
    let runs = history(&state).await;
    let mut by_sync: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &runs {
        assert!(r.worker.is_some(), "every run names its worker: {r:?}");
        assert!(r.finished.is_some(), "no run is left going: {r:?}");
        by_sync.entry(&r.sync).or_default().push(r);
    }
    assert_eq!(by_sync.len() as i64, 2 * GROUPS);
    let limit = EVERY_MS + LEASE_S as i64 * 1000;
    let mut longest_wait = 0;
    for (sync, list) in &by_sync {
        assert!(
            list[0].started - began <= limit,
            "{sync} first ran {} ms after the workers started",
            list[0].started - began
        );
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.finished.unwrap() <= b.started,
                "two runs of {sync} overlapped: {a:?} and {b:?}"
            );
            let waited = b.started - a.finished.unwrap();
            longest_wait = longest_wait.max(waited);
            assert!(
                waited <= limit,
                "{sync} waited {waited} ms between runs (schedule + lease is {limit} ms)"
            );
        }
    }

    // Takeovers: each run a killed worker left going is finished by another worker's next run.
    let mut takeovers = 0;
    let mut longest_takeover = 0;
    for (pid, at) in &kills {
        let tag = format!("-{pid}-");
        for r in runs.iter().filter(|r| {
            r.worker.as_deref().is_some_and(|w| w.contains(&tag))
                && r.started <= *at
                && r.status == "interrupted"
        }) {
            let next = runs
                .iter()
                .find(|n| n.sync == r.sync && n.started > r.started)
                .unwrap_or_else(|| panic!("nothing took {} over after a kill", r.sync));
            assert!(!next.worker.as_deref().unwrap().contains(&tag));
            takeovers += 1;
            longest_takeover = longest_takeover.max(next.started - at);
        }
    }
    assert!(
        longest_takeover <= limit,
        "a takeover took {longest_takeover} ms"
    );

    // The sandbox holds exactly the final model of every people sync.
    let people: Value = http
        .get(format!("{}/_sandbox/people?limit=10000", f.sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let people = people["people"].as_array().unwrap();
    assert_eq!(people.len() as i64, GROUPS * PEOPLE);
    let scores: HashMap<String, i64> =
        f.pg.query(
            &format!(
                "SELECT user_id::text, score::bigint FROM {}.users",
                &*f.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let changed = scores.values().filter(|s| **s > 0).count();
    assert!(changed > 100, "rows changed between runs: {changed}");
    for p in people {
        let id = p["id"].as_str().unwrap();
        assert_eq!(
            p["attributes"]["score"].as_i64(),
            Some(scores[id]),
            "person {id}: {p}"
        );
    }

    // Every event exactly once.
    let expected: HashSet<String> =
        f.pg.query(
            &format!("SELECT event_id, grp FROM {}.events", &*f.schema),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let (id, grp): (String, i32) = (r.get(0), r.get(1));
            sallyport_destinations::customerio::dedup_id(&format!("events_{grp}"), &id)
        })
        .collect();
    let events: Value = http
        .get(format!("{}/_sandbox/events?limit=200000", f.sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = events["events"].as_array().unwrap();
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let distinct: HashSet<&str> = got.iter().copied().collect();
    assert_eq!(got.len(), distinct.len(), "no event stored twice");
    assert_eq!(distinct.len(), expected.len());
    assert!(expected.iter().all(|e| distinct.contains(e.as_str())));

    println!(
        "{} runs by {started} workers; {} kills, {takeovers} takeovers, longest takeover {longest_takeover} ms, longest wait between runs {longest_wait} ms; {} people changed, {} events",
        runs.len(),
        kills.len(),
        changed,
        expected.len()
    );
}
