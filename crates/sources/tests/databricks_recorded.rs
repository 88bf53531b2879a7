#![cfg(feature = "databricks")]
//! What the Databricks stand-in cannot show, against answers in the shapes the SQL Statement
//! Execution API documents: a statement that is still running when the first answer comes
//! (polled), a result in two chunks of `EXTERNAL_LINKS` (downloaded without the workspace's
//! token), and a read dropped halfway (its statement cancelled).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use sallyport_core::Model;
use sallyport_sources::{databricks, Source, WarehouseSettings};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Recorded {
    log: Arc<Mutex<Vec<String>>>,
    base: Arc<Mutex<String>>,
}

impl Recorded {
    fn note(&self, s: impl Into<String>) {
        self.log.lock().unwrap().push(s.into());
    }
}

fn manifest() -> Value {
    json!({"format": "JSON_ARRAY", "schema": {"column_count": 3, "columns": [
        {"name": "id", "type_name": "LONG", "type_text": "BIGINT", "position": 0},
        {"name": "seen", "type_name": "TIMESTAMP", "type_text": "TIMESTAMP", "position": 1},
        {"name": "tags", "type_name": "ARRAY", "type_text": "ARRAY<STRING>", "position": 2}]},
        "total_chunk_count": 2, "total_row_count": 3,
        "chunks": [{"chunk_index": 0, "row_offset": 0, "row_count": 2},
                   {"chunk_index": 1, "row_offset": 2, "row_count": 1}]})
}

async fn submit(
    State(r): State<Recorded>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let statement = body["statement"].as_str().unwrap_or_default().to_string();
    r.note(format!(
        "submit {} {} auth={}",
        body["disposition"].as_str().unwrap_or(""),
        statement,
        headers.contains_key("authorization")
    ));
    if statement.contains("LIMIT 0") {
        return Json(
            json!({"statement_id": "d1", "status": {"state": "SUCCEEDED"},
            "manifest": manifest(), "result": {"chunk_index": 0, "row_count": 0, "data_array": []}}),
        );
    }
    if statement.starts_with("SELECT current_date()") {
        return Json(
            json!({"statement_id": "c1", "status": {"state": "SUCCEEDED"},
            "manifest": {"format": "JSON_ARRAY", "schema": {"columns": [{"name": "d", "type_name": "DATE"}]}, "total_chunk_count": 1},
            "result": {"chunk_index": 0, "data_array": [["2026-11-28"]]}}),
        );
    }
    Json(json!({"statement_id": "s1", "status": {"state": "PENDING"}}))
}

async fn poll(State(r): State<Recorded>, Path(id): Path<String>) -> Json<Value> {
    let polls = {
        let mut log = r.log.lock().unwrap();
        log.push(format!("poll {id}"));
        log.iter().filter(|l| l.starts_with("poll")).count()
    };
    if polls < 2 {
        return Json(json!({"statement_id": id, "status": {"state": "RUNNING"}}));
    }
    let base = r.base.lock().unwrap().clone();
    Json(
        json!({"statement_id": id, "status": {"state": "SUCCEEDED"}, "manifest": manifest(),
        "result": {"chunk_index": 0, "row_offset": 0, "row_count": 2, "external_links": [
            {"chunk_index": 0, "row_offset": 0, "row_count": 2, "byte_count": 80,
             "external_link": format!("{base}/files/0?X-Amz-Signature=abc"),
             "expiration": "2026-11-28T23:00:00Z", "next_chunk_index": 1,
             "next_chunk_internal_link": "/api/2.0/sql/statements/s1/result/chunks/1"}]}}),
    )
}

async fn chunk(State(r): State<Recorded>, Path((id, n)): Path<(String, u64)>) -> Json<Value> {
    r.note(format!("chunk {id} {n}"));
    let base = r.base.lock().unwrap().clone();
    Json(
        json!({"chunk_index": n, "row_offset": 2, "row_count": 1, "external_links": [
        {"chunk_index": n, "row_offset": 2, "row_count": 1,
         "external_link": format!("{base}/files/{n}?X-Amz-Signature=def"),
         "http_headers": {"x-ms-encryption-key": "k3y"},
         "expiration": "2026-11-28T23:00:00Z"}]}),
    )
}

async fn file(State(r): State<Recorded>, headers: HeaderMap, Path(n): Path<u64>) -> Json<Value> {
    r.note(format!(
        "file {n} auth={}",
        headers.contains_key("authorization")
    ));
    if let Some(k) = headers.get("x-ms-encryption-key") {
        r.note(format!("file {n} key={}", k.to_str().unwrap_or("")));
    }
    Json(match n {
        0 => json!([
            ["1", "2024-01-02T03:04:05.000Z", "[\"a\",\"b\"]"],
            ["2", null, "[]"]
        ]),
        _ => json!([["3", "1970-01-01T00:01:00.000Z", null]]),
    })
}

async fn cancel(State(r): State<Recorded>, Path(id): Path<String>) -> Json<Value> {
    r.note(format!("cancel {id}"));
    Json(json!({}))
}

async fn start() -> (Recorded, String) {
    let r = Recorded::default();
    let app = Router::new()
        .route("/api/2.0/sql/statements", post(submit))
        .route("/api/2.0/sql/statements/{id}", get(poll))
        .route("/api/2.0/sql/statements/{id}/result/chunks/{n}", get(chunk))
        .route("/api/2.0/sql/statements/{id}/cancel", post(cancel))
        .route("/files/{n}", get(file))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *r.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, base)
}

fn settings(host: &str) -> WarehouseSettings {
    WarehouseSettings::Databricks(databricks::Settings {
        host: host.to_string(),
        warehouse_id: "abc123".into(),
        token: sallyport_core::Secret::new("dapi-secret".to_string()),
        catalog: None,
        schema: None,
    })
}

#[tokio::test]
async fn a_running_statement_is_polled_and_its_external_chunks_downloaded_without_the_token() {
    let (r, base) = start().await;
    let source = Source::open(&settings(&base)).await.unwrap();
    let mut stream = source
        .stream(&Model::Table("main.default.users".into()), Some("id"))
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
            (Some("1".into()), json!([1, 1704164645, ["a", "b"]])),
            (Some("2".into()), json!([2, null, []])),
            (Some("3".into()), json!([3, 60, null])),
        ]
    );
    let log = r.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("submit EXTERNAL_LINKS SELECT m.`id`, m.`seen`, m.`tags` FROM `main`.`default`.`users` AS m auth=true")),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("poll s1")).count(),
        2,
        "{log:?}"
    );
    assert!(log.contains(&"chunk s1 1".to_string()), "{log:?}");
    assert!(
        log.contains(&"file 0 auth=false".to_string())
            && log.contains(&"file 1 auth=false".to_string()),
        "presigned links are fetched without the token: {log:?}"
    );
    assert!(
        log.contains(&"file 1 key=k3y".to_string()),
        "a link's own headers go with its download: {log:?}"
    );
}

#[tokio::test]
async fn a_read_dropped_halfway_cancels_its_statement() {
    let (r, base) = start().await;
    let source = Source::open(&settings(&base)).await.unwrap();
    let mut stream = source
        .stream(&Model::Table("main.default.users".into()), None)
        .await
        .unwrap();
    // The receiver goes before the reader has sent everything: its next send fails.
    drop(stream.recv().await);
    drop(stream);
    for _ in 0..100 {
        if r.log.lock().unwrap().iter().any(|l| l == "cancel s1") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no cancel: {:?}", r.log.lock().unwrap());
}
