//! The state store in an SQLite file (WAL mode). Calls are short and run on the caller's thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{
    runs_table, Commit, Failure, Result, RunRecord, StateError, RUN_COLUMNS, SCHEMA, SYNC_ROWS,
};

/// Every call runs on a blocking thread (SQLite may wait up to its busy timeout for a writer
/// in another process), never on the async runtime's workers.
pub struct SqliteState {
    conn: Arc<Mutex<Connection>>,
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        sync: r.get(1)?,
        status: crate::RunStatus::from_text(&r.get::<_, String>(2)?),
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        full_resync: r.get(5)?,
        counts: crate::RowCounts {
            rows_read: r.get::<_, i64>(6)? as u64,
            rows_new: r.get::<_, i64>(7)? as u64,
            rows_changed: r.get::<_, i64>(8)? as u64,
            rows_unchanged: r.get::<_, i64>(9)? as u64,
            rows_sent: r.get::<_, i64>(10)? as u64,
            rows_failed: r.get::<_, i64>(11)? as u64,
            rows_removed: r.get::<_, i64>(12)? as u64,
        },
        error: r.get(13)?,
        worker: r.get(14)?,
        stages: crate::StageTimes {
            read_ms: r.get::<_, i64>(15)? as u64,
            map_ms: r.get::<_, i64>(16)? as u64,
            compare_ms: r.get::<_, i64>(17)? as u64,
            deliver_ms: r.get::<_, i64>(18)? as u64,
        },
    })
}

impl SqliteState {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StateError::Other(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(&format!("{SYNC_ROWS} WITHOUT ROWID;"))?;
        // Stores made before notes were kept gain the column.
        let has_note: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('sync_rows') WHERE name = 'note'")?
            .exists([])?;
        if !has_note {
            conn.execute_batch("ALTER TABLE sync_rows ADD COLUMN note TEXT")?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&runs_table("INTEGER PRIMARY KEY AUTOINCREMENT"))?;
        // Stores made by an earlier version gain the run history's newer columns.
        for (column, kind) in crate::RUN_COLUMNS_ADDED {
            let has: bool = conn
                .prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = ?1")?
                .exists([column])?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE runs ADD COLUMN {column} {kind}"))?;
            }
        }
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS present_keys (sync TEXT NOT NULL, key TEXT NOT NULL,
                PRIMARY KEY (sync, key)) WITHOUT ROWID;
             CREATE TEMP TABLE IF NOT EXISTS duplicate_keys (sync TEXT NOT NULL, key TEXT NOT NULL,
                PRIMARY KEY (sync, key)) WITHOUT ROWID;
             CREATE TEMP TABLE IF NOT EXISTS seen_keys (scope TEXT NOT NULL, norm TEXT NOT NULL,
                raw TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS temp.seen_keys_norm ON seen_keys (scope, norm);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A call that panicked left no transaction open (rusqlite rolls back on drop): the
            // connection is still good.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StateError::Other(format!("a state store call failed: {e}")))?
    }

    pub async fn try_lock(&self, sync: &str, holder: &str, now: i64, expires: i64) -> Result<bool> {
        let sync = sync.to_string();
        let holder = holder.to_string();
        self.call(move |conn| {
            let n = conn.execute(
                "INSERT INTO locks (sync, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sync) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE locks.expires_at < ?4 OR locks.holder = excluded.holder",
                params![sync, holder, expires, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn lock_holder(&self, sync: &str, now: i64) -> Result<Option<String>> {
        let sync = sync.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT holder FROM locks WHERE sync = ?1 AND expires_at >= ?2",
                    params![sync, now],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub async fn state_ids(&self) -> Result<Vec<String>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare("SELECT DISTINCT sync FROM sync_rows ORDER BY 1")?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn running_runs(&self) -> Result<Vec<(i64, String)>> {
        self.call(move |conn| {
            let mut stmt =
                conn.prepare("SELECT id, sync FROM runs WHERE status = 'running' ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn interrupt_run(&self, id: i64, now: i64, reason: &str) -> Result<bool> {
        let reason = reason.to_string();
        self.call(move |conn| {
            let n = conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?2, error = ?3
                 WHERE id = ?1 AND status = 'running'",
                params![id, now, reason],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn take_lock(&self, sync: &str, from: &str, to: &str, expires: i64) -> Result<bool> {
        let sync = sync.to_string();
        let from = from.to_string();
        let to = to.to_string();
        self.call(move |conn| {
            let n = conn.execute(
                "UPDATE locks SET holder = ?3, expires_at = ?4 WHERE sync = ?1 AND holder = ?2",
                params![sync, from, to, expires],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn renew_lock(&self, sync: &str, holder: &str, expires: i64) -> Result<bool> {
        let sync = sync.to_string();
        let holder = holder.to_string();
        self.call(move |conn| {
            let n = conn.execute(
                "UPDATE locks SET expires_at = ?3 WHERE sync = ?1 AND holder = ?2",
                params![sync, holder, expires],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn unlock(&self, sync: &str, holder: &str) -> Result<()> {
        let sync = sync.to_string();
        let holder = holder.to_string();
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM locks WHERE sync = ?1 AND holder = ?2",
                params![sync, holder],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn begin_run(
        &self,
        sync: &str,
        full_resync: bool,
        worker: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        let sync = sync.to_string();
        let worker = worker.map(str::to_string);
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO runs (sync, status, started_at, full_resync, worker) VALUES (?1, 'running', ?2, ?3, ?4)",
                params![sync, now, full_resync, worker],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    pub async fn worker_beat(&self, w: &crate::WorkerRecord, forget_before: i64) -> Result<()> {
        let w = w.clone();
        self.call(move |conn| {
            let running = serde_json::to_string(&w.running).unwrap_or_default();
            conn.execute(
                "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, running, stopping)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                    running = excluded.running, stopping = excluded.stopping",
                params![
                    w.id,
                    w.host,
                    w.pid,
                    w.started_at,
                    w.heartbeat_at,
                    running,
                    w.stopping
                ],
            )?;
            conn.execute(
                "DELETE FROM workers WHERE heartbeat_at < ?1",
                params![forget_before],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn workers(&self) -> Result<Vec<crate::WorkerRecord>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, host, pid, started_at, heartbeat_at, running, stopping FROM workers
                 ORDER BY heartbeat_at DESC, id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(crate::WorkerRecord {
                        id: r.get(0)?,
                        host: r.get(1)?,
                        pid: r.get(2)?,
                        started_at: r.get(3)?,
                        heartbeat_at: r.get(4)?,
                        running: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                        stopping: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn incident_open(&self, i: &crate::Incident) -> Result<bool> {
        let i = i.clone();
        self.call(move |conn| {
            let n = conn.execute(
                "INSERT INTO alert_incidents (alert, kind, sync, opened_at, message)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![i.alert, i.kind, i.sync, i.opened_at, i.message],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn incident_close(&self, alert: &str, kind: &str, sync: &str) -> Result<bool> {
        let (alert, kind, sync) = (alert.to_string(), kind.to_string(), sync.to_string());
        self.call(move |conn| {
            let n = conn.execute(
                "DELETE FROM alert_incidents WHERE alert = ?1 AND kind = ?2 AND sync = ?3",
                params![alert, kind, sync],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn incidents(&self) -> Result<Vec<crate::Incident>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT alert, kind, sync, opened_at, message FROM alert_incidents
                 ORDER BY opened_at, alert, kind, sync",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(crate::Incident {
                        alert: r.get(0)?,
                        kind: r.get(1)?,
                        sync: r.get(2)?,
                        opened_at: r.get(3)?,
                        message: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn changes_add(
        &self,
        sync: &str,
        run_id: i64,
        changes: &[(String, &'static str)],
        keep_runs: i64,
    ) -> Result<()> {
        let sync = sync.to_string();
        let changes = changes.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO run_changes (sync, run_id, key, operation) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                )?;
                for (key, op) in &changes {
                    insert.execute(params![sync, run_id, key, op])?;
                }
            }
            tx.execute(
                "DELETE FROM run_changes WHERE sync = ?1 AND run_id NOT IN (SELECT DISTINCT run_id
                    FROM run_changes WHERE sync = ?1 ORDER BY run_id DESC LIMIT ?2)",
                params![sync, keep_runs],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn changes(
        &self,
        sync: &str,
        run_id: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let sync = sync.to_string();
        let after = after.map(str::to_string);
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT key, operation FROM run_changes WHERE sync = ?1 AND run_id = ?2
                 AND (?3 IS NULL OR key > ?3) ORDER BY key LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![sync, run_id, after, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn inspected_add(&self, entries: &[(String, i64, String)], keep: i64) -> Result<()> {
        let entries = entries.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut syncs = std::collections::BTreeSet::new();
            for (sync, seq, entry) in &entries {
                tx.execute(
                    "INSERT INTO inspected (sync, seq, entry) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![sync, seq, entry],
                )?;
                syncs.insert(sync.clone());
            }
            for sync in syncs {
                tx.execute(
                    "DELETE FROM inspected WHERE sync = ?1 AND seq < (SELECT seq FROM inspected
                        WHERE sync = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                    params![sync, keep - 1],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn inspected(&self, sync: &str) -> Result<Vec<String>> {
        let sync = sync.to_string();
        self.call(move |conn| {
            let mut stmt =
                conn.prepare("SELECT entry FROM inspected WHERE sync = ?1 ORDER BY seq DESC")?;
            let rows = stmt
                .query_map(params![sync], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn worker_gone(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM workers WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }

    pub async fn finish_run(&self, r: &RunRecord) -> Result<()> {
        let r = r.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, rows_read = ?4, rows_new = ?5,
                    rows_changed = ?6, rows_unchanged = ?7, rows_sent = ?8, rows_failed = ?9,
                    rows_removed = ?10, error = ?11, read_ms = ?12, map_ms = ?13,
                    compare_ms = ?14, deliver_ms = ?15
                 WHERE id = ?1",
                params![
                    r.id,
                    r.status.as_str(),
                    r.finished_at,
                    r.rows_read as i64,
                    r.rows_new as i64,
                    r.rows_changed as i64,
                    r.rows_unchanged as i64,
                    r.rows_sent as i64,
                    r.rows_failed as i64,
                    r.rows_removed as i64,
                    r.error,
                    r.stages.read_ms as i64,
                    r.stages.map_ms as i64,
                    r.stages.compare_ms as i64,
                    r.stages.deliver_ms as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn count(&self, sync: &str) -> Result<u64> {
        let sync = sync.to_string();
        self.call(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM sync_rows WHERE sync = ?1",
                [&sync],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn has_failures(&self, sync: &str) -> Result<bool> {
        let sync = sync.to_string();
        self.call(move |conn| {
            Ok(conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM failures WHERE sync = ?1)",
                [&sync],
                |r| r.get::<_, bool>(0),
            )?)
        })
        .await
    }

    pub async fn fingerprints(&self, sync: &str, keys: &[&str]) -> Result<HashMap<String, u64>> {
        let sync = sync.to_string();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.call(move |conn| {
            // One read transaction for the whole chunk: SQLite then takes its file lock once, not
            // once per key.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
            let mut out = HashMap::with_capacity(keys.len());
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT fingerprint FROM sync_rows WHERE sync = ?1 AND key = ?2",
                )?;
                for k in keys {
                    if let Some(fp) = stmt
                        .query_row(params![sync, k], |r| r.get::<_, i64>(0))
                        .optional()?
                    {
                        out.insert(k, fp as u64);
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub async fn commit(&self, sync: &str, run_id: i64, c: Commit, now: i64) -> Result<()> {
        let sync = sync.to_string();
        self.call(move |conn| {
                    let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO sync_rows (sync, key, fingerprint, run_id) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (sync, key) DO UPDATE SET fingerprint = excluded.fingerprint, run_id = excluded.run_id",
                )?;
                for (k, fp) in &c.accepted {
                    upsert.execute(params![sync, k, *fp as i64, run_id])?;
                }
                let mut clear =
                    tx.prepare_cached("DELETE FROM failures WHERE sync = ?1 AND key = ?2")?;
                for k in &c.cleared {
                    clear.execute(params![sync, k])?;
                }
                let mut fail = tx.prepare_cached(
                    "INSERT INTO failures (sync, key, reason, run_id, attempts, first_failed_at, last_failed_at)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)
                     ON CONFLICT (sync, key) DO UPDATE SET reason = excluded.reason, run_id = excluded.run_id,
                        attempts = failures.attempts + CASE WHEN failures.run_id <> excluded.run_id THEN 1 ELSE 0 END,
                        last_failed_at = excluded.last_failed_at",
                )?;
                for (k, reason) in &c.failed {
                    fail.execute(params![sync, k, reason, run_id, now])?;
                }
                if !c.noted.is_empty() {
                    let mut note = tx.prepare_cached(
                        "UPDATE sync_rows SET note = ?3 WHERE sync = ?1 AND key = ?2",
                    )?;
                    for (k, n) in &c.noted {
                        note.execute(params![sync, k, n])?;
                    }
                }
                if !c.removed.is_empty() {
                    let mut gone =
                        tx.prepare_cached("DELETE FROM sync_rows WHERE sync = ?1 AND key = ?2")?;
                    let mut clear =
                        tx.prepare_cached("DELETE FROM failures WHERE sync = ?1 AND key = ?2")?;
                    for k in &c.removed {
                        gone.execute(params![sync, k])?;
                        clear.execute(params![sync, k])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn previous(
        &self,
        sync: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, (u64, Option<String>)>> {
        let sync = sync.to_string();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.call(move |conn| {
            // One read transaction for the whole chunk, as for fingerprints.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
            let mut out = HashMap::with_capacity(keys.len());
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT fingerprint, note FROM sync_rows WHERE sync = ?1 AND key = ?2",
                )?;
                for k in keys {
                    if let Some((fp, note)) = stmt
                        .query_row(params![sync, k], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
                        })
                        .optional()?
                    {
                        out.insert(k, (fp as u64, note));
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    pub async fn absent(
        &self,
        sync: &str,
        scope: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>)>> {
        let (sync, scope, after) = (sync.to_string(), scope.to_string(), after.to_string());
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, note FROM sync_rows s WHERE s.sync = ?1 AND s.key > ?3
                 AND NOT EXISTS (SELECT 1 FROM temp.present_keys p WHERE p.sync = ?2 AND p.key = s.key)
                 ORDER BY s.key LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![sync, scope, after, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn rows(
        &self,
        sync: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, u64, Option<String>)>> {
        let (sync, after) = (sync.to_string(), after.to_string());
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, fingerprint, note FROM sync_rows WHERE sync = ?1 AND key > ?2
                 ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(params![sync, after, limit], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn absent_count(&self, sync: &str, scope: &str) -> Result<u64> {
        let (sync, scope) = (sync.to_string(), scope.to_string());
        self.call(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM sync_rows s WHERE s.sync = ?1
                 AND NOT EXISTS (SELECT 1 FROM temp.present_keys p WHERE p.sync = ?2 AND p.key = s.key)",
                params![sync, scope],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn seen_reset(&self, scope: &str) -> Result<()> {
        let scope = scope.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM temp.seen_keys WHERE scope = ?1", [&scope])?;
            Ok(())
        })
        .await
    }

    pub async fn seen_add(&self, scope: &str, keys: &[(String, String)]) -> Result<()> {
        let scope = scope.to_string();
        let keys = keys.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO temp.seen_keys (scope, norm, raw) VALUES (?1, ?2, ?3)",
                )?;
                for (n, r) in &keys {
                    ins.execute(params![scope, n, r])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn seen_duplicates(&self, scope: &str) -> Result<Vec<(String, Vec<String>)>> {
        let scope = scope.to_string();
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT norm, raw FROM temp.seen_keys WHERE scope = ?1 AND norm IN
                    (SELECT norm FROM temp.seen_keys WHERE scope = ?1 GROUP BY norm HAVING count(*) > 1)
                 ORDER BY norm, raw",
            )?;
            let rows = stmt
                .query_map([&scope], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::group_seen(rows))
        })
        .await
    }

    pub async fn retain_begin(&self, sync: &str) -> Result<()> {
        let sync = sync.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM temp.present_keys WHERE sync = ?1", [&sync])?;
            Ok(())
        })
        .await
    }

    pub async fn retain_add(&self, sync: &str, keys: &[String]) -> Result<()> {
        let sync = sync.to_string();
        let keys = keys.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO temp.present_keys (sync, key) VALUES (?1, ?2)",
                )?;
                for k in keys {
                    ins.execute(params![sync, k])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn duplicates_reset(&self, sync: &str) -> Result<()> {
        let sync = sync.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM temp.duplicate_keys WHERE sync = ?1", [&sync])?;
            Ok(())
        })
        .await
    }

    pub async fn duplicates_add(&self, sync: &str, keys: &[String]) -> Result<()> {
        let sync = sync.to_string();
        let keys = keys.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO temp.duplicate_keys (sync, key) VALUES (?1, ?2)",
                )?;
                for k in &keys {
                    ins.execute(params![sync, k])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn duplicates_among(&self, sync: &str, keys: &[&str]) -> Result<Vec<String>> {
        let sync = sync.to_string();
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT 1 FROM temp.duplicate_keys WHERE sync = ?1 AND key = ?2")?;
            let mut out = Vec::new();
            for k in keys {
                if stmt.exists(params![sync, k])? {
                    out.push(k);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn retain_finish(&self, sync: &str) -> Result<u64> {
        let sync = sync.to_string();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "DELETE FROM sync_rows WHERE sync = ?1
                 AND key NOT IN (SELECT key FROM temp.present_keys WHERE sync = ?1)",
                [&sync],
            )?;
            tx.execute(
                "DELETE FROM failures WHERE sync = ?1
                 AND key NOT IN (SELECT key FROM temp.present_keys WHERE sync = ?1)",
                [&sync],
            )?;
            tx.execute("DELETE FROM temp.present_keys WHERE sync = ?1", [&sync])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    pub async fn forget_stale_failures(&self, sync: &str, run_id: i64) -> Result<()> {
        let sync = sync.to_string();
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM failures WHERE sync = ?1 AND run_id < ?2",
                params![sync, run_id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn runs(
        &self,
        sync: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let sync = sync.map(str::to_string);
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR sync = ?1)
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![sync, limit as i64, before], run_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn failures(
        &self,
        sync: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Failure>> {
        let sync = sync.to_string();
        let after = after.map(str::to_string);
        let limit = limit.map(|l| l as i64).unwrap_or(-1);
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT key, reason, run_id, attempts, first_failed_at, last_failed_at
                 FROM failures WHERE sync = ?1 AND (?2 IS NULL OR key > ?2)
                 ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(params![sync, after, limit], |r| {
                    Ok(Failure {
                        key: r.get(0)?,
                        reason: r.get(1)?,
                        run_id: r.get(2)?,
                        attempts: r.get(3)?,
                        first_failed_at: r.get(4)?,
                        last_failed_at: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn put_entities(&self, all: &[(String, String, String)]) -> Result<()> {
        let all = all.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            for (kind, name, body) in &all {
                tx.execute(
                    "INSERT INTO entities (kind, name, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                    params![kind, name, body],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn put_entity(&self, kind: &str, name: &str, body: &str) -> Result<()> {
        let kind = kind.to_string();
        let name = name.to_string();
        let body = body.to_string();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO entities (kind, name, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                params![kind, name, body],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_entity(&self, kind: &str, name: &str) -> Result<bool> {
        let kind = kind.to_string();
        let name = name.to_string();
        self.call(move |conn| {
            let n = conn.execute(
                "DELETE FROM entities WHERE kind = ?1 AND name = ?2",
                params![kind, name],
            )?;
            Ok(n > 0)
        })
        .await
    }

    pub async fn entities(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let kind = kind.to_string();
        self.call(move |conn| {
            let mut stmt =
                conn.prepare("SELECT name, body FROM entities WHERE kind = ?1 ORDER BY name")?;
            let rows = stmt
                .query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        let sync = sync.to_string();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO sync_flags (sync, paused) VALUES (?1, ?2)
                 ON CONFLICT (sync) DO UPDATE SET paused = excluded.paused",
                params![sync, paused],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn paused(&self) -> Result<Vec<String>> {
        self.call(move |conn| {
            let mut stmt =
                conn.prepare("SELECT sync FROM sync_flags WHERE paused ORDER BY sync")?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn clear(&self, sync: &str) -> Result<()> {
        let sync = sync.to_string();
        self.call(move |conn| {
            conn.execute("DELETE FROM sync_rows WHERE sync = ?1", [&sync])?;
            Ok(())
        })
        .await
    }
}
