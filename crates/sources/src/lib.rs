//! Warehouses: one module per kind behind one interface: open, describe the model's columns,
//! stream its rows in bounded chunks.
//!
//! Values arrive as JSON, already in the form Customer.io wants: dates and times as integer
//! Unix seconds (a timestamp without time zone is taken as UTC), JSON columns as JSON, arrays as
//! JSON arrays, big decimals as numbers where a double holds them exactly.

pub mod postgres;
mod sqlite;

use sallyport_config::{Model, Warehouse};
use serde_json::Value;
use tokio::sync::mpsc;

/// Rows in a chunk sent down a stream.
pub const CHUNK_ROWS: usize = 1000;

/// A column of a model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    /// The warehouse's own name for its type (`int8`, `timestamptz`, `TEXT`, ...).
    pub type_name: String,
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
    lazy: Option<postgres::Undecoded>,
}

impl Row {
    pub fn new(key: Option<String>, values: Vec<Value>) -> Row {
        Row {
            key,
            values,
            fingerprint: None,
            lazy: None,
        }
    }

    /// Decodes the values if they were left in the warehouse's wire format.
    pub fn materialize(&mut self) -> Result<(), SourceError> {
        if let Some(raw) = self.lazy.take() {
            self.values = raw.decode()?;
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

/// An open warehouse.
pub enum Source {
    Postgres(postgres::PgSource),
    Sqlite(sqlite::SqliteSource),
}

impl Source {
    /// Connects to a warehouse.
    pub async fn open(w: &Warehouse) -> Result<Source, SourceError> {
        match w {
            Warehouse::Postgres { url } => Ok(Source::Postgres(
                postgres::PgSource::connect(url.expose()).await?,
            )),
            Warehouse::Sqlite { path } => Ok(Source::Sqlite(sqlite::SqliteSource::open(path)?)),
        }
    }

    /// The model's columns, without reading its rows.
    pub async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        match self {
            Source::Postgres(s) => s.describe(model).await,
            Source::Sqlite(s) => s.describe(model),
        }
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
        match self {
            Source::Postgres(s) => s.read(model, spec).await,
            Source::Sqlite(s) => {
                if spec.fingerprint.is_some() {
                    return Err(SourceError::Other(
                        "SQLite rows are not fingerprinted before decoding".into(),
                    ));
                }
                s.stream(model, spec.key)
            }
        }
    }

    /// Whether rows can be fingerprinted in the warehouse's wire format before decoding.
    pub fn computes_fingerprints(&self) -> bool {
        matches!(self, Source::Postgres(_))
    }

    /// The values of `key` that more than one row of the model has, computed by the warehouse.
    pub async fn duplicate_keys(
        &self,
        model: &Model,
        key: &str,
    ) -> Result<Vec<String>, SourceError> {
        match self {
            Source::Postgres(s) => s.duplicate_keys(model, key).await,
            Source::Sqlite(s) => s.duplicate_keys(model, key),
        }
    }

    /// Every value of `key` in the model, as a stream of chunks (rows with no values).
    pub async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        match self {
            Source::Postgres(s) => s.keys(model, key).await,
            Source::Sqlite(s) => s.keys(model, key),
        }
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

/// Quotes an SQL identifier: `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The FROM-clause text of a model, aliased `m`: a table's name quoted part by part
/// (`schema.name`), or a query as a subquery.
pub fn model_from(model: &Model) -> String {
    match model {
        Model::Table(t) => format!(
            "{} AS m",
            t.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
        ),
        Model::Sql(q) => format!("({}) AS m", q.trim().trim_end_matches(';')),
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
        assert_eq!(
            model_from(&Model::Table("public.users".into())),
            "\"public\".\"users\" AS m"
        );
        assert_eq!(
            model_from(&Model::Table("x\"; drop table users; --".into())),
            "\"x\"\"; drop table users; --\" AS m"
        );
        assert_eq!(
            model_from(&Model::Sql("select 1;".into())),
            "(select 1) AS m"
        );
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
