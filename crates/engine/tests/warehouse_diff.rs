//! Change detection in the warehouse (`change_detection: warehouse`) over the real PostgreSQL:
//! new, changed, removed and duplicate keys found by the warehouse, only they read out; failed
//! rows sent again; removals behind the guard; switching modes without a resend; the missing
//! grant named by `check`.

mod common;

use common::Harness;
use sallyport_engine::{RunOptions, RunSummary};
use sallyport_sandbox::IdentifyBy;
use serde_json::json;

fn people(mode: &str, extra: &str) -> String {
    format!(
        "  people:
    warehouse: pg
    model: {{table: \"{{s}}.users\"}}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    change_detection: {mode}
{extra}"
    )
}

async fn users(h: &Harness, n: i64) {
    h.sql(&format!(
        "CREATE TABLE {{s}}.users (user_id bigint, name text, plan text);
         INSERT INTO {{s}}.users SELECT g, 'Name' || g, 'free' FROM generate_series(1, {n}) g;"
    ))
    .await;
}

fn counts(s: &RunSummary) -> (u64, u64, u64, u64, u64, u64) {
    (
        s.rows_read,
        s.rows_new,
        s.rows_changed,
        s.rows_sent,
        s.rows_failed,
        s.rows_removed,
    )
}

async fn snapshot_keys(h: &Harness) -> i64 {
    let row =
        h.pg.query_one(
            &format!(
                "SELECT count(*) FROM {}.{}",
                &*h.schema,
                sallyport_sources::Snapshot {
                    schema: h.schema.to_string(),
                    sync: "people".into()
                }
                .table()
            ),
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn only_what_changed_leaves_the_warehouse() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 50).await;
    let engine = h.engine(&people("warehouse", "")).await;

    let s = h.run(&engine, "people").await;
    assert_eq!(counts(&s), (50, 50, 0, 50, 0, 0), "{s:?}");
    assert_eq!(snapshot_keys(&h).await, 50);
    assert_eq!(
        engine.state.count("people").await.unwrap(),
        0,
        "the state store keeps no row"
    );

    // Nothing changed: nothing is read out.
    let s = h.run(&engine, "people").await;
    assert_eq!(counts(&s), (0, 0, 0, 0, 0, 0), "{s:?}");

    // 3 changed, 2 new, 1 gone, 1 key doubled: only those rows leave the warehouse.
    h.sql(
        "UPDATE {s}.users SET plan = 'pro' WHERE user_id IN (1, 2, 3);
         INSERT INTO {s}.users VALUES (51, 'Name51', 'free'), (52, 'Name52', 'free'), (10, 'Other', 'free');
         DELETE FROM {s}.users WHERE user_id = 50;",
    )
    .await;
    let p = engine.preview("people", 10, false).await.unwrap();
    // The doubled key fails; its row that did not change is not read out (nor sent).
    assert_eq!((p.rows_new, p.rows_changed, p.rows_failed), (2, 3, 1));
    let s = h.run(&engine, "people").await;
    assert_eq!(
        counts(&s),
        (6, 2, 3, 5, 1, 1),
        "3 changed + 2 new + the new row of key 10, and key 50 forgotten: {s:?}"
    );
    assert_eq!(h.person("1").await.unwrap()["attributes"]["plan"], "pro");
    let f = engine.state.failures("people").await.unwrap();
    assert_eq!(f.len(), 1);
    assert!(
        f[0].reason.contains("is in more than one row"),
        "{}",
        f[0].reason
    );
    assert_eq!(snapshot_keys(&h).await, 51, "1..52 without 50");

    // A failed row is not in the snapshot: it is read and tried again until it goes.
    h.sql("DELETE FROM {s}.users WHERE name = 'Other'; UPDATE {s}.users SET name = repeat('x', 1001) WHERE user_id = 5;")
        .await;
    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_sent, s.rows_failed),
        (1, 0, 1),
        "key 10's remaining row did not change: {s:?}"
    );
    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_failed),
        (1, 1),
        "the failed row again: {s:?}"
    );
    h.sql("UPDATE {s}.users SET name = 'Five' WHERE user_id = 5;")
        .await;
    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_sent, s.rows_failed),
        (1, 1, 0),
        "{s:?}"
    );
    assert!(engine.state.failures("people").await.unwrap().is_empty());

    // A full resync reads and sends everything.
    let s = engine
        .run(
            "people",
            RunOptions {
                full_resync: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((s.rows_read, s.rows_sent), (51, 51), "{s:?}");
    assert_eq!(h.run(&engine, "people").await.rows_read, 0);
}

#[tokio::test]
async fn removals_found_in_the_warehouse_keep_the_guard() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 40).await;
    let engine = h
        .engine(&people("warehouse", "    on_removal: delete\n"))
        .await;
    assert_eq!(h.run(&engine, "people").await.rows_sent, 40);
    h.sql("DELETE FROM {s}.users WHERE user_id <= 4").await;
    let p = engine.preview("people", 10, false).await.unwrap();
    assert_eq!(p.rows_to_remove, 4);
    assert_eq!(
        p.removals[0].body,
        json!({"type": "person", "identifiers": {"id": "1"}, "action": "delete"})
    );
    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.status.as_str(), s.rows_removed),
        ("succeeded", 4),
        "{s:?}"
    );
    assert!(h.person("1").await.is_none());
    assert_eq!(snapshot_keys(&h).await, 36);
    h.sql("DELETE FROM {s}.users WHERE user_id <= 10").await;
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "failed");
    assert!(s
        .error
        .unwrap()
        .contains("6 rows left the model since the last run and would be removed (delete), more than max_removals allows (10% of 36 synced = 3)"));
    assert!(h.person("5").await.is_some());
    let s = engine
        .run(
            "people",
            RunOptions {
                allow_removals: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.rows_removed, 6);
    assert_eq!(snapshot_keys(&h).await, 30);
}

#[tokio::test]
async fn switching_modes_carries_the_state_over_without_a_resend() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 30).await;
    let local = h.engine(&people("local", "")).await;
    assert_eq!(h.run(&local, "people").await.rows_sent, 30);
    h.sql("UPDATE {s}.users SET plan = 'pro' WHERE user_id = 7")
        .await;

    // Into the warehouse: the first run reads the rows once, sends only the changed one, and
    // the state moves into the snapshot.
    let warehouse = h.engine(&people("warehouse", "")).await;
    let s = h.run(&warehouse, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_changed, s.rows_sent),
        (30, 1, 1),
        "{s:?}"
    );
    assert_eq!(warehouse.state.count("people").await.unwrap(), 0);
    assert_eq!(snapshot_keys(&h).await, 30);
    assert_eq!(h.run(&warehouse, "people").await.rows_read, 0);

    // And back: the snapshot comes back into the state store, and nothing is resent.
    h.sql("UPDATE {s}.users SET plan = 'team' WHERE user_id = 8")
        .await;
    let local = h.engine(&people("local", "")).await;
    let s = h.run(&local, "people").await;
    assert_eq!((s.rows_unchanged, s.rows_sent), (29, 1), "{s:?}");
    assert_eq!(local.state.count("people").await.unwrap(), 30);
    let gone =
        h.pg.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&h.schema.to_string()],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        gone, 1,
        "only the users table is left: the snapshot was dropped"
    );
}

#[tokio::test]
async fn check_names_the_missing_grant() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    let role = format!("{}_nogrant", &*h.schema);
    h.sql(&format!("CREATE ROLE \"{role}\" LOGIN")).await;
    let url = sallyport_testkit::pg_url().replacen("://postgres@", &format!("://{role}@"), 1);
    let missing = format!("{}_sp", &*h.schema);
    let syncs = "  people:
    warehouse: other
    model: {sql: \"select 1 as user_id\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    change_detection: warehouse
";
    let text = h
        .config_text(syncs, common::KEY)
        .replace(
            "warehouses:\n",
            &format!("warehouses:\n  other: {{type: postgres, url: \"{url}\", sallyport_schema: \"{missing}\"}}\n"),
        );
    std::fs::write(h.config_path(), &text).unwrap();
    let config = sallyport_config::Config::parse(&text, &h.config_path(), &|_| None).unwrap();
    let engine = sallyport_engine::Engine::open(config).await.unwrap();
    let e = engine.check_sync("people").await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("needs the schema `{missing}`, which does not exist, and user `{role}` may not create it"))
            && e.contains("GRANT CREATE ON DATABASE"),
        "{e}"
    );
    h.sql(&format!("CREATE SCHEMA \"{missing}\"")).await;
    let e = engine.check_sync("people").await.unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "GRANT USAGE, CREATE ON SCHEMA \"{missing}\" TO \"{role}\""
        )),
        "{e}"
    );
    h.sql(&format!(
        "GRANT USAGE, CREATE ON SCHEMA \"{missing}\" TO \"{role}\""
    ))
    .await;
    let ok = engine.check_sync("people").await.unwrap();
    assert!(ok.contains("the schema's grants are in place"), "{ok}");
    h.sql(&format!(
        "DROP SCHEMA \"{missing}\" CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
    ))
    .await;

    // Where it cannot be hosted, the config says so at its line.
    let mysql = "state: s.db\nwarehouses:\n  m: {type: mysql, url: \"mysql://root@127.0.0.1/x\"}\napps:\n  cio: {type: customerio, site_id: a, api_key: b}\nsyncs:\n  p:\n    warehouse: m\n    model: {table: t}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: id\n    change_detection: warehouse\n";
    let e = sallyport_config::Config::parse(mysql, &h.config_path(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":14:")
            && e.contains(
                "change_detection: warehouse is available on postgres warehouses for now"
            ),
        "{e}"
    );
}
