//! PostgreSQL: rows streamed over one connection with the extended protocol (the server sends as
//! the client reads, so memory stays flat), conversions done by the server where it is exact.

use std::sync::Arc;

use futures_util::{pin_mut, StreamExt};
use sallyport_config::Model;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::types::{Kind as PgKind, Type};
use tokio_postgres::{Client, NoTls};

use crate::{
    decimal_value, model_from, quote_ident, Column, Row, RowStream, SourceError, CHUNK_ROWS,
};

pub struct PgSource {
    client: Arc<Client>,
}

/// How a column is read back.
#[derive(Debug, Clone, Copy)]
enum Decode {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Text,
    Json,
    Decimal,
}

fn query_error(e: tokio_postgres::Error) -> SourceError {
    match e.as_db_error() {
        Some(db) => SourceError::Query(db.message().to_string()),
        None => SourceError::Query(e.to_string()),
    }
}

impl PgSource {
    pub async fn connect(url: &str) -> Result<Self, SourceError> {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| SourceError::Connect(redact_connect_error(&e.to_string(), url)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "warehouse connection ended");
            }
        });
        Ok(Self {
            client: Arc::new(client),
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

    pub async fn stream(&self, model: &Model, key: Option<&str>) -> Result<RowStream, SourceError> {
        let columns = self.columns(model).await?;
        if let Some(k) = key {
            if !columns.iter().any(|(n, _)| n == k) {
                return Err(SourceError::NoColumn(k.to_string()));
            }
        }
        let mut select = Vec::with_capacity(columns.len() + 1);
        let mut decode = Vec::with_capacity(columns.len());
        for (name, t) in &columns {
            let (expr, d) = select_expr(&format!("m.{}", quote_ident(name)), t);
            select.push(expr);
            decode.push(d);
        }
        if let Some(k) = key {
            select.push(format!("m.{}::text", quote_ident(k)));
        }
        let sql = format!("SELECT {} FROM {}", select.join(", "), model_from(model));
        let with_key = key.is_some();
        self.run(sql, move |row| {
            let values = decode
                .iter()
                .enumerate()
                .map(|(i, d)| read(row, i, *d))
                .collect::<Result<Vec<_>, _>>()?;
            let key = if with_key {
                row.try_get::<_, Option<String>>(decode.len())
                    .map_err(|e| SourceError::Query(e.to_string()))?
            } else {
                None
            };
            Ok(Row { key, values })
        })
        .await
    }

    pub async fn keys(&self, model: &Model, key: &str) -> Result<RowStream, SourceError> {
        let sql = format!(
            "SELECT m.{}::text FROM {}",
            quote_ident(key),
            model_from(model)
        );
        self.run(sql, |row| {
            Ok(Row {
                key: row
                    .try_get::<_, Option<String>>(0)
                    .map_err(|e| SourceError::Query(e.to_string()))?,
                values: Vec::new(),
            })
        })
        .await
    }

    pub async fn duplicate_keys(
        &self,
        model: &Model,
        key: &str,
    ) -> Result<Vec<String>, SourceError> {
        let k = quote_ident(key);
        let sql = format!(
            "SELECT m.{k}::text FROM {} WHERE m.{k} IS NOT NULL GROUP BY 1 HAVING count(*) > 1",
            model_from(model)
        );
        let rows = self.client.query(&sql, &[]).await.map_err(query_error)?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect())
    }

    async fn run<F>(&self, sql: String, convert: F) -> Result<RowStream, SourceError>
    where
        F: Fn(&tokio_postgres::Row) -> Result<Row, SourceError> + Send + 'static,
    {
        let stmt = self.client.prepare(&sql).await.map_err(query_error)?;
        let client = self.client.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
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
                let converted = row.map_err(query_error).and_then(|r| convert(&r));
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
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk)).await;
            }
        });
        Ok(rx)
    }
}

/// The select expression for a column, and how to read it back.
fn select_expr(col: &str, t: &Type) -> (String, Decode) {
    if let PgKind::Array(_) = t.kind() {
        return (format!("to_json({col})"), Decode::Json);
    }
    let epoch = |c: String| {
        format!("CASE WHEN isfinite({col}) THEN floor(extract(epoch FROM {c}))::int8 END")
    };
    match *t {
        Type::BOOL => (col.to_string(), Decode::Bool),
        Type::INT2 => (col.to_string(), Decode::I16),
        Type::INT4 => (col.to_string(), Decode::I32),
        Type::INT8 => (col.to_string(), Decode::I64),
        Type::FLOAT4 => (col.to_string(), Decode::F32),
        Type::FLOAT8 => (col.to_string(), Decode::F64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => (col.to_string(), Decode::Text),
        Type::JSON | Type::JSONB => (col.to_string(), Decode::Json),
        Type::NUMERIC => (format!("{col}::text"), Decode::Decimal),
        Type::DATE => (epoch(format!("{col}::timestamp")), Decode::I64),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => (epoch(col.to_string()), Decode::I64),
        _ => (format!("{col}::text"), Decode::Text),
    }
}

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
        Decode::Decimal => get::<&str>(row, i)?
            .map(decimal_value)
            .unwrap_or(Value::Null),
    })
}

/// Connection errors may quote the URL; never its password.
fn redact_connect_error(msg: &str, url: &str) -> String {
    let mut out = msg.to_string();
    if let Some(pw) = url_password(url) {
        if !pw.is_empty() {
            out = out.replace(&pw, "***");
        }
    }
    out
}

fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}
