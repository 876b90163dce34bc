//! Behaviour specific to the embedded SQLite backend: durability across reopen, the data
//! directory lock, bounded size under compaction, snapshot save/restore, and reads that do not
//! depend on tokio's blocking pool.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use bytes::Bytes;
use skiff_store::sqlite::{SqliteStore, snapshot};
use skiff_store::{RangeRequest, Store, StoreError};

fn value(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

fn files_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn revisions_should_survive_reopen_and_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let r = store.create("/a", value(3)).await.unwrap();
        let (deleted, _) = store.delete("/a", Some(r)).await.unwrap();
        // Compacting removes the tombstone at the head of the log; the revision must survive.
        store.compact(deleted).await.unwrap();
        deleted
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), last);
    let next = store.create("/b", value(1)).await.unwrap();
    assert_eq!(next, last + 1);
    assert_eq!(store.get("/a", None).await.unwrap().0, None);
}

/// Reads run on the store's own threads: with tokio's only blocking thread busy for good, reads
/// (far more than there are reader threads) still answer. They used to be `spawn_blocking`
/// tasks, which a stalled blocking pool left queued forever.
#[test]
fn reads_should_answer_while_the_blocking_pool_is_stalled() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (release, stalled) = std::sync::mpsc::channel::<()>();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
        let revision = store.create("/a", value(3)).await.unwrap();
        // Occupies the only blocking thread until the end of the test.
        let blocker = tokio::task::spawn_blocking(move || stalled.recv());
        let reads = (0..64).map(|_| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move { store.get("/a", None).await })
        });
        let answers = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            futures::future::join_all(reads),
        )
        .await
        .expect("reads must not wait for the blocking pool");
        for answer in answers {
            let (kv, _) = answer.unwrap().unwrap();
            assert_eq!(kv.unwrap().mod_revision, revision);
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
    });
}

#[tokio::test]
async fn second_open_should_fail_while_the_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _store = SqliteStore::open(dir.path()).unwrap();
    match SqliteStore::open(dir.path()) {
        Err(StoreError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open must fail"),
    }
}

#[tokio::test]
async fn compaction_should_keep_the_database_small() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    // 10 keys of 4 KiB rewritten 500 times each: 20 MB of history, 40 KB of live data.
    let mut tasks = Vec::new();
    for k in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/grow/{k}");
            let mut rev = store.create(&key, value(4096)).await.unwrap();
            for _ in 0..500 {
                rev = store.update(&key, value(4096), rev).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let grown = files_size(dir.path());
    assert!(grown > 15_000_000, "history was written ({grown} bytes)");
    store
        .compact(store.current_revision().await.unwrap())
        .await
        .unwrap();
    let compacted = files_size(dir.path());

    assert!(
        compacted < 1_000_000,
        "after compaction the files hold {compacted} bytes (before: {grown})"
    );
    let all = store.range(RangeRequest::default()).await.unwrap();
    assert_eq!(all.kvs.len(), 10);
}

#[tokio::test]
async fn snapshot_should_round_trip_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("snap.db");
    let saved_revision = {
        let store = SqliteStore::open(dir.path()).unwrap();
        for i in 0..100 {
            store.create(&format!("/s/{i}"), value(i)).await.unwrap();
        }
        let revision = snapshot::save(dir.path(), &file).unwrap();
        assert_eq!(revision, store.current_revision().await.unwrap());
        // Changes after the snapshot are undone by the restore.
        store.create("/s/after", value(1)).await.unwrap();
        let r = store.get("/s/0", None).await.unwrap().0.unwrap();
        store.delete("/s/0", Some(r.mod_revision)).await.unwrap();
        // Restoring under a running store is refused.
        assert!(matches!(
            snapshot::restore(dir.path(), &file),
            Err(StoreError::Locked { .. })
        ));
        revision
    };
    let info = snapshot::restore(dir.path(), &file).unwrap();
    assert_eq!(info.revision, saved_revision);
    // The directory had moved on by 2 revisions: the restored store continues above them.
    assert_eq!(info.restored_revision, saved_revision + 3);
    let store = SqliteStore::open(dir.path()).unwrap();
    let all = store
        .range(RangeRequest {
            prefix: "/s/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 100);
    assert_eq!(all.revision, info.restored_revision);
    assert!(store.get("/s/0", None).await.unwrap().0.is_some());
    assert!(matches!(
        store.watch("", saved_revision).await,
        Err(StoreError::Compacted { .. })
    ));
    let next = store.create("/s/new", value(1)).await.unwrap();
    assert_eq!(next, info.restored_revision + 1);
}

#[tokio::test]
async fn restore_should_reject_a_file_that_is_not_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.db");
    std::fs::write(&bogus, b"definitely not sqlite").unwrap();
    let err = snapshot::restore(&dir.path().join("store"), &bogus).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}
