//! Online backup and restore of a SQLite store.
//!
//! `save` uses `VACUUM INTO`, which writes a consistent, compact copy of the database from one
//! read transaction while the server keeps running. `restore` takes the store directory's lock
//! (so it refuses while a server is using it), checks the snapshot, and swaps it in atomically.
//! Revisions never go backwards across a restore: if the directory already held a newer
//! revision, the restored store continues above it and marks everything before as compacted,
//! so clients holding newer resource versions are told to relist instead of seeing stale data.

use std::path::Path;

use rusqlite::Connection;

use super::{SqliteStore, lock_dir, schema};
use crate::{Revision, StoreError, StoreResult};

/// What a snapshot contained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The revision of the data in the snapshot.
    pub revision: Revision,
    /// The revision the store continues from after a restore (equal to `revision` unless the
    /// directory already held newer data).
    pub restored_revision: Revision,
}

/// Writes a consistent copy of the store in `dir` to `file` (which must not exist).
pub fn save(dir: &Path, file: &Path) -> StoreResult<Revision> {
    let db = SqliteStore::db_path(dir);
    if !db.exists() {
        return Err(StoreError::Corrupt(format!("no store at {}", db.display())));
    }
    if file.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already exists", file.display()),
        )));
    }
    let partial = file.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let conn = schema::open_reader(&db)?;
    let target = partial.to_string_lossy().to_string();
    conn.execute("VACUUM INTO ?1", [target])?;
    let (revision, _) = schema::revisions(&Connection::open(&partial)?)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, file)?;
    Ok(revision)
}

/// Replaces the store in `dir` with the snapshot in `file`.
pub fn restore(dir: &Path, file: &Path) -> StoreResult<SnapshotInfo> {
    let _lock = lock_dir(dir)?;
    let db = SqliteStore::db_path(dir);
    let snapshot_revision = check_snapshot(file)?;
    let existing_revision = if db.exists() {
        let conn = schema::open_writer(&db)?;
        let (current, _) = schema::revisions(&conn)?;
        current
    } else {
        0
    };
    let staged = dir.join("state.db.restoring");
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(file, &staged)?;
    let restored_revision = if existing_revision > snapshot_revision {
        let conn = Connection::open(&staged)?;
        let next = existing_revision + 1;
        schema::set_meta(&conn, "current_rev", next)?;
        schema::set_meta(&conn, "compact_rev", next)?;
        next
    } else {
        snapshot_revision
    };
    std::fs::File::open(&staged)?.sync_all()?;
    for suffix in ["-wal", "-shm"] {
        let mut side = db.clone().into_os_string();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
    }
    std::fs::rename(&staged, &db)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(SnapshotInfo {
        revision: snapshot_revision,
        restored_revision,
    })
}

/// Checks that `file` is an intact skiff SQLite store and returns its revision.
fn check_snapshot(file: &Path) -> StoreResult<Revision> {
    let check = || -> StoreResult<Revision> {
        let conn = schema::open_reader(file)?;
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
        if integrity != "ok" {
            return Err(StoreError::Corrupt(format!("integrity check: {integrity}")));
        }
        Ok(schema::revisions(&conn)?.0)
    };
    check().map_err(|error| {
        StoreError::Corrupt(format!(
            "{} is not a usable skiff snapshot: {error}",
            file.display()
        ))
    })
}
