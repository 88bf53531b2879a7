//! Change detection: each chunk of rows against the state store.

use std::collections::{HashMap, HashSet};

use sallyport_destinations::{ChangePolicy, ObjectMapper, Op, Route, RowFailure};
use sallyport_sources::Row;
use sallyport_state::{RowCounts, StateStore};

/// How a row compares with what was last delivered for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The key was never delivered.
    New,
    /// The key was delivered with other values (upserts only).
    Changed,
    /// The key was delivered with these values (sent again only by a full resync).
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a chunk yields: ops to send, and rows that failed (key, reason).
#[derive(Debug, Default)]
pub struct Classified {
    pub send: Vec<Op>,
    /// For each op to send: `new`, `changed`, or `unchanged` (sent again by a full resync).
    pub changes: Vec<Change>,
    pub failed: Vec<(String, String)>,
}

/// A row after mapping: its key, and its op or why it cannot be sent. Rows with no key or with
/// a duplicated key are not mapped.
pub struct Mapped {
    pub key: Option<String>,
    pub op: Option<Result<Op, RowFailure>>,
}

/// A chunk of mapped rows, with the state's fingerprints of their keys when they were already
/// looked up.
pub struct MappedChunk {
    pub rows: Vec<Mapped>,
    pub known: Option<HashMap<String, u64>>,
}

/// Maps a chunk of rows: the CPU-heavy part (building each op's JSON), done on its own task
/// while the previous chunk is being compared and sent. Rows that carry the warehouse's
/// fingerprint are first compared with the state: an unchanged one is never decoded nor built.
pub async fn map_chunk(
    sync: &str,
    mapper: &dyn ObjectMapper,
    mut rows: Vec<Row>,
    duplicates: Option<&str>,
    state: &StateStore,
    full_resync: bool,
) -> Result<MappedChunk, crate::Stop> {
    // Which of this chunk's keys are duplicates: asked of the state store, and only when the
    // model has any.
    let duplicates: HashSet<String> = match duplicates {
        None => HashSet::new(),
        Some(scope) => {
            let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
            state
                .duplicates_among(scope, &keys)
                .await?
                .into_iter()
                .collect()
        }
    };
    let fingerprinted = rows.iter().any(|r| r.fingerprint.is_some());
    let known = if fingerprinted {
        let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
        Some(state.fingerprints(sync, &keys).await?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows.iter_mut() {
        let key = row.key.take();
        let op = match key.as_deref() {
            None => None,
            Some(k) if duplicates.contains(k) => None,
            Some(k) => {
                let unchanged = !full_resync
                    && row.fingerprint.is_some()
                    && known.as_ref().and_then(|m| m.get(k)).copied() == row.fingerprint;
                if unchanged {
                    Some(Ok(Op {
                        key: k.to_string(),
                        fingerprint: row.fingerprint.unwrap_or_default(),
                        body: String::new(),
                        route: Route::Batch,
                    }))
                } else {
                    row.materialize().map_err(crate::Stop::Warehouse)?;
                    Some(mapper.map(k, row).map(|mut op| {
                        // The warehouse row's fingerprint, when there is one, is what the state
                        // keeps.
                        if let Some(fp) = row.fingerprint {
                            op.fingerprint = fp;
                        }
                        op
                    }))
                }
            }
        };
        out.push(Mapped { key, op });
    }
    Ok(MappedChunk { rows: out, known })
}

pub struct Classifier<'a> {
    sync: &'a str,
    key_column: String,
    policy: ChangePolicy,
    full_resync: bool,
    row_no: u64,
    pub counts: RowCounts,
    /// Distinct model keys the state already held.
    pub matched: u64,
    /// Whether a duplicated key had delivered state: then which keys left the model is worked
    /// out by the state store (the count of matched keys cannot tell).
    pub duplicate_in_state: bool,
}

impl<'a> Classifier<'a> {
    pub fn new(sync: &'a str, mapper: &dyn ObjectMapper, full_resync: bool) -> Self {
        Self {
            sync,
            key_column: mapper.key_column().to_string(),
            policy: mapper.policy(),
            full_resync,
            row_no: 0,
            counts: RowCounts::default(),
            matched: 0,
            duplicate_in_state: false,
        }
    }

    pub async fn chunk(
        &mut self,
        chunk: MappedChunk,
        state: &StateStore,
    ) -> Result<Classified, sallyport_state::StateError> {
        let key_column = &self.key_column;
        let rows = chunk.rows;
        let known = match chunk.known {
            Some(k) => k,
            None => {
                let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
                state.fingerprints(self.sync, &keys).await?
            }
        };
        let mut out = Classified::default();
        for row in rows {
            self.row_no += 1;
            self.counts.rows_read += 1;
            let Some(key) = row.key else {
                self.counts.rows_failed += 1;
                let key = format!("(row {})", self.row_no);
                let reason = format!("{key}: column `{key_column}`: the key is NULL");
                out.failed.push((key, reason));
                continue;
            };
            let previous = known.get(&key).copied();
            let Some(mapped) = row.op else {
                // A key in more than one row of the model.
                if previous.is_some() {
                    self.duplicate_in_state = true;
                }
                self.counts.rows_failed += 1;
                let reason = format!(
                    "row {key}: column `{key_column}`: the key `{key}` is in more than one row of the model; each must be unique, so none of them is sent"
                );
                out.failed.push((key, reason));
                continue;
            };
            if previous.is_some() {
                self.matched += 1;
            }
            let op = match mapped {
                Ok(op) => op,
                Err(f) => {
                    self.counts.rows_failed += 1;
                    let reason = f.reason(&key);
                    out.failed.push((key, reason));
                    continue;
                }
            };
            let (send, change) = match (previous, self.policy) {
                (None, _) => {
                    self.counts.rows_new += 1;
                    (true, Change::New)
                }
                (Some(fp), ChangePolicy::Upsert) if fp != op.fingerprint => {
                    self.counts.rows_changed += 1;
                    (true, Change::Changed)
                }
                (Some(_), _) => {
                    self.counts.rows_unchanged += 1;
                    (self.full_resync, Change::Unchanged)
                }
            };
            if send {
                out.send.push(op);
                out.changes.push(change);
            }
        }
        Ok(out)
    }
}
