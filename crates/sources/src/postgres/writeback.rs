//! Run logs in PostgreSQL (`writeback:`): `sync_runs`, `sync_failures` and `sync_changelog` in
//! the writeback schema, created on first use, written over the snapshot writer's connection
//! (the model's own sessions are read-only) in one transaction per run.

use super::{query_error, quote_ident, PgSource};
use crate::writeback::{RunLog, WriteBack, RUN_COLUMNS};
use crate::SourceError;

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// The tables, in `{schema}`.
fn tables(schema: &str) -> String {
    let s = quote_ident(schema);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.sync_runs (
            sync TEXT NOT NULL, run_id BIGINT NOT NULL, status TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ NOT NULL,
            duration_ms BIGINT NOT NULL, full_resync BOOLEAN NOT NULL,
            rows_read BIGINT NOT NULL, rows_new BIGINT NOT NULL, rows_changed BIGINT NOT NULL,
            rows_unchanged BIGINT NOT NULL, rows_sent BIGINT NOT NULL, rows_failed BIGINT NOT NULL,
            rows_removed BIGINT NOT NULL, requests BIGINT NOT NULL, retries BIGINT NOT NULL,
            error TEXT, worker TEXT,
            PRIMARY KEY (sync, run_id));
         CREATE TABLE IF NOT EXISTS {s}.sync_failures (
            sync TEXT NOT NULL, run_id BIGINT NOT NULL, row_key TEXT NOT NULL,
            reason TEXT NOT NULL, attempts BIGINT NOT NULL,
            PRIMARY KEY (sync, run_id, row_key));
         CREATE TABLE IF NOT EXISTS {s}.sync_changelog (
            sync TEXT NOT NULL, run_id BIGINT NOT NULL, row_key TEXT NOT NULL,
            operation TEXT NOT NULL,
            PRIMARY KEY (sync, run_id, row_key));"
    )
}

impl PgSource {
    pub(super) async fn write_back(&self, w: &WriteBack, log: &RunLog) -> Result<(), SourceError> {
        let s = quote_ident(&w.schema);
        let mut writer = self.writer().await?;
        let c = writer.as_mut().expect("connected");
        // Several processes may create the tables at once: one after another.
        let tx = c.transaction().await.map_err(query_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("sallyport writeback {}", w.schema)],
        )
        .await
        .map_err(query_error)?;
        tx.batch_execute(&tables(&w.schema))
            .await
            .map_err(query_error)?;
        let f = log.figures();
        tx.execute(
            &format!(
                "INSERT INTO {s}.sync_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3,
                    to_timestamp($4::float8 / 1000), to_timestamp($5::float8 / 1000), $6, $7,
                    $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
                 ON CONFLICT (sync, run_id) DO NOTHING"
            ),
            &[
                &log.sync as Param,
                &log.run_id,
                &log.status,
                &(log.started_at as f64),
                &(log.finished_at as f64),
                &log.duration_ms(),
                &log.full_resync,
                &f[0],
                &f[1],
                &f[2],
                &f[3],
                &f[4],
                &f[5],
                &f[6],
                &f[7],
                &f[8],
                &log.error,
                &log.worker,
            ],
        )
        .await
        .map_err(query_error)?;
        if !log.failures.is_empty() {
            let keys: Vec<&str> = log.failures.iter().map(|f| f.0.as_str()).collect();
            let reasons: Vec<&str> = log.failures.iter().map(|f| f.1.as_str()).collect();
            let attempts: Vec<i64> = log.failures.iter().map(|f| f.2).collect();
            tx.execute(
                &format!(
                    "INSERT INTO {s}.sync_failures (sync, run_id, row_key, reason, attempts)
                     SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::int8[])
                     ON CONFLICT DO NOTHING"
                ),
                &[&log.sync as Param, &log.run_id, &keys, &reasons, &attempts],
            )
            .await
            .map_err(query_error)?;
        }
        if !log.changelog.is_empty() {
            let keys: Vec<&str> = log.changelog.iter().map(|c| c.0.as_str()).collect();
            let ops: Vec<&str> = log.changelog.iter().map(|c| c.1).collect();
            tx.execute(
                &format!(
                    "INSERT INTO {s}.sync_changelog (sync, run_id, row_key, operation)
                     SELECT $1, $2, * FROM unnest($3::text[], $4::text[])
                     ON CONFLICT DO NOTHING"
                ),
                &[&log.sync as Param, &log.run_id, &keys, &ops],
            )
            .await
            .map_err(query_error)?;
        }
        // The changelog of runs older than the last `keep_runs` goes.
        tx.execute(
            &format!(
                "DELETE FROM {s}.sync_changelog WHERE sync = $1 AND run_id < (
                    SELECT min(run_id) FROM (SELECT run_id FROM {s}.sync_runs WHERE sync = $1
                        ORDER BY run_id DESC LIMIT $2) AS kept)"
            ),
            &[&log.sync as Param, &(w.keep_runs.max(1) as i64)],
        )
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(query_error)
    }
}
