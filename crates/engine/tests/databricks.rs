//! A people sync and an event sync from Databricks (its stand-in, brickhouse, which
//! `scripts/test.sh` starts) to the sandbox: sent once, unchanged rows skipped, changes sent.

mod common;

use common::{Harness, KEY, SITE};
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::IdentifyBy;
use serde_json::{json, Value};

struct Databricks {
    host: String,
    warehouse: String,
}

impl Databricks {
    async fn sql(&self, statement: &str) {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/api/2.0/sql/statements", self.host))
            .bearer_auth("test-token")
            .json(&json!({"warehouse_id": self.warehouse, "statement": statement, "wait_timeout": "30s"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            answer["status"]["state"], "SUCCEEDED",
            "{statement}: {answer}"
        );
    }
}

async fn engine(h: &Harness, d: &Databricks, syncs: &str) -> Engine {
    let text = format!(
        "state: state.db\nwarehouses:\n  dbx: {{type: databricks, host: \"{}\", warehouse_id: {}, token: test-token, catalog: main, schema: default}}\napps:\n  cio:\n    type: customerio\n    site_id: {SITE}\n    api_key: {KEY}\n    track_url: {}\n    delivery: {{requests_per_second: 1000}}\nsyncs:\n{syncs}",
        d.host,
        d.warehouse,
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
async fn people_and_events_from_databricks_are_sent_once_and_then_only_changes() {
    let host = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_DATABRICKS_HOST",
        "the Databricks stand-in"
    );
    let warehouse = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_DATABRICKS_WAREHOUSE",
        "the Databricks stand-in's warehouse"
    );
    let d = Databricks { host, warehouse };
    let (people, events) = (
        sallyport_testkit::unique("people"),
        sallyport_testkit::unique("events"),
    );
    d.sql(&format!(
        "CREATE TABLE main.default.{people} (user_id BIGINT, email STRING, plan STRING, signed_up DATE) USING DELTA"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO main.default.{people} VALUES (1, 'a@x.com', 'pro', DATE '2024-01-02'), (2, 'b@x.com', 'free', DATE '1970-01-01')"
    ))
    .await;
    d.sql(&format!(
        "CREATE TABLE main.default.{events} (event_id STRING, user_id BIGINT, event STRING, amount INT, day DATE) USING DELTA"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO main.default.{events} VALUES ('e1', 1, 'purchase', 500, DATE '2024-01-02'), ('e2', 2, 'signup', 0, DATE '2024-01-03')"
    ))
    .await;
    let h = Harness::new(IdentifyBy::Id).await;
    let syncs = format!(
        "  people:\n    warehouse: dbx\n    model: {{table: main.default.{people}}}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n    identifier: id\n  events:\n    warehouse: dbx\n    model: {{table: main.default.{events}}}\n    app: cio\n    object: event\n    mode: insert\n    event_type: track\n    event_id: event_id\n    customer_id: user_id\n    timestamp: day\n    event_name: event\n"
    );
    let e = engine(&h, &d, &syncs).await;
    let first = h.run(&e, "people").await;
    assert_eq!((first.rows_sent, first.rows_failed), (2, 0), "{first:?}");
    let p = h.person("1").await.unwrap();
    assert_eq!(p["attributes"]["plan"], "pro");
    assert_eq!(p["attributes"]["signed_up"], 1704153600);
    let ev = h.run(&e, "events").await;
    assert_eq!((ev.rows_sent, ev.rows_failed), (2, 0), "{ev:?}");
    assert_eq!(h.stats().await["events"], 2);
    // Nothing changed: nothing is sent, people or events.
    let again = h.run(&e, "people").await;
    assert_eq!((again.rows_sent, again.rows_unchanged), (0, 2), "{again:?}");
    let ev = h.run(&e, "events").await;
    assert_eq!(ev.rows_sent, 0, "{ev:?}");
    // A change is sent, and only it.
    d.sql(&format!(
        "UPDATE main.default.{people} SET plan = 'enterprise' WHERE user_id = 2"
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
    d.sql(&format!("DROP TABLE main.default.{people}")).await;
    d.sql(&format!("DROP TABLE main.default.{events}")).await;
}
