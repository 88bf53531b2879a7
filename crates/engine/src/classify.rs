//! Change detection: each chunk of rows against the state store.

use std::collections::{HashMap, HashSet};

use sallyport_destinations::{Before, ChangePolicy, Keying, ObjectMapper, Op, Route, RowFailure};
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
    /// The key left the model, and is removed from the app.
    Removed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
            Change::Removed => "removed",
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
    /// With change detection in the warehouse: rows read out that turn out unchanged, whose
    /// warehouse fingerprint the snapshot should keep.
    pub refresh: Vec<sallyport_sources::SnapshotRow>,
}

/// A row after mapping: its key, and its op or why it cannot be sent. Rows with no key or with
/// a duplicated key are not mapped.
pub struct Mapped {
    pub key: Option<String>,
    pub op: Option<Result<Op, RowFailure>>,
    /// For a duplicated key written more than one way (emails that differ in case): how.
    pub spellings: Option<String>,
}

/// A chunk of mapped rows, with the state's fingerprints of their keys.
pub struct MappedChunk {
    pub rows: Vec<Mapped>,
    pub known: Option<HashMap<String, u64>>,
}

/// The keys that more than one row of the model has, kept by the state store under `scope`;
/// with the ways each was written, where it was written more than one way.
#[derive(Debug, Default)]
pub struct Duplicates {
    pub scope: String,
    pub spellings: HashMap<String, Vec<String>>,
}

/// Gives each row the key the state compares: the key column as it is, in lower case (emails),
/// or made of several columns.
pub fn key_rows(
    mapper: &dyn ObjectMapper,
    rows: &mut [Row],
) -> Result<Vec<Option<String>>, crate::Stop> {
    let mut written = Vec::with_capacity(rows.len());
    for row in rows.iter_mut() {
        match mapper.keying() {
            Keying::Column => written.push(None),
            Keying::CaseInsensitive => {
                let raw = row.key.take();
                row.key = raw.as_ref().map(|k| k.to_lowercase());
                written.push(raw);
            }
            Keying::Composite => {
                row.materialize().map_err(crate::Stop::Warehouse)?;
                row.key = mapper.row_key(row);
                written.push(None);
            }
        }
    }
    Ok(written)
}

/// Maps a chunk of rows: the CPU-heavy part (building each op's JSON), done on its own task
/// while the previous chunk is being compared and sent. Rows that carry the warehouse's
/// fingerprint are first compared with the state: an unchanged one is never decoded nor built.
pub async fn map_chunk(
    sync: &str,
    mapper: &dyn ObjectMapper,
    mut rows: Vec<Row>,
    duplicates: Option<&Duplicates>,
    state: &StateStore,
    full_resync: bool,
) -> Result<MappedChunk, crate::Stop> {
    let written = key_rows(mapper, &mut rows)?;
    // Which of this chunk's keys are duplicates: asked of the state store, and only when the
    // model has any.
    let duplicated: HashSet<String> = match duplicates {
        None => HashSet::new(),
        Some(d) => {
            let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
            state
                .duplicates_among(&d.scope, &keys)
                .await?
                .into_iter()
                .collect()
        }
    };
    // What was delivered: from the snapshot, when the warehouse compared the rows; else from
    // the state store.
    let from_warehouse = rows.iter().any(|r| r.diff.is_some());
    let previous = if from_warehouse {
        rows.iter()
            .filter_map(|r| Some((r.key.clone()?, r.diff.as_ref()?.previous.clone()?)))
            .collect()
    } else {
        let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
        state.previous(sync, &keys).await?
    };
    let mut out = Vec::with_capacity(rows.len());
    for (row, written) in rows.iter_mut().zip(written) {
        let key = row.key.take();
        let mut spellings = None;
        let op = match key.as_deref() {
            None => None,
            Some(k) if duplicated.contains(k) => {
                spellings = duplicates.and_then(|d| d.spellings.get(k)).map(|all| {
                    all.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                None
            }
            Some(k) => {
                let warehouse_fingerprint = row.diff.as_ref().map(|d| d.warehouse_fingerprint);
                let before = previous.get(k);
                let unchanged = !full_resync
                    && row.fingerprint.is_some()
                    && before.map(|(fp, _)| *fp) == row.fingerprint;
                if unchanged {
                    Some(Ok(Op {
                        snapshot: warehouse_fingerprint,
                        ..Op::new(
                            k,
                            row.fingerprint.unwrap_or_default(),
                            String::new(),
                            Route::Batch,
                        )
                    }))
                } else {
                    row.materialize().map_err(crate::Stop::Warehouse)?;
                    let unreadable = row.unreadable.iter().find(|u| mapper.uses_column(u.index));
                    let before = match before {
                        None => Before::New,
                        Some((_, note)) => Before::Sent(note.as_deref()),
                    };
                    Some(
                        match unreadable {
                            Some(u) => Err(sallyport_destinations::RowFailure::column(
                                &u.column, &u.reason,
                            )),
                            None => mapper.map(written.as_deref().unwrap_or(k), row, before),
                        }
                        .map(|mut op| {
                            // The state's key (an email in lower case), and the warehouse
                            // row's fingerprint when there is one.
                            op.key = k.to_string();
                            if let Some(fp) = row.fingerprint {
                                op.fingerprint = fp;
                            }
                            op.snapshot = warehouse_fingerprint;
                            op
                        }),
                    )
                }
            }
        };
        out.push(Mapped { key, op, spellings });
    }
    let known = previous.into_iter().map(|(k, (fp, _))| (k, fp)).collect();
    Ok(MappedChunk {
        rows: out,
        known: Some(known),
    })
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
    /// Rows whose key the state did not hold.
    pub unknown: u64,
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
            unknown: 0,
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
            if previous.is_none() {
                self.unknown += 1;
            }
            let Some(mapped) = row.op else {
                // A key in more than one row of the model.
                if previous.is_some() {
                    self.duplicate_in_state = true;
                }
                self.counts.rows_failed += 1;
                let reason = match &row.spellings {
                    Some(all) => format!(
                        "row {key}: column `{key_column}`: {all} are one person to Customer.io (it matches emails without regard to case), in more than one row of the model; each must be unique, so none of them is sent"
                    ),
                    None => format!(
                        "row {key}: column `{key_column}`: the key `{key}` is in more than one row of the model; each must be unique, so none of them is sent"
                    ),
                };
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
            if !send {
                if let Some(wfp) = op.snapshot {
                    out.refresh.push(sallyport_sources::SnapshotRow {
                        key: op.key.clone(),
                        warehouse_fingerprint: Some(wfp),
                        fingerprint: op.fingerprint,
                        note: None,
                    });
                }
            }
            if send {
                out.send.push(op);
                out.changes.push(change);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_config::StateLocation;
    use sallyport_destinations::{Op, Route, RowFailure};
    use sallyport_state::Commit;

    /// A mapper whose ops the test writes itself.
    struct Fake(ChangePolicy);

    impl ObjectMapper for Fake {
        fn key_column(&self) -> &str {
            "id"
        }
        fn policy(&self) -> ChangePolicy {
            self.0
        }
        fn map(&self, _: &str, _: &Row, _: Before<'_>) -> Result<Op, RowFailure> {
            unreachable!("the test maps rows itself")
        }
        fn endpoint(&self, _: Route) -> String {
            "POST /x".into()
        }
    }

    fn op(key: &str, fingerprint: u64) -> Mapped {
        Mapped {
            key: Some(key.into()),
            op: Some(Ok(Op::new(key, fingerprint, "{}".into(), Route::Batch))),
            spellings: None,
        }
    }

    /// A state that delivered `a` with fingerprint 1 and `b` with 2; and a chunk with `a`
    /// unchanged, `b` changed, `c` new, a NULL key, a duplicated key and a bad row.
    async fn classify(
        policy: ChangePolicy,
        full_resync: bool,
    ) -> (Classified, Classifier<'static>) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(&StateLocation::Sqlite(dir.path().join("s.db")))
            .await
            .unwrap();
        let run = state.begin_run("s", false, None).await.unwrap();
        let commit = Commit {
            accepted: vec![("a".into(), 1), ("b".into(), 2), ("d".into(), 9)],
            ..Default::default()
        };
        state.commit("s", run, commit).await.unwrap();
        let mapper: &'static Fake = Box::leak(Box::new(Fake(policy)));
        let mut c = Classifier::new("s", mapper, full_resync);
        let chunk = MappedChunk {
            rows: vec![
                op("a", 1),
                op("b", 3),
                op("c", 4),
                Mapped {
                    key: None,
                    op: None,
                    spellings: None,
                },
                Mapped {
                    key: Some("d".into()),
                    op: None,
                    spellings: None,
                },
                Mapped {
                    key: Some("e".into()),
                    op: Some(Err(RowFailure::column("bio", "too long"))),
                    spellings: None,
                },
            ],
            known: None,
        };
        let out = c.chunk(chunk, &state).await.unwrap();
        (out, c)
    }

    fn keys(out: &Classified) -> Vec<&str> {
        out.send.iter().map(|o| o.key.as_str()).collect()
    }

    #[tokio::test]
    async fn upserts_send_new_and_changed_rows() {
        let (out, c) = classify(ChangePolicy::Upsert, false).await;
        assert_eq!(keys(&out), ["b", "c"]);
        assert_eq!(out.changes, [Change::Changed, Change::New]);
        let reasons: Vec<&str> = out.failed.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("the key is NULL"));
        assert!(reasons[1].contains("is in more than one row"));
        assert_eq!(reasons[2], "row e: column `bio`: too long");
        let n = c.counts;
        assert_eq!(
            (
                n.rows_read,
                n.rows_new,
                n.rows_changed,
                n.rows_unchanged,
                n.rows_failed
            ),
            (6, 1, 1, 1, 3)
        );
        assert_eq!(c.matched, 2, "a and b were in the state");
        assert!(
            c.duplicate_in_state,
            "d was delivered before it was duplicated"
        );
    }

    #[tokio::test]
    async fn inserts_send_each_key_once() {
        let (out, c) = classify(ChangePolicy::InsertOnce, false).await;
        assert_eq!(keys(&out), ["c"], "b changed, but an event is sent once");
        assert_eq!((c.counts.rows_changed, c.counts.rows_unchanged), (0, 2));
    }

    #[tokio::test]
    async fn a_full_resync_sends_unchanged_rows_too() {
        let (out, _) = classify(ChangePolicy::Upsert, true).await;
        assert_eq!(keys(&out), ["a", "b", "c"]);
        assert_eq!(
            out.changes,
            [Change::Unchanged, Change::Changed, Change::New]
        );
    }
}
