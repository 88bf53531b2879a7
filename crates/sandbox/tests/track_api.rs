//! Drives the sandbox's Track API over real HTTP, the way a Customer.io client would.

use base64::Engine;
use reqwest::StatusCode;
use sallyport_sandbox::{start, IdentifyBy, RunningSandbox, SandboxConfig};
use serde_json::{json, Value};

const SITE: &str = "site-42";
const KEY: &str = "key?>?>";

async fn sandbox(identify_by: IdentifyBy) -> RunningSandbox {
    let config = SandboxConfig {
        site_id: SITE.into(),
        api_key: KEY.into(),
        identify_by,
        ..Default::default()
    };
    start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(s: &RunningSandbox) -> Self {
        Self {
            base: s.url(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .basic_auth(SITE, Some(KEY));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn stats(&self) -> Value {
        self.get("/_sandbox/stats").await.1
    }
}

fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn region_and_basic_auth_in_both_base64_alphabets() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let (status, body) = api.get("/api/v1/accounts/region").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["url"], json!(s.url()));
    assert_eq!(body["region"], "us");
    assert!(body["environment_id"].is_i64());

    let creds = format!("{SITE}:{KEY}");
    let standard = base64::engine::general_purpose::STANDARD.encode(&creds);
    let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&creds);
    assert_ne!(
        standard, url_safe,
        "the credentials must exercise both alphabets"
    );
    for encoded in [standard, url_safe] {
        let resp = api
            .http
            .get(format!("{}/api/v1/accounts/region", s.url()))
            .header("Authorization", format!("Basic {encoded}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{encoded}");
    }
    for (user, pass) in [(SITE, "wrong"), ("other", KEY)] {
        let resp = api
            .http
            .get(format!("{}/api/v1/accounts/region", s.url()))
            .basic_auth(user, Some(pass))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = api
        .http
        .put(format!("{}/api/v1/customers/1", s.url()))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.stats().await["people"],
        0,
        "an unauthorized identify stores nothing"
    );
}

#[tokio::test]
async fn identify_merges_attributes_and_delete_removes() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let (st, body) = api
        .put("/api/v1/customers/42", json!({"plan": "free", "age": 30}))
        .await;
    assert_eq!((st, body), (StatusCode::OK, json!({})));
    api.put(
        "/api/v1/customers/42",
        json!({"plan": "pro", "email": "Ann@X.com"}),
    )
    .await;
    let (st, p) = api.get("/_sandbox/people/42").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p["id"], "42");
    assert_eq!(p["email"], "Ann@X.com");
    assert_eq!(p["attributes"], json!({"plan": "pro", "age": 30}));
    // Found by email, case-insensitively, too.
    assert_eq!(api.get("/_sandbox/people/ann%40x.com").await.1["id"], "42");

    let (st, _) = api
        .send(reqwest::Method::DELETE, "/api/v1/customers/42", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        api.get("/_sandbox/people/42").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.stats().await["people"], 0);

    // `_update: true` never creates.
    api.put("/api/v1/customers/7", json!({"_update": true, "a": 1}))
        .await;
    assert_eq!(api.get("/_sandbox/people/7").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn path_identifiers_are_decoded_exactly_once() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    for id in ["1/2", "a b", "zoë-東京", "100%25", "a+b"] {
        let (st, _) = api
            .put(&format!("/api/v1/customers/{}", seg(id)), json!({"x": id}))
            .await;
        assert_eq!(st, StatusCode::OK, "{id}");
        let (st, p) = api.get(&format!("/_sandbox/people/{}", seg(id))).await;
        assert_eq!(st, StatusCode::OK, "{id}");
        assert_eq!(p["id"], id, "stored under the decoded identifier");
    }
    // `+` stays `+` when sent unencoded, never a space.
    api.put("/api/v1/customers/c+d", json!({})).await;
    assert_eq!(
        api.get(&format!("/_sandbox/people/{}", seg("c+d"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("/_sandbox/people/{}", seg("c d"))).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn email_workspace_matches_case_insensitively() {
    let s = sandbox(IdentifyBy::Email).await;
    let api = Api::new(&s);
    let email = "a+b@x.com";
    let (st, _) = api
        .put(
            &format!("/api/v1/customers/{}", seg(email)),
            json!({"n": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    api.put(
        &format!("/api/v1/customers/{}", seg("A+B@X.COM")),
        json!({"m": 2}),
    )
    .await;
    let stats = api.stats().await;
    assert_eq!(stats["people"], 1, "the same person, whatever the case");
    let p = api.get(&format!("/_sandbox/people/{}", seg(email))).await.1;
    assert_eq!(p["email"], email);
    assert_eq!(p["attributes"], json!({"n": 1, "m": 2}));
    // v2 with an email identifier reaches the same person.
    let (st, _) = api
        .post(
            "/api/v2/entity",
            json!({"type": "person", "identifiers": {"email": "A+b@x.com"}, "action": "identify", "attributes": {"k": 3}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(api.stats().await["people"], 1);
}

#[tokio::test]
async fn v1_limits_answer_400_with_meta_error() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let many: serde_json::Map<String, Value> =
        (0..301).map(|i| (format!("a{i}"), json!(i))).collect();
    let cases = [
        (
            format!("/api/v1/customers/{}", "x".repeat(151)),
            json!({}),
            "id cannot be longer than 150 bytes",
        ),
        (
            "/api/v1/customers/1".into(),
            json!({"n".repeat(151): 1}),
            "attribute name cannot be longer than 150 bytes",
        ),
        (
            "/api/v1/customers/1".into(),
            json!({"bio": "x".repeat(1001)}),
            "value for attribute 'bio' cannot be longer than 1000 bytes",
        ),
        (
            "/api/v1/customers/1".into(),
            Value::Object(many),
            "cannot identify more than 300 attributes in one request",
        ),
        (
            "/api/v1/customers/1".into(),
            json!([1, 2]),
            "the request body must be a JSON object",
        ),
    ];
    for (path, body, message) in cases {
        let (st, resp) = api.put(&path, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{message}");
        assert_eq!(resp, json!({"meta": {"error": message}}));
    }
    // Exactly at the limits is fine.
    let (st, _) = api
        .put(
            &format!("/api/v1/customers/{}", "x".repeat(150)),
            json!({"n".repeat(150): "v".repeat(1000)}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let event_cases = [
        (json!({"name": " "}), "event name must not be blank"),
        (
            json!({"name": "n".repeat(101)}),
            "event name cannot be longer than 100 bytes",
        ),
        (
            json!({"name": "ok", "data": [1]}),
            "event data must be a hash",
        ),
        (
            json!({"name": "ok", "data": {"blob": "x".repeat(100_001)}}),
            "event data cannot be longer than 100000 bytes",
        ),
        (
            json!({"name": "ok", "id": "not-a-ulid"}),
            "event id must be a valid ULID (26 Crockford base32 characters)",
        ),
        (
            json!({"name": "ok", "timestamp": 1_700_000_000_000i64}),
            "timestamp 1700000000000 looks like milliseconds: send Unix seconds",
        ),
        (
            json!({"name": "ok", "timestamp": "yesterday"}),
            "timestamp must be an integer number of seconds",
        ),
        (
            json!({"name": "ok", "type": "click"}),
            "type must be one of event, page, screen; got \"click\"",
        ),
    ];
    for (body, message) in event_cases {
        let (st, resp) = api.post("/api/v1/customers/1/events", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{message}");
        assert_eq!(resp, json!({"meta": {"error": message}}));
    }
    let (st, resp) = api.post("/api/v1/events", json!({"name": "invite"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(resp["meta"]["error"]
        .as_str()
        .unwrap()
        .contains("anonymous_id"));
    let stats = api.stats().await;
    assert_eq!(stats["events"], 0, "rejected events are not stored");
    assert_eq!(stats["people"], 1);
}

#[tokio::test]
async fn events_identified_anonymous_pages_and_dedup() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let id = "01HZY0000000000000000000AB";
    let ev =
        json!({"name": "purchase", "id": id, "timestamp": 1_700_000_000, "data": {"amount": 5}});
    assert_eq!(
        api.post("/api/v1/customers/7/events", ev.clone()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.post("/api/v1/customers/7/events", ev).await.0,
        StatusCode::OK,
        "a duplicate is acknowledged"
    );
    // The same id through v2 is a duplicate as well (ids are case-insensitive).
    let (st, _) = api
        .post("/api/v2/batch", json!({"batch": [
            {"type": "person", "identifiers": {"id": "7"}, "action": "event", "name": "purchase", "id": id.to_lowercase(), "attributes": {"amount": 5}},
            {"type": "person", "identifiers": {"id": "7"}, "action": "page", "name": "https://x.com/pricing", "timestamp": 1_700_000_100},
        ]}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        api.post(
            "/api/v1/events",
            json!({"name": "/home", "type": "page", "anonymous_id": "anon-1"})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        api.post(
            "/api/v1/events",
            json!({"name": "invite", "data": {"recipient": "a@x.com"}})
        )
        .await
        .0,
        StatusCode::OK
    );
    let stats = api.stats().await;
    assert_eq!(stats["events"], 4);
    assert_eq!(stats["duplicate_events"], 2);
    assert_eq!(stats["anonymous_events"], 2);
    assert_eq!(stats["page_views"], 2);

    let (_, body) = api.get("/_sandbox/events?customer_id=7").await;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["name"], "purchase");
    assert_eq!(events[0]["type"], "event");
    assert_eq!(events[0]["timestamp"], 1_700_000_000);
    assert_eq!(events[0]["attributes"], json!({"amount": 5}));
    assert_eq!(events[1]["type"], "page");
    let (_, body) = api.get("/_sandbox/events?anonymous_id=anon-1").await;
    assert_eq!(body["events"][0]["name"], "/home");
    assert_eq!(
        api.get("/_sandbox/events?limit=1").await.1["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn v2_batch_applies_valid_ops_and_reports_invalid_ones_with_207() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let (st, body) = api
        .post("/api/v2/batch", json!({"batch": [
            {"type": "person", "identifiers": {"id": "1"}, "action": "identify", "attributes": {"a": 1}},
            {"type": "person", "identifiers": {"id": "x".repeat(151)}, "action": "identify", "attributes": {}},
            {"type": "person", "identifiers": {"id": "3"}, "action": "identify", "attributes": {"bio": "x".repeat(1001)}},
            {"type": "person", "identifiers": {"id": "4"}, "action": "identify"},
            {"type": "person", "identifiers": {"id": "5", "email": "e@x.com"}, "action": "identify"},
            {"type": "person", "identifiers": {"id": "6"}, "action": "identify", "attributes": (0..40).map(|i| (format!("k{i}"), json!("y".repeat(900)))).collect::<serde_json::Map<String, Value>>()},
            {"type": "person", "identifiers": {"id": "1"}, "action": "event", "name": "e", "timestamp": 1_700_000_000_000i64},
            {"type": "person", "identifiers": {"id": "1"}, "action": "fly"},
        ]}))
        .await;
    assert_eq!(st, StatusCode::MULTI_STATUS, "{body}");
    let errors = body["errors"].as_array().unwrap();
    let indexes: Vec<i64> = errors
        .iter()
        .map(|e| e["batch_index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, vec![1, 2, 4, 5, 6, 7]);
    for e in errors {
        for k in ["reason", "field", "message"] {
            assert!(e[k].is_string(), "{e}");
        }
    }
    assert_eq!(errors[0]["field"], "identifiers.id");
    assert_eq!(
        errors[1]["message"],
        "value for attribute 'bio' cannot be longer than 1000 bytes"
    );
    assert_eq!(errors[3]["reason"], "too_large");
    let stats = api.stats().await;
    assert_eq!(stats["people"], 2, "ops 0 and 3 applied");
    assert_eq!(stats["rejected_ops"], 6);
    assert_eq!(stats["batches"], 1);

    // Whole-request problems are 400 {"errors": [...]}.
    for body in [json!({"nope": []}), json!([1])] {
        let (st, resp) = api.post("/api/v2/batch", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(resp["errors"][0]["message"].is_string());
    }
    let big: Vec<Value> = (0..20)
        .map(|i| json!({"type": "person", "identifiers": {"id": i.to_string()}, "action": "identify", "attributes": {"blob": "x".repeat(25_000)}}))
        .collect();
    let (st, resp) = api.post("/api/v2/batch", json!({ "batch": big })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(resp["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("smaller than 500000 bytes"));
    assert_eq!(
        api.stats().await["people"],
        2,
        "a rejected batch applies nothing"
    );

    // entity: one op, 400 when invalid.
    let (st, resp) = api
        .post(
            "/api/v2/entity",
            json!({"type": "person", "identifiers": {"id": ""}, "action": "identify"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(resp["errors"][0]["message"], "id attribute must be present");
    let (st, _) = api
        .post("/api/v2/entity", json!({"type": "person", "identifiers": {"id": "9"}, "action": "identify", "attributes": {"a": 1}}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api
        .post(
            "/api/v2/entity",
            json!({"type": "person", "identifiers": {"id": "9"}, "action": "delete"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(api.get("/_sandbox/people/9").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn people_pages_and_reset() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let batch: Vec<Value> = (0..25)
        .map(|i| json!({"type": "person", "identifiers": {"id": format!("p{i}")}, "action": "identify", "attributes": {"i": i}}))
        .collect();
    assert_eq!(
        api.post("/api/v2/batch", json!({ "batch": batch })).await.0,
        StatusCode::OK
    );
    let (_, page) = api.get("/_sandbox/people?limit=10&offset=20").await;
    assert_eq!(page["total"], 25);
    let people = page["people"].as_array().unwrap();
    assert_eq!(people.len(), 5);
    assert_eq!(people[0]["id"], "p20");
    assert_eq!(
        api.post("/_sandbox/reset", json!({})).await.0,
        StatusCode::OK
    );
    let stats = api.stats().await;
    assert_eq!(stats["people"], 0);
    assert_eq!(stats["requests"], 0);
}

async fn fault_run(api: &Api, n: usize) -> Vec<String> {
    let mut outcomes = Vec::new();
    for i in 0..n {
        let r = api
            .http
            .put(format!("{}/api/v1/customers/f{i}", api.base))
            .basic_auth(SITE, Some(KEY))
            .json(&json!({"i": i}))
            .send()
            .await;
        outcomes.push(match r {
            Ok(resp) => {
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| format!("/{}", v.to_str().unwrap()))
                    .unwrap_or_default();
                format!("{}{retry}", resp.status().as_u16())
            }
            Err(_) => "reset".into(),
        });
    }
    outcomes
}

#[tokio::test]
async fn every_fault_kind_is_injected_reproducibly_and_changes_nothing() {
    let s = sandbox(IdentifyBy::Id).await;
    let api = Api::new(&s);
    let faults = json!({"rate_429": 0.2, "retry_after": 3, "rate_500": 0.2, "rate_503": 0.2, "rate_reset": 0.2, "seed": 7});
    let (st, _) = api
        .send(
            reqwest::Method::PUT,
            "/_sandbox/faults",
            Some(faults.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let first = fault_run(&api, 60).await;
    for kind in ["200", "429/3", "500", "503", "reset"] {
        assert!(
            first.iter().any(|o| o == kind),
            "{kind} never happened: {first:?}"
        );
    }
    let stats = api.stats().await;
    let ok = first.iter().filter(|o| *o == "200").count() as u64;
    assert_eq!(
        stats["people"].as_u64().unwrap(),
        ok,
        "only unfaulted requests stored a person"
    );
    assert_eq!(stats["faults_injected"].as_u64().unwrap(), 60 - ok);

    // The same seed replays the same sequence.
    api.post("/_sandbox/reset", json!({})).await;
    api.send(reqwest::Method::PUT, "/_sandbox/faults", Some(faults))
        .await;
    let second = fault_run(&api, 60).await;
    assert_eq!(first, second);

    // Latency.
    api.send(
        reqwest::Method::PUT,
        "/_sandbox/faults",
        Some(json!({"latency_ms": 150})),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(fault_run(&api, 2).await, vec!["200", "200"]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    // Rates that do not add up are refused.
    let (st, _) = api
        .send(
            reqwest::Method::PUT,
            "/_sandbox/faults",
            Some(json!({"rate_500": 0.7, "rate_503": 0.7})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}
