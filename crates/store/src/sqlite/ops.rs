//! The messages of the write path: what the store sends the writer thread ([`Request`] with a
//! [`WriteOp`]) and what the syncer answers once the write is durable ([`WriteOutcome`]). Kept
//! apart so the writer and the syncer both depend on them and not on each other's modules.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::{KeyValue, Revision, StoreResult};

/// A write, as sent to the writer thread.
pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// One compaction step towards `target`.
    Compact {
        target: Revision,
    },
}

/// What a write produced.
pub(crate) enum WriteOutcome {
    Written(Revision),
    Deleted(Revision, KeyValue),
    /// The compacted revision after this step.
    Compacted(Revision),
}

/// A write and where its outcome goes.
pub(crate) struct Request {
    pub(crate) op: WriteOp,
    pub(crate) reply: oneshot::Sender<StoreResult<WriteOutcome>>,
}
