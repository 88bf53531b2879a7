//! Snowflake through the connector protocol its drivers speak: a session is opened
//! (`/session/v1/login-request`, with a key pair's JWT or a password), statements are sent to
//! `/queries/v1/query-request`, polled while they run (`/monitoring/queries/{id}`), and their
//! result is read in both formats Snowflake serves: JSON rowsets and Arrow record batches, the
//! first part inline and the rest in chunks downloaded one at a time. A session that expires is
//! renewed with its master token.
//!
//! Every cell is brought to the text form of Snowflake's JSON rowsets (FIXED as its decimal,
//! BOOLEAN `1`/`0`, DATE as days, TIMESTAMP as `epoch.fraction`, TIME as seconds, VARIANT as
//! JSON, BINARY as hex) before it is fingerprinted and, when the row is to be sent, converted.

mod arrow;
mod auth;
mod settings;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use sallyport_core::Model;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};
use xxhash_rust::xxh3::Xxh3;

pub use settings::{Settings, FIELDS};

use crate::{
    decimal_value, AnsiQuotes, Column, Dialect, ReadSpec, Row, RowStream, SourceError, Unreadable,
    Warehouse, CHUNK_ROWS,
};

/// A column of a result, as `rowtype` describes it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RowType {
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    scale: Option<i64>,
}

/// A part of a result still to be downloaded.
#[derive(Debug, Clone, Deserialize)]
struct ChunkRef {
    url: String,
}

/// A part of a result: JSON rows, or Arrow batches read into rows one at a time.
enum Rows {
    Text(std::vec::IntoIter<Vec<Option<String>>>),
    Arrow(arrow::Batches),
}

impl Rows {
    fn next_row(&mut self) -> Option<Result<Vec<Option<String>>, SourceError>> {
        match self {
            Rows::Text(rows) => rows.next().map(Ok),
            Rows::Arrow(b) => b.next_row(),
        }
    }
}

/// A finished statement: its columns, its first rows and the chunks that follow.
struct Answer {
    rowtype: Vec<RowType>,
    rows: Rows,
    chunks: Vec<ChunkRef>,
    headers: Vec<(String, String)>,
    arrow: bool,
}

struct Session {
    token: String,
    master: String,
}

struct Api {
    http: reqwest::Client,
    base: String,
    settings: Settings,
    auth: auth::Credentials,
    session: Mutex<Session>,
    deadline: Option<Duration>,
}

pub struct SnowflakeSource {
    api: Arc<Api>,
}

/// A fresh random request id (a UUID, as drivers send).
fn new_request_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

fn query_error(m: impl Into<String>) -> SourceError {
    SourceError::Query(m.into())
}

impl Api {
    async fn login(
        http: &reqwest::Client,
        base: &str,
        settings: &Settings,
        credentials: &auth::Credentials,
    ) -> Result<Session, SourceError> {
        let mut data = json!({
            "ACCOUNT_NAME": settings.account.split('.').next().unwrap_or_default().to_ascii_uppercase(),
            "LOGIN_NAME": settings.user,
            "CLIENT_APP_ID": "Sallyport",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            // The text forms are pinned, whatever the account's or user's defaults: change
            // detection in the warehouse fingerprints values as text.
            "SESSION_PARAMETERS": {
                "TIMEZONE": "UTC",
                "QUERY_TAG": "sallyport",
                "DATE_OUTPUT_FORMAT": "YYYY-MM-DD",
                "TIME_OUTPUT_FORMAT": "HH24:MI:SS.FF9",
                "TIMESTAMP_NTZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF9",
                "TIMESTAMP_LTZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF9 TZHTZM",
                "TIMESTAMP_TZ_OUTPUT_FORMAT": "YYYY-MM-DD HH24:MI:SS.FF9 TZHTZM",
                "BINARY_OUTPUT_FORMAT": "HEX",
            },
        });
        credentials.fill(&mut data, settings)?;
        let mut query = vec![
            ("warehouse", settings.warehouse.clone()),
            ("databaseName", settings.database.clone()),
        ];
        if let Some(s) = &settings.schema {
            query.push(("schemaName", s.clone()));
        }
        if let Some(r) = &settings.role {
            query.push(("roleName", r.clone()));
        }
        let resp = http
            .post(format!("{base}/session/v1/login-request"))
            .query(&query)
            .header("Accept", "application/json")
            .json(&json!({ "data": data }))
            .send()
            .await
            .map_err(|e| {
                SourceError::Connect(format!("Snowflake at {base} did not answer: {e}"))
            })?;
        let body: Value = resp.json().await.unwrap_or_default();
        if body.get("success").and_then(Value::as_bool) != Some(true) {
            return Err(SourceError::Connect(format!(
                "Snowflake refused the sign-in ({}): {}",
                body.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("no code"),
                body.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
            )));
        }
        let field = |k: &str| {
            body.pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(Session {
            token: field("token"),
            master: field("masterToken"),
        })
    }

    /// Renews the session's token with its master token (or signs in again).
    async fn renew(&self) -> Result<(), SourceError> {
        let mut session = self.session.lock().await;
        let master = session.master.clone();
        let renewed = if master.is_empty() {
            None
        } else {
            let resp = self
                .http
                .post(format!("{}/session/token-request", self.base))
                .query(&[("requestId", new_request_id())])
                .header("Authorization", format!("Snowflake Token=\"{master}\""))
                .header("Accept", "application/json")
                .json(&json!({"oldSessionToken": session.token, "requestType": "RENEW"}))
                .send()
                .await
                .ok();
            match resp {
                Some(r) => {
                    let body: Value = r.json().await.unwrap_or_default();
                    body.pointer("/data/sessionToken")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                }
                None => None,
            }
        };
        match renewed {
            Some(t) => session.token = t,
            None => {
                *session = Self::login(&self.http, &self.base, &self.settings, &self.auth).await?
            }
        }
        Ok(())
    }

    async fn request(
        &self,
        req: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Value, SourceError> {
        for attempt in 0..2 {
            let token = self.session.lock().await.token.clone();
            let resp = req(&format!("Snowflake Token=\"{token}\""))
                .header("Accept", "application/snowflake")
                .send()
                .await
                .map_err(|e| {
                    SourceError::Connect(format!("Snowflake at {} did not answer: {e}", self.base))
                })?;
            let body: Value = resp.json().await.unwrap_or_default();
            // 390112: the session's token expired.
            if body.get("code").and_then(Value::as_str) == Some("390112") && attempt == 0 {
                self.renew().await?;
                continue;
            }
            return Ok(body);
        }
        Err(query_error("the session could not be renewed"))
    }

    /// Runs `sql` and answers its result once it is done.
    async fn execute(&self, sql: &str) -> Result<Answer, SourceError> {
        let url = format!("{}/queries/v1/query-request", self.base);
        let request_id = new_request_id();
        let body = json!({"sqlText": sql, "asyncExec": false, "sequenceId": 1, "parameters": {}});
        let mut answer = self
            .request(|auth| {
                self.http
                    .post(&url)
                    .query(&[("requestId", request_id.as_str())])
                    .header("Authorization", auth)
                    .json(&body)
            })
            .await?;
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(250);
        // 333333 / 333334: still running; the answer says where its result will be.
        while matches!(
            answer.get("code").and_then(Value::as_str),
            Some("333333" | "333334")
        ) {
            let id = answer
                .pointer("/data/queryId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if self.deadline.is_some_and(|d| started.elapsed() > d) {
                let _ = self
                    .request(|auth| {
                        self.http
                            .post(format!("{}/queries/v1/abort-request", self.base))
                            .query(&[("requestId", new_request_id())])
                            .header("Authorization", auth)
                            .json(&json!({"sqlText": sql, "requestId": request_id}))
                    })
                    .await;
                return Err(query_error(format!(
                    "the query ran past its time limit ({:?}) and was cancelled",
                    self.deadline.unwrap_or_default()
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let result_url = answer
                .pointer("/data/getResultUrl")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("/queries/{id}/result"));
            answer = self
                .request(|auth| {
                    self.http
                        .get(format!("{}{result_url}", self.base))
                        .header("Authorization", auth)
                })
                .await?;
        }
        if answer.get("success").and_then(Value::as_bool) != Some(true) {
            return Err(query_error(format!(
                "Snowflake error {}: {}",
                answer.get("code").and_then(Value::as_str).unwrap_or("?"),
                answer
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
            )));
        }
        answer_of(answer)
    }

    /// A chunk's rows: JSON rows without their enclosing brackets, or an Arrow stream, perhaps
    /// gzipped.
    async fn chunk(
        &self,
        chunk: &ChunkRef,
        headers: &[(String, String)],
        rowtype: &[RowType],
        arrow_format: bool,
    ) -> Result<Rows, SourceError> {
        let mut req = self.http.get(&chunk.url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| query_error(format!("a result chunk did not download: {e}")))?;
        if !resp.status().is_success() {
            return Err(query_error(format!(
                "a result chunk did not download: {}",
                resp.status()
            )));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| query_error(format!("a result chunk did not download: {e}")))?;
        let bytes = gunzip(&bytes)?;
        if arrow_format {
            return arrow::Batches::read(&bytes, rowtype).map(Rows::Arrow);
        }
        let mut text = Vec::with_capacity(bytes.len() + 2);
        text.push(b'[');
        text.extend_from_slice(&bytes);
        text.push(b']');
        let rows: Vec<Vec<Option<String>>> = serde_json::from_slice(&text)
            .map_err(|e| query_error(format!("a JSON result chunk does not read: {e}")))?;
        Ok(Rows::Text(rows.into_iter()))
    }
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, SourceError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
            .map_err(|e| query_error(format!("a result chunk does not unzip: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

fn answer_of(mut answer: Value) -> Result<Answer, SourceError> {
    let data = answer.get_mut("data").map(Value::take).unwrap_or_default();
    let rowtype: Vec<RowType> =
        serde_json::from_value(data.get("rowtype").cloned().unwrap_or(json!([])))
            .map_err(|e| query_error(format!("a rowtype not in the known shape: {e}")))?;
    let arrow = data.get("queryResultFormat").and_then(Value::as_str) == Some("arrow");
    let rows = if arrow {
        use base64::Engine as _;
        let b64 = data
            .get("rowsetBase64")
            .and_then(Value::as_str)
            .unwrap_or("");
        if b64.is_empty() {
            Rows::Text(Vec::new().into_iter())
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| query_error(format!("an Arrow rowset is not base64: {e}")))?;
            Rows::Arrow(arrow::Batches::read(&bytes, &rowtype)?)
        }
    } else {
        let rows: Vec<Vec<Option<String>>> =
            serde_json::from_value(data.get("rowset").cloned().unwrap_or(json!([])))
                .map_err(|e| query_error(format!("a JSON rowset not in the known shape: {e}")))?;
        Rows::Text(rows.into_iter())
    };
    let chunks: Vec<ChunkRef> =
        serde_json::from_value(data.get("chunks").cloned().unwrap_or(json!([])))
            .map_err(|e| query_error(format!("chunks not in the known shape: {e}")))?;
    let mut headers: Vec<(String, String)> = data
        .get("chunkHeaders")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if headers.is_empty() {
        if let Some(key) = data.get("qrmk").and_then(Value::as_str) {
            headers = vec![
                (
                    "x-amz-server-side-encryption-customer-algorithm".into(),
                    "AES256".into(),
                ),
                (
                    "x-amz-server-side-encryption-customer-key".into(),
                    key.to_string(),
                ),
            ];
        }
    }
    Ok(Answer {
        rowtype,
        rows,
        chunks,
        headers,
        arrow,
    })
}

/// One cell (in the JSON rowset's text form) in the form Customer.io wants, or why it cannot
/// be sent.
pub(crate) fn convert(text: Option<&str>, t: &RowType) -> Result<Value, String> {
    let Some(s) = text else {
        return Ok(Value::Null);
    };
    let bad = |what: &str| format!("`{s}` is not {what}");
    // Whole seconds, rounded down (`-0.5` is -1, as the Arrow path reads it).
    let seconds = |s: &str| -> Result<i64, String> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let whole = whole.parse::<i64>().map_err(|_| bad("a time"))?;
        let below = whole < 0 || whole == 0 && s.starts_with('-');
        Ok(if below && frac.bytes().any(|b| b != b'0') {
            whole - 1
        } else {
            whole
        })
    };
    Ok(match t.kind.as_str() {
        "fixed" => {
            if t.scale.unwrap_or(0) == 0 {
                s.parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| decimal_value(s))
            } else {
                decimal_value(s)
            }
        }
        "real" => match s {
            "NaN" | "inf" | "-inf" => Value::Null,
            _ => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
        },
        "boolean" => Value::Bool(s == "1" || s.eq_ignore_ascii_case("true")),
        "date" => Value::from(s.parse::<i64>().map_err(|_| bad("a date"))? * 86_400),
        // `epoch.fraction`, and for TIMESTAMP_TZ ` <offset in minutes + 1440>` after it: the
        // epoch is UTC already.
        "timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" => {
            Value::from(seconds(s.split(' ').next().unwrap_or(s))?)
        }
        "time" => {
            let secs = seconds(s)?;
            Value::String(format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            ))
        }
        "variant" | "object" | "array" => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
        }
        "binary" => {
            return Err(
                "binary data cannot be sent to Customer.io: leave the column out of the mapping (exclude it) or convert it in the model's SQL"
                    .into(),
            )
        }
        _ => Value::String(s.to_string()),
    })
}

impl Warehouse for SnowflakeSource {
    type Settings = Settings;

    async fn open(settings: &Settings, options: &crate::OpenOptions) -> Result<Self, SourceError> {
        let base = crate::api_base(&settings.base_url(), "url")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Connect(format!("an HTTP client: {e}")))?;
        let credentials = auth::Credentials::new(settings)?;
        let session = Api::login(&http, &base, settings, &credentials).await?;
        Ok(SnowflakeSource {
            api: Arc::new(Api {
                http,
                base,
                settings: settings.clone(),
                auth: credentials,
                session: Mutex::new(session),
                deadline: options.statement_timeout,
            }),
        })
    }

    fn dialect(&self) -> &dyn Dialect {
        &AnsiQuotes
    }

    async fn describe(&self, model: &Model) -> Result<Vec<Column>, SourceError> {
        let a = self
            .api
            .execute(&format!(
                "SELECT * FROM {} LIMIT 0",
                AnsiQuotes.model_from(model)
            ))
            .await?;
        Ok(a.rowtype
            .iter()
            .map(|t| Column {
                name: t.name.clone(),
                type_name: t.kind.to_ascii_uppercase(),
            })
            .collect())
    }

    async fn read(&self, model: &Model, spec: &ReadSpec<'_>) -> Result<RowStream, SourceError> {
        // With change detection in the warehouse, the model's columns are described first, to
        // build the comparison over them; its answer has three more columns after them.
        let (first, columns, diff_at) = match (spec.diff, spec.key) {
            (None, _) => {
                let first = self
                    .api
                    .execute(&format!("SELECT * FROM {}", AnsiQuotes.model_from(model)))
                    .await?;
                let columns = first.rowtype.clone();
                (first, columns, None)
            }
            (Some(d), Some(k)) => {
                let columns = self
                    .api
                    .execute(&format!(
                        "SELECT * FROM {} LIMIT 0",
                        AnsiQuotes.model_from(model)
                    ))
                    .await?
                    .rowtype;
                let at = |c: &str| {
                    columns
                        .iter()
                        .position(|t| t.name == c)
                        .ok_or_else(|| SourceError::NoColumn(c.to_string()))
                };
                let kt = &columns[at(k)?];
                if !(kt.kind == "text" || kt.kind == "fixed" && kt.scale.unwrap_or(0) == 0) {
                    return Err(crate::key_not_comparable(k, &kt.kind.to_ascii_uppercase()));
                }
                let hashed = match d.fingerprint {
                    Some(f) => f
                        .columns
                        .iter()
                        .map(|c| at(c))
                        .collect::<Result<Vec<_>, _>>()?,
                    None => Vec::new(),
                };
                let sql = self.diff_sql(model, k, &columns, &hashed, d);
                let first = self.api.execute(&sql).await?;
                let n = columns.len();
                (first, columns, Some((n, d.empty)))
            }
            (Some(_), None) => {
                return Err(SourceError::Other(
                    "change detection in the warehouse needs a key column".into(),
                ))
            }
        };
        let position = |k: &str| {
            columns
                .iter()
                .position(|t| t.name == k)
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
        let shape = Arc::new(columns);
        self.stream(first, move |mut cells| {
            let diff = diff_at.map(|(at, empty)| {
                let d = Box::new(snapshot::diff_of(&cells, at, empty));
                cells.truncate(at);
                d
            });
            let key = key_at.and_then(|i| cells.get(i).cloned().flatten());
            let Some((salt, cols)) = &fingerprint else {
                let (values, unreadable) = decode(&shape, &cells);
                let mut r = Row::new(key, values).with_unreadable(unreadable);
                r.diff = diff;
                return r;
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
        let k = AnsiQuotes.quote_ident(key);
        let first = self
            .api
            .execute(&format!(
                "SELECT m.{k} FROM {} WHERE m.{k} IS NOT NULL GROUP BY m.{k} HAVING COUNT(*) > 1",
                AnsiQuotes.model_from(model)
            ))
            .await?;
        self.stream(first, |cells| {
            Row::new(cells.into_iter().next().flatten(), Vec::new())
        })
    }

    async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let first = self
            .api
            .execute(&format!(
                "SELECT m.{} FROM {}",
                AnsiQuotes.quote_ident(key),
                AnsiQuotes.model_from(model)
            ))
            .await?;
        self.stream(first, |cells| {
            Row::new(cells.into_iter().next().flatten(), Vec::new())
        })
    }

    crate::snapshot_calls!(SnowflakeSource);
}

impl SnowflakeSource {
    /// Streams a result: its inline rows, then each chunk as it is downloaded.
    fn stream<F>(&self, first: Answer, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(Vec<Option<String>>) -> Row + Send + 'static,
    {
        let api = self.api.clone();
        let (tx, rx) = mpsc::channel(4);
        crate::spawn_reader(tx.clone(), async move {
            let Answer {
                rowtype,
                rows,
                chunks,
                headers,
                arrow,
            } = first;
            let mut pending = chunks.into_iter();
            let mut rows = rows;
            loop {
                let mut chunk = Vec::with_capacity(CHUNK_ROWS);
                while let Some(row) = rows.next_row() {
                    let row = match row {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    chunk.push(convert(row));
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
                let Some(next) = pending.next() else { return };
                rows = match api.chunk(&next, &headers, &rowtype, arrow).await {
                    Ok(r) => r,
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

fn decode(shape: &[RowType], cells: &[Option<String>]) -> (Vec<Value>, Vec<Unreadable>) {
    let mut values = Vec::with_capacity(shape.len());
    let mut unreadable = Vec::new();
    for (i, t) in shape.iter().enumerate() {
        match convert(cells.get(i).and_then(|c| c.as_deref()), t) {
            Ok(v) => values.push(v),
            Err(reason) => {
                unreadable.push(Unreadable {
                    index: i,
                    column: t.name.clone(),
                    reason,
                });
                values.push(Value::Null);
            }
        }
    }
    (values, unreadable)
}

struct Undecoded {
    cells: Vec<Option<String>>,
    shape: Arc<Vec<RowType>>,
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

    fn t(kind: &str, scale: Option<i64>) -> RowType {
        RowType {
            name: "c".into(),
            kind: kind.into(),
            scale,
        }
    }

    /// Cells as Snowflake's JSON rowsets write them.
    #[test]
    fn json_rowset_cells_become_customerio_values() {
        let c =
            |s: &str, kind: &str, scale: Option<i64>| convert(Some(s), &t(kind, scale)).unwrap();
        assert_eq!(c("42", "fixed", Some(0)), json!(42));
        assert_eq!(c("12.50", "fixed", Some(2)), json!(12.5));
        assert_eq!(c("2.5", "real", None), json!(2.5));
        assert_eq!(c("1", "boolean", None), json!(true));
        assert_eq!(c("0", "boolean", None), json!(false));
        assert_eq!(c("19724", "date", None), json!(1704153600));
        assert_eq!(
            c("1704164645.123000000", "timestamp_ntz", Some(9)),
            json!(1704164645)
        );
        assert_eq!(
            c("1704164645.000000000 1560", "timestamp_tz", Some(9)),
            json!(1704164645)
        );
        assert_eq!(c("11045.000000000", "time", Some(9)), json!("03:04:05"));
        assert_eq!(c("-0.500000000", "timestamp_ntz", Some(9)), json!(-1));
        assert_eq!(c("-1.000000000", "timestamp_ntz", Some(9)), json!(-1));
        assert_eq!(
            c("{\"plan\":\"pro\"}", "variant", None),
            json!({"plan": "pro"})
        );
        assert_eq!(c("[1,2]", "array", None), json!([1, 2]));
        assert_eq!(c("x", "text", None), json!("x"));
        let e = convert(Some("0001"), &t("binary", None)).unwrap_err();
        assert!(e.contains("binary data") && e.contains("exclude"), "{e}");
    }
}
