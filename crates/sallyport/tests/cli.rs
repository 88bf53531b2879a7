//! The `sallyport` binary as a user runs it: exit codes, `--json`, `--config` before the
//! subcommand, `runs` and `failures`, `--help`, and secrets that never show.

use std::path::Path;
use std::process::{Command, Output};

use sallyport_sandbox::{RunningSandbox, SandboxConfig};
use serde_json::Value;

const SECRET_KEY: &str = "sk-Very-Secret-4242";
const DB_PASSWORD: &str = "hunter2-db-pass";

fn sallyport(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sallyport"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("SALLYPORT_CONFIG")
        .env("CI", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn sandbox() -> RunningSandbox {
    sallyport_sandbox::start(
        SandboxConfig {
            site_id: "site".into(),
            api_key: SECRET_KEY.into(),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// A warehouse table in a fresh schema and a config naming it, with the key and the database
/// password taken from the environment.
async fn setup(dir: &Path, sandbox: &RunningSandbox) -> (String, sallyport_testkit::Schema) {
    let (pg, schema) = sallyport_testkit::schema().await;
    pg.batch_execute(&format!(
        "CREATE TABLE {schema}.users (user_id int, email text, bio text);
         INSERT INTO {schema}.users SELECT g, 'u' || g || '@x.com', 'hi' FROM generate_series(1, 30) g;"
    ))
    .await
    .unwrap();
    let url = sallyport_testkit::pg_url().replacen(
        "://postgres@",
        &format!("://postgres:{DB_PASSWORD}@"),
        1,
    );
    let config = format!(
        "warehouses:
  pg: {{type: postgres, url: \"${{WAREHOUSE_URL}}\"}}
apps:
  cio:
    type: customerio
    site_id: site
    api_key: \"${{CIO_API_KEY}}\"
    region: auto
    track_url: {}
syncs:
  people:
    warehouse: pg
    model: {{table: \"{schema}.users\"}}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
",
        sandbox.url()
    );
    std::fs::write(dir.join("custom.yaml"), config).unwrap();
    assert!(url.contains(DB_PASSWORD));
    (url, schema)
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_runs_failures_and_exit_codes() {
    sallyport_testkit::needs_postgres!();
    let dir = tempfile::tempdir().unwrap();
    let s = sandbox().await;
    let (url, _schema) = setup(dir.path(), &s).await;
    let env = [
        ("WAREHOUSE_URL", url.as_str()),
        ("CIO_API_KEY", SECRET_KEY),
        ("RUST_LOG", "trace"),
    ];
    let mut everything = String::new();

    // --config before the subcommand; --json: one object per sync.
    let o = sallyport(
        dir.path(),
        &["--config", "custom.yaml", "sync", "people", "--json"],
        &env,
    );
    everything += &text(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let j: Value = serde_json::from_str(&line).unwrap();
    for k in [
        "sync",
        "run_id",
        "status",
        "rows_read",
        "rows_new",
        "rows_changed",
        "rows_unchanged",
        "rows_sent",
        "rows_failed",
        "duration_ms",
    ] {
        assert!(j.get(k).is_some(), "missing {k} in {j}");
    }
    assert_eq!(j["status"], "succeeded");
    assert_eq!(j["rows_sent"], 30);

    // A bad row: exit 2, and `failures` lists it.
    let (pg, _) = sallyport_testkit::schema().await;
    let schema = std::fs::read_to_string(dir.path().join("custom.yaml")).unwrap();
    let schema = schema
        .split("table: \"")
        .nth(1)
        .unwrap()
        .split(".users")
        .next()
        .unwrap()
        .to_string();
    pg.batch_execute(&format!(
        "UPDATE {schema}.users SET bio = repeat('b', 2000) WHERE user_id = 7"
    ))
    .await
    .unwrap();
    let o = sallyport(
        dir.path(),
        &["sync", "people", "--config", "custom.yaml"],
        &env,
    );
    everything += &text(&o);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("people: partial"), "{out}");
    assert!(
        out.contains("row 7: column `bio`: the value is 2000 bytes"),
        "{out}"
    );

    let o = sallyport(
        dir.path(),
        &["--config", "custom.yaml", "failures", "people", "--json"],
        &env,
    );
    everything += &text(&o);
    assert_eq!(o.status.code(), Some(0));
    let f: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f[0]["key"], "7");
    assert_eq!(f[0]["attempts"], 1);
    assert!(f[0]["reason"].as_str().unwrap().contains("1000 bytes"));

    let o = sallyport(dir.path(), &["--config", "custom.yaml", "runs"], &env);
    everything += &text(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("partial") && out.contains("succeeded"),
        "{out}"
    );

    let o = sallyport(
        dir.path(),
        &[
            "--config",
            "custom.yaml",
            "preview",
            "people",
            "--limit",
            "1",
        ],
        &env,
    );
    everything += &text(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("would send 0 rows"),
        "{}",
        text(&o)
    );

    let o = sallyport(dir.path(), &["--config", "custom.yaml", "check"], &env);
    everything += &text(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ok    app cio: credentials accepted"),
        "{}",
        text(&o)
    );

    // Wrong key: exit 1 with the credentials message, and the key is not printed.
    let wrong = [
        ("WAREHOUSE_URL", url.as_str()),
        ("CIO_API_KEY", "sk-wrong-9999"),
        ("RUST_LOG", "trace"),
    ];
    let o = sallyport(
        dir.path(),
        &["--config", "custom.yaml", "sync", "people"],
        &wrong,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("Customer.io rejected the Site ID / API key of app `cio`"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("sk-wrong-9999"));
    let o = sallyport(dir.path(), &["--config", "custom.yaml", "check"], &wrong);
    assert_eq!(o.status.code(), Some(1));
    assert!(!text(&o).contains("sk-wrong-9999"));

    // Secrets never appear, even with trace logs.
    assert!(
        !everything.contains(SECRET_KEY),
        "the API key leaked:\n{everything}"
    );
    assert!(
        !everything.contains(DB_PASSWORD),
        "the database password leaked:\n{everything}"
    );
    s.stop().await;
}

/// `--log-format json` (or `SALLYPORT_LOG_FORMAT=json`): every line on stderr is a JSON
/// object, those written during a run carry its sync and run id, and no secret shows.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_sync_and_the_run_on_every_line_of_a_run() {
    sallyport_testkit::needs_postgres!();
    let dir = tempfile::tempdir().unwrap();
    let s = sandbox().await;
    let (url, _schema) = setup(dir.path(), &s).await;
    let env = [("WAREHOUSE_URL", url.as_str()), ("CIO_API_KEY", SECRET_KEY)];
    let check = |o: &Output, run_id: i64| {
        assert_eq!(o.status.code(), Some(0), "{}", text(o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains(SECRET_KEY) && !stderr.contains(DB_PASSWORD));
        let mut in_run = 0;
        for line in stderr.lines() {
            let j: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(j["level"].is_string() && j["fields"].is_object(), "{line}");
            if j["span"]["name"] == "run" {
                assert_eq!(j["span"]["sync"], "people", "{line}");
                assert_eq!(j["span"]["run_id"], run_id, "{line}");
                in_run += 1;
            }
        }
        assert!(in_run > 0, "no line of the run: {stderr}");
    };
    let o = sallyport(
        dir.path(),
        &[
            "--config",
            "custom.yaml",
            "--log-format",
            "json",
            "--log",
            "debug",
            "sync",
            "people",
        ],
        &env,
    );
    check(&o, 1);
    let env = [
        ("WAREHOUSE_URL", url.as_str()),
        ("CIO_API_KEY", SECRET_KEY),
        ("SALLYPORT_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
    ];
    let o = sallyport(
        dir.path(),
        &["--config", "custom.yaml", "sync", "people"],
        &env,
    );
    check(&o, 2);
}

#[test]
fn config_errors_exit_1_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sallyport.yaml"),
        "warehouses:\n  w: {type: sqlite, path: w.db}\napps:\n  c: {type: customerio, site_id: s, api_key: \"${NOPE_KEY}\"}\nsyncs:\n  p:\n    warehouse: w\n    model: {table: t}\n    app: c\n    object: person\n    mode: insert\n    primary_key: id\n",
    )
    .unwrap();
    let o = sallyport(dir.path(), &["sync", "p"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("sallyport.yaml:4: environment variable `NOPE_KEY` is not set"),
        "{t}"
    );
    assert!(t.contains("sallyport.yaml:11: sync `p`: mode `insert` is not supported by a person; supported: upsert"), "{t}");
    let o = sallyport(dir.path(), &["--config", "missing.yaml", "runs"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("missing.yaml: cannot read the config file"),
        "{}",
        text(&o)
    );
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let o = sallyport(dir.path(), &["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let t = text(&o);
    assert!(t.contains("Exit codes:"), "{t}");
    for cmd in [
        "check", "preview", "sync", "runs", "failures", "demo", "sandbox",
    ] {
        assert!(t.contains(cmd), "{cmd} missing from --help");
        let o = sallyport(dir.path(), &[cmd, "--help"], &[]);
        assert_eq!(o.status.code(), Some(0), "{cmd} --help");
        assert!(text(&o).contains("Usage: sallyport"), "{cmd}");
    }
}

#[test]
fn the_demo_runs_offline_and_the_second_run_sends_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let o = sallyport(dir.path(), &["demo", "--dir", "."], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let second = t.split("second run").nth(1).expect("a second run");
    assert!(second.contains("people: succeeded"), "{t}");
    assert!(
        second.contains("new 4 · changed 5 · unchanged 293 · sent 9 · failed 0 · left the model 2"),
        "{t}"
    );
    assert!(
        second.contains("read 210 · new 10 · changed 0 · unchanged 200 · sent 10"),
        "{t}"
    );
    assert!(
        second.contains("read 156 · new 6 · changed 0 · unchanged 150 · sent 6"),
        "{t}"
    );
    // A custom object sync (mirror) and a manual segment membership sync (mirror).
    assert!(
        second
            .contains("read 12 · new 1 · changed 1 · unchanged 10 · sent 2 · failed 0 · removed 1"),
        "{t}"
    );
    assert!(
        second.contains(
            "read 113 · new 5 · changed 0 · unchanged 108 · sent 5 · failed 0 · removed 2"
        ),
        "{t}"
    );
    assert!(t.contains("people 304 · events 366"), "{t}");
    assert!(
        t.contains("companies (custom objects) 12 · enterprise segment members 113"),
        "{t}"
    );
    assert!(dir.path().join("sallyport.yaml").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_zero_dates_are_sent_as_null_with_a_warning() {
    let url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let table = sallyport_testkit::unique("zero");
    let admin = mysql_async::Opts::from_url(&url).unwrap();
    let mut conn = mysql_async::Conn::new(admin).await.unwrap();
    mysql_async::prelude::Queryable::query_drop(
        &mut conn,
        format!(
            "CREATE TABLE {table} (id int, email varchar(50), last_seen date);
             INSERT INTO {table} VALUES (1, 'a@x.com', '0000-00-00'), (2, 'b@x.com', '2024-01-02');"
        ),
    )
    .await
    .unwrap();
    std::fs::write(
        dir.path().join("sallyport.yaml"),
        format!(
            "warehouses:\n  my: {{type: mysql, url: \"{url}\"}}\napps:\n  cio: {{type: customerio, site_id: site, api_key: \"{SECRET_KEY}\", track_url: {}}}\nsyncs:\n  people: {{warehouse: my, model: {{table: {table}}}, app: cio, object: person, mode: upsert, primary_key: id}}\n",
            sandbox.url()
        ),
    )
    .unwrap();
    let o = sallyport(dir.path(), &["sync", "people", "--json"], &[]);
    let all = text(&o);
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(
        all.contains("zero dates") && all.contains("last_seen"),
        "{all}"
    );
    assert_eq!(sandbox.shared().stats().people, 2, "both rows are sent");
    mysql_async::prelude::Queryable::query_drop(&mut conn, format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
