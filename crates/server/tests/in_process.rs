//! The API in process (`oneshot` on the router, no socket), over an SQLite warehouse and an
//! SQLite state store: the token is needed everywhere but /healthz, a sync made through the API
//! is checked with its problems per setting, and the OpenAPI document is served.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sallyport_config::Config;
use sallyport_engine::Engine;
use sallyport_server::Server;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "in-process-token-0123456789abcdef";

async fn app() -> (axum::Router, tempfile::TempDir) {
    let (app, _, dir) = app_and_server().await;
    (app, dir)
}

async fn app_and_server() -> (axum::Router, std::sync::Arc<Server>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (user_id INTEGER, email TEXT); INSERT INTO users VALUES (1, 'a@x.com');",
    )
    .unwrap();
    drop(conn);
    let path = dir.path().join("sallyport.yaml");
    std::fs::write(
        &path,
        "warehouses:\n  local: {type: sqlite, path: w.db}\napps:\n  cio: {type: customerio, site_id: s, api_key: k, track_url: \"http://127.0.0.1:9\"}\n",
    )
    .unwrap();
    let engine = Engine::open(Config::load(&path).unwrap()).await.unwrap();
    let vault = sallyport_server::Vault::load(&dir.path().join("sallyport.key")).unwrap();
    let server = Server::start(engine, TOKEN.into(), vault).await.unwrap();
    (sallyport_server::app(server.clone()), server, dir)
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: bool,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if token {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (app, _dir) = app().await;
    for (path, token) in [
        ("/login", false),
        ("/syncs", false),
        ("/healthz", false),
        ("/api/v1/syncs", true),
        ("/api/v1/syncs", false),
        ("/assets/ui.js", false),
    ] {
        let mut req = Request::builder().uri(path);
        if token {
            req = req.header("authorization", format!("Bearer {TOKEN}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        if path.starts_with("/assets/") {
            assert!(h.get("cache-control").is_none(), "{path}");
        } else {
            assert_eq!(h["cache-control"], "no-store", "{path}");
        }
    }
}

#[tokio::test]
async fn the_api_in_process() {
    let (app, _dir) = app().await;
    assert_eq!(
        call(&app, "GET", "/healthz", None, false).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/api/v1/syncs", None, false).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, doc) = call(&app, "GET", "/api/v1/openapi.json", None, true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["components"]["schemas"]["Sync"]["oneOf"].is_array());

    // A sync with a missing setting and a setting of another object: each problem names its
    // setting, for a form to show it next to its field.
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/syncs",
        Some(json!({
            "name": "people", "warehouse": "local", "model": {"table": "users"}, "app": "cio",
            "object": "person", "mode": "upsert", "identifier": "phone",
        })),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let details = body["error"]["details"].as_array().unwrap();
    let fields: Vec<&str> = details
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"primary_key") && fields.contains(&"identifier"),
        "{body}"
    );

    let (status, made) = call(
        &app,
        "POST",
        "/api/v1/syncs",
        Some(json!({
            "name": "people", "warehouse": "local", "model": {"table": "users"}, "app": "cio",
            "object": "person", "mode": "upsert", "primary_key": "user_id",
        })),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, sync) = call(&app, "GET", "/api/v1/syncs/people", None, true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sync["settings"], json!({"primary_key": "user_id"}));
    assert!(sync["id"].as_str().unwrap().starts_with("sync-"));
}

#[tokio::test]
async fn sessions_expire_on_the_server_and_logout_ends_them() {
    let (app, server, _dir) = app_and_server().await;
    let login = || async {
        let resp = app
            .clone()
            .oneshot(
                Request::post("/login")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={TOKEN}")))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_string()
    };
    let page = |cookie: String| {
        let app = app.clone();
        async move {
            app.oneshot(
                Request::get("/syncs")
                    .header("cookie", cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
        }
    };
    let session = login().await;
    assert_eq!(page(session.clone()).await, StatusCode::OK);
    // Behind HTTPS, the cookie is Secure.
    server.set_public_url("https://sallyport.example.com");
    let secure = app
        .clone()
        .oneshot(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={TOKEN}")))
                .unwrap(),
        )
        .await
        .unwrap();
    let cookie = secure.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Idle for longer than the idle limit: the server refuses the session, whatever the cookie.
    server.set_session_limits(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_millis(150),
    );
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(
        page(session.clone()).await,
        StatusCode::SEE_OTHER,
        "expired: back to /login"
    );
    // Used within the idle limit, it lives until its absolute limit.
    server.set_session_limits(
        std::time::Duration::from_millis(400),
        std::time::Duration::from_secs(3600),
    );
    let session = login().await;
    assert_eq!(page(session.clone()).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(page(session).await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn listings_come_a_page_at_a_time_and_never_more_than_a_thousand() {
    let (app, server, _dir) = app_and_server().await;
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/syncs",
        Some(json!({
            "name": "people", "warehouse": "local", "model": {"table": "users"}, "app": "cio",
            "object": "person", "mode": "upsert", "primary_key": "user_id",
        })),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let engine = server.engine();
    let key = engine.state_key("people");
    let run = engine.state.begin_run("people", false, None).await.unwrap();
    let failed = (0..1500)
        .map(|i| (format!("k{i:05}"), "bad".to_string()))
        .collect();
    engine
        .state
        .commit(
            &key,
            run,
            sallyport_state::Commit {
                failed,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, first) = call(
        &app,
        "GET",
        "/api/v1/syncs/people/failures?limit=5000",
        None,
        true,
    )
    .await;
    assert_eq!(
        first["failures"].as_array().unwrap().len(),
        1000,
        "at most a page of 1,000"
    );
    let next = first["next"].as_str().unwrap().to_string();
    assert_eq!(next, "k00999");
    let (_, second) = call(
        &app,
        "GET",
        &format!("/api/v1/syncs/people/failures?limit=1000&after={next}"),
        None,
        true,
    )
    .await;
    assert_eq!(second["failures"].as_array().unwrap().len(), 500);
    assert_eq!(second["failures"][0]["key"], "k01000");
    assert!(second["next"].is_null());

    for _ in 0..2 {
        engine.state.begin_run("people", false, None).await.unwrap();
    }
    let (_, runs) = call(&app, "GET", "/api/v1/syncs/people/runs?limit=2", None, true).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
    let after = runs["next"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        "GET",
        &format!("/api/v1/syncs/people/runs?limit=2&after={after}"),
        None,
        true,
    )
    .await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert_eq!(rest["runs"][0]["id"], run);
}

#[tokio::test]
async fn sqlite_warehouses_made_through_the_api_stay_in_the_data_folder() {
    let (app, _server, dir) = app_and_server().await;
    // The data folder is the state file's folder: `dir`, which holds w.db.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.db"), b"").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.db"), dir.path().join("link.db"))
        .unwrap();
    for (path, why) in [
        ("/etc/passwd", "absolute path"),
        ("../x.db", "`..`"),
        ("file:w.db", "file: URI"),
        ("link.db", "outside the data folder"),
        ("missing.db", "No such file"),
    ] {
        let (status, body) = call(
            &app,
            "POST",
            "/api/v1/warehouses",
            Some(json!({"name": "w2", "type": "sqlite", "path": path})),
            true,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{path}: {message}");
        assert_eq!(body["error"]["details"][0]["field"], "path");
    }
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/warehouses",
        Some(json!({"name": "w2", "type": "sqlite", "path": "w.db"})),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn connections_made_here_never_reach_link_local_and_private_only_when_allowed() {
    let (app, server, _dir) = app_and_server().await;
    let cio = |url: &str| json!({"name": "c2", "type": "customerio", "site_id": "s", "api_key": "k", "track_url": url});
    // Cloud metadata addresses: refused, even when private networks are allowed.
    server.set_allow_private_networks(true);
    for url in ["https://169.254.169.254", "https://[fe80::1]:8443"] {
        let (status, body) = call(&app, "POST", "/api/v1/apps", Some(cio(url)), true).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("link-local"),
            "{body}"
        );
    }
    let pg =
        json!({"name": "pg2", "type": "postgres", "url": "postgres://u:p@169.254.169.254:5432/db"});
    let (status, body) = call(&app, "POST", "/api/v1/warehouses", Some(pg), true).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        !body.to_string().contains("u:p@"),
        "no password in the answer: {body}"
    );
    // Loopback and private addresses: only when allowed.
    server.set_allow_private_networks(false);
    for url in [
        "http://127.0.0.1:9",
        "https://10.1.2.3",
        "http://localhost:9",
    ] {
        let (status, body) = call(&app, "POST", "/api/v1/apps", Some(cio(url)), true).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--allow-private-networks"),
            "{body}"
        );
    }
    server.set_allow_private_networks(true);
    let (status, body) = call(
        &app,
        "POST",
        "/api/v1/apps",
        Some(cio("http://127.0.0.1:9")),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn fuzz_cases() -> u32 {
    std::env::var("SALLYPORT_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

fn body_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        prop_oneof![
            Just("person"),
            Just("event"),
            Just("upsert"),
            Just("insert"),
            Just("sqlite"),
            Just("postgres"),
            Just("customerio"),
            Just("local"),
            Just("cio"),
            Just("user_id"),
            Just("track"),
            Just("w.db")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("type".to_string()),
                    Just("object".to_string()),
                    Just("mode".to_string()),
                    Just("warehouse".to_string()),
                    Just("app".to_string()),
                    Just("model".to_string()),
                    Just("table".to_string()),
                    Just("primary_key".to_string()),
                    Just("path".to_string()),
                    Just("mapping".to_string()),
                    Just("schedule".to_string()),
                    Just("track_url".to_string()),
                    Just("id".to_string()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(fuzz_cases()))]

    /// Input nobody planned for: any JSON body on the API's writing routes is answered 2xx or
    /// 4xx, never 500 nor a panic.
    #[test]
    fn any_api_body_is_answered_without_a_server_error(body in body_value()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _dir) = app().await;
            for (method, path) in [
                ("POST", "/api/v1/syncs"),
                ("PUT", "/api/v1/syncs/people"),
                ("POST", "/api/v1/warehouses"),
                ("POST", "/api/v1/apps"),
            ] {
                let (status, answer) = call(&app, method, path, Some(body.clone()), true).await;
                assert!(status.as_u16() < 500, "{method} {path} {body}: {status} {answer}");
            }
        });
    }
}

#[tokio::test]
async fn wrong_tokens_are_limited_per_client() {
    let (app, _dir) = app().await;
    let login = |token: &str| {
        let app = app.clone();
        let token = token.to_string();
        async move {
            app.oneshot(
                Request::post("/login")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={token}")))
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
        }
    };
    for _ in 0..10 {
        assert_eq!(login("wrong").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login("wrong").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        login(TOKEN).await,
        StatusCode::TOO_MANY_REQUESTS,
        "for the rest of the minute, even the right token waits"
    );
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_large_bodies_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_app, server, _dir) = app_and_server().await;
    server.set_limits(sallyport_server::Limits {
        header_read: std::time::Duration::from_millis(300),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(sallyport_server::serve(server.clone(), listener, async {
        let _ = stopped.await;
    }));

    // Headers that never end: the server closes the connection once their time is up.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        slow.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A body over the limit: 413, the route never sees it.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{addr}/api/v1/syncs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A normal request still works.
    let resp = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn stored_secrets_are_re_encrypted_under_a_new_key() {
    let (app, server, dir) = app_and_server().await;
    server.set_allow_private_networks(true);
    let (status, _) = call(
        &app,
        "POST",
        "/api/v1/apps",
        Some(
            json!({"name": "c2", "type": "customerio", "site_id": "s2", "api_key": "sk-rotated",
                    "track_url": "https://127.0.0.1:9"}),
        ),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let key_file = dir.path().join("sallyport.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    let state = server.engine().state.clone();
    let before = state.entities("app").await.unwrap();
    let n = sallyport_server::rotate_key(&key_file, &state)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(old_key, new_key, "a new key");
    let after = state.entities("app").await.unwrap();
    assert_ne!(before, after, "new ciphertexts");
    assert!(!after[0].1.contains("sk-rotated"));
    // The new key opens them (a server starts over them); the old one does not.
    let vault = sallyport_server::Vault::load(&key_file).unwrap();
    let engine = Engine::open(Config::load(&dir.path().join("sallyport.yaml")).unwrap())
        .await
        .unwrap();
    let restarted = Server::start(engine, TOKEN.into(), vault).await.unwrap();
    assert!(restarted.engine().config.apps.contains_key("c2"));
    let old = sallyport_server::Vault::from_hex(&old_key).unwrap();
    let sealed: Value = serde_json::from_str(&after[0].1).unwrap();
    assert!(old
        .decrypt(sealed["api_key"].as_str().unwrap(), "anything")
        .is_err());
}

#[tokio::test]
async fn secrets_sealed_without_their_address_are_sealed_again_at_start() {
    let (_app, server, dir) = app_and_server().await;
    let state = server.engine().state.clone();
    let key_file = dir.path().join("sallyport.key");
    let vault = sallyport_server::Vault::load(&key_file).unwrap();
    // A store an earlier version wrote (its secrets not yet sealed again), holding an app
    // whose key is sealed without entity or address.
    assert!(state
        .delete_entity("meta", "secrets-sealed-v2")
        .await
        .unwrap());
    let old = json!({"type": "customerio", "site_id": vault.encrypt_v1_for_tests("s-old"),
        "api_key": vault.encrypt_v1_for_tests("sk-old"), "track_url": "https://127.0.0.1:9"});
    state
        .put_entity("app", "legacy", &old.to_string())
        .await
        .unwrap();
    // A v1 secret is never used as it is.
    let refused = vault
        .decrypt(old["api_key"].as_str().unwrap(), "anything")
        .unwrap_err();
    assert!(refused.contains("earlier version"), "{refused}");
    // A server starting over the store seals it again, bound to its app and address.
    let engine = Engine::open(Config::load(&dir.path().join("sallyport.yaml")).unwrap())
        .await
        .unwrap();
    let restarted = Server::start(engine, TOKEN.into(), vault).await.unwrap();
    let app = &restarted.engine().config.apps["legacy"];
    assert!(format!("{app:?}").contains("127.0.0.1:9"));
    let stored: Value = serde_json::from_str(
        &state
            .entities("app")
            .await
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "legacy")
            .unwrap()
            .1,
    )
    .unwrap();
    let sealed = stored["api_key"].as_str().unwrap();
    assert!(sealed.starts_with("enc:v2:"), "{sealed}");
    // Now bound: moved to another address in the store, it does not open.
    let mut moved = stored.clone();
    moved["track_url"] = "https://elsewhere.example".into();
    state
        .put_entity("app", "legacy", &moved.to_string())
        .await
        .unwrap();
    let engine = Engine::open(Config::load(&dir.path().join("sallyport.yaml")).unwrap())
        .await
        .unwrap();
    let vault = sallyport_server::Vault::load(&key_file).unwrap();
    let err = Server::start(engine, TOKEN.into(), vault)
        .await
        .err()
        .unwrap();
    assert!(err.contains("another entity or address"), "{err}");
    // Once the store is sealed, a v1 secret put in later (copied from a backup into an entity
    // pointing elsewhere, say) is never sealed again: it does not open.
    let vault = sallyport_server::Vault::load(&key_file).unwrap();
    let planted = json!({"type": "customerio", "site_id": vault.encrypt_v1_for_tests("s-old"),
        "api_key": vault.encrypt_v1_for_tests("sk-old"), "track_url": "https://elsewhere.example"});
    state
        .put_entity("app", "legacy", &planted.to_string())
        .await
        .unwrap();
    let engine = Engine::open(Config::load(&dir.path().join("sallyport.yaml")).unwrap())
        .await
        .unwrap();
    let err = Server::start(engine, TOKEN.into(), vault)
        .await
        .err()
        .unwrap();
    assert!(err.contains("earlier version"), "{err}");
}

#[tokio::test]
async fn a_pages_background_polling_does_not_keep_its_session_alive() {
    let (app, server, _dir) = app_and_server().await;
    let resp = app
        .clone()
        .oneshot(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={TOKEN}")))
                .unwrap(),
        )
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_string();
    server.set_session_limits(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_millis(400),
    );
    let get = |path: &'static str| {
        let (app, session) = (app.clone(), session.clone());
        async move {
            app.oneshot(
                Request::get(path)
                    .header("cookie", session)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
        }
    };
    // A tab left open polls every 150 ms; the person does nothing.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let status = get("/syncs/people/live").await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SEE_OTHER,
            "{status}"
        );
    }
    assert_eq!(
        get("/syncs").await,
        StatusCode::SEE_OTHER,
        "idle past the limit despite the polling: back to /login"
    );
}
