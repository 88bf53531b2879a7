//! A people sync and an event sync from Snowflake (its stand-in, fakesnow, which
//! `scripts/test.sh` starts) to the sandbox: sent once, unchanged rows skipped, changes sent.

mod common;

use common::{Harness, KEY, SITE};
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::IdentifyBy;
use serde_json::{json, Value};

struct Snowflake {
    url: String,
    db: String,
}

impl Snowflake {
    async fn sql(&self, sql: &str) {
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{}/session/v1/login-request", self.url))
            .json(&json!({"data": {"ACCOUNT_NAME": "TEST", "LOGIN_NAME": "u", "PASSWORD": "p", "SESSION_PARAMETERS": {}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["data"]["token"].as_str().unwrap().to_string();
        let answer: Value = http
            .post(format!("{}/queries/v1/query-request", self.url))
            .header("Authorization", format!("Snowflake Token=\"{token}\""))
            .json(&json!({"sqlText": sql, "asyncExec": false, "sequenceId": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["success"], true, "{sql}: {answer}");
    }
}

async fn engine(h: &Harness, d: &Snowflake, syncs: &str) -> Engine {
    let text = format!(
        "state: state.db\nwarehouses:\n  snow: {{type: snowflake, account: test, user: sallyport, password: pw, warehouse: COMPUTE_WH, database: {}, schema: PUBLIC, url: \"{}\"}}\napps:\n  cio:\n    type: customerio\n    site_id: {SITE}\n    api_key: {KEY}\n    track_url: {}\n    delivery: {{requests_per_second: 1000}}\nsyncs:\n{syncs}",
        d.db,
        d.url,
        h.sandbox.url()
    );
    std::fs::write(h.config_path(), &text).unwrap();
    Engine::open(
        Config::parse(&text, &h.config_path(), &|_| None).unwrap_or_else(|e| panic!("{e}")),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn people_and_events_from_snowflake_are_sent_once_and_then_only_changes() {
    let url =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_SNOWFLAKE_URL", "the Snowflake stand-in");
    let db = sallyport_testkit::unique("db").to_ascii_uppercase();
    let d = Snowflake {
        url,
        db: db.clone(),
    };
    d.sql(&format!("CREATE DATABASE {db}")).await;
    d.sql(&format!("CREATE SCHEMA {db}.PUBLIC")).await;
    d.sql(&format!(
        "CREATE TABLE {db}.PUBLIC.PEOPLE (\"user_id\" NUMBER, \"email\" VARCHAR, \"plan\" VARCHAR, \"signed_up\" TIMESTAMP_NTZ, \"prefs\" VARIANT)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {db}.PUBLIC.PEOPLE SELECT 1, 'a@x.com', 'pro', '2024-01-02 03:04:05', PARSE_JSON('{{\"beta\": true}}') UNION ALL SELECT 2, 'b@x.com', 'free', NULL, NULL"
    ))
    .await;
    d.sql(&format!(
        "CREATE TABLE {db}.PUBLIC.EVENTS (\"event_id\" VARCHAR, \"user_id\" NUMBER, \"event\" VARCHAR, \"amount\" NUMBER(10,2), \"at\" TIMESTAMP_NTZ)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {db}.PUBLIC.EVENTS SELECT 'e1', 1, 'purchase', 5.00, '2024-01-02 00:00:00' UNION ALL SELECT 'e2', 2, 'signup', 0, '2024-01-03 00:00:00'"
    ))
    .await;
    let h = Harness::new(IdentifyBy::Id).await;
    let syncs = "  people:\n    warehouse: snow\n    model: {table: PEOPLE}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n    identifier: id\n  events:\n    warehouse: snow\n    model: {table: EVENTS}\n    app: cio\n    object: event\n    mode: insert\n    event_type: track\n    event_id: event_id\n    customer_id: user_id\n    timestamp: at\n    event_name: event\n";
    let e = engine(&h, &d, syncs).await;
    let first = h.run(&e, "people").await;
    assert_eq!((first.rows_sent, first.rows_failed), (2, 0), "{first:?}");
    let p = h.person("1").await.unwrap();
    assert_eq!(p["attributes"]["plan"], "pro");
    assert_eq!(p["attributes"]["signed_up"], 1704164645);
    assert_eq!(p["attributes"]["prefs"], json!({"beta": true}));
    let ev = h.run(&e, "events").await;
    assert_eq!((ev.rows_sent, ev.rows_failed), (2, 0), "{ev:?}");
    assert_eq!(h.stats().await["events"], 2);
    let again = h.run(&e, "people").await;
    assert_eq!((again.rows_sent, again.rows_unchanged), (0, 2), "{again:?}");
    let ev = h.run(&e, "events").await;
    assert_eq!(ev.rows_sent, 0, "{ev:?}");
    d.sql(&format!(
        "UPDATE {db}.PUBLIC.PEOPLE SET \"plan\" = 'enterprise' WHERE \"user_id\" = 2"
    ))
    .await;
    let changed = h.run(&e, "people").await;
    assert_eq!(
        (changed.rows_changed, changed.rows_sent),
        (1, 1),
        "{changed:?}"
    );
    assert_eq!(
        h.person("2").await.unwrap()["attributes"]["plan"],
        "enterprise"
    );
}

/// The same with change detection in Snowflake: only new and changed rows leave it, the keys
/// that left are found there, events go once, and switching back to local resends nothing.
#[tokio::test]
async fn change_detection_in_snowflake_reads_only_what_changed() {
    let url =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_SNOWFLAKE_URL", "the Snowflake stand-in");
    let db = sallyport_testkit::unique("db").to_ascii_uppercase();
    let d = Snowflake {
        url,
        db: db.clone(),
    };
    d.sql(&format!("CREATE DATABASE {db}")).await;
    d.sql(&format!("CREATE SCHEMA {db}.PUBLIC")).await;
    d.sql(&format!(
        "CREATE TABLE {db}.PUBLIC.PEOPLE (\"user_id\" NUMBER, \"plan\" VARCHAR, \"vip\" BOOLEAN, \"prefs\" VARIANT)"
    ))
    .await;
    let rows: Vec<String> = (1..=20)
        .map(|i| format!("SELECT {i}, 'free', FALSE, PARSE_JSON('{{\"n\": {i}}}')"))
        .collect();
    d.sql(&format!(
        "INSERT INTO {db}.PUBLIC.PEOPLE {}",
        rows.join(" UNION ALL ")
    ))
    .await;
    d.sql(&format!(
        "CREATE TABLE {db}.PUBLIC.EVENTS (\"event_id\" VARCHAR, \"user_id\" NUMBER, \"event\" VARCHAR, \"at\" TIMESTAMP_NTZ)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {db}.PUBLIC.EVENTS SELECT 'e1', 1, 'purchase', '2024-01-02 00:00:00' UNION ALL SELECT 'e2', 2, 'signup', '2024-01-03 00:00:00'"
    ))
    .await;
    let h = Harness::new(IdentifyBy::Id).await;
    let syncs = |mode: &str| {
        format!("  people:\n    warehouse: snow\n    model: {{table: PEOPLE}}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n    on_removal: delete\n    max_removals: 5\n    change_detection: {mode}\n  events:\n    warehouse: snow\n    model: {{table: EVENTS}}\n    app: cio\n    object: event\n    mode: insert\n    event_type: track\n    event_id: event_id\n    customer_id: user_id\n    timestamp: at\n    event_name: event\n    change_detection: {mode}\n")
    };
    let e = engine(&h, &d, &syncs("warehouse")).await;
    assert!(e
        .check_sync("people")
        .await
        .unwrap()
        .contains("grants are in place"));
    let first = h.run(&e, "people").await;
    assert_eq!((first.rows_read, first.rows_sent), (20, 20), "{first:?}");
    assert_eq!(
        e.state.count("people").await.unwrap(),
        0,
        "no row in the state store"
    );
    assert_eq!(h.run(&e, "events").await.rows_sent, 2);
    let again = h.run(&e, "people").await;
    assert_eq!((again.rows_read, again.rows_sent), (0, 0), "{again:?}");
    assert_eq!(h.run(&e, "events").await.rows_read, 0);

    // One changed (a boolean and a JSON value), one gone, one new.
    d.sql(&format!(
        "UPDATE {db}.PUBLIC.PEOPLE SET \"vip\" = TRUE, \"prefs\" = PARSE_JSON('{{\"n\": 0}}') WHERE \"user_id\" = 3"
    ))
    .await;
    d.sql(&format!(
        "DELETE FROM {db}.PUBLIC.PEOPLE WHERE \"user_id\" = 4"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {db}.PUBLIC.PEOPLE SELECT 21, 'pro', TRUE, NULL"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {db}.PUBLIC.EVENTS SELECT 'e3', 3, 'purchase', '2024-01-04 00:00:00'"
    ))
    .await;
    let s = h.run(&e, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_new, s.rows_changed, s.rows_removed),
        (2, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!(h.person("3").await.unwrap()["attributes"]["vip"], true);
    assert!(h.person("4").await.is_none(), "deleted in Customer.io");
    let ev = h.run(&e, "events").await;
    assert_eq!((ev.rows_read, ev.rows_sent), (1, 1), "{ev:?}");
    assert_eq!(h.stats().await["events"], 3);

    // Back to local: the snapshot comes into the state store; nothing is resent.
    let local = engine(&h, &d, &syncs("local")).await;
    let s = h.run(&local, "people").await;
    assert_eq!((s.rows_unchanged, s.rows_sent), (20, 0), "{s:?}");
    assert_eq!(local.state.count("people").await.unwrap(), 20);
}
