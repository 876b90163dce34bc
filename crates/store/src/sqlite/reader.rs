//! Reads for the SQLite backend: a fixed set of reader threads, each with its own read-only
//! connection, taking read jobs from one queue.
//!
//! Each read runs in one deferred transaction, so it sees one consistent snapshot (WAL mode lets
//! readers proceed while the writer commits). A read at revision R picks each key's newest
//! version at or below R from the `(key, rev)` index of `log`; a tombstone there means absent.
//!
//! The threads are the store's own, like the writer and the syncer, and live as long as the
//! store: reads do not go through tokio's blocking pool. They used to (a semaphore of eight
//! permits, each moved into a `spawn_blocking` task), and under a 5,000-node benchmark every
//! permit ended up held by a queued blocking task that no thread ever ran, while the pool had no
//! thread left: every consistent read of the server hung for good with nothing logged. A queue
//! served by threads that always exist cannot lose a read that way.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};
use tokio::sync::oneshot;

use super::schema;
use super::syncer::Durable;
use crate::keys::prefix_end;
use crate::watch_hub::History;
use crate::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, StoreError, StoreResult,
};

/// Reader threads, each with its own connection, and so reads running at once: more reads wait
/// in the queue rather than opening connections of their own (opening one parses the schema,
/// maps the file, and its page cache starts cold; a profile of 64 API clients showed a quarter
/// of the server's CPU in connections opened and closed again).
const READER_THREADS: usize = 8;

/// A read waiting for a thread: it runs on that thread's connection (opened on first use, so
/// `Err` if it could not be).
type Job = Box<dyn FnOnce(Result<&mut Connection, &StoreError>) + Send>;

/// The reader threads' queue; clones share it. The threads end when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Readers {
    jobs: Sender<Job>,
    durable: Arc<Durable>,
}

impl Readers {
    /// Starts the reader threads for the database at `path`.
    pub(crate) fn start(path: &Path, durable: Arc<Durable>) -> StoreResult<Self> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..READER_THREADS {
            let queue = Arc::clone(&queue);
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name(format!("skiff-sqlite-read-{index}"))
                .spawn(move || serve(&path, &queue))?;
        }
        Ok(Self { jobs, durable })
    }

    /// Runs `read` on a reader thread inside one read transaction. `read` gets the transaction,
    /// the current revision (never past the durable one) and the compacted revision.
    pub(crate) async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Revision, Revision) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let durable = Arc::clone(&self.durable);
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => in_transaction(conn, &durable, read),
                Err(error) => Err(StoreError::Storage(format!(
                    "could not open a read connection: {error}"
                ))),
            };
            // The caller may have gone away; the read is simply dropped then.
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Storage("the read failed on its reader thread".into()))?
    }
}

/// A reader thread: takes one job at a time until the queue is closed. A job that panics loses
/// its own answer (its caller gets an error) but not the thread; its connection is reopened.
fn serve(path: &Path, queue: &Mutex<Receiver<Job>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let job = {
            let queue = queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let opened = match conn.take() {
            Some(open) => Ok(open),
            None => schema::open_reader(path),
        };
        match opened {
            Ok(mut open) => {
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(&mut open))));
                match ran {
                    Ok(()) => conn = Some(open),
                    Err(_) => tracing::error!("a store read panicked; its connection is reopened"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "could not open a read connection");
                job(Err(&error));
            }
        }
    }
    tracing::debug!("sqlite reader stopped");
}

/// Runs `read` in one read transaction on `conn`.
fn in_transaction<T>(
    conn: &mut Connection,
    durable: &Durable,
    read: impl FnOnce(&Connection, Revision, Revision) -> StoreResult<T>,
) -> StoreResult<T> {
    let tx = conn.transaction()?;
    let (committed, compacted) = schema::revisions(&tx)?;
    let current = committed.min(durable.revision());
    let value = read(&tx, current, compacted)?;
    tx.finish()?;
    Ok(value)
}

/// Resolves a requested revision against the current and compacted ones.
pub(crate) fn resolve(
    requested: Option<Revision>,
    current: Revision,
    compacted: Revision,
) -> StoreResult<Revision> {
    match requested.filter(|r| *r > 0) {
        None => Ok(current),
        Some(requested) if requested < compacted => Err(StoreError::Compacted { requested }),
        Some(requested) if requested > current => {
            Err(StoreError::FutureRevision { requested, current })
        }
        Some(requested) => Ok(requested),
    }
}

fn key_of(row: &Row<'_>, index: usize) -> rusqlite::Result<String> {
    String::from_utf8(row.get::<_, Vec<u8>>(index)?).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Blob, error.into())
    })
}

/// Maps a `(key, value, create_rev, rev)` row to a live key-value.
fn kv_row(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: key_of(row, 0)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

/// Reads one key at revision `at`.
pub(crate) fn get(conn: &Connection, key: &str, at: Revision) -> StoreResult<Option<KeyValue>> {
    let found = conn
        .prepare_cached(
            "SELECT key, value, create_rev, rev FROM log WHERE key = ?1 AND rev <= ?2
             ORDER BY rev DESC LIMIT 1",
        )?
        .query_row(params![key.as_bytes(), at], |row| {
            match row.get::<_, Option<Vec<u8>>>(1)? {
                None => Ok(None),
                Some(_) => kv_row(row).map(Some),
            }
        })
        .optional()?;
    Ok(found.flatten())
}

/// Reads a page of keys under a prefix at revision `at`.
pub(crate) fn range(
    conn: &Connection,
    request: &RangeRequest,
    at: Revision,
) -> StoreResult<RangeResponse> {
    let prefix = request.prefix.as_bytes();
    let mut low = prefix.to_vec();
    if let Some(after) = &request.start_after
        && after.as_bytes() >= prefix
    {
        low = after.as_bytes().to_vec();
        low.push(0);
    }
    let high = prefix_end(prefix);
    let upper = if high.is_some() {
        "AND key < :high"
    } else {
        ""
    };
    let sql = format!(
        "SELECT l.key, l.value, l.create_rev, l.rev FROM
           (SELECT key AS k, MAX(rev) AS newest FROM log
            WHERE key >= :low {upper} AND rev <= :at GROUP BY key) t
         JOIN log l ON l.rev = t.newest
         WHERE l.value IS NOT NULL ORDER BY l.key LIMIT :limit"
    );
    // One more than asked for tells whether there is more.
    let limit = request
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX - 1) + 1);
    let mut named: Vec<(&str, &dyn ToSql)> = vec![(":low", &low), (":limit", &limit), (":at", &at)];
    if let Some(high) = &high {
        named.push((":high", high));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut kvs = Vec::new();
    let mut rows = stmt.query(named.as_slice())?;
    while let Some(row) = rows.next()? {
        kvs.push(kv_row(row)?);
    }
    let more = request.limit.is_some_and(|l| kvs.len() > l);
    if let Some(limit) = request.limit {
        kvs.truncate(limit);
    }
    Ok(RangeResponse {
        kvs,
        more,
        revision: at,
    })
}

/// Events under `prefix` after revision `after`, in order, with previous values.
pub(crate) fn events_after(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
    (current, compacted): (Revision, Revision),
) -> StoreResult<Vec<Event>> {
    if after < compacted {
        return Err(StoreError::Compacted { requested: after });
    }
    let high = prefix_end(prefix.as_bytes());
    let filter = match (prefix.is_empty(), high.is_some()) {
        (true, _) => "",
        (false, true) => "AND l.key >= :low AND l.key < :high",
        (false, false) => "AND l.key >= :low",
    };
    let sql = format!(
        "SELECT l.rev, l.key, l.value, l.create_rev, p.rev, p.value, p.create_rev
         FROM log l LEFT JOIN log p ON p.rev = l.prev_rev
         WHERE l.rev > :after AND l.rev <= :current {filter} ORDER BY l.rev LIMIT :limit"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let low = prefix.as_bytes();
    let mut named: Vec<(&str, &dyn ToSql)> = vec![
        (":after", &after),
        (":limit", &limit),
        (":current", &current),
    ];
    if !prefix.is_empty() {
        named.push((":low", &low));
    }
    if let (false, Some(high)) = (prefix.is_empty(), &high) {
        named.push((":high", high));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(named.as_slice())?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let key = key_of(row, 1)?;
        let revision: Revision = row.get(0)?;
        let value: Option<Vec<u8>> = row.get(2)?;
        let prev = match row.get::<_, Option<Revision>>(4)? {
            Some(prev_revision) => Some(KeyValue {
                key: key.clone(),
                value: Bytes::from(row.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
                create_revision: row.get(6)?,
                mod_revision: prev_revision,
            }),
            None => None,
        };
        let (kind, value, create_revision) = match value {
            Some(value) => (EventKind::Put, Bytes::from(value), row.get(3)?),
            None => (EventKind::Delete, Bytes::new(), 0),
        };
        events.push(Event {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
            },
            prev,
        });
    }
    Ok(events)
}

#[async_trait]
impl History for Readers {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let prefix = prefix.to_string();
        self.read(move |conn, current, compacted| {
            events_after(conn, &prefix, after, limit, (current, compacted))
        })
        .await
    }
}
