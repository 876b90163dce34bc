//! The second half of group commit: making committed batches durable.
//!
//! The writer commits each batch to the write-ahead log without waiting for the disk
//! (`synchronous = NORMAL`) and hands it here. This thread takes every batch that is waiting,
//! makes them all durable with one `fdatasync` of the WAL, raises the durable revision, and only
//! then answers the callers and publishes the events. Meanwhile the writer is already applying
//! the next batch, so CPU work and disk flushes overlap.
//!
//! Readers never look past the durable revision (every read is an MVCC read at a revision), so
//! nobody — reader or watcher — can observe a write that a power loss could still take back. If
//! an fsync fails, the store refuses all further writes: after a failed fsync the kernel may have
//! dropped the dirty pages, and only a restart (which re-reads what is really on disk) is safe.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::ops::WriteOutcome;
use crate::watch_hub::WatchHub;
use crate::{Event, Revision, StoreError, StoreResult};

/// Most batches waiting for an fsync before the writer blocks.
const MAX_PENDING: usize = 64;

/// The highest revision known to be on disk, and whether durability has been lost.
pub(crate) struct Durable {
    revision: AtomicI64,
    failed: AtomicBool,
}

impl Durable {
    pub(crate) fn new(revision: Revision) -> Self {
        Self {
            revision: AtomicI64::new(revision),
            failed: AtomicBool::new(false),
        }
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// A committed batch waiting to be made durable.
pub(crate) struct Committed {
    pub(crate) replies: Vec<(
        oneshot::Sender<StoreResult<WriteOutcome>>,
        StoreResult<WriteOutcome>,
    )>,
    pub(crate) events: Vec<Event>,
    /// The writer's revision after this batch.
    pub(crate) revision: Revision,
}

impl Committed {
    /// Answers every caller with an error instead.
    pub(crate) fn fail(self, message: &str) {
        for (reply, _) in self.replies {
            let _ = reply.send(Err(StoreError::Storage(message.to_string())));
        }
    }
}

/// Starts the syncer thread for the WAL at `wal_path`; it ends when the writer drops the sender.
pub(crate) fn spawn(
    wal_path: &std::path::Path,
    durable: Arc<Durable>,
    hub: Arc<WatchHub>,
) -> StoreResult<mpsc::SyncSender<Committed>> {
    let wal = File::open(wal_path)?;
    let (sender, batches) = mpsc::sync_channel(MAX_PENDING);
    std::thread::Builder::new()
        .name("skiff-sqlite-sync".into())
        .spawn(move || run(&wal, &batches, &durable, &hub))?;
    Ok(sender)
}

fn run(wal: &File, batches: &mpsc::Receiver<Committed>, durable: &Durable, hub: &WatchHub) {
    while let Ok(first) = batches.recv() {
        let mut ready = vec![first];
        ready.extend(batches.try_iter());
        if let Err(error) = wal.sync_data() {
            durable.failed.store(true, Ordering::Release);
            tracing::error!(%error, "fsync of the write-ahead log failed; refusing further writes");
            let message = format!("fsync of the write-ahead log failed: {error}; restart skiff");
            for batch in ready {
                batch.fail(&message);
            }
            continue;
        }
        if let Some(last) = ready.last() {
            durable.revision.fetch_max(last.revision, Ordering::AcqRel);
        }
        for batch in ready {
            for (reply, result) in batch.replies {
                let _ = reply.send(result);
            }
            for event in batch.events {
                hub.publish(event);
            }
        }
    }
    tracing::debug!("sqlite syncer stopped");
}
