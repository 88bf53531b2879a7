//! Amazon Redshift: PostgreSQL's protocol, read the way Redshift documents it.
//!
//! - Results come in the **text** format (Redshift has no binary result format), through a
//!   cursor (`DECLARE ... CURSOR` / `FETCH FORWARD n`) inside a read-only transaction, a
//!   connection per read, so that a large result is fetched in pieces.
//! - Columns are described from the `SVV_COLUMNS` catalog view for a table (Redshift has neither
//!   `pg_range` nor `regtype` casts), and by preparing the statement for a query.
//! - Redshift's own types: `SUPER` is JSON, `TIMESTAMPTZ` and `TIMESTAMP` become Unix seconds,
//!   `TIMETZ`/`TIME` stay text, `VARBYTE`, `GEOMETRY`, `GEOGRAPHY` and `HLLSKETCH` cannot be
//!   sent (their rows fail with the reason unless the column is left out of the mapping).
//!
//! Tested against PostgreSQL as a stand-in (the same protocol and text formats), with the
//! Redshift-only paths (type names, text forms, catalog answers) fed Redshift's documented
//! answers in unit tests.

mod settings;
mod snapshot;

use std::sync::Arc;

use futures_util::{pin_mut, StreamExt};
use sallyport_core::Model;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};
use xxhash_rust::xxh3::Xxh3;

pub use settings::{Settings, FIELDS};

use crate::postgres::Connector;
use crate::{
    decimal_value, parse_datetime, AnsiQuotes, Column, Dialect, ReadSpec, Row, RowStream,
    SourceError, Unreadable, Warehouse, CHUNK_ROWS,
};

/// Rows fetched from the cursor at a time.
const FETCH_ROWS: usize = 10_000;

pub struct RedshiftSource {
    client: Client,
    connector: Box<Connector>,
    statement_timeout: Option<std::time::Duration>,
    /// Writes to snapshot tables (change detection in the warehouse), opened when first needed.
    writer: tokio::sync::Mutex<Option<Client>>,
}

/// How a column's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decode {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Json,
    Timestamp,
    Date,
    Unsupported(&'static str),
}

/// How a column of this Redshift (or PostgreSQL) type name is read. Names as `SVV_COLUMNS`
/// writes them (`character varying(256)`, `timestamp without time zone`, `numeric(12,2)`) and
/// as PostgreSQL's `pg_type` does (`varchar`, `timestamptz`, `int8`).
pub(crate) fn decode_of(type_name: &str) -> Decode {
    let t = type_name.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or("").trim();
    match base {
        "boolean" | "bool" => Decode::Bool,
        "smallint" | "integer" | "bigint" | "int" | "int2" | "int4" | "int8" => Decode::Int,
        "real" | "double precision" | "float" | "float4" | "float8" => Decode::Float,
        "numeric" | "decimal" => Decode::Numeric,
        "super" | "json" | "jsonb" => Decode::Json,
        "date" => Decode::Date,
        "timestamp"
        | "timestamp without time zone"
        | "timestamp with time zone"
        | "timestamptz" => Decode::Timestamp,
        "varbyte" | "varbinary" | "binary varying" | "bytea" => Decode::Unsupported("binary data"),
        "geometry" | "geography" => Decode::Unsupported("a spatial value"),
        "hllsketch" => Decode::Unsupported("a HyperLogLog sketch"),
        _ => Decode::Text,
    }
}

/// A column's text in the form Customer.io wants, or why it cannot be sent.
pub(crate) fn convert(text: Option<&str>, d: Decode) -> Result<Value, String> {
    let Some(t) = text else {
        return Ok(Value::Null);
    };
    let bad = |what: &str| format!("`{t}` is not {what}");
    Ok(match d {
        Decode::Unsupported(what) => {
            return Err(format!(
                "{what} cannot be sent to Customer.io: leave the column out of the mapping (exclude it) or convert it in the model's SQL"
            ))
        }
        Decode::Bool => match t {
            "t" | "true" | "1" | "TRUE" => Value::Bool(true),
            "f" | "false" | "0" | "FALSE" => Value::Bool(false),
            _ => return Err(bad("a boolean")),
        },
        Decode::Int => t
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("an integer"))?,
        Decode::Float => match t {
            "NaN" | "Infinity" | "-Infinity" => Value::Null,
            _ => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
        },
        Decode::Numeric => decimal_value(t),
        Decode::Json => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
        Decode::Timestamp | Decode::Date => match parse_datetime(t) {
            Some(s) => Value::from(s),
            None if t.ends_with(" BC") || t == "infinity" || t == "-infinity" => Value::Null,
            None => return Err(bad("a date or time")),
        },
        Decode::Text => Value::String(t.to_string()),
    })
}

/// The catalog query that describes a table: Redshift's `SVV_COLUMNS` view, which covers
/// local, late-binding and external tables alike.
fn catalog_query(table: &str) -> Option<String> {
    let (schema, name) = match table.rsplit_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, table),
    };
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let schema = match schema {
        Some(s) => format!("table_schema = {}", lit(s)),
        None => "table_schema = ANY (current_schemas(false))".to_string(),
    };
    Some(format!(
        "SELECT column_name, data_type FROM svv_columns WHERE {schema} AND table_name = {} ORDER BY ordinal_position",
        lit(name)
    ))
}

fn query_error(e: tokio_postgres::Error) -> SourceError {
    match e.as_db_error() {
        Some(db) => SourceError::Query(db.message().to_string()),
        None => SourceError::Query(e.to_string()),
    }
}

impl Warehouse for RedshiftSource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let connector = Connector::new(settings.0.url.expose(), &settings.0.tls())?;
        let client = connector.connect().await?;
        Ok(RedshiftSource {
            client,
            connector: Box::new(connector),
            statement_timeout: options.statement_timeout,
            writer: tokio::sync::Mutex::new(None),
        })
    }

    fn dialect(&self) -> &dyn Dialect {
        &AnsiQuotes
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        // A table: from the catalog, as Redshift documents it.
        if let Model::Table(t) = model {
            if let Some(q) = catalog_query(t) {
                if let Ok(messages) = self.client.simple_query(&q).await {
                    let columns: Vec<Column> = messages
                        .into_iter()
                        .filter_map(|m| match m {
                            SimpleQueryMessage::Row(r) => Some(Column {
                                name: r.get(0)?.to_string(),
                                type_name: r.get(1)?.to_string(),
                            }),
                            _ => None,
                        })
                        .collect();
                    if !columns.is_empty() {
                        return Ok(columns);
                    }
                }
            }
        }
        // A query (or a catalog without the view, as on PostgreSQL): the statement's own
        // description.
        let stmt = self
            .client
            .prepare(&format!(
                "SELECT * FROM {} LIMIT 0",
                AnsiQuotes.model_from(model)
            ))
            .await
            .map_err(query_error)?;
        Ok(stmt
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                type_name: c.type_().name().to_string(),
            })
            .collect())
    }

    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        let columns = self.describe(model).await?;
        let position = |k: &str| {
            columns
                .iter()
                .position(|c| c.name == k)
                .ok_or_else(|| SourceError::NoColumn(k.to_string()))
        };
        let key_at = spec.key.map(position).transpose()?;
        let fingerprint = match spec.fingerprint {
            Some(f) => Some((
                f.salt.clone(),
                f.columns
                    .iter()
                    .map(|c| position(c))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            None => None,
        };
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("m.{}", AnsiQuotes.quote_ident(&c.name)))
            .collect();
        let shape = Arc::new(Shape {
            names: columns.iter().map(|c| c.name.clone()).collect(),
            decode: columns.iter().map(|c| decode_of(&c.type_name)).collect(),
        });
        let (sql, diff_at) = match (spec.diff, spec.key) {
            (None, _) => (
                format!(
                    "SELECT {} FROM {}",
                    select.join(", "),
                    AnsiQuotes.model_from(model)
                ),
                None,
            ),
            (Some(d), Some(k)) => {
                let kt = &columns[position(k)?];
                if !matches!(decode_of(&kt.type_name), Decode::Int | Decode::Text) {
                    return Err(crate::key_not_comparable(k, &kt.type_name));
                }
                let texts: Vec<String> = match d.fingerprint {
                    Some(f) => f
                        .columns
                        .iter()
                        .map(|c| {
                            let i = position(c)?;
                            Ok(snapshot::as_text(
                                &format!("q.{}", AnsiQuotes.quote_ident(c)),
                                &columns[i].type_name,
                                shape.decode[i],
                            ))
                        })
                        .collect::<Result<_, SourceError>>()?,
                    None => Vec::new(),
                };
                (
                    snapshot::diff_sql(model, k, &select, &texts, d),
                    Some((select.len(), d.empty)),
                )
            }
            (Some(_), None) => {
                return Err(SourceError::Other(
                    "change detection in the warehouse needs a key column".into(),
                ))
            }
        };
        self.run(sql, move |row| {
            let diff = diff_at.map(|(at, empty)| Box::new(snapshot::diff_of(&row, at, empty)));
            let key = key_at.and_then(|i| row.get(i).map(str::to_string));
            let Some((salt, cols)) = &fingerprint else {
                let (values, unreadable) = shape.decode(&row);
                let mut r = Row::new(key, values).with_unreadable(unreadable);
                r.diff = diff;
                return Ok(r);
            };
            let mut h = Xxh3::new();
            h.update(salt.as_bytes());
            for &i in cols {
                match row.get(i) {
                    Some(t) => {
                        h.update(&(t.len() as u32).to_le_bytes());
                        h.update(t.as_bytes());
                    }
                    None => h.update(&[0xff, 0xff, 0xff, 0xff, 0xff]),
                }
            }
            let mut r = Row::undecoded(
                key,
                h.digest(),
                Box::new(Undecoded {
                    row,
                    shape: shape.clone(),
                }),
            );
            r.diff = diff;
            Ok(r)
        })
        .await
    }

    fn computes_fingerprints(&self) -> bool {
        true
    }

    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let k = AnsiQuotes.quote_ident(key);
        let sql = format!(
            "SELECT m.{k} FROM {} WHERE m.{k} IS NOT NULL GROUP BY m.{k} HAVING count(*) > 1",
            AnsiQuotes.model_from(model)
        );
        self.run(sql, |r| {
            Ok(Row::new(r.get(0).map(str::to_string), Vec::new()))
        })
        .await
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let sql = format!(
            "SELECT m.{} FROM {}",
            AnsiQuotes.quote_ident(key),
            AnsiQuotes.model_from(model)
        );
        self.run(sql, |r| {
            Ok(Row::new(r.get(0).map(str::to_string), Vec::new()))
        })
        .await
    }

    crate::snapshot_calls!(RedshiftSource);
}

impl RedshiftSource {
    /// Streams `sql` through a cursor, in text, on a connection of its own inside a read-only
    /// transaction.
    async fn run<F>(&self, sql: String, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(SimpleQueryRow) -> Result<Row, SourceError> + Send + 'static,
    {
        let client = self.connector.connect().await?;
        let mut begin = String::from("BEGIN READ ONLY");
        if let Some(t) = self.statement_timeout {
            begin.push_str(&format!(
                "; SET statement_timeout TO {}",
                t.as_millis().max(1)
            ));
        }
        begin.push_str(&format!(
            "; DECLARE sallyport_read NO SCROLL CURSOR FOR {sql}"
        ));
        client.batch_execute(&begin).await.map_err(query_error)?;
        let (tx, rx) = mpsc::channel(4);
        crate::spawn_reader(tx.clone(), async move {
            let fetch = format!("FETCH FORWARD {FETCH_ROWS} FROM sallyport_read");
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            loop {
                let messages = match client.simple_query_raw(&fetch).await {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.send(Err(query_error(e))).await;
                        return;
                    }
                };
                pin_mut!(messages);
                let mut fetched = 0;
                while let Some(m) = messages.next().await {
                    let row = match m {
                        Ok(SimpleQueryMessage::Row(r)) => r,
                        Ok(_) => continue,
                        Err(e) => {
                            let _ = tx.send(Err(query_error(e))).await;
                            return;
                        }
                    };
                    fetched += 1;
                    match convert(row) {
                        Ok(r) => chunk.push(r),
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                    if chunk.len() == CHUNK_ROWS {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                        if tx.send(Ok(full)).await.is_err() {
                            return;
                        }
                    }
                }
                if fetched < FETCH_ROWS {
                    break;
                }
            }
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            if let Err(e) = client.batch_execute("CLOSE sallyport_read; COMMIT").await {
                let _ = tx.send(Err(query_error(e))).await;
            }
        });
        Ok(rx)
    }
}

struct Shape {
    names: Vec<String>,
    decode: Vec<Decode>,
}

impl Shape {
    fn decode(&self, row: &SimpleQueryRow) -> (Vec<Value>, Vec<Unreadable>) {
        let mut values = Vec::with_capacity(self.decode.len());
        let mut unreadable = Vec::new();
        for (i, d) in self.decode.iter().enumerate() {
            match convert(row.get(i), *d) {
                Ok(v) => values.push(v),
                Err(reason) => {
                    unreadable.push(Unreadable {
                        index: i,
                        column: self.names[i].clone(),
                        reason,
                    });
                    values.push(Value::Null);
                }
            }
        }
        (values, unreadable)
    }
}

struct Undecoded {
    row: SimpleQueryRow,
    shape: Arc<Shape>,
}

impl crate::Undecoded for Undecoded {
    fn decode(&self) -> Result<Vec<Value>, SourceError> {
        Ok(self.shape.decode(&self.row).0)
    }

    fn decode_all(&self) -> Result<(Vec<Value>, Vec<Unreadable>), SourceError> {
        Ok(self.shape.decode(&self.row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `SVV_COLUMNS.data_type` as Redshift's documentation shows it, and how each is read.
    #[test]
    fn redshift_type_names_from_the_catalog() {
        for (name, want) in [
            ("smallint", Decode::Int),
            ("integer", Decode::Int),
            ("bigint", Decode::Int),
            ("numeric(12,2)", Decode::Numeric),
            ("real", Decode::Float),
            ("double precision", Decode::Float),
            ("boolean", Decode::Bool),
            ("character(10)", Decode::Text),
            ("character varying(256)", Decode::Text),
            ("date", Decode::Date),
            ("timestamp without time zone", Decode::Timestamp),
            ("timestamp with time zone", Decode::Timestamp),
            ("time without time zone", Decode::Text),
            ("time with time zone", Decode::Text),
            ("super", Decode::Json),
            ("varbyte(64000)", Decode::Unsupported("binary data")),
            ("geometry", Decode::Unsupported("a spatial value")),
            ("geography", Decode::Unsupported("a spatial value")),
            ("hllsketch", Decode::Unsupported("a HyperLogLog sketch")),
        ] {
            assert_eq!(decode_of(name), want, "{name}");
        }
    }

    /// Values in Redshift's text output format.
    #[test]
    fn redshift_text_values_become_customerio_values() {
        let c = |t: &str, d| convert(Some(t), d).unwrap();
        assert_eq!(c("t", Decode::Bool), json!(true));
        assert_eq!(c("f", Decode::Bool), json!(false));
        assert_eq!(c("-42", Decode::Int), json!(-42));
        assert_eq!(c("2.5", Decode::Float), json!(2.5));
        assert_eq!(c("12.50", Decode::Numeric), json!(12.5));
        assert_eq!(c("2024-01-02", Decode::Date), json!(1704153600));
        assert_eq!(
            c("2024-01-02 03:04:05", Decode::Timestamp),
            json!(1704164645)
        );
        assert_eq!(
            c("2024-01-02 03:04:05.123456", Decode::Timestamp),
            json!(1704164645)
        );
        assert_eq!(
            c("2024-01-02 05:04:05+02", Decode::Timestamp),
            json!(1704164645)
        );
        assert_eq!(c("03:04:05+02", Decode::Text), json!("03:04:05+02"));
        // SUPER values are written as JSON.
        assert_eq!(
            c(r#"{"a":[1,2],"b":null}"#, Decode::Json),
            json!({"a": [1, 2], "b": null})
        );
        assert_eq!(c("\"plain\"", Decode::Json), json!("plain"));
        assert_eq!(convert(None, Decode::Int).unwrap(), Value::Null);
        let e = convert(Some("\\x0001"), Decode::Unsupported("binary data")).unwrap_err();
        assert!(e.contains("binary data") && e.contains("exclude"), "{e}");
        assert!(convert(Some("yes"), Decode::Bool).is_err());
    }

    #[test]
    fn tables_are_described_from_svv_columns() {
        assert_eq!(
            catalog_query("sales.users").unwrap(),
            "SELECT column_name, data_type FROM svv_columns WHERE table_schema = 'sales' AND table_name = 'users' ORDER BY ordinal_position"
        );
        assert!(catalog_query("o'hara")
            .unwrap()
            .contains("table_schema = ANY (current_schemas(false)) AND table_name = 'o''hara'"));
    }
}
