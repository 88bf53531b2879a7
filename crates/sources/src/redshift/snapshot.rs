//! Change detection in Redshift: a snapshot table per sync in `sallyport_schema`
//! (`"key" varchar(3072)`, `wfp char(16)`, `lfp int8`, `note varchar(65535)`; on Redshift
//! distributed and sorted by key). Redshift has no binary parameters and no per-type hash of a
//! record, so everything goes as text: the warehouse fingerprints a row as the first 16 hex
//! digits of the MD5 of its mapped columns, each as `<octets>:<text>` (NULL as `~`), behind
//! the salt; acknowledged keys go into a temporary staging table and one `MERGE` per batch.
//! The model is only ever run inside [`RedshiftSource::run`]'s read-only transactions.

use futures_util::{pin_mut, StreamExt};
use sallyport_core::Model;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use super::{query_error, Decode, RedshiftSource};
use crate::{AnsiQuotes, Dialect, DiffSpec, Row, RowStream, Snapshot, SnapshotRow, SourceError};

/// Rows per `INSERT` into the staging table.
const PER_INSERT: usize = 1000;

fn q(name: &str) -> String {
    AnsiQuotes.quote_ident(name)
}

/// A string literal that reads the same whether or not the server takes backslashes as escapes
/// (Redshift does, PostgreSQL does not): quotes doubled, backslashes spliced in as `CHR(92)`.
pub(super) fn lit(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\'', "''").replace('\\', "' || CHR(92) || '")
    )
}

/// `"schema"."snapshot_…"`.
fn table(s: &Snapshot) -> String {
    format!("{}.{}", q(&s.schema), q(&s.table()))
}

/// A mapped column as text for the fingerprint: Redshift cannot cast a boolean to text, and
/// writes `SUPER` values with `JSON_SERIALIZE`; values that cannot be sent count only as
/// present or NULL (their rows fail, and failed rows are always read again).
pub(super) fn as_text(column: &str, type_name: &str, decode: Decode) -> String {
    match decode {
        Decode::Bool => format!("CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END"),
        Decode::Json if type_name.eq_ignore_ascii_case("super") => {
            format!("JSON_SERIALIZE({column})")
        }
        Decode::Unsupported(_) => format!("CASE WHEN {column} IS NOT NULL THEN '?' END"),
        // Text as it is: a cast to `varchar` without a length could cut a long value short.
        Decode::Text if is_text(type_name) => column.to_string(),
        _ => format!("{column}::varchar"),
    }
}

/// Whether a type name is one of text's (`character varying(256)`, `varchar`, `char(2)`, ...).
fn is_text(type_name: &str) -> bool {
    let t = type_name.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or("").trim();
    matches!(
        base,
        "character varying"
            | "varchar"
            | "character"
            | "char"
            | "bpchar"
            | "text"
            | "name"
            | "nvarchar"
            | "nchar"
    )
}

/// The warehouse's fingerprint (16 hex digits) of columns given as text, behind `salt`: each
/// column hashed on its own (a row's columns together could pass `varchar`'s 65,535 bytes),
/// then their digests.
fn fingerprint(texts: &[String], salt: &str) -> String {
    let seed = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(salt.as_bytes()));
    let mut parts = vec![format!("'{seed}'")];
    for t in texts {
        // The length first: no two different values read the same; NULL apart.
        parts.push(format!(
            "COALESCE(MD5(OCTET_LENGTH({t})::varchar || ':' || {t}), '~')"
        ));
    }
    format!("LEFT(MD5({}), 16)", parts.join(" || "))
}

/// The SQL of a diff read, as PostgreSQL's: the model's rows, each with the warehouse's
/// fingerprint and what the snapshot holds for its key, only those that differ unless every
/// row is asked for.
pub(super) fn diff_sql(
    model: &Model,
    key: &str,
    select: &[String],
    texts: &[String],
    d: &DiffSpec<'_>,
) -> String {
    let wfp = match d.fingerprint {
        Some(f) => fingerprint(texts, &f.salt),
        None => "'0000000000000000'".into(),
    };
    crate::snapshots::diff_sql(
        model,
        key,
        select,
        d,
        crate::snapshots::DiffSql {
            dialect: &AnsiQuotes,
            table: table(d.snapshot),
            fingerprint: wfp,
            key_text: &|k| format!("{k}::varchar"),
            differs: &crate::snapshots::plainly_differs,
        },
    )
}

/// Reads what a diff read appends to a row (at `at`, and, unless the snapshot was empty,
/// `at + 1` and `at + 2`).
pub(super) fn diff_of(row: &SimpleQueryRow, at: usize, empty: bool) -> crate::Diff {
    let text = |i: usize| if empty { None } else { row.get(i) };
    crate::snapshots::diff_of_texts(row.get(at), text(at + 1), text(at + 2), empty)
}

/// The rows of a statement run as a simple query.
async fn rows(client: &Client, sql: &str) -> Result<Vec<SimpleQueryRow>, SourceError> {
    let messages = client.simple_query_raw(sql).await.map_err(query_error)?;
    pin_mut!(messages);
    let mut rows = Vec::new();
    while let Some(m) = messages.next().await {
        if let SimpleQueryMessage::Row(r) = m.map_err(query_error)? {
            rows.push(r);
        }
    }
    Ok(rows)
}

impl RedshiftSource {
    /// The connection snapshot writes go over (opened once, dropped after a failure).
    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, SourceError> {
        let mut w = self.writer.lock().await;
        // A connection closed while idle is opened again.
        if let Some(c) = w.as_ref() {
            if c.is_closed() || c.simple_query("SELECT 1").await.is_err() {
                *w = None;
            }
        }
        if w.is_none() {
            *w = Some(self.connector.connect().await?);
        }
        Ok(w)
    }

    /// Runs statements in order on the writer (in a transaction when they open one): each its
    /// own round trip, so that no one statement passes Redshift's 16 MB.
    async fn write(&self, statements: &[String]) -> Result<(), SourceError> {
        let mut w = self.writer().await?;
        let client = w.as_ref().expect("connected");
        for sql in statements {
            if let Err(e) = client.batch_execute(sql).await {
                // Its transaction is aborted: the connection goes (rolling it back), and the
                // next write opens a new one.
                *w = None;
                return Err(query_error(e));
            }
        }
        Ok(())
    }

    pub(super) async fn snapshot_check(&self, schema: &str) -> Result<(), SourceError> {
        let found = rows(
            &self.client,
            &crate::postgres::snapshot::grants_sql(&lit(schema)),
        )
        .await?;
        let r = found
            .first()
            .ok_or_else(|| SourceError::Query("the grants query returned no row".into()))?;
        let flag = |i| r.get(i).map(|t| t == "t" || t == "true");
        crate::postgres::snapshot::grants(
            r.get(0).unwrap_or_default(),
            r.get(1).unwrap_or_default(),
            schema,
            flag(2).unwrap_or(false),
            flag(3).unwrap_or(false),
            flag(4),
        )?;
        // Each batch is staged in a temporary table.
        let temp = rows(
            &self.client,
            "SELECT has_database_privilege(current_database(), 'TEMP')",
        )
        .await?;
        if temp.first().and_then(|r| r.get(0)) == Some("f") {
            return Err(SourceError::Other(format!(
                "change_detection: warehouse stages each batch in a temporary table, and user `{}` may not create one: run `GRANT TEMP ON DATABASE {} TO {};`",
                r.get(0).unwrap_or_default(),
                q(r.get(1).unwrap_or_default()),
                q(r.get(0).unwrap_or_default())
            )));
        }
        Ok(())
    }

    pub(super) async fn snapshot_count(&self, s: &Snapshot) -> Result<Option<u64>, SourceError> {
        let found = rows(
            &self.client,
            &format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = {} AND tablename = {}",
                lit(&s.schema),
                lit(&s.table())
            ),
        )
        .await?;
        if found.first().and_then(|r| r.get(0)) == Some("0") {
            return Ok(None);
        }
        let n = rows(&self.client, &format!("SELECT count(*) FROM {}", table(s))).await?;
        Ok(Some(
            n.first()
                .and_then(|r| r.get(0))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        ))
    }

    pub(super) async fn snapshot_prepare(&self, s: &Snapshot) -> Result<(u64, bool), SourceError> {
        if let Some(n) = self.snapshot_count(s).await? {
            return Ok((n, true));
        }
        self.snapshot_check(&s.schema).await?;
        let version = rows(&self.client, "SELECT version()").await?;
        let on_redshift = version
            .first()
            .and_then(|r| r.get(0))
            .is_some_and(|v| v.contains("Redshift"));
        self.write(&[format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {} (\"key\" varchar(3072) NOT NULL, wfp char(16), lfp int8 NOT NULL, note varchar(65535), PRIMARY KEY (\"key\")){}",
            q(&s.schema),
            table(s),
            if on_redshift { " DISTKEY (\"key\") SORTKEY (\"key\")" } else { "" }
        )])
        .await?;
        Ok((0, false))
    }

    pub(super) async fn snapshot_write(
        &self,
        s: &Snapshot,
        rows: &[SnapshotRow],
        removed: &[String],
    ) -> Result<(), SourceError> {
        if rows.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let t = table(s);
        let mut sql = vec!["BEGIN".to_string()];
        if !rows.is_empty() {
            let kept = crate::snapshots::last_of_each_key(rows);
            sql.push(
                "CREATE TEMP TABLE IF NOT EXISTS sallyport_stage (\"key\" varchar(3072), wfp char(16), lfp int8, note varchar(65535)); DELETE FROM sallyport_stage".into(),
            );
            for part in kept.chunks(PER_INSERT) {
                let values: Vec<String> = part
                    .iter()
                    .map(|r| {
                        format!(
                            "({}, {}, {}, {})",
                            lit(&r.key),
                            r.warehouse_fingerprint.map_or("NULL".into(), |w| format!(
                                "'{}'",
                                crate::snapshots::hex(w)
                            )),
                            r.fingerprint as i64,
                            r.note.as_deref().map_or("NULL".into(), lit)
                        )
                    })
                    .collect();
                sql.push(format!(
                    "INSERT INTO sallyport_stage VALUES {}",
                    values.join(", ")
                ));
            }
            sql.push(format!(
                "MERGE INTO {t} USING sallyport_stage AS st ON {t}.\"key\" = st.\"key\"
                 WHEN MATCHED THEN UPDATE SET wfp = st.wfp, lfp = st.lfp, note = COALESCE(st.note, {t}.note)
                 WHEN NOT MATCHED THEN INSERT (\"key\", wfp, lfp, note) VALUES (st.\"key\", st.wfp, st.lfp, st.note)"
            ));
        }
        for part in removed.chunks(PER_INSERT) {
            let keys: Vec<String> = part.iter().map(|k| lit(k)).collect();
            sql.push(format!(
                "DELETE FROM {t} WHERE \"key\" IN ({})",
                keys.join(", ")
            ));
        }
        sql.push("COMMIT".into());
        self.write(&sql).await
    }

    /// A one-number query over the model, run like any read of it.
    async fn number(&self, sql: String) -> Result<u64, SourceError> {
        let mut stream = self
            .run(sql, |r| {
                Ok(Row::new(r.get(0).map(str::to_string), Vec::new()))
            })
            .await?;
        let mut n = 0;
        while let Some(chunk) = stream.recv().await {
            for r in chunk? {
                n = r.key.and_then(|k| k.parse().ok()).unwrap_or(0);
            }
        }
        Ok(n)
    }

    fn absent_from(s: &Snapshot, model: &Model, key: &str) -> String {
        format!(
            "FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} WHERE m.{}::varchar = s.\"key\")",
            table(s),
            AnsiQuotes.model_from(model),
            q(key)
        )
    }

    pub(super) async fn snapshot_absent_count(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<u64, SourceError> {
        self.number(format!(
            "SELECT count(*) {}",
            Self::absent_from(s, model, key)
        ))
        .await
    }

    pub(super) async fn snapshot_absent(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<RowStream, SourceError> {
        let sql = format!(
            "SELECT s.\"key\", s.note {}",
            Self::absent_from(s, model, key)
        );
        self.run(sql, |r| {
            Ok(Row::new(
                r.get(0).map(str::to_string),
                vec![r
                    .get(1)
                    .map_or(serde_json::Value::Null, |n| n.to_string().into())],
            ))
        })
        .await
    }

    pub(super) async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        self.number(format!(
            "SELECT count(m.{}) FROM {}",
            q(key),
            AnsiQuotes.model_from(model)
        ))
        .await
    }

    pub(super) async fn snapshot_rows(
        &self,
        s: &Snapshot,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SnapshotRow>, SourceError> {
        let found = rows(
            &self.client,
            &format!(
                "SELECT \"key\", wfp, lfp, note FROM {} WHERE \"key\" > {} ORDER BY \"key\" LIMIT {limit}",
                table(s),
                lit(after)
            ),
        )
        .await?;
        Ok(found
            .iter()
            .map(|r| SnapshotRow {
                key: r.get(0).unwrap_or_default().to_string(),
                warehouse_fingerprint: r.get(1).and_then(crate::snapshots::unhex),
                fingerprint: r.get(2).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0) as u64,
                note: r.get(3).map(str::to_string),
            })
            .collect())
    }

    pub(super) async fn snapshot_drop(&self, s: &Snapshot) -> Result<(), SourceError> {
        self.write(&[format!("DROP TABLE IF EXISTS {}", table(s))])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_read_the_same_whatever_the_server_does_with_backslashes() {
        assert_eq!(lit("o'hara"), "'o''hara'");
        assert_eq!(lit(r"a\b"), r"'a' || CHR(92) || 'b'");
    }
}
