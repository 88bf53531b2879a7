//! Event sync end to end: Track Event and Track Page View, identified and anonymous, every
//! timestamp form, exactly-once delivery with dedup ids.

mod common;

use common::Harness;
use sallyport_engine::RunOptions;
use sallyport_sandbox::{is_ulid, IdentifyBy};
use serde_json::{json, Value};

async fn purchases(h: &Harness) {
    h.sql(
        "CREATE TABLE {s}.purchases (purchase_id text, user_id bigint, anon_id text, event text,
            amount_cents int, internal text, ts_tz timestamptz, ts timestamp, d date, secs bigint,
            ms bigint, fsecs double precision, iso text, recipient text);
         INSERT INTO {s}.purchases VALUES
           ('p1', 1, NULL, 'purchase', 500, 'x', '2023-11-14 22:13:20+00', '2023-11-14 22:13:20', '2023-11-14',
            1700000000, 1700000000123, 1700000000.75, '2023-11-14T23:13:20+01:00', NULL),
           ('p2', 2, NULL, 'purchase', 700, 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           ('p3', NULL, 'anon-3', 'purchase', 900, 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           ('p4', NULL, NULL, 'invite', 0, 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'friend@x.com'),
           ('p5', NULL, NULL, 'lost', 0, 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    )
    .await;
}

const TRACK: &str = "  purchases:
    warehouse: pg
    model: {sql: \"select purchase_id, user_id, anon_id, event, amount_cents, internal, ts_tz, recipient from {s}.purchases\"}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: purchase_id
    customer_id: user_id
    anonymous_id: anon_id
    timestamp: ts_tz
    event_name: event
    mapping: {auto: true, fields: {amount_cents: amount}, exclude: [internal]}
";

async fn events(h: &Harness, query: &str) -> Vec<Value> {
    h.get(&format!("/_sandbox/events?{query}")).await.1["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn track_events_identified_and_anonymous_exactly_once() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    purchases(&h).await;
    let engine = h.engine(TRACK).await;
    let s = h.run(&engine, "purchases").await;
    assert_eq!(s.status, "partial");
    assert_eq!(
        (s.rows_read, s.rows_new, s.rows_sent, s.rows_failed),
        (5, 4, 4, 1)
    );
    let f = engine.state.failures("purchases").await.unwrap();
    assert_eq!(f[0].key, "p5");
    assert_eq!(
        f[0].reason,
        "row p5: anonymous event needs anonymous_id or recipient (no customer id in this row)"
    );

    let e = events(&h, "customer_id=1").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["name"], "purchase");
    assert_eq!(e[0]["type"], "event");
    assert_eq!(e[0]["timestamp"], 1_700_000_000);
    assert_eq!(
        e[0]["attributes"],
        json!({"amount": 500}),
        "renamed, excluded, NULLs left out"
    );
    let id = e[0]["id"].as_str().unwrap();
    assert!(is_ulid(id), "{id}");
    assert_eq!(
        id,
        sallyport_destinations::customerio::dedup_id("purchases", "p1")
    );
    assert!(events(&h, "customer_id=2").await[0]
        .get("timestamp")
        .is_none_or(Value::is_null));
    let anon = events(&h, "anonymous_id=anon-3").await;
    assert_eq!(anon.len(), 1);
    assert_eq!(anon[0]["attributes"]["amount"], 900);
    let stats = h.stats().await;
    assert_eq!(
        (stats["events"].as_u64(), stats["anonymous_events"].as_u64()),
        (Some(4), Some(2))
    );

    // A row changed after delivery is not resent; new rows are; a fixed failed row is retried.
    h.sql(
        "UPDATE {s}.purchases SET amount_cents = 1 WHERE purchase_id = 'p1';
         UPDATE {s}.purchases SET anon_id = 'anon-5' WHERE purchase_id = 'p5';
         INSERT INTO {s}.purchases (purchase_id, user_id, event, amount_cents) VALUES ('p6', 6, 'refund', 5), ('p7', 7, 'purchase', 8);",
    )
    .await;
    let s = h.run(&engine, "purchases").await;
    assert_eq!(s.status, "succeeded");
    assert_eq!((s.rows_new, s.rows_unchanged, s.rows_sent), (3, 4, 3));
    assert_eq!(
        events(&h, "customer_id=1").await[0]["attributes"]["amount"],
        500,
        "p1 was not resent"
    );
    assert_eq!(h.stats().await["events"], 7);
    assert!(engine.state.failures("purchases").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_resend_after_a_crash_is_deduplicated_by_customerio() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    purchases(&h).await;
    h.sql("DELETE FROM {s}.purchases WHERE purchase_id = 'p5'")
        .await;
    let engine = h.engine(TRACK).await;
    assert_eq!(h.run(&engine, "purchases").await.rows_sent, 4);
    // The process died after Customer.io accepted the events and before the state was
    // committed: the state does not know them.
    engine.state.clear("purchases").await.unwrap();
    let s = h.run(&engine, "purchases").await;
    assert_eq!(s.rows_sent, 4, "everything is sent again");
    let stats = h.stats().await;
    assert_eq!(stats["events"], 4, "but Customer.io keeps each event once");
    assert_eq!(stats["duplicate_events"], 4);

    // A full resync is a safe replay for the same reason.
    let s = engine
        .run(
            "purchases",
            RunOptions {
                full_resync: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.rows_sent, 4);
    let stats = h.stats().await;
    assert_eq!(
        (stats["events"].as_u64(), stats["duplicate_events"].as_u64()),
        (Some(4), Some(8))
    );
}

#[tokio::test]
async fn every_timestamp_form_becomes_unix_seconds() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    purchases(&h).await;
    h.sql("INSERT INTO {s}.purchases (purchase_id, user_id, event, iso) VALUES ('bad', 9, 'purchase', 'last tuesday')").await;
    let forms = [
        ("ts_tz", 1_700_000_000i64),
        ("ts", 1_700_000_000),
        ("d", 1_699_920_000),
        ("secs", 1_700_000_000),
        ("ms", 1_700_000_000),
        ("fsecs", 1_700_000_000),
        ("iso", 1_700_000_000),
    ];
    let mut syncs = String::new();
    for (col, _) in forms {
        syncs.push_str(&format!(
            "  at_{col}:
    warehouse: pg
    model: {{sql: \"select purchase_id, '{col}' || coalesce(user_id::text, '') as who, event, {col} from {{s}}.purchases where purchase_id in ('p1', 'bad')\"}}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: purchase_id
    customer_id: who
    timestamp: {col}
    event_name: event
"
        ));
    }
    let engine = h.engine(&syncs).await;
    for (col, expected) in forms {
        let s = h.run(&engine, &format!("at_{col}")).await;
        let e = events(&h, &format!("customer_id={col}1")).await;
        assert_eq!(e.len(), 1, "{col}");
        assert_eq!(e[0]["timestamp"], expected, "{col}");
        if col == "iso" {
            assert_eq!((s.rows_sent, s.rows_failed), (1, 1));
            let f = engine.state.failures("at_iso").await.unwrap();
            assert_eq!(
                f[0].reason,
                "row bad: column `iso`: `last tuesday` is not a time: use Unix seconds or milliseconds, or an ISO-8601 date-time"
            );
        } else {
            assert_eq!(
                (s.rows_sent, s.rows_failed),
                (2, 0),
                "{col}: a NULL time is left to Customer.io"
            );
        }
    }
}

#[tokio::test]
async fn page_views_identified_and_anonymous() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.views (view_id bigint, user_id text, anon text, url text, at bigint, referrer text);
         INSERT INTO {s}.views VALUES
           (1, 'u1', NULL, 'https://x.com/pricing', 1700000000000, 'google'),
           (2, NULL, 'a-2', 'https://x.com/', 1700000001000, NULL),
           (3, 'u3', NULL, '  ', 1700000002000, NULL),
           (4, 'u4', NULL, 'https://x.com/' || repeat('p', 100), 1700000003000, NULL);",
    )
    .await;
    let engine = h
        .engine(
            "  views:
    warehouse: pg
    model: {table: \"{s}.views\"}
    app: cio
    object: event
    mode: insert
    event_type: page_view
    event_id: view_id
    customer_id: user_id
    anonymous_id: anon
    timestamp: at
    page_url: url
",
        )
        .await;
    let s = h.run(&engine, "views").await;
    assert_eq!((s.rows_sent, s.rows_failed), (2, 2));
    let e = events(&h, "customer_id=u1").await;
    assert_eq!(e[0]["type"], "page");
    assert_eq!(e[0]["name"], "https://x.com/pricing");
    assert_eq!(e[0]["timestamp"], 1_700_000_000);
    assert_eq!(e[0]["attributes"], json!({"referrer": "google"}));
    assert_eq!(events(&h, "anonymous_id=a-2").await[0]["type"], "page");
    assert_eq!(h.stats().await["page_views"], 2);
    let reasons: Vec<String> = engine
        .state
        .failures("views")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.reason)
        .collect();
    assert_eq!(
        reasons,
        vec![
            "row 3: column `url`: the page URL is blank".to_string(),
            "row 4: column `url`: the page URL is 114 bytes; Customer.io allows at most 100 bytes for an event name".to_string(),
        ]
    );
}

#[tokio::test]
async fn bad_event_rows_and_duplicate_ids() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.ev (id text, uid text, name text, blob text);
         INSERT INTO {s}.ev VALUES
           ('ok', 'u', 'signup', NULL),
           ('dup', 'u', 'a', NULL), ('dup', 'u', 'b', NULL),
           (NULL, 'u', 'no id', NULL),
           ('blank', 'u', '', NULL),
           ('long', 'u', repeat('n', 101), NULL),
           ('huge', 'u', 'big', repeat('b', 100001)),
           ('op', 'u', 'big op', repeat('b', 40000));",
    )
    .await;
    let engine = h
        .engine(
            "  ev:
    warehouse: pg
    model: {table: \"{s}.ev\"}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: id
    customer_id: uid
    event_name: name
",
        )
        .await;
    let s = h.run(&engine, "ev").await;
    assert_eq!((s.rows_read, s.rows_sent, s.rows_failed), (8, 1, 7));
    let reasons: Vec<String> = engine
        .state
        .failures("ev")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.reason)
        .collect();
    let expect = [
        "(row 4): column `id`: the key is NULL",
        "row blank: column `name`: the event name is blank",
        "row dup: column `id`: the key `dup` is in more than one row of the model; each must be unique, so none of them is sent",
        "row long: column `name`: the event name is 101 bytes; Customer.io allows at most 100 bytes for an event name",
        "row huge: the attributes are 100012 bytes; Customer.io allows at most 100000 bytes of event data",
    ];
    for e in expect {
        assert!(
            reasons.iter().any(|r| r == e),
            "missing {e:?} in {reasons:#?}"
        );
    }
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("row op: the operation is ")),
        "{reasons:#?}"
    );
    assert_eq!(h.stats().await["events"], 1);
}

#[tokio::test]
async fn request_bodies_keep_to_the_official_contract() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    purchases(&h).await;
    let engine = h
        .engine(&format!(
            "{TRACK}{}",
            TRACK
                .replace("  purchases:", "  pages:")
                .replace("event_type: track", "event_type: page_view")
                .replace("event_name: event", "page_url: event")
        ))
        .await;
    let mut checked = 0;
    for sync in ["purchases", "pages"] {
        let p = engine.preview(sync, 10, false).await.unwrap();
        for op in &p.ops {
            match op.endpoint.as_str() {
                "POST /api/v2/batch" => {
                    sallyport_contract::check_request(
                        "/api/v2/batch",
                        "post",
                        &json!({"batch": [op.body]}),
                    )
                    .unwrap_or_else(|e| panic!("{e}: {}", op.body));
                    sallyport_contract::check_request("/api/v2/entity", "post", &op.body).unwrap();
                }
                "POST /api/v1/events" => {
                    sallyport_contract::check_request("/api/v1/events", "post", &op.body)
                        .unwrap_or_else(|e| panic!("{e}: {}", op.body));
                }
                other => panic!("unexpected endpoint {other}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}
