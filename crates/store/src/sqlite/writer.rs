//! The single SQLite writer thread: the first half of group commit.
//!
//! Every write goes through one channel to one thread that owns the write connection. The thread
//! takes whatever requests are waiting (up to [`MAX_BATCH`]), applies them in one transaction,
//! each with its own revision and its own compare-and-swap check, commits once, and hands the
//! batch to the syncer (`syncer.rs`), which makes it durable with one fsync and only then answers
//! the callers and publishes the events. So throughput grows with the number of concurrent
//! writers while every acknowledged write is durable.

use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::mpsc;

use super::ops::{Request, WriteOp, WriteOutcome};
use super::schema;
use super::syncer::{Committed, Durable};
use crate::{Event, EventKind, KeyValue, Revision, StoreError, StoreResult};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Most revisions one compaction step covers, so a large compaction never holds the writer long.
pub(crate) const COMPACT_STEP: Revision = 10_000;

struct Writer {
    conn: Connection,
    syncer: std::sync::mpsc::SyncSender<Committed>,
    durable: Arc<Durable>,
    current: Revision,
    compacted: Revision,
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn(
    conn: Connection,
    syncer: std::sync::mpsc::SyncSender<Committed>,
    durable: Arc<Durable>,
    requests: mpsc::Receiver<Request>,
) -> StoreResult<()> {
    let (current, compacted) = schema::revisions(&conn)?;
    let writer = Writer {
        conn,
        syncer,
        durable,
        current,
        compacted,
    };
    std::thread::Builder::new()
        .name("skiff-sqlite-writer".into())
        .spawn(move || writer.run(requests))?;
    Ok(())
}

impl Writer {
    fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = requests.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<Request>) {
        if self.durable.failed() {
            for request in batch.drain(..) {
                let message = "an earlier fsync failed; restart skiff".to_string();
                let _ = request.reply.send(Err(StoreError::Storage(message)));
            }
            return;
        }
        let (current, compacted) = (self.current, self.compacted);
        match self.apply(batch) {
            Ok((results, events, vacuum)) => {
                // After compaction: hand freed pages back to the file system and fold the WAL
                // into the database, so the files shrink with their contents.
                if vacuum && let Err(error) = shrink(&self.conn) {
                    tracing::warn!(%error, "incremental vacuum after compaction failed");
                }
                let committed = Committed {
                    replies: batch.drain(..).map(|r| r.reply).zip(results).collect(),
                    events,
                    revision: self.current,
                };
                if let Err(std::sync::mpsc::SendError(committed)) = self.syncer.send(committed) {
                    committed.fail("the sqlite syncer has stopped");
                }
            }
            Err(error) => {
                self.current = current;
                self.compacted = compacted;
                tracing::error!(%error, writes = batch.len(), "sqlite commit failed");
                let message = error.to_string();
                for request in batch.drain(..) {
                    let _ = request
                        .reply
                        .send(Err(StoreError::Storage(message.clone())));
                }
            }
        }
    }

    /// Applies a batch in one transaction. `Err` means nothing was committed.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        batch: &[Request],
    ) -> Result<(Vec<StoreResult<WriteOutcome>>, Vec<Event>, bool), rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut vacuum = false;
        for request in batch {
            let result = match &request.op {
                WriteOp::Create { key, value } => match live(&tx, key)? {
                    Some(_) => Err(StoreError::AlreadyExists { key: key.clone() }),
                    None => {
                        let event = put(&tx, &mut self.current, key, value, None)?;
                        let revision = event.revision();
                        events.push(event);
                        Ok(WriteOutcome::Written(revision))
                    }
                },
                WriteOp::Update {
                    key,
                    value,
                    expected,
                } => match live(&tx, key)? {
                    None => Err(StoreError::NotFound { key: key.clone() }),
                    Some(prev) if prev.mod_revision != *expected => Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        actual: prev.mod_revision,
                    }),
                    Some(prev) => {
                        let event = put(&tx, &mut self.current, key, value, Some(prev))?;
                        let revision = event.revision();
                        events.push(event);
                        Ok(WriteOutcome::Written(revision))
                    }
                },
                WriteOp::Delete { key, expected } => match live(&tx, key)? {
                    None => Err(StoreError::NotFound { key: key.clone() }),
                    Some(prev) if expected.is_some_and(|e| e != prev.mod_revision) => {
                        Err(StoreError::Conflict {
                            key: key.clone(),
                            expected: expected.unwrap_or_default(),
                            actual: prev.mod_revision,
                        })
                    }
                    Some(prev) => {
                        let event = tombstone(&tx, &mut self.current, key, prev.clone())?;
                        let revision = event.revision();
                        events.push(event);
                        Ok(WriteOutcome::Deleted(revision, prev))
                    }
                },
                WriteOp::Compact { target } => {
                    let result = compact_step(&tx, *target, self.current, &mut self.compacted)?;
                    vacuum |= result.is_ok();
                    result
                }
            };
            results.push(result);
        }
        tx.commit()?;
        Ok((results, events, vacuum))
    }
}

/// Returns free pages to the file system and truncates the WAL. Both pragmas do their work one
/// row at a time, so every row is stepped through.
fn shrink(conn: &Connection) -> rusqlite::Result<()> {
    for pragma in [
        "PRAGMA incremental_vacuum",
        "PRAGMA wal_checkpoint(TRUNCATE)",
    ] {
        let mut stmt = conn.prepare(pragma)?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(())
}

/// One compaction step of at most [`COMPACT_STEP`] revisions towards `target`.
fn compact_step(
    tx: &Connection,
    target: Revision,
    current: Revision,
    compacted: &mut Revision,
) -> Result<StoreResult<WriteOutcome>, rusqlite::Error> {
    if target > current {
        return Ok(Err(StoreError::FutureRevision {
            requested: target,
            current,
        }));
    }
    if target <= *compacted {
        return Ok(Ok(WriteOutcome::Compacted(*compacted)));
    }
    let from = *compacted;
    // Compaction may delete the newest row (a tombstone): keep the current revision as a floor.
    schema::set_meta(tx, "current_rev", current)?;
    let to = target.min(from + COMPACT_STEP);
    // Versions superseded by a write in (from, to]; then tombstones in (from, to], which
    // after that are the newest version of their key at `to` and mean "absent".
    tx.prepare_cached(
        "DELETE FROM log WHERE rev IN
               (SELECT prev_rev FROM log WHERE rev > ?1 AND rev <= ?2 AND prev_rev IS NOT NULL)",
    )?
    .execute(params![from, to])?;
    tx.prepare_cached("DELETE FROM log WHERE rev > ?1 AND rev <= ?2 AND value IS NULL")?
        .execute(params![from, to])?;
    schema::set_meta(tx, "compact_rev", to)?;
    *compacted = to;
    Ok(Ok(WriteOutcome::Compacted(to)))
}

/// The live value of `key`, if any.
fn live(tx: &Connection, key: &str) -> Result<Option<KeyValue>, rusqlite::Error> {
    let newest = tx
        .prepare_cached(
            "SELECT rev, value, create_rev FROM log WHERE key = ?1 ORDER BY rev DESC LIMIT 1",
        )?
        .query_row([key.as_bytes()], |row| {
            let (mod_revision, value, create_revision): (Revision, Option<Vec<u8>>, Revision) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            // A tombstone (NULL value) as the newest version means absent.
            Ok(value.map(|value| KeyValue {
                key: key.to_string(),
                mod_revision,
                value: Bytes::from(value),
                create_revision,
            }))
        })
        .optional()?;
    Ok(newest.flatten())
}

fn put(
    tx: &Connection,
    current: &mut Revision,
    key: &str,
    value: &Bytes,
    prev: Option<KeyValue>,
) -> Result<Event, rusqlite::Error> {
    let revision = *current + 1;
    let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
    tx.prepare_cached(
        "INSERT INTO log (rev, key, value, create_rev, prev_rev) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        revision,
        key.as_bytes(),
        value.as_ref(),
        create_revision,
        prev.as_ref().map(|p| p.mod_revision)
    ])?;
    *current = revision;
    Ok(Event {
        kind: EventKind::Put,
        kv: KeyValue {
            key: key.to_string(),
            value: value.clone(),
            create_revision,
            mod_revision: revision,
        },
        prev,
    })
}

fn tombstone(
    tx: &Connection,
    current: &mut Revision,
    key: &str,
    prev: KeyValue,
) -> Result<Event, rusqlite::Error> {
    let revision = *current + 1;
    tx.prepare_cached(
        "INSERT INTO log (rev, key, value, create_rev, prev_rev) VALUES (?1, ?2, NULL, ?3, ?4)",
    )?
    .execute(params![
        revision,
        key.as_bytes(),
        prev.create_revision,
        prev.mod_revision
    ])?;
    *current = revision;
    Ok(Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_string(),
            value: Bytes::new(),
            create_revision: 0,
            mod_revision: revision,
        },
        prev: Some(prev),
    })
}
