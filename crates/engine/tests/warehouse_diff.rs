//! Change detection in the warehouse (`change_detection: warehouse`) over the real PostgreSQL
//! and the real MariaDB: new, changed, removed and duplicate keys found by the warehouse, only
//! they read out; failed rows sent again; removals behind the guard; switching modes without a
//! resend; the missing grant named by `check`. Each case runs on both warehouses.

mod common;

use common::Harness;
use mysql_async::prelude::Queryable;
use sallyport_engine::{Engine, RunOptions, RunSummary};
use sallyport_sandbox::IdentifyBy;
use serde_json::json;

/// The warehouse a case runs on: the harness's PostgreSQL schema, or a MariaDB database of the
/// test's own (holding the model and the snapshot tables), dropped at the end.
struct W {
    h: Harness,
    /// MariaDB's URL and database, when the case runs there.
    my: Option<(String, String)>,
    /// Read as Redshift is (text results, Redshift's SQL), with PostgreSQL as the stand-in.
    redshift: bool,
}

impl W {
    async fn postgres() -> W {
        W {
            h: Harness::new(IdentifyBy::Id).await,
            my: None,
            redshift: false,
        }
    }

    async fn redshift() -> W {
        W {
            h: Harness::new(IdentifyBy::Id).await,
            my: None,
            redshift: true,
        }
    }

    async fn mysql(url: String) -> W {
        let db = sallyport_testkit::unique("wd");
        let mut c = mysql_async::Conn::from_url(&url).await.unwrap();
        c.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
        let _ = c.disconnect().await;
        W {
            h: Harness::new(IdentifyBy::Id).await,
            my: Some((url, db)),
            redshift: false,
        }
    }

    /// The schema (PostgreSQL) or database (MariaDB) of the model and the snapshots.
    fn schema(&self) -> String {
        match &self.my {
            Some((_, db)) => db.clone(),
            None => self.h.schema.to_string(),
        }
    }

    async fn sql(&self, sql: &str) {
        match &self.my {
            None => self.h.sql(sql).await,
            Some((url, db)) => {
                let sql = sql.replace("{s}", db);
                let mut c = mysql_async::Conn::from_url(url).await.unwrap();
                c.query_drop(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = c.disconnect().await;
            }
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{s}", &self.schema());
        match &self.my {
            None => self.h.pg.query_one(&sql, &[]).await.unwrap().get(0),
            Some((url, _)) => {
                let mut c = mysql_async::Conn::from_url(url).await.unwrap();
                let n: Option<i64> = c.query_first(&sql).await.unwrap();
                let _ = c.disconnect().await;
                n.unwrap()
            }
        }
    }

    fn config_text(&self, syncs: &str) -> String {
        let text = self.h.config_text(syncs, common::KEY);
        match &self.my {
            None if self.redshift => {
                let t = text.replace("  pg: {type: postgres", "  pg: {type: redshift");
                assert_ne!(t, text, "the warehouse is Redshift");
                t
            }
            None => text,
            Some((url, db)) => {
                text.lines()
                    .map(|l| {
                        if l.starts_with("  pg: {type: postgres") {
                            format!(
                                "  pg: {{type: mysql, url: \"{url}\", sallyport_schema: \"{db}\"}}"
                            )
                        } else {
                            l.replace(&format!("\"{}.", &*self.h.schema), &format!("\"{db}."))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n"
            }
        }
    }

    async fn engine(&self, syncs: &str) -> Engine {
        let text = self.config_text(syncs);
        std::fs::write(self.h.config_path(), &text).unwrap();
        let config = sallyport_config::Config::parse(&text, &self.h.config_path(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        Engine::open(config).await.unwrap()
    }

    async fn users(&self, n: i64) {
        let rows: Vec<String> = (1..=n)
            .map(|g| format!("({g}, 'Name{g}', 'free')"))
            .collect();
        self.sql(&format!(
            "CREATE TABLE {{s}}.users (user_id bigint, name text, plan text);
             INSERT INTO {{s}}.users VALUES {};",
            rows.join(", ")
        ))
        .await;
    }

    async fn snapshot_keys(&self) -> i64 {
        let table = sallyport_sources::Snapshot {
            schema: self.schema(),
            sync: "people".into(),
        }
        .table();
        self.count(&format!("SELECT count(*) FROM {{s}}.{table}"))
            .await
    }

    /// Whether PostgreSQL's snapshot has its primary key (`None` on the other warehouses).
    async fn snapshot_has_key(&self) -> Option<bool> {
        if self.my.is_some() || self.redshift {
            return None;
        }
        let table = sallyport_sources::Snapshot {
            schema: self.schema(),
            sync: "people".into(),
        }
        .table();
        let n = self
            .count(&format!(
                "SELECT count(*) FROM pg_index WHERE indrelid = '{{s}}.{table}'::regclass AND indisprimary"
            ))
            .await;
        Some(n == 1)
    }

    /// The tables left in the schema or database.
    async fn tables(&self) -> i64 {
        match &self.my {
            None => {
                self.count("SELECT count(*) FROM pg_tables WHERE schemaname = '{s}'")
                    .await
            }
            Some(_) => {
                self.count(
                    "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{s}'",
                )
                .await
            }
        }
    }
}

impl Drop for W {
    fn drop(&mut self) {
        if let Some((url, db)) = self.my.take() {
            // Dropped on a thread of its own: the test's runtime is ending.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = mysql_async::Conn::from_url(&url).await {
                        let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {db}")).await;
                        let _ = c.disconnect().await;
                    }
                });
            })
            .join();
        }
    }
}

fn mysql_url() -> Option<String> {
    sallyport_testkit::service("SALLYPORT_TEST_MYSQL_URL", "MariaDB")
}

/// Runs a case on PostgreSQL, on MariaDB, and on Redshift's SQL.
macro_rules! on_each {
    ($case:ident, $pg:ident, $my:ident, $rs:ident) => {
        #[tokio::test]
        async fn $rs() {
            sallyport_testkit::needs_postgres!();
            $case(&W::redshift().await).await;
        }

        #[tokio::test]
        async fn $pg() {
            sallyport_testkit::needs_postgres!();
            $case(&W::postgres().await).await;
        }

        #[tokio::test]
        async fn $my() {
            sallyport_testkit::needs_postgres!();
            let Some(url) = mysql_url() else { return };
            $case(&W::mysql(url).await).await;
        }
    };
}

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

on_each!(
    only_what_changed_leaves_the_warehouse,
    postgres_sends_only_what_changed,
    mysql_sends_only_what_changed,
    redshift_sends_only_what_changed
);

async fn only_what_changed_leaves_the_warehouse(w: &W) {
    let h = &w.h;
    w.users(50).await;
    let engine = w.engine(&people("warehouse", "")).await;

    let s = h.run(&engine, "people").await;
    assert_eq!(counts(&s), (50, 50, 0, 50, 0, 0), "{s:?}");
    assert_eq!(w.snapshot_keys().await, 50);
    assert_ne!(
        w.snapshot_has_key().await,
        Some(false),
        "the first run seals the snapshot it filled"
    );
    assert_eq!(
        engine.state.count("people").await.unwrap(),
        0,
        "the state store keeps no row"
    );

    // Nothing changed: nothing is read out.
    let s = h.run(&engine, "people").await;
    assert_eq!(counts(&s), (0, 0, 0, 0, 0, 0), "{s:?}");

    // 3 changed, 2 new, 1 gone, 1 key doubled: only those rows leave the warehouse.
    w.sql(
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
    assert_eq!(w.snapshot_keys().await, 51, "1..52 without 50");

    // A failed row is not in the snapshot: it is read and tried again until it goes.
    w.sql("DELETE FROM {s}.users WHERE name = 'Other'; UPDATE {s}.users SET name = repeat('x', 1001) WHERE user_id = 5;")
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
    w.sql("UPDATE {s}.users SET name = 'Five' WHERE user_id = 5;")
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

on_each!(
    removals_found_in_the_warehouse_keep_the_guard,
    postgres_removals_keep_the_guard,
    mysql_removals_keep_the_guard,
    redshift_removals_keep_the_guard
);

async fn removals_found_in_the_warehouse_keep_the_guard(w: &W) {
    let h = &w.h;
    w.users(40).await;
    let engine = w
        .engine(&people("warehouse", "    on_removal: delete\n"))
        .await;
    assert_eq!(h.run(&engine, "people").await.rows_sent, 40);
    w.sql("DELETE FROM {s}.users WHERE user_id <= 4").await;
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
    assert_eq!(w.snapshot_keys().await, 36);
    w.sql("DELETE FROM {s}.users WHERE user_id <= 10").await;
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
    assert_eq!(w.snapshot_keys().await, 30);
}

on_each!(
    switching_modes_carries_the_state_over_without_a_resend,
    postgres_switches_modes_without_a_resend,
    mysql_switches_modes_without_a_resend,
    redshift_switches_modes_without_a_resend
);

async fn switching_modes_carries_the_state_over_without_a_resend(w: &W) {
    let h = &w.h;
    w.users(30).await;
    let local = w.engine(&people("local", "")).await;
    assert_eq!(h.run(&local, "people").await.rows_sent, 30);
    w.sql("UPDATE {s}.users SET plan = 'pro' WHERE user_id = 7")
        .await;

    // Into the warehouse: the first run reads the rows once, sends only the changed one, and
    // the state moves into the snapshot.
    let warehouse = w.engine(&people("warehouse", "")).await;
    let s = h.run(&warehouse, "people").await;
    assert_eq!(
        (s.rows_read, s.rows_changed, s.rows_sent),
        (30, 1, 1),
        "{s:?}"
    );
    assert_eq!(warehouse.state.count("people").await.unwrap(), 0);
    assert_eq!(w.snapshot_keys().await, 30);
    assert_eq!(h.run(&warehouse, "people").await.rows_read, 0);

    // And back: the snapshot comes back into the state store, and nothing is resent.
    w.sql("UPDATE {s}.users SET plan = 'team' WHERE user_id = 8")
        .await;
    let local = w.engine(&people("local", "")).await;
    let s = h.run(&local, "people").await;
    assert_eq!((s.rows_unchanged, s.rows_sent), (29, 1), "{s:?}");
    assert_eq!(local.state.count("people").await.unwrap(), 30);
    let gone = w.tables().await;
    assert_eq!(
        gone, 1,
        "only the users table is left: the snapshot was dropped"
    );
}

#[tokio::test]
async fn postgres_check_names_the_missing_grant() {
    sallyport_testkit::needs_postgres!();
    check_names_the_missing_schema_grant("postgres").await;
}

/// Redshift's catalog answers the same questions (PostgreSQL as the stand-in).
#[tokio::test]
async fn redshift_check_names_the_missing_grant() {
    sallyport_testkit::needs_postgres!();
    check_names_the_missing_schema_grant("redshift").await;
}

async fn check_names_the_missing_schema_grant(kind: &str) {
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
            &format!("warehouses:\n  other: {{type: {kind}, url: \"{url}\", sallyport_schema: \"{missing}\"}}\n"),
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
    let sqlite = "state: s.db\nwarehouses:\n  m: {type: sqlite, path: w.db}\napps:\n  cio: {type: customerio, site_id: a, api_key: b}\nsyncs:\n  p:\n    warehouse: m\n    model: {table: t}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: id\n    change_detection: warehouse\n";
    let e = sallyport_config::Config::parse(sqlite, &h.config_path(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":14:")
            && e.contains(
                "change_detection: warehouse is available on postgres, redshift, mysql, bigquery and snowflake warehouses; `m` is a sqlite warehouse"
            ),
        "{e}"
    );
}

#[tokio::test]
async fn mysql_check_names_the_missing_grant() {
    sallyport_testkit::needs_postgres!();
    let Some(url) = mysql_url() else { return };
    let w = W::mysql(url.clone()).await;
    let db = w.schema();
    let user = format!("{db}_u");
    let home = format!("{db}_sp");
    w.sql(&format!(
        "CREATE USER '{user}'@'%'; GRANT SELECT ON `{db}`.* TO '{user}'@'%';"
    ))
    .await;
    let as_user = url
        .replacen("://root@", &format!("://{user}@"), 1)
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{db}"))
        .unwrap();
    let syncs = "  people:
    warehouse: other
    model: {sql: \"select 1 as user_id\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    change_detection: warehouse
";
    let text = w.h.config_text(syncs, common::KEY).replace(
        "warehouses:\n",
        &format!("warehouses:\n  other: {{type: mysql, url: \"{as_user}\", sallyport_schema: \"{home}\"}}\n"),
    );
    std::fs::write(w.h.config_path(), &text).unwrap();
    let config = sallyport_config::Config::parse(&text, &w.h.config_path(), &|_| None).unwrap();
    let engine = Engine::open(config).await.unwrap();
    let e = engine.check_sync("people").await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("needs the database `{home}`, which does not exist, and user '{user}'@'%' may not create it"))
            && e.contains(&format!("GRANT CREATE, DROP, SELECT, INSERT, UPDATE, DELETE ON `{home}`.* TO '{user}'@'%';")),
        "{e}"
    );
    let s = w.h.run(&engine, "people").await;
    assert_eq!((s.status.as_str(), s.rows_sent), ("failed", 0), "{s:?}");

    // Part of the grants: the rest is named.
    w.sql(&format!(
        "GRANT CREATE, SELECT ON `{home}`.* TO '{user}'@'%';"
    ))
    .await;
    let e = engine.check_sync("people").await.unwrap_err().to_string();
    assert!(
        e.contains("(missing: DROP, INSERT, UPDATE, DELETE)")
            && e.contains(&format!(
                "GRANT DROP, INSERT, UPDATE, DELETE ON `{home}`.* TO '{user}'@'%';"
            )),
        "{e}"
    );

    // With what it names, the check passes and a run creates the database and its snapshot.
    w.sql(&format!(
        "GRANT DROP, INSERT, UPDATE, DELETE ON `{home}`.* TO '{user}'@'%';"
    ))
    .await;
    let ok = engine.check_sync("people").await.unwrap();
    assert!(ok.contains("grants are in place"), "{ok}");
    let s = w.h.run(&engine, "people").await;
    assert_eq!((s.status.as_str(), s.rows_sent), ("succeeded", 1), "{s:?}");
    assert_eq!(w.h.run(&engine, "people").await.rows_read, 0);
    w.sql(&format!("DROP DATABASE `{home}`; DROP USER '{user}'@'%';"))
        .await;
}
