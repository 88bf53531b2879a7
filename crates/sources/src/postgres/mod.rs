//! PostgreSQL: rows streamed over one connection with the extended protocol (the server sends as
//! the client reads, so memory stays flat), conversions done by the server where it is exact.

mod connect;
mod settings;
pub(crate) mod snapshot;
mod writeback;

use std::sync::Arc;

use futures_util::{pin_mut, StreamExt};
use sallyport_core::Model;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::types::{FromSql, Kind as PgKind, Type};
use tokio_postgres::Client;
use xxhash_rust::xxh3::Xxh3;

pub use connect::{split_tls, Connector, SslMode, Tls};
pub use settings::{Settings, FIELDS};

use crate::{
    decimal_value, AnsiQuotes, Column, Dialect, ReadSpec, Row, RowStream, Snapshot, SourceError,
    Warehouse, CHUNK_ROWS,
};

pub struct PgSource {
    /// For describing models (statements prepared, never run).
    client: Arc<Client>,
    /// Each stream reads over a connection of its own, inside a read-only transaction.
    connector: Box<Connector>,
    statement_timeout: Option<std::time::Duration>,
    /// Writes to snapshot tables (change detection in the warehouse), opened when first needed.
    writer: tokio::sync::Mutex<Option<Client>>,
    /// Whether the snapshot was empty when prepared and every key written to it since was new
    /// (see `snapshot_write`).
    inserts_only: std::sync::atomic::AtomicBool,
    /// The snapshots (tables) that were new (or empty) when prepared and have no key index yet:
    /// filled by plain inserts, indexed once, when sealed (see `snapshot_seal`).
    unindexed: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn quote_ident(name: &str) -> String {
    AnsiQuotes.quote_ident(name)
}

fn model_from(model: &Model) -> String {
    AnsiQuotes.model_from(model)
}

/// How a column is read back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Decode {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Text,
    Json,
    /// JSON asked for as text.
    JsonText,
    Numeric,
    Timestamp,
    Date,
}

fn query_error(e: tokio_postgres::Error) -> SourceError {
    match e.as_db_error() {
        Some(db) => SourceError::Query(db.message().to_string()),
        None => SourceError::Query(e.to_string()),
    }
}

impl Warehouse for PgSource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let connector = Connector::new(settings.url.expose(), &settings.tls())?;
        Self::open_with(connector, options.statement_timeout).await
    }

    fn dialect(&self) -> &dyn Dialect {
        &AnsiQuotes
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        PgSource::describe(self, model).await
    }

    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        PgSource::read(self, model, spec).await
    }

    fn computes_fingerprints(&self) -> bool {
        true
    }

    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        PgSource::duplicate_keys(self, model, key).await
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        PgSource::keys(self, model, key).await
    }

    crate::snapshot_calls!(PgSource);
    crate::writeback_calls!(PgSource);

    async fn snapshot_seal(&self, snapshot: &Snapshot) -> Result<(), SourceError> {
        PgSource::snapshot_seal(self, snapshot).await
    }
}

impl PgSource {
    /// Opens the warehouse `connector` reaches.
    pub async fn open_with(
        connector: Connector,
        statement_timeout: Option<std::time::Duration>,
    ) -> Result<Self, SourceError> {
        let client = connector.connect().await?;
        // This connection only prepares statements; even so, nothing it runs may write.
        client
            .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            .await
            .map_err(query_error)?;
        if let Some(t) = statement_timeout {
            client
                .batch_execute(&format!("SET statement_timeout = {}", t.as_millis().max(1)))
                .await
                .map_err(query_error)?;
        }
        Ok(Self {
            client: Arc::new(client),
            connector: Box::new(connector),
            statement_timeout,
            writer: tokio::sync::Mutex::new(None),
            inserts_only: std::sync::atomic::AtomicBool::new(false),
            unindexed: Default::default(),
        })
    }

    async fn columns(&self, model: &Model) -> Result<Vec<(String, Type)>, SourceError> {
        let stmt = self
            .client
            .prepare(&format!("SELECT * FROM {}", model_from(model)))
            .await
            .map_err(query_error)?;
        Ok(stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect())
    }

    pub async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        Ok(self
            .columns(model)
            .await?
            .into_iter()
            .map(|(name, t)| Column {
                name,
                type_name: t.name().to_string(),
            })
            .collect())
    }

    pub async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        let columns = self.columns(model).await?;
        let position = |k: &str| {
            columns
                .iter()
                .position(|(n, _)| n == k)
                .ok_or_else(|| SourceError::NoColumn(k.to_string()))
        };
        if let Some(k) = spec.key {
            position(k)?;
        }
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
        let mut select = Vec::with_capacity(columns.len() + 1);
        let mut decode = Vec::with_capacity(columns.len());
        for (name, t) in &columns {
            let (expr, d) = select_expr(&format!("m.{}", quote_ident(name)), t);
            select.push(expr);
            decode.push(d);
        }
        // The key as PostgreSQL writes it as text (`::text`, as the duplicate and key queries
        // read it): read from the column itself where that text is the column's own (integers,
        // text, varchar), otherwise asked for as `::text` (which trims a `char(n)`'s padding).
        let key_at = match spec.key {
            None => None,
            Some(k) => {
                let i = position(k)?;
                match columns[i].1 {
                    Type::INT2 | Type::INT4 | Type::INT8 => Some(KeyAt::Int(i)),
                    Type::TEXT | Type::VARCHAR | Type::NAME => Some(KeyAt::Text(i)),
                    _ => {
                        select.push(format!("m.{}::text", quote_ident(k)));
                        Some(KeyAt::Text(select.len() - 1))
                    }
                }
            }
        };
        let (sql, diff_at) = match (spec.diff, spec.key) {
            (None, _) => (
                format!("SELECT {} FROM {}", select.join(", "), model_from(model)),
                None,
            ),
            (Some(d), Some(k)) => {
                // What the warehouse fingerprints: each column as it is where PostgreSQL can
                // hash its type, else as text.
                let hashed: Vec<String> = match d.fingerprint {
                    Some(f) => f
                        .columns
                        .iter()
                        .map(|c| {
                            let t = &columns[position(c)?].1;
                            Ok(if snapshot::hashable(t) {
                                format!("q.{}", quote_ident(c))
                            } else {
                                format!("q.{}::text", quote_ident(c))
                            })
                        })
                        .collect::<Result<_, SourceError>>()?,
                    None => Vec::new(),
                };
                (
                    snapshot::diff_sql(model, k, &select, &hashed, d),
                    Some((select.len(), d.empty)),
                )
            }
            (Some(_), None) => {
                return Err(SourceError::Other(
                    "change detection in the warehouse needs a key column".into(),
                ))
            }
        };
        let decode = Arc::new(decode);
        // A first run's read (an empty snapshot) joins nothing: it is read like any model, by
        // one process (parallel workers would only pass its rows through another queue).
        let set = if diff_at.is_some_and(|(_, empty)| !empty) {
            snapshot::DIFF_SETTINGS
        } else {
            ""
        };
        self.run_with(sql, set, move |row| {
            let diff = match diff_at {
                Some((at, empty)) => Some(Box::new(snapshot::diff_of(&row, at, empty)?)),
                None => None,
            };
            let mut row = read_row(row, key_at, &decode, fingerprint.as_ref())?;
            row.diff = diff;
            Ok(row)
        })
        .await
    }
}

/// Converts one row of a read: its key, and its values decoded, or left undecoded behind the
/// fingerprint of the mapped columns' wire bytes.
fn read_row(
    row: tokio_postgres::Row,
    key_at: Option<KeyAt>,
    decode: &Arc<Vec<Decode>>,
    fingerprint: Option<&(String, Vec<usize>)>,
) -> Result<Row, SourceError> {
    let key = match key_at {
        Some(KeyAt::Text(i)) => row
            .try_get::<_, Option<String>>(i)
            .map_err(|e| SourceError::Query(e.to_string()))?,
        Some(KeyAt::Int(i)) => match read(&row, i, decode[i])? {
            Value::Null => None,
            v => Some(v.to_string()),
        },
        None => None,
    };
    let Some((salt, columns)) = fingerprint else {
        return Ok(Row::new(key, decode_row(&row, decode)?));
    };
    // Hash the mapped columns' bytes as they came off the wire; decode later, and only
    // if the row is to be sent.
    let mut h = Xxh3::new();
    h.update(salt.as_bytes());
    for &i in columns.iter() {
        match row
            .try_get::<_, Option<Wire>>(i)
            .map_err(|e| SourceError::Query(e.to_string()))?
        {
            Some(Wire(bytes)) => hash_column(&mut h, decode[i], bytes),
            None => h.update(&[0xff, 0xff, 0xff, 0xff, 0xff]),
        }
    }
    Ok(Row::undecoded(
        key,
        h.digest(),
        Box::new(Undecoded {
            row,
            decode: decode.clone(),
        }),
    ))
}

impl PgSource {
    pub async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let sql = format!(
            "SELECT m.{}::text FROM {}",
            quote_ident(key),
            model_from(model)
        );
        self.run(sql, |row| {
            Ok(Row::new(
                row.try_get::<_, Option<String>>(0)
                    .map_err(|e| SourceError::Query(e.to_string()))?,
                Vec::new(),
            ))
        })
        .await
    }

    pub async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        // A table whose key column has a unique index has no duplicate to look for.
        if self.unique_key(model, key).await? {
            let (_, rx) = mpsc::channel(1);
            return Ok(rx);
        }
        let k = quote_ident(key);
        let sql = format!(
            "SELECT m.{k}::text FROM {} WHERE m.{k} IS NOT NULL GROUP BY 1 HAVING count(*) > 1",
            model_from(model)
        );
        self.run(sql, |row| {
            Ok(Row::new(
                row.try_get::<_, Option<String>>(0)
                    .map_err(|e| SourceError::Query(e.to_string()))?,
                Vec::new(),
            ))
        })
        .await
    }

    /// Whether the model is a table whose `key` column alone has a unique index (or is its
    /// primary key): then no two rows share a key.
    async fn unique_key(&self, model: &Model, key: &str) -> Result<bool, SourceError> {
        let Model::Table(t) = model else {
            return Ok(false);
        };
        let name = t.split('.').map(quote_ident).collect::<Vec<_>>().join(".");
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1
                      AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = $2)",
                &[&name, &key],
            )
            .await
            .map_err(query_error)?;
        Ok(row.get(0))
    }

    /// How many rows of the model have a key (not NULL).
    pub(crate) async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        let sql = format!(
            "SELECT count(m.{}) FROM {}",
            quote_ident(key),
            model_from(model)
        );
        let mut rows = self
            .run(sql, |row| {
                let n: i64 = row
                    .try_get(0)
                    .map_err(|e| SourceError::Query(e.to_string()))?;
                Ok(Row::new(Some(n.to_string()), Vec::new()))
            })
            .await?;
        let mut n = 0;
        while let Some(chunk) = rows.recv().await {
            for r in chunk? {
                n = r.key.and_then(|k| k.parse().ok()).unwrap_or(0);
            }
        }
        Ok(n)
    }

    async fn run<F>(&self, sql: String, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(tokio_postgres::Row) -> Result<Row, SourceError> + Send + 'static,
    {
        self.run_with(sql, "", convert).await
    }

    /// [`PgSource::run`] with `SET LOCAL` settings for the statement (`work_mem` for the joins
    /// of change detection).
    async fn run_with<F>(
        &self,
        sql: String,
        set: &str,
        convert: F,
    ) -> Result<RowStream, SourceError>
    where
        F: Fn(tokio_postgres::Row) -> Result<Row, SourceError> + Send + 'static,
    {
        // A model is read, never written: each stream reads over a connection of its own,
        // inside a read-only transaction that the model's SQL cannot leave (a `set_config` in
        // it changes nothing for the statement already running, and no later statement of
        // this connection runs the model again).
        let client = self.connector.connect().await?;
        let mut begin = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        if let Some(t) = self.statement_timeout {
            begin.push_str(&format!(
                "; SET LOCAL statement_timeout = {}",
                t.as_millis().max(1)
            ));
        }
        begin.push_str(set);
        client.batch_execute(&begin).await.map_err(query_error)?;
        let stmt = client.prepare(&sql).await.map_err(query_error)?;
        let (tx, rx) = mpsc::channel(4);
        crate::spawn_reader(tx.clone(), async move {
            let rows = match client
                .query_raw(
                    &stmt,
                    std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(query_error(e))).await;
                    return;
                }
            };
            pin_mut!(rows);
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            while let Some(row) = rows.next().await {
                let converted = row.map_err(query_error).and_then(&convert);
                match converted {
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
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            if let Err(e) = client.batch_execute("COMMIT").await {
                let _ = tx.send(Err(query_error(e))).await;
            }
        });
        Ok(rx)
    }
}

/// Where a row's key is read from.
#[derive(Debug, Clone, Copy)]
enum KeyAt {
    Int(usize),
    Text(usize),
}

/// A row's values still in the wire format, decoded on demand.
struct Undecoded {
    row: tokio_postgres::Row,
    decode: Arc<Vec<Decode>>,
}

impl crate::Undecoded for Undecoded {
    fn decode(&self) -> Result<Vec<Value>, SourceError> {
        decode_row(&self.row, &self.decode)
    }
}

fn decode_row(row: &tokio_postgres::Row, decode: &[Decode]) -> Result<Vec<Value>, SourceError> {
    let mut values = Vec::with_capacity(decode.len());
    for (i, d) in decode.iter().enumerate() {
        values.push(read(row, i, *d)?);
    }
    Ok(values)
}

/// A column's bytes as they came off the wire, whatever its type.
struct Wire<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Wire<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Wire(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The select expression for a column, and how to read it back.
fn select_expr(col: &str, t: &Type) -> (String, Decode) {
    if let PgKind::Array(_) = t.kind() {
        return (format!("to_json({col})"), Decode::Json);
    }
    let d = match *t {
        Type::BOOL => Decode::Bool,
        Type::INT2 => Decode::I16,
        Type::INT4 => Decode::I32,
        Type::INT8 => Decode::I64,
        Type::FLOAT4 => Decode::F32,
        Type::FLOAT8 => Decode::F64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Decode::Text,
        Type::JSON => Decode::Json,
        // Asked for as text: a `jsonb` is its text after a version byte, and a NUMERIC's text is
        // shorter than its binary form (8 bytes of header, 2 per 4 digits) up to 16 digits or
        // so: `12345.67` is 8 bytes, not 14. Both read back to the same values.
        Type::JSONB => return (format!("{col}::text"), Decode::JsonText),
        Type::NUMERIC => return (format!("{col}::text"), Decode::Numeric),
        Type::DATE => Decode::Date,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => Decode::Timestamp,
        _ => return (format!("{col}::text"), Decode::Text),
    };
    (col.to_string(), d)
}

/// Seconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH: i64 = 946_684_800;

fn read(row: &tokio_postgres::Row, i: usize, d: Decode) -> Result<Value, SourceError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, SourceError> {
        row.try_get::<_, Option<T>>(i)
            .map_err(|e| SourceError::Query(format!("column {}: {e}", row.columns()[i].name())))
    }
    let float = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    let bad = |what: &str| {
        SourceError::Query(format!(
            "column {}: malformed {what}",
            row.columns()[i].name()
        ))
    };
    Ok(match d {
        Decode::Bool => get::<bool>(row, i)?.map(Value::Bool).unwrap_or(Value::Null),
        Decode::I16 => get::<i16>(row, i)?.map(Value::from).unwrap_or(Value::Null),
        Decode::I32 => get::<i32>(row, i)?.map(Value::from).unwrap_or(Value::Null),
        Decode::I64 => get::<i64>(row, i)?.map(Value::from).unwrap_or(Value::Null),
        Decode::F32 => get::<f32>(row, i)?
            .map(|f| float(f as f64))
            .unwrap_or(Value::Null),
        Decode::F64 => get::<f64>(row, i)?.map(float).unwrap_or(Value::Null),
        Decode::Text => get::<String>(row, i)?
            .map(Value::String)
            .unwrap_or(Value::Null),
        Decode::Json => get::<Value>(row, i)?.unwrap_or(Value::Null),
        // Times arrive as microseconds (days for a date) since 2000-01-01; the extremes are
        // PostgreSQL's infinities, which have no Unix time.
        Decode::Timestamp => match get::<Wire>(row, i)? {
            None => Value::Null,
            Some(Wire(b)) => {
                let micros = i64::from_be_bytes(b.try_into().map_err(|_| bad("timestamp"))?);
                if micros == i64::MAX || micros == i64::MIN {
                    Value::Null
                } else {
                    Value::from(micros.div_euclid(1_000_000) + PG_EPOCH)
                }
            }
        },
        Decode::Date => match get::<Wire>(row, i)? {
            None => Value::Null,
            Some(Wire(b)) => {
                let days = i32::from_be_bytes(b.try_into().map_err(|_| bad("date"))?);
                if days == i32::MAX || days == i32::MIN {
                    Value::Null
                } else {
                    Value::from(days as i64 * 86_400 + PG_EPOCH)
                }
            }
        },
        Decode::JsonText => match get::<&str>(row, i)? {
            None => Value::Null,
            Some(t) => serde_json::from_str(t).map_err(|_| bad("json"))?,
        },
        // PostgreSQL's text of a NUMERIC keeps its scale (`12.50`); NaN and the infinities have
        // no JSON number.
        Decode::Numeric => match get::<&str>(row, i)? {
            None | Some("NaN" | "Infinity" | "-Infinity") => Value::Null,
            Some(t) => decimal_value(t),
        },
    })
}

/// Adds a column's bytes to a row's fingerprint: their length, then the bytes. Columns asked
/// for as text are hashed as their binary form, so that a fingerprint does not depend on how a
/// column travels (nor changed when NUMERIC and `jsonb` came to travel as text).
fn hash_column(h: &mut Xxh3, d: Decode, bytes: &[u8]) {
    match d {
        Decode::Numeric => {
            let b = numeric_binary(bytes);
            h.update(&(b.len() as u32).to_le_bytes());
            h.update(&b);
        }
        // `jsonb`'s binary form is a version byte (1) and its text.
        Decode::JsonText => {
            h.update(&(bytes.len() as u32 + 1).to_le_bytes());
            h.update(&[1]);
            h.update(bytes);
        }
        _ => {
            h.update(&(bytes.len() as u32).to_le_bytes());
            h.update(bytes);
        }
    }
}

/// PostgreSQL's binary NUMERIC (as `numeric_send` writes it) of its text (as `numeric_out`
/// writes it: `-`, digits, `.` and exactly the display scale's digits, or `NaN`, `Infinity`,
/// `-Infinity`): a count of base-10000 digits, the weight of the first, the sign, the display
/// scale, then the digits, without leading or trailing zero digits.
pub(crate) fn numeric_binary(text: &[u8]) -> Vec<u8> {
    // No digits; the server sends the infinities with a display scale of 32.
    let special = |sign: u16, dscale: u16| {
        [0u16, 0, sign, dscale]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    };
    match text {
        b"NaN" => return special(0xC000, 0),
        b"Infinity" => return special(0xD000, 32),
        b"-Infinity" => return special(0xF000, 32),
        _ => {}
    }
    let (negative, text) = match text.strip_prefix(b"-") {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (int, frac) = match text.iter().position(|&c| c == b'.') {
        Some(p) => (&text[..p], &text[p + 1..]),
        None => (text, &text[text.len()..]),
    };
    // Groups of four digits on each side of the point: the integer part padded on the left,
    // the fraction on the right.
    let lead = (4 - int.len() % 4) % 4;
    let digit = |c: u8| (c - b'0') as u16;
    // One buffer (fingerprints make one per NUMERIC of every row read): the header's place,
    // then every group, of which the zero ones at either end are then taken out.
    let mut out = vec![0u8; 8];
    out.reserve(2 * ((int.len() + frac.len()) / 4 + 2));
    let mut g = 0u16;
    let mut n = lead;
    for &c in int.iter().chain(frac) {
        g = g * 10 + digit(c);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&g.to_be_bytes());
            (g, n) = (0, 0);
        }
    }
    if n > 0 {
        out.extend_from_slice(&(g * 10u16.pow(4 - n as u32)).to_be_bytes());
    }
    // (In i32: a NUMERIC's integer part may have 131,072 digits, a weight of 32,767.)
    let mut weight = ((lead + int.len()) / 4) as i32 - 1;
    let nonzero = |c: &[u8]| c != [0, 0];
    let first = out[8..].chunks(2).position(nonzero);
    let last = out[8..].chunks(2).rposition(nonzero);
    let sign = match (first, last) {
        (Some(f), Some(l)) => {
            out.truncate(8 + 2 * (l + 1));
            out.drain(8..8 + 2 * f);
            weight -= f as i32;
            if negative {
                0x4000u16
            } else {
                0
            }
        }
        _ => {
            out.truncate(8);
            weight = 0;
            0
        }
    };
    let ndigits = ((out.len() - 8) / 2) as u16;
    for (k, v) in [ndigits, weight as i16 as u16, sign, frac.len() as u16]
        .into_iter()
        .enumerate()
    {
        out[2 * k..2 * k + 2].copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Connection errors may quote the URL; never its password.
pub(crate) fn redact_connect_error(msg: &str, url: &str) -> String {
    let mut out = msg.to_string();
    for pw in url_passwords(url) {
        // As written, percent-decoded (as the server may quote it) and quoted.
        let decoded = percent_decode(&pw);
        // Quoted forms first, so that no quote is left around a `***`.
        for form in [
            format!("'{decoded}'"),
            format!("\"{decoded}\""),
            pw.clone(),
            decoded.clone(),
        ] {
            if !form.trim_matches(['\'', '"']).is_empty() {
                out = out.replace(&form, "***");
            }
        }
    }
    out
}

/// `%40` → `@`, and so on; malformed escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The password of a `postgres://user:password@host` URL (the userinfo ends at the last `@`)
/// and of a `password=...` setting.
fn url_passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                out.push(pw.to_string());
            }
        }
    }
    // `password=...` settings: in a URL's query (up to `&`), or key=value (up to a space, or a
    // quoted value up to its closing quote).
    let mut rest = url;
    while let Some(at) = rest.find("password=") {
        let value = &rest[at + "password=".len()..];
        let pw = match value.strip_prefix('\'') {
            Some(q) => q.split('\'').next().unwrap_or_default(),
            None => value.split(['&', ' ', '#']).next().unwrap_or_default(),
        };
        out.push(pw.to_string());
        rest = &value[pw.len().min(value.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{hash_column, numeric_binary, Decode, Wire};
    use xxhash_rust::xxh3::Xxh3;

    /// How a column was hashed when it came in binary: its length, then its bytes.
    fn hashed_as_binary(binary: &[u8]) -> u64 {
        let mut h = Xxh3::new();
        h.update(&(binary.len() as u32).to_le_bytes());
        h.update(binary);
        h.digest()
    }

    fn hashed_from_text(d: Decode, text: &str) -> u64 {
        let mut h = Xxh3::new();
        hash_column(&mut h, d, text.as_bytes());
        h.digest()
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        [ndigits, weight as u16, sign, dscale]
            .iter()
            .chain(digits)
            .flat_map(|v| v.to_be_bytes())
            .collect()
    }

    #[test]
    fn numerics_take_their_binary_form() {
        let b = |t: &str| numeric_binary(t.as_bytes());
        assert_eq!(b("12.50"), numeric(2, 0, 0, 2, &[12, 5000]));
        assert_eq!(b("-12345"), numeric(2, 1, 0x4000, 0, &[1, 2345]));
        assert_eq!(b("-123456789"), numeric(3, 2, 0x4000, 0, &[1, 2345, 6789]));
        assert_eq!(b("0.0050"), numeric(1, -1, 0, 4, &[50]));
        assert_eq!(b("0"), numeric(0, 0, 0, 0, &[]));
        assert_eq!(b("0.000"), numeric(0, 0, 0, 3, &[]));
        assert_eq!(b("700000000"), numeric(1, 2, 0, 0, &[7]));
        assert_eq!(b("NaN"), numeric(0, 0, 0xC000, 0, &[]));
        assert_eq!(b("-Infinity"), numeric(0, 0, 0xF000, 32, &[]));
        // The largest weight a NUMERIC has (131,072 integer digits).
        let huge = format!("9{}", "0".repeat(131_071));
        assert_eq!(b(&huge), numeric(1, 32767, 0, 0, &[9000]));
    }

    /// Every NUMERIC as PostgreSQL itself sends it in binary and writes it as text: the binary
    /// form made from the text is the server's, byte for byte (fingerprints hash it, as they
    /// did when NUMERIC and `jsonb` were read in binary).
    #[tokio::test]
    async fn numerics_from_text_are_the_servers_binary() {
        sallyport_testkit::needs_postgres!();
        let (client, _schema) = sallyport_testkit::schema().await;
        let mut values: Vec<String> = [
            "0",
            "0.00",
            "-0.5",
            "12.50",
            "-12345",
            "0.0050",
            "700000000",
            "1e-20",
            "123456789012345678901234.5",
            "99999999.9999",
            "10000",
            "0.0001",
            "-0.00010",
            "NaN",
            "Infinity",
            "-Infinity",
            "1.000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Lengths on both sides of the point, zeros at either end, and signs: a fixed walk.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let int_len = (x % 23) as usize;
            let frac_len = ((x >> 8) % 17) as usize;
            let digits: String = (0..int_len + frac_len)
                .map(|k| {
                    let d = (x >> (k % 60)) % 10;
                    if (x >> 20) % 3 == 0 && k % 5 != 0 {
                        '0'
                    } else {
                        char::from(b'0' + d as u8)
                    }
                })
                .collect();
            let sign = if (x >> 30) % 2 == 0 { "" } else { "-" };
            let (i, f) = digits.split_at(int_len);
            let i = if i.is_empty() { "0" } else { i };
            values.push(if f.is_empty() {
                format!("{sign}{i}")
            } else {
                format!("{sign}{i}.{f}")
            });
        }
        let rows = client
            .query(
                "SELECT v::numeric, v::numeric::text FROM unnest($1::text[]) v",
                &[&values],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), values.len());
        for r in rows {
            let Wire(binary) = r.get(0);
            let text: &str = r.get(1);
            assert_eq!(numeric_binary(text.as_bytes()), binary, "{text}");
            assert_eq!(
                hashed_from_text(Decode::Numeric, text),
                hashed_as_binary(binary),
                "{text}: the fingerprint it had"
            );
        }
        // A `jsonb` is sent as a version byte (1) and its text.
        let docs = [
            r#"{"a": [1, 2.50, null], "é": "\"x\""}"#,
            "3",
            r#""s""#,
            "[]",
        ];
        for r in client
            .query(
                "SELECT v::jsonb, v::jsonb::text FROM unnest($1::text[]) v",
                &[&&docs[..]],
            )
            .await
            .unwrap()
        {
            let Wire(binary) = r.get(0);
            let text: &str = r.get(1);
            assert_eq!([&[1u8][..], text.as_bytes()].concat(), binary, "{text}");
            assert_eq!(
                hashed_from_text(Decode::JsonText, text),
                hashed_as_binary(binary),
                "{text}: the fingerprint it had"
            );
        }
    }
}

#[cfg(test)]
mod redaction {
    use super::redact_connect_error;

    #[test]
    fn passwords_with_at_signs_and_settings() {
        let url = "postgres://me:p@ss@host:5432/db?sslmode=disable";
        assert_eq!(redact_connect_error("bad p@ss here", url), "bad *** here");
        let kv = "host=h user=me password=s3cret dbname=d";
        assert_eq!(redact_connect_error("x s3cret y", kv), "x *** y");
        let encoded = "postgres://me:p%40ss%2Fw@host/db";
        assert_eq!(
            redact_connect_error("password p@ss/w and p%40ss%2Fw", encoded),
            "password *** and ***"
        );
        let quoted = "host=h user=me password='sp ace' dbname=d";
        assert_eq!(redact_connect_error("bad 'sp ace'", quoted), "bad ***");
    }
}
