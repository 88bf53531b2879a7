//! The conformance test every warehouse passes: the same model, with every kind of value a
//! customer table holds, gives the same Customer.io values, the same key texts, the same
//! duplicate keys and the same key stream. A new warehouse adds its own `load_*` (its DDL, its
//! connection) and runs `conforms` on it.

use sallyport_core::Model;
use sallyport_sources::{mysql, postgres, redshift, sqlite, Row, Source, WarehouseSettings};
use serde_json::{json, Value};

/// The rows every warehouse holds, in its own types: id (integer key), name (text), active
/// (boolean), score (float), amount (decimal), born (date), seen (timestamp without zone, taken
/// as UTC), prefs (JSON), note (NULL).
const ROWS: &[&str] = &[
    "1, 'Ann', TRUE, 2.5, 12.50, '2024-01-02', '2024-01-02 03:04:05', '{\"a\": [1, 2]}', NULL",
    "2, 'Bob', FALSE, -1.25, 0.10, '1970-01-01', '1970-01-01 00:01:00', '[]', NULL",
    "2, 'Bob again', FALSE, 0, 0, '1970-01-01', '1970-01-01 00:00:00', 'null', NULL",
    "NULL, 'Nobody', NULL, NULL, NULL, NULL, NULL, NULL, NULL",
];

/// What Customer.io is sent for the first two rows, whatever the warehouse.
fn expected() -> Vec<Value> {
    vec![
        json!([1, "Ann", true, 2.5, 12.5, 1704153600, 1704164645, {"a": [1, 2]}, null]),
        json!([2, "Bob", false, -1.25, 0.1, 0, 60, [], null]),
    ]
}

async fn collect(mut stream: sallyport_sources::RowStream) -> Vec<Row> {
    let mut rows = Vec::new();
    while let Some(chunk) = stream.recv().await {
        rows.extend(chunk.unwrap());
    }
    rows
}

const NAMES: [&str; 9] = [
    "id", "name", "active", "score", "amount", "born", "seen", "prefs", "note",
];

/// The warehouse browser's catalog query lists the table's columns in order.
async fn catalog_lists(
    what: &str,
    settings: &WarehouseSettings,
    source: &Source,
    (schema, table): (&str, &str),
) {
    let sql = settings
        .catalog_sql()
        .unwrap_or_else(|| panic!("{what}: no catalog query"));
    let (_, rows) = source
        .sample(&Model::Sql(sql.to_string()), 100_000)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = |v: &Value| v.as_str().unwrap_or_default().to_ascii_lowercase();
    let columns: Vec<String> = rows
        .iter()
        .filter(|r| {
            text(&r.values[0]) == schema.to_ascii_lowercase()
                && text(&r.values[1]) == table.to_ascii_lowercase()
        })
        .map(|r| text(&r.values[2]))
        .collect();
    assert_eq!(
        columns,
        ["id", "name", "active", "score", "amount", "born", "seen", "prefs", "note"],
        "{what}: the catalog's columns of {table}"
    );
    assert!(
        rows.iter().all(|r| !text(&r.values[3]).is_empty()),
        "{what}: every column has a type"
    );
}

async fn conforms(what: &str, source: Source, model: Model) {
    conforms_without(what, source, model, &[]).await
}

/// The conformance test over the columns a stand-in can hold (`missing` are left out of its
/// table).
async fn conforms_without(what: &str, source: Source, model: Model, missing: &[&str]) {
    let kept: Vec<usize> = (0..NAMES.len())
        .filter(|i| !missing.contains(&NAMES[*i]))
        .collect();
    let expected = || -> Vec<Value> {
        expected()
            .into_iter()
            .map(|row| Value::Array(kept.iter().map(|i| row[*i].clone()).collect()))
            .collect()
    };
    let columns = source.describe(&model).await.unwrap();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let want: Vec<&str> = kept.iter().map(|i| NAMES[*i]).collect();
    assert_eq!(names, want, "{what}");
    let rows = collect(source.stream(&model, Some("id")).await.unwrap()).await;
    assert_eq!(rows.len(), 4, "{what}");
    let keys: Vec<Option<&str>> = rows.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(
        keys,
        [Some("1"), Some("2"), Some("2"), None],
        "{what}: keys as text"
    );
    for (row, want) in rows.iter().zip(expected()) {
        assert_eq!(Value::Array(row.values.clone()), want, "{what}");
    }
    let dups = collect(source.duplicate_keys(&model, "id").await.unwrap()).await;
    let dups: Vec<Option<String>> = dups.into_iter().map(|r| r.key).collect();
    assert_eq!(dups, [Some("2".to_string())], "{what}: duplicates");
    let keys = collect(source.keys(&model, "id").await.unwrap()).await;
    assert_eq!(keys.len(), 4, "{what}: every key, NULL too");
    // Identifiers are quoted in the warehouse's dialect, never pasted.
    let hostile = Model::Table("users\"; DROP TABLE users; --".into());
    assert!(source.describe(&hostile).await.is_err(), "{what}");
    assert_eq!(
        source.describe(&model).await.unwrap().len(),
        kept.len(),
        "{what}"
    );
    // Where the warehouse fingerprints rows from the wire, decoding later gives the same
    // values.
    if source.computes_fingerprints() {
        let spec = sallyport_sources::FingerprintSpec {
            columns: vec!["name".into(), "score".into()],
            salt: "s".into(),
        };
        let read = sallyport_sources::ReadSpec {
            key: Some("id"),
            fingerprint: Some(&spec),
            diff: None,
        };
        let mut rows = collect(source.read(&model, &read).await.unwrap()).await;
        assert!(rows.iter().all(|r| r.fingerprint.is_some()), "{what}");
        assert_ne!(rows[0].fingerprint, rows[1].fingerprint, "{what}");
        for (row, want) in rows.iter_mut().zip(expected()) {
            row.materialize().unwrap();
            assert_eq!(Value::Array(row.values.clone()), want, "{what}");
        }
    }
}

/// Change detection in the warehouse, for every warehouse that hosts it: the snapshot table
/// in `schema` is created, written (merging notes), paged in key order, compared with the model
/// (only new and changed rows come out), anti-joined for the keys that left, and dropped.
async fn snapshots_conform(what: &str, source: &Source, model: &Model, schema: &str) {
    use sallyport_sources::{DiffSpec, FingerprintSpec, ReadSpec, Snapshot, SnapshotRow};
    source.snapshots().unwrap();
    source.snapshot_check(schema).await.unwrap();
    let snap = Snapshot {
        schema: schema.into(),
        sync: format!("conformance {what}"),
    };
    assert_eq!(source.snapshot_count(&snap).await.unwrap(), None, "{what}");
    assert_eq!(
        source.snapshot_prepare(&snap).await.unwrap(),
        (0, false),
        "{what}"
    );
    assert_eq!(
        source.snapshot_count(&snap).await.unwrap(),
        Some(0),
        "{what}"
    );
    let spec = FingerprintSpec {
        columns: vec!["name".into(), "score".into(), "note".into()],
        salt: "s".into(),
    };
    let diff = |fingerprint, all, empty| DiffSpec {
        snapshot: &snap,
        fingerprint,
        all,
        empty,
    };
    let read = |d| async move {
        let spec = ReadSpec {
            key: Some("id"),
            fingerprint: None,
            diff: Some(&d),
        };
        let mut rows = collect(source.read(model, &spec).await.unwrap()).await;
        rows.sort_by_key(|r| {
            (
                r.key.is_none(),
                r.key.clone(),
                r.values[1].as_str().map(String::from),
            )
        });
        rows
    };

    // A first run: every row, each with the warehouse's fingerprint, decoded as ever.
    let first = read(diff(Some(&spec), false, true)).await;
    assert_eq!(first.len(), 4, "{what}");
    let fp = |r: &Row| r.diff.as_ref().unwrap().warehouse_fingerprint;
    let (ann, bob, bob_again) = (fp(&first[0]), fp(&first[1]), fp(&first[2]));
    assert!(ann != bob && bob != bob_again && ann != bob_again, "{what}");
    assert_eq!(
        Value::Array(first[0].values.clone()),
        expected()[0],
        "{what}"
    );
    assert!(first
        .iter()
        .all(|r| r.diff.as_ref().unwrap().previous.is_none()));
    // The same values give the same fingerprint on every read.
    assert_eq!(
        fp(&read(diff(Some(&spec), false, true)).await[0]),
        ann,
        "{what}"
    );

    // Keys 1 and 2 (as Bob) delivered, and a key the model does not have.
    let row = |key: &str, wfp: Option<i64>, note: Option<&str>| SnapshotRow {
        key: key.into(),
        warehouse_fingerprint: wfp,
        fingerprint: 42,
        note: note.map(String::from),
    };
    source
        .snapshot_write(
            &snap,
            &[
                row("1", Some(ann), Some("n1")),
                row("2", Some(bob), None),
                row("9", None, Some("gone")),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        source.snapshot_count(&snap).await.unwrap(),
        Some(3),
        "{what}"
    );
    // The run is over its new keys: from here on, keys it holds may be written again (twice
    // is harmless).
    source.snapshot_seal(&snap).await.unwrap();
    source.snapshot_seal(&snap).await.unwrap();

    // Only what differs comes out: key 2's other row, and the row without a key.
    let changed = read(diff(Some(&spec), false, false)).await;
    let keys: Vec<Option<&str>> = changed.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [Some("2"), None], "{what}");
    assert_eq!(changed[0].values[1], "Bob again", "{what}");
    assert_eq!(
        changed[0].diff.as_ref().unwrap().previous,
        Some((0, None)),
        "{what}: a known key, no note, its warehouse fingerprint known"
    );
    assert_eq!(changed[1].diff.as_ref().unwrap().previous, None, "{what}");
    // Another salt (other settings) changes every fingerprint; a full read gives every row
    // with what the snapshot holds; keys alone (insert-once objects) give the new keys only.
    let salted = FingerprintSpec {
        salt: "t".into(),
        ..spec.clone()
    };
    assert_eq!(
        read(diff(Some(&salted), false, false)).await.len(),
        4,
        "{what}"
    );
    let all = read(diff(Some(&spec), true, false)).await;
    assert_eq!(all.len(), 4, "{what}");
    assert_eq!(
        all[0].diff.as_ref().unwrap().previous,
        Some((0, Some("n1".into()))),
        "{what}"
    );
    let new_keys = read(diff(None, false, false)).await;
    assert_eq!(new_keys.len(), 1, "{what}: only the row without a key");

    // The keys that left the model, with their notes, and the model's keys counted.
    assert_eq!(
        source
            .snapshot_absent_count(&snap, model, "id")
            .await
            .unwrap(),
        1,
        "{what}"
    );
    let absent = collect(source.snapshot_absent(&snap, model, "id").await.unwrap()).await;
    assert_eq!(absent.len(), 1, "{what}");
    assert_eq!(absent[0].key.as_deref(), Some("9"), "{what}");
    assert_eq!(absent[0].values, [json!("gone")], "{what}");
    assert_eq!(source.count_keys(model, "id").await.unwrap(), 3, "{what}");

    // A write without a note keeps the one there; a removed key goes; pages follow key order.
    source
        .snapshot_write(&snap, &[row("1", Some(bob_again), None)], &["9".into()])
        .await
        .unwrap();
    let page = source.snapshot_rows(&snap, "", 1).await.unwrap();
    assert_eq!(page, [row("1", Some(bob_again), Some("n1"))], "{what}");
    let page = source.snapshot_rows(&snap, "1", 10).await.unwrap();
    assert_eq!(page, [row("2", Some(bob), None)], "{what}");
    // Where the warehouse's text of a key is not always the reader's, only text and integer
    // keys are compared there.
    if ["redshift", "snowflake", "bigquery"].contains(&what) {
        let d = diff(Some(&spec), false, false);
        let by_date = ReadSpec {
            key: Some("born"),
            fingerprint: None,
            diff: Some(&d),
        };
        let e = match source.read(model, &by_date).await {
            Ok(_) => panic!("{what}: a DATE key was compared in the warehouse"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("key column `born` is"), "{what}: {e}");
    }
    source.snapshot_drop(&snap).await.unwrap();
    assert_eq!(source.snapshot_count(&snap).await.unwrap(), None, "{what}");
}

#[tokio::test]
async fn postgres_conforms() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    let values: Vec<String> = ROWS.iter().map(|r| format!("({r})")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.users (id bigint, name text, active boolean, score double precision,
                amount numeric(10,2), born date, seen timestamp, prefs jsonb, note text);
             INSERT INTO {schema}.users VALUES {};",
            values.join(", ")
        ))
        .await
        .unwrap();
    let settings =
        WarehouseSettings::Postgres(postgres::Settings::url(sallyport_testkit::pg_url()));
    let source = Source::open(&settings).await.unwrap();
    let model = Model::Table(format!("{schema}.users"));
    catalog_lists("postgres", &settings, &source, (&schema, "users")).await;
    snapshots_conform("postgres", &source, &model, &schema).await;
    postgres_first_run_stopped(&client, &settings, &schema).await;
    conforms("postgres", source, model).await;
    sallyport_testkit::drop_schema(&client, &schema).await;
}

/// A first run fills its new snapshot without a key index and builds the index when sealed; a
/// run stopped before that leaves the next run to build it, keeping one row of a key written
/// twice (which a run never does; a table written by hand may).
async fn postgres_first_run_stopped(
    client: &tokio_postgres::Client,
    settings: &WarehouseSettings,
    schema: &str,
) {
    use sallyport_sources::{Snapshot, SnapshotRow};
    let snap = Snapshot {
        schema: schema.into(),
        sync: "stopped first run".into(),
    };
    let table = format!("{schema}.\"{}\"", snap.table());
    let has_key = || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass AND indisprimary",
                &[&table],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let row = |key: &str, fp: u64, note: Option<&str>| SnapshotRow {
        key: key.into(),
        warehouse_fingerprint: Some(fp as i64),
        fingerprint: fp,
        note: note.map(String::from),
    };
    let first = Source::open(settings).await.unwrap();
    assert_eq!(first.snapshot_prepare(&snap).await.unwrap(), (0, false));
    first
        .snapshot_write(&snap, &[row("a", 1, Some("n")), row("b", 2, None)], &[])
        .await
        .unwrap();
    assert_eq!(has_key().await, 0, "no index while the first run fills it");
    // The run stops here; the same key lands twice by hand.
    client
        .batch_execute(&format!("INSERT INTO {table} VALUES ('b', 3, 3, NULL)"))
        .await
        .unwrap();
    drop(first);
    let next = Source::open(settings).await.unwrap();
    assert_eq!(next.snapshot_prepare(&snap).await.unwrap(), (2, true));
    assert_eq!(has_key().await, 1, "the next run builds it first");
    // Keys it holds are merged, as ever.
    next.snapshot_write(&snap, &[row("a", 4, None)], &[])
        .await
        .unwrap();
    let rows = next.snapshot_rows(&snap, "", 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], row("a", 4, Some("n")));
    assert_eq!(rows[1].key, "b");
    next.snapshot_drop(&snap).await.unwrap();
    // A new snapshot sealed by its run has its key; one left empty by a stopped run is filled
    // as a new one by the next.
    assert_eq!(next.snapshot_prepare(&snap).await.unwrap(), (0, false));
    let again = Source::open(settings).await.unwrap();
    assert_eq!(again.snapshot_prepare(&snap).await.unwrap(), (0, true));
    assert_eq!(has_key().await, 0);
    again
        .snapshot_write(&snap, &[row("c", 5, None)], &[])
        .await
        .unwrap();
    again.snapshot_seal(&snap).await.unwrap();
    assert_eq!(has_key().await, 1);
    again.snapshot_drop(&snap).await.unwrap();
    // Paging a snapshot in key order (carrying it back to local change detection) gives it its
    // key first.
    next.snapshot_prepare(&snap).await.unwrap();
    next.snapshot_write(&snap, &[row("d", 6, None), row("c", 5, None)], &[])
        .await
        .unwrap();
    let back = Source::open(settings).await.unwrap();
    let rows = back.snapshot_rows(&snap, "", 10).await.unwrap();
    assert_eq!(rows, [row("c", 5, None), row("d", 6, None)]);
    assert_eq!(has_key().await, 1);
    back.snapshot_drop(&snap).await.unwrap();
}

/// Redshift, read as Redshift is (text results through a cursor, its type names), against
/// PostgreSQL as the stand-in.
#[tokio::test]
async fn redshift_conforms() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    let values: Vec<String> = ROWS.iter().map(|r| format!("({r})")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.users (id bigint, name varchar(256), active boolean,
                score double precision, amount numeric(10,2), born date, seen timestamp,
                prefs jsonb, note varchar);
             INSERT INTO {schema}.users VALUES {};",
            values.join(", ")
        ))
        .await
        .unwrap();
    let settings =
        WarehouseSettings::Redshift(redshift::Settings::url(sallyport_testkit::pg_url()));
    let source = Source::open(&settings).await.unwrap();
    let model = Model::Table(format!("{schema}.users"));
    catalog_lists("redshift", &settings, &source, (&schema, "users")).await;
    snapshots_conform("redshift", &source, &model, &schema).await;
    conforms("redshift", source, model).await;
    sallyport_testkit::drop_schema(&client, &schema).await;
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let values: Vec<String> = ROWS
        .iter()
        .map(|r| format!("({})", r.replace("TRUE", "1").replace("FALSE", "0")))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE users (id INTEGER, name TEXT, active BOOLEAN, score REAL, amount DECIMAL(10,2),
            born DATE, seen DATETIME, prefs JSON, note TEXT);
         INSERT INTO users VALUES {};",
        values.join(", ")
    ))
    .unwrap();
    drop(conn);
    let settings = WarehouseSettings::Sqlite(sqlite::Settings {
        path: path.display().to_string(),
    });
    let source = Source::open(&settings).await.unwrap();
    catalog_lists("sqlite", &settings, &source, ("main", "users")).await;
    conforms("sqlite", source, Model::Table("users".into())).await;
}

#[tokio::test]
async fn mysql_conforms() {
    use mysql_async::prelude::Queryable;
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    let table = sallyport_testkit::unique("users");
    let values: Vec<String> = ROWS.iter().map(|r| format!("({r})")).collect();
    conn.query_drop(format!(
        "CREATE TABLE {table} (id bigint, name text, active boolean, score double,
            amount decimal(10,2), born date, seen datetime, prefs json, note text);
         INSERT INTO {table} VALUES {};",
        values.join(", ")
    ))
    .await
    .unwrap();
    let settings = WarehouseSettings::Mysql(mysql::Settings::url(url));
    let source = Source::open(&settings).await.unwrap();
    let model = Model::Table(format!("test.{table}"));
    catalog_lists("mysql", &settings, &source, ("test", &table)).await;
    let home = format!("{table}_sp");
    snapshots_conform("mysql", &source, &model, &home).await;
    conforms("mysql", source, model).await;
    conn.query_drop(format!(
        "DROP TABLE {table}; DROP DATABASE IF EXISTS {home}"
    ))
    .await
    .unwrap();
}

#[cfg(feature = "databricks")]
/// Databricks against its stand-in (brickhouse), which holds no TIMESTAMP and no JSON-like
/// column: `seen` and `prefs` are left out (their conversions are unit-tested on the API's
/// documented values).
#[tokio::test]
async fn databricks_conforms() {
    let host = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_DATABRICKS_HOST",
        "the Databricks stand-in"
    );
    let warehouse = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_DATABRICKS_WAREHOUSE",
        "the Databricks stand-in's warehouse"
    );
    let table = sallyport_testkit::unique("users");
    let sql = |statement: String| {
        let (host, warehouse) = (host.clone(), warehouse.clone());
        async move {
            let answer: Value = reqwest::Client::new()
                .post(format!("{host}/api/2.0/sql/statements"))
                .bearer_auth("test-token")
                .json(&json!({"warehouse_id": warehouse, "statement": statement, "wait_timeout": "30s"}))
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
    };
    sql(format!(
        "CREATE TABLE main.default.{table} (id BIGINT, name STRING, active BOOLEAN, score DOUBLE,
            amount DECIMAL(10,2), born DATE, note STRING) USING DELTA"
    ))
    .await;
    sql(format!(
        "INSERT INTO main.default.{table} VALUES
            (1, 'Ann', true, 2.5, 12.50, DATE '2024-01-02', NULL),
            (2, 'Bob', false, DOUBLE '-1.25', 0.10, DATE '1970-01-01', NULL),
            (2, 'Bob again', false, DOUBLE '0', 0.00, DATE '1970-01-01', NULL),
            (NULL, 'Nobody', NULL, NULL, NULL, NULL, NULL)"
    ))
    .await;
    let source = Source::open(&WarehouseSettings::Databricks(
        sallyport_sources::databricks::Settings {
            host: host.clone(),
            warehouse_id: warehouse.clone(),
            token: sallyport_core::Secret::new("test-token".to_string()),
            catalog: Some("main".into()),
            schema: Some("default".into()),
        },
    ))
    .await
    .unwrap();
    conforms_without(
        "databricks",
        source,
        Model::Table(format!("main.default.{table}")),
        &["seen", "prefs"],
    )
    .await;
    sql(format!("DROP TABLE main.default.{table}")).await;
}

#[cfg(feature = "bigquery")]
/// A dataset of the test's own in the BigQuery stand-in (crucible), made through its REST API.
pub async fn bigquery_dataset(endpoint: &str, project: &str) -> String {
    let dataset = sallyport_testkit::unique("ds");
    let resp = reqwest::Client::new()
        .post(format!(
            "{endpoint}/bigquery/v2/projects/{project}/datasets"
        ))
        .json(&json!({"datasetReference": {"projectId": project, "datasetId": dataset}}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    dataset
}

#[cfg(feature = "bigquery")]
async fn bigquery_sql(endpoint: &str, project: &str, sql: &str) {
    let answer: Value = reqwest::Client::new()
        .post(format!("{endpoint}/bigquery/v2/projects/{project}/queries"))
        .json(&json!({"query": sql, "useLegacySql": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["jobComplete"], true, "{sql}: {answer}");
}

#[cfg(feature = "bigquery")]
/// BigQuery against its stand-in (crucible): every type of the test.
#[tokio::test]
async fn bigquery_conforms() {
    let endpoint = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_ENDPOINT",
        "the BigQuery stand-in"
    );
    let project = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_PROJECT",
        "the BigQuery stand-in"
    );
    let ds = bigquery_dataset(&endpoint, &project).await;
    bigquery_sql(
        &endpoint,
        &project,
        &format!(
            "CREATE TABLE {ds}.users (id INT64, name STRING, active BOOL, score FLOAT64, amount NUMERIC,
                born DATE, seen DATETIME, prefs JSON, note STRING)"
        ),
    )
    .await;
    bigquery_sql(
        &endpoint,
        &project,
        &format!(
            "INSERT INTO {ds}.users VALUES
              (1, 'Ann', TRUE, 2.5, NUMERIC '12.50', DATE '2024-01-02', DATETIME '2024-01-02 03:04:05', JSON '{{\"a\": [1, 2]}}', NULL),
              (2, 'Bob', FALSE, -1.25, NUMERIC '0.10', DATE '1970-01-01', DATETIME '1970-01-01 00:01:00', JSON '[]', NULL),
              (2, 'Bob again', FALSE, 0, NUMERIC '0', DATE '1970-01-01', DATETIME '1970-01-01 00:00:00', JSON 'null', NULL),
              (NULL, 'Nobody', NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ),
    )
    .await;
    let source = Source::open(&WarehouseSettings::Bigquery(
        sallyport_sources::bigquery::Settings {
            project: project.clone(),
            location: None,
            credentials_path: None,
            endpoint: Some(endpoint.clone()),
            sallyport_schema: None,
        },
    ))
    .await
    .unwrap();
    let model = Model::Table(format!("{ds}.users"));
    snapshots_conform("bigquery", &source, &model, &format!("{ds}_sp")).await;
    conforms("bigquery", source, model).await;
}

#[cfg(feature = "snowflake")]
/// Runs statements on the Snowflake stand-in through the connector protocol.
pub async fn snowflake_sql(url: &str, statements: &[String]) {
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{url}/session/v1/login-request"))
        .json(&json!({"data": {"ACCOUNT_NAME": "TEST", "LOGIN_NAME": "u", "PASSWORD": "p", "SESSION_PARAMETERS": {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["token"].as_str().unwrap().to_string();
    for sql in statements {
        let answer: Value = http
            .post(format!("{url}/queries/v1/query-request"))
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

#[cfg(feature = "snowflake")]
pub fn snowflake_settings(url: &str, database: &str) -> sallyport_sources::snowflake::Settings {
    sallyport_sources::snowflake::Settings {
        account: "test".into(),
        user: "sallyport".into(),
        private_key_path: None,
        private_key_passphrase: None,
        password: Some(sallyport_core::Secret::new("pw".to_string())),
        warehouse: "COMPUTE_WH".into(),
        database: database.into(),
        schema: Some("PUBLIC".into()),
        role: None,
        url: Some(url.into()),
        sallyport_schema: None,
    }
}

#[cfg(feature = "snowflake")]
/// Snowflake against its stand-in (fakesnow, which answers SELECTs in Arrow).
#[tokio::test]
async fn snowflake_conforms() {
    let url =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_SNOWFLAKE_URL", "the Snowflake stand-in");
    let db = sallyport_testkit::unique("db").to_ascii_uppercase();
    snowflake_sql(
        &url,
        &[
            format!("CREATE DATABASE {db}"),
            format!("CREATE SCHEMA {db}.PUBLIC"),
            format!(
                "CREATE TABLE {db}.PUBLIC.USERS (\"id\" NUMBER(38,0), \"name\" VARCHAR, \"active\" BOOLEAN,
                    \"score\" FLOAT, \"amount\" NUMBER(10,2), \"born\" DATE, \"seen\" TIMESTAMP_NTZ,
                    \"prefs\" VARIANT, \"note\" VARCHAR)"
            ),
            format!(
                "INSERT INTO {db}.PUBLIC.USERS SELECT 1, 'Ann', TRUE, 2.5, 12.50, '2024-01-02', '2024-01-02 03:04:05', PARSE_JSON('{{\"a\": [1, 2]}}'), NULL
                 UNION ALL SELECT 2, 'Bob', FALSE, -1.25, 0.10, '1970-01-01', '1970-01-01 00:01:00', PARSE_JSON('[]'), NULL
                 UNION ALL SELECT 2, 'Bob again', FALSE, 0, 0, '1970-01-01', '1970-01-01 00:00:00', PARSE_JSON('null'), NULL
                 UNION ALL SELECT NULL, 'Nobody', NULL, NULL, NULL, NULL, NULL, NULL, NULL"
            ),
        ],
    )
    .await;
    let settings = WarehouseSettings::Snowflake(snowflake_settings(&url, &db));
    let source = Source::open(&settings).await.unwrap();
    let model = Model::Table(format!("{db}.PUBLIC.USERS"));
    catalog_lists("snowflake", &settings, &source, ("PUBLIC", "USERS")).await;
    snapshots_conform("snowflake", &source, &model, "SALLYPORT").await;
    conforms("snowflake", source, model).await;
}
