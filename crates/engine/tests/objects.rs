//! Every Customer.io object beyond people and events, end to end over the real PostgreSQL and
//! the sandbox: custom objects, relationships, devices and manual segment memberships; what
//! happens to rows that leave the model (per mode, behind the runaway-removal guard); people's
//! removals, NULLs and emails that differ in case; screen views.

mod common;

use common::Harness;
use sallyport_engine::{Engine, RunOptions, RunSummary};
use sallyport_sandbox::IdentifyBy;
use serde_json::{json, Value};

async fn run_allowing_removals(engine: &Engine, sync: &str) -> RunSummary {
    engine
        .run(
            sync,
            RunOptions {
                allow_removals: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

/// Every body a preview shows (ops and removals) keeps to the official document.
async fn bodies_keep_to_the_document(engine: &Engine, sync: &str) {
    let p = engine.preview(sync, 1000, true).await.unwrap();
    assert!(
        !p.ops.is_empty() || !p.removals.is_empty(),
        "{sync}: nothing to check"
    );
    for op in p.ops.iter().chain(&p.removals) {
        let (method, path) = op.endpoint.split_once(' ').unwrap();
        let path = path.split('?').next().unwrap();
        let doc = if let Some(rest) = path.strip_prefix("/api/v1/segments/") {
            format!(
                "/api/v1/segments/{{segment_id}}/{}",
                rest.rsplit('/').next().unwrap()
            )
        } else if path == "/api/v2/batch" {
            "/api/v2/entity".to_string()
        } else {
            path.to_string()
        };
        let (path, body) = (doc.as_str(), op.body.clone());
        sallyport_contract::check_request(path, &method.to_lowercase(), &body)
            .unwrap_or_else(|e| panic!("{sync}: {body} against {path}: {e}"));
    }
}

async fn list(h: &Harness, what: &str) -> Vec<Value> {
    h.get(&format!("/_sandbox/{what}")).await.1[what]
        .as_array()
        .unwrap()
        .clone()
}

const ACCOUNTS: &str = "  accounts:
    warehouse: pg
    model: {table: \"{s}.accounts\"}
    app: cio
    object: object
    mode: mirror
    object_type_id: \"1\"
    object_id: account_id
  accounts_kept:
    warehouse: pg
    model: {table: \"{s}.accounts\"}
    app: cio
    object: object
    mode: upsert
    object_type_id: 2
    object_id: account_id
";

#[tokio::test]
async fn custom_objects_upsert_change_clear_and_mirror_behind_the_guard() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.accounts (account_id text, name text, plan text, seats int);
         INSERT INTO {s}.accounts SELECT 'acc-' || g, 'Account ' || g, 'pro', g FROM generate_series(1, 20) g;
         INSERT INTO {s}.accounts VALUES (repeat('x', 151), 'Too long', 'pro', 1), (NULL, 'No id', 'pro', 1);",
    )
    .await;
    let engine = h.engine(ACCOUNTS).await;
    bodies_keep_to_the_document(&engine, "accounts").await;

    // First sync: 20 objects; the two bad rows fail with their reasons.
    let s = h.run(&engine, "accounts").await;
    assert_eq!(s.status, "partial", "{s:?}");
    assert_eq!((s.rows_sent, s.rows_failed), (20, 2));
    let reasons: Vec<String> = engine
        .state
        .failures("accounts")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(
            "column `account_id`: the object id is 151 bytes; Customer.io allows at most 150 bytes"
        )),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("column `account_id`: the key is NULL")),
        "{reasons:?}"
    );
    let objects = list(&h, "objects").await;
    assert_eq!(objects.len(), 20);
    let acc7 = objects.iter().find(|o| o["object_id"] == "acc-7").unwrap();
    assert_eq!(acc7["object_type_id"], "1");
    assert_eq!(
        acc7["attributes"],
        json!({"name": "Account 7", "plan": "pro", "seats": 7})
    );
    h.sql("DELETE FROM {s}.accounts WHERE account_id IS NULL OR length(account_id) > 150")
        .await;

    // An incremental change: only the changed object is sent; a value that became NULL is
    // cleared in Customer.io.
    h.sql(
        "UPDATE {s}.accounts SET plan = 'enterprise' WHERE account_id = 'acc-1';
           UPDATE {s}.accounts SET plan = NULL WHERE account_id = 'acc-2';",
    )
    .await;
    let s = h.run(&engine, "accounts").await;
    assert_eq!(
        (s.status.as_str(), s.rows_changed, s.rows_sent),
        ("succeeded", 2, 2)
    );
    let objects = list(&h, "objects").await;
    let get = |id: &str| {
        objects
            .iter()
            .find(|o| o["object_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(get("acc-1")["attributes"]["plan"], "enterprise");
    assert_eq!(
        get("acc-2")["attributes"],
        json!({"name": "Account 2", "seats": 2})
    );
    assert_eq!(
        h.run(&engine, "accounts").await.rows_sent,
        0,
        "nothing changed"
    );

    // Mirror: a row that left the model deletes its object (1 of 20 is within 10%).
    h.sql("DELETE FROM {s}.accounts WHERE account_id = 'acc-20'")
        .await;
    let s = h.run(&engine, "accounts").await;
    assert_eq!(
        (s.status.as_str(), s.rows_removed),
        ("succeeded", 1),
        "{s:?}"
    );
    assert_eq!(list(&h, "objects").await.len(), 19);

    // A runaway removal (5 of 19 > 10%) stops the run before anything is removed...
    h.sql("DELETE FROM {s}.accounts WHERE account_id IN ('acc-15','acc-16','acc-17','acc-18','acc-19')")
        .await;
    let p = engine.preview("accounts", 10, false).await.unwrap();
    assert_eq!(p.rows_to_remove, 5);
    assert_eq!(p.removals.len(), 5);
    assert_eq!(p.removals[0].body["action"], "delete");
    assert_eq!(
        p.removals[0].body["identifiers"],
        json!({"object_type_id": "1", "object_id": "acc-15"})
    );
    assert!(p.removal_guard.is_some());
    let s = h.run(&engine, "accounts").await;
    assert_eq!(s.status, "failed");
    let error = s.error.unwrap();
    assert!(
        error.starts_with("5 rows left the model since the last run and would be removed (delete), more than max_removals allows (10% of 19 synced = 1): nothing was removed"),
        "{error}"
    );
    assert!(error.contains("--allow-removals"), "{error}");
    assert_eq!(list(&h, "objects").await.len(), 19);
    // ... until a run lets them through once.
    let s = run_allowing_removals(&engine, "accounts").await;
    assert_eq!((s.status.as_str(), s.rows_removed), ("succeeded", 5));
    let ids: Vec<String> = list(&h, "objects")
        .await
        .iter()
        .filter(|o| o["object_type_id"] == "1")
        .map(|o| o["object_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 14);
    assert!(!ids.contains(&"acc-15".to_string()));
    assert_eq!(h.run(&engine, "accounts").await.rows_removed, 0);

    // Upsert: rows that leave the model stay in Customer.io (only the state forgets them).
    let s = h.run(&engine, "accounts_kept").await;
    assert_eq!(s.rows_sent, 14);
    h.sql("DELETE FROM {s}.accounts WHERE account_id IN ('acc-1','acc-2','acc-3','acc-4','acc-5','acc-6')")
        .await;
    let s = h.run(&engine, "accounts_kept").await;
    assert_eq!((s.status.as_str(), s.rows_removed), ("succeeded", 6));
    let kept = list(&h, "objects")
        .await
        .iter()
        .filter(|o| o["object_type_id"] == "2")
        .count();
    assert_eq!(kept, 14, "an upsert sync removes nothing from Customer.io");
}

#[tokio::test]
async fn relationships_are_keyed_by_the_pair_and_mirrored() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.members (account_id text, user_id bigint, role text);
         INSERT INTO {s}.members SELECT 'acc-' || (g % 3), g, 'member' FROM generate_series(1, 30) g;
         INSERT INTO {s}.members VALUES ('acc-0', 3, 'twice'), ('acc-9', NULL, 'nobody');",
    )
    .await;
    let syncs = "  members:
    warehouse: pg
    model: {table: \"{s}.members\"}
    app: cio
    object: relationship
    mode: mirror
    object_type_id: \"1\"
    object_id: account_id
    person_id: user_id
    identifier: id
";
    let engine = h.engine(syncs).await;
    bodies_keep_to_the_document(&engine, "members").await;
    let s = h.run(&engine, "members").await;
    // (acc-0, 3) is in two rows: both fail, naming the pair; a NULL person fails.
    assert_eq!(
        (s.rows_read, s.rows_sent, s.rows_failed),
        (32, 29, 3),
        "{s:?}"
    );
    let failures = engine.state.failures("members").await.unwrap();
    assert!(failures.iter().any(|f| f.key == r#"["acc-0","3"]"#
        && f.reason.contains("is in more than one row of the model")));
    assert!(failures.iter().any(|f| f
        .reason
        .contains("column `account_id, user_id`: the key is NULL")));
    let rels = list(&h, "relationships").await;
    assert_eq!(rels.len(), 29);
    let r = rels
        .iter()
        .find(|r| r["object_id"] == "acc-1" && r["person"] == "1")
        .unwrap();
    assert_eq!(r["attributes"], json!({"role": "member"}));
    h.sql("DELETE FROM {s}.members WHERE role IN ('twice', 'nobody')")
        .await;

    // A changed attribute updates the relationship; the same person in another account is
    // another relationship.
    h.sql(
        "UPDATE {s}.members SET role = 'admin' WHERE user_id = 1;
           INSERT INTO {s}.members VALUES ('acc-2', 1, 'member');",
    )
    .await;
    let s = h.run(&engine, "members").await;
    assert_eq!(
        (s.rows_new, s.rows_changed, s.rows_sent),
        (2, 1, 3),
        "{s:?}"
    );
    let rels = list(&h, "relationships").await;
    assert_eq!(rels.len(), 31);
    assert!(rels.iter().any(|r| r["object_id"] == "acc-1"
        && r["person"] == "1"
        && r["attributes"]["role"] == "admin"));

    // Mirror: a pair that left the model is deleted, and only that pair.
    h.sql("DELETE FROM {s}.members WHERE account_id = 'acc-2' AND user_id = 1")
        .await;
    let s = h.run(&engine, "members").await;
    assert_eq!(s.rows_removed, 1, "{s:?}");
    let rels = list(&h, "relationships").await;
    assert_eq!(rels.len(), 30);
    assert!(!rels
        .iter()
        .any(|r| r["object_id"] == "acc-2" && r["person"] == "1"));
    assert!(rels
        .iter()
        .any(|r| r["object_id"] == "acc-1" && r["person"] == "1"));

    // The guard: 10 of 30 is more than 10%.
    h.sql("DELETE FROM {s}.members WHERE user_id <= 10").await;
    let s = h.run(&engine, "members").await;
    assert_eq!(s.status, "failed");
    assert!(s.error.unwrap().contains("10 rows left the model"));
    let s = run_allowing_removals(&engine, "members").await;
    assert_eq!(s.rows_removed, 10);
    assert_eq!(list(&h, "relationships").await.len(), 20);
}

#[tokio::test]
async fn devices_are_added_moved_and_deleted_from_their_person() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.devices (token text, user_id text, platform text, last_seen_at timestamptz, app_version text);
         INSERT INTO {s}.devices SELECT 'tok-' || g, 'u' || g, CASE WHEN g % 2 = 0 THEN 'ios' ELSE 'Android' END,
             timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute', '2.' || g
         FROM generate_series(1, 10) g;
         INSERT INTO {s}.devices VALUES ('tok-w', 'u1', 'windows', NULL, NULL), (NULL, 'u2', 'ios', NULL, NULL);",
    )
    .await;
    let syncs = "  devices:
    warehouse: pg
    model: {table: \"{s}.devices\"}
    app: cio
    object: device
    mode: mirror
    person_id: user_id
    device_id: token
    platform: platform
    last_used: last_seen_at
    max_removals: 3
";
    let engine = h.engine(syncs).await;
    bodies_keep_to_the_document(&engine, "devices").await;
    let s = h.run(&engine, "devices").await;
    assert_eq!((s.rows_sent, s.rows_failed), (10, 2), "{s:?}");
    let reasons: Vec<String> = engine
        .state
        .failures("devices")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.reason)
        .collect();
    assert!(reasons.contains(
        &"row tok-w: column `platform`: `windows` is not a platform Customer.io knows: ios or android"
            .to_string()
    ), "{reasons:?}");
    assert!(reasons
        .iter()
        .any(|r| r.contains("column `token`: the key is NULL")));
    let devices = list(&h, "devices").await;
    assert_eq!(devices.len(), 10);
    let d = devices.iter().find(|d| d["token"] == "tok-3").unwrap();
    assert_eq!(d["person"], "u3");
    assert_eq!(d["platform"], "android", "platforms are sent in lower case");
    assert_eq!(d["last_used"], 1767225780);
    assert_eq!(d["attributes"], json!({"app_version": "2.3"}));
    h.sql("DELETE FROM {s}.devices WHERE token IS NULL OR token = 'tok-w'")
        .await;

    // A token that moves to another person is added to them.
    h.sql("UPDATE {s}.devices SET user_id = 'u99' WHERE token = 'tok-4'")
        .await;
    let s = h.run(&engine, "devices").await;
    assert_eq!((s.rows_changed, s.rows_sent), (1, 1));
    let devices = list(&h, "devices").await;
    assert_eq!(
        devices.iter().find(|d| d["token"] == "tok-4").unwrap()["person"],
        "u99"
    );

    // Mirror: a device that left the model is deleted from the person it was added to.
    h.sql("DELETE FROM {s}.devices WHERE token IN ('tok-4', 'tok-5')")
        .await;
    let p = engine.preview("devices", 5, false).await.unwrap();
    assert_eq!(
        p.removals[0].body,
        json!({"type": "person", "identifiers": {"id": "u99"}, "action": "delete_device", "device": {"token": "tok-4"}})
    );
    let s = h.run(&engine, "devices").await;
    assert_eq!(s.rows_removed, 2, "{s:?}");
    assert_eq!(list(&h, "devices").await.len(), 8);
    // max_removals: 3 (a count) lets 3 through, not 4.
    h.sql("DELETE FROM {s}.devices WHERE token IN ('tok-6', 'tok-7', 'tok-8', 'tok-9')")
        .await;
    let s = h.run(&engine, "devices").await;
    assert_eq!(s.status, "failed");
    assert!(s
        .error
        .unwrap()
        .contains("more than max_removals allows (3)"));
    assert_eq!(
        run_allowing_removals(&engine, "devices").await.rows_removed,
        4
    );
    assert_eq!(list(&h, "devices").await.len(), 4);
}

#[tokio::test]
async fn segment_memberships_add_in_requests_of_1000_and_mirror() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.vip AS SELECT 'u' || g AS user_id FROM generate_series(1, 2500) g;
         INSERT INTO {s}.vip VALUES (repeat('x', 151));",
    )
    .await;
    let syncs = "  vip:
    warehouse: pg
    model: {table: \"{s}.vip\"}
    app: cio
    object: segment_membership
    mode: mirror
    segment_id: 42
    person_id: user_id
  vip_added:
    warehouse: pg
    model: {table: \"{s}.vip\"}
    app: cio
    object: segment_membership
    mode: upsert
    segment_id: \"43\"
    person_id: user_id
";
    let engine = h.engine(syncs).await;
    bodies_keep_to_the_document(&engine, "vip").await;
    let p = engine.preview("vip", 1, false).await.unwrap();
    assert_eq!(
        p.ops[0].endpoint,
        "POST /api/v1/segments/42/add_customers?id_type=id"
    );
    assert_eq!(p.ops[0].body, json!({"ids": ["u1"]}));
    let before = h.stats().await["requests"].as_u64().unwrap();
    let s = h.run(&engine, "vip").await;
    assert_eq!((s.rows_sent, s.rows_failed), (2500, 1), "{s:?}");
    let requests = h.stats().await["requests"].as_u64().unwrap() - before;
    assert_eq!(
        requests,
        1 + 3,
        "the region check, then 1000 + 1000 + 500 people"
    );
    let members = h.get("/_sandbox/segments/42").await.1["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 2500);
    assert_eq!(
        h.run(&engine, "vip").await.rows_sent,
        0,
        "each person is added once"
    );
    h.sql("DELETE FROM {s}.vip WHERE length(user_id) > 150")
        .await;

    // Mirror: people whose row left the model are removed from the segment (in one request).
    h.sql("DELETE FROM {s}.vip WHERE user_id IN ('u1', 'u2', 'u3')")
        .await;
    let s = h.run(&engine, "vip").await;
    assert_eq!(s.rows_removed, 3, "{s:?}");
    let members = h.get("/_sandbox/segments/42").await.1["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 2497);
    assert!(!members.as_array().unwrap().contains(&json!("u1")));

    // Upsert (add only): leaving the model removes nobody.
    assert_eq!(h.run(&engine, "vip_added").await.rows_sent, 2497);
    h.sql("DELETE FROM {s}.vip WHERE user_id IN ('u4', 'u5')")
        .await;
    let s = h.run(&engine, "vip_added").await;
    assert_eq!(s.status, "succeeded");
    let members = h.get("/_sandbox/segments/43").await.1["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 2497);

    // The guard, for a mirror: most of the model gone.
    h.sql("DELETE FROM {s}.vip WHERE user_id <> 'u2500'").await;
    let s = h.run(&engine, "vip").await;
    assert_eq!(s.status, "failed");
    assert!(s.error.unwrap().contains("2496 rows left the model"));
    assert_eq!(
        h.get("/_sandbox/segments/42").await.1["members"]
            .as_array()
            .unwrap()
            .len(),
        2497
    );
}

#[tokio::test]
async fn people_who_leave_are_deleted_or_suppressed_behind_the_guard() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.users AS SELECT g AS user_id, 'Name' || g AS name FROM generate_series(1, 40) g;",
    )
    .await;
    let syncs = "  deleted:
    warehouse: pg
    model: {sql: \"select * from {s}.users where user_id <= 20\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    on_removal: delete
  suppressed:
    warehouse: pg
    model: {sql: \"select * from {s}.users where user_id > 20\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    on_removal: suppress
    max_removals: 25%
  kept:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
";
    let engine = h.engine(syncs).await;
    for sync in ["deleted", "suppressed", "kept"] {
        assert_eq!(h.run(&engine, sync).await.status, "succeeded");
    }
    assert_eq!(h.stats().await["people"], 40);

    // delete: 2 of 20 (10%) pass; the delete action is sent for each.
    h.sql("DELETE FROM {s}.users WHERE user_id IN (1, 2)").await;
    let p = engine.preview("deleted", 5, false).await.unwrap();
    assert_eq!(p.rows_to_remove, 2);
    assert_eq!(
        p.removals[0].body,
        json!({"type": "person", "identifiers": {"id": "1"}, "action": "delete"})
    );
    assert_eq!(p.removal_guard, None);
    bodies_keep_to_the_document(&engine, "deleted").await;
    let s = h.run(&engine, "deleted").await;
    assert_eq!((s.status.as_str(), s.rows_removed), ("succeeded", 2));
    assert!(h.person("1").await.is_none());
    assert_eq!(list(&h, "deleted").await, vec![json!("1"), json!("2")]);

    // suppress: 5 of 20 (25%) pass, 6 would not.
    h.sql("DELETE FROM {s}.users WHERE user_id BETWEEN 21 AND 26")
        .await;
    let s = h.run(&engine, "suppressed").await;
    assert_eq!(s.status, "failed");
    assert!(s
        .error
        .unwrap()
        .starts_with("6 rows left the model since the last run and would be removed (suppress), more than max_removals allows (25% of 20 synced = 5)"));
    assert!(h.person("21").await.is_some(), "nothing was removed");
    let s = run_allowing_removals(&engine, "suppressed").await;
    assert_eq!(s.rows_removed, 6);
    assert!(h.person("21").await.is_none());
    assert_eq!(list(&h, "suppressed").await.len(), 6);

    // keep (the default): nobody is removed from Customer.io.
    let s = h.run(&engine, "kept").await;
    assert_eq!((s.status.as_str(), s.rows_removed), ("succeeded", 8));
    assert_eq!(h.stats().await["people"], 32);
}

#[tokio::test]
async fn nulls_are_skipped_until_they_clear_a_value_or_always_sent() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.users (user_id int, plan text, nickname text);
         INSERT INTO {s}.users VALUES (1, 'pro', NULL), (2, 'free', 'bo');",
    )
    .await;
    let syncs = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
  people_send:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    nulls: send
";
    let engine = h.engine(syncs).await;
    // skip: a new person's NULL is left out.
    let p = engine.preview("people", 5, false).await.unwrap();
    assert_eq!(p.ops[0].body["attributes"], json!({"plan": "pro"}));
    h.run(&engine, "people").await;
    assert_eq!(
        h.person("1").await.unwrap()["attributes"],
        json!({"plan": "pro"})
    );
    // A value that becomes NULL is cleared (sent as ""); a NULL that had no value still is
    // left out.
    h.sql("UPDATE {s}.users SET plan = NULL WHERE user_id = 1; UPDATE {s}.users SET nickname = NULL WHERE user_id = 2;")
        .await;
    let p = engine.preview("people", 5, false).await.unwrap();
    let body = |id: &str| p.ops.iter().find(|o| o.key == id).unwrap().body["attributes"].clone();
    assert_eq!(body("1"), json!({"plan": ""}));
    assert_eq!(body("2"), json!({"plan": "free", "nickname": ""}));
    h.run(&engine, "people").await;
    assert_eq!(h.person("1").await.unwrap()["attributes"], json!({}));
    assert_eq!(
        h.person("2").await.unwrap()["attributes"],
        json!({"plan": "free"})
    );
    assert_eq!(
        h.run(&engine, "people").await.rows_sent,
        0,
        "nothing changed"
    );
    // A value again, then NULL again: cleared again.
    h.sql("UPDATE {s}.users SET plan = 'team' WHERE user_id = 1")
        .await;
    assert_eq!(h.run(&engine, "people").await.rows_sent, 1);
    h.sql("UPDATE {s}.users SET plan = NULL WHERE user_id = 1")
        .await;
    let p = engine.preview("people", 5, false).await.unwrap();
    assert_eq!(p.ops[0].body["attributes"], json!({"plan": ""}));

    // send: every NULL is sent as "", new person or not.
    let p = engine.preview("people_send", 5, false).await.unwrap();
    let one = p.ops.iter().find(|o| o.key == "1").unwrap();
    assert_eq!(one.body["attributes"], json!({"plan": "", "nickname": ""}));
}

#[tokio::test]
async fn emails_that_differ_only_in_case_are_one_person() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Email).await;
    h.sql(
        "CREATE TABLE {s}.users (email text, name text);
         INSERT INTO {s}.users VALUES ('Jane@X.com', 'Jane'), ('jane@x.com', 'Jane again'), ('bob@x.com', 'Bob');",
    )
    .await;
    let syncs = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: email
    identifier: email
";
    let engine = h.engine(syncs).await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_sent, s.rows_failed), (1, 2), "{s:?}");
    let failures = engine.state.failures("people").await.unwrap();
    assert_eq!(failures.len(), 1, "one key: jane@x.com");
    assert!(
        failures[0]
            .reason
            .contains("`Jane@X.com`, `jane@x.com` are one person to Customer.io"),
        "{}",
        failures[0].reason
    );
    assert!(h.person("jane@x.com").await.is_none(), "neither is sent");
    // Fixed in the model: sent, and a later change of case alone is not a new person.
    h.sql("DELETE FROM {s}.users WHERE name = 'Jane again'")
        .await;
    assert_eq!(h.run(&engine, "people").await.rows_sent, 1);
    assert_eq!(
        h.person("JANE@x.com").await.unwrap()["attributes"]["name"],
        "Jane"
    );
    h.sql("UPDATE {s}.users SET email = 'JANE@X.COM' WHERE name = 'Jane'")
        .await;
    let s = h.run(&engine, "people").await;
    assert_eq!((s.rows_new, s.rows_removed), (0, 0), "{s:?}");
}

#[tokio::test]
async fn screen_views_are_tracked_once() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.screens (view_id text, user_id text, anon text, screen text, at bigint, app_version text);
         INSERT INTO {s}.screens VALUES ('v1', 'u1', NULL, 'Dashboard', 1700000000, '2.1'),
                                        ('v2', NULL, 'anon-1', 'Settings', 1700000001, '2.1');",
    )
    .await;
    let syncs = "  screens:
    warehouse: pg
    model: {table: \"{s}.screens\"}
    app: cio
    object: event
    mode: insert
    event_type: screen
    event_id: view_id
    customer_id: user_id
    anonymous_id: anon
    timestamp: at
    event_name: screen
";
    let engine = h.engine(syncs).await;
    let p = engine.preview("screens", 5, false).await.unwrap();
    assert_eq!(p.ops[0].body["action"], "screen");
    assert_eq!(p.ops[0].body["name"], "Dashboard");
    sallyport_contract::check_request("/api/v2/entity", "post", &p.ops[0].body).unwrap();
    assert_eq!(p.ops[1].body["type"], "screen");
    sallyport_contract::check_request("/api/v1/events", "post", &p.ops[1].body).unwrap();
    assert_eq!(h.run(&engine, "screens").await.rows_sent, 2);
    let events = h.get("/_sandbox/events").await.1["events"].clone();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["screen", "screen"]);
    assert_eq!(h.run(&engine, "screens").await.rows_sent, 0);
}

#[tokio::test]
async fn device_tokens_of_any_length_and_attributes_sent_as_text() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.devices (token text, user_id text, platform text, build int, push_enabled boolean, tags text[]);
         INSERT INTO {s}.devices VALUES (repeat('f', 163), 'u1', 'android', 42, true, NULL),
                                        ('tok-2', 'u2', 'ios', 7, false, ARRAY['a']);",
    )
    .await;
    let syncs = "  devices:
    warehouse: pg
    model: {table: \"{s}.devices\"}
    app: cio
    object: device
    mode: upsert
    person_id: user_id
    device_id: token
    platform: platform
";
    let engine = h.engine(syncs).await;
    let s = h.run(&engine, "devices").await;
    assert_eq!((s.rows_sent, s.rows_failed), (1, 1), "{s:?}");
    let devices = list(&h, "devices").await;
    assert_eq!(devices[0]["token"].as_str().unwrap().len(), 163);
    assert_eq!(
        devices[0]["attributes"],
        json!({"build": "42", "push_enabled": "true"})
    );
    let f = engine.state.failures("devices").await.unwrap();
    assert_eq!(
        f[0].reason,
        "row tok-2: column `tags`: a device attribute is text, a number or a boolean; this value is an array"
    );
}

#[tokio::test]
async fn an_email_state_written_in_another_case_is_folded_not_removed() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Email).await;
    h.sql(
        "CREATE TABLE {s}.users (email text, name text);
         INSERT INTO {s}.users VALUES ('Alice@X.com', 'Alice'), ('bob@x.com', 'Bob');",
    )
    .await;
    let syncs = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: email
    identifier: email
    on_removal: delete
    max_removals: 100%
";
    let engine = h.engine(syncs).await;
    // A state as an earlier version wrote it: the email as the model has it.
    let run = engine.state.begin_run("people", false, None).await.unwrap();
    engine
        .state
        .commit(
            "people",
            run,
            sallyport_state::Commit {
                accepted: vec![("Alice@X.com".into(), 7), ("bob@x.com".into(), 8)],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = h.run(&engine, "people").await;
    assert_eq!(
        (s.rows_new, s.rows_changed, s.rows_removed),
        (0, 2, 0),
        "{s:?}"
    );
    assert_eq!(h.stats().await["deleted_people"], 0, "nobody deleted");
    assert!(h.person("alice@x.com").await.is_some());
    assert_eq!(
        engine
            .state
            .previous("people", &["alice@x.com"])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn changing_the_segment_adds_everyone_to_the_new_one() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql("CREATE TABLE {s}.vip AS SELECT 'u' || g AS user_id FROM generate_series(1, 20) g;")
        .await;
    let syncs = |segment: u32| {
        format!(
            "  vip:
    warehouse: pg
    model: {{table: \"{{s}}.vip\"}}
    app: cio
    object: segment_membership
    mode: upsert
    segment_id: {segment}
    person_id: user_id
"
        )
    };
    let engine = h.engine(&syncs(42)).await;
    assert_eq!(h.run(&engine, "vip").await.rows_sent, 20);
    let engine = h.engine(&syncs(44)).await;
    let s = h.run(&engine, "vip").await;
    assert_eq!((s.rows_changed, s.rows_sent), (20, 20), "{s:?}");
    let members = |v: serde_json::Value| v["members"].as_array().unwrap().len();
    assert_eq!(members(h.get("/_sandbox/segments/44").await.1), 20);
    assert_eq!(members(h.get("/_sandbox/segments/42").await.1), 20);
}

#[tokio::test]
async fn a_suppressed_person_is_not_added_back() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql("CREATE TABLE {s}.users AS SELECT g AS user_id, 'N' || g AS name FROM generate_series(1, 10) g;")
        .await;
    let syncs = "  people:
    warehouse: pg
    model: {table: \"{s}.users\"}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
    on_removal: suppress
";
    let engine = h.engine(syncs).await;
    h.run(&engine, "people").await;
    h.sql("DELETE FROM {s}.users WHERE user_id = 3").await;
    assert_eq!(h.run(&engine, "people").await.rows_removed, 1);
    h.sql("INSERT INTO {s}.users VALUES (3, 'back')").await;
    assert_eq!(h.run(&engine, "people").await.rows_sent, 1);
    assert!(
        h.person("3").await.is_none(),
        "Customer.io refuses a suppressed identifier"
    );
    assert_eq!(h.stats().await["suppressed_ignored"], 1);
}

#[tokio::test]
async fn relationships_and_devices_in_upsert_mode_remove_nothing() {
    sallyport_testkit::needs_postgres!();
    let h = Harness::new(IdentifyBy::Id).await;
    h.sql(
        "CREATE TABLE {s}.members AS SELECT 'acc-1' AS account_id, 'u' || g AS user_id FROM generate_series(1, 5) g;
         CREATE TABLE {s}.devices AS SELECT 'tok-' || g AS token, 'u' || g AS user_id, 'ios' AS platform FROM generate_series(1, 5) g;",
    )
    .await;
    let syncs = "  members:
    warehouse: pg
    model: {table: \"{s}.members\"}
    app: cio
    object: relationship
    mode: upsert
    object_type_id: 1
    object_id: account_id
    person_id: user_id
  devices:
    warehouse: pg
    model: {table: \"{s}.devices\"}
    app: cio
    object: device
    mode: upsert
    person_id: user_id
    device_id: token
    platform: platform
";
    let engine = h.engine(syncs).await;
    assert_eq!(h.run(&engine, "members").await.rows_sent, 5);
    assert_eq!(h.run(&engine, "devices").await.rows_sent, 5);
    h.sql("DELETE FROM {s}.members WHERE user_id IN ('u1', 'u2', 'u3'); DELETE FROM {s}.devices WHERE token IN ('tok-1', 'tok-2', 'tok-3');")
        .await;
    let s = h.run(&engine, "members").await;
    assert_eq!(
        (s.status.as_str(), s.rows_removed),
        ("succeeded", 3),
        "{s:?}"
    );
    let s = h.run(&engine, "devices").await;
    assert_eq!(
        (s.status.as_str(), s.rows_removed),
        ("succeeded", 3),
        "{s:?}"
    );
    assert_eq!(
        list(&h, "relationships").await.len(),
        5,
        "upsert keeps them in Customer.io"
    );
    assert_eq!(list(&h, "devices").await.len(), 5);
}
