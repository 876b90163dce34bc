//! Reads for the SQLite backend: a small pool of read-only connections used from blocking tasks.
//!
//! Each read runs in one deferred transaction, so it sees one consistent snapshot (WAL mode lets
//! readers proceed while the writer commits). A read at revision R picks each key's newest
//! version at or below R from the `(key, rev)` index of `log`; a tombstone there means absent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::schema;
use super::syncer::Durable;
use crate::keys::prefix_end;
use crate::watch_hub::History;
use crate::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, StoreError, StoreResult,
};

/// Connections in the pool, and so reads running at once: more readers wait for one instead of
/// opening a connection of their own (opening one parses the schema, maps the file, and its
/// page cache starts cold; a profile of 64 API clients showed a quarter of the server's CPU in
/// connections opened and closed again).
const MAX_READERS: usize = 8;

/// The pool of read connections; clones share the pool.
#[derive(Clone)]
pub(crate) struct Readers {
    pool: Arc<Pool>,
}

struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: held by a read for its duration.
    permits: Arc<tokio::sync::Semaphore>,
    durable: Arc<Durable>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf, durable: Arc<Durable>) -> Self {
        Self {
            pool: Arc::new(Pool {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
                durable,
            }),
        }
    }

    /// Runs `read` on a pooled connection inside one read transaction, off the async runtime.
    /// `read` gets the transaction, the current revision (never past the durable one) and the
    /// compacted revision.
    pub(crate) async fn read<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Revision, Revision) -> StoreResult<T> + Send + 'static,
    {
        let this = Arc::clone(&self.pool);
        // Held by the blocking task, so a read whose caller went away still counts.
        let permit = Arc::clone(&self.pool.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = this
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => schema::open_reader(&this.path)?,
            };
            let result = (|| {
                let tx = conn.transaction()?;
                let (committed, compacted) = schema::revisions(&tx)?;
                let current = committed.min(this.durable.revision());
                let value = read(&tx, current, compacted)?;
                tx.finish()?;
                Ok(value)
            })();
            let mut idle = this
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            idle.push(conn);
            result
        })
        .await
        .map_err(|error| StoreError::Storage(format!("read task failed: {error}")))?
    }
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
