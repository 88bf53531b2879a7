//! Change detection in Snowflake: a snapshot table per sync in `sallyport_schema` (default
//! `SALLYPORT`) of the configured database (`"key" VARCHAR`, `"wfp" VARCHAR(16)`, `"lfp"
//! NUMBER(19,0)`, `"note" VARCHAR`). The warehouse fingerprints a row as the first 16 hex digits
//! of the MD5 of its mapped columns, each as `<length>:<text>` (NULL as `~`, semi-structured
//! values as their JSON), behind the salt; each batch of acknowledged and removed keys is applied
//! by `MERGE` statements whose source is the batch itself (`FROM VALUES`), each atomic.

use sallyport_core::Model;
use serde_json::Value;

use super::{RowType, SnowflakeSource};
use crate::{AnsiQuotes, Dialect, DiffSpec, Row, RowStream, Snapshot, SnapshotRow, SourceError};

/// The most rows and SQL text one MERGE carries (Snowflake takes 16,384 rows in a `VALUES`
/// and 1 MB of text).
const MERGE_ROWS: usize = 10_000;
const MERGE_BYTES: usize = 512 * 1024;

fn q(name: &str) -> String {
    AnsiQuotes.quote_ident(name)
}

/// A name as Snowflake stores it: one written as a plain identifier (`analytics`) is upper
/// case (`ANALYTICS`), as the sign-in and unquoted SQL read it; any other is kept as written.
pub(super) fn resolved(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    }
}

/// A Snowflake string literal: quotes doubled, backslashes (Snowflake's escape) doubled.
pub(super) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A mapped column as text for the fingerprint: semi-structured values as JSON, the rest as
/// `VARCHAR`.
pub(super) fn as_text(column: &str, t: &RowType) -> String {
    match t.kind.as_str() {
        "variant" | "object" | "array" => format!("TO_JSON({column})"),
        _ => format!("{column}::VARCHAR"),
    }
}

/// The warehouse's fingerprint (16 hex digits) of columns given as text, behind `salt`.
fn fingerprint(texts: &[String], salt: &str) -> String {
    let seed = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(salt.as_bytes()));
    let mut parts = vec![format!("'{seed}'")];
    for t in texts {
        parts.push(format!("COALESCE(LENGTH({t})::VARCHAR || ':' || {t}, '~')"));
    }
    format!("LEFT(MD5({}), 16)", parts.join(" || '|' || "))
}

/// Reads what a diff read appends to a row (`cells[at..]`).
pub(super) fn diff_of(cells: &[Option<String>], at: usize, empty: bool) -> crate::Diff {
    let cell = |i: usize| cells.get(i).and_then(|c| c.as_deref());
    crate::snapshots::diff_of_texts(cell(at), cell(at + 1), cell(at + 2), empty)
}

impl SnowflakeSource {
    /// `"database"."schema"`: where the snapshot tables of `schema` live.
    fn home(&self, schema: &str) -> String {
        format!(
            "{}.{}",
            q(&resolved(&self.api.settings.database)),
            q(&resolved(schema))
        )
    }

    fn table(&self, s: &Snapshot) -> String {
        format!("{}.{}", self.home(&s.schema), q(&s.table()))
    }

    /// The SQL of a diff read, as PostgreSQL's: each model row (its `columns` by name) with the
    /// warehouse's fingerprint and what the snapshot holds for its key, only those that differ
    /// unless every row is asked for.
    pub(super) fn diff_sql(
        &self,
        model: &Model,
        key: &str,
        columns: &[RowType],
        hashed: &[usize],
        d: &DiffSpec<'_>,
    ) -> String {
        let wfp = match d.fingerprint {
            Some(f) => {
                let texts: Vec<String> = hashed
                    .iter()
                    .map(|&i| as_text(&format!("q.{}", q(&columns[i].name)), &columns[i]))
                    .collect();
                fingerprint(&texts, &f.salt)
            }
            None => "'0000000000000000'".into(),
        };
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("m.{}", q(&c.name)))
            .collect();
        crate::snapshots::diff_sql(
            model,
            key,
            &select,
            d,
            crate::snapshots::DiffSql {
                dialect: &AnsiQuotes,
                table: self.table(d.snapshot),
                fingerprint: wfp,
                key_text: &|k| format!("{k}::VARCHAR"),
                differs: &crate::snapshots::plainly_differs,
            },
        )
    }

    /// Every row of a (small) statement, as text cells.
    async fn cells(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let first = self.api.execute(sql).await?;
        let mut stream = self.stream(first, |cells| {
            Row::new(
                None,
                cells
                    .into_iter()
                    .map(|c| c.map_or(Value::Null, Value::String))
                    .collect(),
            )
        })?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.recv().await {
            for r in chunk? {
                out.push(
                    r.values
                        .into_iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    async fn number(&self, sql: &str) -> Result<u64, SourceError> {
        let rows = self.cells(sql).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }

    pub(super) async fn snapshot_check(&self, schema: &str) -> Result<(), SourceError> {
        // Snowflake's grants pass through role hierarchies that no catalog view resolves for
        // the current role: what is needed is tried instead. The schema is made when missing
        // (as the first run would), and a table made and dropped in it.
        let role = self
            .cells("SELECT CURRENT_ROLE()")
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_else(|| "<role>".into());
        let db = q(&resolved(&self.api.settings.database));
        let exists = self
            .number(&format!(
                "SELECT COUNT(*) FROM {db}.INFORMATION_SCHEMA.SCHEMATA WHERE SCHEMA_NAME = {}",
                lit(&resolved(schema))
            ))
            .await?
            > 0;
        if !exists {
            if let Err(e) = self
                .api
                .execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    self.home(schema)
                ))
                .await
            {
                return Err(SourceError::Other(format!(
                    "change_detection: warehouse needs the schema `{schema}` in database {db}, and role `{role}` could not create it ({e}): run `CREATE SCHEMA {} ; GRANT USAGE, CREATE TABLE ON SCHEMA {} TO ROLE {};` or `GRANT CREATE SCHEMA ON DATABASE {db} TO ROLE {};`",
                    self.home(schema),
                    self.home(schema),
                    q(&role),
                    q(&role)
                )));
            }
            // Snowflake makes a schema it creates the session's current one: the models'
            // names are resolved in the configured one again.
            let back = match &self.api.settings.schema {
                Some(s) => format!("USE SCHEMA {db}.{}", q(&resolved(s))),
                None => format!("USE DATABASE {db}"),
            };
            self.api.execute(&back).await?;
        }
        let probe = format!("{}.{}", self.home(schema), q("sallyport_check"));
        let tried = match self
            .api
            .execute(&format!(
                "CREATE TRANSIENT TABLE IF NOT EXISTS {probe} (\"k\" VARCHAR)"
            ))
            .await
        {
            Ok(_) => self
                .api
                .execute(&format!("DROP TABLE IF EXISTS {probe}"))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        tried.map_err(|e| {
            SourceError::Other(format!(
                "change_detection: warehouse needs to create and write tables in schema `{schema}` of database {db}, and role `{role}` may not ({e}): run `GRANT USAGE, CREATE TABLE ON SCHEMA {} TO ROLE {};`",
                self.home(schema),
                q(&role)
            ))
        })
    }

    pub(super) async fn snapshot_count(&self, s: &Snapshot) -> Result<Option<u64>, SourceError> {
        let exists = self
            .number(&format!(
                "SELECT COUNT(*) FROM {}.INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                q(&resolved(&self.api.settings.database)),
                lit(&resolved(&s.schema)),
                lit(&s.table())
            ))
            .await?;
        if exists == 0 {
            return Ok(None);
        }
        Ok(Some(
            self.number(&format!("SELECT COUNT(*) FROM {}", self.table(s)))
                .await?,
        ))
    }

    pub(super) async fn snapshot_prepare(&self, s: &Snapshot) -> Result<(u64, bool), SourceError> {
        if let Some(n) = self.snapshot_count(s).await? {
            return Ok((n, true));
        }
        self.snapshot_check(&s.schema).await?;
        self.api
            .execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (\"key\" VARCHAR NOT NULL PRIMARY KEY, \"wfp\" VARCHAR(16), \"lfp\" NUMBER(19,0) NOT NULL, \"note\" VARCHAR)",
                self.table(s)
            ))
            .await?;
        Ok((0, false))
    }

    pub(super) async fn snapshot_write(
        &self,
        s: &Snapshot,
        rows: &[SnapshotRow],
        removed: &[String],
    ) -> Result<(), SourceError> {
        let entries: Vec<String> = crate::snapshots::with_removals(rows, removed)
            .into_iter()
            .map(|(r, gone)| {
                format!(
                    "({}, {}, {}, {}, {gone})",
                    lit(&r.key),
                    r.warehouse_fingerprint
                        .map_or("NULL".into(), |w| format!("'{}'", crate::snapshots::hex(w))),
                    r.fingerprint as i64,
                    r.note.as_deref().map_or("NULL".into(), lit),
                )
            })
            .collect();
        // Each part of the batch is one MERGE whose source is the part itself: a statement
        // is atomic, and nothing is shared between statements (a statement of a process that
        // was killed may still be running in Snowflake: a shared staging table could take its
        // rows).
        let t = self.table(s);
        for part in crate::snapshots::parts(&entries, MERGE_ROWS, MERGE_BYTES) {
            self.api
                .execute(&format!(
                    "MERGE INTO {t} AS t USING (SELECT column1::VARCHAR AS \"key\", column2::VARCHAR AS \"wfp\", column3::NUMBER(19,0) AS \"lfp\", column4::VARCHAR AS \"note\", column5::BOOLEAN AS \"gone\" FROM VALUES {}) AS st ON t.\"key\" = st.\"key\"
                     WHEN MATCHED AND st.\"gone\" THEN DELETE
                     WHEN MATCHED THEN UPDATE SET \"wfp\" = st.\"wfp\", \"lfp\" = st.\"lfp\", \"note\" = COALESCE(st.\"note\", t.\"note\")
                     WHEN NOT MATCHED AND NOT st.\"gone\" THEN INSERT (\"key\", \"wfp\", \"lfp\", \"note\") VALUES (st.\"key\", st.\"wfp\", st.\"lfp\", st.\"note\")",
                    part.join(", ")
                ))
                .await?;
        }
        Ok(())
    }

    fn absent_from(&self, s: &Snapshot, model: &Model, key: &str) -> String {
        format!(
            "FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} WHERE m.{}::VARCHAR = s.\"key\")",
            self.table(s),
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
        self.number(&format!(
            "SELECT COUNT(*) {}",
            self.absent_from(s, model, key)
        ))
        .await
    }

    pub(super) async fn snapshot_absent(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<RowStream, SourceError> {
        let first = self
            .api
            .execute(&format!(
                "SELECT s.\"key\", s.\"note\" {}",
                self.absent_from(s, model, key)
            ))
            .await?;
        self.stream(first, |cells| {
            let mut cells = cells.into_iter();
            let key = cells.next().flatten();
            let note = cells.next().flatten();
            Row::new(key, vec![note.map_or(Value::Null, Value::String)])
        })
    }

    pub(super) async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        self.number(&format!(
            "SELECT COUNT(m.{}) FROM {}",
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
        let rows = self
            .cells(&format!(
                "SELECT \"key\", \"wfp\", \"lfp\", \"note\" FROM {} WHERE \"key\" > {} ORDER BY \"key\" LIMIT {limit}",
                self.table(s),
                lit(after)
            ))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let cell = |i: usize| r.get(i).cloned().flatten();
                SnapshotRow {
                    key: cell(0).unwrap_or_default(),
                    warehouse_fingerprint: cell(1).as_deref().and_then(crate::snapshots::unhex),
                    fingerprint: cell(2).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0) as u64,
                    note: cell(3),
                }
            })
            .collect())
    }

    pub(super) async fn snapshot_drop(&self, s: &Snapshot) -> Result<(), SourceError> {
        self.api
            .execute(&format!("DROP TABLE IF EXISTS {}", self.table(s)))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_upper_case_as_snowflake_stores_them() {
        assert_eq!(resolved("analytics"), "ANALYTICS");
        assert_eq!(resolved("Sallyport_1$"), "SALLYPORT_1$");
        assert_eq!(resolved("my db"), "my db");
        assert_eq!(resolved("1st"), "1st");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(lit("o'hara"), "'o''hara'");
        assert_eq!(lit(r"a\b"), r"'a\\b'");
    }
}
