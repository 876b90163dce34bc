//! The store's error type: every backend maps its failures onto these variants.

use crate::Revision;

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// `create` found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// A compare-and-swap failed: the key was modified since `expected`.
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The modification revision the caller expected.
        expected: Revision,
        /// The key's modification revision now.
        actual: Revision,
    },
    /// The requested revision is older than the compacted revision.
    #[error("revision {requested} has been compacted")]
    Compacted {
        /// The revision that was asked for.
        requested: Revision,
    },
    /// The requested revision is newer than any committed write.
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        /// The revision that was asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The value is larger than the store accepts.
    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The key is not acceptable.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why.
        reason: String,
    },
    /// The watcher fell behind the writers and was ended to bound memory. Nothing was lost:
    /// call `watch(prefix, resume_after)` to continue.
    #[error("watcher fell behind the writers; resume after revision {resume_after}")]
    WatchLagged {
        /// The revision of the last event delivered to this watcher (or its start point).
        resume_after: Revision,
    },
    /// The data directory is in use by another process.
    #[error("data directory {path} is in use by another skiff process")]
    Locked {
        /// The lock file's path.
        path: String,
    },
    /// The store has been shut down.
    #[error("the store is closed")]
    Closed,
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The storage engine failed; the write was not made (or not acknowledged as) durable.
    #[error("storage: {0}")]
    Storage(String),
    /// etcd answered with an error or could not be reached.
    #[error("etcd: {context}: {source}")]
    Etcd {
        /// What the store was doing.
        context: &'static str,
        /// etcd's error.
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd process or stream the store relies on is not there (it did not start, exited,
    /// or closed a watch).
    #[error("etcd: {0}")]
    EtcdUnavailable(String),
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The stored data is not what this version of skiff expects.
    #[error("corrupt or incompatible data: {0}")]
    Corrupt(String),
}
