//! MySQL and MariaDB: rows streamed one packet at a time over the binary protocol (memory stays
//! flat), each read on a connection of its own inside a read-only transaction, fingerprinted from
//! the values as they come off the wire and converted only when a row is to be sent.

mod settings;
mod snapshot;
mod writeback;

use std::sync::Arc;

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts, Value as My};
use sallyport_core::Model;
use serde_json::Value;
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

pub use settings::{Settings, FIELDS};

use crate::tls::{explain, SslMode};
use crate::{
    decimal_value, Backticks, Column, Dialect, ReadSpec, Row, RowStream, SourceError, Unreadable,
    Warehouse, CHUNK_ROWS,
};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct MySource {
    /// With TLS as the settings say.
    opts: Opts,
    /// `prefer`: the same without TLS, for a server that offers none.
    plain: Option<Opts>,
    mode: SslMode,
    url: String,
    /// Seconds east of UTC that `DATETIME` values are written in.
    offset: i32,
    statement_timeout: Option<std::time::Duration>,
    /// Writes to snapshot tables (change detection in the warehouse), opened when first needed.
    writer: tokio::sync::Mutex<Option<Conn>>,
}

/// How a column is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Bool,
    Number,
    Decimal,
    Text,
    Json,
    /// `DATETIME`: in the configured zone.
    DateTime,
    /// `TIMESTAMP` (read as UTC) and `DATE` (midnight UTC).
    Utc,
    Time,
    /// Not something Customer.io can take (binary, bit, spatial).
    Unsupported(&'static str),
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Warehouse for MySource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let url = settings.url.expose();
        let (rest, tls) = crate::postgres::split_tls(url).map_err(SourceError::Connect)?;
        let tls = tls.overridden_by(&crate::postgres::Tls {
            mode: settings.sslmode,
            rootcert: settings.sslrootcert.clone(),
            cert: settings.sslcert.clone(),
            key: settings.sslkey.clone(),
        });
        let base = Opts::from_url(&rest).map_err(|e| {
            SourceError::Connect(crate::postgres::redact_connect_error(&e.to_string(), url))
        })?;
        let offset = settings.utc_offset().map_err(SourceError::Connect)?;
        let mode = crate::tls::mode_for(
            tls.mode,
            tls.rootcert.as_deref(),
            is_loopback(base.ip_or_hostname()),
        )
        .map_err(SourceError::Connect)?;
        let ssl = match mode {
            SslMode::Disable => None,
            _ => {
                let mut ssl = SslOpts::default();
                let roots = tls.rootcert.as_deref().filter(|r| *r != "system");
                if let Some(path) = roots {
                    if !std::path::Path::new(path).is_file() {
                        return Err(SourceError::Connect(format!(
                            "sslrootcert {path}: cannot be read"
                        )));
                    }
                    // The file's roots only, as libpq reads `sslrootcert`: the driver's
                    // built-in public roots would otherwise be trusted beside them.
                    ssl = ssl
                        .with_root_certs(vec![std::path::PathBuf::from(path).into()])
                        .with_disable_built_in_roots(true);
                }
                let check_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
                    || (mode == SslMode::Require && roots.is_some());
                if !check_chain {
                    ssl = ssl.with_danger_accept_invalid_certs(true);
                }
                if mode != SslMode::VerifyFull {
                    ssl = ssl.with_danger_skip_domain_validation(true);
                }
                match (&tls.cert, &tls.key) {
                    (Some(c), Some(k)) => {
                        ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
                            std::path::PathBuf::from(c).into(),
                            std::path::PathBuf::from(k).into(),
                        )))
                    }
                    (None, None) => {}
                    _ => {
                        return Err(SourceError::Connect(
                            "sslcert and sslkey go together: give both".into(),
                        ))
                    }
                }
                Some(ssl)
            }
        };
        let builder = |ssl: Option<SslOpts>| -> Opts {
            OptsBuilder::from_opts(base.clone())
                .ssl_opts(ssl)
                .prefer_socket(false)
                .into()
        };
        let source = MySource {
            opts: builder(ssl),
            plain: (mode == SslMode::Prefer).then(|| builder(None)),
            mode,
            url: url.to_string(),
            offset,
            statement_timeout: options.statement_timeout,
            writer: tokio::sync::Mutex::new(None),
        };
        // The connection is tried now, so that a wrong setting is known before a run starts.
        let conn = source.connect().await?;
        let _ = conn.disconnect().await;
        Ok(source)
    }

    fn dialect(&self) -> &dyn Dialect {
        &Backticks
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        let mut conn = self.connect().await?;
        let columns = self.columns(&mut conn, model).await?;
        let _ = conn.disconnect().await;
        Ok(columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                type_name: c.type_name,
            })
            .collect())
    }

    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        let mut conn = self.reading().await?;
        let columns = self.columns(&mut conn, model).await?;
        let position = |k: &str| {
            columns
                .iter()
                .position(|c| c.name == k)
                .ok_or_else(|| SourceError::NoColumn(k.to_string()))
        };
        let mut select: Vec<String> = columns
            .iter()
            .map(|c| format!("m.{}", Backticks.quote_ident(&c.name)))
            .collect();
        let key_at = match spec.key {
            Some(k) => {
                position(k)?;
                select.push(format!("CAST(m.{} AS CHAR)", Backticks.quote_ident(k)));
                Some(select.len() - 1)
            }
            None => None,
        };
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
        let (sql, diff_at) = match (spec.diff, spec.key) {
            (None, _) => (
                format!(
                    "SELECT {} FROM {}",
                    select.join(", "),
                    Backticks.model_from(model)
                ),
                None,
            ),
            (Some(d), Some(k)) => {
                let hashed: Vec<String> = match d.fingerprint {
                    Some(f) => f
                        .columns
                        .iter()
                        .map(|c| {
                            let i = position(c)?;
                            Ok(snapshot::hashed(
                                &format!("q.{}", Backticks.quote_ident(c)),
                                columns[i].decode,
                            ))
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
        let shape = Arc::new(Shape {
            names: columns.iter().map(|c| c.name.clone()).collect(),
            decode: columns.iter().map(|c| c.decode).collect(),
            offset: self.offset,
            zero_dates: columns.iter().map(|_| Default::default()).collect(),
        });
        self.run(conn, sql, move |mut values| {
            let diff =
                diff_at.map(|(at, empty)| Box::new(snapshot::diff_of(&mut values, at, empty)));
            let key = match key_at {
                Some(i) => text_of(std::mem::replace(&mut values[i], My::NULL)),
                None => None,
            };
            values.truncate(shape.decode.len());
            let Some((salt, cols)) = &fingerprint else {
                let (decoded, unreadable) = shape.decode(&values);
                let mut row = Row::new(key, decoded).with_unreadable(unreadable);
                row.diff = diff;
                return Ok(row);
            };
            let mut h = Xxh3::new();
            h.update(salt.as_bytes());
            for &i in cols {
                hash_value(&mut h, &values[i]);
            }
            let mut row = Row::undecoded(
                key,
                h.digest(),
                Box::new(Undecoded {
                    values,
                    shape: shape.clone(),
                }),
            );
            row.diff = diff;
            Ok(row)
        })
        .await
    }

    fn computes_fingerprints(&self) -> bool {
        true
    }

    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let conn = self.reading().await?;
        let k = Backticks.quote_ident(key);
        let sql = format!(
            "SELECT CAST(m.{k} AS CHAR) FROM {} WHERE m.{k} IS NOT NULL GROUP BY m.{k} HAVING count(*) > 1",
            Backticks.model_from(model)
        );
        self.run(conn, sql, |mut v| {
            Ok(Row::new(
                text_of(std::mem::replace(&mut v[0], My::NULL)),
                Vec::new(),
            ))
        })
        .await
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let conn = self.reading().await?;
        let sql = format!(
            "SELECT CAST(m.{} AS CHAR) FROM {}",
            Backticks.quote_ident(key),
            Backticks.model_from(model)
        );
        self.run(conn, sql, |mut v| {
            Ok(Row::new(
                text_of(std::mem::replace(&mut v[0], My::NULL)),
                Vec::new(),
            ))
        })
        .await
    }

    crate::snapshot_calls!(MySource);
    crate::writeback_calls!(MySource);
}

/// A column as read: its name, type and how it is decoded.
struct ColumnInfo {
    name: String,
    type_name: String,
    decode: Decode,
}

impl MySource {
    /// The `sslmode` in effect.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    async fn connect(&self) -> Result<Conn, SourceError> {
        // A name that leads to a link-local address (a cloud metadata service) is never
        // connected to.
        if let Err(e) =
            sallyport_core::net::resolve_reachable(self.opts.ip_or_hostname(), self.opts.tcp_port())
                .await
        {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(SourceError::Connect(e.to_string()));
            }
        }
        let failed = |e: mysql_async::Error| {
            SourceError::Connect(explain(
                &crate::postgres::redact_connect_error(&e.to_string(), &self.url),
                self.mode,
            ))
        };
        let attempt = |opts: Opts| async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
                Ok(r) => r,
                Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the server did not answer within 10 s",
                    ),
                ))),
            }
        };
        match attempt(self.opts.clone()).await {
            Ok(c) => Ok(c),
            // `verify-ca`: the driver's own skipping of the name check does not recognise the
            // TLS library's current error, so the handshake is made again under the name the
            // certificate does carry; the chain is still checked against the trusted roots.
            Err(e) if self.mode == SslMode::VerifyCa && certificate_name(&e).is_some() => {
                let name = certificate_name(&e).unwrap_or_default();
                let ssl = self
                    .opts
                    .ssl_opts()
                    .cloned()
                    .map(|s| s.with_danger_tls_hostname_override(Some(name)));
                attempt(
                    OptsBuilder::from_opts(self.opts.clone())
                        .ssl_opts(ssl)
                        .into(),
                )
                .await
                .map_err(failed)
            }
            // `prefer`: a server without TLS is read without it.
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if self.plain.is_some() => {
                attempt(self.plain.clone().unwrap_or_else(|| self.opts.clone()))
                    .await
                    .map_err(failed)
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// A connection for one read: times in UTC, no write possible, patient with a reader that
    /// waits on Customer.io's rate limit.
    async fn reading(&self) -> Result<Conn, SourceError> {
        let mut conn = self.connect().await?;
        conn.query_drop(
            "SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 86400, SESSION net_read_timeout = 86400",
        )
        .await
        .map_err(query_error)?;
        if let Some(t) = self.statement_timeout {
            // MariaDB's name, then MySQL's.
            let secs = t.as_secs_f64().max(0.001);
            if conn
                .query_drop(format!("SET SESSION max_statement_time = {secs}"))
                .await
                .is_err()
            {
                let _ = conn
                    .query_drop(format!(
                        "SET SESSION max_execution_time = {}",
                        t.as_millis().max(1)
                    ))
                    .await;
            }
        }
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(query_error)?;
        Ok(conn)
    }

    async fn columns(
        &self,
        conn: &mut Conn,
        model: &Model,
    ) -> Result<Vec<ColumnInfo>, SourceError> {
        let stmt = conn
            .prep(format!("SELECT * FROM {}", Backticks.model_from(model)))
            .await
            .map_err(query_error)?;
        let json = json_columns(conn, model).await;
        let columns = stmt
            .columns()
            .iter()
            .map(|c| {
                let name = c.name_str().to_string();
                let (type_name, mut decode) = kind_of(c);
                if decode == Decode::Text && json.contains(&name) {
                    decode = Decode::Json;
                }
                ColumnInfo {
                    name,
                    type_name: if decode == Decode::Json {
                        "json".into()
                    } else {
                        type_name.to_string()
                    },
                    decode,
                }
            })
            .collect();
        let _ = conn.close(stmt).await;
        Ok(columns)
    }

    async fn run<F>(
        &self,
        mut conn: Conn,
        sql: String,
        convert: F,
    ) -> Result<RowStream, SourceError>
    where
        F: Fn(Vec<My>) -> Result<Row, SourceError> + Send + 'static,
    {
        let stmt = conn.prep(&sql).await.map_err(query_error)?;
        let (tx, rx) = mpsc::channel(4);
        crate::spawn_reader(tx.clone(), async move {
            let mut result = match conn.exec_iter(&stmt, ()).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(query_error(e))).await;
                    return;
                }
            };
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            loop {
                let row = match result.next().await {
                    Ok(Some(row)) => row,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(query_error(e))).await;
                        return;
                    }
                };
                match convert(row.unwrap()) {
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
            drop(result);
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            if let Err(e) = conn.query_drop("COMMIT").await {
                let _ = tx.send(Err(query_error(e))).await;
            }
            let _ = conn.disconnect().await;
        });
        Ok(rx)
    }
}

/// The DNS name a server's certificate is for, from a name-mismatch error.
fn certificate_name(e: &mysql_async::Error) -> Option<String> {
    let text = e.to_string();
    if !text.contains("not valid for name") {
        return None;
    }
    // The first name the certificate carries; a wildcard stands for any one label.
    let names: Vec<&str> = text
        .split("DnsName(\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .collect();
    let name = names
        .iter()
        .find(|n| !n.starts_with("*."))
        .or(names.first())?;
    Some(match name.strip_prefix("*.") {
        Some(rest) => format!("sallyport.{rest}"),
        None => name.to_string(),
    })
}

fn query_error(e: mysql_async::Error) -> SourceError {
    match e {
        mysql_async::Error::Server(s) => SourceError::Query(s.message),
        other => SourceError::Query(other.to_string()),
    }
}

/// MariaDB keeps JSON columns as `LONGTEXT` with a `json_valid` check: for a table model, the
/// columns that have one. (MySQL's JSON type says so itself.)
async fn json_columns(conn: &mut Conn, model: &Model) -> Vec<String> {
    let Model::Table(t) = model else {
        return Vec::new();
    };
    let (schema, table) = match t.split_once('.') {
        Some((s, n)) => (Some(s.to_string()), n.to_string()),
        None => (None, t.clone()),
    };
    let found: Result<Vec<String>, _> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
             WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            (schema, table),
        )
        .await;
    found
        .unwrap_or_default()
        .into_iter()
        .filter_map(|clause| {
            let rest = clause.trim().strip_prefix("json_valid(`")?;
            let name = rest.strip_suffix("`)")?;
            Some(name.replace("``", "`"))
        })
        .collect()
}

/// A column's type name and how it is read.
fn kind_of(c: &mysql_async::Column) -> (&'static str, Decode) {
    use ColumnType::*;
    let binary = c.character_set() == 63;
    let flags = c.flags();
    match c.column_type() {
        MYSQL_TYPE_TINY if c.column_length() == 1 => ("tinyint(1)", Decode::Bool),
        MYSQL_TYPE_TINY => ("tinyint", Decode::Number),
        MYSQL_TYPE_SHORT => ("smallint", Decode::Number),
        MYSQL_TYPE_INT24 => ("mediumint", Decode::Number),
        MYSQL_TYPE_LONG => ("int", Decode::Number),
        MYSQL_TYPE_LONGLONG => ("bigint", Decode::Number),
        MYSQL_TYPE_YEAR => ("year", Decode::Number),
        MYSQL_TYPE_FLOAT => ("float", Decode::Number),
        MYSQL_TYPE_DOUBLE => ("double", Decode::Number),
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => ("decimal", Decode::Decimal),
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ("date", Decode::Utc),
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => ("datetime", Decode::DateTime),
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => ("timestamp", Decode::Utc),
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => ("time", Decode::Time),
        MYSQL_TYPE_JSON => ("json", Decode::Json),
        MYSQL_TYPE_BIT => ("bit", Decode::Unsupported("a BIT value")),
        MYSQL_TYPE_GEOMETRY => ("geometry", Decode::Unsupported("a spatial value")),
        MYSQL_TYPE_ENUM => ("enum", Decode::Text),
        MYSQL_TYPE_SET => ("set", Decode::Text),
        _ if flags.contains(ColumnFlags::ENUM_FLAG) => ("enum", Decode::Text),
        _ if flags.contains(ColumnFlags::SET_FLAG) => ("set", Decode::Text),
        MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB | MYSQL_TYPE_BLOB => {
            if binary {
                ("blob", Decode::Unsupported("binary data"))
            } else {
                ("text", Decode::Text)
            }
        }
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            if binary {
                ("varbinary", Decode::Unsupported("binary data"))
            } else {
                ("varchar", Decode::Text)
            }
        }
        MYSQL_TYPE_STRING => {
            if binary {
                ("binary", Decode::Unsupported("binary data"))
            } else {
                ("char", Decode::Text)
            }
        }
        MYSQL_TYPE_NULL => ("null", Decode::Text),
        _ => ("unknown", Decode::Unsupported("a value of an unknown type")),
    }
}

/// A value's text, as `CAST(... AS CHAR)` gives it.
fn text_of(v: My) -> Option<String> {
    match v {
        My::NULL => None,
        My::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        My::Int(i) => Some(i.to_string()),
        My::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

fn hash_value(h: &mut Xxh3, v: &My) {
    match v {
        My::NULL => h.update(&[0xff, 0xff, 0xff, 0xff, 0xff]),
        My::Bytes(b) => {
            h.update(&[1]);
            h.update(&(b.len() as u32).to_le_bytes());
            h.update(b);
        }
        My::Int(i) => {
            h.update(&[2]);
            h.update(&i.to_le_bytes());
        }
        My::UInt(u) => {
            h.update(&[3]);
            h.update(&u.to_le_bytes());
        }
        My::Float(f) => {
            h.update(&[4]);
            h.update(&f.to_le_bytes());
        }
        My::Double(f) => {
            h.update(&[5]);
            h.update(&f.to_le_bytes());
        }
        My::Date(y, mo, d, hh, mi, s, us) => {
            h.update(&[6]);
            h.update(&y.to_le_bytes());
            h.update(&[*mo, *d, *hh, *mi, *s]);
            h.update(&us.to_le_bytes());
        }
        My::Time(neg, d, hh, mi, s, us) => {
            h.update(&[7, u8::from(*neg)]);
            h.update(&d.to_le_bytes());
            h.update(&[*hh, *mi, *s]);
            h.update(&us.to_le_bytes());
        }
    }
}

/// What a model's rows look like: enough to decode them.
struct Shape {
    names: Vec<String>,
    decode: Vec<Decode>,
    offset: i32,
    /// Per column: whether its zero dates were already warned about (once per read).
    zero_dates: Vec<std::sync::atomic::AtomicBool>,
}

impl Shape {
    fn decode(&self, values: &[My]) -> (Vec<Value>, Vec<Unreadable>) {
        let mut out = Vec::with_capacity(values.len());
        let mut unreadable = Vec::new();
        for (i, (v, d)) in values.iter().zip(&self.decode).enumerate() {
            if matches!(v, My::Date(0, 0, 0, ..))
                && !self.zero_dates[i].swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    column = %self.names[i],
                    "the column holds zero dates (0000-00-00), MySQL's stand-in for no date: they are sent as null"
                );
            }
            match convert(v, *d, self.offset) {
                Ok(v) => out.push(v),
                Err(reason) => {
                    unreadable.push(Unreadable {
                        index: i,
                        column: self.names[i].clone(),
                        reason,
                    });
                    out.push(Value::Null);
                }
            }
        }
        (out, unreadable)
    }
}

struct Undecoded {
    values: Vec<My>,
    shape: Arc<Shape>,
}

impl crate::Undecoded for Undecoded {
    fn decode(&self) -> Result<Vec<Value>, SourceError> {
        Ok(self.shape.decode(&self.values).0)
    }

    fn decode_all(&self) -> Result<(Vec<Value>, Vec<Unreadable>), SourceError> {
        Ok(self.shape.decode(&self.values))
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// One value in the form Customer.io wants, or why it cannot be sent.
fn convert(v: &My, d: Decode, offset: i32) -> Result<Value, String> {
    if let (Decode::Unsupported(what), false) = (d, matches!(v, My::NULL)) {
        return Err(format!(
            "{what} cannot be sent to Customer.io: leave the column out of the mapping (exclude it) or convert it in the model's SQL"
        ));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(match (v, d) {
        (My::NULL, _) => Value::Null,
        (My::Int(i), Decode::Bool) => Value::Bool(*i != 0),
        (My::UInt(u), Decode::Bool) => Value::Bool(*u != 0),
        (My::Int(i), _) => Value::from(*i),
        (My::UInt(u), _) => Value::from(*u),
        (My::Float(f), _) => float(*f as f64),
        (My::Double(f), _) => float(*f),
        (My::Bytes(b), Decode::Decimal) => decimal_value(&text(b)),
        (My::Bytes(b), Decode::Json) => {
            serde_json::from_slice(b).unwrap_or_else(|_| Value::String(text(b)))
        }
        (My::Bytes(b), Decode::Number) => {
            let t = text(b);
            t.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| decimal_value(&t))
        }
        (My::Bytes(b), _) => Value::String(text(b)),
        (My::Date(y, mo, da, h, mi, s, _), _) => {
            if *y == 0 && *mo == 0 && *da == 0 {
                // A zero date: MySQL's stand-in for "no date".
                return Ok(Value::Null);
            }
            let Some(dt) = chrono::NaiveDate::from_ymd_opt(*y as i32, *mo as u32, *da as u32)
                .and_then(|date| date.and_hms_opt(*h as u32, *mi as u32, *s as u32))
            else {
                return Err(format!(
                    "{y:04}-{mo:02}-{da:02} {h:02}:{mi:02}:{s:02} is not a calendar date"
                ));
            };
            let secs = dt.and_utc().timestamp();
            Value::from(if d == Decode::DateTime {
                secs - offset as i64
            } else {
                secs
            })
        }
        (My::Time(neg, days, h, mi, s, _), _) => Value::String(format!(
            "{}{:02}:{mi:02}:{s:02}",
            if *neg { "-" } else { "" },
            *days * 24 + *h as u32
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_customerio_values() {
        assert_eq!(convert(&My::Int(1), Decode::Bool, 0), Ok(Value::Bool(true)));
        assert_eq!(
            convert(&My::Bytes(b"12.50".to_vec()), Decode::Decimal, 0),
            Ok(serde_json::json!(12.5))
        );
        assert_eq!(
            convert(&My::Date(1970, 1, 2, 0, 0, 0, 0), Decode::Utc, 0),
            Ok(serde_json::json!(86_400))
        );
        // A DATETIME written in +02:00 is two hours earlier in UTC.
        assert_eq!(
            convert(&My::Date(1970, 1, 1, 2, 0, 0, 0), Decode::DateTime, 7200),
            Ok(serde_json::json!(0))
        );
        assert_eq!(
            convert(&My::Date(0, 0, 0, 0, 0, 0, 0), Decode::DateTime, 0),
            Ok(Value::Null)
        );
        assert_eq!(
            convert(&My::Time(true, 1, 2, 3, 4, 0), Decode::Time, 0),
            Ok(serde_json::json!("-26:03:04"))
        );
        let e = convert(
            &My::Bytes(vec![0, 1]),
            Decode::Unsupported("binary data"),
            0,
        )
        .unwrap_err();
        assert!(e.contains("binary data") && e.contains("exclude"), "{e}");
        assert_eq!(Backticks.quote_ident("a`b"), "`a``b`");
    }

    #[test]
    fn datetime_zones() {
        let s = |tz: &str| Settings {
            timezone: Some(tz.into()),
            ..Settings::url("mysql://h/db")
        };
        assert_eq!(s("+02:00").utc_offset(), Ok(7200));
        assert_eq!(s("-05:30").utc_offset(), Ok(-19800));
        assert_eq!(s("UTC").utc_offset(), Ok(0));
        assert!(s("Europe/Paris")
            .utc_offset()
            .unwrap_err()
            .contains("+02:00"));
    }
}
