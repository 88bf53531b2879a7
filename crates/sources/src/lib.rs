//! Warehouses: one module per kind behind one interface: open, describe the model's columns,
//! stream its rows in bounded chunks.
//!
//! Values arrive as JSON, already in the form Customer.io wants: dates and times as integer
//! Unix seconds (a timestamp without time zone is taken as UTC), JSON columns as JSON, arrays as
//! JSON arrays, big decimals as numbers where a double holds them exactly.

#[cfg(feature = "bigquery")]
pub mod bigquery;
#[cfg(feature = "databricks")]
pub mod databricks;
pub mod mysql;
pub mod postgres;
pub mod redshift;
mod snapshots;
#[cfg(feature = "snowflake")]
pub mod snowflake;
pub mod sqlite;
pub mod tls;
pub mod writeback;

pub use sallyport_core::Model;
use sallyport_core::Resolve;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// The warehouses there are: one variant per module, each with the settings its module owns
/// (`type: postgres` reads [`postgres::Settings`]). Adding a warehouse adds its module and a
/// line here and in [`Source`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WarehouseSettings {
    Postgres(postgres::Settings),
    Mysql(mysql::Settings),
    Redshift(redshift::Settings),
    #[cfg(feature = "databricks")]
    Databricks(databricks::Settings),
    #[cfg(feature = "bigquery")]
    Bigquery(bigquery::Settings),
    #[cfg(feature = "snowflake")]
    Snowflake(snowflake::Settings),
    Sqlite(sqlite::Settings),
}

/// A kind of warehouse as forms and the API describe it.
#[derive(Debug)]
pub struct WarehouseKind {
    /// The `type:` value.
    pub name: &'static str,
    pub label: &'static str,
    /// Its settings, besides `type`.
    pub fields: &'static [sallyport_core::Field],
}

/// Every kind of warehouse, in the order forms offer them.
pub const WAREHOUSES: &[WarehouseKind] = &[
    WarehouseKind {
        name: "postgres",
        label: "PostgreSQL",
        fields: postgres::FIELDS,
    },
    WarehouseKind {
        name: "redshift",
        label: "Amazon Redshift",
        fields: redshift::FIELDS,
    },
    WarehouseKind {
        name: "mysql",
        label: "MySQL / MariaDB",
        fields: mysql::FIELDS,
    },
    #[cfg(feature = "databricks")]
    WarehouseKind {
        name: "databricks",
        label: "Databricks SQL",
        fields: databricks::FIELDS,
    },
    #[cfg(feature = "bigquery")]
    WarehouseKind {
        name: "bigquery",
        label: "Google BigQuery",
        fields: bigquery::FIELDS,
    },
    #[cfg(feature = "snowflake")]
    WarehouseKind {
        name: "snowflake",
        label: "Snowflake",
        fields: snowflake::FIELDS,
    },
    WarehouseKind {
        name: "sqlite",
        label: "SQLite",
        fields: sqlite::FIELDS,
    },
];

impl WarehouseKind {
    /// Whether it can host change detection (it has a `sallyport_schema` for its tables).
    pub fn hosts_change_detection(&self) -> bool {
        self.fields.iter().any(|f| f.name == "sallyport_schema")
    }
}

/// The `type:` values of the warehouses that can host change detection, as a sentence
/// (`postgres, redshift and mysql`).
pub fn change_detection_hosts() -> String {
    let names: Vec<&str> = WAREHOUSES
        .iter()
        .filter(|w| w.hosts_change_detection())
        .map(|w| w.name)
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The kind of warehouse of that `type:` value.
pub fn warehouse_kind(name: &str) -> Option<&'static WarehouseKind> {
    WAREHOUSES.iter().find(|w| w.name == name)
}

/// Calls `$e` with `$s` bound to the settings of whichever warehouse `$self` is.
macro_rules! each_settings {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            WarehouseSettings::Postgres($s) => $e,
            WarehouseSettings::Mysql($s) => $e,
            WarehouseSettings::Redshift($s) => $e,
            #[cfg(feature = "databricks")]
            WarehouseSettings::Databricks($s) => $e,
            #[cfg(feature = "bigquery")]
            WarehouseSettings::Bigquery($s) => $e,
            #[cfg(feature = "snowflake")]
            WarehouseSettings::Snowflake($s) => $e,
            WarehouseSettings::Sqlite($s) => $e,
        }
    };
}

impl WarehouseSettings {
    /// The `type:` of the warehouse.
    pub fn kind(&self) -> &'static str {
        each_settings!(self, s => s.kind())
    }

    /// Where snapshot tables go (`sallyport_schema`, default `sallyport`), for warehouses that
    /// host change detection (`change_detection: warehouse`); `None` for the others.
    pub fn sallyport_schema(&self) -> Option<String> {
        each_settings!(self, s => crate::Settings::sallyport_schema(s))
    }

    /// The query listing (schema, table, column, type), when the warehouse has one.
    pub fn catalog_sql(&self) -> Option<&'static str> {
        each_settings!(self, s => crate::Settings::catalog_sql(s))
    }

    /// Where run logs go (`writeback:`), when the warehouse writes them.
    pub fn writeback(&self) -> Option<&writeback::WriteBack> {
        each_settings!(self, s => crate::Settings::writeback(s))
    }

    /// The fields that hold secrets: encrypted at rest, never shown.
    pub fn secret_fields(&self) -> &'static [&'static str] {
        each_settings!(self, s => s.secret_fields())
    }

    /// The fields that say where the warehouse is: a stored secret is kept on an update only
    /// while these are unchanged.
    pub fn address_fields(&self) -> &'static [&'static str] {
        each_settings!(self, s => s.address_fields())
    }

    /// Expands `${NAME}` references and resolves relative paths.
    pub fn resolve(&mut self, r: &mut dyn Resolve) {
        each_settings!(self, s => s.resolve(r))
    }

    /// A line for people: what the warehouse is, without its secrets.
    pub fn describe(&self) -> String {
        each_settings!(self, s => s.describe())
    }

    /// The network hosts (name, port) the warehouse connects to.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        each_settings!(self, s => s.hosts())
    }

    /// The settings as JSON, without the secret fields (for the API and the UI).
    pub fn public(&self) -> serde_json::Map<String, Value> {
        let mut m = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for f in self.secret_fields() {
            m.remove(*f);
        }
        m
    }
}

/// What every warehouse module provides for its settings.
pub trait Settings {
    fn kind(&self) -> &'static str;
    fn secret_fields(&self) -> &'static [&'static str];
    fn address_fields(&self) -> &'static [&'static str];
    fn resolve(&mut self, r: &mut dyn Resolve);
    fn describe(&self) -> String;
    /// The network hosts (name, port) the warehouse connects to; none for a local file.
    fn hosts(&self) -> Vec<(String, u16)>;
    /// Where snapshot tables go, for warehouses that host change detection.
    fn sallyport_schema(&self) -> Option<String> {
        None
    }
    /// Where run logs go (`writeback:`), for warehouses that write them.
    fn writeback(&self) -> Option<&writeback::WriteBack> {
        None
    }
    /// A query listing the warehouse's tables and views with their columns, as rows of
    /// (schema, table, column, type) in that order, for the UI's warehouse browser.
    fn catalog_sql(&self) -> Option<&'static str> {
        None
    }
}

/// How a warehouse is opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The longest any one statement may run (checks, previews and the UI's model samples,
    /// where a person waits); none for runs.
    pub statement_timeout: Option<std::time::Duration>,
}

/// A warehouse's SQL dialect: how it quotes identifiers.
pub trait Dialect {
    /// Quotes one identifier so that it is never read as SQL.
    fn quote_ident(&self, name: &str) -> String;

    /// The FROM-clause text of a model, aliased `m`: a table's name quoted part by part
    /// (`schema.name`), or a query as a subquery.
    fn model_from(&self, model: &Model) -> String {
        match model {
            Model::Table(t) => format!(
                "{} AS m",
                t.split('.')
                    .map(|p| self.quote_ident(p))
                    .collect::<Vec<_>>()
                    .join(".")
            ),
            Model::Sql(q) => format!("({}) AS m", q.trim().trim_end_matches(';')),
        }
    }
}

/// The dialect of standard SQL identifiers, `"name"` with embedded quotes doubled: PostgreSQL's,
/// SQLite's.
pub struct AnsiQuotes;

impl Dialect for AnsiQuotes {
    fn quote_ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The dialect of backquoted identifiers, `` `name` `` with embedded backticks doubled: MySQL's,
/// Databricks SQL's.
pub struct Backticks;

impl Dialect for Backticks {
    fn quote_ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// Inside a warehouse's `impl Warehouse`, the change-detection calls, each handed to the
/// warehouse's own method of the same name (in its `snapshot.rs`).
macro_rules! snapshot_calls {
    ($t:ty) => {
        fn snapshots(&self) -> Result<(), $crate::SourceError> {
            Ok(())
        }

        async fn snapshot_check(&self, schema: &str) -> Result<(), $crate::SourceError> {
            <$t>::snapshot_check(self, schema).await
        }

        async fn snapshot_prepare(
            &self,
            snapshot: &$crate::Snapshot,
        ) -> Result<(u64, bool), $crate::SourceError> {
            <$t>::snapshot_prepare(self, snapshot).await
        }

        async fn snapshot_count(
            &self,
            snapshot: &$crate::Snapshot,
        ) -> Result<Option<u64>, $crate::SourceError> {
            <$t>::snapshot_count(self, snapshot).await
        }

        async fn snapshot_write(
            &self,
            snapshot: &$crate::Snapshot,
            rows: &[$crate::SnapshotRow],
            removed: &[String],
        ) -> Result<(), $crate::SourceError> {
            <$t>::snapshot_write(self, snapshot, rows, removed).await
        }

        async fn snapshot_absent_count(
            &self,
            snapshot: &$crate::Snapshot,
            model: &sallyport_core::Model,
            key: &str,
        ) -> Result<u64, $crate::SourceError> {
            <$t>::snapshot_absent_count(self, snapshot, model, key).await
        }

        async fn snapshot_absent(
            &self,
            snapshot: &$crate::Snapshot,
            model: &sallyport_core::Model,
            key: &str,
        ) -> Result<$crate::RowStream, $crate::SourceError> {
            <$t>::snapshot_absent(self, snapshot, model, key).await
        }

        async fn count_keys(
            &self,
            model: &sallyport_core::Model,
            key: &str,
        ) -> Result<u64, $crate::SourceError> {
            <$t>::count_keys(self, model, key).await
        }

        async fn snapshot_rows(
            &self,
            snapshot: &$crate::Snapshot,
            after: &str,
            limit: usize,
        ) -> Result<Vec<$crate::SnapshotRow>, $crate::SourceError> {
            <$t>::snapshot_rows(self, snapshot, after, limit).await
        }

        async fn snapshot_drop(
            &self,
            snapshot: &$crate::Snapshot,
        ) -> Result<(), $crate::SourceError> {
            <$t>::snapshot_drop(self, snapshot).await
        }
    };
}
pub(crate) use snapshot_calls;

/// The `writeback:` call of a warehouse that writes run logs: one line in its `impl Warehouse`,
/// forwarding to the `write_back` of its `writeback.rs`.
macro_rules! writeback_calls {
    ($t:ty) => {
        async fn write_back(
            &self,
            w: &$crate::writeback::WriteBack,
            log: &$crate::writeback::RunLog,
        ) -> Result<(), $crate::SourceError> {
            <$t>::write_back(self, w, log).await
        }
    };
}
pub(crate) use writeback_calls;

/// What every warehouse module provides once open. A warehouse reads a model (a table or a
/// query) in its own dialect, streams its rows in bounded chunks, and finds duplicate keys and
/// the model's keys by itself.
#[allow(async_fn_in_trait)]
pub trait Warehouse: Sized {
    type Settings;

    /// Connects.
    async fn open(settings: &Self::Settings, options: &OpenOptions) -> Result<Self, SourceError>;

    /// Its SQL dialect.
    fn dialect(&self) -> &dyn Dialect;

    /// The model's columns, without reading its rows.
    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError>;

    /// Streams the model as `spec` asks: each row's key as text (the same text as
    /// [`Warehouse::keys`] and [`Warehouse::duplicate_keys`] give), and, where the warehouse can,
    /// a fingerprint computed from the wire format with the values left undecoded.
    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError>;

    /// Whether [`Warehouse::read`] can fingerprint rows before decoding them.
    fn computes_fingerprints(&self) -> bool;

    /// The values of `key` that more than one row of the model has, as a stream of key-only
    /// rows (they may be many: never all in memory at once).
    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError>;

    /// Every value of `key` in the model, as a stream of key-only rows.
    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError>;

    /// Change detection in the warehouse: `Ok` when it can host it (with [`ReadSpec::diff`] and
    /// the `snapshot_*` calls), or why not.
    fn snapshots(&self) -> Result<(), SourceError> {
        Err(no_snapshots())
    }

    /// Checks that Sallyport may create and write its tables in `schema`: the missing grant,
    /// said as the statement that gives it, when it may not.
    async fn snapshot_check(&self, schema: &str) -> Result<(), SourceError> {
        let _ = schema;
        Err(no_snapshots())
    }

    /// Creates the snapshot table when missing; how many keys it holds, and whether it was
    /// there already.
    async fn snapshot_prepare(&self, snapshot: &Snapshot) -> Result<(u64, bool), SourceError> {
        let _ = snapshot;
        Err(no_snapshots())
    }

    /// How many keys the table holds, or `None` when there is no table.
    async fn snapshot_count(&self, snapshot: &Snapshot) -> Result<Option<u64>, SourceError> {
        let _ = snapshot;
        Ok(None)
    }

    /// The snapshot holds what the run wrote so far and is about to be looked up by key (the
    /// run's removals, upserts of keys it may hold): a warehouse that fills a new snapshot
    /// without its key index builds the index now (PostgreSQL). Nothing for the others.
    async fn snapshot_seal(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        let _ = snapshot;
        Ok(())
    }

    /// Writes acknowledged keys (one merge) and deletes removed ones.
    async fn snapshot_write(
        &self,
        snapshot: &Snapshot,
        rows: &[SnapshotRow],
        removed: &[String],
    ) -> Result<(), SourceError> {
        let _ = (snapshot, rows, removed);
        Err(no_snapshots())
    }

    /// How many keys of the snapshot the model no longer has.
    async fn snapshot_absent_count(
        &self,
        snapshot: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<u64, SourceError> {
        let _ = (snapshot, model, key);
        Err(no_snapshots())
    }

    /// Those keys, with their notes (the note as the row's only value).
    async fn snapshot_absent(
        &self,
        snapshot: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<RowStream, SourceError> {
        let _ = (snapshot, model, key);
        Err(no_snapshots())
    }

    /// How many rows of the model have a key (not NULL).
    async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        let _ = (model, key);
        Err(no_snapshots())
    }

    /// A page of the snapshot in key order, after `after`.
    async fn snapshot_rows(
        &self,
        snapshot: &Snapshot,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SnapshotRow>, SourceError> {
        let _ = (snapshot, after, limit);
        Err(no_snapshots())
    }

    /// Drops the snapshot table.
    async fn snapshot_drop(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        let _ = snapshot;
        Err(no_snapshots())
    }

    /// Writes a run's log to the `writeback:` tables in `w.schema` (created on first use).
    async fn write_back(
        &self,
        w: &writeback::WriteBack,
        log: &writeback::RunLog,
    ) -> Result<(), SourceError> {
        let _ = (w, log);
        Err(SourceError::Other(
            "writeback is not available for this warehouse (postgres and mysql have it)".into(),
        ))
    }
}

/// Why a key column cannot be compared in the warehouse: the snapshot's key is the key as the
/// reader gives it, and the warehouse's own text of a date, a time, a boolean or a float is not
/// always that.
pub(crate) fn key_not_comparable(key: &str, type_name: &str) -> SourceError {
    SourceError::Other(format!(
        "change_detection: warehouse compares keys as text inside the warehouse, which is exact for text and integer columns only; key column `{key}` is {type_name}: cast it to text in the model's SQL, or use change_detection: local"
    ))
}

/// Why a warehouse cannot host change detection.
fn no_snapshots() -> SourceError {
    SourceError::Other(
        format!(
            "change_detection: warehouse is not available for this warehouse ({} warehouses have it); use change_detection: local",
            change_detection_hosts()
        ),
    )
}

/// What a stream ends with when its reader failed unexpectedly (a bug): the run stops instead of
/// taking what was read for the whole model.
pub const READER_FAILED: &str =
    "the warehouse reader stopped unexpectedly: the model was not read to its end";

/// Spawns a task that sends down a stream: should it panic, the stream ends with an error
/// ([`READER_FAILED`]), never as if the model had been read to its end (which would make every
/// row not yet read look removed).
pub fn spawn_reader<T: Send + 'static>(
    tx: mpsc::Sender<Result<T, SourceError>>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use futures_util::FutureExt;
    tokio::spawn(async move {
        if std::panic::AssertUnwindSafe(task)
            .catch_unwind()
            .await
            .is_err()
        {
            let _ = tx.send(Err(SourceError::Other(READER_FAILED.into()))).await;
        }
    });
}

/// The base URL of a warehouse's HTTP API (`setting` names where it was given), refused when
/// its credentials would travel unencrypted: `http://` only to this machine (a stand-in).
#[cfg(any(feature = "snowflake", feature = "bigquery", feature = "databricks"))]
pub(crate) fn api_base(url: &str, setting: &str) -> Result<String, SourceError> {
    let base = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(base)
        .map_err(|e| SourceError::Connect(format!("{setting} `{base}` is not a URL: {e}")))?;
    let local = parsed.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if parsed.scheme() != "https" && !local {
        return Err(SourceError::Connect(format!(
            "{setting} `{base}`: the credentials would travel unencrypted; use https://"
        )));
    }
    Ok(base.to_string())
}

/// Rows in a chunk sent down a stream.
pub const CHUNK_ROWS: usize = 1000;

/// A column of a model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    /// The warehouse's own name for its type (`int8`, `timestamptz`, `TEXT`, ...).
    pub type_name: String,
}

/// A row's values still in the warehouse's wire format, decoded only when the row is to be sent.
pub trait Undecoded: Send {
    fn decode(&self) -> Result<Vec<Value>, SourceError>;

    /// The values, and those that cannot be sent (left as null, with the reason).
    fn decode_all(&self) -> Result<(Vec<Value>, Vec<Unreadable>), SourceError> {
        Ok((self.decode()?, Vec::new()))
    }
}

/// A value a warehouse has but Customer.io cannot take (a binary, bit or spatial column): the
/// row fails with this reason if the column is mapped, and is sent without it otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The column's position in the row.
    pub index: usize,
    pub column: String,
    pub reason: String,
}

/// One row of a model: its key (the key column as text, if one was asked for) and its values in
/// column order.
#[derive(Debug)]
pub struct Row {
    pub key: Option<String>,
    /// The values, once decoded (see [`Row::materialize`]).
    pub values: Vec<Value>,
    /// A fingerprint of the row's mapped columns in the warehouse's wire format, when one was
    /// asked for: computed before decoding, so that an unchanged row need never be decoded.
    pub fingerprint: Option<u64>,
    /// Values that could not be read (null in `values`).
    pub unreadable: Vec<Unreadable>,
    /// What a read with change detection in the warehouse adds: the warehouse's fingerprint,
    /// and what the snapshot held for the key.
    pub diff: Option<Box<Diff>>,
    lazy: Option<Box<dyn Undecoded>>,
}

/// A row's change detection in the warehouse (see [`DiffSpec`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// The warehouse's fingerprint of the row.
    pub warehouse_fingerprint: i64,
    /// What the snapshot held for the key (the fingerprint the state keeps, and the note),
    /// when it held it.
    pub previous: Option<(u64, Option<String>)>,
}

impl std::fmt::Debug for dyn Undecoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Undecoded")
    }
}

impl Row {
    pub fn new(key: Option<String>, values: Vec<Value>) -> Row {
        Row {
            key,
            values,
            fingerprint: None,
            unreadable: Vec::new(),
            diff: None,
            lazy: None,
        }
    }

    /// A row some of whose values could not be read.
    pub fn with_unreadable(mut self, unreadable: Vec<Unreadable>) -> Row {
        self.unreadable = unreadable;
        self
    }

    /// A row whose values are decoded later, by [`Row::materialize`].
    pub fn undecoded(key: Option<String>, fingerprint: u64, lazy: Box<dyn Undecoded>) -> Row {
        Row {
            key,
            values: Vec::new(),
            fingerprint: Some(fingerprint),
            unreadable: Vec::new(),
            diff: None,
            lazy: Some(lazy),
        }
    }

    /// Decodes the values if they were left in the warehouse's wire format.
    pub fn materialize(&mut self) -> Result<(), SourceError> {
        if let Some(raw) = self.lazy.take() {
            (self.values, self.unreadable) = raw.decode_all()?;
        }
        Ok(())
    }
}

/// What a warehouse-side fingerprint covers: these columns' values, in order, and a salt that
/// changes when what is built from them changes (attribute names, object settings).
#[derive(Debug, Clone, PartialEq)]
pub struct FingerprintSpec {
    pub columns: Vec<String>,
    pub salt: String,
}

/// How a model is read.
#[derive(Debug, Clone, Default)]
pub struct ReadSpec<'a> {
    /// Carry this column as each row's key (as text).
    pub key: Option<&'a str>,
    /// Fingerprint these columns as they arrive, and leave the values undecoded until
    /// [`Row::materialize`].
    pub fingerprint: Option<&'a FingerprintSpec>,
    /// Compare with a snapshot in the warehouse, and read only what differs.
    pub diff: Option<&'a DiffSpec<'a>>,
}

/// Change detection in the warehouse: a snapshot table per sync, in the warehouse's
/// `sallyport_schema`, of what was delivered (key, the warehouse's fingerprint, the fingerprint
/// and note the state keeps).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub schema: String,
    /// The sync's state id.
    pub sync: String,
}

impl Snapshot {
    /// The table's name: the sync's state id, hashed (any text is a state id).
    pub fn table(&self) -> String {
        format!(
            "snapshot_{:016x}",
            xxhash_rust::xxh3::xxh3_64(self.sync.as_bytes())
        )
    }
}

/// What a read with change detection in the warehouse compares.
#[derive(Debug, Clone)]
pub struct DiffSpec<'a> {
    pub snapshot: &'a Snapshot,
    /// What the warehouse fingerprints: the mapped columns and a salt naming what is built
    /// from them (`None`: insert-once objects, which compare keys only).
    pub fingerprint: Option<&'a FingerprintSpec>,
    /// Every row, each with what the snapshot holds (a full resync).
    pub all: bool,
    /// The snapshot holds nothing (a first run): every row is read, without joining it.
    pub empty: bool,
}

/// A key as the snapshot keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub key: String,
    /// The warehouse's fingerprint (unknown for keys carried over from local change detection
    /// until they are next read).
    pub warehouse_fingerprint: Option<i64>,
    /// The fingerprint the state keeps.
    pub fingerprint: u64,
    pub note: Option<String>,
}

/// A stream of row chunks; it ends after the last chunk, or with an error.
pub type RowStream = mpsc::Receiver<Result<Vec<Row>, SourceError>>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to the warehouse: {0}")]
    Connect(String),
    #[error("the model failed: {0}")]
    Query(String),
    #[error("the model has no column `{0}`")]
    NoColumn(String),
    #[error("{0}")]
    Other(String),
}

/// An open warehouse: one variant per module (see [`WarehouseSettings`]).
pub enum Source {
    Postgres(Box<postgres::PgSource>),
    Mysql(Box<mysql::MySource>),
    Redshift(Box<redshift::RedshiftSource>),
    #[cfg(feature = "databricks")]
    Databricks(databricks::DatabricksSource),
    #[cfg(feature = "bigquery")]
    Bigquery(bigquery::BigQuerySource),
    #[cfg(feature = "snowflake")]
    Snowflake(snowflake::SnowflakeSource),
    Sqlite(sqlite::SqliteSource),
}

/// Calls `$e` with `$s` bound to whichever warehouse `$self` is.
macro_rules! each_source {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Source::Postgres($s) => $e,
            Source::Mysql($s) => $e,
            Source::Redshift($s) => $e,
            #[cfg(feature = "databricks")]
            Source::Databricks($s) => $e,
            #[cfg(feature = "bigquery")]
            Source::Bigquery($s) => $e,
            #[cfg(feature = "snowflake")]
            Source::Snowflake($s) => $e,
            Source::Sqlite($s) => $e,
        }
    };
}

impl Source {
    /// Connects to a warehouse.
    pub async fn open(w: &WarehouseSettings) -> Result<Source, SourceError> {
        Self::open_with(w, &OpenOptions::default()).await
    }

    /// Connects to a warehouse with `options`.
    pub async fn open_with(
        w: &WarehouseSettings,
        options: &OpenOptions,
    ) -> Result<Source, SourceError> {
        Ok(match w {
            WarehouseSettings::Postgres(s) => {
                Source::Postgres(Box::new(postgres::PgSource::open(s, options).await?))
            }
            WarehouseSettings::Mysql(s) => {
                Source::Mysql(Box::new(mysql::MySource::open(s, options).await?))
            }
            WarehouseSettings::Redshift(s) => {
                Source::Redshift(Box::new(redshift::RedshiftSource::open(s, options).await?))
            }
            #[cfg(feature = "databricks")]
            WarehouseSettings::Databricks(s) => {
                Source::Databricks(databricks::DatabricksSource::open(s, options).await?)
            }
            #[cfg(feature = "bigquery")]
            WarehouseSettings::Bigquery(s) => {
                Source::Bigquery(bigquery::BigQuerySource::open(s, options).await?)
            }
            #[cfg(feature = "snowflake")]
            WarehouseSettings::Snowflake(s) => {
                Source::Snowflake(snowflake::SnowflakeSource::open(s, options).await?)
            }
            WarehouseSettings::Sqlite(s) => {
                Source::Sqlite(sqlite::SqliteSource::open(s, options).await?)
            }
        })
    }

    /// The warehouse's SQL dialect.
    pub fn dialect(&self) -> &dyn Dialect {
        each_source!(self, s => s.dialect())
    }

    /// The model's columns, without reading its rows.
    pub async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        each_source!(self, s => s.describe(model).await)
    }

    /// Streams the model's rows; with `key`, each row carries that column as text.
    pub async fn stream(&self, model: &Model, key: Option<&str>) -> Result<RowStream, SourceError> {
        self.read(
            model,
            &ReadSpec {
                key,
                ..Default::default()
            },
        )
        .await
    }

    /// Streams the model as `spec` asks.
    pub async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        if spec.fingerprint.is_some() && !self.computes_fingerprints() {
            return Err(SourceError::Other(
                "this warehouse's rows are not fingerprinted before decoding".into(),
            ));
        }
        each_source!(self, s => s.read(model, spec).await)
    }

    /// Whether rows can be fingerprinted in the warehouse's wire format before decoding.
    pub fn computes_fingerprints(&self) -> bool {
        each_source!(self, s => s.computes_fingerprints())
    }

    /// The values of `key` that more than one row of the model has, found by the warehouse, as
    /// a stream of key-only rows.
    pub async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        each_source!(self, s => s.duplicate_keys(model, key).await)
    }

    /// Every value of `key` in the model, as a stream of chunks (rows with no values).
    pub async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        each_source!(self, s => s.keys(model, key).await)
    }

    /// Whether this warehouse can host change detection (`change_detection: warehouse`).
    pub fn snapshots(&self) -> Result<(), SourceError> {
        each_source!(self, s => s.snapshots())
    }

    pub async fn snapshot_check(&self, schema: &str) -> Result<(), SourceError> {
        each_source!(self, s => s.snapshot_check(schema).await)
    }

    /// Writes a run's log to the warehouse's `writeback:` tables.
    pub async fn write_back(
        &self,
        w: &writeback::WriteBack,
        log: &writeback::RunLog,
    ) -> Result<(), SourceError> {
        each_source!(self, s => s.write_back(w, log).await)
    }

    pub async fn snapshot_prepare(&self, snapshot: &Snapshot) -> Result<(u64, bool), SourceError> {
        each_source!(self, s => s.snapshot_prepare(snapshot).await)
    }

    pub async fn snapshot_count(&self, snapshot: &Snapshot) -> Result<Option<u64>, SourceError> {
        each_source!(self, s => s.snapshot_count(snapshot).await)
    }

    pub async fn snapshot_seal(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        each_source!(self, s => s.snapshot_seal(snapshot).await)
    }

    pub async fn snapshot_write(
        &self,
        snapshot: &Snapshot,
        rows: &[SnapshotRow],
        removed: &[String],
    ) -> Result<(), SourceError> {
        if rows.is_empty() && removed.is_empty() {
            return Ok(());
        }
        each_source!(self, s => s.snapshot_write(snapshot, rows, removed).await)
    }

    pub async fn snapshot_absent_count(
        &self,
        snapshot: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<u64, SourceError> {
        each_source!(self, s => s.snapshot_absent_count(snapshot, model, key).await)
    }

    pub async fn snapshot_absent(
        &self,
        snapshot: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<RowStream, SourceError> {
        each_source!(self, s => s.snapshot_absent(snapshot, model, key).await)
    }

    pub async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        each_source!(self, s => s.count_keys(model, key).await)
    }

    pub async fn snapshot_rows(
        &self,
        snapshot: &Snapshot,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SnapshotRow>, SourceError> {
        each_source!(self, s => s.snapshot_rows(snapshot, after, limit).await)
    }

    pub async fn snapshot_drop(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        each_source!(self, s => s.snapshot_drop(snapshot).await)
    }

    /// The first `limit` rows, with their columns: what a preview of the model shows.
    pub async fn sample(
        &self,
        model: &Model,
        limit: usize,
    ) -> Result<(Vec<Column>, Vec<Row>), SourceError> {
        let columns = self.describe(model).await?;
        let mut stream = self.stream(model, None).await?;
        let mut rows = Vec::new();
        while rows.len() < limit {
            match stream.recv().await {
                Some(chunk) => rows.extend(chunk?),
                None => break,
            }
        }
        rows.truncate(limit);
        Ok((columns, rows))
    }
}

/// A double for `text` when it holds the decimal exactly; otherwise the text.
pub fn decimal_value(text: &str) -> Value {
    let digits = text.chars().filter(|c| c.is_ascii_digit()).count();
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && digits <= 15 => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.to_string())),
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_never_pasted() {
        let d = AnsiQuotes;
        assert_eq!(
            d.model_from(&Model::Table("public.users".into())),
            "\"public\".\"users\" AS m"
        );
        assert_eq!(
            d.model_from(&Model::Table("x\"; drop table users; --".into())),
            "\"x\"\"; drop table users; --\" AS m"
        );
        assert_eq!(
            d.model_from(&Model::Sql("select 1;".into())),
            "(select 1) AS m"
        );
    }

    #[tokio::test]
    async fn a_reader_that_panics_ends_its_stream_with_an_error() {
        let (tx, mut rx) = mpsc::channel::<Result<Vec<Row>, SourceError>>(4);
        let sender = tx.clone();
        spawn_reader(tx, async move {
            sender
                .send(Ok(vec![Row::new(None, Vec::new())]))
                .await
                .unwrap();
            panic!("a bug in a reader");
        });
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 1);
        let end = rx.recv().await.expect("not the end of the stream");
        assert!(end.unwrap_err().to_string().contains("not read to its end"));
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal_value("12.50"), serde_json::json!(12.5));
        assert_eq!(
            decimal_value("12345678901234567890.5"),
            serde_json::json!("12345678901234567890.5")
        );
    }
}

/// Unix seconds of an ISO-8601 / RFC 3339 date or date-time; one without an offset is UTC.
/// Accepts `2024-05-01`, `2024-05-01 10:00:00`, `2024-05-01T10:00:00.5Z`, `...+02:00`, `...+02`.
pub fn parse_datetime(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let t = text.trim();
    if t.len() < 10 || !t.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let t = if t.as_bytes().get(10) == Some(&b' ') {
        format!("{}T{}", &t[..10], &t[11..])
    } else {
        t.to_string()
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(&t) {
        return Some(dt.timestamp());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(&t, f) {
            return Some(dt.timestamp());
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(&t, f) {
            return Some(dt.and_utc().timestamp());
        }
    }
    NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok().map(|d| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp()
    })
}

#[cfg(test)]
mod time_tests {
    use super::parse_datetime;
    use proptest::prelude::*;

    proptest! {
        /// Every ISO form a warehouse writes a time in reads back as the same Unix second.
        #[test]
        fn iso_times_read_back_as_their_unix_seconds(
            secs in -2_000_000_000i64..4_000_000_000i64, form in 0..5usize, offset_h in -12i64..14
        ) {
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            let local = t.naive_utc() + chrono::Duration::hours(offset_h);
            let text = match form {
                0 => t.format("%Y-%m-%d %H:%M:%S").to_string(),
                1 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                2 => t.to_rfc3339(),
                3 => format!("{}{:+03}:00", local.format("%Y-%m-%dT%H:%M:%S"), offset_h),
                _ => format!("{}.250{:+03}", local.format("%Y-%m-%d %H:%M:%S"), offset_h),
            };
            prop_assert_eq!(parse_datetime(&text), Some(secs), "{}", text);
        }
    }

    #[test]
    fn iso_forms() {
        assert_eq!(parse_datetime("1970-01-02"), Some(86_400));
        assert_eq!(parse_datetime("1970-01-01 00:01:00"), Some(60));
        assert_eq!(parse_datetime("1970-01-01T00:01:00.750"), Some(60));
        assert_eq!(parse_datetime("1970-01-01T01:00:00Z"), Some(3600));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime("1970-01-01 01:00:00+01"), Some(0));
        assert_eq!(parse_datetime("soon"), None);
        assert_eq!(parse_datetime("2024-13-01"), None);
    }
}
