//! Google BigQuery through its REST API: `jobs.query` starts the query, `jobs.getQueryResults`
//! waits for it and reads its result a page at a time (one page in memory), timestamps as
//! integer microseconds (`useInt64Timestamp`). Rows are fingerprinted over their cells as the
//! API sent them, converted only when they are to be sent.

mod auth;
mod settings;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use sallyport_core::Model;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

pub use settings::{Settings, FIELDS};

use crate::{
    decimal_value, parse_datetime, Column, Dialect, ReadSpec, Row, RowStream, SourceError,
    Unreadable, Warehouse, CHUNK_ROWS,
};

/// BigQuery's identifiers: `` `name` ``, with backslashes and backticks escaped by a backslash
/// (a doubled backtick is not an escape there, and a trailing backslash would eat the quote).
pub struct BigQueryQuotes;

impl Dialect for BigQueryQuotes {
    fn quote_ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
    }
}

/// Rows asked for per page (BigQuery also caps a page at 10 MB): a page is held while its rows
/// are sent on; 5,000 kept a sync of 1,000,000 rows under 100 MB (BENCHMARKS.md).
const PAGE_ROWS: u32 = 5_000;

/// A field of a result's schema.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Field {
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fields: Vec<Field>,
}

impl Field {
    fn repeated(&self) -> bool {
        self.mode.as_deref() == Some("REPEATED")
    }

    /// The type as people write it: `INT64`, `ARRAY<STRING>`, `STRUCT<...>`.
    fn type_name(&self) -> String {
        let base = match self.kind.as_str() {
            "INTEGER" => "INT64".to_string(),
            "FLOAT" => "FLOAT64".to_string(),
            "BOOLEAN" => "BOOL".to_string(),
            "RECORD" | "STRUCT" => format!(
                "STRUCT<{}>",
                self.fields
                    .iter()
                    .map(|f| format!("{} {}", f.name, f.type_name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        };
        if self.repeated() {
            format!("ARRAY<{base}>")
        } else {
            base
        }
    }
}

/// The value in a `{"v": ...}` cell of an array or a record.
fn inner(cell: &Value) -> &Value {
    cell.get("v").unwrap_or(&Value::Null)
}

/// One cell's value (what its `v` holds) in the form Customer.io wants, or why it cannot be
/// sent.
pub(crate) fn convert(v: &Value, f: &Field) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if f.repeated() {
        let element = Field {
            mode: None,
            ..f.clone()
        };
        let items = v.as_array().cloned().unwrap_or_default();
        return items
            .iter()
            .map(|c| convert(inner(c), &element))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if matches!(f.kind.as_str(), "RECORD" | "STRUCT") {
        let cells = v
            .get("f")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = serde_json::Map::new();
        for (sub, c) in f.fields.iter().zip(cells.iter()) {
            out.insert(sub.name.clone(), convert(inner(c), sub)?);
        }
        return Ok(Value::Object(out));
    }
    let t = match v {
        Value::String(s) => s.as_str(),
        other => return Ok(other.clone()),
    };
    let bad = |what: &str| format!("`{t}` is not {what}");
    Ok(match f.kind.as_str() {
        "INTEGER" | "INT64" => t
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("an integer"))?,
        "FLOAT" | "FLOAT64" => match t {
            "NaN" | "Infinity" | "-Infinity" => Value::Null,
            _ => t
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
        },
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => decimal_value(t),
        "BOOLEAN" | "BOOL" => Value::Bool(t == "true"),
        // Integer microseconds (useInt64Timestamp), or float seconds from an older answer.
        "TIMESTAMP" => match t.parse::<i64>() {
            Ok(micros) => Value::from(micros.div_euclid(1_000_000)),
            Err(_) => t
                .parse::<f64>()
                .map(|s| Value::from(s.floor() as i64))
                .map_err(|_| bad("a timestamp"))?,
        },
        // DATETIME has no zone: taken as UTC, as for the other warehouses.
        "DATE" | "DATETIME" => parse_datetime(t)
            .map(Value::from)
            .ok_or_else(|| bad("a date"))?,
        "JSON" => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
        "BYTES" => {
            return Err(
                "binary data cannot be sent to Customer.io: leave the column out of the mapping (exclude it) or convert it in the model's SQL"
                    .into(),
            )
        }
        "GEOGRAPHY" => Value::String(t.to_string()),
        _ => Value::String(t.to_string()),
    })
}

struct Api {
    http: reqwest::Client,
    auth: auth::Auth,
    base: String,
    settings: Settings,
    deadline: Option<Duration>,
}

/// A query's answer: its schema, a page of rows and where the next is.
struct Page {
    job: String,
    location: Option<String>,
    schema: Vec<Field>,
    rows: Vec<PageRow>,
    next: Option<String>,
}

/// A row of a page, `{"f": [{"v": ...}, ...]}`, read straight into its cells' values (no map per
/// cell: a page holds thousands of rows).
#[derive(serde::Deserialize)]
struct PageRow {
    f: Vec<Cell>,
}

#[derive(serde::Deserialize)]
struct Cell {
    #[serde(default)]
    v: Value,
}

pub struct BigQuerySource {
    api: Arc<Api>,
}

impl Api {
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, SourceError> {
        let req = match self.auth.token(&self.http).await? {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            SourceError::Connect(format!("BigQuery at {} did not answer: {e}", self.base))
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        Err(match status.as_u16() {
            401 | 403 => SourceError::Connect(format!(
                "BigQuery refused the credentials ({status}): {message}"
            )),
            _ => SourceError::Query(format!("BigQuery answered {status}: {message}")),
        })
    }

    /// Whether a resource (a dataset, a table) is there: `GET` answers 404 when it is not.
    async fn found(&self, url: &str) -> Result<bool, SourceError> {
        let mut req = self.http.get(url);
        if let Some(t) = self.auth.token(&self.http).await? {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            SourceError::Connect(format!("BigQuery at {} did not answer: {e}", self.base))
        })?;
        match resp.status().as_u16() {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            s => Err(SourceError::Query(format!(
                "BigQuery answered {s} for {url}"
            ))),
        }
    }

    fn project_url(&self) -> String {
        format!(
            "{}/bigquery/v2/projects/{}",
            self.base, self.settings.project
        )
    }

    /// Runs `sql` and answers its first page, once the query is done.
    async fn query(&self, sql: &str) -> Result<Page, SourceError> {
        let mut body = json!({
            "query": sql,
            "useLegacySql": false,
            "maxResults": PAGE_ROWS,
            "timeoutMs": 10_000,
            "formatOptions": {"useInt64Timestamp": true},
        });
        if let Some(l) = &self.settings.location {
            body["location"] = json!(l);
        }
        let answer = self
            .call(
                self.http
                    .post(format!("{}/queries", self.project_url()))
                    .json(&body),
            )
            .await?;
        let started = tokio::time::Instant::now();
        let mut answer = answer;
        loop {
            if answer.get("jobComplete").and_then(Value::as_bool) != Some(false) {
                break;
            }
            let (job, location) = job_of(&answer);
            if self.deadline.is_some_and(|d| started.elapsed() > d) {
                self.cancel(&job, location.as_deref()).await;
                return Err(SourceError::Query(format!(
                    "the query ran past its time limit ({:?}) and was cancelled",
                    self.deadline.unwrap_or_default()
                )));
            }
            answer = self.results(&job, location.as_deref(), None).await?;
        }
        page(answer)
    }

    async fn results(
        &self,
        job: &str,
        location: Option<&str>,
        token: Option<&str>,
    ) -> Result<Value, SourceError> {
        let mut query: Vec<(&str, String)> = vec![
            ("maxResults", PAGE_ROWS.to_string()),
            ("timeoutMs", "10000".into()),
            ("formatOptions.useInt64Timestamp", "true".into()),
        ];
        if let Some(l) = location {
            query.push(("location", l.to_string()));
        }
        if let Some(t) = token {
            query.push(("pageToken", t.to_string()));
        }
        self.call(
            self.http
                .get(format!("{}/queries/{job}", self.project_url()))
                .query(&query),
        )
        .await
    }

    async fn cancel(&self, job: &str, location: Option<&str>) {
        let mut url = format!("{}/jobs/{job}/cancel", self.project_url());
        if let Some(l) = location {
            url.push_str(&format!("?location={l}"));
        }
        let _ = self.call(self.http.post(url)).await;
    }
}

fn job_of(answer: &Value) -> (String, Option<String>) {
    let r = answer.get("jobReference");
    (
        r.and_then(|r| r.get("jobId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        r.and_then(|r| r.get("location"))
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

fn page(mut answer: Value) -> Result<Page, SourceError> {
    let (job, location) = job_of(&answer);
    let schema: Vec<Field> = match answer.pointer("/schema/fields") {
        Some(f) => serde_json::from_value(f.clone()).map_err(|e| {
            SourceError::Query(format!("a schema not in the documented shape: {e}"))
        })?,
        None => Vec::new(),
    };
    let rows: Vec<PageRow> = match answer.get_mut("rows").map(Value::take) {
        Some(rows @ Value::Array(_)) => serde_json::from_value(rows)
            .map_err(|e| SourceError::Query(format!("rows not in the documented shape: {e}")))?,
        _ => Vec::new(),
    };
    Ok(Page {
        job,
        location,
        schema,
        rows,
        next: answer
            .get("pageToken")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// A row's cells' values.
fn cells(row: PageRow) -> Vec<Value> {
    row.f.into_iter().map(|c| c.v).collect()
}

/// A cell's text, as the key of a row.
fn key_text(cell: Option<&Value>) -> Option<String> {
    match cell? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Warehouse for BigQuerySource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let base = crate::api_base(
            settings
                .endpoint
                .as_deref()
                .unwrap_or("https://bigquery.googleapis.com"),
            "endpoint",
        )?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Connect(format!("an HTTP client: {e}")))?;
        let api = Api {
            http,
            auth: auth::Auth::new(
                settings.credentials_path.as_deref(),
                settings.endpoint.is_some(),
            )?,
            base,
            settings: settings.clone(),
            deadline: options.statement_timeout,
        };
        // The credentials and the project are tried now (a query with no table costs nothing).
        api.query("SELECT 1").await?;
        Ok(BigQuerySource { api: Arc::new(api) })
    }

    fn dialect(&self) -> &dyn Dialect {
        &BigQueryQuotes
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        let page = self
            .api
            .query(&format!(
                "SELECT * FROM {} LIMIT 0",
                BigQueryQuotes.model_from(model)
            ))
            .await?;
        Ok(page
            .schema
            .iter()
            .map(|f| Column {
                name: f.name.clone(),
                type_name: f.type_name(),
            })
            .collect())
    }

    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        // With change detection in the warehouse, the model's columns are described first, to
        // build the comparison over them; its answer has three more columns after them.
        let (first, schema, diff_at) = match (spec.diff, spec.key) {
            (None, _) => {
                let first = self
                    .api
                    .query(&format!(
                        "SELECT * FROM {}",
                        BigQueryQuotes.model_from(model)
                    ))
                    .await?;
                let schema = first.schema.clone();
                (first, schema, None)
            }
            (Some(d), Some(k)) => {
                let schema = self
                    .api
                    .query(&format!(
                        "SELECT * FROM {} LIMIT 0",
                        BigQueryQuotes.model_from(model)
                    ))
                    .await?
                    .schema;
                let names: Vec<String> = schema.iter().map(|f| f.name.clone()).collect();
                let known = |c: &str| {
                    names
                        .iter()
                        .any(|n| n == c)
                        .then_some(())
                        .ok_or_else(|| SourceError::NoColumn(c.to_string()))
                };
                known(k)?;
                if let Some(f) = schema.iter().find(|f| f.name == k) {
                    if f.repeated() || !matches!(f.kind.as_str(), "STRING" | "INTEGER" | "INT64") {
                        return Err(crate::key_not_comparable(k, &f.type_name()));
                    }
                }
                let hashed: Vec<&str> = match d.fingerprint {
                    Some(f) => f
                        .columns
                        .iter()
                        .map(|c| known(c).map(|_| c.as_str()))
                        .collect::<Result<_, _>>()?,
                    None => Vec::new(),
                };
                let first = self
                    .api
                    .query(&snapshot::diff_sql(model, k, &names, &hashed, d))
                    .await?;
                let n = schema.len();
                (first, schema, Some((n, d.empty)))
            }
            (Some(_), None) => {
                return Err(SourceError::Other(
                    "change detection in the warehouse needs a key column".into(),
                ))
            }
        };
        let names: Vec<String> = schema.iter().map(|f| f.name.clone()).collect();
        let position = |k: &str| {
            names
                .iter()
                .position(|n| n == k)
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
        let shape = Arc::new(schema);
        self.stream(first, move |mut cells| {
            let diff = diff_at.map(|(at, empty)| {
                let d = Box::new(snapshot::diff_of(&cells, at, empty));
                cells.truncate(at);
                d
            });
            let key = key_text(key_at.and_then(|i| cells.get(i)));
            let Some((salt, cols)) = &fingerprint else {
                let (values, unreadable) = decode(&shape, &cells);
                let mut r = Row::new(key, values).with_unreadable(unreadable);
                r.diff = diff;
                return r;
            };
            let mut h = Xxh3::new();
            h.update(salt.as_bytes());
            for &i in cols {
                let text = cells.get(i).map(|c| c.to_string()).unwrap_or_default();
                h.update(&(text.len() as u32).to_le_bytes());
                h.update(text.as_bytes());
            }
            let mut r = Row::undecoded(
                key,
                h.digest(),
                Box::new(Undecoded {
                    cells,
                    shape: shape.clone(),
                }),
            );
            r.diff = diff;
            r
        })
    }

    fn computes_fingerprints(&self) -> bool {
        true
    }

    async fn duplicate_keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let k = BigQueryQuotes.quote_ident(key);
        let first = self
            .api
            .query(&format!(
                "SELECT m.{k} FROM {} WHERE m.{k} IS NOT NULL GROUP BY m.{k} HAVING COUNT(*) > 1",
                BigQueryQuotes.model_from(model)
            ))
            .await?;
        self.stream(first, |cells| Row::new(key_text(cells.first()), Vec::new()))
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let first = self
            .api
            .query(&format!(
                "SELECT m.{} FROM {}",
                BigQueryQuotes.quote_ident(key),
                BigQueryQuotes.model_from(model)
            ))
            .await?;
        self.stream(first, |cells| Row::new(key_text(cells.first()), Vec::new()))
    }

    crate::snapshot_calls!(BigQuerySource);
}

impl BigQuerySource {
    /// Streams a query's pages, one in memory at a time.
    fn stream<F>(&self, first: Page, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(Vec<Value>) -> Row + Send + 'static,
    {
        let api = self.api.clone();
        let (tx, rx) = mpsc::channel(4);
        crate::spawn_reader(tx.clone(), async move {
            let (job, location) = (first.job.clone(), first.location.clone());
            let mut page = first;
            loop {
                let rows = std::mem::take(&mut page.rows);
                let mut chunk = Vec::with_capacity(CHUNK_ROWS.min(rows.len()));
                for row in rows {
                    chunk.push(convert(cells(row)));
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
                let Some(token) = page.next.take() else {
                    return;
                };
                page = match api
                    .results(&job, location.as_deref(), Some(&token))
                    .await
                    .and_then(page_of)
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
            }
        });
        Ok(rx)
    }
}

fn page_of(answer: Value) -> Result<Page, SourceError> {
    page(answer)
}

fn decode(schema: &[Field], cells: &[Value]) -> (Vec<Value>, Vec<Unreadable>) {
    let mut values = Vec::with_capacity(schema.len());
    let mut unreadable = Vec::new();
    for (i, f) in schema.iter().enumerate() {
        match convert(cells.get(i).unwrap_or(&Value::Null), f) {
            Ok(v) => values.push(v),
            Err(reason) => {
                unreadable.push(Unreadable {
                    index: i,
                    column: f.name.clone(),
                    reason,
                });
                values.push(Value::Null);
            }
        }
    }
    (values, unreadable)
}

struct Undecoded {
    cells: Vec<Value>,
    shape: Arc<Vec<Field>>,
}

impl crate::Undecoded for Undecoded {
    fn decode(&self) -> Result<Vec<Value>, SourceError> {
        Ok(decode(&self.shape, &self.cells).0)
    }

    fn decode_all(&self) -> Result<(Vec<Value>, Vec<Unreadable>), SourceError> {
        Ok(decode(&self.shape, &self.cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: &str) -> Field {
        Field {
            name: "c".into(),
            kind: kind.into(),
            mode: None,
            fields: Vec::new(),
        }
    }

    /// Cells as `jobs.getQueryResults` writes them (with `useInt64Timestamp`).
    #[test]
    fn query_result_cells_become_customerio_values() {
        let c = |v: Value, kind: &str| convert(&v, &field(kind)).unwrap();
        assert_eq!(c(json!("42"), "INTEGER"), json!(42));
        assert_eq!(c(json!("2.5"), "FLOAT"), json!(2.5));
        assert_eq!(c(json!("12.500000000"), "NUMERIC"), json!(12.5));
        assert_eq!(
            c(json!("123456789012345678901234567890.5"), "BIGNUMERIC"),
            json!("123456789012345678901234567890.5")
        );
        assert_eq!(c(json!("true"), "BOOLEAN"), json!(true));
        assert_eq!(c(json!("1704164645123456"), "TIMESTAMP"), json!(1704164645));
        assert_eq!(c(json!("1.704164645E9"), "TIMESTAMP"), json!(1704164645));
        assert_eq!(c(json!("2024-01-02"), "DATE"), json!(1704153600));
        assert_eq!(
            c(json!("2024-01-02T03:04:05.250"), "DATETIME"),
            json!(1704164645)
        );
        assert_eq!(c(json!("03:04:05"), "TIME"), json!("03:04:05"));
        assert_eq!(c(json!("{\"a\":[1,2]}"), "JSON"), json!({"a": [1, 2]}));
        let tags = Field {
            mode: Some("REPEATED".into()),
            ..field("STRING")
        };
        assert_eq!(
            convert(&json!([{"v": "x"}, {"v": "y"}]), &tags).unwrap(),
            json!(["x", "y"])
        );
        let st = Field {
            fields: vec![
                Field {
                    name: "a".into(),
                    ..field("INTEGER")
                },
                Field {
                    name: "at".into(),
                    ..field("TIMESTAMP")
                },
            ],
            ..field("RECORD")
        };
        assert_eq!(
            convert(&json!({"f": [{"v": "1"}, {"v": "60000000"}]}), &st).unwrap(),
            json!({"a": 1, "at": 60})
        );
        assert_eq!(st.type_name(), "STRUCT<a INT64, at TIMESTAMP>");
        assert_eq!(BigQueryQuotes.quote_ident("a`b\\"), "`a\\`b\\\\`");
        let e = convert(&json!("AAE="), &field("BYTES")).unwrap_err();
        assert!(e.contains("binary data") && e.contains("exclude"), "{e}");
    }
}
