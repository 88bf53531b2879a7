//! `sallyport sync` as a process that is interrupted, killed, or started twice.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sallyport_sandbox::{Faults, RunningSandbox, SandboxConfig};
use serde_json::Value;

struct Setup {
    dir: tempfile::TempDir,
    sandbox: RunningSandbox,
    pg: tokio_postgres::Client,
    http: reqwest::Client,
    /// The test's schema, dropped with the setup.
    _schema: sallyport_testkit::Schema,
    /// MariaDB's URL and the test's database there, dropped with the setup.
    mysql: Option<(String, String)>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some((url, db)) = self.mysql.take() {
            // On a thread of its own: the test's runtime is ending.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use mysql_async::prelude::Queryable;
                    if let Ok(mut c) = mysql_async::Conn::from_url(&url).await {
                        let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {db}")).await;
                        let _ = c.disconnect().await;
                    }
                });
            })
            .join();
        }
    }
}

impl Setup {
    async fn new(tables: &str, syncs: &str, delivery: &str) -> Setup {
        let f = sallyport_testkit::Fixture::start(SandboxConfig::default()).await;
        f.sql(tables).await;
        let sallyport_testkit::Fixture {
            pg,
            schema,
            sandbox,
            dir,
        } = f;
        let config = format!(
            "warehouses:\n  pg: {{type: postgres, url: \"{}\", sallyport_schema: \"{}\"}}\napps:\n  cio: {{type: customerio, site_id: sandbox-site, api_key: sandbox-key, track_url: \"{}\", delivery: {delivery}}}\nsyncs:\n{}",
            sallyport_testkit::pg_url(),
            &*schema,
            sandbox.url(),
            syncs.replace("{s}", &schema)
        );
        std::fs::write(dir.path().join("sallyport.yaml"), config).unwrap();
        Setup {
            dir,
            sandbox,
            pg,
            _schema: schema,
            http: reqwest::Client::new(),
            mysql: None,
        }
    }

    /// Puts `settings` (the `{...}` after `pg: `) in place of the PostgreSQL warehouse of the
    /// config.
    fn warehouse(&self, settings: &str) {
        let path = self.dir.path().join("sallyport.yaml");
        let config = std::fs::read_to_string(&path).unwrap();
        let config: Vec<String> = config
            .lines()
            .map(|l| {
                if l.starts_with("  pg: {type: postgres") {
                    format!("  pg: {settings}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(config.iter().any(|l| *l == format!("  pg: {settings}")));
        std::fs::write(&path, config.join("\n") + "\n").unwrap();
    }

    /// The same over a MariaDB database of the test's own: `tables` run there (`{s}` standing
    /// for the database), and the syncs' warehouse `pg` is that database.
    async fn mysql(url: &str, tables: &str, syncs: &str, delivery: &str) -> Setup {
        use mysql_async::prelude::Queryable;
        let db = sallyport_testkit::unique("kill");
        let mut c = mysql_async::Conn::from_url(url).await.unwrap();
        c.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
        c.query_drop(tables.replace("{s}", &db)).await.unwrap();
        let _ = c.disconnect().await;
        let mut s = Setup::new("", &syncs.replace("{s}", &db), delivery).await;
        s.warehouse(&format!(
            "{{type: mysql, url: \"{url}\", sallyport_schema: \"{db}\"}}"
        ));
        s.mysql = Some((url.to_string(), db));
        s
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .current_dir(self.dir.path())
            .args(args)
            .env_remove("SALLYPORT_CONFIG")
            .env("CI", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn stats(&self) -> Value {
        self.get("/_sandbox/stats").await
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{}", self.sandbox.url(), path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn faults(&self, f: Faults) {
        self.sandbox.shared().set_faults(f).unwrap();
    }

    async fn wait_for_people(&self, n: u64) {
        let start = Instant::now();
        while self.stats().await["people"].as_u64().unwrap() < n {
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn state_count(dir: &Path, sync: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("sallyport.db")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM sync_rows WHERE sync = ?1",
        [sync],
        |r| r.get(0),
    )
    .unwrap()
}

const USERS: &str = "CREATE TABLE {s}.users AS
    SELECT g AS user_id, 'user' || g || '@example.com' AS email, 'Name' || g AS name, g % 7 AS tier
    FROM generate_series(1, 20000) g;";
const PEOPLE: &str = "  people: {warehouse: pg, model: {table: \"{s}.users\"}, app: cio, object: person, mode: upsert, primary_key: user_id}\n";

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_commits_what_was_acknowledged_and_exits_130() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new(USERS, PEOPLE, "{concurrency: 2, batch_bytes: 40KB}").await;
    s.faults(Faults {
        latency_ms: 40,
        ..Default::default()
    });
    let child = s.spawn(&["sync", "people"]);
    s.wait_for_people(2000).await;
    signal(&child, "-INT");
    let (code, out) = finish(child);
    assert_eq!(code, Some(130), "{out}");
    assert!(out.contains("people: interrupted"), "{out}");
    let delivered = s.stats().await["people"].as_i64().unwrap();
    assert!(delivered < 20000, "interrupted before the end: {delivered}");
    assert_eq!(
        state_count(s.dir.path(), "people"),
        delivered,
        "committed exactly what was acknowledged"
    );

    s.faults(Faults::default());
    let (code, out) = finish(s.spawn(&["sync", "people", "--json"]));
    assert_eq!(code, Some(0), "{out}");
    let j: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(j["rows_sent"].as_i64().unwrap(), 20000 - delivered);
    assert_eq!(s.stats().await["people"], 20000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_cannot_run_the_same_sync() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new(USERS, PEOPLE, "{concurrency: 1, batch_bytes: 40KB}").await;
    s.faults(Faults {
        latency_ms: 30,
        ..Default::default()
    });
    let first = s.spawn(&["sync", "people"]);
    s.wait_for_people(500).await;
    let (code, out) = finish(s.spawn(&["sync", "people"]));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("people is already running"), "{out}");
    s.faults(Faults::default());
    let (code, out) = finish(first);
    assert_eq!(code, Some(0), "{out}");
    let (code, _) = finish(s.spawn(&["sync", "people"]));
    assert_eq!(code, Some(0), "the lock was released");
}

/// SIGKILL at random moments (while reading, with requests in flight, right after
/// acknowledgements), at least 20 times over 100,000 people and 100,000 events; then one run
/// that finishes. Customer.io must hold exactly the expected people, every event exactly once,
/// and a further run must send nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    sigkill_at_random_moments("local", "postgres").await;
}

/// The same with change detection in the warehouse: its snapshot follows acknowledgements.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_with_change_detection_in_the_warehouse() {
    sigkill_at_random_moments("warehouse", "postgres").await;
}

/// And with Redshift's SQL (staging table and MERGE), PostgreSQL as the stand-in.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_with_change_detection_in_redshift() {
    sigkill_at_random_moments("warehouse", "redshift").await;
}

/// And with change detection in MariaDB: its snapshot table follows acknowledgements too.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_with_change_detection_in_mysql() {
    sallyport_testkit::needs_postgres!();
    let Some(url) = sallyport_testkit::service("SALLYPORT_TEST_MYSQL_URL", "MariaDB") else {
        return;
    };
    let tables = format!(
        "CREATE TABLE {{s}}.d (n int);
         INSERT INTO {{s}}.d VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9);
         CREATE TABLE {{s}}.g AS SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n + 1 AS g
            FROM {{s}}.d a, {{s}}.d b, {{s}}.d c, {{s}}.d e, {{s}}.d f;
         CREATE TABLE {{s}}.users AS
            SELECT g AS user_id, CONCAT('user', g, '@example.com') AS email, CONCAT('Name', g) AS name,
                   g % 7 AS tier, g * 1.25 AS ltv
            FROM {{s}}.g;
         CREATE TABLE {{s}}.events AS
            SELECT CONCAT('ev-', g) AS event_id, CASE WHEN g % 200 = 0 THEN NULL ELSE (g % {N}) + 1 END AS user_id,
                   CONCAT('anon-', g) AS anon, 'purchase' AS name, g AS amount,
                   1700000000 + g AS at
            FROM {{s}}.g;"
    );
    let s = Setup::mysql(
        &url,
        &tables,
        &KILLED_SYNCS.replace("MODE", "warehouse"),
        KILLED_DELIVERY,
    )
    .await;
    killed_at_random_moments(s, "mysql warehouse", N).await;
}

/// And with change detection in Snowflake (its stand-in, fakesnow): a transient staging table
/// and one MERGE per batch. Fewer rows: the stand-in is an interpreter over DuckDB.
#[cfg(feature = "snowflake")]
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_with_change_detection_in_snowflake() {
    sallyport_testkit::needs_postgres!();
    let Some(url) =
        sallyport_testkit::service("SALLYPORT_TEST_SNOWFLAKE_URL", "the Snowflake stand-in")
    else {
        return;
    };
    const ROWS: i64 = 5_000;
    let db = sallyport_testkit::unique("kill").to_ascii_uppercase();
    let users: Vec<String> = (1..=ROWS)
        .map(|g| {
            format!(
                "({g}, 'user{g}@example.com', 'Name{g}', {}, {})",
                g % 7,
                g as f64 * 1.25
            )
        })
        .collect();
    let events: Vec<String> = (1..=ROWS)
        .map(|g| {
            let user = if g % 200 == 0 {
                "NULL".to_string()
            } else {
                ((g % ROWS) + 1).to_string()
            };
            format!(
                "('ev-{g}', {user}, 'anon-{g}', 'purchase', {g}, {})",
                1_700_000_000 + g
            )
        })
        .collect();
    for sql in [
        format!("CREATE DATABASE {db}"),
        format!("CREATE SCHEMA {db}.PUBLIC"),
        format!("CREATE TABLE {db}.PUBLIC.USERS (\"user_id\" NUMBER, \"email\" VARCHAR, \"name\" VARCHAR, \"tier\" NUMBER, \"ltv\" NUMBER(12,2))"),
        format!("INSERT INTO {db}.PUBLIC.USERS VALUES {}", users.join(", ")),
        format!("CREATE TABLE {db}.PUBLIC.EVENTS (\"event_id\" VARCHAR, \"user_id\" NUMBER, \"anon\" VARCHAR, \"name\" VARCHAR, \"amount\" NUMBER, \"at\" NUMBER)"),
        format!("INSERT INTO {db}.PUBLIC.EVENTS VALUES {}", events.join(", ")),
    ] {
        snowflake_sql(&url, &sql).await;
    }
    let s = Setup::new(
        "",
        &KILLED_SYNCS
            .replace("MODE", "warehouse")
            .replace("{s}", &format!("{db}.PUBLIC")),
        KILLED_DELIVERY,
    )
    .await;
    s.warehouse(&format!("{{type: snowflake, account: test, user: sallyport, password: pw, warehouse: COMPUTE_WH, database: {db}, schema: PUBLIC, url: \"{url}\"}}"));
    killed_at_random_moments(s, "snowflake warehouse", ROWS).await;
}

/// Runs one statement on the Snowflake stand-in.
#[cfg(feature = "snowflake")]
async fn snowflake_sql(url: &str, sql: &str) {
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{url}/session/v1/login-request"))
        .json(&serde_json::json!({"data": {"ACCOUNT_NAME": "TEST", "LOGIN_NAME": "u", "PASSWORD": "p", "SESSION_PARAMETERS": {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let answer: Value = http
        .post(format!("{url}/queries/v1/query-request"))
        .header("Authorization", format!("Snowflake Token=\"{token}\""))
        .json(&serde_json::json!({"sqlText": sql, "asyncExec": false, "sequenceId": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["success"],
        true,
        "{}: {answer}",
        &sql[..sql.len().min(200)]
    );
}

/// The rows of the SIGKILL tests.
const N: i64 = 100_000;

/// The syncs of the SIGKILL tests, with their change detection as `MODE`.
const KILLED_SYNCS: &str = "  people: {warehouse: pg, model: {table: \"{s}.users\"}, app: cio, object: person, mode: upsert, primary_key: user_id, change_detection: MODE}
  events:
    change_detection: MODE
    warehouse: pg
    model: {table: \"{s}.events\"}
    app: cio
    object: event
    mode: insert
    event_type: track
    event_id: event_id
    customer_id: user_id
    anonymous_id: anon
    timestamp: at
    event_name: name
";

const KILLED_DELIVERY: &str = "{requests_per_second: 5000, concurrency: 8, batch_bytes: 100KB}";

async fn sigkill_at_random_moments(mode: &str, kind: &str) {
    sallyport_testkit::needs_postgres!();
    let tables = format!(
        "CREATE TABLE {{s}}.users AS
            SELECT g AS user_id, 'user' || g || '@example.com' AS email, 'Name' || g AS name,
                   g % 7 AS tier, g * 1.25 AS ltv
            FROM generate_series(1, {N}) g;
         CREATE TABLE {{s}}.events AS
            SELECT 'ev-' || g AS event_id, CASE WHEN g % 200 = 0 THEN NULL ELSE (g % {N}) + 1 END AS user_id,
                   'anon-' || g AS anon, 'purchase' AS name, g AS amount,
                   1700000000 + g AS at
            FROM generate_series(1, {N}) g;"
    );
    let s = Setup::new(
        &tables,
        &KILLED_SYNCS.replace("MODE", mode),
        KILLED_DELIVERY,
    )
    .await;
    if kind != "postgres" {
        s.warehouse(&format!(
            "{{type: {kind}, url: \"{}\", sallyport_schema: \"{}\"}}",
            sallyport_testkit::pg_url(),
            &*s._schema
        ));
    }
    killed_at_random_moments(s, &format!("{kind} {mode}"), N).await;
}

/// Kills `sallyport sync` 20 times at random moments, then checks that one more run leaves the
/// sandbox holding exactly the model, every event once, and that a further run sends nothing.
async fn killed_at_random_moments(s: Setup, mode: &str, n: i64) {
    s.faults(Faults {
        latency_ms: 3,
        ..Default::default()
    });
    let mut rng = fastrand::Rng::with_seed(2026);
    let (mut kills, mut attempts) = (0, 0);
    while kills < 20 {
        attempts += 1;
        assert!(
            attempts < 100,
            "only {kills} kills landed while a run was going"
        );
        // Alternate the order so that kills land in both syncs.
        let order = if attempts % 2 == 0 {
            ["people", "events"]
        } else {
            ["events", "people"]
        };
        let mut child = s.spawn(&["sync", order[0], order[1]]);
        tokio::time::sleep(Duration::from_millis(rng.u64(20..2000))).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    s.faults(Faults::default());
    let (code, out) = finish(s.spawn(&["sync", "people", "events"]));
    assert_eq!(code, Some(0), "{out}");

    // Exactly the expected people, with the expected attributes.
    let stats = s.stats().await;
    assert_eq!(stats["people"].as_i64(), Some(n), "{stats}");
    let mut seen = 0;
    for offset in (0..n).step_by(10_000) {
        let page = s
            .get(&format!("/_sandbox/people?limit=10000&offset={offset}"))
            .await;
        for p in page["people"].as_array().unwrap() {
            let id: i64 = p["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(p["email"], format!("user{id}@example.com"));
            assert_eq!(p["attributes"]["name"], format!("Name{id}"));
            assert_eq!(p["attributes"]["tier"], id % 7);
            assert_eq!(p["attributes"]["ltv"].as_f64().unwrap(), id as f64 * 1.25);
            seen += 1;
        }
    }
    assert_eq!(seen, n);

    // Every event exactly once: re-sends show only as duplicates.
    assert_eq!(stats["events"].as_i64(), Some(n), "{stats}");
    let events = s.get("/_sandbox/events?limit=200000").await;
    let ids: HashSet<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, n, "one stored event per event id");
    for g in [1, 200, n / 2, n] {
        assert!(ids.contains(
            sallyport_destinations::customerio::dedup_id("events", &format!("ev-{g}")).as_str()
        ));
    }
    println!(
        "{mode}: {kills} kills in {attempts} runs; duplicates absorbed by dedup ids: {}",
        stats["duplicate_events"]
    );

    // A further run sends nothing.
    let (code, out) = finish(s.spawn(&["sync", "people", "events", "--json"]));
    assert_eq!(code, Some(0), "{out}");
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let j: Value = serde_json::from_str(line).unwrap();
        assert_eq!(j["rows_sent"], 0, "{line}");
        assert_eq!(j["rows_failed"], 0, "{line}");
    }
    let _ = &s.pg;
}

/// The same for every other object: custom objects, relationships, devices and segment
/// memberships synced in mirror mode, with SIGKILLs at random moments both while they are
/// added and while rows that left the model are removed. Customer.io ends holding exactly the
/// model, and a further run sends and removes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_every_object_sync_loses_and_doubles_nothing() {
    sallyport_testkit::needs_postgres!();
    const N: i64 = 20_000;
    let tables = format!(
        "CREATE TABLE {{s}}.accounts AS
            SELECT 'acc-' || g AS account_id, 'Account ' || g AS name, g % 9 AS tier FROM generate_series(1, {N}) g;
         CREATE TABLE {{s}}.members AS
            SELECT 'acc-' || (g % 500 + 1) AS account_id, 'u' || g AS user_id, 'role' || (g % 3) AS role FROM generate_series(1, {N}) g;
         CREATE TABLE {{s}}.devices AS
            SELECT 'tok-' || g AS token, 'u' || g AS user_id, CASE WHEN g % 2 = 0 THEN 'ios' ELSE 'android' END AS platform
            FROM generate_series(1, {N}) g;
         CREATE TABLE {{s}}.vip AS SELECT 'u' || g AS user_id FROM generate_series(1, {N}) g;"
    );
    let syncs = "  accounts: {warehouse: pg, model: {table: \"{s}.accounts\"}, app: cio, object: object, mode: mirror, object_type_id: \"1\", object_id: account_id}
  members: {warehouse: pg, model: {table: \"{s}.members\"}, app: cio, object: relationship, mode: mirror, object_type_id: \"2\", object_id: account_id, person_id: user_id}
  devices: {warehouse: pg, model: {table: \"{s}.devices\"}, app: cio, object: device, mode: mirror, person_id: user_id, device_id: token, platform: platform}
  vip: {warehouse: pg, model: {table: \"{s}.vip\"}, app: cio, object: segment_membership, mode: mirror, segment_id: 7, person_id: user_id}
";
    let s = Setup::new(
        &tables,
        syncs,
        "{requests_per_second: 5000, concurrency: 4, batch_bytes: 50KB}",
    )
    .await;
    s.faults(Faults {
        latency_ms: 3,
        ..Default::default()
    });
    let all = ["accounts", "members", "devices", "vip"];
    let mut rng = fastrand::Rng::with_seed(13);
    let mut kill_runs = |s: &Setup, target: u32| {
        let (mut kills, mut attempts) = (0, 0);
        while kills < target {
            attempts += 1;
            assert!(
                attempts < 60,
                "only {kills} kills landed while a run was going"
            );
            let mut order = all.to_vec();
            rng.shuffle(&mut order);
            let mut args = vec!["sync"];
            args.extend(order);
            let mut child = s.spawn(&args);
            std::thread::sleep(Duration::from_millis(rng.u64(20..1500)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
            let _ = child.wait();
        }
        (kills, attempts)
    };
    let (kills, attempts) = kill_runs(&s, 8);
    s.faults(Faults::default());
    let mut args = vec!["sync"];
    args.extend(all);
    let (code, out) = finish(s.spawn(&args));
    assert_eq!(code, Some(0), "{out}");

    let count = |v: &Value, what: &str| v[what].as_array().unwrap().len() as i64;
    let objects = s.get("/_sandbox/objects").await;
    assert_eq!(count(&objects, "objects"), N);
    let o = objects["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object_id"] == "acc-77")
        .unwrap();
    assert_eq!(
        o["attributes"],
        serde_json::json!({"name": "Account 77", "tier": 77 % 9})
    );
    assert_eq!(
        count(&s.get("/_sandbox/relationships").await, "relationships"),
        N
    );
    assert_eq!(count(&s.get("/_sandbox/devices").await, "devices"), N);
    assert_eq!(count(&s.get("/_sandbox/segments/7").await, "members"), N);
    println!("{kills} kills in {attempts} runs while adding");

    // 5% of each model leaves it (within the 10% guard); kills land while removals go out.
    s.pg.batch_execute(
        &"DELETE FROM {s}.accounts WHERE right(account_id, 2) IN ('00', '20', '40', '60', '80');
         DELETE FROM {s}.members WHERE right(user_id, 2) IN ('00', '20', '40', '60', '80');
         DELETE FROM {s}.devices WHERE right(token, 2) IN ('00', '20', '40', '60', '80');
         DELETE FROM {s}.vip WHERE right(user_id, 2) IN ('00', '20', '40', '60', '80');"
            .replace("{s}", &s._schema),
    )
    .await
    .unwrap();
    s.faults(Faults {
        latency_ms: 20,
        ..Default::default()
    });
    let (kills, attempts) = kill_runs(&s, 4);
    s.faults(Faults::default());
    let (code, out) = finish(s.spawn(&args));
    assert_eq!(code, Some(0), "{out}");
    let left = N - N / 20;
    assert_eq!(count(&s.get("/_sandbox/objects").await, "objects"), left);
    assert_eq!(
        count(&s.get("/_sandbox/relationships").await, "relationships"),
        left
    );
    assert_eq!(count(&s.get("/_sandbox/devices").await, "devices"), left);
    let members = s.get("/_sandbox/segments/7").await;
    assert_eq!(count(&members, "members"), left);
    assert!(!members["members"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("u100")));
    println!("{kills} kills in {attempts} runs while removing");

    // A further run sends and removes nothing.
    args.push("--json");
    let (code, out) = finish(s.spawn(&args));
    assert_eq!(code, Some(0), "{out}");
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let j: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (&j["rows_sent"], &j["rows_removed"], &j["rows_failed"]),
            (
                &serde_json::json!(0),
                &serde_json::json!(0),
                &serde_json::json!(0)
            ),
            "{line}"
        );
    }
}
