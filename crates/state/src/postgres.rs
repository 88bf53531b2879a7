//! The state store in PostgreSQL: the same schema, bulk statements over arrays.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::{
    runs_table, Commit, Failure, Result, RunRecord, StateError, RUN_COLUMNS, SCHEMA, SYNC_ROWS,
};

pub struct PgState {
    client: tokio::sync::Mutex<Client>,
}

fn run_from_row(r: &tokio_postgres::Row) -> RunRecord {
    RunRecord {
        id: r.get(0),
        sync: r.get(1),
        status: crate::RunStatus::from_text(&r.get::<_, String>(2)),
        started_at: r.get(3),
        finished_at: r.get(4),
        full_resync: r.get(5),
        counts: crate::RowCounts {
            rows_read: r.get::<_, i64>(6) as u64,
            rows_new: r.get::<_, i64>(7) as u64,
            rows_changed: r.get::<_, i64>(8) as u64,
            rows_unchanged: r.get::<_, i64>(9) as u64,
            rows_sent: r.get::<_, i64>(10) as u64,
            rows_failed: r.get::<_, i64>(11) as u64,
            rows_removed: r.get::<_, i64>(12) as u64,
        },
        error: r.get(13),
        worker: r.get(14),
        stages: crate::StageTimes {
            read_ms: r.get::<_, i64>(15) as u64,
            map_ms: r.get::<_, i64>(16) as u64,
            compare_ms: r.get::<_, i64>(17) as u64,
            deliver_ms: r.get::<_, i64>(18) as u64,
        },
    }
}

impl PgState {
    pub async fn connect(url: &str) -> Result<Self> {
        // TLS as libpq's settings in the URL say (`sslmode`, `sslrootcert`, ...); errors say
        // what failed without the URL's password.
        let connector = sallyport_sources::postgres::Connector::new(url, &Default::default())
            .map_err(|e| StateError::Postgres(format!("the PostgreSQL state store: {e}")))?;
        let client = connector
            .connect()
            .await
            .map_err(|e| StateError::Postgres(format!("the PostgreSQL state store: {e}")))?;
        // Several processes may start at once over one store: they create and migrate its
        // tables one after another (concurrent CREATE TABLE IF NOT EXISTS can collide).
        client
            .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7140517021)")
            .await?;
        let made = Self::create(&client).await;
        client
            .batch_execute(if made.is_ok() { "COMMIT" } else { "ROLLBACK" })
            .await?;
        made?;
        client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS present_keys (sync TEXT NOT NULL, key TEXT NOT NULL,
                    PRIMARY KEY (sync, key));
                 CREATE TEMP TABLE IF NOT EXISTS duplicate_keys (sync TEXT NOT NULL, key TEXT NOT NULL,
                    PRIMARY KEY (sync, key));
                 CREATE TEMP TABLE IF NOT EXISTS seen_keys (scope TEXT NOT NULL, norm TEXT NOT NULL,
                    raw TEXT NOT NULL);
                 CREATE INDEX IF NOT EXISTS seen_keys_norm ON seen_keys (scope, norm);",
            )
            .await?;
        Ok(Self {
            client: tokio::sync::Mutex::new(client),
        })
    }

    /// Creates the tables, or adds what an earlier version's store lacks.
    async fn create(client: &Client) -> Result<()> {
        client.batch_execute(SYNC_ROWS).await?;
        // Stores made before notes were kept gain the column (asked first: altering the table
        // needs its owner, and locks it).
        let has_note: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_name = 'sync_rows' AND column_name = 'note'
                    AND table_schema = ANY (current_schemas(false)))",
                &[],
            )
            .await?
            .get(0);
        if !has_note {
            client
                .batch_execute("ALTER TABLE sync_rows ADD COLUMN IF NOT EXISTS note TEXT")
                .await?;
        }
        client.batch_execute(SCHEMA).await?;
        client
            .batch_execute(&runs_table("BIGSERIAL PRIMARY KEY"))
            .await?;
        // Stores made by an earlier version gain the run history's newer columns.
        for (column, kind) in crate::RUN_COLUMNS_ADDED {
            let has: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_name = 'runs' AND column_name = $1
                        AND table_schema = ANY (current_schemas(false)))",
                    &[column],
                )
                .await?
                .get(0);
            if !has {
                client
                    .batch_execute(&format!(
                        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS {column} {kind}"
                    ))
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn try_lock(&self, sync: &str, holder: &str, now: i64, expires: i64) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "INSERT INTO locks (sync, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (sync) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE locks.expires_at < $4 OR locks.holder = excluded.holder",
                &[&sync, &holder, &expires, &now],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn lock_holder(&self, sync: &str, now: i64) -> Result<Option<String>> {
        let row = self
            .client
            .lock()
            .await
            .query_opt(
                "SELECT holder FROM locks WHERE sync = $1 AND expires_at >= $2",
                &[&sync, &now],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn state_ids(&self) -> Result<Vec<String>> {
        let rows = self
            .client
            .lock()
            .await
            .query("SELECT DISTINCT sync FROM sync_rows ORDER BY 1", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn running_runs(&self) -> Result<Vec<(i64, String)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT id, sync FROM runs WHERE status = 'running' ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn interrupt_run(&self, id: i64, now: i64, reason: &str) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "UPDATE runs SET status = 'interrupted', finished_at = $2, error = $3
                 WHERE id = $1 AND status = 'running'",
                &[&id, &now, &reason],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn take_lock(&self, sync: &str, from: &str, to: &str, expires: i64) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "UPDATE locks SET holder = $3, expires_at = $4 WHERE sync = $1 AND holder = $2",
                &[&sync, &from, &to, &expires],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn renew_lock(&self, sync: &str, holder: &str, expires: i64) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "UPDATE locks SET expires_at = $3 WHERE sync = $1 AND holder = $2",
                &[&sync, &holder, &expires],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn unlock(&self, sync: &str, holder: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute(
                "DELETE FROM locks WHERE sync = $1 AND holder = $2",
                &[&sync, &holder],
            )
            .await?;
        Ok(())
    }

    pub async fn begin_run(
        &self,
        sync: &str,
        full_resync: bool,
        worker: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        let row = self
            .client
            .lock()
            .await
            .query_one(
                "INSERT INTO runs (sync, status, started_at, full_resync, worker) VALUES ($1, 'running', $2, $3, $4) RETURNING id",
                &[&sync, &now, &full_resync, &worker],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn worker_beat(&self, w: &crate::WorkerRecord, forget_before: i64) -> Result<()> {
        let running = serde_json::to_string(&w.running).unwrap_or_default();
        let client = self.client.lock().await;
        client
            .execute(
                "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, running, stopping)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                    running = excluded.running, stopping = excluded.stopping",
                &[
                    &w.id,
                    &w.host,
                    &w.pid,
                    &w.started_at,
                    &w.heartbeat_at,
                    &running,
                    &w.stopping,
                ],
            )
            .await?;
        client
            .execute(
                "DELETE FROM workers WHERE heartbeat_at < $1",
                &[&forget_before],
            )
            .await?;
        Ok(())
    }

    pub async fn workers(&self) -> Result<Vec<crate::WorkerRecord>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT id, host, pid, started_at, heartbeat_at, running, stopping FROM workers
                 ORDER BY heartbeat_at DESC, id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| crate::WorkerRecord {
                id: r.get(0),
                host: r.get(1),
                pid: r.get(2),
                started_at: r.get(3),
                heartbeat_at: r.get(4),
                running: serde_json::from_str(&r.get::<_, String>(5)).unwrap_or_default(),
                stopping: r.get(6),
            })
            .collect())
    }

    pub async fn incident_open(&self, i: &crate::Incident) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "INSERT INTO alert_incidents (alert, kind, sync, opened_at, message)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&i.alert, &i.kind, &i.sync, &i.opened_at, &i.message],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn incident_close(&self, alert: &str, kind: &str, sync: &str) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "DELETE FROM alert_incidents WHERE alert = $1 AND kind = $2 AND sync = $3",
                &[&alert, &kind, &sync],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn incidents(&self) -> Result<Vec<crate::Incident>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT alert, kind, sync, opened_at, message FROM alert_incidents
                 ORDER BY opened_at, alert, kind, sync",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| crate::Incident {
                alert: r.get(0),
                kind: r.get(1),
                sync: r.get(2),
                opened_at: r.get(3),
                message: r.get(4),
            })
            .collect())
    }

    pub async fn changes_add(
        &self,
        sync: &str,
        run_id: i64,
        changes: &[(String, &'static str)],
        keep_runs: i64,
    ) -> Result<()> {
        let keys: Vec<&str> = changes.iter().map(|c| c.0.as_str()).collect();
        let ops: Vec<&str> = changes.iter().map(|c| c.1).collect();
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO run_changes (sync, run_id, key, operation)
             SELECT $1, $2, * FROM unnest($3::text[], $4::text[]) ON CONFLICT DO NOTHING",
            &[&sync, &run_id, &keys, &ops],
        )
        .await?;
        tx.execute(
            "DELETE FROM run_changes WHERE sync = $1 AND run_id NOT IN (SELECT DISTINCT run_id
                FROM run_changes WHERE sync = $1 ORDER BY run_id DESC LIMIT $2)",
            &[&sync, &keep_runs],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn changes(
        &self,
        sync: &str,
        run_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key, operation FROM run_changes WHERE sync = $1 AND run_id = $2
                 AND ($3::text IS NULL OR key > $3) ORDER BY key LIMIT $4",
                &[&sync, &run_id, &after, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn inspected_add(&self, entries: &[(String, i64, String)], keep: i64) -> Result<()> {
        let syncs: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let seqs: Vec<i64> = entries.iter().map(|e| e.1).collect();
        let bodies: Vec<&str> = entries.iter().map(|e| e.2.as_str()).collect();
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO inspected (sync, seq, entry)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[]) ON CONFLICT DO NOTHING",
            &[&syncs, &seqs, &bodies],
        )
        .await?;
        tx.execute(
            "DELETE FROM inspected i WHERE i.sync = ANY($1) AND i.seq < (SELECT seq FROM inspected
                WHERE sync = i.sync ORDER BY seq DESC LIMIT 1 OFFSET $2)",
            &[&syncs, &(keep - 1)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn inspected(&self, sync: &str) -> Result<Vec<String>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT entry FROM inspected WHERE sync = $1 ORDER BY seq DESC",
                &[&sync],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn worker_gone(&self, id: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute("DELETE FROM workers WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    pub async fn finish_run(&self, r: &RunRecord) -> Result<()> {
        let n = |v: u64| v as i64;
        self.client
            .lock()
            .await
            .execute(
                "UPDATE runs SET status = $2, finished_at = $3, rows_read = $4, rows_new = $5,
                    rows_changed = $6, rows_unchanged = $7, rows_sent = $8, rows_failed = $9,
                    rows_removed = $10, error = $11, read_ms = $12, map_ms = $13,
                    compare_ms = $14, deliver_ms = $15
                 WHERE id = $1",
                &[
                    &r.id,
                    &r.status.as_str(),
                    &r.finished_at,
                    &n(r.rows_read),
                    &n(r.rows_new),
                    &n(r.rows_changed),
                    &n(r.rows_unchanged),
                    &n(r.rows_sent),
                    &n(r.rows_failed),
                    &n(r.rows_removed),
                    &r.error,
                    &n(r.stages.read_ms),
                    &n(r.stages.map_ms),
                    &n(r.stages.compare_ms),
                    &n(r.stages.deliver_ms),
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn count(&self, sync: &str) -> Result<u64> {
        let row = self
            .client
            .lock()
            .await
            .query_one("SELECT count(*) FROM sync_rows WHERE sync = $1", &[&sync])
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    pub async fn has_failures(&self, sync: &str) -> Result<bool> {
        let row = self
            .client
            .lock()
            .await
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM failures WHERE sync = $1)",
                &[&sync],
            )
            .await?;
        Ok(row.get::<_, bool>(0))
    }

    pub async fn fingerprints(&self, sync: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key, fingerprint FROM sync_rows WHERE sync = $1 AND key = ANY($2)",
                &[&sync, &keys],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    pub async fn commit(&self, sync: &str, run_id: i64, c: &Commit, now: i64) -> Result<()> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        if !c.accepted.is_empty() {
            let keys: Vec<&str> = c.accepted.iter().map(|(k, _)| k.as_str()).collect();
            let fps: Vec<i64> = c.accepted.iter().map(|(_, f)| *f as i64).collect();
            tx.execute(
                "INSERT INTO sync_rows (sync, key, fingerprint, run_id)
                 SELECT $1, k, f, $4 FROM unnest($2::text[], $3::int8[]) AS t(k, f)
                 ON CONFLICT (sync, key) DO UPDATE SET fingerprint = excluded.fingerprint, run_id = excluded.run_id",
                &[&sync, &keys, &fps, &run_id],
            )
            .await?;
        }
        if !c.cleared.is_empty() {
            tx.execute(
                "DELETE FROM failures WHERE sync = $1 AND key = ANY($2)",
                &[&sync, &c.cleared],
            )
            .await?;
        }
        if !c.failed.is_empty() {
            let keys: Vec<&str> = c.failed.iter().map(|(k, _)| k.as_str()).collect();
            let reasons: Vec<&str> = c.failed.iter().map(|(_, r)| r.as_str()).collect();
            tx.execute(
                "INSERT INTO failures (sync, key, reason, run_id, attempts, first_failed_at, last_failed_at)
                 SELECT $1, k, r, $4, 1, $5, $5 FROM unnest($2::text[], $3::text[]) AS t(k, r)
                 ON CONFLICT (sync, key) DO UPDATE SET reason = excluded.reason, run_id = excluded.run_id,
                    attempts = failures.attempts + CASE WHEN failures.run_id <> excluded.run_id THEN 1 ELSE 0 END,
                    last_failed_at = excluded.last_failed_at",
                &[&sync, &keys, &reasons, &run_id, &now],
            )
            .await?;
        }
        if !c.noted.is_empty() {
            let keys: Vec<&str> = c.noted.iter().map(|(k, _)| k.as_str()).collect();
            let notes: Vec<&str> = c.noted.iter().map(|(_, n)| n.as_str()).collect();
            tx.execute(
                "UPDATE sync_rows s SET note = t.n FROM unnest($2::text[], $3::text[]) AS t(k, n)
                 WHERE s.sync = $1 AND s.key = t.k",
                &[&sync, &keys, &notes],
            )
            .await?;
        }
        if !c.removed.is_empty() {
            tx.execute(
                "DELETE FROM sync_rows WHERE sync = $1 AND key = ANY($2)",
                &[&sync, &c.removed],
            )
            .await?;
            tx.execute(
                "DELETE FROM failures WHERE sync = $1 AND key = ANY($2)",
                &[&sync, &c.removed],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn previous(
        &self,
        sync: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, (u64, Option<String>)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key, fingerprint, note FROM sync_rows WHERE sync = $1 AND key = ANY($2)",
                &[&sync, &keys],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (r.get::<_, i64>(1) as u64, r.get::<_, Option<String>>(2)),
                )
            })
            .collect())
    }

    pub async fn absent(
        &self,
        sync: &str,
        scope: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key, note FROM sync_rows s WHERE s.sync = $1 AND s.key > $3
                 AND NOT EXISTS (SELECT 1 FROM present_keys p WHERE p.sync = $2 AND p.key = s.key)
                 ORDER BY s.key LIMIT $4",
                &[&sync, &scope, &after, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn rows(
        &self,
        sync: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, u64, Option<String>)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key, fingerprint, note FROM sync_rows WHERE sync = $1 AND key > $2
                 ORDER BY key LIMIT $3",
                &[&sync, &after, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2)))
            .collect())
    }

    pub async fn absent_count(&self, sync: &str, scope: &str) -> Result<u64> {
        let row = self
            .client
            .lock()
            .await
            .query_one(
                "SELECT count(*) FROM sync_rows s WHERE s.sync = $1
                 AND NOT EXISTS (SELECT 1 FROM present_keys p WHERE p.sync = $2 AND p.key = s.key)",
                &[&sync, &scope],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    pub async fn seen_reset(&self, scope: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute("DELETE FROM seen_keys WHERE scope = $1", &[&scope])
            .await?;
        Ok(())
    }

    pub async fn seen_add(&self, scope: &str, keys: &[(String, String)]) -> Result<()> {
        let norms: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
        let raws: Vec<&str> = keys.iter().map(|(_, r)| r.as_str()).collect();
        self.client
            .lock()
            .await
            .execute(
                "INSERT INTO seen_keys SELECT $1, n, r FROM unnest($2::text[], $3::text[]) AS t(n, r)",
                &[&scope, &norms, &raws],
            )
            .await?;
        Ok(())
    }

    pub async fn seen_duplicates(&self, scope: &str) -> Result<Vec<(String, Vec<String>)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT norm, raw FROM seen_keys WHERE scope = $1 AND norm IN
                    (SELECT norm FROM seen_keys WHERE scope = $1 GROUP BY norm HAVING count(*) > 1)
                 ORDER BY norm COLLATE \"C\", raw COLLATE \"C\"",
                &[&scope],
            )
            .await?;
        Ok(crate::group_seen(
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        ))
    }

    pub async fn retain_begin(&self, sync: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute("DELETE FROM present_keys WHERE sync = $1", &[&sync])
            .await?;
        Ok(())
    }

    pub async fn duplicates_reset(&self, sync: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute("DELETE FROM duplicate_keys WHERE sync = $1", &[&sync])
            .await?;
        Ok(())
    }

    pub async fn duplicates_add(&self, sync: &str, keys: &[String]) -> Result<()> {
        self.client
            .lock()
            .await
            .execute(
                "INSERT INTO duplicate_keys SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                &[&sync, &keys],
            )
            .await?;
        Ok(())
    }

    pub async fn duplicates_among(&self, sync: &str, keys: &[&str]) -> Result<Vec<String>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key FROM duplicate_keys WHERE sync = $1 AND key = ANY($2)",
                &[&sync, &keys],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn retain_add(&self, sync: &str, keys: &[String]) -> Result<()> {
        self.client
            .lock()
            .await
            .execute(
                "INSERT INTO present_keys SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                &[&sync, &keys],
            )
            .await?;
        Ok(())
    }

    pub async fn retain_finish(&self, sync: &str) -> Result<u64> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM sync_rows s WHERE s.sync = $1
                 AND NOT EXISTS (SELECT 1 FROM present_keys p WHERE p.sync = $1 AND p.key = s.key)",
                &[&sync],
            )
            .await?;
        tx.execute(
            "DELETE FROM failures f WHERE f.sync = $1
             AND NOT EXISTS (SELECT 1 FROM present_keys p WHERE p.sync = $1 AND p.key = f.key)",
            &[&sync],
        )
        .await?;
        tx.execute("DELETE FROM present_keys WHERE sync = $1", &[&sync])
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    pub async fn forget_stale_failures(&self, sync: &str, run_id: i64) -> Result<()> {
        self.client
            .lock()
            .await
            .execute(
                "DELETE FROM failures WHERE sync = $1 AND run_id < $2",
                &[&sync, &run_id],
            )
            .await?;
        Ok(())
    }

    pub async fn runs(
        &self,
        sync: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR sync = $1)
                     AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $2"
                ),
                &[&sync, &(limit as i64), &before],
            )
            .await?;
        Ok(rows.iter().map(run_from_row).collect())
    }

    pub async fn failures(
        &self,
        sync: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Failure>> {
        let limit = limit.map(|l| l as i64);
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT key, reason, run_id, attempts, first_failed_at, last_failed_at
                 FROM failures WHERE sync = $1 AND ($2::text IS NULL OR key > $2)
                 ORDER BY key LIMIT $3",
                &[&sync, &after, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Failure {
                key: r.get(0),
                reason: r.get(1),
                run_id: r.get(2),
                attempts: r.get(3),
                first_failed_at: r.get(4),
                last_failed_at: r.get(5),
            })
            .collect())
    }

    pub async fn put_entity(&self, kind: &str, name: &str, body: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute(
                "INSERT INTO entities (kind, name, body) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                &[&kind, &name, &body],
            )
            .await?;
        Ok(())
    }

    pub async fn put_entities(&self, all: &[(String, String, String)]) -> Result<()> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        for (kind, name, body) in all {
            tx.execute(
                "INSERT INTO entities (kind, name, body) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                &[kind, name, body],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_entity(&self, kind: &str, name: &str) -> Result<bool> {
        let n = self
            .client
            .lock()
            .await
            .execute(
                "DELETE FROM entities WHERE kind = $1 AND name = $2",
                &[&kind, &name],
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn entities(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT name, body FROM entities WHERE kind = $1 ORDER BY name",
                &[&kind],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        self.client
            .lock()
            .await
            .execute(
                "INSERT INTO sync_flags (sync, paused) VALUES ($1, $2)
                 ON CONFLICT (sync) DO UPDATE SET paused = excluded.paused",
                &[&sync, &paused],
            )
            .await?;
        Ok(())
    }

    pub async fn paused(&self) -> Result<Vec<String>> {
        let rows = self
            .client
            .lock()
            .await
            .query(
                "SELECT sync FROM sync_flags WHERE paused ORDER BY sync",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn clear(&self, sync: &str) -> Result<()> {
        self.client
            .lock()
            .await
            .execute("DELETE FROM sync_rows WHERE sync = $1", &[&sync])
            .await?;
        Ok(())
    }
}
