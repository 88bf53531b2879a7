//! Change detection in MySQL and MariaDB: a snapshot table per sync in the `sallyport_schema`
//! database (`` `key` VARBINARY(3072) PRIMARY KEY, wfp BIGINT UNSIGNED, lfp BIGINT, note ``).
//! The warehouse fingerprints a row as the first 64 bits of the MD5 of its mapped columns as a
//! JSON array (`JSON_ARRAY` tells a NULL from the text `null`, and a number from a string),
//! behind the salt. The model is only ever run inside the read-only transactions of
//! [`MySource::reading`]; writes go over a connection of their own and take lists of keys,
//! never the model's SQL.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as My};
use sallyport_core::Model;

use super::{query_error, text_of, Decode, MySource};
use crate::{Backticks, Dialect, DiffSpec, Row, RowStream, Snapshot, SnapshotRow, SourceError};

/// A snapshot row as MySQL gives it back: key, warehouse fingerprint, fingerprint, note.
type StoredRow = (Vec<u8>, Option<u64>, i64, Option<Vec<u8>>);

/// Keys and notes written per statement (well inside the server's packet and placeholder
/// limits).
const PER_STATEMENT: usize = 2000;

fn q(name: &str) -> String {
    Backticks.quote_ident(name)
}

/// `` `database`.`snapshot_…` ``.
pub(super) fn table(s: &Snapshot) -> String {
    format!("{}.{}", q(&s.schema), q(&s.table()))
}

/// A column's key as the snapshot holds it: its text exactly as the key streams read it
/// (`CAST(... AS CHAR)`, in the connection's character set), as bytes.
fn key_bytes(column: &str) -> String {
    format!("CAST(CAST({column} AS CHAR) AS BINARY)")
}

/// How a mapped column goes into the fingerprint: as itself inside a JSON array, or, for
/// binary values that JSON cannot hold, as hex.
pub(super) fn hashed(column: &str, decode: Decode) -> String {
    match decode {
        Decode::Unsupported(_) => format!("HEX({column})"),
        _ => column.to_string(),
    }
}

/// The warehouse's fingerprint of `hashed` columns behind `salt`.
fn fingerprint(hashed: &[String], salt: &str) -> String {
    // The salt goes in as the hex of its hash: never text pasted into SQL.
    let seed = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(salt.as_bytes()));
    format!(
        "CAST(CONV(LEFT(MD5(CONCAT('{seed}', JSON_ARRAY({}))), 16), 16, 10) AS UNSIGNED)",
        hashed.join(", ")
    )
}

/// The SQL of a diff read: the model's rows (as `select`, over `m`), each with the warehouse's
/// fingerprint and what the snapshot holds for its key, and only those that differ unless
/// every row is asked for.
pub(super) fn diff_sql(
    model: &Model,
    key: &str,
    select: &[String],
    hashed: &[String],
    d: &DiffSpec<'_>,
) -> String {
    let wfp = match d.fingerprint {
        Some(f) => fingerprint(hashed, &f.salt),
        None => "CAST(0 AS UNSIGNED)".into(),
    };
    crate::snapshots::diff_sql(
        model,
        key,
        select,
        d,
        crate::snapshots::DiffSql {
            dialect: &Backticks,
            table: table(d.snapshot),
            fingerprint: wfp,
            key_text: &key_bytes,
            // NULL-safe: a fingerprint MySQL could not make (NULL) is never taken for unchanged.
            differs: &|s, m| format!("NOT ({s} <=> {m})"),
        },
    )
}

/// Reads what a diff read appends to a row (`values[at..]`).
pub(super) fn diff_of(values: &mut [My], at: usize, empty: bool) -> crate::Diff {
    let int = |v: &My| match v {
        My::Int(i) => Some(*i),
        My::UInt(u) => Some(*u as i64),
        My::Bytes(b) => std::str::from_utf8(b).ok().and_then(|t| {
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<u64>().ok().map(|u| u as i64))
        }),
        _ => None,
    };
    let wfp = int(&values[at]).unwrap_or(0);
    if empty {
        return crate::snapshots::diff(wfp, None, None, true);
    }
    let lfp = int(&values[at + 1]);
    let note = text_of(std::mem::replace(&mut values[at + 2], My::NULL));
    crate::snapshots::diff(wfp, lfp, note, false)
}

/// The statement that anti-joins the snapshot with the model's keys: the keys it holds that
/// the model no longer has (the model's keys, made distinct, are indexed by the server).
fn absent_from(s: &Snapshot, model: &Model, key: &str) -> String {
    format!(
        "FROM {} AS s LEFT JOIN (SELECT DISTINCT {} AS k FROM {}) AS mk ON mk.k = s.`key` WHERE mk.k IS NULL",
        table(s),
        key_bytes(&format!("m.{}", q(key))),
        Backticks.model_from(model)
    )
}

impl MySource {
    /// The connection snapshot writes go over (opened once).
    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Conn>>, SourceError> {
        let mut w = self.writer.lock().await;
        // A connection the server closed while idle (`wait_timeout`) is opened again.
        if let Some(c) = w.as_mut() {
            if c.ping().await.is_err() {
                *w = None;
            }
        }
        if w.is_none() {
            *w = Some(self.connect().await?);
        }
        Ok(w)
    }

    /// Runs `f` on the writer; a connection that failed is dropped, to be opened again.
    pub(super) async fn writing<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut Conn,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, mysql_async::Error>> + Send + 'c>,
        >,
    ) -> Result<T, SourceError> {
        let mut w = self.writer().await?;
        let result = f(w.as_mut().expect("connected")).await;
        if result.is_err() {
            *w = None;
        }
        result.map_err(query_error)
    }

    pub(super) async fn snapshot_check(&self, schema: &str) -> Result<(), SourceError> {
        let mut conn = self.connect().await?;
        let found: Option<(String, i64)> = conn
            .exec_first(
                "SELECT CURRENT_USER(), EXISTS (SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?)",
                (schema,),
            )
            .await
            .map_err(query_error)?;
        let (user, exists) = found.unwrap_or_default();
        // Roles came with MySQL 8 and MariaDB 10.0.5: older servers have no CURRENT_ROLE().
        let role: Option<String> = conn
            .query_first("SELECT CURRENT_ROLE()")
            .await
            .ok()
            .flatten()
            .flatten();
        // The privileges the user holds on every database or on this one (as `'name'@'host'`).
        let (name, host) = user.rsplit_once('@').unwrap_or((user.as_str(), "%"));
        let grantee = format!("'{name}'@'{host}'");
        let held: Vec<String> = conn
            .exec(
                "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?
                 UNION
                 SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES
                 WHERE GRANTEE = ? AND ? LIKE TABLE_SCHEMA",
                (&grantee, &grantee, schema),
            )
            .await
            .map_err(query_error)?;
        let _ = conn.disconnect().await;
        let needed = ["CREATE", "DROP", "SELECT", "INSERT", "UPDATE", "DELETE"];
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|p| !held.iter().any(|h| h.eq_ignore_ascii_case(p)))
            .collect();
        // Privileges that come through an enabled role are not listed per user: the
        // statements themselves will say.
        let role = role.filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case("NONE"));
        if missing.is_empty() || role.is_some() {
            return Ok(());
        }
        let to = format!(
            "'{}'@'{}'",
            name.replace('\'', "''"),
            host.replace('\'', "''")
        );
        let what = if exists == 0 {
            format!("needs the database `{schema}`, which does not exist, and user {to} may not create it and its tables")
        } else {
            format!(
                "needs to create and write tables in database `{schema}`, and user {to} may not"
            )
        };
        Err(SourceError::Other(format!(
            "change_detection: warehouse {what} (missing: {}): run `GRANT {} ON {}.* TO {to};`",
            missing.join(", "),
            missing.join(", "),
            q(schema)
        )))
    }

    pub(super) async fn snapshot_count(&self, s: &Snapshot) -> Result<Option<u64>, SourceError> {
        let mut conn = self.connect().await?;
        let exists: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&s.schema, s.table()),
            )
            .await
            .map_err(query_error)?;
        let n = if exists.unwrap_or(0) == 0 {
            None
        } else {
            let n: Option<i64> = conn
                .query_first(format!("SELECT COUNT(*) FROM {}", table(s)))
                .await
                .map_err(query_error)?;
            Some(n.unwrap_or(0) as u64)
        };
        let _ = conn.disconnect().await;
        Ok(n)
    }

    pub(super) async fn snapshot_prepare(&self, s: &Snapshot) -> Result<(u64, bool), SourceError> {
        if let Some(n) = self.snapshot_count(s).await? {
            return Ok((n, true));
        }
        self.snapshot_check(&s.schema).await?;
        let sql = format!(
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4; CREATE TABLE IF NOT EXISTS {} (`key` VARBINARY(3072) NOT NULL PRIMARY KEY, wfp BIGINT UNSIGNED NULL, lfp BIGINT NOT NULL, note LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            q(&s.schema),
            table(s)
        );
        self.writing(move |c| Box::pin(c.query_drop(sql))).await?;
        Ok((0, false))
    }

    pub(super) async fn snapshot_write(
        &self,
        s: &Snapshot,
        rows: &[SnapshotRow],
        removed: &[String],
    ) -> Result<(), SourceError> {
        // Each batch is merged with multi-row upserts, and the removed keys deleted, in one
        // transaction.
        let mut statements: Vec<(String, Vec<My>)> = Vec::new();
        for part in rows.chunks(PER_STATEMENT) {
            let mut params = Vec::with_capacity(part.len() * 4);
            for r in part {
                params.push(My::Bytes(r.key.as_bytes().to_vec()));
                params.push(match r.warehouse_fingerprint {
                    Some(w) => My::UInt(w as u64),
                    None => My::NULL,
                });
                params.push(My::Int(r.fingerprint as i64));
                params.push(match &r.note {
                    Some(n) => My::Bytes(n.as_bytes().to_vec()),
                    None => My::NULL,
                });
            }
            statements.push((
                format!(
                    "INSERT INTO {} (`key`, wfp, lfp, note) VALUES {} ON DUPLICATE KEY UPDATE wfp = VALUES(wfp), lfp = VALUES(lfp), note = COALESCE(VALUES(note), note)",
                    table(s),
                    vec!["(?, ?, ?, ?)"; part.len()].join(", ")
                ),
                params,
            ));
        }
        for part in removed.chunks(PER_STATEMENT) {
            statements.push((
                format!(
                    "DELETE FROM {} WHERE `key` IN ({})",
                    table(s),
                    vec!["?"; part.len()].join(", ")
                ),
                part.iter()
                    .map(|k| My::Bytes(k.as_bytes().to_vec()))
                    .collect(),
            ));
        }
        if statements.is_empty() {
            return Ok(());
        }
        self.writing(move |c| {
            Box::pin(async move {
                let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
                for (sql, params) in statements {
                    tx.exec_drop(sql, params).await?;
                }
                tx.commit().await
            })
        })
        .await
    }

    /// A one-number query over the model, run like any read of it.
    async fn number(&self, sql: String) -> Result<u64, SourceError> {
        let conn = self.reading().await?;
        let mut rows = self
            .run(conn, sql, |mut v| {
                Ok(Row::new(
                    text_of(std::mem::replace(&mut v[0], My::NULL)),
                    Vec::new(),
                ))
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

    pub(super) async fn snapshot_absent_count(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<u64, SourceError> {
        self.number(format!("SELECT COUNT(*) {}", absent_from(s, model, key)))
            .await
    }

    pub(super) async fn snapshot_absent(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<RowStream, SourceError> {
        let conn = self.reading().await?;
        let sql = format!("SELECT s.`key`, s.note {}", absent_from(s, model, key));
        self.run(conn, sql, |mut v| {
            let note = text_of(std::mem::replace(&mut v[1], My::NULL));
            Ok(Row::new(
                text_of(std::mem::replace(&mut v[0], My::NULL)),
                vec![note.map_or(serde_json::Value::Null, serde_json::Value::String)],
            ))
        })
        .await
    }

    pub(super) async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        self.number(format!(
            "SELECT COUNT(m.{}) FROM {}",
            q(key),
            Backticks.model_from(model)
        ))
        .await
    }

    pub(super) async fn snapshot_rows(
        &self,
        s: &Snapshot,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SnapshotRow>, SourceError> {
        let mut conn = self.connect().await?;
        let rows: Vec<StoredRow> = conn
            .exec(
                format!(
                    "SELECT `key`, wfp, lfp, note FROM {} WHERE `key` > ? ORDER BY `key` LIMIT {limit}",
                    table(s)
                ),
                (My::Bytes(after.as_bytes().to_vec()),),
            )
            .await
            .map_err(query_error)?;
        let _ = conn.disconnect().await;
        Ok(rows
            .into_iter()
            .map(|(key, wfp, lfp, note)| SnapshotRow {
                key: String::from_utf8_lossy(&key).into_owned(),
                warehouse_fingerprint: wfp.map(|w| w as i64),
                fingerprint: lfp as u64,
                note: note.map(|n| String::from_utf8_lossy(&n).into_owned()),
            })
            .collect())
    }

    pub(super) async fn snapshot_drop(&self, s: &Snapshot) -> Result<(), SourceError> {
        let sql = format!("DROP TABLE IF EXISTS {}", table(s));
        self.writing(move |c| Box::pin(c.query_drop(sql))).await
    }
}
