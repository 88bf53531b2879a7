//! How fast the sandbox ingests v2 batches of person `identify` ops.
//!
//! `cargo run --release -p sallyport-sandbox --example ingest_bench -- [PEOPLE] [CONCURRENCY]`
//!
//! Starts a sandbox in-process, sends PEOPLE distinct people (default 1,000,000) as batches of
//! about 450 KB over loopback with CONCURRENCY connections (default 4), and prints people/s.
//! Request bodies are built before the clock starts, so the figure is the sandbox's.

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sallyport_sandbox::{start, SandboxConfig};
use serde_json::json;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let people: usize = args
        .next()
        .map(|a| a.parse().expect("PEOPLE"))
        .unwrap_or(1_000_000);
    let concurrency: usize = args
        .next()
        .map(|a| a.parse().expect("CONCURRENCY"))
        .unwrap_or(4);
    let sandbox = start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("{}/api/v2/batch", sandbox.url());

    let mut bodies = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for i in 0..people {
        let op = serde_json::to_string(&json!({
            "type": "person",
            "identifiers": {"id": format!("user-{i}")},
            "action": "identify",
            "attributes": {
                "email": format!("user{i}@example.com"),
                "first_name": "Ada", "last_name": "Lovelace", "plan": "pro",
                "signed_up_at": 1_700_000_000 + i as i64, "lifetime_value": 1234.5,
                "active": true, "country": "GB", "company": "Analytical Engines",
            }
        }))
        .unwrap();
        if size + op.len() + 1 > 450_000 {
            bodies.push(format!("{{\"batch\":[{}]}}", batch.join(",")));
            batch.clear();
            size = 0;
        }
        size += op.len() + 1;
        batch.push(op);
    }
    if !batch.is_empty() {
        bodies.push(format!("{{\"batch\":[{}]}}", batch.join(",")));
    }
    let requests = bodies.len();

    // Reference, measured in the same run: parsing the same bodies into JSON values on one core,
    // the least any JSON ingest has to do.
    let parse_started = Instant::now();
    for b in &bodies {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        std::hint::black_box(v);
    }
    let parse_secs = parse_started.elapsed().as_secs_f64();
    let bodies = std::sync::Arc::new(tokio::sync::Mutex::new(bodies));
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (bodies, client, url) = (bodies.clone(), client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = bodies.lock().await.pop() else {
                    break;
                };
                let resp = client
                    .post(&url)
                    .basic_auth("sandbox-site", Some("sandbox-key"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = sandbox.shared().stats();
    assert_eq!(stats.people, people, "every person stored");
    println!(
        "sandbox ingest: {people} people in {requests} batches, {concurrency} connections: {secs:.2} s, {:.0} people/s",
        people as f64 / secs
    );
    println!(
        "reference (serde_json parse of the same bodies, one core): {parse_secs:.2} s, {:.0} people/s; ingest/reference time ratio {:.2}",
        people as f64 / parse_secs,
        secs / parse_secs
    );
}
