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
                    let unreadable = row.unreadable.iter().find(|u| mapper.uses_column(u.index));
                    Some(
                        match unreadable {
                            Some(u) => Err(sallyport_destinations::RowFailure::column(
                                &u.column, &u.reason,
                            )),
                            None => mapper.map(k, row),
                        }
                        .map(|mut op| {
                            // The warehouse row's fingerprint, when there is one, is what the state
                            // keeps.
                            if let Some(fp) = row.fingerprint {
                                op.fingerprint = fp;
                            }
                            op
                        }),
                    )
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
        fn map(&self, _: &str, _: &Row) -> Result<Op, RowFailure> {
            unreachable!("the test maps rows itself")
        }
        fn endpoint(&self, _: Route) -> &'static str {
            "POST /x"
        }
    }

    fn op(key: &str, fingerprint: u64) -> Mapped {
        Mapped {
            key: Some(key.into()),
            op: Some(Ok(Op {
                key: key.into(),
                fingerprint,
                body: "{}".into(),
                route: Route::Batch,
            })),
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
        let run = state.begin_run("s", false).await.unwrap();
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
                },
                Mapped {
                    key: Some("d".into()),
                    op: None,
                },
                Mapped {
                    key: Some("e".into()),
                    op: Some(Err(RowFailure::column("bio", "too long"))),
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
