//! PostgreSQL over TLS, against the servers `scripts/test.sh` starts: one with `ssl = on` and a
//! certificate for `localhost` signed by a CA the test trusts (5433; `certuser` must show a
//! client certificate), and one without TLS (5434).

use sallyport_core::Model;
use sallyport_sources::postgres::{self, Connector, SslMode, Tls};
use sallyport_sources::{Source, SourceError, WarehouseSettings};

fn certs() -> Option<String> {
    sallyport_testkit::service("SALLYPORT_TEST_TLS_CERTS", "the test certificates")
}

fn settings(url: &str, mode: SslMode, rootcert: Option<String>) -> WarehouseSettings {
    let mut s = postgres::Settings::url(url);
    s.sslmode = Some(mode);
    s.sslrootcert = rootcert;
    WarehouseSettings::Postgres(s)
}

async fn open_error(w: &WarehouseSettings) -> String {
    match Source::open(w).await {
        Ok(_) => panic!("the connection should have failed"),
        Err(SourceError::Connect(e)) => e,
        Err(e) => panic!("not a connection error: {e}"),
    }
}

async fn read_all(source: &Source, model: &Model) -> Vec<serde_json::Value> {
    let mut stream = source.stream(model, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.recv().await {
        for row in chunk.unwrap() {
            out.push(serde_json::Value::Array(row.values));
        }
    }
    out
}

#[tokio::test]
async fn verify_full_with_the_ca_connects_and_reads_over_tls() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_PGTLS_URL", "PostgreSQL with TLS");
    let Some(certs) = certs() else { return };
    let ca = format!("{certs}/ca.crt");
    // Writing the table over a verified TLS connection of its own.
    let admin = Connector::new(
        &url,
        &Tls {
            mode: Some(SslMode::VerifyFull),
            rootcert: Some(ca.clone()),
            ..Tls::default()
        },
    )
    .unwrap()
    .connect()
    .await
    .unwrap();
    let schema = sallyport_testkit::unique("tls");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.users (id int, email text);
             INSERT INTO {schema}.users VALUES (1, 'a@x.com'), (2, 'b@x.com');"
        ))
        .await
        .unwrap();
    let source = Source::open(&settings(&url, SslMode::VerifyFull, Some(ca.clone())))
        .await
        .unwrap();
    let rows = read_all(&source, &Model::Table(format!("{schema}.users"))).await;
    assert_eq!(rows.len(), 2);
    // The session is encrypted.
    let ssl = read_all(
        &source,
        &Model::Sql("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()".into()),
    )
    .await;
    assert_eq!(ssl[0][0], serde_json::json!(true), "{ssl:?}");
    // The same settings in the URL, as libpq writes them.
    let in_url = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let source = Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(
        in_url,
    )))
    .await
    .unwrap();
    assert_eq!(
        read_all(&source, &Model::Table(format!("{schema}.users")))
            .await
            .len(),
        2
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused_in_words() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_PGTLS_URL", "PostgreSQL with TLS");
    let Some(certs) = certs() else { return };
    let e = open_error(&settings(
        &url,
        SslMode::VerifyFull,
        Some(format!("{certs}/other-ca.crt")),
    ))
    .await;
    assert!(e.contains("certificate is not trusted"), "{e}");
    // verify-ca checks the chain too.
    let e = open_error(&settings(
        &url,
        SslMode::VerifyCa,
        Some(format!("{certs}/other-ca.crt")),
    ))
    .await;
    assert!(e.contains("certificate is not trusted"), "{e}");
    // The system's roots do not include a private CA either.
    let e = open_error(&settings(&url, SslMode::VerifyFull, None)).await;
    assert!(e.contains("certificate is not trusted"), "{e}");
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_verify_full_but_not_verify_ca() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_PGTLS_URL", "PostgreSQL with TLS");
    let Some(certs) = certs() else { return };
    let ca = Some(format!("{certs}/ca.crt"));
    // The certificate names `localhost` only; 127.0.0.1 is the same server by another name.
    let by_ip = url.replace("localhost", "127.0.0.1");
    let e = open_error(&settings(&by_ip, SslMode::VerifyFull, ca.clone())).await;
    assert!(e.contains("not for this host name"), "{e}");
    let source = Source::open(&settings(&by_ip, SslMode::VerifyCa, ca))
        .await
        .unwrap();
    assert_eq!(
        read_all(&source, &Model::Sql("SELECT 1 AS one".into()))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_and_says_so() {
    let plain =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_PGPLAIN_URL", "PostgreSQL without TLS");
    let e = open_error(&settings(&plain, SslMode::Require, None)).await;
    assert!(e.contains("does not accept TLS"), "{e}");
    // `prefer` (the default for this machine) falls back to a plain connection.
    let source = Source::open(&WarehouseSettings::Postgres(postgres::Settings::url(
        plain.clone(),
    )))
    .await
    .unwrap();
    assert_eq!(
        read_all(&source, &Model::Sql("SELECT 1 AS one".into()))
            .await
            .len(),
        1
    );
    // And a TLS-only server refuses a plain connection.
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_PGTLS_URL", "PostgreSQL with TLS");
    let e = open_error(&settings(&url, SslMode::Disable, None)).await;
    assert!(e.contains("no encryption"), "{e}");
}

#[tokio::test]
async fn a_client_certificate_is_shown_when_the_server_demands_one() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_PGTLS_URL", "PostgreSQL with TLS");
    let Some(certs) = certs() else { return };
    let as_certuser = url.replace("postgres@", "certuser@");
    let ca = Some(format!("{certs}/ca.crt"));
    let e = open_error(&settings(&as_certuser, SslMode::VerifyFull, ca.clone())).await;
    assert!(e.contains("certificate"), "{e}");
    let mut s = postgres::Settings::url(as_certuser);
    s.sslmode = Some(SslMode::VerifyFull);
    s.sslrootcert = ca;
    s.sslcert = Some(format!("{certs}/client.crt"));
    s.sslkey = Some(format!("{certs}/client.key"));
    let source = Source::open(&WarehouseSettings::Postgres(s)).await.unwrap();
    let who = read_all(&source, &Model::Sql("SELECT current_user AS who".into())).await;
    assert_eq!(who[0][0], serde_json::json!("certuser"));
}
