//! A stopping server stops its runs the way Ctrl-C stops a CLI run (they commit what was
//! acknowledged and end `interrupted`), and a starting server marks the runs a stopped process
//! left `running` as `interrupted`.

use std::time::{Duration, Instant};

use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::{Faults, SandboxConfig};
use sallyport_server::Server;

async fn setup(
    rows: i64,
) -> (
    tempfile::TempDir,
    sallyport_sandbox::RunningSandbox,
    Config,
    sallyport_testkit::Schema,
) {
    let (pg, schema) = sallyport_testkit::schema().await;
    pg.batch_execute(&format!(
        "CREATE TABLE {schema}.users AS SELECT g AS user_id, 'u' || g || '@x.com' AS email,
            repeat('x', 200) AS bio FROM generate_series(1, {rows}) g"
    ))
    .await
    .unwrap();
    let sandbox =
        sallyport_sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "warehouses:
  pg: {{type: postgres, url: \"{}\"}}
apps:
  cio:
    type: customerio
    site_id: {}
    api_key: {}
    track_url: \"{}\"
    delivery: {{concurrency: 1, batch_bytes: 40KB, requests_per_second: 1000}}
syncs:
  people:
    warehouse: pg
    model: {{table: {schema}.users}}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
",
        sallyport_testkit::pg_url(),
        SandboxConfig::default().site_id,
        SandboxConfig::default().api_key,
        sandbox.url()
    );
    let path = dir.path().join("sallyport.yaml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap();
    (dir, sandbox, config, schema)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_server_interrupts_its_runs_and_commits_what_was_acknowledged() {
    sallyport_testkit::needs_postgres!();
    let (dir, sandbox, config, _schema) = setup(3000).await;
    sandbox
        .shared()
        .set_faults(Faults {
            latency_ms: 100,
            ..Default::default()
        })
        .unwrap();
    let engine = Engine::open(config).await.unwrap();
    let state = engine.state.clone();
    let vault = sallyport_server::Vault::load(&dir.path().join("sallyport.key")).unwrap();
    let server = Server::start(engine, "t".repeat(32), vault).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(sallyport_server::serve(server.clone(), listener, async {
        let _ = stopped.await;
    }));
    server.start_run("people", "manual").unwrap();
    // A few batches in, the server is told to stop (what SIGTERM does in `sallyport serve`).
    let start = Instant::now();
    while sandbox.shared().stats().batches < 3 {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), serving)
        .await
        .expect("the server stops once its run has")
        .unwrap()
        .unwrap();
    let runs = state.runs(Some("people"), 5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "interrupted", "{runs:?}");
    assert!(runs[0].finished_at.is_some());
    let people = sandbox.shared().stats().people as u64;
    assert!(people > 0 && people < 3000, "{people} people arrived");
    assert_eq!(
        runs[0].rows_sent, people,
        "what the app acknowledged is what was committed"
    );
    assert_eq!(state.count("people").await.unwrap(), people);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_server_marks_runs_left_running_as_interrupted() {
    sallyport_testkit::needs_postgres!();
    let (dir, _sandbox, config, _schema) = setup(5).await;
    let engine = Engine::open(config).await.unwrap();
    let state = engine.state.clone();
    // A process died in the middle of a run: its run is still `running`, its lock is a dead
    // holder's (or its lease lapsed).
    let left = state.begin_run("people", false, None).await.unwrap();
    let dead = format!("{}/999999999/0", sallyport_engine::lock_place());
    assert!(state
        .try_lock("people", &dead, Duration::from_secs(60))
        .await
        .unwrap());
    // A run of a sync whose lock a live holder has is left alone.
    let live = state.begin_run("other", false, None).await.unwrap();
    assert!(state
        .try_lock("other", "somewhere-else/1/0", Duration::from_secs(60))
        .await
        .unwrap());
    let vault = sallyport_server::Vault::load(&dir.path().join("sallyport.key")).unwrap();
    let _server = Server::start(engine, "t".repeat(32), vault).await.unwrap();
    let runs = state.runs(None, 10).await.unwrap();
    let status = |id: i64| runs.iter().find(|r| r.id == id).unwrap().status;
    assert_eq!(status(left), "interrupted");
    assert_eq!(status(live), "running");
}

/// Two workers over one PostgreSQL state store: a sync made, then deleted, through one of them
/// reaches the other within a heartbeat or two, so neither keeps a schedule the other dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_made_or_deleted_on_one_worker_reaches_the_others() {
    sallyport_testkit::needs_postgres!();
    let (dir, _sandbox, _config, schema) = setup(5).await;
    let state = sallyport_testkit::database().await;
    let text = std::fs::read_to_string(dir.path().join("sallyport.yaml")).unwrap();
    let path = dir.path().join("shared.yaml");
    std::fs::write(&path, format!("state: \"{state}\"\n{text}")).unwrap();
    let key = "5".repeat(64);
    let mut bases = Vec::new();
    for _ in 0..2 {
        let engine = Engine::open(Config::load(&path).unwrap()).await.unwrap();
        let server = Server::start(
            engine,
            "t".repeat(32),
            sallyport_server::Vault::from_hex(&key).unwrap(),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(sallyport_server::serve(
            server,
            listener,
            std::future::pending(),
        ));
    }
    let http = reqwest::Client::new();
    let token = "t".repeat(32);
    let made = http
        .post(format!("{}/api/v1/syncs", bases[0]))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "name": "copy", "warehouse": "pg", "model": {"table": format!("{schema}.users")},
            "app": "cio", "object": "person", "mode": "upsert", "primary_key": "user_id",
            "schedule": "every 1h"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201, "{}", made.text().await.unwrap());
    let listed = |base: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let v: serde_json::Value = http
                .get(format!("{base}/api/v1/syncs"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v.to_string().contains("\"copy\"")
        }
    };
    let start = Instant::now();
    while !listed(bases[1].clone()).await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the other worker never saw it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted = http
        .delete(format!("{}/api/v1/syncs/copy", bases[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let start = Instant::now();
    while listed(bases[1].clone()).await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the other worker kept it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
