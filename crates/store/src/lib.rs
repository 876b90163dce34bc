//! skiff's revisioned key-value store.
//!
//! All cluster state lives behind one [`Store`] trait with etcd v3 semantics: every write gets a
//! global, strictly increasing revision; reads can be served at any uncompacted revision; writes are
//! guarded by compare-and-swap on the key's modification revision; and anyone can watch a key prefix
//! from any uncompacted revision and see every later change, in order, with its previous value.
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, durable, the default), [`etcd::EtcdStore`] (real
//! etcd for scale-out) and [`memory::MemoryStore`] (hermetic tests). One conformance suite
//! (`tests/conformance.rs`) holds all three to the same contract.

pub mod compactor;
pub mod error;
pub mod etcd;
pub mod etcd_process;
mod keys;
pub mod memory;
pub mod sqlite;
mod watch_hub;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use error::{StoreError, StoreResult};

/// A global store revision. Revision 0 means "before the first write".
pub type Revision = i64;

/// Largest value the store accepts (etcd's default request limit): 1.5 MiB.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// One key's value at some revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The stored bytes (empty in a delete event's `kv`).
    pub value: Bytes,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the write that produced this value.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new value; for a delete, the key with an empty value and the deletion's revision.
    pub kv: KeyValue,
    /// The value just before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the write that produced this event.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A range read over a key prefix.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Only keys starting with this prefix (empty: every key).
    pub prefix: String,
    /// Continuation: only keys strictly after this one.
    pub start_after: Option<String>,
    /// At most this many keys (`None`: all).
    pub limit: Option<usize>,
    /// Read at this revision (`None`: the current one).
    pub revision: Option<Revision>,
}

/// The result of a range read, all at one revision.
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// True if the limit cut the result short; continue after the last key.
    pub more: bool,
    /// The revision the read was served at; pass it on to read further pages consistently.
    pub revision: Revision,
}

/// An ordered stream of events. After an `Err` item the stream ends; on
/// [`StoreError::WatchLagged`] the caller resumes with `watch(prefix, resume_after)`.
pub type WatchStream = Pin<Box<dyn Stream<Item = StoreResult<Event>> + Send>>;

/// The store contract, with etcd v3 semantics.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and benchmarks (`sqlite`, `etcd`, `memory`).
    fn backend(&self) -> &'static str;

    /// Reads one key, at `revision` or the current one. Returns the value (if present) and the
    /// revision the read was served at.
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> StoreResult<(Option<KeyValue>, Revision)>;

    /// Reads keys under a prefix in key order, at one consistent revision.
    async fn range(&self, request: RangeRequest) -> StoreResult<RangeResponse>;

    /// Creates a key; fails with [`StoreError::AlreadyExists`] if it is present.
    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision>;

    /// Replaces a key's value if its modification revision is still `expected`
    /// ([`StoreError::Conflict`] otherwise, [`StoreError::NotFound`] if it is absent).
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision>;

    /// Deletes a key, guarded by its modification revision when `expected` is given. Returns the
    /// deletion's revision and the value that was deleted.
    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<(Revision, KeyValue)>;

    /// The revision of the latest committed write.
    async fn current_revision(&self) -> StoreResult<Revision>;

    /// Discards history before `revision`: afterwards reads below it and watches starting below
    /// it fail with [`StoreError::Compacted`]. Compacting to an already compacted revision is a
    /// no-op.
    async fn compact(&self, revision: Revision) -> StoreResult<()>;

    /// Watches every key under `prefix`, yielding each change with a revision greater than
    /// `after`, in revision order, with nothing missed.
    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<WatchStream>;
}

/// Rejects values over [`MAX_VALUE_BYTES`] and empty keys, before any backend work.
pub(crate) fn check_write(key: &str, value: &[u8]) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            reason: "the key is empty".into(),
        });
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge {
            key: key.to_string(),
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}
