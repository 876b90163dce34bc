//! `skiff snapshot save|restore` round trips, through the real binary, for the embedded store
//! and for etcd (`#[ignore = "needs etcd"]`: run by `cargo test -- --include-ignored`, as
//! `./scripts/test` does, and failing when no `etcd` is on PATH).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use skiff_store::etcd::EtcdStore;
use skiff_store::etcd_process::{EtcdProcess, etcd_available};
use skiff_store::sqlite::SqliteStore;
use skiff_store::{RangeRequest, Store};

fn skiff(args: &[&str], extra: &[&Path]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    eprintln!(
        "skiff {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn keys(store: &dyn Store) -> Vec<String> {
    let all = store.range(RangeRequest::default()).await.unwrap();
    all.kvs.into_iter().map(|kv| kv.key).collect()
}

#[tokio::test]
async fn sqlite_snapshot_should_round_trip_through_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("backup.db");
    let data_arg = data.path().to_str().unwrap();
    let original = {
        let store = SqliteStore::open(&data.path().join("db")).unwrap();
        for i in 0..50 {
            store
                .create(&format!("/k/{i:02}"), Bytes::from("v"))
                .await
                .unwrap();
        }
        // Saved online, while the store is open.
        let saved = skiff(&["snapshot", "save", "--data-dir", data_arg], &[&file]);
        assert!(saved.status.success());
        let original = keys(&store).await;
        store.create("/k/later", Bytes::from("v")).await.unwrap();
        // Restore is refused while the store is in use.
        let refused = skiff(&["snapshot", "restore", "--data-dir", data_arg], &[&file]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
        original
    };
    let restored = skiff(&["snapshot", "restore", "--data-dir", data_arg], &[&file]);
    assert!(restored.status.success());
    let store = SqliteStore::open(&data.path().join("db")).unwrap();
    assert_eq!(keys(&store).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd"]
async fn etcd_snapshot_should_round_trip_through_the_cli() {
    assert!(
        etcd_available(),
        "this test needs an `etcd` binary on PATH (./scripts/install-deps installs it)"
    );
    let process = tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .unwrap()
        .unwrap();
    let endpoint = process.endpoint().to_string();
    let store = EtcdStore::connect(&endpoint).await.unwrap();
    for i in 0..50 {
        store
            .create(&format!("/k/{i:02}"), Bytes::from("v"))
            .await
            .unwrap();
    }
    let original = keys(&store).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("etcd.snap");
    let args = ["--datastore-endpoint", endpoint.as_str()];
    let saved = skiff(&[&["snapshot", "save"][..], &args].concat(), &[&file]);
    assert!(saved.status.success());
    store.create("/k/later", Bytes::from("v")).await.unwrap();
    let restored = skiff(&[&["snapshot", "restore"][..], &args].concat(), &[&file]);
    assert!(restored.status.success());
    assert_eq!(keys(&store).await, original);
}
