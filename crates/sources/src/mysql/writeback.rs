//! Run logs in MySQL and MariaDB (`writeback:`): `sync_runs`, `sync_failures` and
//! `sync_changelog` in the writeback database, created on first use, written over the snapshot
//! writer's connection (the model's own sessions are read-only) in one transaction per run.
//! Times are `TIMESTAMP(3)`, written in UTC.

use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use super::MySource;
use crate::writeback::{RunLog, WriteBack, PER_STATEMENT, RUN_COLUMNS};
use crate::{Backticks, Dialect, SourceError};

/// The tables, in database `d` (quoted). Keys are text of up to 500 characters (the primary
/// key's limit in utf8mb4).
fn tables(d: &str) -> [String; 4] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {d}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {d}.sync_runs (
                sync VARCHAR(190) NOT NULL, run_id BIGINT NOT NULL, status VARCHAR(20) NOT NULL,
                started_at TIMESTAMP(3) NOT NULL, finished_at TIMESTAMP(3) NOT NULL,
                duration_ms BIGINT NOT NULL, full_resync BOOLEAN NOT NULL,
                rows_read BIGINT NOT NULL, rows_new BIGINT NOT NULL, rows_changed BIGINT NOT NULL,
                rows_unchanged BIGINT NOT NULL, rows_sent BIGINT NOT NULL, rows_failed BIGINT NOT NULL,
                rows_removed BIGINT NOT NULL, requests BIGINT NOT NULL, retries BIGINT NOT NULL,
                error TEXT, worker VARCHAR(255),
                PRIMARY KEY (sync, run_id)) DEFAULT CHARSET = utf8mb4"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {d}.sync_failures (
                sync VARCHAR(190) NOT NULL, run_id BIGINT NOT NULL, row_key VARCHAR(500) NOT NULL,
                reason TEXT NOT NULL, attempts BIGINT NOT NULL,
                PRIMARY KEY (sync, run_id, row_key)) DEFAULT CHARSET = utf8mb4"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {d}.sync_changelog (
                sync VARCHAR(190) NOT NULL, run_id BIGINT NOT NULL, row_key VARCHAR(500) NOT NULL,
                operation VARCHAR(10) NOT NULL,
                PRIMARY KEY (sync, run_id, row_key)) DEFAULT CHARSET = utf8mb4"
        ),
    ]
}

impl MySource {
    pub(super) async fn write_back(&self, w: &WriteBack, log: &RunLog) -> Result<(), SourceError> {
        let d = Backticks.quote_ident(&w.schema);
        let mut statements: Vec<(String, Vec<My>)> = Vec::new();
        let f = log.figures();
        let mut run: Vec<My> = vec![
            log.sync.clone().into(),
            log.run_id.into(),
            log.status.clone().into(),
            (log.started_at as f64 / 1000.0).into(),
            (log.finished_at as f64 / 1000.0).into(),
            log.duration_ms().into(),
            log.full_resync.into(),
        ];
        run.extend(f.iter().map(|v| My::from(*v)));
        run.push(log.error.clone().into());
        run.push(log.worker.clone().into());
        statements.push((
            format!(
                "INSERT IGNORE INTO {d}.sync_runs ({RUN_COLUMNS}) VALUES (?, ?, ?,
                    FROM_UNIXTIME(?), FROM_UNIXTIME(?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            run,
        ));
        for part in log.failures.chunks(PER_STATEMENT) {
            let mut params = Vec::with_capacity(part.len() * 5);
            for (key, reason, attempts) in part {
                params.extend([
                    log.sync.clone().into(),
                    log.run_id.into(),
                    key.clone().into(),
                    reason.clone().into(),
                    My::from(*attempts),
                ]);
            }
            statements.push((
                format!(
                    "INSERT IGNORE INTO {d}.sync_failures (sync, run_id, row_key, reason, attempts) VALUES {}",
                    vec!["(?, ?, ?, ?, ?)"; part.len()].join(", ")
                ),
                params,
            ));
        }
        for part in log.changelog.chunks(PER_STATEMENT) {
            let mut params = Vec::with_capacity(part.len() * 4);
            for (key, op) in part {
                params.extend([
                    log.sync.clone().into(),
                    log.run_id.into(),
                    key.clone().into(),
                    My::from(*op),
                ]);
            }
            statements.push((
                format!(
                    "INSERT IGNORE INTO {d}.sync_changelog (sync, run_id, row_key, operation) VALUES {}",
                    vec!["(?, ?, ?, ?)"; part.len()].join(", ")
                ),
                params,
            ));
        }
        // The changelog of runs older than the last `keep_runs` goes.
        statements.push((
            format!(
                "DELETE FROM {d}.sync_changelog WHERE sync = ? AND run_id < (
                    SELECT min(run_id) FROM (SELECT run_id FROM {d}.sync_runs WHERE sync = ?
                        ORDER BY run_id DESC LIMIT ?) AS kept)"
            ),
            vec![
                log.sync.clone().into(),
                log.sync.clone().into(),
                (w.keep_runs.max(1) as u64).into(),
            ],
        ));
        let create = tables(&d);
        self.writing(move |c| {
            Box::pin(async move {
                // DDL commits by itself in MySQL: the tables first, then the rows in one
                // transaction, in UTC.
                c.query_drop("SET time_zone = '+00:00'").await?;
                for sql in create {
                    c.query_drop(sql).await?;
                }
                let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
                for (sql, params) in statements {
                    tx.exec_drop(sql, params).await?;
                }
                tx.commit().await
            })
        })
        .await
    }
}
