//! The same calls against both backends: an SQLite file and a fresh PostgreSQL database.

use std::time::Duration;

use sallyport_config::{Secret, StateLocation};
use sallyport_state::{Commit, RunRecord, StateStore};

async fn exercise(store: StateStore) {
    // Locks: one holder at a time; an expired lease stops blocking.
    assert!(store
        .try_lock("people", "a", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(!store
        .try_lock("people", "b", Duration::from_secs(60))
        .await
        .unwrap());
    assert!(store
        .try_lock("events", "b", Duration::from_secs(60))
        .await
        .unwrap());
    store.unlock("people", "a").await.unwrap();
    assert!(store
        .try_lock("people", "b", Duration::from_millis(1))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .try_lock("people", "c", Duration::from_secs(60))
            .await
            .unwrap(),
        "a crashed holder's lease ran out"
    );

    let run = store.begin_run("people", false, None).await.unwrap();
    store
        .commit(
            "people",
            run,
            Commit {
                accepted: vec![("1".into(), 11), ("2".into(), 22), ("3".into(), u64::MAX)],
                cleared: vec![],
                failed: vec![("4".into(), "id is too long".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.count("people").await.unwrap(), 3);
    let fps = store
        .fingerprints("people", &["1", "3", "9"])
        .await
        .unwrap();
    assert_eq!(fps.len(), 2);
    assert_eq!(fps["1"], 11);
    assert_eq!(fps["3"], u64::MAX, "all 64 bits survive");
    assert!(
        store
            .fingerprints("other", &["1"])
            .await
            .unwrap()
            .is_empty(),
        "syncs do not share state"
    );

    store
        .finish_run(&RunRecord {
            id: run,
            sync: "people".into(),
            status: sallyport_state::RunStatus::Partial,
            finished_at: Some(sallyport_state::now_ms()),
            counts: sallyport_state::RowCounts {
                rows_read: 4,
                rows_new: 4,
                rows_sent: 3,
                rows_failed: 1,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();

    // A second run fails key 4 again: one more attempt.
    let run2 = store.begin_run("people", false, None).await.unwrap();
    let again = Commit {
        failed: vec![("4".into(), "still too long".into())],
        ..Default::default()
    };
    store.commit("people", run2, again.clone()).await.unwrap();
    store.commit("people", run2, again.clone()).await.unwrap();
    let f = store.failures("people").await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(
        (
            f[0].key.as_str(),
            f[0].reason.as_str(),
            f[0].attempts,
            f[0].run_id
        ),
        ("4", "still too long", 2, run2)
    );

    // Keys 2 and 4 leave the model.
    store.retain_begin("people").await.unwrap();
    // Another sync collecting its keys at the same time does not disturb these.
    store.retain_begin("events").await.unwrap();
    store
        .retain_add("people", &["1".into(), "3".into()])
        .await
        .unwrap();
    store.retain_add("events", &["2".into()]).await.unwrap();
    assert_eq!(store.retain_finish("people").await.unwrap(), 1);
    assert_eq!(store.count("people").await.unwrap(), 2);
    assert!(store.failures("people").await.unwrap().is_empty());

    // Stale failures are forgotten.
    store
        .commit(
            "people",
            run,
            Commit {
                failed: vec![("7".into(), "x".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store.forget_stale_failures("people", run2).await.unwrap();
    assert!(store.failures("people").await.unwrap().is_empty());

    let runs = store.runs(Some("people"), 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, run2, "newest first");
    assert_eq!(runs[1].status, "partial");
    assert_eq!(runs[1].rows_failed, 1);
    assert_eq!(store.runs(None, 1).await.unwrap().len(), 1);
    store.clear("people").await.unwrap();
    assert_eq!(store.count("people").await.unwrap(), 0);

    assert!(store.paused().await.unwrap().is_empty());
    store.set_paused("people", true).await.unwrap();
    store.set_paused("events", true).await.unwrap();
    store.set_paused("events", false).await.unwrap();
    assert_eq!(store.paused().await.unwrap(), vec!["people".to_string()]);

    store.put_entity("app", "cio", "{\"a\":1}").await.unwrap();
    store.put_entity("app", "cio", "{\"a\":2}").await.unwrap();
    store.put_entity("sync", "s", "{}").await.unwrap();
    assert_eq!(
        store.entities("app").await.unwrap(),
        vec![("cio".to_string(), "{\"a\":2}".to_string())]
    );
    assert!(store.delete_entity("app", "cio").await.unwrap());
    assert!(!store.delete_entity("app", "cio").await.unwrap());
    assert!(store.entities("app").await.unwrap().is_empty());

    removals(&store).await;
    workers(&store).await;
}

/// Workers' heartbeats, and the worker each run names.
async fn workers(store: &StateStore) {
    let w = sallyport_state::WorkerRecord {
        id: "host-1-ab12".into(),
        host: "host".into(),
        pid: 1,
        started_at: 5,
        running: vec!["people".into()],
        ..Default::default()
    };
    store.worker_beat(&w).await.unwrap();
    let second = sallyport_state::WorkerRecord {
        id: "host-2-cd34".into(),
        stopping: true,
        ..w.clone()
    };
    store.worker_beat(&second).await.unwrap();
    let seen = store.workers().await.unwrap();
    assert_eq!(seen.len(), 2);
    let first = seen.iter().find(|x| x.id == w.id).unwrap();
    assert_eq!(first.running, vec!["people".to_string()]);
    assert!(
        first.heartbeat_at > 5,
        "the beat is dated by the store's call"
    );
    assert!(seen.iter().any(|x| x.id == second.id && x.stopping));
    store.worker_gone(&second.id).await.unwrap();

    // A run's changes, a page at a time; only the last `keep_runs` runs keep theirs.
    for run in 1..=3 {
        store
            .changes_add(
                "people",
                run,
                &[
                    ("b".into(), "changed"),
                    ("a".into(), "added"),
                    ("c".into(), "removed"),
                ],
                2,
            )
            .await
            .unwrap();
    }
    assert!(store
        .changes("people", 1, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.changes("people", 3, Some("a"), 1).await.unwrap(),
        vec![("b".to_string(), "changed".to_string())]
    );
    assert_eq!(store.changes("people", 2, None, 10).await.unwrap().len(), 3);

    // Inspector entries: the last `keep` of each sync, the newest first.
    let entries: Vec<(String, i64, String)> = (1..=5)
        .map(|i| ("people".to_string(), i, format!("{{\"n\":{i}}}")))
        .chain([("events".to_string(), 1, "{}".to_string())])
        .collect();
    store.inspected_add(&entries, 3).await.unwrap();
    assert_eq!(
        store.inspected("people").await.unwrap(),
        vec!["{\"n\":5}", "{\"n\":4}", "{\"n\":3}"]
    );
    assert_eq!(store.inspected("events").await.unwrap().len(), 1);

    // An incident opens once and closes once, whoever asks.
    let i = sallyport_state::Incident {
        alert: "ops".into(),
        kind: "run_failed".into(),
        sync: "people".into(),
        opened_at: 7,
        message: "people: the run failed".into(),
    };
    assert!(store.incident_open(&i).await.unwrap());
    assert!(!store.incident_open(&i).await.unwrap());
    assert_eq!(store.incidents().await.unwrap(), vec![i.clone()]);
    assert!(store
        .incident_close("ops", "run_failed", "people")
        .await
        .unwrap());
    assert!(!store
        .incident_close("ops", "run_failed", "people")
        .await
        .unwrap());
    assert!(store.incidents().await.unwrap().is_empty());
    assert_eq!(store.workers().await.unwrap().len(), 1);

    let run = store.begin_run("people", false, Some(&w.id)).await.unwrap();
    let runs = store.runs(Some("people"), 1).await.unwrap();
    assert_eq!(runs[0].id, run);
    assert_eq!(runs[0].worker.as_deref(), Some("host-1-ab12"));
}

/// Notes beside keys, keys that left the model, removals, and keys compared after folding.
async fn removals(store: &StateStore) {
    let run = store.begin_run("devices", false, None).await.unwrap();
    let accepted: Vec<(String, u64)> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| (k.to_string(), 1))
        .collect();
    store
        .commit(
            "devices",
            run,
            Commit {
                accepted,
                noted: vec![("b".into(), "person-7".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let prev = store.previous("devices", &["a", "b", "z"]).await.unwrap();
    assert_eq!(prev.len(), 2);
    assert_eq!(prev["a"], (1, None));
    assert_eq!(prev["b"], (1, Some("person-7".to_string())));

    // The model now has a and c: b and d left it, listed in key order, in pages.
    store.retain_begin("devices#p").await.unwrap();
    store
        .retain_add("devices#p", &["a".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(store.absent_count("devices", "devices#p").await.unwrap(), 2);
    let first = store.absent("devices", "devices#p", "", 1).await.unwrap();
    assert_eq!(first, vec![("b".to_string(), Some("person-7".to_string()))]);
    let next = store.absent("devices", "devices#p", "b", 10).await.unwrap();
    assert_eq!(next, vec![("d".to_string(), None)]);

    // b's removal is accepted; d's failed (and stays, to be tried again).
    store
        .commit(
            "devices",
            run,
            Commit {
                removed: vec!["b".into()],
                failed: vec![("d".into(), "refused".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.count("devices").await.unwrap(), 3);
    assert_eq!(store.absent_count("devices", "devices#p").await.unwrap(), 1);

    // Keys that compare equal (emails in any case) are found with how each was written.
    store.seen_reset("s").await.unwrap();
    store
        .seen_add(
            "s",
            &[
                ("jane@x.com".into(), "Jane@X.com".into()),
                ("bob@x.com".into(), "bob@x.com".into()),
                ("jane@x.com".into(), "jane@x.com".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.seen_duplicates("s").await.unwrap(),
        vec![(
            "jane@x.com".to_string(),
            vec!["Jane@X.com".to_string(), "jane@x.com".to_string()]
        )]
    );
}

#[tokio::test]
async fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&StateLocation::Sqlite(dir.path().join("sub/state.db")))
        .await
        .unwrap();
    exercise(store).await;
}

#[tokio::test]
async fn postgres() {
    sallyport_testkit::needs_postgres!();
    let url = sallyport_testkit::database().await;
    let store = StateStore::open(&StateLocation::Postgres(Secret::new(url.clone())))
        .await
        .unwrap();
    exercise(store).await;
    // Reopening an existing store is fine.
    StateStore::open(&StateLocation::Postgres(Secret::new(url)))
        .await
        .unwrap();
}

/// A store made by an earlier version (its run history without the worker and the stage
/// times) gains the columns when opened, and keeps its runs.
#[tokio::test]
async fn an_earlier_run_history_gains_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, sync TEXT NOT NULL,
            status TEXT NOT NULL, started_at BIGINT NOT NULL, finished_at BIGINT,
            full_resync BOOLEAN NOT NULL, rows_read BIGINT NOT NULL DEFAULT 0,
            rows_new BIGINT NOT NULL DEFAULT 0, rows_changed BIGINT NOT NULL DEFAULT 0,
            rows_unchanged BIGINT NOT NULL DEFAULT 0, rows_sent BIGINT NOT NULL DEFAULT 0,
            rows_failed BIGINT NOT NULL DEFAULT 0, rows_removed BIGINT NOT NULL DEFAULT 0,
            error TEXT);
         INSERT INTO runs (sync, status, started_at, finished_at, full_resync, rows_sent)
            VALUES ('people', 'succeeded', 1, 2, 0, 7);",
    )
    .unwrap();
    drop(conn);
    let store = StateStore::open(&StateLocation::Sqlite(path))
        .await
        .unwrap();
    let runs = store.runs(Some("people"), 5).await.unwrap();
    assert_eq!(runs[0].rows_sent, 7);
    assert_eq!(
        (runs[0].worker.as_deref(), runs[0].stages.read_ms),
        (None, 0)
    );
    let id = store.begin_run("people", false, Some("w")).await.unwrap();
    store
        .finish_run(&RunRecord {
            id,
            stages: sallyport_state::StageTimes {
                deliver_ms: 9,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.runs(Some("people"), 1).await.unwrap()[0]
            .stages
            .deliver_ms,
        9
    );
}
