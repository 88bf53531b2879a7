//! A run's lifecycle: an outage stops a run instead of failing every row, a lock that cannot be
//! renewed stops a run, runs left `running` by a process that died are marked `interrupted`.

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
         SELECT g AS user_id, 'user' || g || '@example.com' AS email, repeat('x', 200) AS bio
         FROM generate_series(1, {n}) g"
    ))
    .await;
}

#[tokio::test]
async fn an_outage_stops_the_run_and_leaves_the_rows_for_the_next_one() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery = "{requests_per_second: 1000, concurrency: 1, max_attempts: 2, batch_bytes: 40KB, stop_after_failed_batches: 3}".into();
    users(&h, 3000).await;
    let engine = h.engine(PEOPLE).await;
    // Every batch fails; the credentials check (the first request) goes through.
    h.faults(json!({"rate_503": 1.0, "after_requests": 1}));
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "failed", "{s:?}");
    let error = s.error.clone().unwrap();
    assert!(
        error.contains("3 batches in a row") && error.contains("503"),
        "the error says why, with the app's last answer: {error}"
    );
    assert_eq!((s.rows_sent, s.rows_failed), (0, 0), "{s:?}");
    assert!(
        engine.state.failures("people").await.unwrap().is_empty(),
        "an outage records no failed rows"
    );
    assert!(
        s.rows_read < 3000,
        "the run stopped reading once the outage was plain: {s:?}"
    );
    // The app is back: the next run sends everyone.
    h.faults(json!({}));
    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.status.as_str(), s.rows_sent),
        ("succeeded", 3000),
        "{s:?}"
    );
}

#[tokio::test]
async fn batches_given_up_among_answered_ones_are_failed_rows() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery = "{requests_per_second: 1000, concurrency: 1, max_attempts: 1, batch_bytes: 40KB, stop_after_failed_batches: 3}".into();
    users(&h, 1000).await;
    let engine = h.engine(PEOPLE).await;
    // About one batch in four gives up: never three in a row with this seed.
    h.faults(json!({"rate_503": 0.25, "after_requests": 1, "seed": 11}));
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "partial", "{s:?}");
    assert!(s.rows_failed > 0 && s.rows_sent > 0, "{s:?}");
    assert_eq!(s.rows_sent + s.rows_failed, 1000, "{s:?}");
    let failures = engine.state.failures("people").await.unwrap();
    assert_eq!(failures.len() as u64, s.rows_failed);
    assert!(
        failures[0].reason.contains("gave up after 1 attempts"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_run_whose_lock_cannot_be_renewed_stops() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.state = sallyport_testkit::database().await;
    h.delivery = "{requests_per_second: 1000, concurrency: 1, batch_bytes: 40KB}".into();
    users(&h, 2000).await;
    let mut engine = h.engine(PEOPLE).await;
    engine.lock_lease = Duration::from_millis(800);
    // Slow batches: the run lasts several leases.
    h.faults(json!({"latency_ms": 150}));
    let state = sallyport_testkit::connect(&h.state).await;
    let run = engine.run("people", Default::default());
    let break_locks = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // The lock table goes away: renewing fails, while everything else still works.
        state
            .batch_execute("ALTER TABLE locks RENAME TO locks_elsewhere")
            .await
            .unwrap();
    };
    let (s, ()) = tokio::join!(run, break_locks);
    let s = s.unwrap();
    assert_eq!(s.status, "failed", "{s:?}");
    assert!(
        s.error.as_deref().unwrap().contains("could not be renewed"),
        "{s:?}"
    );
    assert!(s.rows_sent < 2000, "{s:?}");
}

#[tokio::test]
async fn a_passing_failure_to_renew_the_lock_does_not_stop_the_run() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.state = sallyport_testkit::database().await;
    h.delivery = "{requests_per_second: 1000, concurrency: 1, batch_bytes: 40KB}".into();
    users(&h, 6000).await;
    let mut engine = h.engine(PEOPLE).await;
    // Renewed every second; a failure is tried again every 250 ms for up to 2 s.
    engine.lock_lease = Duration::from_secs(4);
    h.faults(json!({"latency_ms": 150}));
    let state = sallyport_testkit::connect(&h.state).await;
    let run = engine.run("people", Default::default());
    let blip = async {
        // The renewal due at 1 s fails; the lock table is back half a second later.
        tokio::time::sleep(Duration::from_millis(900)).await;
        state
            .batch_execute("ALTER TABLE locks RENAME TO locks_elsewhere")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        state
            .batch_execute("ALTER TABLE locks_elsewhere RENAME TO locks")
            .await
            .unwrap();
    };
    let (s, ()) = tokio::join!(run, blip);
    let s = s.unwrap();
    assert_eq!(
        (s.status.as_str(), s.rows_sent),
        ("succeeded", 6000),
        "{s:?}"
    );
}

#[tokio::test]
async fn a_run_marks_the_run_a_killed_process_left_running_as_interrupted() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 5).await;
    let engine = h.engine(PEOPLE).await;
    // What a SIGKILLed `sallyport sync` leaves: a run recorded as `running`.
    let left = engine.state.begin_run("people", false, None).await.unwrap();
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "succeeded");
    let runs = engine.state.runs(Some("people"), 5).await.unwrap();
    let old = runs.iter().find(|r| r.id == left).unwrap();
    assert_eq!(old.status, "interrupted", "{runs:?}");
    assert!(old.error.as_deref().unwrap().contains("stopped before"));
}

fn events_sync(name: &str, id: Option<&str>) -> String {
    format!(
        "  {name}:
{id}    warehouse: pg
    model: {{table: \"{{s}}.ev\"}}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: id
    customer_id: who
    event_name: name
",
        id = id.map(|i| format!("    id: {i}\n")).unwrap_or_default()
    )
}

#[tokio::test]
async fn a_renamed_sync_with_an_id_keeps_its_state_and_its_dedup_ids() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.ev AS SELECT 'e' || g AS id, 'u' || g AS who, 'bought' AS name
         FROM generate_series(1, 6) g",
    )
    .await;
    let engine = h.engine(&events_sync("purchases", Some("purchases"))).await;
    assert_eq!(h.run(&engine, "purchases").await.rows_sent, 6);

    // Renamed, with its id: nothing is sent again.
    let engine = h.engine(&events_sync("orders", Some("purchases"))).await;
    assert!(engine.rename_warnings().await.unwrap().is_empty());
    let s = h.run(&engine, "orders").await;
    assert_eq!((s.rows_unchanged, s.rows_sent), (6, 0), "{s:?}");
    // A full resync sends the same dedup ids: Customer.io takes them as duplicates.
    let s = engine
        .run(
            "orders",
            sallyport_engine::RunOptions {
                full_resync: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.rows_sent, 6);
    let stats = h.stats().await;
    assert_eq!(
        (stats["events"].as_u64(), stats["duplicate_events"].as_u64()),
        (Some(6), Some(6)),
        "{stats}"
    );

    // Renamed without one: `check` says what would happen and how to keep the state.
    let engine = h.engine(&events_sync("sales", None)).await;
    let warnings = engine.rename_warnings().await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "sales");
    assert!(
        warnings[0].1.contains("`purchases`") && warnings[0].1.contains("id: <old name>"),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn two_syncs_cannot_share_a_state_id() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    let text = h.config_text(
        &format!("{}{}", events_sync("a", None), events_sync("b", Some("a"))),
        common::KEY,
    );
    let err = sallyport_config::Config::parse(&text, &h.config_path(), &|_| None).unwrap_err();
    assert!(
        err.to_string()
            .contains("state id `a` is also the state id of sync `a`"),
        "{err}"
    );
}

#[tokio::test]
async fn checks_and_previews_stop_a_statement_that_runs_too_long() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 3).await;
    let mut engine = h
        .engine(
            "  slow:
    warehouse: pg
    model: {sql: \"select u.*, pg_sleep(5) from {s}.users u\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
",
        )
        .await;
    engine.check_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = engine
        .preview("slow", 5, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("statement timeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn duplicate_keys_in_one_chunk_fail_once_on_a_postgres_state_store() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.state = sallyport_testkit::database().await;
    h.sql(
        "CREATE TABLE {s}.users AS SELECT g AS user_id, 'u' || g || '@x.com' AS email
         FROM generate_series(1, 10) g;
         INSERT INTO {s}.users VALUES (3, 'again@x.com'), (3, 'thrice@x.com');",
    )
    .await;
    let engine = h.engine(PEOPLE).await;
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "partial", "{s:?}");
    assert_eq!((s.rows_sent, s.rows_failed), (9, 3), "{s:?}");
    let failures = engine.state.failures("people").await.unwrap();
    assert_eq!(
        failures.len(),
        1,
        "one failure for the duplicated key: {failures:?}"
    );
}

#[tokio::test]
async fn a_stop_does_not_wait_out_a_long_retry() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.delivery = "{requests_per_second: 1000, max_attempts: 5}".into();
    users(&h, 50).await;
    let mut engine = h.engine(PEOPLE).await;
    engine.stop_grace = Duration::from_millis(500);
    // After the app's check, Customer.io answers every request with 429 and "come back in a
    // minute".
    h.faults(json!({"rate_429": 1.0, "retry_after": 60, "after_requests": 1}));
    let (stop, cancel) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let run = engine.run(
        "people",
        sallyport_engine::RunOptions {
            cancel: Some(cancel),
            ..Default::default()
        },
    );
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.send(true).unwrap();
    };
    let (s, ()) = tokio::join!(run, stopper);
    let s = s.unwrap();
    assert_eq!(s.status, "interrupted", "{s:?}");
    assert_eq!(s.rows_sent, 0, "nothing was delivered: {s:?}");
    // The retry would have waited a minute; the stop gave it half a second.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Nothing was committed: the next run (the app answering again) sends every row.
    h.faults(json!({}));
    let again = h.run(&engine, "people").await;
    assert_eq!((again.rows_new, again.rows_sent), (50, 50), "{again:?}");
}
