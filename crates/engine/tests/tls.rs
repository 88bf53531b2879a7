//! A sync whose warehouse and state store are both PostgreSQL over verified TLS (the server
//! `scripts/test.sh` starts with a certificate for `localhost` signed by a test CA).

mod common;

use common::Harness;
use sallyport_sandbox::IdentifyBy;

#[tokio::test]
async fn a_sync_reads_and_keeps_its_state_over_verified_tls() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_PGTLS_URL", "PostgreSQL with TLS");
    let certs =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_TLS_CERTS", "the test certificates");
    let tls = format!("sslmode=verify-full&sslrootcert={certs}/ca.crt");
    // A database of this test's own on the TLS server, for the model and the state.
    let admin =
        sallyport_sources::postgres::Connector::new(&format!("{url}?{tls}"), &Default::default())
            .unwrap()
            .connect()
            .await
            .unwrap();
    let db = sallyport_testkit::unique("tls");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let db_url = format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    let data = sallyport_sources::postgres::Connector::new(
        &format!("{db_url}?{tls}"),
        &Default::default(),
    )
    .unwrap()
    .connect()
    .await
    .unwrap();
    data.batch_execute(
        "CREATE TABLE users (user_id int, email text, plan text);
         INSERT INTO users VALUES (1, 'a@x.com', 'pro'), (2, 'b@x.com', 'free');",
    )
    .await
    .unwrap();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.warehouse_url = format!("{db_url}?{tls}");
    h.state = format!("\"{db_url}?{tls}\"");
    let syncs = "  people:\n    warehouse: pg\n    model: {table: users}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n    identifier: id\n    mapping: {auto: true}\n";
    let engine = h.engine(syncs).await;
    let first = h.run(&engine, "people").await;
    assert_eq!((first.rows_new, first.rows_failed), (2, 0), "{first:?}");
    assert_eq!(h.person("1").await.unwrap()["attributes"]["plan"], "pro");
    // The state is in the TLS server: a second run finds nothing to send.
    let engine = h.engine(syncs).await;
    let second = h.run(&engine, "people").await;
    assert_eq!(
        (second.rows_new, second.rows_changed, second.rows_unchanged),
        (0, 0, 2),
        "{second:?}"
    );
    let runs: i64 = data
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        runs, 2,
        "the runs are recorded in the TLS server's state store"
    );
    drop(data);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
}
