//! The shape of `sallyport.yaml`, as serde reads it. Every struct rejects unknown keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

pub use sallyport_core::{Mapping, Model, Secret};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where Sallyport keeps its state: an SQLite file (default `sallyport.db`, relative to the
    /// config file) or a `postgres://` URL.
    #[serde(default)]
    pub state: Option<Secret>,
    /// Source connections, by name.
    #[serde(default)]
    pub warehouses: BTreeMap<String, Warehouse>,
    /// Destination accounts, by name.
    #[serde(default)]
    pub apps: BTreeMap<String, App>,
    /// Sync pipelines, by name.
    #[serde(default)]
    pub syncs: BTreeMap<String, Sync>,
}

/// A source connection: the settings its warehouse module reads (`type: postgres`, ...).
pub use sallyport_sources::WarehouseSettings as Warehouse;

/// A destination account.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum App {
    Customerio(CustomerIo),
}

/// A Customer.io workspace, reached through its Track API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerIo {
    /// The workspace's Site ID.
    pub site_id: Secret,
    /// The workspace's Track API key.
    pub api_key: Secret,
    /// `us`, `eu`, or `auto` (asks `GET /api/v1/accounts/region`).
    #[serde(default)]
    pub region: Region,
    /// Replaces the region's host: a sandbox, or a proxy.
    #[serde(default)]
    pub track_url: Option<String>,
    /// How requests are paced and retried.
    #[serde(default)]
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
    #[default]
    Auto,
}

/// Delivery settings of an app: the defaults are safe for Customer.io.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    /// Token bucket over all requests to this app.
    pub requests_per_second: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Per request, e.g. `30s`, `500ms`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub timeout: std::time::Duration,
    /// Attempts per request for transient failures.
    pub max_attempts: u32,
    /// Largest request body, e.g. `450KB` (1 KB = 1000 bytes): must stay under 500 KB.
    #[serde(deserialize_with = "bytes")]
    pub batch_bytes: usize,
    /// Batches in a row the app may give no usable answer to (after every attempt) before a
    /// run stops as `failed`: an outage stops the run and leaves its rows for the next one,
    /// instead of recording every remaining row as failed.
    pub stop_after_failed_batches: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            requests_per_second: 100.0,
            concurrency: 8,
            timeout: std::time::Duration::from_secs(30),
            max_attempts: 6,
            batch_bytes: 450_000,
            stop_after_failed_batches: 3,
        }
    }
}

/// A sync pipeline: a model on a warehouse → an object of an app.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    /// A stable id for the sync's state (what was delivered, failed rows, event dedup ids):
    /// renaming a sync that has one keeps its state. Without one, the name is the id, so
    /// renaming the sync starts it over (and `sallyport check` warns). Syncs made in the UI or
    /// the API get a generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The warehouse the model runs on.
    pub warehouse: String,
    /// A SQL query or a table.
    pub model: Model,
    /// The app connection to send to.
    pub app: String,
    /// `person` or `event`.
    pub object: ObjectKind,
    /// `upsert` (person) or `insert` (event).
    pub mode: String,
    /// Person: the column that uniquely identifies the person.
    pub primary_key: Option<String>,
    /// Person: how Customer.io matches the person, `id` or `email`.
    pub identifier: Option<String>,
    /// Event: `track` or `page_view`.
    pub event_type: Option<String>,
    /// Event: the column uniquely identifying the event.
    pub event_id: Option<String>,
    /// Event: the column with the person's Customer.io id.
    pub customer_id: Option<String>,
    /// Event: the column with an anonymous id, used when there is no customer id.
    pub anonymous_id: Option<String>,
    /// Event: the column with the time of the event.
    pub timestamp: Option<String>,
    /// Track event: the column with the event's name.
    pub event_name: Option<String>,
    /// Page view: the column with the page URL.
    pub page_url: Option<String>,
    /// Which columns become attributes, and under which names.
    #[serde(default)]
    pub mapping: Mapping,
    /// When `sallyport serve` runs it: `every 15m` (s, m, h, d) or `{cron: "0 */2 * * *"}`
    /// (UTC); none for manual runs only.
    #[serde(default)]
    pub schedule: Option<crate::ScheduleSpec>,
}

impl Sync {
    /// The key of the sync's state: its `id`, or else its name.
    pub fn state_id<'a>(&'a self, name: &'a str) -> &'a str {
        self.id.as_deref().unwrap_or(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Person,
    Event,
}

impl ObjectKind {
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Person => "person",
            ObjectKind::Event => "event",
        }
    }
    /// The sync modes the object supports.
    pub fn modes(self) -> &'static [&'static str] {
        match self {
            ObjectKind::Person => &["upsert"],
            ObjectKind::Event => &["insert"],
        }
    }
}

fn duration_text<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(std::time::Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses `500ms`, `30s`, `15m`, `2h`, `1d`.
pub fn parse_duration(t: &str) -> Result<std::time::Duration, String> {
    let t = t.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{t}` needs a unit: ms, s, m, h or d"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{t}` is not a duration like 30s"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{t}`: use ms, s, m, h or d"
            ))
        }
    };
    Ok(std::time::Duration::from_millis(ms))
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(usize),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses `450KB`, `1MB`, `2000B` or a plain number of bytes (1 KB = 1000 bytes).
pub fn parse_bytes(t: &str) -> Result<usize, String> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("`{t}` is not a size like 450KB"))?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1_000_000,
        other => return Err(format!("unknown unit `{other}` in `{t}`: use B, KB or MB")),
    };
    Ok(n * mult)
}
