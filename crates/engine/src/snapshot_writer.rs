//! Acknowledged keys merged into a warehouse's snapshot while the run goes on: the run hands
//! over a batch and goes back to reading and sending, and one merge at a time runs beside it,
//! in the order the batches were handed over. The snapshot still follows acknowledgements only
//! (a batch is handed over once the app has acknowledged its keys); what a crash can leave out
//! is the batch being merged, the two waiting and the one being filled, and those keys are sent
//! again next run.

use std::future::Future;
use std::sync::{Arc, Mutex};

use sallyport_sources::{Snapshot, SnapshotRow, Source, SourceError};
use tokio::sync::{mpsc, oneshot};

enum Work {
    /// Acknowledged keys, and keys to take out.
    Merge(Vec<SnapshotRow>, Vec<String>),
    /// Answered once everything handed over before it is merged.
    Settled(oneshot::Sender<()>),
}

/// The run's end of the writer.
pub(crate) struct SnapshotWriter {
    tx: mpsc::Sender<Work>,
    /// Why the writer stopped, once it has.
    failed: Arc<Mutex<Option<SourceError>>>,
}

/// A writer for `snapshot`, and the work that merges what it is handed: to be polled beside
/// the run (it ends once the writer is dropped, or at the first merge the warehouse refuses).
pub(crate) fn start<'a>(
    source: &'a Source,
    snapshot: Snapshot,
) -> (SnapshotWriter, impl Future<Output = ()> + 'a) {
    // Two batches wait while another is merged: the run is held up only when the warehouse
    // merges more slowly than the app acknowledges, not each time one merge is slow (a
    // checkpoint, an autovacuum).
    let (tx, mut rx) = mpsc::channel::<Work>(2);
    let failed = Arc::new(Mutex::new(None));
    let writer = SnapshotWriter {
        tx,
        failed: failed.clone(),
    };
    let work = async move {
        while let Some(work) = rx.recv().await {
            match work {
                Work::Merge(rows, removed) => {
                    if let Err(e) = source.snapshot_write(&snapshot, &rows, &removed).await {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
                Work::Settled(done) => {
                    let _ = done.send(());
                }
            }
        }
    };
    (writer, work)
}

impl SnapshotWriter {
    /// Hands a batch over (waiting while two batches already wait).
    pub(crate) async fn merge(
        &self,
        rows: Vec<SnapshotRow>,
        removed: Vec<String>,
    ) -> Result<(), SourceError> {
        if rows.is_empty() && removed.is_empty() {
            return Ok(());
        }
        match self.tx.send(Work::Merge(rows, removed)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.why()),
        }
    }

    /// Waits until everything handed over is merged.
    pub(crate) async fn settled(&self) -> Result<(), SourceError> {
        let (done, answered) = oneshot::channel();
        if self.tx.send(Work::Settled(done)).await.is_err() {
            return Err(self.why());
        }
        answered.await.map_err(|_| self.why())
    }

    fn why(&self) -> SourceError {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| SourceError::Other("the snapshot's writer stopped".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str) -> SnapshotRow {
        SnapshotRow {
            key: key.into(),
            warehouse_fingerprint: Some(1),
            fingerprint: 1,
            note: None,
        }
    }

    /// A warehouse without snapshots refuses the first merge: the run hears why, at its next
    /// hand-over or when it waits for the merges, and the writer's work ends.
    #[tokio::test]
    async fn a_refused_merge_reaches_the_run() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db").display().to_string();
        std::fs::write(&path, b"").expect("an empty database");
        let source = Source::open(&sallyport_sources::WarehouseSettings::Sqlite(
            sallyport_sources::sqlite::Settings { path },
        ))
        .await
        .expect("sqlite");
        let snapshot = Snapshot {
            schema: "sallyport".into(),
            sync: "s".into(),
        };
        let (writer, work) = start(&source, snapshot);
        let run = async {
            writer
                .merge(vec![row("a")], vec![])
                .await
                .expect("handed over");
            // The refusal comes at the first wait after the merge was tried.
            let err = match writer.settled().await {
                Err(e) => e,
                Ok(()) => panic!("a refused merge settled"),
            };
            assert!(
                err.to_string().contains("use change_detection: local"),
                "{err}"
            );
            assert!(writer.merge(vec![row("b")], vec![]).await.is_err());
            drop(writer);
        };
        tokio::join!(run, work);
    }
}
