//! SQLite: the embedded warehouse. Each read opens its own read-only connection on a thread of
//! its own and hands rows over in chunks. Columns declared as dates or times hold text (or Unix
//! seconds) and are sent as Unix seconds; columns declared JSON are sent as JSON; BOOLEAN as
//! true/false.

mod settings;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use sallyport_core::Model;
use serde_json::Value;
use tokio::sync::mpsc;

pub use settings::{Settings, FIELDS};

use crate::{
    parse_datetime, AnsiQuotes, Column, Dialect, ReadSpec, Row, RowStream, SourceError, Warehouse,
    CHUNK_ROWS,
};

pub struct SqliteSource {
    path: String,
    /// The longest one statement may run: SQLite is interrupted past it.
    timeout: Option<std::time::Duration>,
}

fn quote_ident(name: &str) -> String {
    AnsiQuotes.quote_ident(name)
}

fn model_from(model: &Model) -> String {
    AnsiQuotes.model_from(model)
}

impl Warehouse for SqliteSource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let s = Self {
            path: settings.path.clone(),
            timeout: options.statement_timeout,
        };
        s.connect()?;
        Ok(s)
    }

    fn dialect(&self) -> &dyn Dialect {
        &AnsiQuotes
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        self.columns(model)
    }

    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        self.stream(model, spec.key)
    }

    fn computes_fingerprints(&self) -> bool {
        false
    }

    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        self.find_duplicates(model, key)
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        self.key_rows(model, key)
    }
}

#[derive(Debug, Clone, Copy)]
enum Decl {
    Plain,
    Bool,
    Time,
    Json,
}

fn decl_of(t: Option<&str>) -> Decl {
    let t = t.unwrap_or_default().to_ascii_uppercase();
    if t.contains("BOOL") {
        Decl::Bool
    } else if t.contains("DATE") || t.contains("TIME") {
        Decl::Time
    } else if t.contains("JSON") {
        Decl::Json
    } else {
        Decl::Plain
    }
}

fn query_error(e: rusqlite::Error) -> SourceError {
    SourceError::Query(e.to_string())
}

impl SqliteSource {
    fn connect(&self) -> Result<Connection, SourceError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SourceError::Connect(format!("{}: {e}", self.path)))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(query_error)?;
        if let Some(t) = self.timeout {
            // Each connection serves one statement: past its time, SQLite is told to stop (a
            // connection closed by then is left alone).
            let handle = conn.get_interrupt_handle();
            let _ = std::thread::Builder::new()
                .name("sqlite-deadline".into())
                .spawn(move || {
                    std::thread::sleep(t);
                    handle.interrupt();
                });
        }
        Ok(conn)
    }

    fn columns(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        let conn = self.connect()?;
        let stmt = conn
            .prepare(&format!("SELECT * FROM {}", model_from(model)))
            .map_err(query_error)?;
        Ok(stmt
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                type_name: c.decl_type().unwrap_or("").to_string(),
            })
            .collect())
    }

    fn stream(&self, model: &Model, key: Option<&str>) -> Result<RowStream, SourceError> {
        let columns = self.columns(model)?;
        if let Some(k) = key {
            if !columns.iter().any(|c| c.name == k) {
                return Err(SourceError::NoColumn(k.to_string()));
            }
        }
        let decls: Vec<Decl> = columns
            .iter()
            .map(|c| decl_of(Some(&c.type_name)))
            .collect();
        let mut select: Vec<String> = columns
            .iter()
            .map(|c| format!("m.{}", quote_ident(&c.name)))
            .collect();
        if let Some(k) = key {
            select.push(format!("CAST(m.{} AS TEXT)", quote_ident(k)));
        }
        let sql = format!("SELECT {} FROM {}", select.join(", "), model_from(model));
        let with_key = key.is_some();
        self.run(sql, move |row| {
            let mut values = Vec::with_capacity(decls.len());
            for (i, d) in decls.iter().enumerate() {
                values.push(convert(row.get_ref(i).map_err(query_error)?, *d));
            }
            let key = if with_key {
                row.get::<_, Option<String>>(decls.len())
                    .map_err(query_error)?
            } else {
                None
            };
            Ok(Row::new(key, values))
        })
    }

    fn key_rows(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let sql = format!(
            "SELECT CAST(m.{} AS TEXT) FROM {}",
            quote_ident(key),
            model_from(model)
        );
        self.run(sql, |row| {
            Ok(Row::new(
                row.get::<_, Option<String>>(0).map_err(query_error)?,
                Vec::new(),
            ))
        })
    }

    fn find_duplicates(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let k = quote_ident(key);
        let sql = format!(
            "SELECT CAST(m.{k} AS TEXT) FROM {} WHERE m.{k} IS NOT NULL GROUP BY 1 HAVING count(*) > 1",
            model_from(model)
        );
        self.run(sql, |row| {
            Ok(Row::new(
                row.get::<_, Option<String>>(0).map_err(query_error)?,
                Vec::new(),
            ))
        })
    }

    fn run<F>(&self, sql: String, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(&rusqlite::Row<'_>) -> Result<Row, SourceError> + Send + 'static,
    {
        let conn = self.connect()?;
        conn.prepare(&sql).map_err(query_error)?;
        let (tx, rx) = mpsc::channel(4);
        std::thread::Builder::new()
            .name("sqlite-reader".into())
            .spawn(move || {
                let failed = tx.clone();
                // A panic ends the stream with an error, never as if the model had been read.
                let read = std::panic::AssertUnwindSafe(move || {
                    let result = (|| -> Result<(), SourceError> {
                        let mut stmt = conn.prepare(&sql).map_err(query_error)?;
                        let mut rows = stmt.query([]).map_err(query_error)?;
                        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
                        while let Some(row) = rows.next().map_err(query_error)? {
                            chunk.push(convert(row)?);
                            if chunk.len() == CHUNK_ROWS {
                                let full =
                                    std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                                if tx.blocking_send(Ok(full)).is_err() {
                                    return Ok(());
                                }
                            }
                        }
                        if !chunk.is_empty() {
                            let _ = tx.blocking_send(Ok(chunk));
                        }
                        Ok(())
                    })();
                    if let Err(e) = result {
                        let _ = tx.blocking_send(Err(e));
                    }
                });
                if std::panic::catch_unwind(read).is_err() {
                    let _ =
                        failed.blocking_send(Err(SourceError::Other(crate::READER_FAILED.into())));
                }
            })
            .map_err(|e| SourceError::Other(format!("cannot start a reader thread: {e}")))?;
        Ok(rx)
    }
}

fn convert(v: ValueRef<'_>, d: Decl) -> Value {
    match (v, d) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), Decl::Bool) => Value::Bool(i != 0),
        (ValueRef::Integer(i), _) => Value::from(i),
        (ValueRef::Real(f), _) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (ValueRef::Text(t), d) => {
            let s = String::from_utf8_lossy(t);
            match d {
                Decl::Time => parse_datetime(&s)
                    .map(Value::from)
                    .unwrap_or_else(|| Value::String(s.into_owned())),
                Decl::Json => {
                    serde_json::from_str(&s).unwrap_or_else(|_| Value::String(s.into_owned()))
                }
                Decl::Bool => match s.to_ascii_lowercase().as_str() {
                    "true" | "t" | "1" => Value::Bool(true),
                    "false" | "f" | "0" => Value::Bool(false),
                    _ => Value::String(s.into_owned()),
                },
                Decl::Plain => Value::String(s.into_owned()),
            }
        }
        (ValueRef::Blob(b), _) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}
