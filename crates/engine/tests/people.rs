//! People sync end to end: the real PostgreSQL as warehouse, the sandbox as Customer.io.

mod common;

use common::Harness;
use sallyport_engine::RunError;
use sallyport_sandbox::IdentifyBy;
use serde_json::json;

const PEOPLE: &str = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    identifier: id
    mapping:
      auto: true
      fields: {plan: plan_name}
      exclude: [internal_notes]
";

async fn users(h: &Harness, n: i64) {
    h.sql(&format!(
        "CREATE TABLE {{s}}.users (user_id bigint, email text, first_name text, plan text,
            signed_up_at timestamptz, lifetime_value numeric(10,2), active boolean, tags text[],
            internal_notes text);
         INSERT INTO {{s}}.users
         SELECT g, 'user' || g || '@example.com', 'Name' || g, CASE WHEN g % 2 = 0 THEN 'pro' ELSE 'free' END,
                timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour', g * 1.5, g % 3 = 0,
                ARRAY['a', 'b'], 'secret note'
         FROM generate_series(1, {n}) g;"
    ))
    .await;
}

#[tokio::test]
async fn first_run_sends_everyone_and_later_runs_only_the_changes() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 50).await;
    let engine = h.engine(PEOPLE).await;

    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "succeeded");
    assert_eq!(
        (s.rows_read, s.rows_new, s.rows_sent, s.rows_failed),
        (50, 50, 50, 0)
    );
    assert_eq!(h.stats().await["people"], 50);
    let p = h.person("42").await.expect("person 42 is in Customer.io");
    assert_eq!(p["id"], "42", "a bigint key is sent as a string");
    assert_eq!(p["email"], "user42@example.com");
    assert_eq!(
        p["attributes"],
        json!({
            "first_name": "Name42", "plan_name": "pro", "signed_up_at": 1704218400,
            "lifetime_value": 63.0, "active": true, "tags": ["a", "b"]
        }),
        "renamed, excluded, typed"
    );

    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.rows_unchanged, s.rows_sent),
        (50, 0),
        "nothing changed, nothing sent"
    );
    let requests = h.stats().await["requests"].clone();

    h.sql(
        "UPDATE {s}.users SET plan = 'enterprise' WHERE user_id IN (1, 2, 3);
         UPDATE {s}.users SET internal_notes = 'excluded columns do not count' WHERE user_id = 4;
         INSERT INTO {s}.users (user_id, email, first_name) VALUES (51, 'new@example.com', 'New'), (52, 'n2@example.com', NULL);
         DELETE FROM {s}.users WHERE user_id = 10;",
    )
    .await;
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "succeeded");
    assert_eq!(
        (s.rows_new, s.rows_changed, s.rows_sent, s.rows_removed),
        (2, 3, 5, 1)
    );
    assert_eq!(
        h.stats().await["requests"].as_u64().unwrap(),
        requests.as_u64().unwrap() + 2,
        "the credentials check and one batch"
    );
    assert_eq!(
        h.person("2").await.unwrap()["attributes"]["plan_name"],
        "enterprise"
    );
    assert_eq!(
        h.person("52").await.unwrap()["attributes"]["first_name"],
        json!(null)
    );
    assert!(
        h.person("10").await.is_some(),
        "a row that left the model is left alone in Customer.io"
    );

    // A row that comes back is sent again.
    h.sql("INSERT INTO {s}.users (user_id, email) VALUES (10, 'back@example.com')")
        .await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_new, s.rows_sent), (1, 1));

    // A full resync sends everything again.
    let s = engine
        .run(
            "people",
            sallyport_engine::RunOptions {
                full_resync: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.rows_sent, 52);

    let runs = engine.state.runs(Some("people"), 10).await.unwrap();
    assert_eq!(runs.len(), 5);
    assert_eq!(runs[0].status, "succeeded");
    assert!(runs.iter().all(|r| r.finished_at.is_some()));
}

#[tokio::test]
async fn changing_the_mapping_resends_what_it_changes() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 5).await;
    let engine = h.engine(PEOPLE).await;
    assert_eq!(h.run(&engine, "people").await.rows_sent, 5);
    let renamed = PEOPLE.replace("plan: plan_name", "plan: subscription");
    let engine = h.engine(&renamed).await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_changed, s.rows_sent), (5, 5));
    assert_eq!(
        h.person("2").await.unwrap()["attributes"]["subscription"],
        "pro"
    );
}

#[tokio::test]
async fn people_identified_by_email() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Email).await;
    h.sql(
        "CREATE TABLE {s}.users (email text, name text);
         INSERT INTO {s}.users VALUES ('a+b@x.com', 'A'), ('C@Y.com', 'C'), ('bad@nodot', 'B');",
    )
    .await;
    let syncs = "  people:
    warehouse: pg
    model: {sql: \"select * from {s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: email
    identifier: email
";
    let engine = h.engine(syncs).await;
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "partial");
    assert_eq!((s.rows_sent, s.rows_failed), (2, 1));
    assert_eq!(
        h.person("a+b@x.com").await.unwrap()["attributes"],
        json!({"name": "A"})
    );
    assert_eq!(
        h.person("c@y.com").await.unwrap()["email"],
        "C@Y.com",
        "matched case-insensitively"
    );
    // Customer.io refused one op of the batch (207): that row, and only it, failed.
    let f = engine.state.failures("people").await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].key, "bad@nodot");
    assert!(
        f[0].reason
            .starts_with("row bad@nodot: Customer.io rejected it: "),
        "{}",
        f[0].reason
    );
    assert!(
        f[0].reason.contains("not a valid email address"),
        "{}",
        f[0].reason
    );
    assert_eq!(h.stats().await["rejected_ops"], 1);
}

#[tokio::test]
async fn every_bad_row_fails_alone_with_its_reason_and_is_retried() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    let wide: Vec<String> = (0..33).map(|i| format!("w{i} text")).collect();
    h.sql(&format!(
        "CREATE TABLE {{s}}.users (user_id text, bio text, note text, {});
         INSERT INTO {{s}}.users (user_id, bio, note) VALUES
            ('ok-1', 'fine', 'n'), ('ok-2', 'fine', 'n'),
            (NULL, 'no key', 'n'), ('', 'empty key', 'n'),
            ('dup', 'first', 'n'), ('dup', 'second', 'n'), ('dup', 'third', 'n'),
            (repeat('x', 151), 'long id', 'n'),
            ('big-value', repeat('v', 1001), 'n');
         INSERT INTO {{s}}.users (user_id, {}) VALUES ('big-op', {});",
        wide.join(", "),
        (0..33)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(", "),
        (0..33)
            .map(|_| "repeat('z', 999)")
            .collect::<Vec<_>>()
            .join(", "),
    ))
    .await;
    let syncs = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    mapping: {fields: {note: NOTE_NAME}}
"
    .replace("NOTE_NAME", &"n".repeat(151));
    let engine = h.engine(&syncs).await;
    let s = h.run(&engine, "people").await;
    assert_eq!(s.status, "partial");
    assert_eq!(s.rows_read, 10);
    assert_eq!(
        s.rows_failed,
        10,
        "{:#?}",
        engine.state.failures("people").await.unwrap()
    );
    // The attribute-name limit fails every row that has it: check it, then drop the rename.
    let syncs = syncs.replace(
        &format!("mapping: {{fields: {{note: {}}}}}", "n".repeat(151)),
        "mapping: {auto: true}",
    );
    let f = engine.state.failures("people").await.unwrap();
    assert!(
        f.iter().any(|f| f.reason
            == "row ok-1: column `note`: the attribute name is 151 bytes; Customer.io allows at most 150 bytes"),
        "{f:#?}"
    );

    let engine = h.engine(&syncs).await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_sent, s.rows_failed), (2, 8));
    let reasons: Vec<String> = engine
        .state
        .failures("people")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.reason)
        .collect();
    let expect = [
        "(row 3): column `user_id`: the key is NULL",
        "row : column `user_id`: the identifier is empty",
        "row dup: column `user_id`: the key `dup` is in more than one row of the model; each must be unique, so none of them is sent",
        &format!("row {}: column `user_id`: the identifier is 151 bytes; Customer.io allows at most 150 bytes", "x".repeat(151)),
        "row big-value: column `bio`: the value is 1001 bytes; Customer.io allows at most 1000 bytes per attribute value",
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
            .any(|r| r.starts_with("row big-op: the operation is ")
                && r.ends_with("bytes; Customer.io allows at most 32000 bytes per operation")),
        "{reasons:#?}"
    );
    assert_eq!(
        h.stats().await["people"],
        2,
        "only the good rows reached Customer.io"
    );
    assert!(
        h.person("dup").await.is_none(),
        "no row of a duplicated key is sent"
    );

    // Failed rows are retried on the next run.
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_sent, s.rows_failed, s.rows_unchanged), (0, 8, 2));
    let f = engine.state.failures("people").await.unwrap();
    let big = f.iter().find(|f| f.key == "big-value").unwrap();
    assert_eq!(big.attempts, 3, "tried by each of three runs");

    // Fixing the row fixes the failure.
    h.sql("UPDATE {s}.users SET bio = 'short now' WHERE user_id = 'big-value'")
        .await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_sent, s.rows_failed), (1, 7));
    assert!(engine
        .state
        .failures("people")
        .await
        .unwrap()
        .iter()
        .all(|f| f.key != "big-value"));
}

#[tokio::test]
async fn too_many_attributes() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    let cols: Vec<String> = (0..301).map(|i| format!("{i} AS a{i}")).collect();
    h.sql(&format!(
        "CREATE VIEW {{s}}.wide AS SELECT 'p1'::text AS user_id, {}",
        cols.join(", ")
    ))
    .await;
    let engine = h
        .engine("  people:\n    warehouse: pg\n    model: {table: \"{s}.wide\"}\n    app: cio\n    object: person\n    mode: upsert\n    primary_key: user_id\n")
        .await;
    let s = h.run(&engine, "people").await;
    assert_eq!(s.rows_failed, 1);
    assert_eq!(
        engine.state.failures("people").await.unwrap()[0].reason,
        "row p1: 301 attributes; Customer.io allows at most 300 per person"
    );
}

#[tokio::test]
async fn wrong_credentials_stop_before_anything_is_marked() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 3).await;
    let engine = h.engine_with_key(PEOPLE, "wrong-key").await;
    let err = engine.run("people", Default::default()).await.unwrap_err();
    assert!(matches!(err, RunError::Credentials(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("Customer.io rejected the Site ID / API key of app `cio` (401 Unauthorized)"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-key"), "{msg}");
    assert!(engine.state.failures("people").await.unwrap().is_empty());
    assert_eq!(engine.state.count("people").await.unwrap(), 0);
    assert_eq!(h.stats().await["people"], 0);
}

#[tokio::test]
async fn settings_that_do_not_fit_the_model_name_their_line() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 1).await;
    let bad = PEOPLE
        .replace("primary_key: user_id", "primary_key: id")
        .replace("exclude: [internal_notes]", "exclude: [notes]");
    let engine = h.engine(&bad).await;
    let err = engine.run("people", Default::default()).await.unwrap_err();
    let RunError::Config(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.problems.len(), 2, "{e}");
    assert_eq!(e.problems[0].line, Some(18), "{e}");
    assert!(
        e.problems[0].message.starts_with(
            "sync `people`: column `id` is not in the model (its columns: user_id, email,"
        ),
        "{e}"
    );
    assert_eq!(e.problems[1].line, Some(23), "{e}");
    assert!(
        e.problems[1]
            .message
            .contains("column `notes` is not in the model"),
        "{e}"
    );
}

#[tokio::test]
async fn a_second_run_of_the_same_sync_is_refused_while_one_holds_the_lock() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 2).await;
    let engine = h.engine(PEOPLE).await;
    assert!(engine
        .state
        .try_lock("people", "someone-else", std::time::Duration::from_secs(60))
        .await
        .unwrap());
    let err = engine.run("people", Default::default()).await.unwrap_err();
    assert_eq!(err.to_string(), "people is already running");
}

#[tokio::test]
async fn state_on_postgres() {
    sallyport_testkit::needs_postgres!();
    let mut h = Harness::new(IdentifyBy::Id).await;
    h.state = sallyport_testkit::database().await;
    users(&h, 20).await;
    let engine = h.engine(PEOPLE).await;
    assert!(matches!(
        engine.config.state,
        sallyport_config::StateLocation::Postgres(_)
    ));
    assert_eq!(h.run(&engine, "people").await.rows_sent, 20);
    h.sql("UPDATE {s}.users SET plan = 'x' WHERE user_id = 5; DELETE FROM {s}.users WHERE user_id = 6").await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_changed, s.rows_sent, s.rows_removed), (1, 1, 1));
    assert_eq!(engine.state.runs(Some("people"), 5).await.unwrap().len(), 2);
}

#[tokio::test]
async fn preview_shows_the_bodies_and_sends_nothing() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    users(&h, 4).await;
    let engine = h.engine(PEOPLE).await;
    let p = engine.preview("people", 2, false).await.unwrap();
    assert_eq!((p.rows_read, p.rows_new), (4, 4));
    assert_eq!(p.ops.len(), 2);
    assert_eq!(p.ops[0].endpoint, "POST /api/v2/batch");
    assert_eq!(p.ops[0].change, sallyport_engine::Change::New);
    assert_eq!(p.ops[0].body["identifiers"], json!({"id": "1"}));
    assert_eq!(p.ops[0].body["action"], "identify");
    for op in &p.ops {
        sallyport_contract::check_request("/api/v2/batch", "post", &json!({"batch": [op.body]}))
            .unwrap();
    }
    assert_eq!(h.stats().await["requests"], 0, "a preview sends nothing");
    assert!(
        engine.state.runs(None, 1).await.unwrap().is_empty(),
        "and records no run"
    );
}

#[tokio::test]
async fn keys_of_every_type_keep_their_state_between_runs() {
    sallyport_testkit::needs_postgres!();
    // One key text for every path (rows, duplicates, the keys that are still in the model):
    // a `char(n)` key is not padded on one path and trimmed on another.
    let h = Harness::new(IdentifyBy::Id).await;
    if let Err(e) =
        h.pg.batch_execute("CREATE EXTENSION IF NOT EXISTS citext")
            .await
    {
        // Two tests creating it at once: one wins, and the type is there for both.
        eprintln!("CREATE EXTENSION citext: {e}");
    }
    h.sql(
        "CREATE TABLE {s}.k (k_char char(6), k_varchar varchar(10), k_citext citext,
            k_uuid uuid, k_bigint bigint, k_numeric numeric(10,2), email text);
         INSERT INTO {s}.k
         SELECT 'c' || g, 'v' || g, 'Ci' || g, md5(g::text)::uuid, g, g + 0.5, 'u' || g || '@x.com'
         FROM generate_series(1, 20) g;",
    )
    .await;
    let columns = [
        "k_char",
        "k_varchar",
        "k_citext",
        "k_uuid",
        "k_bigint",
        "k_numeric",
    ];
    let syncs: String = columns
        .iter()
        .map(|c| {
            format!(
                "  by_{c}:
    warehouse: pg
    model: {{table: \"{{s}}.k\"}}
    app: cio
    object: person
    mode: upsert
    primary_key: {c}
    mapping: {{exclude: [{others}]}}
",
                others = columns
                    .iter()
                    .filter(|o| *o != c)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    let engine = h.engine(&syncs).await;
    for c in columns {
        let sync = format!("by_{c}");
        let first = h.run(&engine, &sync).await;
        assert_eq!(
            (first.rows_sent, first.rows_failed),
            (20, 0),
            "{c}: {first:?}"
        );
        let second = h.run(&engine, &sync).await;
        assert_eq!(
            (second.rows_unchanged, second.rows_sent, second.rows_removed),
            (20, 0, 0),
            "{c}: a second run over the same rows finds every key in the state: {second:?}"
        );
    }
    // A row leaves the model: the keys still in it are read on another path, and must match.
    h.sql("DELETE FROM {s}.k WHERE k_bigint = 20").await;
    for c in columns {
        let sync = format!("by_{c}");
        let third = h.run(&engine, &sync).await;
        assert_eq!(
            (third.rows_unchanged, third.rows_removed),
            (19, 1),
            "{c}: {third:?}"
        );
        let fourth = h.run(&engine, &sync).await;
        assert_eq!(
            (fourth.rows_unchanged, fourth.rows_new, fourth.rows_sent),
            (19, 0, 0),
            "{c}: the keys kept their state: {fourth:?}"
        );
    }
    assert!(
        h.person("c7").await.is_some(),
        "a char(6) key is sent without its padding"
    );
    assert!(
        h.person("7.50").await.is_some(),
        "numeric keys as PostgreSQL writes them"
    );
}
