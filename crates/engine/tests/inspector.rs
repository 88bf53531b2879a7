//! `inspector: persist`: the API inspector's requests go to the state store, so a process that
//! did not make them (another worker, the server after a CLI run) shows them; each sync keeps
//! its last 100, with no secret in them.

mod common;

use common::{Harness, KEY};
use sallyport_sandbox::IdentifyBy;

#[tokio::test(flavor = "multi_thread")]
async fn persisted_requests_are_seen_by_another_process() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.state = format!("\"{}\"", sallyport_testkit::database().await);
    h.delivery = "{requests_per_second: 5000, batch_bytes: 40KB}".into();
    h.sql("CREATE TABLE {s}.users AS SELECT g AS user_id, 'Name ' || repeat('n', 400) || g AS name FROM generate_series(1, 12000) g")
        .await;
    let syncs = "  people: {warehouse: pg, model: {table: \"{s}.users\"}, app: cio, object: person, mode: upsert, primary_key: user_id}\ninspector: persist\n";
    let worker = h.engine(syncs).await;
    let summary = h.run(&worker, "people").await;
    assert!(summary.requests > 100, "{} requests", summary.requests);
    // The run's time, stage by stage, is in its history.
    let run = &worker.state.runs(Some("people"), 1).await.unwrap()[0];
    assert!(run.stages.deliver_ms > 0, "{:?}", run.stages);
    assert!(
        run.stages.read_ms + run.stages.map_ms + run.stages.compare_ms > 0,
        "{:?}",
        run.stages
    );

    // Another process over the same store: nothing in its memory, the run's requests in the store.
    let other = h.engine(syncs).await;
    assert!(other.inspector.requests("people").is_empty());
    let seen = other.requests("people").await.unwrap();
    assert_eq!(seen.len(), 100, "the last 100 are kept");
    assert!(
        seen.windows(2).all(|w| w[0].at >= w[1].at),
        "the newest first"
    );
    for r in &seen {
        assert_eq!(r.run_id, summary.run_id);
        assert_eq!((r.method.as_str(), r.status), ("POST", Some(200)));
        assert!(r.body.contains("Name "), "{}", r.body);
        assert!(!r.body.contains(KEY), "no secret: {}", r.body);
    }
}
