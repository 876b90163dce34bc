//! The SQLite schema, pragmas and the `meta` counters.
//!
//! `log` holds every version of every key, keyed by its revision (a tombstone has a NULL value);
//! its `(key, rev)` index finds a key's newest version. `meta` holds the compacted revision and a
//! floor for the current one: the current revision is the larger of that floor and the newest
//! row, and compaction (which may delete the newest row, a tombstone) raises the floor first, so
//! revisions never go backwards. Each write therefore touches only the log's tail page and one
//! index leaf: few pages per commit, which is what group commit's throughput depends on.

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Revision, StoreError, StoreResult};

/// Bumped whenever the on-disk layout changes incompatibly.
const SCHEMA_VERSION: i64 = 1;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        BLOB    NOT NULL,
    value      BLOB,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('current_rev', 0), ('compact_rev', 0);
";

/// Opens the writer's connection, creating and checking the schema.
pub(crate) fn open_writer(path: &std::path::Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // auto_vacuum must be chosen before the first table exists; it lets compaction hand pages
    // back to the file system (`incremental_vacuum`) so the file shrinks with its contents.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL: commits do not wait for the disk; the syncer fsyncs the WAL for whole batches
    // before anything is acknowledged (see syncer.rs). Checkpoints still sync both files.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoint every 10,000 WAL pages (~40 MiB) rather than SQLite's 1,000: a checkpoint runs
    // on the writer thread and fsyncs the database, so at tens of thousands of writes/s the
    // default would checkpoint many times a second, copying the same hot pages each time.
    conn.pragma_update(None, "wal_autocheckpoint", 10000)?;
    tune(&conn, WRITER_CACHE_KIB)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let has_tables: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log'",
            [],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if has_tables && version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version}, this skiff expects {SCHEMA_VERSION}"
        )));
    }
    conn.execute_batch(DDL)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

/// Opens a read-only connection for the reader pool.
pub(crate) fn open_reader(path: &std::path::Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    tune(&conn, READER_CACHE_KIB)?;
    Ok(conn)
}

/// The writer's page cache (KiB): it holds the pages a batch of writes dirties and the pages
/// written since the last checkpoint (those are read from the WAL, not the memory map). 64 MiB
/// filled with a growing store and cost 0.4 KiB of anonymous memory per stored ConfigMap at
/// 100,000 without a faster write (BENCHMARKS.md, A/B of 64 and 16 MiB).
const WRITER_CACHE_KIB: i64 = 16_384;
/// Each reader's page cache (KiB). Readers read through the memory map, whose pages are the
/// kernel's (shared and reclaimable); a large private cache per pooled reader would copy the
/// same pages once per connection.
const READER_CACHE_KIB: i64 = 4_096;

/// Memory settings: a page cache of `cache_kib` and memory-mapped reads, so index pages of a
/// large store stay in memory instead of costing a system call each.
///
/// The query planner's stability guarantee (QPSG) is on: without it, SQLite (built with STAT4,
/// as rusqlite's bundled copy is) re-prepares a cached statement whenever a value bound to an
/// indexed column or a `LIMIT` changes, i.e. on nearly every read; a profile of 64 API clients
/// showed 7% of the server's CPU in those re-prepares. The plans never depended on the values.
fn tune(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// The current and compacted revisions, as seen by `conn`'s transaction.
pub(crate) fn revisions(conn: &Connection) -> rusqlite::Result<(Revision, Revision)> {
    let mut stmt = conn.prepare_cached(
        "SELECT MAX((SELECT value FROM meta WHERE name = 'current_rev'),
                    IFNULL((SELECT MAX(rev) FROM log), 0)),
                (SELECT value FROM meta WHERE name = 'compact_rev')",
    )?;
    stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
}

/// Sets one of the `meta` counters.
pub(crate) fn set_meta(conn: &Connection, name: &str, value: Revision) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}
