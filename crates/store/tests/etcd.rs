//! etcd-specific behaviour: snapshot save through the Maintenance API and restore through the
//! KV API. Needs an `etcd` binary, hence `#[ignore = "needs etcd"]`: `cargo test --
//! --include-ignored` (as `./scripts/test` runs it) includes it, and it fails when no `etcd` is
//! on PATH.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use bytes::Bytes;
use skiff_store::etcd::EtcdStore;
use skiff_store::etcd_process::{EtcdProcess, etcd_available};
use skiff_store::{RangeRequest, Store, StoreError};

fn require_etcd() {
    assert!(
        etcd_available(),
        "this test needs an `etcd` binary on PATH (./scripts/install-deps installs it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd"]
async fn etcd_snapshot_should_round_trip_with_increasing_revisions() {
    require_etcd();
    let process = tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .unwrap()
        .unwrap();
    let store = EtcdStore::connect(process.endpoint()).await.unwrap();
    for i in 0..250 {
        store
            .create(&format!("/s/{i:03}"), Bytes::from(format!("v{i}")))
            .await
            .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("etcd.snap");
    store.snapshot_save(&file).await.unwrap();
    // Changes after the snapshot are undone by the restore.
    store.create("/s/after", Bytes::from("x")).await.unwrap();
    store.delete("/s/000", None).await.unwrap();
    let before = store.current_revision().await.unwrap();

    let info = store.snapshot_restore(&file).await.unwrap();
    assert_eq!(info.keys, 250);
    assert!(info.revision > before, "revisions keep increasing");
    let all = store
        .range(RangeRequest {
            prefix: "/s/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 250);
    assert_eq!(all.kvs[0].key, "/s/000");
    assert_eq!(all.kvs[7].value, Bytes::from("v7"));

    let bogus = out.path().join("bogus.snap");
    std::fs::write(&bogus, b"not a snapshot").unwrap();
    let err = store.snapshot_restore(&bogus).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    // A failed restore leaves the data alone.
    assert_eq!(
        store
            .range(RangeRequest {
                prefix: "/s/".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .len(),
        250
    );
}
