#![cfg(feature = "bigquery")]
//! What the BigQuery stand-in cannot show, against answers in the shapes Google documents: a
//! service account's signed JWT exchanged for a token (the signature checked with the key's
//! public half), a query not complete at first (polled with `jobs.getQueryResults`), and a result
//! read over two pages.

use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use sallyport_core::Model;
use sallyport_sources::{bigquery, Source, WarehouseSettings};
use serde_json::{json, Value};

#[derive(Clone)]
struct Recorded {
    log: Arc<Mutex<Vec<String>>>,
    public_key: Arc<Vec<u8>>,
}

fn schema() -> Value {
    json!({"fields": [{"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
                      {"name": "at", "type": "TIMESTAMP", "mode": "NULLABLE"}]})
}

async fn token(
    State(r): State<Recorded>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let jwt = form.get("assertion").cloned().unwrap_or_default();
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
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        r.log.lock().unwrap().push(format!(
            "token grant=refresh_token client={} refresh={}",
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("refresh_token").cloned().unwrap_or_default()
        ));
        return Json(
            json!({"access_token": "ya29.user", "expires_in": 3599, "token_type": "Bearer"}),
        );
    }
    r.log.lock().unwrap().push(format!(
        "token grant={} valid={valid} iss={} scope={}",
        form.get("grant_type").cloned().unwrap_or_default(),
        claims["iss"].as_str().unwrap_or(""),
        claims["scope"].as_str().unwrap_or("")
    ));
    Json(json!({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}))
}

fn authorized(r: &Recorded, headers: &HeaderMap, what: &str) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    r.log.lock().unwrap().push(format!("{what} auth={auth}"));
}

async fn query(
    State(r): State<Recorded>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    authorized(
        &r,
        &headers,
        &format!("query {}", body["query"].as_str().unwrap_or("")),
    );
    let job = json!({"projectId": "p", "jobId": "job_1", "location": "EU"});
    if body["query"] == "SELECT 1" {
        return Json(
            json!({"jobReference": job, "jobComplete": true, "schema": {"fields": [{"name": "f0_", "type": "INTEGER"}]},
            "rows": [{"f": [{"v": "1"}]}], "totalRows": "1"}),
        );
    }
    Json(json!({"kind": "bigquery#queryResponse", "jobReference": job, "jobComplete": false}))
}

async fn results(
    State(r): State<Recorded>,
    headers: HeaderMap,
    Path((_, job)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let page = q.get("pageToken").cloned().unwrap_or_default();
    authorized(
        &r,
        &headers,
        &format!(
            "results {job} page={page} location={}",
            q.get("location").cloned().unwrap_or_default()
        ),
    );
    let reference = json!({"projectId": "p", "jobId": job, "location": "EU"});
    let polls = r
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("results"))
        .count();
    if polls == 1 {
        return Json(json!({"jobReference": reference, "jobComplete": false}));
    }
    Json(match page.as_str() {
        "" => {
            json!({"jobReference": reference, "jobComplete": true, "schema": schema(), "totalRows": "3",
            "pageToken": "next-1", "rows": [{"f": [{"v": "1"}, {"v": "1704164645000000"}]}, {"f": [{"v": "2"}, {"v": null}]}]})
        }
        _ => {
            json!({"jobReference": reference, "jobComplete": true, "schema": schema(), "totalRows": "3",
            "rows": [{"f": [{"v": "3"}, {"v": "60000000"}]}]})
        }
    })
}

#[tokio::test]
async fn a_service_account_signs_in_and_a_slow_query_is_polled_and_paged() {
    let certs = sallyport_testkit::needs_service!("SALLYPORT_TEST_TLS_CERTS", "the test keys");
    let r = Recorded {
        log: Arc::default(),
        public_key: Arc::new(std::fs::read(format!("{certs}/sa.pub.der")).unwrap()),
    };
    let app = Router::new()
        .route("/token", post(token))
        .route("/bigquery/v2/projects/p/queries", post(query))
        .route("/bigquery/v2/projects/{p}/queries/{job}", get(results))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A service account key as the console gives it, pointing at this token endpoint.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sa.json");
    std::fs::write(
        &key_file,
        json!({"type": "service_account", "project_id": "p", "private_key_id": "k1",
               "private_key": std::fs::read_to_string(format!("{certs}/sa.key")).unwrap(),
               "client_email": "sallyport@p.iam.gserviceaccount.com", "client_id": "1",
               "token_uri": format!("{base}/token")})
        .to_string(),
    )
    .unwrap();
    let source = Source::open(&WarehouseSettings::Bigquery(bigquery::Settings {
        project: "p".into(),
        location: None,
        credentials_path: Some(key_file.display().to_string()),
        endpoint: Some(base.clone()),
        sallyport_schema: None,
    }))
    .await
    .unwrap();
    let mut stream = source
        .stream(&Model::Table("ds.users".into()), Some("id"))
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
        ]
    );
    let log = r.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("token")).collect::<Vec<_>>(),
        ["token grant=urn:ietf:params:oauth:grant-type:jwt-bearer valid=true iss=sallyport@p.iam.gserviceaccount.com scope=https://www.googleapis.com/auth/bigquery"],
        "one token, from a validly signed assertion, kept for every call: {log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| !l.starts_with("token"))
            .all(|l| l.ends_with("auth=Bearer ya29.test")),
        "{log:?}"
    );
    assert!(
        log.contains(&"results job_1 page= location=EU auth=Bearer ya29.test".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&"results job_1 page=next-1 location=EU auth=Bearer ya29.test".to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn gcloud_user_credentials_are_refreshed_into_a_token() {
    let r = Recorded {
        log: Arc::default(),
        public_key: Arc::new(Vec::new()),
    };
    let app = Router::new()
        .route("/token", post(token))
        .route("/bigquery/v2/projects/p/queries", post(query))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // What `gcloud auth application-default login` writes.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("application_default_credentials.json");
    std::fs::write(
        &file,
        json!({"type": "authorized_user", "client_id": "cid.apps.googleusercontent.com",
               "client_secret": "csecret", "refresh_token": "1//refresh",
               "token_uri": format!("{base}/token")})
        .to_string(),
    )
    .unwrap();
    Source::open(&WarehouseSettings::Bigquery(bigquery::Settings {
        project: "p".into(),
        location: None,
        credentials_path: Some(file.display().to_string()),
        endpoint: Some(base),
        sallyport_schema: None,
    }))
    .await
    .unwrap();
    let log = r.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "token grant=refresh_token client=cid.apps.googleusercontent.com refresh=1//refresh",
            "query SELECT 1 auth=Bearer ya29.user"
        ]
    );
}
