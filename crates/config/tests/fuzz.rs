//! Input nobody planned for: the config parser and the line finder take any text, including
//! mangled versions of a real config, and answer with problems, never a panic.
//! `scripts/fuzz.sh` runs this with many more cases (SALLYPORT_FUZZ_CASES).

use proptest::prelude::*;
use sallyport_config::{line_of, Config};

const REAL: &str = r#"state: sallyport.db
warehouses:
  analytics: {type: postgres, url: "${WAREHOUSE_URL}"}
  local: {type: sqlite, path: warehouse.db}
apps:
  customerio:
    type: customerio
    site_id: "${CIO_SITE_ID}"
    api_key: "${CIO_API_KEY}"
    region: auto
    track_url: http://127.0.0.1:8091
    delivery: {requests_per_second: 100, concurrency: 8, timeout: 30s, batch_bytes: 450KB}
syncs:
  people:
    id: people
    warehouse: analytics
    model: {sql: "select * from users"}
    app: customerio
    object: person
    mode: upsert
    primary_key: user_id
    identifier: id
    mapping: {auto: true, fields: {plan: plan_name}, exclude: [internal_notes]}
    schedule: every 15m
  purchases:
    warehouse: local
    model: {table: purchases}
    app: customerio
    object: event
    mode: insert
    event_type: track
    event_id: purchase_id
    customer_id: user_id
    event_name: event
    schedule: {cron: "0 */2 * * *"}
"#;

fn cases() -> u32 {
    std::env::var("SALLYPORT_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

/// A real config with a few bytes replaced, inserted or cut.
fn mangled() -> impl Strategy<Value = String> {
    proptest::collection::vec((0..REAL.len(), any::<u8>(), 0..3u8), 1..8).prop_map(|edits| {
        let mut b = REAL.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let at = at.min(b.len().saturating_sub(1));
            match op {
                0 if !b.is_empty() => b[at] = byte,
                1 => b.insert(at, byte),
                _ if !b.is_empty() => {
                    b.remove(at);
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

#[test]
fn the_real_config_parses() {
    Config::parse(REAL, "f.yaml".as_ref(), &|_| Some("v".into())).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_text_is_parsed_or_refused(text in "[a-z_:{}\\[\\],\"' \\n\\-${}0-9.]{0,300}") {
        let _ = Config::parse(&text, "f.yaml".as_ref(), &|_| Some("v".into()));
        let _ = line_of(&text, &["syncs", "a", "b"]);
    }

    #[test]
    fn a_mangled_config_is_parsed_or_refused(text in mangled()) {
        if let Err(e) = Config::parse(&text, "f.yaml".as_ref(), &|_| Some("v".into())) {
            prop_assert!(!e.problems.is_empty());
        }
    }
}
