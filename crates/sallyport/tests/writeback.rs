//! Run logs in the warehouse (`writeback:`), on PostgreSQL and MariaDB: after each run of the
//! CLI, `sync_runs` holds the figures it printed, `sync_failures` the failed rows with their
//! reasons and attempts, `sync_changelog` what each key went through for the last `keep_runs`
//! runs; a writeback that fails is a warning, and the sync still succeeds.

use std::path::Path;
use std::process::Command;

use sallyport_sandbox::SandboxConfig;
use serde_json::Value;

/// A warehouse the test writes its model into and reads the writeback tables from.
enum Wh {
    Pg(tokio_postgres::Client),
    My(mysql_async::Conn),
}

impl Wh {
    async fn exec(&mut self, sql: &str) {
        match self {
            Wh::Pg(c) => c
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Wh::My(c) => mysql_async::prelude::Queryable::query_drop(c, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// Rows of text (`{t}` in `sql` is the backend's text type for CAST).
    async fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Wh::Pg(c) => {
                let sql = sql.replace("{t}", "TEXT");
                c.query(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .iter()
                    .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                    .collect()
            }
            Wh::My(c) => {
                let sql = sql.replace("{t}", "CHAR");
                let rows: Vec<mysql_async::Row> = mysql_async::prelude::Queryable::query(c, &sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.into_iter()
                    .map(|r| {
                        r.unwrap()
                            .into_iter()
                            .map(mysql_async::from_value::<Option<String>>)
                            .collect()
                    })
                    .collect()
            }
        }
    }
}

fn sync(dir: &Path) -> (Option<i32>, Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .current_dir(dir)
        .args(["sync", "people", "--json"])
        .env_remove("SALLYPORT_CONFIG")
        .env("CI", "true")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let all = format!("{out}{}", String::from_utf8_lossy(&o.stderr));
    let json = out
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or(Value::Null);
    (o.status.code(), json, all)
}

/// The same scenario on each warehouse: `model` is the users table's name, `audit` the
/// writeback schema, `warehouse` the config's settings of the warehouse.
async fn scenario(mut wh: Wh, model: &str, audit: &str, warehouse: &str) {
    let sandbox =
        sallyport_sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    wh.exec(&format!(
        "CREATE TABLE {model} (user_id VARCHAR(200), email VARCHAR(100), name VARCHAR(100))"
    ))
    .await;
    let long = "x".repeat(160);
    let mut values: Vec<String> = (1..=19)
        .map(|i| format!("('{i}', 'u{i}@example.com', 'Name {i}')"))
        .collect();
    values.push(format!("('{long}', 'long@example.com', 'Too long')"));
    wh.exec(&format!("INSERT INTO {model} VALUES {}", values.join(", ")))
        .await;
    std::fs::write(
        dir.path().join("sallyport.yaml"),
        format!(
            "warehouses:\n  wh: {warehouse}\napps:\n  cio: {{type: customerio, site_id: sandbox-site, api_key: sandbox-key, track_url: \"{}\"}}\nsyncs:\n  people: {{warehouse: wh, model: {{table: \"{model}\"}}, app: cio, object: person, mode: upsert, primary_key: user_id, on_removal: delete}}\n",
            sandbox.url()
        ),
    )
    .unwrap();

    // Run 1: 19 added, the long key failed.
    let (code, first, all) = sync(dir.path());
    assert_eq!(code, Some(2), "a run with failed rows is partial: {all}");
    assert!(!all.contains("warning"), "{all}");
    let run1 = first["run_id"].as_i64().unwrap();
    let figures = "status, CAST(rows_read AS {t}), CAST(rows_new AS {t}), CAST(rows_changed AS {t}), CAST(rows_unchanged AS {t}), CAST(rows_sent AS {t}), CAST(rows_failed AS {t}), CAST(rows_removed AS {t}), CAST(requests AS {t}), CAST(retries AS {t}), worker";
    let printed = |j: &Value| -> Vec<Option<String>> {
        let mut v = vec![Some(j["status"].as_str().unwrap().to_string())];
        for f in [
            "rows_read",
            "rows_new",
            "rows_changed",
            "rows_unchanged",
            "rows_sent",
            "rows_failed",
            "rows_removed",
            "requests",
            "retries",
        ] {
            v.push(Some(j[f].as_u64().unwrap().to_string()));
        }
        v.push(None);
        v
    };
    let stored = wh
        .rows(&format!(
            "SELECT {figures} FROM {audit}.sync_runs WHERE sync = 'people' AND run_id = {run1}"
        ))
        .await;
    assert_eq!(stored, vec![printed(&first)], "the figures the CLI printed");
    assert_eq!(first["rows_sent"], 19);
    let failures = wh
        .rows(&format!(
            "SELECT row_key, reason, CAST(attempts AS {{t}}) FROM {audit}.sync_failures WHERE run_id = {run1}"
        ))
        .await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0][0].as_deref(), Some(long.as_str()));
    assert!(
        failures[0][1].as_deref().unwrap().contains("150"),
        "the reason names the limit: {failures:?}"
    );
    assert_eq!(failures[0][2].as_deref(), Some("1"));
    let added = wh
        .rows(&format!(
            "SELECT operation, CAST(count(*) AS {{t}}) FROM {audit}.sync_changelog WHERE run_id = {run1} GROUP BY operation"
        ))
        .await;
    assert_eq!(added, vec![vec![Some("added".into()), Some("19".into())]]);

    // Run 2: two changed, one removed; the long key fails a second time.
    wh.exec(&format!(
        "UPDATE {model} SET name = 'Renamed' WHERE user_id IN ('1', '2')"
    ))
    .await;
    wh.exec(&format!("DELETE FROM {model} WHERE user_id = '3'"))
        .await;
    let (code, second, all) = sync(dir.path());
    assert_eq!(code, Some(2), "{all}");
    let run2 = second["run_id"].as_i64().unwrap();
    let stored = wh
        .rows(&format!(
            "SELECT {figures} FROM {audit}.sync_runs WHERE sync = 'people' AND run_id = {run2}"
        ))
        .await;
    assert_eq!(stored, vec![printed(&second)]);
    let changes = wh
        .rows(&format!(
            "SELECT row_key, operation FROM {audit}.sync_changelog WHERE run_id = {run2} ORDER BY row_key"
        ))
        .await;
    assert_eq!(
        changes,
        vec![
            vec![Some("1".into()), Some("changed".into())],
            vec![Some("2".into()), Some("changed".into())],
            vec![Some("3".into()), Some("removed".into())],
        ]
    );
    let attempts = wh
        .rows(&format!(
            "SELECT CAST(attempts AS {{t}}) FROM {audit}.sync_failures WHERE run_id = {run2}"
        ))
        .await;
    assert_eq!(attempts, vec![vec![Some("2".into())]]);

    // Run 3 changes nothing; with keep_runs: 2 the changelog keeps runs 2 and 3 only.
    let (code, _, all) = sync(dir.path());
    assert_eq!(code, Some(2), "{all}");
    let kept = wh
        .rows(&format!(
            "SELECT DISTINCT CAST(run_id AS {{t}}) FROM {audit}.sync_changelog"
        ))
        .await;
    assert_eq!(kept, vec![vec![Some(run2.to_string())]]);
    let runs = wh
        .rows(&format!(
            "SELECT CAST(count(*) AS {{t}}) FROM {audit}.sync_runs"
        ))
        .await;
    assert_eq!(runs, vec![vec![Some("3".into())]], "every run is kept");

    // A writeback that fails is a warning: the run itself is as it was.
    wh.exec(&format!(
        "DROP TABLE {audit}.sync_changelog; CREATE TABLE {audit}.sync_changelog (unrelated INT)"
    ))
    .await;
    wh.exec(&format!(
        "UPDATE {model} SET name = 'Again' WHERE user_id = '4'"
    ))
    .await;
    let (code, fourth, all) = sync(dir.path());
    assert_eq!(
        code,
        Some(2),
        "still partial (the long key), not failed: {all}"
    );
    assert_eq!(fourth["status"], "partial");
    assert_eq!(fourth["rows_changed"], 1);
    let warned = fourth["writeback_error"].as_str().unwrap_or_default();
    assert!(warned.contains(audit), "{all}");
    assert_eq!(sandbox.shared().stats().people, 18);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_run_logs_failures_and_changelog() {
    sallyport_testkit::needs_postgres!();
    let (pg, schema) = sallyport_testkit::schema().await;
    let audit = sallyport_testkit::unique("audit");
    scenario(
        Wh::Pg(pg),
        &format!("{}.users", &*schema),
        &audit,
        &format!(
            "{{type: postgres, url: \"{}\", writeback: {{schema: {audit}, keep_runs: 2}}}}",
            sallyport_testkit::pg_url()
        ),
    )
    .await;
    let c = sallyport_testkit::connect(&sallyport_testkit::pg_url()).await;
    sallyport_testkit::drop_schema(&c, &audit).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_run_logs_failures_and_changelog() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let db = sallyport_testkit::unique("wb");
    let audit = sallyport_testkit::unique("audit");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    mysql_async::prelude::Queryable::query_drop(&mut conn, format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    scenario(
        Wh::My(mysql_async::Conn::from_url(&url).await.unwrap()),
        &format!("{db}.users"),
        &audit,
        &format!("{{type: mysql, url: \"{url}\", writeback: {{schema: {audit}, keep_runs: 2}}}}"),
    )
    .await;
    for d in [db, audit] {
        mysql_async::prelude::Queryable::query_drop(&mut conn, format!("DROP DATABASE {d}"))
            .await
            .unwrap();
    }
}
