//! The embedded SQLite backend, skiff's default store.
//!
//! Group commit in two threads (`writer` applies and commits batches, `syncer` fsyncs them and
//! acknowledges), reader threads with a connection each (`reader`) that never read past the
//! durable revision, in-process watch fan-out (`watch_hub`), and an exclusive lock file so two
//! processes never open the same data directory.

mod ops;
mod reader;
mod schema;
pub mod snapshot;
mod syncer;
mod writer;

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::watch_hub::{DEFAULT_RING_CAPACITY, WatchHub};
use crate::{
    KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError, StoreResult, WatchStream,
    check_write,
};
use ops::{Request, WriteOp, WriteOutcome};
use reader::{Readers, resolve};
use syncer::Durable;

/// The database file inside a store directory.
const DB_FILE: &str = "state.db";
/// The lock file inside a store directory.
const LOCK_FILE: &str = "lock";

/// Tuning for [`SqliteStore::open_with`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How many events a watcher may fall behind before it is ended with `WatchLagged`.
    pub watch_capacity: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            watch_capacity: DEFAULT_RING_CAPACITY,
        }
    }
}

/// A durable store in one SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::Sender<Request>,
    readers: Readers,
    hub: Arc<WatchHub>,
    _lock: File,
}

/// Takes the store directory's exclusive lock (released by the OS when the process ends).
fn lock_dir(dir: &Path) -> StoreResult<File> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.display().to_string(),
        }),
        Err(TryLockError::Error(error)) => Err(error.into()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, SqliteOptions::default())
    }

    /// Opens the store with explicit options.
    pub fn open_with(dir: &Path, options: SqliteOptions) -> StoreResult<Self> {
        let lock = lock_dir(dir)?;
        let path = Self::db_path(dir);
        let conn = schema::open_writer(&path)?;
        let (current, _) = schema::revisions(&conn)?;
        // Whatever is in the files now (say, left by a killed process in the page cache) is
        // made durable before it counts as such.
        let mut wal_path = path.clone().into_os_string();
        wal_path.push("-wal");
        let wal_path = PathBuf::from(wal_path);
        File::open(&path)?.sync_all()?;
        File::open(&wal_path)?.sync_all()?;
        let durable = Arc::new(Durable::new(current));
        let hub = Arc::new(WatchHub::new(options.watch_capacity));
        let syncer = syncer::spawn(&wal_path, Arc::clone(&durable), Arc::clone(&hub))?;
        let (sender, requests) = mpsc::channel(4096);
        writer::spawn(conn, syncer, Arc::clone(&durable), requests)?;
        let readers = Readers::start(&path, durable)?;
        tracing::info!(path = %path.display(), "opened sqlite store");
        Ok(Self {
            inner: Arc::new(Inner {
                writer: sender,
                readers,
                hub,
                _lock: lock,
            }),
        })
    }

    /// The database file of the store in `dir`.
    pub fn db_path(dir: &Path) -> PathBuf {
        dir.join(DB_FILE)
    }

    async fn write(&self, op: WriteOp) -> StoreResult<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writer
            .send(Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn unexpected(outcome: &str) -> StoreError {
        StoreError::Storage(format!("writer answered with an unexpected {outcome}"))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> StoreResult<(Option<KeyValue>, Revision)> {
        let key = key.to_string();
        self.inner
            .readers
            .read(move |conn, current, compacted| {
                let at = resolve(revision, current, compacted)?;
                Ok((reader::get(conn, &key, at)?, at))
            })
            .await
    }

    async fn range(&self, request: RangeRequest) -> StoreResult<RangeResponse> {
        self.inner
            .readers
            .read(move |conn, current, compacted| {
                let at = resolve(request.revision, current, compacted)?;
                reader::range(conn, &request, at)
            })
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        check_write(key, &value)?;
        let key = key.to_string();
        match self.write(WriteOp::Create { key, value }).await? {
            WriteOutcome::Written(revision) => Ok(revision),
            _ => Err(Self::unexpected("outcome to a create")),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        check_write(key, &value)?;
        let key = key.to_string();
        let op = WriteOp::Update {
            key,
            value,
            expected,
        };
        match self.write(op).await? {
            WriteOutcome::Written(revision) => Ok(revision),
            _ => Err(Self::unexpected("outcome to an update")),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<(Revision, KeyValue)> {
        let key = key.to_string();
        match self.write(WriteOp::Delete { key, expected }).await? {
            WriteOutcome::Deleted(revision, prev) => Ok((revision, prev)),
            _ => Err(Self::unexpected("outcome to a delete")),
        }
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        self.inner.readers.read(|_, current, _| Ok(current)).await
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        loop {
            match self.write(WriteOp::Compact { target: revision }).await? {
                WriteOutcome::Compacted(done) if done >= revision => return Ok(()),
                WriteOutcome::Compacted(_) => continue,
                _ => return Err(Self::unexpected("outcome to a compaction")),
            }
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<WatchStream> {
        let compacted = self
            .inner
            .readers
            .read(|_, _, compacted| Ok(compacted))
            .await?;
        if after < compacted {
            return Err(StoreError::Compacted { requested: after });
        }
        let history = Arc::new(self.inner.readers.clone());
        Ok(self.inner.hub.watch(history, prefix, after))
    }
}
