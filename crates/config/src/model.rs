//! The shape of `sallyport.yaml`, as serde reads it. Every struct rejects unknown keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use sallyport_core::{Field, FieldKind, Mapping, Model, Secret};

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
    pub syncs: BTreeMap<String, serde_yaml_ng::Value>,
    /// Webhooks told when a sync needs a person.
    #[serde(default)]
    pub alerts: Vec<crate::alerts::Alert>,
    /// Where the API inspector keeps each sync's last requests: `memory` or `persist`.
    #[serde(default)]
    pub inspector: crate::InspectorMode,
}

/// A source connection: the settings its warehouse module reads (`type: postgres`, ...).
pub use sallyport_sources::WarehouseSettings as Warehouse;

/// A destination account: the settings its app module reads (`type: customerio`, ...).
pub use sallyport_destinations::{AppSettings as App, CustomerIo, Delivery, Region};

/// A sync pipeline: a model on a warehouse → an object of an app. What is common to every
/// object is here; the object's own settings (`object:`, `mode:` and the rest) are read by its
/// module ([`ObjectSettings`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// What the rows become: `object:` and its settings.
    #[serde(flatten)]
    pub object: ObjectSettings,
    /// Which columns become attributes, and under which names.
    #[serde(default)]
    pub mapping: Mapping,
    /// When `sallyport serve` runs it: `every 15m` (s, m, h, d) or `{cron: "0 */2 * * *"}`
    /// (UTC); none for manual runs only.
    #[serde(default)]
    pub schedule: Option<crate::ScheduleSpec>,
    /// Where what changed is worked out: `local` (the default: the model is read and compared
    /// with the state store) or `warehouse` (compared with a snapshot table in the warehouse's
    /// `sallyport_schema`; only changed rows leave it).
    #[serde(default, skip_serializing_if = "ChangeDetection::is_local")]
    pub change_detection: ChangeDetection,
}

/// Where a sync's changes are worked out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeDetection {
    #[default]
    Local,
    Warehouse,
}

impl ChangeDetection {
    pub fn is_local(&self) -> bool {
        *self == ChangeDetection::Local
    }
}

/// The keys a sync has whatever its object.
pub const SYNC_KEYS: &[&str] = &[
    "id",
    "warehouse",
    "model",
    "app",
    "object",
    "mode",
    "mapping",
    "schedule",
    "change_detection",
];

pub use sallyport_destinations::{object_kind, ObjectKind, ObjectSettings, OBJECTS};

impl Sync {
    /// The key of the sync's state: its `id`, or else its name.
    pub fn state_id<'a>(&'a self, name: &'a str) -> &'a str {
        self.id.as_deref().unwrap_or(name)
    }
}
