//! MySQL/MariaDB against the servers `scripts/test.sh` brings up: the one on 3306 and one on
//! 3307 that requires TLS (a certificate for `localhost` signed by the test CA).

use mysql_async::prelude::Queryable;
use sallyport_core::Model;
use sallyport_sources::tls::SslMode;
use sallyport_sources::{mysql, Source, SourceError, WarehouseSettings};
use serde_json::{json, Value};

async fn all(source: &Source, model: &Model) -> Vec<sallyport_sources::Row> {
    let mut stream = source.stream(model, Some("id")).await.unwrap();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.recv().await {
        rows.extend(chunk.unwrap());
    }
    rows
}

#[tokio::test]
async fn mysql_types_become_customerio_values_and_unsendable_ones_are_named() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    let t = sallyport_testkit::unique("types");
    conn.query_drop(format!(
        "CREATE TABLE {t} (id int, flag tinyint(1), plan enum('free','pro'), tags set('a','b'),
            big bigint unsigned, y year, dur time, zero date, local_dt datetime, ts timestamp NULL,
            bits bit(8), raw varbinary(8), pt point, price decimal(30,2));
         INSERT INTO {t} VALUES (1, 1, 'pro', 'a,b', 18446744073709551615, 2024, '-26:03:04',
            '0000-00-00', '1970-01-01 02:00:00', '1970-01-01 00:01:00', b'101', x'0001',
            POINT(1, 2), 12345678901234567890.50);"
    ))
    .await
    .unwrap();
    let mut settings = mysql::Settings::url(url.clone());
    settings.timezone = Some("+02:00".into());
    let source = Source::open(&WarehouseSettings::Mysql(settings))
        .await
        .unwrap();
    let model = Model::Table(t.clone());
    let columns = source.describe(&model).await.unwrap();
    let types: Vec<&str> = columns.iter().map(|c| c.type_name.as_str()).collect();
    assert_eq!(
        types,
        [
            "int",
            "tinyint(1)",
            "enum",
            "set",
            "bigint",
            "year",
            "time",
            "date",
            "datetime",
            "timestamp",
            "bit",
            "varbinary",
            "geometry",
            "decimal"
        ]
    );
    let rows = all(&source, &model).await;
    assert_eq!(rows[0].key.as_deref(), Some("1"));
    assert_eq!(
        Value::Array(rows[0].values.clone()),
        json!([
            1,
            true,
            "pro",
            "a,b",
            18446744073709551615u64,
            2024,
            "-26:03:04",
            null,
            0,
            60,
            null,
            null,
            null,
            "12345678901234567890.50"
        ])
    );
    // Bit, binary and spatial values cannot be sent: each is named with its reason.
    let unreadable: Vec<(&str, bool)> = rows[0]
        .unreadable
        .iter()
        .map(|u| {
            (
                u.column.as_str(),
                u.reason.contains("leave the column out of the mapping"),
            )
        })
        .collect();
    assert_eq!(unreadable, [("bits", true), ("raw", true), ("pt", true)]);
    conn.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test]
async fn a_mysql_model_cannot_write() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    let t = sallyport_testkit::unique("w");
    conn.query_drop(format!(
        "CREATE TABLE {t} (x int);
         CREATE FUNCTION {t}_f() RETURNS int MODIFIES SQL DATA BEGIN INSERT INTO {t} VALUES (1); RETURN 1; END"
    ))
    .await
    .unwrap();
    let source = Source::open(&WarehouseSettings::Mysql(mysql::Settings::url(url)))
        .await
        .unwrap();
    let mut error = None;
    match source
        .stream(&Model::Sql(format!("SELECT {t}_f() AS id")), None)
        .await
    {
        Err(e) => error = Some(e.to_string()),
        Ok(mut stream) => {
            while let Some(chunk) = stream.recv().await {
                if let Err(e) = chunk {
                    error = Some(e.to_string());
                }
            }
        }
    }
    let error = error.expect("the write is refused");
    assert!(error.contains("READ ONLY"), "{error}");
    let n: Option<i64> = conn
        .query_first(format!("SELECT count(*) FROM {t}"))
        .await
        .unwrap();
    assert_eq!(n, Some(0));
    conn.query_drop(format!("DROP FUNCTION {t}_f; DROP TABLE {t}"))
        .await
        .unwrap();
}

fn tls_settings(url: &str, mode: SslMode, rootcert: Option<String>) -> WarehouseSettings {
    let mut s = mysql::Settings::url(url);
    s.sslmode = Some(mode);
    s.sslrootcert = rootcert;
    WarehouseSettings::Mysql(s)
}

async fn open_error(w: &WarehouseSettings) -> String {
    match Source::open(w).await {
        Ok(_) => panic!("the connection should have failed"),
        Err(SourceError::Connect(e)) => e,
        Err(e) => panic!("not a connection error: {e}"),
    }
}

#[tokio::test]
async fn mysql_over_tls_verifies_the_server_and_says_what_failed() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQLTLS_URL", "MariaDB with TLS");
    let certs =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_TLS_CERTS", "the test certificates");
    let ca = Some(format!("{certs}/ca.crt"));
    let source = Source::open(&tls_settings(&url, SslMode::VerifyFull, ca.clone()))
        .await
        .unwrap();
    let mut stream = source
        .stream(
            &Model::Sql("SELECT 1 AS id, VARIABLE_VALUE AS v FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'".into()),
            None,
        )
        .await
        .unwrap();
    let rows = stream.recv().await.unwrap().unwrap();
    assert!(
        rows[0].values[1].as_str().unwrap().starts_with("TLS"),
        "{:?}",
        rows[0].values
    );
    // The same in the URL, with MySQL's own names.
    let in_url = format!("{url}?ssl-mode=VERIFY_IDENTITY&ssl-ca={certs}/ca.crt");
    Source::open(&WarehouseSettings::Mysql(mysql::Settings::url(in_url)))
        .await
        .unwrap();
    let e = open_error(&tls_settings(
        &url,
        SslMode::VerifyFull,
        Some(format!("{certs}/other-ca.crt")),
    ))
    .await;
    assert!(e.contains("certificate is not trusted"), "{e}");
    let by_ip = url.replace("localhost", "127.0.0.1");
    let e = open_error(&tls_settings(&by_ip, SslMode::VerifyFull, ca.clone())).await;
    assert!(e.contains("not for this host name"), "{e}");
    Source::open(&tls_settings(&by_ip, SslMode::VerifyCa, ca.clone()))
        .await
        .unwrap();
    // A client certificate, for a user that must show one.
    let as_certuser = url.replace("app:app-pw@", "certuser@");
    let mut s = mysql::Settings::url(as_certuser.clone());
    s.sslmode = Some(SslMode::VerifyFull);
    s.sslrootcert = ca.clone();
    assert!(Source::open(&WarehouseSettings::Mysql(s.clone()))
        .await
        .is_err());
    s.sslcert = Some(format!("{certs}/client.crt"));
    s.sslkey = Some(format!("{certs}/client.key"));
    Source::open(&WarehouseSettings::Mysql(s)).await.unwrap();
    // `require` against a server without TLS.
    let plain = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let e = open_error(&tls_settings(&plain, SslMode::Require, None)).await;
    assert!(e.contains("does not accept TLS"), "{e}");
}

#[tokio::test]
async fn a_link_local_server_is_never_connected_to() {
    for w in [
        WarehouseSettings::Mysql(mysql::Settings::url("mysql://u:p@169.254.169.254:3306/db")),
        WarehouseSettings::Postgres(sallyport_sources::postgres::Settings::url(
            "postgres://u:p@169.254.169.254:5432/db",
        )),
        // A harmless name, with the address to use given beside it.
        WarehouseSettings::Postgres(sallyport_sources::postgres::Settings::url(
            "host=localhost hostaddr=169.254.169.254 user=u dbname=db",
        )),
    ] {
        let e = open_error(&w).await;
        assert!(e.contains("link-local"), "{e}");
    }
}
