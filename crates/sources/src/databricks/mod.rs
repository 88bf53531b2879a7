//! Databricks SQL through the SQL Statement Execution API 2.0: a statement is submitted
//! (`POST /api/2.0/sql/statements`), polled until it is done, and its result read chunk by chunk
//! (`GET .../result/chunks/{n}`), inline or from the presigned links of `EXTERNAL_LINKS` (fetched
//! without the workspace's token), one chunk in memory at a time. A read that is dropped (a run
//! stopped, Ctrl-C) cancels its statement.
//!
//! Results are `JSON_ARRAY`: every value is a string or null, converted by the column's type
//! (`type_name` of the manifest). Rows are fingerprinted over those strings before conversion.

mod settings;

use std::sync::Arc;
use std::time::Duration;

use sallyport_core::Model;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

pub use settings::{Settings, FIELDS};

use crate::{
    decimal_value, parse_datetime, Backticks, Column, Dialect, ReadSpec, Row, RowStream,
    SourceError, Unreadable, Warehouse, CHUNK_ROWS,
};

/// A statement's answer, in the shape the API documents.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct Statement {
    #[serde(default)]
    statement_id: String,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    manifest: Option<Manifest>,
    #[serde(default)]
    result: Option<Chunk>,
}

#[derive(Debug, Deserialize, Default)]
struct Status {
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize, Default)]
struct Manifest {
    #[serde(default)]
    schema: Schema,
    #[serde(default)]
    total_chunk_count: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
struct Schema {
    #[serde(default)]
    columns: Vec<ApiColumn>,
}

#[derive(Debug, Deserialize)]
struct ApiColumn {
    name: String,
    #[serde(default)]
    type_name: String,
    #[serde(default)]
    type_text: Option<String>,
}

/// One chunk of a result: its rows inline, or links to them.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct Chunk {
    #[serde(default)]
    chunk_index: Option<u64>,
    #[serde(default)]
    data_array: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    external_links: Option<Vec<ExternalLink>>,
    #[serde(default)]
    next_chunk_index: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ExternalLink {
    external_link: String,
    #[serde(default)]
    next_chunk_index: Option<u64>,
    /// Headers the download must carry (such as a decryption key); never logged.
    #[serde(default)]
    http_headers: std::collections::BTreeMap<String, String>,
}

/// How a column's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decode {
    Bool,
    Int,
    Float,
    Decimal,
    Text,
    Json,
    Time,
    Unsupported(&'static str),
}

/// How a column of this Databricks SQL type (`type_name` of the manifest) is read.
pub(crate) fn decode_of(type_name: &str) -> Decode {
    match type_name.to_ascii_uppercase().as_str() {
        "BOOLEAN" => Decode::Bool,
        "BYTE" | "SHORT" | "INT" | "LONG" => Decode::Int,
        "FLOAT" | "DOUBLE" => Decode::Float,
        "DECIMAL" => Decode::Decimal,
        "DATE" | "TIMESTAMP" | "TIMESTAMP_NTZ" => Decode::Time,
        "ARRAY" | "STRUCT" | "MAP" | "VARIANT" => Decode::Json,
        "BINARY" => Decode::Unsupported("binary data"),
        _ => Decode::Text,
    }
}

/// A value's text in the form Customer.io wants, or why it cannot be sent.
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
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
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
        Decode::Decimal => decimal_value(t),
        Decode::Json => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
        Decode::Time => parse_datetime(t)
            .map(Value::from)
            .ok_or_else(|| bad("a date or time"))?,
        Decode::Text => Value::String(t.to_string()),
    })
}

struct Api {
    http: reqwest::Client,
    /// Presigned links are fetched without the workspace's token.
    links: reqwest::Client,
    base: String,
    settings: Settings,
    /// Whether the workspace serves `EXTERNAL_LINKS` (set after the first answer says it does
    /// not).
    inline_only: std::sync::atomic::AtomicBool,
    deadline: Option<Duration>,
}

pub struct DatabricksSource {
    api: Arc<Api>,
}

fn failed(context: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Connect(format!("{context}: {e}"))
}

impl Api {
    fn new(settings: &Settings, deadline: Option<Duration>) -> Result<Api, SourceError> {
        let host = crate::api_base(&settings.host, "host")?;
        let build = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(300))
                .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| failed("an HTTP client", e))
        };
        Ok(Api {
            http: build()?,
            links: build()?,
            base: host,
            settings: settings.clone(),
            inline_only: Default::default(),
            deadline,
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, SourceError> {
        let resp = req
            .bearer_auth(self.settings.token.expose())
            .send()
            .await
            .map_err(|e| failed(&format!("Databricks at {} did not answer", self.base), e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        let code = body.get("error_code").and_then(Value::as_str).unwrap_or("");
        Err(match status.as_u16() {
            401 | 403 => SourceError::Connect(format!(
                "Databricks refused the token ({status}{}{code}): {message}",
                if code.is_empty() { "" } else { ", " }
            )),
            _ => SourceError::Query(format!("Databricks answered {status} {code}: {message}")),
        })
    }

    /// Submits `sql` and waits until it is done: its manifest and first chunk.
    async fn execute(&self, sql: &str) -> Result<Statement, SourceError> {
        let inline = self.inline_only.load(std::sync::atomic::Ordering::Relaxed);
        let mut body = json!({
            "warehouse_id": self.settings.warehouse_id,
            "statement": sql,
            "wait_timeout": "30s",
            "on_wait_timeout": "CONTINUE",
            "format": "JSON_ARRAY",
            "disposition": if inline { "INLINE" } else { "EXTERNAL_LINKS" },
        });
        if let Some(c) = &self.settings.catalog {
            body["catalog"] = json!(c);
        }
        if let Some(s) = &self.settings.schema {
            body["schema"] = json!(s);
        }
        let url = format!("{}/api/2.0/sql/statements", self.base);
        let answer = match self.call(self.http.post(&url).json(&body)).await {
            Err(SourceError::Query(m)) if !inline && m.contains("INLINE") => {
                // A workspace (or stand-in) that serves results inline only.
                self.inline_only
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                body["disposition"] = json!("INLINE");
                self.call(self.http.post(&url).json(&body)).await?
            }
            other => other?,
        };
        let mut statement: Statement = serde_json::from_value(answer).map_err(|e| {
            SourceError::Query(format!("an answer not in the documented shape: {e}"))
        })?;
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        while matches!(statement.status.state.as_str(), "PENDING" | "RUNNING") {
            if self.deadline.is_some_and(|d| started.elapsed() > d) {
                self.cancel(&statement.statement_id).await;
                return Err(SourceError::Query(format!(
                    "the statement ran past its time limit ({:?}) and was cancelled",
                    self.deadline.unwrap_or_default()
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let answer = self
                .call(self.http.get(format!(
                    "{}/api/2.0/sql/statements/{}",
                    self.base, statement.statement_id
                )))
                .await?;
            statement = serde_json::from_value(answer).map_err(|e| {
                SourceError::Query(format!("an answer not in the documented shape: {e}"))
            })?;
        }
        match statement.status.state.as_str() {
            "SUCCEEDED" => Ok(statement),
            state => {
                let e = statement.status.error.as_ref();
                Err(SourceError::Query(format!(
                    "the statement {}{}: {}",
                    state.to_ascii_lowercase(),
                    e.and_then(|e| e.error_code.as_deref())
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default(),
                    e.map(|e| e.message.as_str()).unwrap_or("no reason given")
                )))
            }
        }
    }

    async fn cancel(&self, id: &str) {
        let _ = self
            .call(
                self.http
                    .post(format!("{}/api/2.0/sql/statements/{id}/cancel", self.base)),
            )
            .await;
    }

    async fn chunk(&self, id: &str, index: u64) -> Result<Chunk, SourceError> {
        let answer = self
            .call(self.http.get(format!(
                "{}/api/2.0/sql/statements/{id}/result/chunks/{index}",
                self.base
            )))
            .await?;
        serde_json::from_value(answer)
            .map_err(|e| SourceError::Query(format!("a chunk not in the documented shape: {e}")))
    }

    /// A chunk's rows: inline, or downloaded from its links.
    async fn rows(&self, chunk: &mut Chunk) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        if let Some(rows) = chunk.data_array.take() {
            return Ok(rows);
        }
        let mut out = Vec::new();
        for link in chunk.external_links.take().unwrap_or_default() {
            let mut req = self.links.get(&link.external_link);
            for (k, v) in &link.http_headers {
                req = req.header(k, v);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| SourceError::Query(format!("a result chunk did not download: {e}")))?;
            if !resp.status().is_success() {
                return Err(SourceError::Query(format!(
                    "a result chunk did not download: {} (its link may have expired)",
                    resp.status()
                )));
            }
            let rows: Vec<Vec<Option<String>>> = resp.json().await.map_err(|e| {
                SourceError::Query(format!("a result chunk is not a JSON array of rows: {e}"))
            })?;
            out.extend(rows);
            // The last link says which chunk comes next.
            if link.next_chunk_index.is_some() {
                chunk.next_chunk_index = link.next_chunk_index;
            }
        }
        Ok(out)
    }
}

impl Warehouse for DatabricksSource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let api = Api::new(settings, options.statement_timeout)?;
        // A statement every SQL warehouse answers (and the stand-in, which takes no literal).
        api.execute("SELECT current_date()").await?;
        Ok(DatabricksSource { api: Arc::new(api) })
    }

    fn dialect(&self) -> &dyn Dialect {
        &Backticks
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        let s = self
            .api
            .execute(&format!(
                "SELECT * FROM {} LIMIT 0",
                Backticks.model_from(model)
            ))
            .await?;
        Ok(columns_of(&s)
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                type_name: c.type_text.clone().unwrap_or_else(|| c.type_name.clone()),
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
            .map(|c| format!("m.{}", Backticks.quote_ident(&c.name)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            Backticks.model_from(model)
        );
        let statement = self.api.execute(&sql).await?;
        let shape = Arc::new(Shape {
            names: columns.iter().map(|c| c.name.clone()).collect(),
            decode: columns_of(&statement)
                .iter()
                .map(|c| decode_of(&c.type_name))
                .collect(),
        });
        self.stream(statement, move |cells| {
            let key = key_at.and_then(|i| cells.get(i).cloned().flatten());
            let Some((salt, cols)) = &fingerprint else {
                let (values, unreadable) = shape.decode(&cells);
                return Row::new(key, values).with_unreadable(unreadable);
            };
            let mut h = Xxh3::new();
            h.update(salt.as_bytes());
            for &i in cols {
                match cells.get(i).and_then(|c| c.as_deref()) {
                    Some(t) => {
                        h.update(&(t.len() as u32).to_le_bytes());
                        h.update(t.as_bytes());
                    }
                    None => h.update(&[0xff, 0xff, 0xff, 0xff, 0xff]),
                }
            }
            Row::undecoded(
                key,
                h.digest(),
                Box::new(Undecoded {
                    cells,
                    shape: shape.clone(),
                }),
            )
        })
    }

    fn computes_fingerprints(&self) -> bool {
        true
    }

    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let k = Backticks.quote_ident(key);
        let statement = self
            .api
            .execute(&format!(
                "SELECT m.{k} FROM {} WHERE m.{k} IS NOT NULL GROUP BY m.{k} HAVING count(*) > 1",
                Backticks.model_from(model)
            ))
            .await?;
        self.stream(statement, |cells| {
            Row::new(cells.into_iter().next().flatten(), Vec::new())
        })
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let statement = self
            .api
            .execute(&format!(
                "SELECT m.{} FROM {}",
                Backticks.quote_ident(key),
                Backticks.model_from(model)
            ))
            .await?;
        self.stream(statement, |cells| {
            Row::new(cells.into_iter().next().flatten(), Vec::new())
        })
    }
}

fn columns_of(s: &Statement) -> &[ApiColumn] {
    s.manifest
        .as_ref()
        .map(|m| m.schema.columns.as_slice())
        .unwrap_or_default()
}

impl DatabricksSource {
    /// Streams a finished statement's rows, chunk after chunk.
    fn stream<F>(&self, statement: Statement, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(Vec<Option<String>>) -> Row + Send + 'static,
    {
        let api = self.api.clone();
        let (tx, rx) = mpsc::channel(4);
        crate::spawn_reader(tx.clone(), async move {
            let id = statement.statement_id.clone();
            let total = statement
                .manifest
                .as_ref()
                .and_then(|m| m.total_chunk_count);
            let mut chunk = statement.result.unwrap_or_default();
            let mut index = chunk.chunk_index.unwrap_or(0);
            loop {
                let rows = match api.rows(&mut chunk).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for part in rows.chunks(CHUNK_ROWS) {
                    let converted: Vec<Row> = part.iter().cloned().map(&convert).collect();
                    if tx.send(Ok(converted)).await.is_err() {
                        // Nobody reads any more (the run stopped): the statement is cancelled.
                        api.cancel(&id).await;
                        return;
                    }
                }
                // The next chunk: as the chunk says, or by count where it does not.
                let next = chunk
                    .next_chunk_index
                    .or_else(|| total.and_then(|t| (index + 1 < t).then_some(index + 1)));
                let Some(next) = next else { return };
                chunk = match api.chunk(&id, next).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                index = chunk.chunk_index.unwrap_or(next);
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
    fn decode(&self, cells: &[Option<String>]) -> (Vec<Value>, Vec<Unreadable>) {
        let mut values = Vec::with_capacity(self.decode.len());
        let mut unreadable = Vec::new();
        for (i, d) in self.decode.iter().enumerate() {
            match convert(cells.get(i).and_then(|c| c.as_deref()), *d) {
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
    cells: Vec<Option<String>>,
    shape: Arc<Shape>,
}

impl crate::Undecoded for Undecoded {
    fn decode(&self) -> Result<Vec<Value>, SourceError> {
        Ok(self.shape.decode(&self.cells).0)
    }

    fn decode_all(&self) -> Result<(Vec<Value>, Vec<Unreadable>), SourceError> {
        Ok(self.shape.decode(&self.cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as the API's `JSON_ARRAY` format writes them (every value a string).
    #[test]
    fn json_array_values_become_customerio_values() {
        let c = |t: &str, ty: &str| convert(Some(t), decode_of(ty)).unwrap();
        assert_eq!(c("true", "BOOLEAN"), json!(true));
        assert_eq!(c("-7", "LONG"), json!(-7));
        assert_eq!(c("2.5", "DOUBLE"), json!(2.5));
        assert_eq!(c("12.50", "DECIMAL"), json!(12.5));
        assert_eq!(c("2024-01-02", "DATE"), json!(1704153600));
        assert_eq!(
            c("2024-01-02T03:04:05.000Z", "TIMESTAMP"),
            json!(1704164645)
        );
        assert_eq!(
            c("2024-01-02T03:04:05.000", "TIMESTAMP_NTZ"),
            json!(1704164645)
        );
        assert_eq!(c("[1,2]", "ARRAY"), json!([1, 2]));
        assert_eq!(c("{\"a\":{\"b\":1}}", "STRUCT"), json!({"a": {"b": 1}}));
        assert_eq!(c("{\"k\":1}", "MAP"), json!({"k": 1}));
        assert_eq!(c("x", "STRING"), json!("x"));
        assert_eq!(convert(None, Decode::Int).unwrap(), Value::Null);
        let e = convert(Some("AAE="), decode_of("BINARY")).unwrap_err();
        assert!(e.contains("binary data") && e.contains("exclude"), "{e}");
        assert_eq!(Backticks.quote_ident("a`b"), "`a``b`");
    }
}
