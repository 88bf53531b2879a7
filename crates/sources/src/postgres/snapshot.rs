//! Change detection in PostgreSQL: a snapshot table per sync in `sallyport_schema`
//! (`key text COLLATE "C" PRIMARY KEY, wfp int8, lfp int8, note text`: keys compared byte by
//! byte, as Sallyport orders them, and without the database's locale, which costs every
//! comparison of the index and the joins; a tenth of each page left free, so that a changed
//! key's new fingerprint is written beside the old one without a new index entry: 100,000
//! changed keys of 10,000,000 merge in 1.4 s instead of 1.8 s). A new snapshot gets its
//! primary key when the run that fills it seals it (`snapshot_seal`), not before. The model is
//! only ever run inside the read-only transactions of [`PgSource::run`]; writes to the snapshot
//! go over a connection of their own and take lists of keys, never the model's SQL.

use std::sync::atomic::Ordering;

use sallyport_core::Model;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{model_from, query_error, quote_ident, PgSource};
use crate::AnsiQuotes;
use crate::{DiffSpec, Row, RowStream, Snapshot, SnapshotRow, SourceError};

/// `"schema"."snapshot_…"`.
pub(super) fn table(s: &Snapshot) -> String {
    format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.table()))
}

/// The settings of change detection's statements: the memory their joins may take before
/// spilling to disk, and the cost PostgreSQL's planner gives a row passed up from a parallel
/// worker. It cannot know how few rows of a diff differ (it takes every row of the model to),
/// so at the default it costs bringing the whole model back together and keeps the join in one
/// process; at a tenth, the model is hashed and joined by the parallel workers the server
/// allows (`max_parallel_workers_per_gather`): 6.3 s instead of 14.3 s for 10,000,000 rows
/// here (BENCHMARKS.md, "Change detection").
pub(super) const DIFF_SETTINGS: &str =
    "; SET LOCAL work_mem = '256MB'; SET LOCAL parallel_tuple_cost = 0.01";

/// Whether PostgreSQL hashes values of type `t` itself (`hash_record_extended` hashes each
/// column with its type's hash function: no text is made); other types are hashed as text.
pub(super) fn hashable(t: &tokio_postgres::types::Type) -> bool {
    use tokio_postgres::types::Type;
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::BOOL,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::DATE,
        Type::TIME,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::BYTEA,
        Type::UUID,
        Type::JSONB,
    ]
    .contains(t)
}

/// The SQL of a diff read: the model's rows (as `select`), each with the warehouse's
/// fingerprint and what the snapshot holds for its key, and only those that differ unless
/// every row is asked for.
pub(super) fn diff_sql(
    model: &Model,
    key: &str,
    select: &[String],
    hashed: &[String],
    d: &DiffSpec<'_>,
) -> String {
    // The fingerprint of the mapped columns (`hashed`: each as it is, or as text), seeded
    // with the salt that names what is built from them. A record with no column is `ROW()`.
    let wfp = match d.fingerprint {
        Some(f) => format!(
            "hash_record_extended(ROW({}), {})",
            hashed.join(", "),
            xxhash_rust::xxh3::xxh3_64(f.salt.as_bytes()) as i64
        ),
        None => "0::int8".into(),
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
            key_text: &|k| format!("{k}::text COLLATE \"C\""),
            differs: &crate::snapshots::plainly_differs,
        },
    )
}

/// The SQL that tells whether the current user may create and write tables in `schema` (a
/// literal): user, database, whether the schema exists, CREATE on the database, USAGE and CREATE
/// on the schema. PostgreSQL's catalog and Redshift's alike.
pub(crate) fn grants_sql(schema: &str) -> String {
    format!(
        "SELECT current_user::text, current_database()::text,
            EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {schema}),
            has_database_privilege(current_database(), 'CREATE'),
            CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {schema})
                 THEN has_schema_privilege({schema}, 'USAGE') AND has_schema_privilege({schema}, 'CREATE') END"
    )
}

/// What [`grants_sql`] found, said as the grant that is missing.
pub(crate) fn grants(
    user: &str,
    db: &str,
    schema: &str,
    exists: bool,
    db_create: bool,
    schema_ok: Option<bool>,
) -> Result<(), SourceError> {
    let (user_q, schema_q) = (quote_ident(user), quote_ident(schema));
    if !exists && !db_create {
        return Err(SourceError::Other(format!(
            "change_detection: warehouse needs the schema `{schema}`, which does not exist, and user `{user}` may not create it: run `CREATE SCHEMA {schema_q} AUTHORIZATION {user_q};` or `GRANT CREATE ON DATABASE {} TO {user_q};`",
            quote_ident(db)
        )));
    }
    if exists && schema_ok == Some(false) {
        return Err(SourceError::Other(format!(
            "change_detection: warehouse needs to create and write tables in schema `{schema}`, and user `{user}` may not: run `GRANT USAGE, CREATE ON SCHEMA {schema_q} TO {user_q};`"
        )));
    }
    Ok(())
}

/// Reads what a diff read appends to each row (at `at`, and, unless the snapshot was empty,
/// `at + 1` and `at + 2`).
pub(super) fn diff_of(
    row: &tokio_postgres::Row,
    at: usize,
    empty: bool,
) -> Result<crate::Diff, SourceError> {
    let get = |e: tokio_postgres::Error| SourceError::Query(e.to_string());
    let wfp: i64 = row.try_get(at).map_err(get)?;
    if empty {
        return Ok(crate::snapshots::diff(wfp, None, None, true));
    }
    let lfp: Option<i64> = row.try_get(at + 1).map_err(get)?;
    let note: Option<String> = row.try_get(at + 2).map_err(get)?;
    // A key the snapshot holds has a note ('' for none); its fingerprint comes only when the
    // warehouse's is not known (0 otherwise: the warehouse found the row changed).
    Ok(crate::snapshots::diff(wfp, lfp, note, false))
}

impl PgSource {
    /// The connection snapshot writes go over (opened once).
    pub(super) async fn writer(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, SourceError> {
        let mut w = self.writer.lock().await;
        if w.as_ref().is_none_or(|c| c.is_closed()) {
            *w = Some(self.connector.connect().await?);
        }
        Ok(w)
    }

    pub(super) async fn snapshot_check(&self, schema: &str) -> Result<(), SourceError> {
        let row = self
            .client
            .query_one(&grants_sql("$1"), &[&schema])
            .await
            .map_err(query_error)?;
        let (user, db): (String, String) = (row.get(0), row.get(1));
        grants(&user, &db, schema, row.get(2), row.get(3), row.get(4))
    }

    pub(super) async fn snapshot_count(&self, s: &Snapshot) -> Result<Option<u64>, SourceError> {
        let name = format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.table()));
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await
            .map_err(query_error)?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let n: i64 = self
            .client
            .query_one(&format!("SELECT count(*) FROM {}", table(s)), &[])
            .await
            .map_err(query_error)?
            .get(0);
        Ok(Some(n as u64))
    }

    pub(super) async fn snapshot_prepare(&self, s: &Snapshot) -> Result<(u64, bool), SourceError> {
        if let Some(mut n) = self.snapshot_count(s).await? {
            let unindexed = !self.has_key_index(s).await?;
            // An empty snapshot without its index (a first run stopped before any write) is
            // filled as a new one; one with keys gets its index before anything looks them up
            // (and is counted again should a key have been there twice).
            if unindexed && n > 0 {
                self.build_key_index(s).await?;
                n = self.snapshot_count(s).await?.unwrap_or(0);
            }
            self.set_unindexed(s, unindexed && n == 0);
            // A run's writes start as plain inserts only into an empty snapshot (a first run).
            self.inserts_only.store(n == 0, Ordering::Relaxed);
            return Ok((n, true));
        }
        self.snapshot_check(&s.schema).await?;
        let w = self.writer().await?;
        let w = w.as_ref().expect("connected");
        // A new snapshot has no key index while the run fills it: each key inserted into a
        // B-tree costs a search of it and a write at a place of its own, where one index built
        // from the whole table at the end sorts it once (10,000,000 keys here: 34.4 s of
        // inserts into the indexed table, against 11.1 s of inserts and 3.6 s for the index).
        // The run seals it (`snapshot_seal`) before it looks a key up; a run that stops first
        // leaves that to the next one's `snapshot_prepare`.
        w.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};
             CREATE TABLE IF NOT EXISTS {} (key text COLLATE \"C\" NOT NULL, wfp int8, lfp int8 NOT NULL, note text)
               WITH (fillfactor = 90)",
            quote_ident(&s.schema),
            table(s)
        ))
        .await
        .map_err(query_error)?;
        self.set_unindexed(s, true);
        self.inserts_only.store(true, Ordering::Relaxed);
        Ok((0, false))
    }

    /// Whether the snapshot has its primary key (tables made before snapshots were sealed
    /// always do).
    async fn has_key_index(&self, s: &Snapshot) -> Result<bool, SourceError> {
        let name = table(s);
        Ok(self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::text::regclass AND indisprimary)",
                &[&name],
            )
            .await
            .map_err(query_error)?
            .get(0))
    }

    /// Gives the snapshot its primary key, sorting the keys once (in parallel where the server
    /// allows). Should a key be there twice (a table written by hand), one of its rows is
    /// kept: at worst that key is sent again.
    async fn build_key_index(&self, s: &Snapshot) -> Result<(), SourceError> {
        let mut w = self.writer().await?;
        let w = w.as_mut().expect("connected");
        let add = format!(
            "SET LOCAL maintenance_work_mem = '256MB'; ALTER TABLE {} ADD PRIMARY KEY (key)",
            table(s)
        );
        let tx = w.transaction().await.map_err(query_error)?;
        match tx.batch_execute(&add).await {
            Ok(()) => return tx.commit().await.map_err(query_error),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.rollback().await.map_err(query_error)?;
            }
            Err(e) => return Err(query_error(e)),
        }
        tracing::warn!(
            table = %table(s),
            "the snapshot holds a key more than once: one row of each is kept"
        );
        let tx = w.transaction().await.map_err(query_error)?;
        tx.batch_execute(&format!(
            "DELETE FROM {t} AS a USING {t} AS b WHERE a.key = b.key AND a.ctid < b.ctid; {add}",
            t = table(s)
        ))
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(query_error)
    }

    pub(super) async fn snapshot_seal(&self, s: &Snapshot) -> Result<(), SourceError> {
        if self.is_unindexed(s) {
            self.build_key_index(s).await?;
            self.set_unindexed(s, false);
        }
        Ok(())
    }

    fn set_unindexed(&self, s: &Snapshot, unindexed: bool) {
        let mut set = self.unindexed.lock().expect("unindexed snapshots");
        if unindexed {
            set.insert(table(s));
        } else {
            set.remove(&table(s));
        }
    }

    fn is_unindexed(&self, s: &Snapshot) -> bool {
        self.unindexed
            .lock()
            .expect("unindexed snapshots")
            .contains(&table(s))
    }

    pub(super) async fn snapshot_write(
        &self,
        s: &Snapshot,
        rows: &[SnapshotRow],
        removed: &[String],
    ) -> Result<(), SourceError> {
        let mut w = self.writer().await?;
        let w = w.as_mut().expect("connected");
        let mut tx = w.transaction().await.map_err(query_error)?;
        if !rows.is_empty() {
            let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
            let wfps: Vec<Option<i64>> = rows.iter().map(|r| r.warehouse_fingerprint).collect();
            let lfps: Vec<i64> = rows.iter().map(|r| r.fingerprint as i64).collect();
            let notes: Vec<Option<&str>> = rows.iter().map(|r| r.note.as_deref()).collect();
            let staged: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&keys, &wfps, &lfps, &notes];
            // The batch arrives as arrays (the staging rows) and is merged in one statement.
            let insert = format!(
                "INSERT INTO {} AS s (key, wfp, lfp, note)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[])",
                table(s)
            );
            // Into a snapshot that was empty when the run prepared it (a first run), and while
            // every batch has held new keys only, a plain INSERT: half the work of an upsert,
            // whose every row is first looked for in the index and then confirmed. The first
            // key found there turns the writes to upserts, and that batch is merged again.
            let mut written = false;
            if self.is_unindexed(s) {
                // No key index yet, so nothing to look up: every key of a new snapshot is new.
                tx.execute(&insert, &staged).await.map_err(query_error)?;
                written = true;
            } else if self.inserts_only.load(Ordering::Relaxed) {
                let plain = tx
                    .savepoint("sallyport_insert")
                    .await
                    .map_err(query_error)?;
                match plain.execute(&insert, &staged).await {
                    Ok(_) => {
                        plain.commit().await.map_err(query_error)?;
                        written = true;
                    }
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        plain.rollback().await.map_err(query_error)?;
                        self.inserts_only.store(false, Ordering::Relaxed);
                    }
                    Err(e) => return Err(query_error(e)),
                }
            }
            if !written {
                tx.execute(
                    &format!(
                        "{insert}
                         ON CONFLICT (key) DO UPDATE SET wfp = excluded.wfp, lfp = excluded.lfp,
                            note = COALESCE(excluded.note, s.note)"
                    ),
                    &staged,
                )
                .await
                .map_err(query_error)?;
            }
        }
        if !removed.is_empty() {
            tx.execute(
                &format!("DELETE FROM {} WHERE key = ANY($1)", table(s)),
                &[&removed],
            )
            .await
            .map_err(query_error)?;
        }
        tx.commit().await.map_err(query_error)
    }

    pub(super) async fn snapshot_absent_count(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<u64, SourceError> {
        let sql = format!(
            "SELECT count(*) FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} WHERE m.{}::text COLLATE \"C\" = s.key)",
            table(s),
            model_from(model),
            quote_ident(key)
        );
        let mut rows = self
            .run_with(sql, DIFF_SETTINGS, |row| {
                let n: i64 = row
                    .try_get(0)
                    .map_err(|e| SourceError::Query(e.to_string()))?;
                Ok(Row::new(Some(n.to_string()), Vec::new()))
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

    pub(super) async fn snapshot_absent(
        &self,
        s: &Snapshot,
        model: &Model,
        key: &str,
    ) -> Result<RowStream, SourceError> {
        let sql = format!(
            "SELECT s.key, s.note FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} WHERE m.{}::text COLLATE \"C\" = s.key)",
            table(s),
            model_from(model),
            quote_ident(key)
        );
        self.run_with(sql, DIFF_SETTINGS, |row| {
            let get = |e: tokio_postgres::Error| SourceError::Query(e.to_string());
            let key: String = row.try_get(0).map_err(get)?;
            let note: Option<String> = row.try_get(1).map_err(get)?;
            Ok(Row::new(
                Some(key),
                vec![note.map_or(serde_json::Value::Null, serde_json::Value::String)],
            ))
        })
        .await
    }

    pub(super) async fn snapshot_rows(
        &self,
        s: &Snapshot,
        after: &str,
        limit: usize,
    ) -> Result<Vec<SnapshotRow>, SourceError> {
        // Pages in key order need the key index (a snapshot whose first run stopped early
        // may not have it yet).
        if after.is_empty() && !self.has_key_index(s).await? {
            self.build_key_index(s).await?;
            self.set_unindexed(s, false);
        }
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT key, wfp, lfp, note FROM {} WHERE key > $1 ORDER BY key LIMIT $2",
                    table(s)
                ),
                &[&after, &(limit as i64)],
            )
            .await
            .map_err(query_error)?;
        Ok(rows
            .iter()
            .map(|r| SnapshotRow {
                key: r.get(0),
                warehouse_fingerprint: r.get(1),
                fingerprint: r.get::<_, i64>(2) as u64,
                note: r.get(3),
            })
            .collect())
    }

    pub(super) async fn snapshot_drop(&self, s: &Snapshot) -> Result<(), SourceError> {
        self.set_unindexed(s, false);
        let w = self.writer().await?;
        w.as_ref()
            .expect("connected")
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", table(s)))
            .await
            .map_err(query_error)
    }
}
