//! What every warehouse's change detection shares: how what a diff read appends to a row
//! becomes a [`Diff`], how a fingerprint kept as text reads, and how a batch of acknowledged
//! and removed keys is made ready for a `MERGE`.

use sallyport_core::Model;

use crate::{Dialect, Diff, DiffSpec, SnapshotRow};

/// What a warehouse's diff read is made of, in its own SQL.
pub(crate) struct DiffSql<'a> {
    pub dialect: &'a dyn Dialect,
    /// The snapshot table, quoted.
    pub table: String,
    /// The warehouse's fingerprint of a row of the model, aliased `q`.
    pub fingerprint: String,
    /// The key as the snapshot keeps it (text), from the key column of `m`.
    pub key_text: &'a dyn Fn(&str) -> String,
    /// Whether the snapshot's fingerprint `s` and the row's `m` differ.
    pub differs: &'a dyn Fn(&str, &str) -> String,
}

/// The SQL of a diff read: the model's rows (`select`, over `m`), each with the warehouse's
/// fingerprint and what the snapshot holds for its key, only those that differ unless every
/// row is asked for. What the snapshot holds comes in as few bytes as do: its fingerprint only
/// where the warehouse's is not known yet (carried over from local change detection, compared
/// in Sallyport), its note as '' when it has none (NULL: the key is new).
pub(crate) fn diff_sql(
    model: &Model,
    key: &str,
    select: &[String],
    d: &DiffSpec<'_>,
    w: DiffSql<'_>,
) -> String {
    let q = |n: &str| w.dialect.quote_ident(n);
    let inner = w.dialect.model_from(model);
    let inner = match inner.strip_suffix(" AS m") {
        Some(i) => format!("{i} AS q"),
        None => inner,
    };
    let (sk, swfp, slfp, snote, mwfp) = (
        format!("s.{}", q("key")),
        format!("s.{}", q("wfp")),
        format!("s.{}", q("lfp")),
        format!("s.{}", q("note")),
        format!("m.{}", q("__sp_wfp")),
    );
    let rows = format!(
        "(SELECT q.*, {} AS {} FROM {inner}) AS m",
        w.fingerprint,
        q("__sp_wfp")
    );
    if d.empty {
        // Nothing to compare with: every row, with its fingerprint only.
        return format!("SELECT {}, {mwfp} FROM {rows}", select.join(", "));
    }
    let filter = match (d.all, d.fingerprint.is_some()) {
        (true, _) => String::new(),
        (false, true) => format!(
            " WHERE {sk} IS NULL OR {swfp} IS NULL OR {}",
            (w.differs)(&swfp, &mwfp)
        ),
        (false, false) => format!(" WHERE {sk} IS NULL"),
    };
    format!(
        "SELECT {}, {mwfp}, CASE WHEN {swfp} IS NULL THEN {slfp} END, CASE WHEN {sk} IS NOT NULL THEN COALESCE({snote}, '') END FROM {rows} LEFT JOIN {} AS s ON {sk} = {}{filter}",
        select.join(", "),
        w.table,
        (w.key_text)(&format!("m.{}", q(key))),
    )
}

/// Fingerprints compared as most warehouses do (a NULL is never taken for a difference there:
/// their fingerprints are never NULL).
pub(crate) fn plainly_differs(s: &str, m: &str) -> String {
    format!("{s} <> {m}")
}

/// What a diff read appends to a row: the warehouse's fingerprint, and, when the snapshot held
/// the key, the fingerprint kept only where the warehouse's was unknown (`lfp`) and the note
/// (`''` for none). After a first run's read (`empty`), the fingerprint alone.
pub(crate) fn diff(wfp: i64, lfp: Option<i64>, note: Option<String>, empty: bool) -> Diff {
    Diff {
        warehouse_fingerprint: wfp,
        previous: if empty {
            None
        } else {
            note.map(|n| {
                (
                    lfp.map_or(0, |l| l as u64),
                    Some(n).filter(|n| !n.is_empty()),
                )
            })
        },
    }
}

/// The same from the text of each (warehouses that answer in text).
pub(crate) fn diff_of_texts(
    wfp: Option<&str>,
    lfp: Option<&str>,
    note: Option<&str>,
    empty: bool,
) -> Diff {
    diff(
        wfp.and_then(unhex).unwrap_or(0),
        lfp.and_then(|t| t.parse().ok()),
        note.map(str::to_string),
        empty,
    )
}

/// A warehouse fingerprint as warehouses without a 64-bit hash keep it: 16 hex digits.
pub(crate) fn hex(w: i64) -> String {
    format!("{:016x}", w as u64)
}

pub(crate) fn unhex(t: &str) -> Option<i64> {
    u64::from_str_radix(t.trim(), 16).ok().map(|u| u as i64)
}

/// A batch of acknowledged keys with each key once (its last write wins), in key order: what a
/// `MERGE` takes (Redshift and Snowflake refuse a source with a key twice).
pub(crate) fn last_of_each_key(rows: &[SnapshotRow]) -> Vec<&SnapshotRow> {
    let mut last = std::collections::HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        last.insert(r.key.as_str(), i);
    }
    let mut kept: Vec<&SnapshotRow> = rows
        .iter()
        .enumerate()
        .filter(|(i, r)| last.get(r.key.as_str()) == Some(i))
        .map(|(_, r)| r)
        .collect();
    kept.sort_by(|a, b| a.key.cmp(&b.key));
    kept
}

/// Acknowledged and removed keys as one `MERGE` source: each key once, with whether it goes.
/// A key both acknowledged and removed in one batch goes (as a delete after the upsert would
/// leave it).
pub(crate) fn with_removals(rows: &[SnapshotRow], removed: &[String]) -> Vec<(SnapshotRow, bool)> {
    let gone: std::collections::HashSet<&str> = removed.iter().map(String::as_str).collect();
    let all: Vec<SnapshotRow> = rows
        .iter()
        .filter(|r| !gone.contains(r.key.as_str()))
        .cloned()
        .chain(removed.iter().map(|k| SnapshotRow {
            key: k.clone(),
            warehouse_fingerprint: None,
            fingerprint: 0,
            note: None,
        }))
        .collect();
    last_of_each_key(&all)
        .into_iter()
        .map(|r| (r.clone(), gone.contains(r.key.as_str())))
        .collect()
}

/// `entries` (SQL text of rows) in parts of at most `max_rows` and about `max_bytes` (a part
/// holds one entry at least): what one statement carries.
pub(crate) fn parts(entries: &[String], max_rows: usize, max_bytes: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let (mut end, mut bytes) = (start, 0);
        while end < entries.len()
            && end - start < max_rows
            && (end == start || bytes + entries[end].len() < max_bytes)
        {
            bytes += entries[end].len() + 2;
            end += 1;
        }
        out.push(&entries[start..end]);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, fp: u64) -> SnapshotRow {
        SnapshotRow {
            key: key.into(),
            warehouse_fingerprint: Some(fp as i64),
            fingerprint: fp,
            note: None,
        }
    }

    #[test]
    fn fingerprints_round_trip_through_hex() {
        for w in [0, 1, -1, i64::MIN, i64::MAX] {
            assert_eq!(unhex(&hex(w)), Some(w));
        }
    }

    #[test]
    fn a_batch_holds_each_key_once_and_a_removal_wins() {
        let b = with_removals(&[row("b", 1), row("a", 2), row("b", 3)], &["a".into()]);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].0.key.as_str(), b[0].1), ("a", true));
        assert_eq!(
            (b[1].0.key.as_str(), b[1].0.fingerprint, b[1].1),
            ("b", 3, false)
        );
    }

    #[test]
    fn parts_keep_to_their_limits() {
        let e: Vec<String> = (0..10).map(|i| format!("row{i}")).collect();
        assert_eq!(
            parts(&e, 4, 1000)
                .iter()
                .map(|p| p.len())
                .collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(
            parts(&e, 100, 13)
                .iter()
                .map(|p| p.len())
                .collect::<Vec<_>>(),
            [2, 2, 2, 2, 2]
        );
        assert_eq!(parts(&e, 100, 1).len(), 10, "one entry at least");
    }

    #[test]
    fn a_diff_reads_what_the_snapshot_held() {
        assert_eq!(
            diff_of_texts(Some("00000000000000ff"), None, Some(""), false).previous,
            Some((0, None))
        );
        assert_eq!(
            diff_of_texts(Some("ff"), Some("7"), Some("n"), false).previous,
            Some((7, Some("n".into())))
        );
        assert_eq!(diff_of_texts(Some("ff"), None, None, false).previous, None);
        assert_eq!(
            diff_of_texts(Some("ff"), Some("7"), Some("n"), true).previous,
            None
        );
    }
}
