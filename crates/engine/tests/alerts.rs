//! Alerts against a local HTTP receiver: each of the four kinds fires once per incident and
//! once when it resolves, in the generic JSON shape and in Slack's incoming-webhook shape.

mod common;

use std::sync::{Arc, Mutex};

use common::Harness;
use sallyport_engine::RunOptions;
use sallyport_sandbox::IdentifyBy;
use serde_json::Value;

type Got = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on a free port: every JSON body posted to `/{name}`, in order.
async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .route(
            "/{name}",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Got>,
                 axum::extract::Path(name): axum::extract::Path<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    got.lock().unwrap().push((name, body));
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// What arrived since the last look: (webhook, kind, state) for JSON bodies, (webhook, text)
/// for Slack's.
fn take(got: &Got) -> Vec<(String, Value)> {
    std::mem::take(&mut *got.lock().unwrap())
}

fn kinds(messages: &[(String, Value)]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|(_, b)| {
            (
                b["kind"].as_str().unwrap_or_default().to_string(),
                b["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_alert_fires_once_and_resolves_once() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.users AS SELECT g::text AS user_id, 'Name' || g AS name FROM generate_series(1, 20) g;
         CREATE TABLE {s}.vol AS SELECT 'v' || g AS id, 0 AS n FROM generate_series(1, 100) g;",
    )
    .await;
    let (url, got) = receiver().await;
    let syncs = format!(
        "  people: {{warehouse: pg, model: {{table: \"{{s}}.users\"}}, app: cio, object: person, mode: upsert, primary_key: user_id}}
  vol: {{warehouse: pg, model: {{table: \"{{s}}.vol\"}}, app: cio, object: person, mode: upsert, primary_key: id}}
alerts:
  - name: ops
    webhook: \"{url}/ops\"
    syncs: [people]
    when: {{run_failed: true, rows_failed: 5}}
  - name: volume
    webhook: \"{url}/volume\"
    format: slack
    syncs: [vol]
    when: {{rows_sent_deviates: 3, not_succeeded_for: 1s}}
"
    );
    let engine = h.engine(&syncs).await;
    let run = |name: &'static str| {
        let engine = &engine;
        async move { engine.run(name, RunOptions::default()).await }
    };

    // A run that succeeds tells nothing.
    assert_eq!(run("people").await.unwrap().rows_sent, 20);
    assert!(take(&got).is_empty());

    // run_failed: fires once however many runs fail, and resolves once.
    h.sql("ALTER TABLE {s}.users RENAME TO users_gone").await;
    let _ = run("people").await;
    let _ = run("people").await;
    let fired = take(&got);
    assert_eq!(kinds(&fired), [("run_failed".into(), "firing".into())]);
    let body = &fired[0].1;
    assert_eq!(fired[0].0, "ops");
    assert_eq!(body["alert"], "ops");
    assert_eq!(body["sync"], "people");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("people: the run failed"),
        "{body}"
    );
    assert_eq!(
        engine.state.incidents().await.unwrap().len(),
        1,
        "the incident is open in the state store"
    );
    h.sql("ALTER TABLE {s}.users_gone RENAME TO users").await;
    run("people").await.unwrap();
    assert_eq!(
        kinds(&take(&got)),
        [("run_failed".into(), "resolved".into())]
    );

    // rows_failed: 10 rows with ids over Customer.io's limit, above the alert's 5.
    h.sql(
        "INSERT INTO {s}.users SELECT repeat('x', 160) || g, 'Long' FROM generate_series(1, 10) g",
    )
    .await;
    assert_eq!(run("people").await.unwrap().rows_failed, 10);
    assert_eq!(run("people").await.unwrap().rows_failed, 10);
    let fired = take(&got);
    assert_eq!(kinds(&fired), [("rows_failed".into(), "firing".into())]);
    let message = fired[0].1["message"].as_str().unwrap();
    assert!(message.contains("10 of 30 rows failed"), "{message}");
    h.sql("DELETE FROM {s}.users WHERE name = 'Long'").await;
    run("people").await.unwrap();
    assert_eq!(
        kinds(&take(&got)),
        [("rows_failed".into(), "resolved".into())]
    );

    // rows_sent_deviates: 100, 10, 10, 10 sent; then 60 (above 3× the median of 10); then 10.
    let bump = |n: i32| {
        let h = &h;
        async move {
            h.sql(&format!(
                "UPDATE {{s}}.vol SET n = n + 1 WHERE substr(id, 2)::int <= {n}"
            ))
            .await
        }
    };
    assert_eq!(run("vol").await.unwrap().rows_sent, 100);
    for _ in 0..3 {
        bump(10).await;
        assert_eq!(run("vol").await.unwrap().rows_sent, 10);
    }
    assert!(take(&got).is_empty(), "within 3× of the median");
    bump(60).await;
    assert_eq!(run("vol").await.unwrap().rows_sent, 60);
    let fired = take(&got);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].0, "volume");
    let text = fired[0].1["text"].as_str().expect("Slack's shape: text");
    assert!(
        text.contains("*Firing*") && text.contains("60 rows sent"),
        "{text}"
    );
    assert!(text.contains("median of 10"), "{text}");
    bump(10).await;
    run("vol").await.unwrap();
    let resolved = take(&got);
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].1["text"]
        .as_str()
        .unwrap()
        .contains("*Resolved*"));

    // not_succeeded_for: 1s after the last success, one incident however often it is checked;
    // the next success resolves it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(engine.alert_not_succeeded().await, 1);
    assert_eq!(engine.alert_not_succeeded().await, 0);
    let fired = take(&got);
    assert_eq!(fired.len(), 1);
    let text = fired[0].1["text"].as_str().unwrap();
    assert!(text.contains("vol: no successful run for"), "{text}");
    run("vol").await.unwrap();
    let resolved = take(&got);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert!(resolved[0].1["text"]
        .as_str()
        .unwrap()
        .contains("vol: succeeded"));
    assert!(engine.state.incidents().await.unwrap().is_empty());

    // The test message that the UI and the API send.
    engine.alert_test("ops").await.unwrap();
    assert_eq!(kinds(&take(&got)), [("test".into(), "test".into())]);
}
