//! Input nobody planned for: the sandbox's Track API takes any JSON (and any bytes) on its v1 and
//! v2 endpoints and answers 2xx or 4xx, never a 5xx nor a dropped connection.
//! `scripts/fuzz.sh` runs this with many more cases (SALLYPORT_FUZZ_CASES).

use proptest::prelude::*;
use sallyport_sandbox::SandboxConfig;
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("SALLYPORT_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "\\PC{0,20}".prop_map(Value::from),
        prop_oneof![
            Just("identify"),
            Just("delete"),
            Just("event"),
            Just("page"),
            Just("screen"),
            Just("person"),
            Just("object"),
            Just("id"),
            Just("email"),
            Just("a@b.c")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("action".to_string()),
                    Just("identifiers".to_string()),
                    Just("attributes".to_string()),
                    Just("name".to_string()),
                    Just("timestamp".to_string()),
                    Just("id".to_string()),
                    Just("batch".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_body_is_answered_without_a_server_error(
        body in json_value(),
        ops in proptest::collection::vec(json_value(), 0..5),
        raw in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sandbox = sallyport_sandbox::start(SandboxConfig::default(), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let c = SandboxConfig::default();
            let http = reqwest::Client::new();
            let send = |path: &str, body: Vec<u8>| {
                http.post(format!("{}{path}", sandbox.url()))
                    .basic_auth(&c.site_id, Some(&c.api_key))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
            };
            for (path, bytes) in [
                ("/api/v2/batch", json!({"batch": ops}).to_string().into_bytes()),
                ("/api/v2/entity", body.to_string().into_bytes()),
                ("/api/v1/events", body.to_string().into_bytes()),
                ("/api/v1/customers/x/events", body.to_string().into_bytes()),
                ("/api/v2/batch", raw.clone()),
            ] {
                let status = send(path, bytes).await.expect("an answer").status();
                assert!(status.as_u16() < 500, "{path}: {status}");
            }
            let status = http
                .put(format!("{}/api/v1/customers/x", sandbox.url()))
                .basic_auth(&c.site_id, Some(&c.api_key))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("an answer")
                .status();
            assert!(status.as_u16() < 500, "PUT /api/v1/customers/x: {status}");
            sandbox.stop().await;
        });
    }
}
