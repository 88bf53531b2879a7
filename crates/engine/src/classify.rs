//! Change detection: each chunk of rows against the state store.

use std::collections::HashSet;

use sallyport_destinations::{ChangePolicy, ObjectMapper, Op};
use sallyport_sources::Row;
use sallyport_state::StateStore;

/// Counters of a run's reading side.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub read: u64,
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub failed: u64,
}

/// What a chunk yields: ops to send, and rows that failed (key, reason).
#[derive(Debug, Default)]
pub struct Classified {
    pub send: Vec<Op>,
    pub failed: Vec<(String, String)>,
}

pub struct Classifier<'a> {
    sync: &'a str,
    mapper: &'a dyn ObjectMapper,
    duplicates: HashSet<String>,
    full_resync: bool,
    row_no: u64,
    pub counts: Counts,
    /// Distinct model keys the state already held.
    pub matched: u64,
    matched_duplicates: HashSet<String>,
}

impl<'a> Classifier<'a> {
    pub fn new(
        sync: &'a str,
        mapper: &'a dyn ObjectMapper,
        duplicates: HashSet<String>,
        full_resync: bool,
    ) -> Self {
        Self {
            sync,
            mapper,
            duplicates,
            full_resync,
            row_no: 0,
            counts: Counts::default(),
            matched: 0,
            matched_duplicates: HashSet::new(),
        }
    }

    pub async fn chunk(
        &mut self,
        rows: Vec<Row>,
        state: &StateStore,
    ) -> Result<Classified, sallyport_state::StateError> {
        let key_column = self.mapper.key_column().to_string();
        let keys: Vec<&str> = rows.iter().filter_map(|r| r.key.as_deref()).collect();
        let known = state.fingerprints(self.sync, &keys).await?;
        let mut out = Classified::default();
        for row in &rows {
            self.row_no += 1;
            self.counts.read += 1;
            let Some(key) = row.key.as_deref() else {
                self.counts.failed += 1;
                let key = format!("(row {})", self.row_no);
                out.failed.push((
                    key.clone(),
                    format!("{key}: column `{key_column}`: the key is NULL"),
                ));
                continue;
            };
            let previous = known.get(key).copied();
            if self.duplicates.contains(key) {
                if previous.is_some() && self.matched_duplicates.insert(key.to_string()) {
                    self.matched += 1;
                }
                self.counts.failed += 1;
                out.failed.push((
                    key.to_string(),
                    format!(
                        "row {key}: column `{key_column}`: the key `{key}` is in more than one row of the model; each must be unique, so none of them is sent"
                    ),
                ));
                continue;
            }
            if previous.is_some() {
                self.matched += 1;
            }
            let op = match self.mapper.map(key, row) {
                Ok(op) => op,
                Err(f) => {
                    self.counts.failed += 1;
                    out.failed.push((key.to_string(), f.reason(key)));
                    continue;
                }
            };
            let send = match (previous, self.mapper.policy()) {
                (None, _) => {
                    self.counts.new += 1;
                    true
                }
                (Some(fp), ChangePolicy::Upsert) if fp != op.fingerprint => {
                    self.counts.changed += 1;
                    true
                }
                (Some(_), _) => {
                    self.counts.unchanged += 1;
                    self.full_resync
                }
            };
            if send {
                out.send.push(op);
            }
        }
        Ok(out)
    }
}
