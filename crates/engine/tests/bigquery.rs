//! A people sync and an event sync from BigQuery (its stand-in, crucible, which
//! `scripts/test.sh` starts) to the sandbox: sent once, unchanged rows skipped, changes sent.

mod common;

use common::{Harness, KEY, SITE};
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::IdentifyBy;
use serde_json::{json, Value};

struct BigQuery {
    endpoint: String,
    project: String,
}

impl BigQuery {
    async fn sql(&self, sql: &str) {
        let answer: Value = reqwest::Client::new()
            .post(format!(
                "{}/bigquery/v2/projects/{}/queries",
                self.endpoint, self.project
            ))
            .json(&json!({"query": sql, "useLegacySql": false}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["jobComplete"], true, "{sql}: {answer}");
    }
}

async fn engine(h: &Harness, d: &BigQuery, syncs: &str) -> Engine {
    let text = format!(
        "state: state.db\nwarehouses:\n  bq: {{type: bigquery, project: {}, endpoint: \"{}\"}}\napps:\n  cio:\n    type: customerio\n    site_id: {SITE}\n    api_key: {KEY}\n    track_url: {}\n    delivery: {{requests_per_second: 1000}}\nsyncs:\n{syncs}",
        d.project,
        d.endpoint,
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
async fn people_and_events_from_bigquery_are_sent_once_and_then_only_changes() {
    let endpoint = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_ENDPOINT",
        "the BigQuery stand-in"
    );
    let project = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_PROJECT",
        "the BigQuery stand-in"
    );
    let d = BigQuery { endpoint, project };
    let ds = sallyport_testkit::unique("ds");
    reqwest::Client::new()
        .post(format!(
            "{}/bigquery/v2/projects/{}/datasets",
            d.endpoint, d.project
        ))
        .json(&json!({"datasetReference": {"projectId": d.project, "datasetId": ds}}))
        .send()
        .await
        .unwrap();
    d.sql(&format!(
        "CREATE TABLE {ds}.people (user_id INT64, email STRING, plan STRING, signed_up TIMESTAMP, tags ARRAY<STRING>)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {ds}.people VALUES (1, 'a@x.com', 'pro', TIMESTAMP '2024-01-02 03:04:05+00', ['beta']), (2, 'b@x.com', 'free', NULL, [])"
    ))
    .await;
    d.sql(&format!(
        "CREATE TABLE {ds}.events (event_id STRING, user_id INT64, event STRING, amount INT64, at TIMESTAMP)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {ds}.events VALUES ('e1', 1, 'purchase', 500, TIMESTAMP '2024-01-02 00:00:00+00'), ('e2', 2, 'signup', 0, TIMESTAMP '2024-01-03 00:00:00+00')"
    ))
    .await;
    let h = Harness::new(IdentifyBy::Id).await;
    let syncs = format!(
        "  people:\n    warehouse: bq\n    model: {{table: {ds}.people}}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n    identifier: id\n  events:\n    warehouse: bq\n    model: {{table: {ds}.events}}\n    app: cio\n    object: event\n    mode: insert\n    event_type: track\n    event_id: event_id\n    customer_id: user_id\n    timestamp: at\n    event_name: event\n"
    );
    let e = engine(&h, &d, &syncs).await;
    let first = h.run(&e, "people").await;
    assert_eq!((first.rows_sent, first.rows_failed), (2, 0), "{first:?}");
    let p = h.person("1").await.unwrap();
    assert_eq!(p["attributes"]["plan"], "pro");
    assert_eq!(p["attributes"]["signed_up"], 1704164645);
    assert_eq!(p["attributes"]["tags"], json!(["beta"]));
    let ev = h.run(&e, "events").await;
    assert_eq!((ev.rows_sent, ev.rows_failed), (2, 0), "{ev:?}");
    assert_eq!(h.stats().await["events"], 2);
    let again = h.run(&e, "people").await;
    assert_eq!((again.rows_sent, again.rows_unchanged), (0, 2), "{again:?}");
    let ev = h.run(&e, "events").await;
    assert_eq!(ev.rows_sent, 0, "{ev:?}");
    // (The stand-in has no UPDATE: the table is made again with the change.)
    d.sql(&format!(
        "CREATE OR REPLACE TABLE {ds}.people AS SELECT user_id, email, IF(user_id = 2, 'enterprise', plan) AS plan, signed_up, tags FROM {ds}.people"
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

/// The same with change detection in BigQuery: only new and changed rows leave it, the keys
/// that left are found there, events go once, and switching back to local resends nothing.
#[tokio::test]
async fn change_detection_in_bigquery_reads_only_what_changed() {
    let endpoint = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_ENDPOINT",
        "the BigQuery stand-in"
    );
    let project = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_PROJECT",
        "the BigQuery stand-in"
    );
    let d = BigQuery { endpoint, project };
    let ds = sallyport_testkit::unique("ds");
    reqwest::Client::new()
        .post(format!(
            "{}/bigquery/v2/projects/{}/datasets",
            d.endpoint, d.project
        ))
        .json(&json!({"datasetReference": {"projectId": d.project, "datasetId": ds}}))
        .send()
        .await
        .unwrap();
    d.sql(&format!(
        "CREATE TABLE {ds}.people (user_id INT64, plan STRING, vip BOOL, tags ARRAY<STRING>)"
    ))
    .await;
    let rows: Vec<String> = (1..=20)
        .map(|i| format!("({i}, 'free', FALSE, ['t{i}'])"))
        .collect();
    d.sql(&format!(
        "INSERT INTO {ds}.people VALUES {}",
        rows.join(", ")
    ))
    .await;
    d.sql(&format!(
        "CREATE TABLE {ds}.events (event_id STRING, user_id INT64, event STRING, at TIMESTAMP)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {ds}.events VALUES ('e1', 1, 'purchase', TIMESTAMP '2024-01-02 00:00:00+00'), ('e2', 2, 'signup', TIMESTAMP '2024-01-03 00:00:00+00')"
    ))
    .await;
    let h = Harness::new(IdentifyBy::Id).await;
    let syncs = |mode: &str| {
        format!("  people:\n    warehouse: bq\n    model: {{table: {ds}.people}}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n    on_removal: delete\n    max_removals: 5\n    change_detection: {mode}\n  events:\n    warehouse: bq\n    model: {{table: {ds}.events}}\n    app: cio\n    object: event\n    mode: insert\n    event_type: track\n    event_id: event_id\n    customer_id: user_id\n    timestamp: at\n    event_name: event\n    change_detection: {mode}\n")
    };
    // Its own dataset for the snapshots: tests share the stand-in.
    let engine = |mode: &str| {
        let text = format!(
            "state: state.db\nwarehouses:\n  bq: {{type: bigquery, project: {}, endpoint: \"{}\", sallyport_schema: {ds}_sp}}\napps:\n  cio:\n    type: customerio\n    site_id: {SITE}\n    api_key: {KEY}\n    track_url: {}\n    delivery: {{requests_per_second: 1000}}\nsyncs:\n{}",
            d.project,
            d.endpoint,
            h.sandbox.url(),
            syncs(mode)
        );
        std::fs::write(h.config_path(), &text).unwrap();
        Config::parse(&text, &h.config_path(), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    };
    let e = Engine::open(engine("warehouse")).await.unwrap();
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

    // One changed (a boolean and an array), one gone, one new.
    // (The stand-in has neither UPDATE nor DELETE: one MERGE makes the three changes.)
    d.sql(&format!(
        "MERGE {ds}.people AS t USING (SELECT * FROM UNNEST([STRUCT(3 AS user_id, 'free' AS plan, TRUE AS vip, ['changed'] AS tags, FALSE AS gone), STRUCT(4, 'free', FALSE, ['t4'], TRUE), STRUCT(21, 'pro', TRUE, ['new'], FALSE)])) AS s ON t.user_id = s.user_id
         WHEN MATCHED AND s.gone THEN DELETE
         WHEN MATCHED THEN UPDATE SET vip = s.vip, tags = s.tags
         WHEN NOT MATCHED THEN INSERT (user_id, plan, vip, tags) VALUES (s.user_id, s.plan, s.vip, s.tags)"
    ))
    .await;
    d.sql(&format!(
        "INSERT INTO {ds}.events VALUES ('e3', 3, 'purchase', TIMESTAMP '2024-01-04 00:00:00+00')"
    ))
    .await;
    let s = h.run(&e, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_new, s.rows_changed, s.rows_removed),
        (2, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!(
        h.person("3").await.unwrap()["attributes"]["tags"],
        json!(["changed"])
    );
    assert!(h.person("4").await.is_none(), "deleted in Customer.io");
    let ev = h.run(&e, "events").await;
    assert_eq!((ev.rows_read, ev.rows_sent), (1, 1), "{ev:?}");
    assert_eq!(h.stats().await["events"], 3);

    // Back to local: the snapshot comes into the state store; nothing is resent.
    let local = Engine::open(engine("local")).await.unwrap();
    let s = h.run(&local, "people").await;
    assert_eq!((s.rows_unchanged, s.rows_sent), (20, 0), "{s:?}");
    assert_eq!(local.state.count("people").await.unwrap(), 20);
}
