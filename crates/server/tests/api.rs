//! The API over HTTP: auth everywhere but /healthz, every documented endpoint, secrets never in
//! a response, runs, pause and resume, metrics, and the scheduler across a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_sandbox::{RunningSandbox, SandboxConfig};
use sallyport_server::{openapi::OPERATIONS, Server};
use serde_json::Value;

const TOKEN: &str = "test-token-123";
const API_KEY: &str = "sk-live-never-shown";
const DB_PASSWORD: &str = "pg-pass-never-shown";

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

struct Setup {
    dir: tempfile::TempDir,
    sandbox: RunningSandbox,
    config: String,
    http: reqwest::Client,
    /// The test's schema, dropped with the setup.
    _schema: sallyport_testkit::Schema,
}

impl Setup {
    async fn new(schedule: &str) -> Setup {
        let (pg, schema) = sallyport_testkit::schema().await;
        pg.batch_execute(&format!(
            "CREATE TABLE {schema}.users AS SELECT g AS user_id, 'u' || g || '@x.com' AS email FROM generate_series(1, 25) g"
        ))
        .await
        .unwrap();
        let sandbox = sallyport_sandbox::start(
            SandboxConfig {
                api_key: API_KEY.into(),
                ..Default::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let url = sallyport_testkit::pg_url().replacen(
            "://postgres@",
            &format!("://postgres:{DB_PASSWORD}@"),
            1,
        );
        let config = format!(
            "state: state.db
warehouses:
  pg: {{type: postgres, url: \"{url}\"}}
apps:
  cio: {{type: customerio, site_id: sandbox-site, api_key: {API_KEY}, track_url: \"{}\"}}
  wrong: {{type: customerio, site_id: sandbox-site, api_key: nope, track_url: \"{}\"}}
syncs:
  people:
    warehouse: pg
    model: {{table: {schema}.users}}
    app: cio
    object: person
    mode: upsert
    primary_key: user_id
{schedule}",
            sandbox.url(),
            sandbox.url()
        );
        Setup {
            dir: tempfile::tempdir().unwrap(),
            sandbox,
            config,
            _schema: schema,
            http: reqwest::Client::new(),
        }
    }

    async fn start(&self) -> Running {
        let path = self.dir.path().join("sallyport.yaml");
        std::fs::write(&path, &self.config).unwrap();
        let engine = Engine::open(Config::load(&path).unwrap()).await.unwrap();
        let vault = sallyport_server::Vault::load(&self.dir.path().join("sallyport.key")).unwrap();
        let server = Server::start(engine, TOKEN.into(), vault).await.unwrap();
        server.set_allow_private_networks(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            sallyport_server::serve(server, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Running {
            base,
            stop: Some(tx),
            task,
        }
    }

    async fn call(
        &self,
        r: &Running,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{}", r.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn json(&self, r: &Running, method: &str, path: &str) -> Value {
        let (status, body) = self.call(r, method, path, Some(TOKEN)).await;
        assert!(status < 300, "{method} {path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn wait_idle(&self, r: &Running) {
        let start = Instant::now();
        while !self.json(r, "get", "/api/v1/syncs/people").await["running"].is_null() {
            assert!(start.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_needs_the_token_and_never_shows_a_secret() {
    sallyport_testkit::needs_postgres!();
    let mut s = Setup::new("").await;
    // An alert (named as the sync, for the paths below) whose webhook carries its secret.
    let told: Arc<Mutex<Vec<Value>>> = Arc::default();
    let hook = {
        let told = told.clone();
        let app = axum::Router::new().route(
            "/hook-secret-123",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| async move {
                told.lock().unwrap().push(v);
                "ok"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    s.config.push_str(&format!(
        "alerts:\n  - name: people\n    webhook: \"{hook}/hook-secret-123\"\n    when: {{run_failed: true}}\n"
    ));
    let r = s.start().await;
    let (status, body) = s.call(&r, "get", "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let mut everything = String::new();
    for (method, path, _, ok) in OPERATIONS {
        if *path == "/healthz" {
            continue;
        }
        let path = path.replace(
            "{name}",
            if path.contains("warehouses") {
                "pg"
            } else if path.contains("apps") {
                "cio"
            } else {
                "people"
            },
        );
        for bad in [None, Some("wrong-token")] {
            let (status, body) = s.call(&r, method, &path, bad).await;
            assert_eq!(status, 401, "{method} {path} without the token");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
        }
        // Writes need a body; they have a test of their own.
        if matches!(*method, "put" | "delete") || (*method == "post" && ["201"].contains(ok)) {
            continue;
        }
        let (status, body) = s.call(&r, method, &path, Some(TOKEN)).await;
        assert_eq!(status.to_string(), *ok, "{method} {path}: {body}");
        everything.push_str(&body);
        s.wait_idle(&r).await;
    }
    assert!(!everything.contains(API_KEY), "an API key leaked");
    assert!(
        !everything.contains(DB_PASSWORD),
        "a database password leaked"
    );
    assert!(!everything.contains("sandbox-site"), "a Site ID leaked");
    assert!(
        !everything.contains("hook-secret-123"),
        "an alert's webhook leaked"
    );
    assert!(everything.contains(r#""webhook":"***""#), "{everything}");
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "the test message reached the webhook");
    assert_eq!(told[0]["state"], "test");

    // Errors have one shape.
    let (status, body) = s.call(&r, "get", "/api/v1/syncs/nope", Some(TOKEN)).await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["message"], "no sync named `nope`");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_tests_pause_resume_preview_and_metrics() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new("").await;
    let r = s.start().await;
    let v = s.json(&r, "post", "/api/v1/apps/cio/test").await;
    assert_eq!(v["ok"], true, "{v}");
    let v = s.json(&r, "post", "/api/v1/apps/wrong/test").await;
    assert_eq!(v["ok"], false);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("rejected the Site ID / API key"),
        "{v}"
    );
    assert!(!v.to_string().contains("nope"));
    assert_eq!(
        s.json(&r, "post", "/api/v1/warehouses/pg/test").await["ok"],
        true
    );

    let p = s
        .json(&r, "post", "/api/v1/syncs/people/preview?limit=2")
        .await;
    assert_eq!(p["rows_new"], 25);
    assert_eq!(p["ops"].as_array().unwrap().len(), 2);

    let started = s.json(&r, "post", "/api/v1/syncs/people/runs").await;
    assert_eq!(started["running"]["trigger"], "manual");
    s.wait_idle(&r).await;
    let runs = s.json(&r, "get", "/api/v1/syncs/people/runs").await;
    assert_eq!(runs["runs"][0]["status"], "succeeded");
    assert_eq!(runs["runs"][0]["rows_sent"], 25);
    assert_eq!(s.sandbox.shared().stats().people, 25);
    assert_eq!(
        s.json(&r, "get", "/api/v1/syncs/people/failures").await["failures"],
        serde_json::json!([])
    );

    // The API inspector: the run's requests, newest first, with no header and no secret.
    let inspected = s.json(&r, "get", "/api/v1/syncs/people/requests").await;
    let list = inspected["requests"].as_array().unwrap();
    assert!(!list.is_empty(), "{inspected}");
    let run_id = runs["runs"][0]["id"].clone();
    for q in list {
        assert_eq!(q["run_id"], run_id, "{q}");
        assert_eq!(q["method"], "POST", "{q}");
        assert!(q["path"].as_str().unwrap().starts_with("/api/"), "{q}");
        assert_eq!(q["status"], 200, "{q}");
        assert_eq!(q["attempt"], 1, "{q}");
        assert!(q["body"].as_str().unwrap().len() <= 4096, "{q}");
    }
    let all = inspected.to_string();
    assert!(
        all.contains("\\\"identifiers\\\""),
        "the bodies are there: {all}"
    );
    assert!(
        !all.contains(API_KEY) && !all.contains("Authorization") && !all.contains("Basic "),
        "{all}"
    );
    assert_eq!(
        s.call(&r, "get", "/api/v1/syncs/nope/requests", Some(TOKEN))
            .await
            .0,
        404
    );

    assert_eq!(
        s.json(&r, "post", "/api/v1/syncs/people/pause").await["paused"],
        true
    );
    assert_eq!(
        s.json(&r, "get", "/api/v1/syncs").await["syncs"][0]["paused"],
        true
    );
    assert_eq!(
        s.json(&r, "post", "/api/v1/syncs/people/resume").await["paused"],
        false
    );

    let (status, metrics) = s.call(&r, "get", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sallyport_runs_total{sync=\"people\",status=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sallyport_rows_sent_total{sync=\"people\"} 25"),
        "{metrics}"
    );

    // The document lists every route, and every listed route answers.
    let doc = s.json(&r, "get", "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path, _, _) in OPERATIONS {
        assert!(
            doc["paths"][*path][*method].is_object(),
            "{method} {path} missing from the document"
        );
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_sync_runs_repeatedly_never_overlapping_and_resumes_after_a_restart() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new("    schedule: every 2s\n").await;
    let r = s.start().await;
    let start = Instant::now();
    let count = |v: &Value| v["runs"].as_array().unwrap().len();
    loop {
        let runs = s.json(&r, "get", "/api/v1/syncs/people/runs").await;
        if count(&runs) >= 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the schedule did not run twice: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.wait_idle(&r).await;
    let before = count(&s.json(&r, "get", "/api/v1/syncs/people/runs").await);
    r.stop().await;

    // A new server over the same state keeps the schedule going.
    let r = s.start().await;
    let start = Instant::now();
    loop {
        let runs = s.json(&r, "get", "/api/v1/syncs/people/runs").await;
        if count(&runs) > before {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no run after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.wait_idle(&r).await;
    let runs = s
        .json(&r, "get", "/api/v1/syncs/people/runs?limit=100")
        .await;
    let mut runs: Vec<Value> = runs["runs"].as_array().unwrap().clone();
    runs.reverse();
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b["started_at"].as_i64().unwrap() >= a["finished_at"].as_i64().unwrap(),
            "runs overlapped: {a} {b}"
        );
        assert!(
            b["started_at"].as_i64().unwrap() - a["started_at"].as_i64().unwrap() >= 1000,
            "runs came much faster than every 2s"
        );
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entities_made_through_the_api_are_checked_stored_encrypted_and_kept() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new("").await;
    let r = s.start().await;
    let send = |method: &'static str, path: &'static str, body: Value| {
        let http = s.http.clone();
        let url = format!("{}{}", r.base, path);
        async move {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let resp = http
                .request(m, url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let secret = "sk-entered-in-the-ui";
    let (status, body) = send(
        "POST",
        "/api/v1/apps",
        serde_json::json!({"name": "cio2", "type": "customerio", "site_id": "sandbox-site", "api_key": API_KEY, "track_url": s.sandbox.url()}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.get("api_key").is_none() && body.get("site_id").is_none(),
        "{body}"
    );
    assert_eq!(body["defined_in"], "ui");
    let (status, body) = send(
        "POST",
        "/api/v1/apps",
        serde_json::json!({"name": "cio3", "type": "customerio", "site_id": "x", "api_key": secret, "track_url": s.sandbox.url()}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let listed = s.json(&r, "get", "/api/v1/apps").await;
    assert!(!listed.to_string().contains(secret));
    assert_eq!(
        s.json(&r, "post", "/api/v1/apps/cio2/test").await["ok"],
        true
    );

    // Stored encrypted.
    let conn = rusqlite::Connection::open(s.dir.path().join("state.db")).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT body FROM entities WHERE kind = 'app' AND name = 'cio3'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored.contains("enc:v2:") && !stored.contains(secret),
        "{stored}"
    );
    for file in ["state.db", "state.db-wal"] {
        let bytes = std::fs::read(s.dir.path().join(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "a secret is in {file} in plain text"
        );
    }

    // A file-defined name is read-only; a taken name is refused.
    let (status, body) = send(
        "POST",
        "/api/v1/apps",
        serde_json::json!({"name": "cio", "type": "customerio", "site_id": "a", "api_key": "b"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("read_only")),
        "{body}"
    );
    let (status, _) = send(
        "POST",
        "/api/v1/apps",
        serde_json::json!({"name": "cio2", "type": "customerio", "site_id": "a", "api_key": "b"}),
    )
    .await;
    assert_eq!(status, 409);

    let url = sallyport_testkit::pg_url();
    let (status, body) = send(
        "POST",
        "/api/v1/warehouses",
        serde_json::json!({"name": "pg2", "type": "postgres", "url": url}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let table = s.json(&r, "get", "/api/v1/syncs/people").await["model"]["table"].clone();
    let sync = serde_json::json!({
        "name": "people2", "warehouse": "pg2", "model": {"table": table}, "app": "cio2",
        "object": "person", "mode": "insert", "primary_key": "user_id"
    });
    let (status, body) = send("POST", "/api/v1/syncs", sync.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mode `insert` is not supported by a person; supported: upsert"),
        "{body}"
    );
    let mut good = sync.clone();
    good["mode"] = "upsert".into();
    let (status, body) = send("POST", "/api/v1/syncs", good.clone()).await;
    assert_eq!(status, 201, "{body}");
    s.json(&r, "post", "/api/v1/syncs/people2/runs").await;
    let start = Instant::now();
    while !s.json(&r, "get", "/api/v1/syncs/people2").await["running"].is_null() {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = s.json(&r, "get", "/api/v1/syncs/people2/runs").await;
    assert_eq!(runs["runs"][0]["status"], "succeeded", "{runs}");
    assert_eq!(runs["runs"][0]["rows_sent"], 25);

    // A sync made through the API gets a stable id, which an update keeps (its state follows
    // the id): a second run after the update finds every row delivered.
    let made = s.json(&r, "get", "/api/v1/syncs/people2").await;
    let id = made["id"].as_str().expect("a generated id").to_string();
    assert!(id.starts_with("sync-"), "{made}");
    let mut changed = good.clone();
    changed["id"] = "someone-elses".into();
    changed["schedule"] = "every 1d".into();
    let (status, body) = send("PUT", "/api/v1/syncs/people2", changed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.json(&r, "get", "/api/v1/syncs/people2").await["id"],
        id.as_str()
    );
    s.json(&r, "post", "/api/v1/syncs/people2/runs").await;
    let start = Instant::now();
    while !s.json(&r, "get", "/api/v1/syncs/people2").await["running"].is_null() {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = s.json(&r, "get", "/api/v1/syncs/people2/runs").await;
    assert_eq!(
        (
            &runs["runs"][0]["rows_unchanged"],
            &runs["runs"][0]["rows_sent"]
        ),
        (&serde_json::json!(25), &serde_json::json!(0)),
        "{runs}"
    );

    // An update may leave the saved secrets out while it sends them where they were saved
    // for; they are kept.
    let (status, body) = send(
        "PUT",
        "/api/v1/apps/cio2",
        serde_json::json!({"type": "customerio", "track_url": s.sandbox.url(), "delivery": {"concurrency": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.json(&r, "post", "/api/v1/apps/cio2/test").await["ok"],
        true
    );
    // Moved to another host (or region) without them: refused, naming the fields, and the
    // saved key never goes to the new address.
    for moved in [
        serde_json::json!({"type": "customerio", "track_url": "https://elsewhere.example"}),
        serde_json::json!({"type": "customerio", "track_url": s.sandbox.url(), "region": "eu"}),
    ] {
        let (status, body) = send("PUT", "/api/v1/apps/cio2", moved).await;
        assert_eq!(status, 422, "{body}");
        let fields: Vec<&str> = body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["site_id", "api_key"], "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("changed: give"),
            "{body}"
        );
    }
    assert_eq!(
        s.json(&r, "get", "/api/v1/apps/cio2").await["track_url"],
        s.sandbox.url().as_str(),
        "the refused updates changed nothing"
    );

    // In use: refused; then removed in order.
    let (status, body) = send("DELETE", "/api/v1/apps/cio2", Value::Null).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("app `cio2` is not defined"),
        "{body}"
    );
    r.stop().await;

    // A restart keeps them.
    let r = s.start().await;
    assert_eq!(
        s.json(&r, "get", "/api/v1/syncs/people2").await["defined_in"],
        "ui"
    );
    let resp = s
        .http
        .delete(format!("{}/api/v1/syncs/people2", r.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let resp = s
        .http
        .delete(format!("{}/api/v1/apps/cio2", r.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _) = s.call(&r, "get", "/api/v1/apps/cio2", Some(TOKEN)).await;
    assert_eq!(status, 404);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_needs_a_login_sets_a_safe_cookie_and_checks_csrf() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new("").await;
    let r = s.start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(format!("{}/syncs", r.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["location"], "/login");
    let resp = http
        .post(format!("{}/login", r.base))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .post(format!("{}/login", r.base))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{}/syncs/people", r.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(API_KEY) && !page.contains(DB_PASSWORD));
    assert!(page.contains("<h2>Requests to the app</h2>") && page.contains("id=\"requests\""));
    let csrf = page
        .split("name=\"csrf\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let forged = http
        .post(format!("{}/syncs/people/pause", r.base))
        .header("cookie", &session)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(s.json(&r, "get", "/api/v1/syncs").await["syncs"][0]["paused"] == false);
    // Every state-changing page refuses a form without the token: one check for all routes.
    for path in [
        "/apps",
        "/apps/test",
        "/apps/cio/test",
        "/warehouses",
        "/warehouses/pg/test",
        "/syncs/new",
        "/syncs/new/model",
        "/syncs/people/preview",
        "/syncs/people/run",
        "/syncs/people/run-allowing-removals",
        "/syncs/people/resume",
        "/logout",
    ] {
        let resp = http
            .post(format!("{}{path}", r.base))
            .header("cookie", &session)
            .form(&[("name", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "POST {path} without the token");
    }
    // The New sync form offers every object with its own settings, people with their removal
    // choice and guard.
    let model = format!("{}.users", s._schema);
    let form = http
        .post(format!("{}/syncs/new/model", r.base))
        .header("cookie", &session)
        .form(&[
            ("csrf", csrf.as_str()),
            ("warehouse", "pg"),
            ("model_kind", "table"),
            ("model", model.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for object in [
        "person",
        "event",
        "object",
        "relationship",
        "device",
        "segment_membership",
    ] {
        assert!(
            form.contains(&format!(r#"data-object="{object}""#)),
            "{object}"
        );
    }
    for setting in [
        "on_removal",
        "max_removals",
        "nulls",
        "object_type_id",
        "segment_id",
        "device_id",
        "platform",
        "last_used",
        "person_id",
        "change_detection",
    ] {
        assert!(form.contains(&format!(r#"name="{setting}""#)), "{setting}");
    }
    assert!(form.contains(r#"value="suppress""#));
    let ok = http
        .post(format!("{}/syncs/people/pause", r.base))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    assert_eq!(
        s.json(&r, "get", "/api/v1/syncs").await["syncs"][0]["paused"],
        true
    );
    r.stop().await;
}

/// The served document against the OpenAPI 3.1 meta-schema (spec/openapi-3.1-schema.json, the
/// OpenAPI Initiative's 2021-04-15 schema).
#[test]
fn the_openapi_document_validates() {
    let meta: Value =
        serde_json::from_str(include_str!("../../../spec/openapi-3.1-schema.json")).unwrap();
    let validator = jsonschema::draft202012::new(&meta).unwrap();
    let doc = sallyport_server::openapi::document();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And it fails on a broken one, so the check means something.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"] = serde_json::json!("none");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn the_sync_schema_is_drawn_from_each_objects_settings() {
    let schema = sallyport_server::openapi::sync_schema();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let person = serde_json::json!({
        "name": "p", "warehouse": "w", "model": {"table": "users"}, "app": "a",
        "object": "person", "mode": "upsert", "primary_key": "user_id", "identifier": "email",
    });
    assert!(validator.is_valid(&person));
    let event = serde_json::json!({
        "warehouse": "w", "model": {"table": "ev"}, "app": "a", "object": "event",
        "mode": "insert", "event_type": "track", "event_id": "id", "event_name": "name",
    });
    assert!(validator.is_valid(&event));
    // A setting of another object, an unknown mode, a choice outside its values: refused.
    let mut wrong = person.clone();
    wrong["event_id"] = "id".into();
    assert!(!validator.is_valid(&wrong));
    let mut wrong = person.clone();
    wrong["mode"] = "insert".into();
    assert!(!validator.is_valid(&wrong));
    let mut wrong = person;
    wrong["identifier"] = "phone".into();
    assert!(!validator.is_valid(&wrong));
    for kind in sallyport_config::OBJECTS {
        let alt = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["properties"]["object"]["const"] == kind.name)
            .unwrap_or_else(|| panic!("no alternative for {}", kind.name));
        for f in kind.fields {
            assert!(
                alt["properties"].get(f.name).is_some(),
                "{} {}",
                kind.name,
                f.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_warehouse_is_offered_saved_and_tested() {
    sallyport_testkit::needs_postgres!();
    let mysql_url = sallyport_testkit::needs_service!("SALLYPORT_TEST_MYSQL_URL", "MariaDB");
    let s = Setup::new("").await;
    let r = s.start().await;
    let snowflake =
        sallyport_testkit::needs_service!("SALLYPORT_TEST_SNOWFLAKE_URL", "the Snowflake stand-in");
    let bigquery = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_BIGQUERY_ENDPOINT",
        "the BigQuery stand-in"
    );
    let databricks = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_DATABRICKS_HOST",
        "the Databricks stand-in"
    );
    let databricks_warehouse = sallyport_testkit::needs_service!(
        "SALLYPORT_TEST_DATABRICKS_WAREHOUSE",
        "the Databricks stand-in's warehouse"
    );
    for (name, body) in [
        (
            "my",
            serde_json::json!({"name": "my", "type": "mysql", "url": mysql_url}),
        ),
        (
            "rs",
            serde_json::json!({"name": "rs", "type": "redshift", "url": sallyport_testkit::pg_url()}),
        ),
        (
            "sf",
            serde_json::json!({"name": "sf", "type": "snowflake", "account": "test", "user": "u",
                "password": "pw", "warehouse": "W", "database": "API", "url": snowflake}),
        ),
        (
            "bq",
            serde_json::json!({"name": "bq", "type": "bigquery", "project": "sallyport-test", "endpoint": bigquery}),
        ),
        (
            "dbx",
            serde_json::json!({"name": "dbx", "type": "databricks", "host": databricks,
                "warehouse_id": databricks_warehouse, "token": "dapi-test"}),
        ),
    ] {
        let resp = s
            .http
            .post(format!("{}/api/v1/warehouses", r.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "{}",
            resp.text().await.unwrap()
        );
        let tested = s
            .json(&r, "post", &format!("/api/v1/warehouses/{name}/test"))
            .await;
        assert_eq!(tested["ok"], true, "{name}: {tested}");
    }
    // The UI's form offers every kind, each with its own settings.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .post(format!("{}/login", r.base))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{}/warehouses", r.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for label in [
        "PostgreSQL",
        "Amazon Redshift",
        "MySQL / MariaDB",
        "Snowflake",
        "Google BigQuery",
        "Databricks SQL",
        "SQLite",
        "sslrootcert",
        "timezone",
        "private_key_path",
        "credentials_path",
        "warehouse_id",
    ] {
        assert!(page.contains(label), "the form lacks {label}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_another_process_holds_is_refused_with_409() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new("").await;
    let r = s.start().await;
    // Another process (another host) holds the sync's run lock.
    let path = s.dir.path().join("sallyport.yaml");
    let engine = Engine::open(Config::load(&path).unwrap()).await.unwrap();
    assert!(engine
        .state
        .try_lock(
            &engine.state_key("people"),
            "worker-2|boot|ns/4242/abcdef",
            std::time::Duration::from_secs(60)
        )
        .await
        .unwrap());
    let (status, body) = s
        .call(&r, "post", "/api/v1/syncs/people/runs", Some(TOKEN))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already running (in worker-2)"), "{body}");
    // Once it lets go, a run starts.
    engine
        .state
        .unlock(&engine.state_key("people"), "worker-2|boot|ns/4242/abcdef")
        .await
        .unwrap();
    let (status, body) = s
        .call(&r, "post", "/api/v1/syncs/people/runs", Some(TOKEN))
        .await;
    assert_eq!(status, 202, "{body}");
    s.wait_idle(&r).await;
    r.stop().await;
}

/// A segment membership sync made through the API, mirrored: the guard stops a runaway
/// removal, a run with `allow_removals=true` lets it through; the New sync form offers every
/// object with its own settings, and people's removal choice and guard.
#[tokio::test(flavor = "multi_thread")]
async fn every_object_is_offered_and_the_removal_guard_is_kept_by_the_api() {
    sallyport_testkit::needs_postgres!();
    let s = Setup::new("").await;
    let r = s.start().await;
    let schema = s._schema.to_string();
    let sync = serde_json::json!({
        "name": "vip", "warehouse": "pg", "model": {"table": format!("{schema}.users")}, "app": "cio",
        "object": "segment_membership", "mode": "mirror", "segment_id": "42", "person_id": "user_id",
        "max_removals": "20%"
    });
    let resp = s
        .http
        .post(format!("{}/api/v1/syncs", r.base))
        .bearer_auth(TOKEN)
        .json(&sync)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let shown = s.json(&r, "get", "/api/v1/syncs/vip").await;
    assert_eq!(shown["settings"]["max_removals"], "20%", "{shown}");

    let run_and_wait = |query: &'static str| {
        let (s, r) = (&s, &r);
        async move {
            s.json(r, "post", &format!("/api/v1/syncs/vip/runs{query}"))
                .await;
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let v = s.json(r, "get", "/api/v1/syncs/vip").await;
                if v["running"].is_null() {
                    let runs = s.json(r, "get", "/api/v1/syncs/vip/runs").await;
                    if runs["runs"].as_array().is_some_and(|a| !a.is_empty()) {
                        return runs["runs"][0].clone();
                    }
                }
                assert!(start.elapsed() < Duration::from_secs(30));
            }
        }
    };
    let first = run_and_wait("").await;
    assert_eq!(
        (first["status"].as_str(), first["rows_sent"].as_u64()),
        (Some("succeeded"), Some(25)),
        "{first}"
    );
    let pg = sallyport_testkit::connect(&sallyport_testkit::pg_url()).await;
    pg.batch_execute(&format!("DELETE FROM {schema}.users WHERE user_id <= 10"))
        .await
        .unwrap();
    let preview = s.json(&r, "post", "/api/v1/syncs/vip/preview").await;
    assert_eq!(preview["rows_to_remove"], 10, "{preview}");
    assert!(preview["removal_guard"]
        .as_str()
        .unwrap()
        .contains("20% of 25 synced = 5"));
    let stopped = run_and_wait("").await;
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert!(stopped["error"]
        .as_str()
        .unwrap()
        .contains("--allow-removals"));
    let members = |v: Value| v["members"].as_array().unwrap().len();
    let seg = s
        .http
        .get(format!("{}/_sandbox/segments/42", s.sandbox.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(members(seg.json().await.unwrap()), 25);
    let allowed = run_and_wait("?allow_removals=true").await;
    assert_eq!(
        (allowed["status"].as_str(), allowed["rows_removed"].as_u64()),
        (Some("succeeded"), Some(10)),
        "{allowed}"
    );
    let seg = s
        .http
        .get(format!("{}/_sandbox/segments/42", s.sandbox.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(members(seg.json().await.unwrap()), 15);
    r.stop().await;
}
