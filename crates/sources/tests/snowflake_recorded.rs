#![cfg(feature = "snowflake")]
//! What the Snowflake stand-in cannot show, against answers in the shapes Snowflake's drivers
//! read: a key pair's JWT sign-in (signature and key fingerprint checked), a query still
//! running at first (polled), a JSON result whose rows continue in gzipped chunks fetched with
//! the chunk headers the answer gives (and without the session token), and a session token that
//! expires mid-read (renewed with the master token).

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use sallyport_core::Model;
use sallyport_sources::{snowflake, Source, WarehouseSettings};
use serde_json::{json, Value};

#[derive(Clone)]
struct Recorded {
    log: Arc<Mutex<Vec<String>>>,
    public_key: Arc<Vec<u8>>,
    base: Arc<Mutex<String>>,
}

impl Recorded {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
    fn count(&self, prefix: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

async fn login(State(r): State<Recorded>, Json(body): Json<Value>) -> Json<Value> {
    let jwt = body["data"]["TOKEN"].as_str().unwrap_or_default();
    let parts: Vec<&str> = jwt.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let valid = parts.len() == 3
        && ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            r.public_key.as_slice(),
        )
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64.decode(parts[2]).unwrap_or_default(),
        )
        .is_ok();
    let claims: Value =
        serde_json::from_slice(&b64.decode(parts.get(1).unwrap_or(&"")).unwrap_or_default())
            .unwrap_or_default();
    r.note(format!(
        "login {} valid={valid} iss={} sub={}",
        body["data"]["AUTHENTICATOR"].as_str().unwrap_or(""),
        claims["iss"].as_str().unwrap_or(""),
        claims["sub"].as_str().unwrap_or("")
    ));
    Json(
        json!({"success": true, "data": {"token": "t1", "masterToken": "m1", "validityInSeconds": 3600}}),
    )
}

async fn renew(State(r): State<Recorded>, headers: HeaderMap) -> Json<Value> {
    r.note(format!(
        "renew {}",
        headers["authorization"].to_str().unwrap_or("")
    ));
    Json(json!({"success": true, "data": {"sessionToken": "t2", "validityInSecondsST": 3600}}))
}

fn rowtype() -> Value {
    json!([{"name": "id", "type": "fixed", "scale": 0, "precision": 38, "nullable": true},
           {"name": "seen", "type": "timestamp_ntz", "scale": 9, "nullable": true}])
}

async fn query(
    State(r): State<Recorded>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let auth = headers["authorization"].to_str().unwrap_or("").to_string();
    let sql = body["sqlText"].as_str().unwrap_or("").to_string();
    r.note(format!("query {auth} {sql}"));
    if sql.contains("LIMIT 0") {
        return Json(
            json!({"success": true, "data": {"rowtype": rowtype(), "rowset": [], "queryResultFormat": "json"}}),
        );
    }
    Json(
        json!({"success": true, "code": "333334", "message": "Asynchronous execution in progress.",
        "data": {"queryId": "q1", "getResultUrl": "/queries/q1/result"}}),
    )
}

async fn result(
    State(r): State<Recorded>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Json<Value> {
    let auth = headers["authorization"].to_str().unwrap_or("").to_string();
    r.note(format!("result {id} {auth}"));
    if r.count("result") == 1 {
        return Json(
            json!({"success": true, "code": "333334", "data": {"queryId": id, "getResultUrl": "/queries/q1/result"}}),
        );
    }
    // The session token expires once, mid-read.
    if auth.contains("t1") && r.count("result") == 2 {
        return Json(
            json!({"success": false, "code": "390112", "message": "Your session has expired. Please login again.", "data": null}),
        );
    }
    let base = r.base.lock().unwrap().clone();
    Json(json!({"success": true, "data": {
        "rowtype": rowtype(), "queryResultFormat": "json",
        "rowset": [["1", "1704164645.123000000"]],
        "chunkHeaders": {"x-amz-server-side-encryption-customer-key": "k3y"},
        "chunks": [{"url": format!("{base}/chunks/0"), "rowCount": 2, "uncompressedSize": 40},
                   {"url": format!("{base}/chunks/1"), "rowCount": 1, "uncompressedSize": 20}]}}))
}

async fn chunk(State(r): State<Recorded>, headers: HeaderMap, Path(n): Path<u32>) -> Vec<u8> {
    r.note(format!(
        "chunk {n} sse={} auth={}",
        headers
            .get("x-amz-server-side-encryption-customer-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        headers.contains_key("authorization")
    ));
    // JSON chunks hold rows without their enclosing brackets, gzipped.
    let text = match n {
        0 => r#"["2", null],["3", "60.000000000"]"#,
        _ => r#"["4", "0.000000000"]"#,
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn a_key_pair_signs_in_a_running_query_is_polled_and_its_chunks_read() {
    let certs = sallyport_testkit::needs_service!("SALLYPORT_TEST_TLS_CERTS", "the test keys");
    let r = Recorded {
        log: Arc::default(),
        public_key: Arc::new(std::fs::read(format!("{certs}/sa.pub.der")).unwrap()),
        base: Arc::default(),
    };
    let app = Router::new()
        .route("/session/v1/login-request", post(login))
        .route("/session/token-request", post(renew))
        .route("/queries/v1/query-request", post(query))
        .route("/queries/{id}/result", get(result))
        .route("/chunks/{n}", get(chunk))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *r.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let source = Source::open(&WarehouseSettings::Snowflake(snowflake::Settings {
        account: "acme-xy12345".into(),
        user: "sallyport".into(),
        private_key_path: Some(format!("{certs}/sa.key")),
        private_key_passphrase: None,
        password: None,
        warehouse: "COMPUTE_WH".into(),
        database: "ANALYTICS".into(),
        schema: Some("PUBLIC".into()),
        role: None,
        url: Some(base),
        sallyport_schema: None,
    }))
    .await
    .unwrap();
    let mut stream = source
        .stream(&Model::Table("users".into()), Some("id"))
        .await
        .unwrap();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.recv().await {
        rows.extend(chunk.unwrap());
    }
    let got: Vec<(Option<String>, Value)> = rows
        .into_iter()
        .map(|r| (r.key, Value::Array(r.values)))
        .collect();
    assert_eq!(
        got,
        [
            (Some("1".into()), json!([1, 1704164645])),
            (Some("2".into()), json!([2, null])),
            (Some("3".into()), json!([3, 60])),
            (Some("4".into()), json!([4, 0])),
        ]
    );
    let log = r.log.lock().unwrap().clone();
    // The JWT is signed by the key, and names the key by its public half's fingerprint.
    let public = std::fs::read(format!("{certs}/sa.pub.der")).unwrap();
    let spki = std::process::Command::new("openssl")
        .args([
            "rsa",
            "-RSAPublicKey_in",
            "-inform",
            "DER",
            "-pubout",
            "-outform",
            "DER",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&public)?;
            c.wait_with_output()
        })
        .unwrap()
        .stdout;
    let fingerprint = base64::engine::general_purpose::STANDARD
        .encode(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
    assert_eq!(
        log[0],
        format!("login SNOWFLAKE_JWT valid=true iss=ACME-XY12345.SALLYPORT.SHA256:{fingerprint} sub=ACME-XY12345.SALLYPORT")
    );
    assert!(
        log.iter().any(|l| l == "renew Snowflake Token=\"m1\""),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l == "result q1 Snowflake Token=\"t2\""),
        "renewed token used: {log:?}"
    );
    assert!(
        log.contains(&"chunk 0 sse=k3y auth=false".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&"chunk 1 sse=k3y auth=false".to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn an_encrypted_key_opens_with_its_passphrase() {
    let certs = sallyport_testkit::needs_service!("SALLYPORT_TEST_TLS_CERTS", "the test keys");
    let r = Recorded {
        log: Arc::default(),
        public_key: Arc::new(std::fs::read(format!("{certs}/sa.pub.der")).unwrap()),
        base: Arc::default(),
    };
    let app = Router::new()
        .route("/session/v1/login-request", post(login))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = |key: &str, passphrase: Option<&str>| {
        WarehouseSettings::Snowflake(snowflake::Settings {
            account: "acme-xy12345".into(),
            user: "sallyport".into(),
            private_key_path: Some(format!("{certs}/{key}")),
            private_key_passphrase: passphrase.map(|p| sallyport_core::Secret::new(p.to_string())),
            password: None,
            warehouse: "W".into(),
            database: "D".into(),
            schema: None,
            role: None,
            url: Some(base.clone()),
            sallyport_schema: None,
        })
    };
    // As Snowflake's guide encrypts it (des3), and with AES.
    for key in ["sa.des3.p8", "sa.aes.p8"] {
        Source::open(&settings(key, Some("sallyport-test")))
            .await
            .unwrap();
    }
    let logins = r.log.lock().unwrap().clone();
    assert_eq!(logins.len(), 2);
    assert!(
        logins
            .iter()
            .all(|l| l.starts_with("login SNOWFLAKE_JWT valid=true")),
        "{logins:?}"
    );
    let wrong = match Source::open(&settings("sa.aes.p8", Some("nope"))).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a wrong passphrase opened the key"),
    };
    assert!(
        wrong.contains("passphrase does not open the key"),
        "{wrong}"
    );
    let missing = match Source::open(&settings("sa.aes.p8", None)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an encrypted key opened without a passphrase"),
    };
    assert!(missing.contains("give private_key_passphrase"), "{missing}");
}
