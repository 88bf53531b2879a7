//! A PostgreSQL warehouse schema, a Customer.io sandbox and an engine over a config written for
//! them: what each integration test starts from.

#![allow(dead_code)]

use std::path::PathBuf;

use sallyport_config::Config;
use sallyport_engine::{Engine, RunOptions, RunSummary};
use sallyport_sandbox::{IdentifyBy, RunningSandbox, SandboxConfig};
use serde_json::Value;

pub const SITE: &str = "site-1";
pub const KEY: &str = "key-1";

pub struct Harness {
    pub pg: tokio_postgres::Client,
    pub schema: sallyport_testkit::Schema,
    pub sandbox: RunningSandbox,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// `state:` line of the config (default: an SQLite file in `dir`).
    pub state: String,
    /// The app's `delivery:` settings.
    pub delivery: String,
    /// The warehouse URL.
    pub warehouse_url: String,
}

impl Harness {
    pub async fn new(identify_by: IdentifyBy) -> Harness {
        let f = sallyport_testkit::Fixture::start(SandboxConfig {
            site_id: SITE.into(),
            api_key: KEY.into(),
            identify_by,
            ..Default::default()
        })
        .await;
        Harness {
            pg: f.pg,
            schema: f.schema,
            sandbox: f.sandbox,
            dir: f.dir,
            http: reqwest::Client::new(),
            state: "state.db".into(),
            delivery: "{requests_per_second: 1000, max_attempts: 3}".into(),
            warehouse_url: sallyport_testkit::pg_url(),
        }
    }

    pub async fn sql(&self, sql: &str) {
        let sql = sql.replace("{s}", &self.schema);
        self.pg
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A config with the test's warehouse and the sandbox, and `syncs` (YAML under `syncs:`,
    /// with `{s}` standing for the schema).
    pub fn config_text(&self, syncs: &str, api_key: &str) -> String {
        format!(
            "state: {state}\nwarehouses:\n  pg: {{type: postgres, url: \"{url}\", sallyport_schema: \"{schema}\"}}\napps:\n  cio:\n    type: customerio\n    site_id: {SITE}\n    api_key: \"{api_key}\"\n    track_url: {track}\n    delivery: {delivery}\nsyncs:\n{syncs}",
            state = self.state,
            delivery = self.delivery,
            url = self.warehouse_url,
            track = self.sandbox.url(),
            schema = &*self.schema,
            syncs = syncs.replace("{s}", &self.schema),
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sallyport.yaml")
    }

    pub async fn engine(&self, syncs: &str) -> Engine {
        self.engine_with_key(syncs, KEY).await
    }

    pub async fn engine_with_key(&self, syncs: &str, key: &str) -> Engine {
        let text = self.config_text(syncs, key);
        std::fs::write(self.config_path(), &text).unwrap();
        let config = Config::parse(&text, &self.config_path(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        Engine::open(config).await.unwrap()
    }

    pub async fn run(&self, engine: &Engine, sync: &str) -> RunSummary {
        engine.run(sync, RunOptions::default()).await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{}", self.sandbox.url(), path))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn person(&self, id: &str) -> Option<Value> {
        let seg = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        match self.get(&format!("/_sandbox/people/{seg}")).await {
            (200, p) => Some(p),
            _ => None,
        }
    }

    pub fn faults(&self, faults: serde_json::Value) {
        let f: sallyport_sandbox::Faults = serde_json::from_value(faults).unwrap();
        self.sandbox.shared().set_faults(f).unwrap();
    }

    pub async fn stats(&self) -> Value {
        self.get("/_sandbox/stats").await.1
    }
}
