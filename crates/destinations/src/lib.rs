//! Destinations: one module per app behind one interface (validate settings against the model,
//! test the connection, build ops from rows, deliver batches, classify answers), over the shared
//! delivery layer.

pub mod customerio;
pub mod delivery;
pub mod mapping;
pub mod removals;

use sallyport_core::{Field, Mapping, Resolve};
use sallyport_sources::{Column, FingerprintSpec, Row};
use serde::{Deserialize, Serialize};

pub use customerio::{redact_url, CustomerIo, Region};
pub use delivery::Delivery;
pub use mapping::SettingProblem;
pub use removals::{MaxRemovals, Removals};

/// The apps there are: one variant per app module, each with the settings its module owns
/// (`type: customerio` reads [`CustomerIo`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AppSettings {
    Customerio(CustomerIo),
}

impl AppSettings {
    /// The `type:` of the app.
    pub fn kind(&self) -> &'static str {
        match self {
            AppSettings::Customerio(_) => "customerio",
        }
    }

    /// The fields that hold secrets: encrypted at rest, never shown.
    pub fn secret_fields(&self) -> &'static [&'static str] {
        match self {
            AppSettings::Customerio(_) => CustomerIo::SECRETS,
        }
    }

    /// Expands `${NAME}` references.
    pub fn resolve(&mut self, r: &mut dyn Resolve) {
        match self {
            AppSettings::Customerio(c) => c.resolve(r),
        }
    }

    /// The network hosts (name, port) the app's requests go to, where the settings choose them.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        match self {
            AppSettings::Customerio(c) => c.hosts(),
        }
    }

    /// What is wrong with the settings (paths below the app).
    pub fn validate(&mut self) -> Vec<SettingProblem> {
        match self {
            AppSettings::Customerio(c) => c.validate(),
        }
    }

    /// The settings as JSON, without the secret fields (for the API and the UI).
    pub fn public(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for f in self.secret_fields() {
            m.remove(*f);
        }
        if let Some(serde_json::Value::String(u)) = m.get("track_url") {
            let shown = redact_url(u);
            m.insert("track_url".into(), serde_json::Value::String(shown));
        }
        m
    }
}

/// What each object's module provides: its description, and over its own settings the mode, the
/// checks, the columns it uses and its mapper.
pub trait Object {
    /// How forms, documents and config checks describe the object.
    const KIND: ObjectKind;
    /// The sync mode.
    fn mode(&self) -> &'static str;
    /// What is wrong with the settings on their own (paths below the sync).
    fn validate(&self) -> Vec<SettingProblem>;
    /// The columns the settings use: not sent as attributes.
    fn columns(&self) -> Vec<&str>;
    /// The mapper of a sync, checked against the model's columns; `sync_id` keys what must stay
    /// the same across renames (event dedup ids).
    fn mapper(
        &self,
        sync_id: &str,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>>;
}

/// The registry of objects: one line each, `Variant(module::Settings)`; the variant's snake_case
/// name is the `object:` value.
macro_rules! objects {
    ($($variant:ident($settings:ty)),+ $(,)?) => {
        /// What a sync sends, with the settings its object's module owns.
        #[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
        #[serde(tag = "object", rename_all = "snake_case")]
        pub enum ObjectSettings {
            $($variant($settings),)+
        }

        /// Every object, in the order forms offer them.
        pub const OBJECTS: &[ObjectKind] = &[$(<$settings as Object>::KIND,)+];

        impl ObjectSettings {
            /// The object's description.
            pub fn kind(&self) -> &'static ObjectKind {
                let name = match self {
                    $(ObjectSettings::$variant(_) => <$settings as Object>::KIND.name,)+
                };
                object_kind(name).expect("every object is in OBJECTS")
            }

            fn object(&self) -> &dyn ObjectDyn {
                match self {
                    $(ObjectSettings::$variant(s) => s,)+
                }
            }
        }
    };
}

objects! {
    Person(customerio::person::Settings),
    Event(customerio::event::Settings),
    Object(customerio::object::Settings),
    Relationship(customerio::relationship::Settings),
    Device(customerio::device::Settings),
    SegmentMembership(customerio::segment::Settings),
}

/// [`Object`] without its constant, for dispatch.
trait ObjectDyn {
    fn mode(&self) -> &'static str;
    fn validate(&self) -> Vec<SettingProblem>;
    fn columns(&self) -> Vec<&str>;
    fn mapper(
        &self,
        sync_id: &str,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>>;
}

impl<T: Object> ObjectDyn for T {
    fn mode(&self) -> &'static str {
        Object::mode(self)
    }
    fn validate(&self) -> Vec<SettingProblem> {
        Object::validate(self)
    }
    fn columns(&self) -> Vec<&str> {
        Object::columns(self)
    }
    fn mapper(
        &self,
        sync_id: &str,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        Object::mapper(self, sync_id, mapping, columns)
    }
}

/// An object as forms, documents and config checks describe it.
#[derive(Debug)]
pub struct ObjectKind {
    /// The `object:` value.
    pub name: &'static str,
    pub label: &'static str,
    /// Its settings, besides `mode`.
    pub fields: &'static [Field],
    /// The modes it supports; the first is the default.
    pub modes: &'static [&'static str],
}

/// Why `mode` is not a mode of `object`, if it is not: checked before the settings are read, so
/// that the message lists the object's modes.
pub fn mode_problem(object: &str, mode: &str) -> Option<String> {
    let kind = object_kind(object)?;
    (!kind.modes.contains(&mode)).then(|| {
        format!(
            "mode `{mode}` is not supported by a {}; supported: {}",
            kind.name,
            kind.modes.join(", ")
        )
    })
}

/// The object of that `object:` value.
pub fn object_kind(name: &str) -> Option<&'static ObjectKind> {
    OBJECTS.iter().find(|o| o.name == name)
}

impl ObjectSettings {
    /// The `object:` value.
    pub fn name(&self) -> &'static str {
        self.kind().name
    }

    /// The sync mode.
    pub fn mode(&self) -> &'static str {
        self.object().mode()
    }

    /// What is wrong with the settings on their own (paths below the sync).
    pub fn validate(&self) -> Vec<SettingProblem> {
        self.object().validate()
    }

    /// The columns the settings use: not sent as attributes.
    pub fn columns(&self) -> Vec<&str> {
        self.object().columns()
    }

    /// The mapper of a sync, checked against the model's columns.
    pub fn mapper(
        &self,
        sync_id: &str,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        self.object().mapper(sync_id, mapping, columns)
    }

    /// The settings as JSON, without `object` and `mode`.
    pub fn settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        m.remove("object");
        m.remove("mode");
        m
    }
}

/// The most a batch request may carry: bytes and, for apps that cap it, records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub bytes: usize,
    pub records: Option<usize>,
}

/// How an op travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Packed with others into one batch request.
    Batch,
    /// Sent alone (Customer.io: an anonymous event through `POST /api/v1/events`).
    Single,
    /// Packed into a list of people added to (or removed from) a manual segment
    /// (Customer.io: `POST /api/v1/segments/{id}/add_customers|remove_customers`); each op's
    /// body is one identifier as a JSON string.
    Segment {
        segment: u64,
        add: bool,
        by_email: bool,
    },
}

/// One row, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// The row's key (the person's identifier, the event's id).
    pub key: String,
    /// A fingerprint of what the row sends: a row whose fingerprint is unchanged is not resent.
    pub fingerprint: u64,
    /// The JSON body of the op.
    pub body: String,
    pub route: Route,
    /// What the state keeps beside the key once the op is accepted (`Some("")` forgets an
    /// earlier note): what a later run needs to know of what was sent.
    pub note: Option<String>,
    /// The op removes the key (it left the model): once accepted, the key leaves the state.
    pub removal: bool,
    /// The warehouse's fingerprint of the row, with change detection in the warehouse: what
    /// its snapshot keeps once the op is accepted.
    pub snapshot: Option<i64>,
}

impl Op {
    /// An op that upserts or inserts `key`.
    pub fn new(key: impl Into<String>, fingerprint: u64, body: String, route: Route) -> Op {
        Op {
            key: key.into(),
            fingerprint,
            body,
            route,
            note: None,
            removal: false,
            snapshot: None,
        }
    }
}

/// What the state knew of a row's key when it was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before<'a> {
    /// Never delivered.
    New,
    /// Delivered, with the note kept then (if any).
    Sent(Option<&'a str>),
}

/// How rows are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// By the key column's text, compared exactly.
    Column,
    /// By the key column's text, compared without regard to case (Customer.io's emails): the
    /// state keeps it in lower case.
    CaseInsensitive,
    /// By several columns, made into one key by [`ObjectMapper::row_key`].
    Composite,
}

/// Why a row cannot be sent: the column at fault (if one is) and the rule it breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFailure {
    pub column: Option<String>,
    pub message: String,
}

impl RowFailure {
    pub fn column(column: &str, message: impl Into<String>) -> Self {
        Self {
            column: Some(column.to_string()),
            message: message.into(),
        }
    }

    pub fn row(message: impl Into<String>) -> Self {
        Self {
            column: None,
            message: message.into(),
        }
    }

    /// The reason as a user reads it: `row 42: column `bio`: ...`.
    pub fn reason(&self, key: &str) -> String {
        match &self.column {
            Some(c) => format!("row {key}: column `{c}`: {}", self.message),
            None => format!("row {key}: {}", self.message),
        }
    }
}

/// How rows of an object are compared with what was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Sent when the key is new or the fingerprint changed (upsert).
    Upsert,
    /// Sent once per key, ever (insert): a changed row is not sent again.
    InsertOnce,
}

/// Turns rows of one sync into ops.
pub trait ObjectMapper: Send + Sync {
    /// The column whose value keys each row.
    fn key_column(&self) -> &str;
    /// What "changed" means for this object.
    fn policy(&self) -> ChangePolicy;
    /// Builds the op for a row with a non-empty key, or says why the row cannot be sent.
    /// `before` is what the state knew of the key.
    fn map(&self, key: &str, row: &Row, before: Before<'_>) -> Result<Op, RowFailure>;
    /// How rows are keyed.
    fn keying(&self) -> Keying {
        Keying::Column
    }
    /// The key of a row made of several columns ([`Keying::Composite`]); `None` when one of
    /// them is NULL.
    fn row_key(&self, row: &Row) -> Option<String> {
        let _ = row;
        None
    }
    /// Whether (and how far) keys that left the model are removed from the app.
    fn removals(&self) -> Option<Removals> {
        None
    }
    /// The op that removes a key that left the model, given the note kept when it was sent.
    fn removal(&self, key: &str, note: Option<&str>) -> Result<Op, RowFailure> {
        let _ = (key, note);
        Err(RowFailure::row("this sync does not remove rows"))
    }
    /// Whether the op is built from the row's column at `index` (a value that cannot be read
    /// fails the row only where it is used).
    fn uses_column(&self, index: usize) -> bool {
        let _ = index;
        true
    }
    /// The method and path an op of `route` goes to (for previews).
    fn endpoint(&self, route: Route) -> String;
    /// What a warehouse-side fingerprint of a row must cover so that it changes exactly when the
    /// op would: `None` when the object does not compare payloads (insert-once).
    fn fingerprint_spec(&self) -> Option<FingerprintSpec> {
        None
    }
}

/// What an app answered for a batch: one result per op, in order.
pub type OpResults = Vec<Result<(), String>>;

/// Errors that stop a run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DestinationError {
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Settings(String),
    /// The app gave no usable answer after every attempt (timeouts, 5xx, 429): the batch's
    /// rows were not delivered.
    #[error("{0}")]
    GaveUp(String),
}

/// A connected app.
pub enum Destination {
    CustomerIo(customerio::Workspace),
}

impl Destination {
    /// Builds the destination of an app connection (no request yet), paced on its own: for
    /// one-off requests such as a connection test.
    pub fn new(name: &str, app: &AppSettings) -> Destination {
        Self::paced(name, app, &delivery::Pacing::default())
    }

    /// Builds the destination of an app connection whose requests share the app's pace in
    /// `pacing` with every other run sending to it.
    pub fn paced(name: &str, app: &AppSettings, pacing: &delivery::Pacing) -> Destination {
        match app {
            AppSettings::Customerio(c) => Destination::CustomerIo(customerio::Workspace::new(
                name,
                c,
                pacing.pace(&c.pace_key(), &c.delivery),
            )),
        }
    }

    /// Writes every request of run `run_id` of `sync` down in `inspector` (the API inspector),
    /// with the app's secrets blanked out.
    pub fn record(
        &mut self,
        inspector: std::sync::Arc<delivery::Inspector>,
        sync: &str,
        run_id: i64,
    ) {
        match self {
            Destination::CustomerIo(c) => c.record(inspector, sync, run_id),
        }
    }

    /// Checks the credentials (and learns the region where asked to); a line for the user.
    pub async fn check(&mut self) -> Result<String, DestinationError> {
        match self {
            Destination::CustomerIo(c) => c.check().await,
        }
    }

    /// The mapper of a sync, validated against the model's columns.
    pub fn mapper(
        &self,
        sync_id: &str,
        object: &ObjectSettings,
        mapping: &Mapping,
        columns: &[Column],
    ) -> Result<Box<dyn ObjectMapper>, Vec<SettingProblem>> {
        match self {
            Destination::CustomerIo(_) => customerio::mapper(sync_id, object, mapping, columns),
        }
    }

    /// Delivers ops of one route: a batch, or a single op.
    pub async fn deliver(&self, route: Route, ops: &[&Op]) -> Result<OpResults, DestinationError> {
        match self {
            Destination::CustomerIo(c) => c.deliver(route, ops).await,
        }
    }

    /// The most a request of `route` may carry (Customer.io caps a batch's bytes, and a
    /// segment request's people).
    pub fn batch_limits(&self, route: Route) -> BatchLimits {
        match self {
            Destination::CustomerIo(c) => BatchLimits {
                bytes: c.sender().settings().batch_bytes,
                records: match route {
                    Route::Segment { .. } => Some(customerio::limits::SEGMENT_IDS),
                    _ => None,
                },
            },
        }
    }

    /// Batches in a row the app may give up on before a run stops as failed.
    pub fn stop_after_failed_batches(&self) -> u32 {
        match self {
            Destination::CustomerIo(c) => c.sender().settings().stop_after_failed_batches.max(1),
        }
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> usize {
        match self {
            Destination::CustomerIo(c) => c.sender().settings().concurrency,
        }
    }

    /// Request and retry counters.
    pub fn stats(&self) -> &delivery::DeliveryStats {
        match self {
            Destination::CustomerIo(c) => &c.sender().stats,
        }
    }

    /// Bytes a request of `route` adds around its ops' bodies: once, and between two.
    pub fn batch_overhead(&self, route: Route) -> (usize, usize) {
        match self {
            Destination::CustomerIo(_) => match route {
                Route::Segment { .. } => customerio::SEGMENT_OVERHEAD,
                _ => customerio::BATCH_OVERHEAD,
            },
        }
    }
}
