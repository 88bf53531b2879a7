//! Change detection in BigQuery: a snapshot table per sync in the `sallyport_schema` dataset
//! (default `sallyport`) of the project (`key STRING`, `wfp STRING`, `lfp INT64`, `note
//! STRING`). The warehouse fingerprints a row as the first 16 hex digits of the MD5 of its
//! mapped columns as one JSON object (`TO_JSON_STRING(STRUCT(...))`, which tells NULL from
//! `'null'` and numbers from text), behind the salt. Each batch of acknowledged and removed keys
//! is one `MERGE` whose source is the batch itself (`UNNEST` of an array of rows: BigQuery's
//! staging without a table), split where the statement would pass 512 KB.

use sallyport_core::Model;
use serde_json::Value;

use super::{key_text, BigQueryQuotes, BigQuerySource};
use crate::{Dialect, DiffSpec, Row, RowStream, Snapshot, SnapshotRow, SourceError};

/// The most SQL text one MERGE carries (BigQuery takes up to 1 MB).
const MERGE_BYTES: usize = 512 * 1024;

fn q(name: &str) -> String {
    BigQueryQuotes.quote_ident(name)
}

/// A BigQuery string literal: backslash escapes for the quote, the backslash and control
/// characters (a quoted string may not hold a line break).
pub(super) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `` `dataset`.`snapshot_…` ``.
fn table(s: &Snapshot) -> String {
    format!("{}.{}", q(&s.schema), q(&s.table()))
}

/// The warehouse's fingerprint (16 hex digits) of `columns` (of `q`) behind `salt`.
fn fingerprint(columns: &[&str], salt: &str) -> String {
    let seed = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(salt.as_bytes()));
    if columns.is_empty() {
        return format!("SUBSTR(TO_HEX(MD5('{seed}')), 1, 16)");
    }
    let fields: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("q.{} AS c{i}", q(c)))
        .collect();
    format!(
        "SUBSTR(TO_HEX(MD5(CONCAT('{seed}', TO_JSON_STRING(STRUCT({}))))), 1, 16)",
        fields.join(", ")
    )
}

/// The SQL of a diff read, as PostgreSQL's: each model row (its `columns` by name) with the
/// warehouse's fingerprint and what the snapshot holds for its key, only those that differ
/// unless every row is asked for.
pub(super) fn diff_sql(
    model: &Model,
    key: &str,
    columns: &[String],
    hashed: &[&str],
    d: &DiffSpec<'_>,
) -> String {
    let wfp = match d.fingerprint {
        Some(f) => fingerprint(hashed, &f.salt),
        None => "'0000000000000000'".into(),
    };
    let select: Vec<String> = columns.iter().map(|c| format!("m.{}", q(c))).collect();
    crate::snapshots::diff_sql(
        model,
        key,
        &select,
        d,
        crate::snapshots::DiffSql {
            dialect: &BigQueryQuotes,
            table: table(d.snapshot),
            fingerprint: wfp,
            key_text: &|k| format!("CAST({k} AS STRING)"),
            differs: &crate::snapshots::plainly_differs,
        },
    )
}

/// Reads what a diff read appends to a row (`cells[at..]`).
pub(super) fn diff_of(cells: &[Value], at: usize, empty: bool) -> crate::Diff {
    let cell = |i: usize| key_text(cells.get(i));
    let (wfp, lfp, note) = (cell(at), cell(at + 1), cell(at + 2));
    crate::snapshots::diff_of_texts(wfp.as_deref(), lfp.as_deref(), note.as_deref(), empty)
}

impl BigQuerySource {
    /// Every row of a (small) query, as text cells.
    async fn texts(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let first = self.api.query(sql).await?;
        let mut stream = self.stream(first, |cells| {
            Row::new(
                None,
                cells
                    .iter()
                    .map(|c| key_text(Some(c)).map_or(Value::Null, Value::String))
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
        Ok(self
            .texts(sql)
            .await?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|t| t.parse().ok())
            .unwrap_or(0))
    }

    fn dataset_url(&self, dataset: &str) -> String {
        format!("{}/datasets/{dataset}", self.api.project_url())
    }

    pub(super) async fn snapshot_check(&self, dataset: &str) -> Result<(), SourceError> {
        // IAM roles are granted on projects and datasets and pass through groups: what is
        // needed is tried instead. The dataset is made when missing (as the first run would),
        // and a table made and dropped in it.
        let project = self.api.settings.project.clone();
        if !self.api.found(&self.dataset_url(dataset)).await? {
            let mut body = serde_json::json!({
                "datasetReference": {"projectId": project, "datasetId": dataset}
            });
            if let Some(l) = &self.api.settings.location {
                body["location"] = serde_json::json!(l);
            }
            let made = self
                .api
                .call(
                    self.api
                        .http
                        .post(format!("{}/datasets", self.api.project_url()))
                        .json(&body),
                )
                .await;
            if let Err(e) = made {
                return Err(SourceError::Other(format!(
                    "change_detection: warehouse needs the dataset `{dataset}` in project `{project}`, and the credentials could not create it ({e}): create it (in the models' location), or grant the service account roles/bigquery.dataEditor on the project"
                )));
            }
        }
        let probe = format!("{}.{}", q(dataset), q("sallyport_check"));
        let tried = match self
            .api
            .query(&format!("CREATE TABLE IF NOT EXISTS {probe} (k STRING)"))
            .await
        {
            Ok(_) => self
                .api
                .query(&format!("DROP TABLE IF EXISTS {probe}"))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        tried.map_err(|e| {
            SourceError::Other(format!(
                "change_detection: warehouse needs to create and write tables in dataset `{dataset}` of project `{project}`, and the credentials may not ({e}): grant the service account roles/bigquery.dataEditor on the dataset"
            ))
        })
    }

    pub(super) async fn snapshot_count(&self, s: &Snapshot) -> Result<Option<u64>, SourceError> {
        let url = format!("{}/tables/{}", self.dataset_url(&s.schema), s.table());
        if !self.api.found(&url).await? {
            return Ok(None);
        }
        Ok(Some(
            self.number(&format!("SELECT COUNT(*) FROM {}", table(s)))
                .await?,
        ))
    }

    pub(super) async fn snapshot_prepare(&self, s: &Snapshot) -> Result<(u64, bool), SourceError> {
        if let Some(n) = self.snapshot_count(s).await? {
            return Ok((n, true));
        }
        self.snapshot_check(&s.schema).await?;
        self.api
            .query(&format!(
                "CREATE TABLE IF NOT EXISTS {} (key STRING NOT NULL, wfp STRING, lfp INT64 NOT NULL, note STRING) CLUSTER BY key",
                table(s)
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
                    "STRUCT({} AS key, {} AS wfp, {} AS lfp, {} AS note, {gone} AS gone)",
                    lit(&r.key),
                    r.warehouse_fingerprint
                        .map_or("CAST(NULL AS STRING)".into(), |w| format!(
                            "'{}'",
                            crate::snapshots::hex(w)
                        )),
                    r.fingerprint as i64,
                    r.note.as_deref().map_or("CAST(NULL AS STRING)".into(), lit),
                )
            })
            .collect();
        let t = table(s);
        for part in crate::snapshots::parts(&entries, usize::MAX, MERGE_BYTES) {
            self.api
                .query(&format!(
                    "MERGE {t} AS t USING (SELECT * FROM UNNEST([{}])) AS st ON t.key = st.key
                     WHEN MATCHED AND st.gone THEN DELETE
                     WHEN MATCHED THEN UPDATE SET wfp = st.wfp, lfp = st.lfp, note = COALESCE(st.note, t.note)
                     WHEN NOT MATCHED AND NOT st.gone THEN INSERT (key, wfp, lfp, note) VALUES (st.key, st.wfp, st.lfp, st.note)",
                    part.join(", ")
                ))
                .await?;
        }
        Ok(())
    }

    fn absent_from(s: &Snapshot, model: &Model, key: &str) -> String {
        format!(
            "FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} WHERE CAST(m.{} AS STRING) = s.key)",
            table(s),
            BigQueryQuotes.model_from(model),
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
        let first = self
            .api
            .query(&format!(
                "SELECT s.key, s.note {}",
                Self::absent_from(s, model, key)
            ))
            .await?;
        self.stream(first, |cells| {
            Row::new(
                key_text(cells.first()),
                vec![key_text(cells.get(1)).map_or(Value::Null, Value::String)],
            )
        })
    }

    pub(super) async fn count_keys(&self, model: &Model, key: &str) -> Result<u64, SourceError> {
        self.number(&format!(
            "SELECT COUNT(m.{}) FROM {}",
            q(key),
            BigQueryQuotes.model_from(model)
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
            .texts(&format!(
                "SELECT key, wfp, lfp, note FROM {} WHERE key > {} ORDER BY key LIMIT {limit}",
                table(s),
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
            .query(&format!("DROP TABLE IF EXISTS {}", table(s)))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_what_a_quoted_string_cannot_hold() {
        assert_eq!(lit("o'hara"), r"'o\'hara'");
        assert_eq!(lit("a\\b\nc\u{1}"), r"'a\\b\nc\x01'");
    }
}
