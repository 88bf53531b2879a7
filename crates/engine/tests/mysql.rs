//! A sync from MariaDB to the sandbox: sent once, unchanged rows skipped on the next run, and a
//! column Customer.io cannot take fails its rows with the reason, unless it is left out.

mod common;

use common::{Harness, KEY, SITE};
use mysql_async::prelude::Queryable;
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::IdentifyBy;

async fn engine(h: &Harness, url: &str, table: &str, mapping: &str) -> Engine {
    let text = format!(
        "state: state.db\nwarehouses:\n  my: {{type: mysql, url: \"{url}\"}}\napps:\n  cio:\n    type: customerio\n    site_id: {SITE}\n    api_key: {KEY}\n    track_url: {}\n    delivery: {{requests_per_second: 1000}}\nsyncs:\n  people:\n    warehouse: my\n    model: {{table: {table}}}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: id\n    identifier: id\n    mapping: {mapping}\n",
        h.sandbox.url()
    );
    std::fs::write(h.config_path(), &text).unwrap();
    Engine::open(Config::parse(&text, &h.config_path(), &|_| None).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_mysql_sync_is_incremental_and_names_what_it_cannot_send() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    let t = sallyport_testkit::unique("people");
    conn.query_drop(format!(
        "CREATE TABLE {t} (id bigint, email varchar(100), plan enum('free','pro'), vip tinyint(1),
            signed_up datetime, avatar varbinary(16));
         INSERT INTO {t} VALUES (1, 'a@x.com', 'pro', 1, '2024-01-02 03:04:05', x'00ff'),
                                (2, 'b@x.com', 'free', 0, '1970-01-01 00:01:00', NULL);"
    ))
    .await
    .unwrap();
    let h = Harness::new(IdentifyBy::Id).await;
    // Every column mapped: the row with a binary value fails, naming the column.
    let e = engine(&h, &url, &t, "{auto: true}").await;
    let first = h.run(&e, "people").await;
    assert_eq!((first.rows_sent, first.rows_failed), (1, 1), "{first:?}");
    let f = e.state.failures("people").await.unwrap();
    assert_eq!(f[0].key, "1");
    assert!(
        f[0].reason.contains("avatar") && f[0].reason.contains("binary data"),
        "{}",
        f[0].reason
    );
    let p = h.person("2").await.unwrap();
    assert_eq!(p["attributes"]["plan"], "free");
    assert_eq!(p["attributes"]["vip"], false);
    assert_eq!(p["attributes"]["signed_up"], 60);
    // Left out of the mapping, the column no longer stops the row.
    let e = engine(&h, &url, &t, "{auto: true, exclude: [avatar]}").await;
    let second = h.run(&e, "people").await;
    assert_eq!(second.rows_failed, 0, "{second:?}");
    assert_eq!(h.person("1").await.unwrap()["attributes"]["vip"], true);
    // Nothing changed: nothing is sent.
    let third = h.run(&e, "people").await;
    assert_eq!((third.rows_sent, third.rows_unchanged), (0, 2), "{third:?}");
    conn.query_drop(format!("UPDATE {t} SET plan = 'pro' WHERE id = 2"))
        .await
        .unwrap();
    let fourth = h.run(&e, "people").await;
    assert_eq!(
        (fourth.rows_changed, fourth.rows_sent),
        (1, 1),
        "{fourth:?}"
    );
    assert_eq!(h.person("2").await.unwrap()["attributes"]["plan"], "pro");
    conn.query_drop(format!("DROP TABLE {t}")).await.unwrap();
}
