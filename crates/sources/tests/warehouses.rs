//! Reads real warehouses: every PostgreSQL type the issue names, SQLite's declared types, key
//! columns as text, duplicates found by the warehouse, and streaming in chunks.

use sallyport_core::Model;
use sallyport_sources::{postgres, sqlite, WarehouseSettings};
use sallyport_sources::{Source, SourceError, CHUNK_ROWS};
use serde_json::json;

async fn all_rows(
    source: &Source,
    model: &Model,
    key: Option<&str>,
) -> Vec<sallyport_sources::Row> {
    let mut stream = source.stream(model, key).await.unwrap();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.recv().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= CHUNK_ROWS);
        rows.extend(chunk);
    }
    rows
}

#[tokio::test]
async fn postgres_types_become_customerio_values() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    client
        .batch_execute(&format!(
            r#"CREATE TABLE {schema}.users (
                id bigint, name varchar(20), code text, small smallint, mid integer,
                amount numeric(12,2), huge numeric, ratio real, score double precision, active boolean,
                born date, seen timestamp, seen_tz timestamptz, uid uuid, prefs jsonb, raw json,
                tags text[], nums int[], nothing text, "Odd ""Name""" text, nan numeric, inf numeric,
                tiny numeric(8,4), neg numeric, zero numeric(6,3), doc jsonb);
            INSERT INTO {schema}.users VALUES (
                42, 'Ann', 'x', 7, 70000, 12.50, 123456789012345678901234.5, 0.5, 2.25, true,
                '2024-01-02', '2024-01-02 03:04:05', '2024-01-02 03:04:05+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                '{{"a": [1, 2]}}', '{{"b": null}}', ARRAY['x', 'y'], ARRAY[1, NULL], NULL, 'odd', 'NaN',
                '-Infinity', 0.005, -12345, 0, '"ünï"');"#
        ))
        .await
        .unwrap();
    let source = Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(
        sallyport_testkit::pg_url(),
    )))
    .await
    .unwrap();
    let model = Model::Table(format!("{schema}.users"));
    let columns = source.describe(&model).await.unwrap();
    assert_eq!(columns.len(), 26);
    assert_eq!(columns[12].type_name, "timestamptz");
    assert_eq!(columns[19].name, "Odd \"Name\"");
    let rows = all_rows(&source, &model, Some("id")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key.as_deref(), Some("42"), "keys are text");
    assert_eq!(
        serde_json::Value::Array(rows[0].values.clone()),
        json!([
            42, "Ann", "x", 7, 70000, 12.5, "123456789012345678901234.5", 0.5, 2.25, true,
            1704153600, 1704164645, 1704157445, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            {"a": [1, 2]}, {"b": null}, ["x", "y"], [1, null], null, "odd", null, null, 0.005,
            -12345.0, 0.0, "ünï"
        ])
    );
}

#[tokio::test]
async fn postgres_streams_many_rows_and_finds_duplicates() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t AS SELECT g AS id, 'n' || g AS name FROM generate_series(1, 5500) g;
             INSERT INTO {schema}.t VALUES (7, 'again'), (7, 'thrice'), (9, 'again'), (NULL, 'none');"
        ))
        .await
        .unwrap();
    let source = Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(
        sallyport_testkit::pg_url(),
    )))
    .await
    .unwrap();
    let model = Model::Sql(format!("select * from {schema}.t;"));
    let rows = all_rows(&source, &model, Some("id")).await;
    assert_eq!(rows.len(), 5504);
    let mut dups = Vec::new();
    let mut stream = source.duplicate_keys(&model, "id").await.unwrap();
    while let Some(chunk) = stream.recv().await {
        dups.extend(chunk.unwrap().into_iter().filter_map(|r| r.key));
    }
    dups.sort();
    assert_eq!(dups, vec!["7", "9"]);
    let mut keys = source.keys(&model, "id").await.unwrap();
    let mut n = 0;
    while let Some(chunk) = keys.recv().await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, 5504);
    assert!(matches!(
        source.stream(&model, Some("nope")).await,
        Err(SourceError::NoColumn(c)) if c == "nope"
    ));
    let err = source
        .describe(&Model::Table(format!("{schema}.missing")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_bad_password_is_never_quoted() {
    sallyport_testkit::needs_postgres!();
    let url =
        sallyport_testkit::pg_url().replace("postgres://postgres@", "postgres://nobody:hunter2@");
    let url = url.replace(":5432/", ":1/");
    let err = match Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(url))).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("port 1 answered"),
    };
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.starts_with("cannot connect to the warehouse"), "{err}");
}

#[tokio::test]
async fn sqlite_declared_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER, email TEXT, active BOOLEAN, born DATE, seen DATETIME,
                             at_secs TIMESTAMP, prefs JSON, score REAL, note TEXT);
         INSERT INTO users VALUES (1, 'a@x.com', 1, '1970-01-02', '1970-01-01 00:01:00', 120,
                                   '{\"k\": 1}', 1.5, NULL);
         INSERT INTO users VALUES (2, 'b@x.com', 0, 'not a date', '1970-01-01T01:00:00+01:00', NULL,
                                   'not json', 2, 'n');",
    )
    .unwrap();
    drop(conn);
    let source = Source::open(&WarehouseSettings::Sqlite(sqlite::Settings {
        path: path.display().to_string(),
    }))
    .await
    .unwrap();
    let model = Model::Table("users".into());
    let rows = all_rows(&source, &model, Some("email")).await;
    assert_eq!(rows[0].key.as_deref(), Some("a@x.com"));
    assert_eq!(
        serde_json::Value::Array(rows[0].values.clone()),
        json!([1, "a@x.com", true, 86400, 60, 120, {"k": 1}, 1.5, null])
    );
    assert_eq!(
        serde_json::Value::Array(rows[1].values.clone()),
        json!([
            2,
            "b@x.com",
            false,
            "not a date",
            0,
            null,
            "not json",
            2.0,
            "n"
        ])
    );
    let missing = Source::open(&WarehouseSettings::Sqlite(sqlite::Settings {
        path: dir.path().join("nope.db").display().to_string(),
    }))
    .await;
    assert!(matches!(missing, Err(SourceError::Connect(_))));
}

#[tokio::test]
async fn a_models_sql_cannot_write_to_the_warehouse() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    client
        .batch_execute(&format!("CREATE SEQUENCE {schema}.s"))
        .await
        .unwrap();
    let source = Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(
        sallyport_testkit::pg_url(),
    )))
    .await
    .unwrap();
    // A model whose query would change the warehouse (here: advance a sequence).
    let writing = Model::Sql(format!("SELECT nextval('{schema}.s') AS id"));
    let mut stream = source.stream(&writing, None).await.unwrap();
    let mut error = None;
    while let Some(chunk) = stream.recv().await {
        if let Err(e) = chunk {
            error = Some(e.to_string());
        }
    }
    let error = error.expect("the query is refused");
    assert!(error.contains("read-only transaction"), "{error}");
    let last: i64 = client
        .query_one(&format!("SELECT last_value FROM {schema}.s"), &[])
        .await
        .unwrap()
        .get(0);
    let called: bool = client
        .query_one(&format!("SELECT is_called FROM {schema}.s"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((last, called), (1, false), "the sequence never moved");
}

#[tokio::test]
async fn a_model_cannot_turn_off_read_only_for_the_next_statement() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (x int);
             CREATE FUNCTION {schema}.w() RETURNS int LANGUAGE sql AS
               'INSERT INTO {schema}.t VALUES (1) RETURNING 1';"
        ))
        .await
        .unwrap();
    let source = Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(
        sallyport_testkit::pg_url(),
    )))
    .await
    .unwrap();
    let drain = |model: Model| {
        let source = &source;
        async move {
            let mut stream = source.stream(&model, None).await?;
            let mut error = None;
            while let Some(chunk) = stream.recv().await {
                if let Err(e) = chunk {
                    error = Some(e);
                }
            }
            match error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    };
    // One model tries to switch the session's default to read-write, for good and for the
    // transaction; the next statement is still read-only.
    let _ = drain(Model::Sql(
        "SELECT set_config('default_transaction_read_only', 'off', false) AS a".into(),
    ))
    .await;
    let e = drain(Model::Sql(
        "SELECT set_config('transaction_read_only', 'off', true) AS a".into(),
    ))
    .await
    .unwrap_err();
    assert!(e.to_string().contains("read-write"), "{e}");
    let e = drain(Model::Sql(format!("SELECT {schema}.w() AS x")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only transaction"), "{e}");
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.t"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing was written");
}

#[tokio::test]
async fn an_sqlite_statement_past_its_time_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    let source = Source::open_with(
        &WarehouseSettings::Sqlite(sqlite::Settings {
            path: path.display().to_string(),
        }),
        &sallyport_sources::OpenOptions {
            statement_timeout: Some(std::time::Duration::from_millis(200)),
        },
    )
    .await
    .unwrap();
    // Counting to a billion takes far longer than 200 ms.
    let slow = Model::Sql(
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000000)
         SELECT max(n) AS n FROM c"
            .into(),
    );
    let started = std::time::Instant::now();
    let mut stream = source.stream(&slow, None).await.unwrap();
    let mut error = None;
    while let Some(chunk) = stream.recv().await {
        if let Err(e) = chunk {
            error = Some(e.to_string());
        }
    }
    let error = error.expect("the statement is stopped");
    assert!(error.contains("interrupt"), "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn redshift_reads_past_many_cursor_fetches_and_cannot_write() {
    sallyport_testkit::needs_postgres!();
    let (client, schema) = sallyport_testkit::schema().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.big AS SELECT g AS id, 'u' || g AS email FROM generate_series(1, 25000) g;
             CREATE SEQUENCE {schema}.s;"
        ))
        .await
        .unwrap();
    let source = Source::open(&WarehouseSettings::Redshift(
        sallyport_sources::redshift::Settings::url(sallyport_testkit::pg_url()),
    ))
    .await
    .unwrap();
    let mut stream = source
        .stream(&Model::Table(format!("{schema}.big")), Some("id"))
        .await
        .unwrap();
    let mut n = 0;
    let mut last = None;
    while let Some(chunk) = stream.recv().await {
        for row in chunk.unwrap() {
            n += 1;
            last = row.key;
        }
    }
    assert_eq!(n, 25_000, "three fetches of the cursor");
    assert_eq!(last.as_deref(), Some("25000"));
    let writing = Model::Sql(format!("SELECT nextval('{schema}.s') AS id"));
    let error = match source.stream(&writing, None).await {
        Err(e) => e.to_string(),
        Ok(mut s) => {
            let mut error = String::new();
            while let Some(c) = s.recv().await {
                if let Err(e) = c {
                    error = e.to_string();
                }
            }
            error
        }
    };
    assert!(error.contains("read-only transaction"), "{error}");
}
