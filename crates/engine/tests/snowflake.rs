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
