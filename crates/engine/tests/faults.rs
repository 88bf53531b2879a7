//! Delivery under faults: every fault kind the sandbox injects, at rates up to 30 %, loses
//! nothing; `Retry-After` is waited for; the request rate keeps to the setting; an app that keeps
//! failing costs failed rows, not lost or wrongly committed ones; a warehouse connection killed
//! mid-read fails the run cleanly.

mod common;

use std::time::Duration;

use common::Harness;
use sallyport_sandbox::IdentifyBy;
use serde_json::json;

const PEOPLE: &str = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
";

async fn users(h: &Harness, n: i64) {
    h.sql(&format!(
        "CREATE TABLE {{s}}.users AS
         SELECT g AS user_id, 'user' || g || '@example.com' AS email, repeat('x', 100) AS bio
         FROM generate_series(1, {n}) g"
    ))
    .await;
}

async fn assert_all_arrived(h: &Harness, n: u64) {
    let stats = h.stats().await;
    assert_eq!(stats["people"].as_u64(), Some(n), "{stats}");
    for id in [1, n / 2, n] {
        let p = h.person(&id.to_string()).await.unwrap();
        assert_eq!(p["email"], format!("user{id}@example.com"));
    }
}

#[tokio::test]
async fn every_fault_kind_at_30_percent_loses_nothing() {
    sallyport_testkit::needs_postgres!();
    let cases = [
        json!({"rate_429": 0.3, "retry_after": 1, "seed": 1}),
        json!({"rate_500": 0.3, "seed": 2}),
        json!({"rate_503": 0.3, "seed": 3}),
        json!({"rate_reset": 0.3, "seed": 4}),
        json!({"latency_ms": 200, "seed": 5}),
        json!({"rate_429": 0.1, "retry_after": 1, "rate_500": 0.1, "rate_503": 0.05, "rate_reset": 0.05, "latency_ms": 20, "seed": 6}),
    ];
    for faults in cases {
        let mut h = Harness::new(IdentifyBy::Id).await;
        h.delivery =
            "{requests_per_second: 1000, concurrency: 4, max_attempts: 12, batch_bytes: 40KB}"
                .into();
        users(&h, 3000).await;
        let engine = h.engine(PEOPLE).await;
        h.faults(faults.clone());
        let s = h.run(&engine, "people").await;
        assert_eq!(s.status, "succeeded", "{faults}: {s:?}");
        assert_eq!(s.rows_sent, 3000, "{faults}");
        assert_all_arrived(&h, 3000).await;
        let stats = h.stats().await;
        let injected = stats["faults_injected"].as_u64().unwrap();
        if faults.get("latency_ms").is_none() || faults.get("rate_500").is_some() {
            assert!(injected > 0, "{faults}: no fault was injected");
        }
        assert_eq!(
            s.retries, injected,
            "{faults}: every fault was retried, nothing else"
        );
        assert_eq!(engine.state.count("people").await.unwrap(), 3000);
        assert_eq!(
            h.run(&engine, "people").await.rows_sent,
            0,
            "{faults}: nothing left to send"
        );
    }
}

#[tokio::test]
async fn retry_after_is_waited_for() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery =
        "{requests_per_second: 1000, concurrency: 1, max_attempts: 10, batch_bytes: 40KB}".into();
    users(&h, 2000).await;
    let engine = h.engine(PEOPLE).await;
    h.faults(json!({"rate_429": 0.3, "retry_after": 1, "seed": 11}));
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "succeeded");
    let stats = h.stats().await;
    let throttled = stats["faults_injected"].as_u64().unwrap();
    assert!(throttled >= 1, "{stats}");
    // One request at a time: each 429 cost at least its Retry-After second.
    assert!(
        s.duration_ms >= throttled * 1000,
        "{throttled} answers of 429 with Retry-After: 1, but the run took {} ms",
        s.duration_ms
    );
    assert_all_arrived(&h, 2000).await;
}

#[tokio::test]
async fn the_request_rate_never_exceeds_the_setting() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery = "{requests_per_second: 20, concurrency: 8}".into();
    h.sql(
        "CREATE TABLE {s}.ev AS SELECT 'e' || g AS id, 'anon-' || g AS anon, 'visit' AS name
         FROM generate_series(1, 70) g",
    )
    .await;
    let engine = h
        .engine(
            "  ev:
    warehouse: pg
    model: {table: \"{s}.ev\"}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: id
    anonymous_id: anon
    event_name: name
",
        )
        .await;
    let s = h.run(&engine, "ev").await;
    assert_eq!(s.rows_sent, 70, "one request per anonymous event");
    let stats = h.stats().await;
    let peak = stats["peak_requests_per_second"].as_u64().unwrap();
    assert!(
        peak <= 20,
        "the sandbox saw {peak} requests within one second; the setting is 20"
    );
    assert!(
        peak >= 15,
        "the limiter should not hold requests far below the setting: {peak}"
    );
}

#[tokio::test]
async fn concurrent_runs_share_the_apps_rate_and_slots() {
    sallyport_testkit::needs_postgres!();
    // Two syncs to one app, running at once in one process: together they keep to the app's
    // 20 requests per second and 2 requests in flight, not 2 × the setting.
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery = "{requests_per_second: 20, concurrency: 2}".into();
    h.sql(
        "CREATE TABLE {s}.ev AS SELECT 'e' || g AS id, 'anon-' || g AS anon, 'visit' AS name
         FROM generate_series(1, 40) g",
    )
    .await;
    let sync = |name: &str| {
        format!(
            "  {name}:
    warehouse: pg
    model: {{table: \"{{s}}.ev\"}}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: id
    anonymous_id: anon
    event_name: name
"
        )
    };
    let engine = h.engine(&format!("{}{}", sync("a"), sync("b"))).await;
    let (a, b) = tokio::join!(h.run(&engine, "a"), h.run(&engine, "b"));
    assert_eq!((a.rows_sent, b.rows_sent), (40, 40), "{a:?} {b:?}");
    let stats = h.stats().await;
    let peak = stats["peak_requests_per_second"].as_u64().unwrap();
    assert!(
        peak <= 20,
        "two runs together sent {peak} requests within one second; the app's setting is 20"
    );
    let in_flight = stats["peak_in_flight"].as_u64().unwrap();
    assert!(
        in_flight <= 2,
        "two runs together had {in_flight} requests in flight; the app's setting is 2"
    );
}

#[tokio::test]
async fn rows_fail_when_the_app_keeps_failing_and_are_sent_next_time() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery = "{requests_per_second: 1000, max_attempts: 3}".into();
    users(&h, 50).await;
    let engine = h.engine(PEOPLE).await;
    // When even the credentials check keeps failing, the run cannot start.
    h.faults(json!({"rate_503": 1.0}));
    let err = engine.run("people", Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");
    assert!(
        err.to_string().contains("gave up after 3 attempts") || err.to_string().contains("503"),
        "{err}"
    );
    h.faults(json!({}));
    h.http
        .post(format!("{}/_sandbox/reset", h.sandbox.url()))
        .send()
        .await
        .unwrap();

    // Now fail only the batch: the credentials check (the first request) goes through.
    h.faults(json!({"rate_503": 1.0, "after_requests": 1}));
    let s = engine.run("people", Default::default()).await.unwrap();
    assert_eq!(s.status, "partial", "{s:?}");
    assert_eq!((s.rows_sent, s.rows_failed), (0, 50));
    let f = engine.state.failures("people").await.unwrap();
    assert_eq!(f.len(), 50);
    assert!(
        f[0].reason
            .starts_with("row 1: gave up after 3 attempts: 503 Service Unavailable"),
        "{}",
        f[0].reason
    );
    assert_eq!(
        engine.state.count("people").await.unwrap(),
        0,
        "nothing unacknowledged is committed"
    );
    assert_eq!(h.stats().await["people"], 0);

    h.faults(json!({}));
    let s = h.run(&engine, "people").await;
    assert_eq!((s.status.as_str(), s.rows_sent), ("succeeded", 50));
    assert!(engine.state.failures("people").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_killed_warehouse_connection_fails_the_run_cleanly() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    let app = format!("sp_kill_{}", h.schema);
    h.warehouse_url = format!("{}?application_name={app}", sallyport_testkit::pg_url());
    h.delivery = "{requests_per_second: 1000, concurrency: 2, batch_bytes: 40KB}".into();
    users(&h, 100_000).await;
    let engine = h.engine(PEOPLE).await;
    h.faults(json!({"latency_ms": 20}));
    let run = engine.run("people", Default::default());
    let kill = async {
        // Kill the warehouse connection once some batches were acknowledged.
        for _ in 0..2000 {
            if h.stats().await["people"].as_u64().unwrap() >= 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    };
    let (s, _) = tokio::join!(run, kill);
    let s = s.unwrap();
    assert_eq!(s.status, "failed", "{s:?}");
    assert!(
        s.error
            .as_deref()
            .unwrap_or("")
            .contains("reading the model failed"),
        "{s:?}"
    );
    let committed = engine.state.count("people").await.unwrap();
    let delivered = h.stats().await["people"].as_u64().unwrap();
    assert!(committed > 0 && committed < 100_000, "{committed}");
    assert_eq!(
        committed, delivered,
        "exactly what was acknowledged is committed"
    );
    let runs = engine.state.runs(Some("people"), 1).await.unwrap();
    assert_eq!(runs[0].status, "failed");

    h.faults(json!({}));
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "succeeded");
    assert_eq!(s.rows_sent, 100_000 - committed);
    assert_eq!(h.stats().await["people"], 100_000);
}

#[tokio::test]
async fn a_lock_left_by_a_dead_process_is_taken_at_once() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 3).await;
    let engine = h.engine(PEOPLE).await;
    // A holder of another PID namespace on a host of the same name is not proven dead: its
    // lock waits for its lease.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let elsewhere = format!("{}/999999999/0", host.trim());
    assert!(engine
        .state
        .try_lock("people", &elsewhere, Duration::from_secs(60))
        .await
        .unwrap());
    let err = engine.run("people", Default::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "people is already running");
    engine.state.unlock("people", &elsewhere).await.unwrap();
    // A process of this very place that is gone is.
    let dead = format!("{}/999999999/0", sallyport_engine::lock_place());
    assert!(engine
        .state
        .try_lock("people", &dead, Duration::from_secs(60))
        .await
        .unwrap());
    let s = h.run(&engine, "people").await;
    assert_eq!(s.rows_sent, 3);
    assert_eq!(
        engine.state.lock_holder("people").await.unwrap(),
        None,
        "released after the run"
    );
}
