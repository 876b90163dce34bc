//! Backup and restore for the etcd backend.
//!
//! `snapshot_save` streams etcd's own snapshot (the Maintenance API) to a file: the same file
//! `etcdctl snapshot save` writes. `snapshot_restore` puts such a snapshot back *through the
//! API*: `etcdctl snapshot restore` unpacks it into a private data directory, a private etcd
//! serves it on loopback, and its keys replace the target's keys. Unlike an offline restore, the
//! target keeps its members and its revisions keep increasing, so watchers are never shown a
//! revision that goes backwards. Stop skiff servers before restoring: the replacement is done in
//! batches, not in one transaction.

use std::path::Path;
use std::process::Command;

use etcd_client::{DeleteOptions, Txn, TxnOp};
use tokio::io::AsyncWriteExt;

use super::{EtcdStore, etcd_error, etcd_range};
use crate::etcd_process::EtcdProcess;
use crate::{Revision, Store, StoreError, StoreResult};

/// Keys per page read from the snapshot, and puts per transaction (etcd's default
/// `--max-txn-ops` is 128).
const BATCH: usize = 100;

/// What a restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreInfo {
    /// Keys restored.
    pub keys: usize,
    /// The target's revision after the restore.
    pub revision: Revision,
}

impl EtcdStore {
    /// Streams etcd's own snapshot of the whole keyspace into `file` (which must not exist).
    pub async fn snapshot_save(&self, file: &Path) -> StoreResult<()> {
        let partial = file.with_extension("partial");
        let mut out = tokio::fs::File::create_new(&partial).await?;
        let mut stream = self
            .client
            .maintenance_client()
            .snapshot()
            .await
            .map_err(etcd_error)?;
        while let Some(chunk) = stream.message().await.map_err(etcd_error)? {
            out.write_all(chunk.blob()).await?;
        }
        out.sync_all().await?;
        drop(out);
        tokio::fs::rename(&partial, file).await?;
        Ok(())
    }

    /// Replaces every key in this etcd with the keys in the snapshot `file`.
    pub async fn snapshot_restore(&self, file: &Path) -> StoreResult<RestoreInfo> {
        let scratch = tempfile::Builder::new()
            .prefix("skiff-etcd-restore-")
            .tempdir()?;
        let data_dir = scratch.path().join("data");
        unpack(file, &data_dir)?;
        let source_dir = data_dir.clone();
        let source = tokio::task::spawn_blocking(move || EtcdProcess::start_in(&source_dir))
            .await
            .map_err(|error| {
                StoreError::EtcdUnavailable(format!("starting the scratch etcd: {error}"))
            })??;
        let reader = EtcdStore::connect(source.endpoint()).await?;

        let mut kv = self.kv.clone();
        let (start, end) = etcd_range("");
        kv.delete(start, Some(DeleteOptions::new().with_range(end)))
            .await
            .map_err(etcd_error)?;
        let mut keys = 0;
        let mut request = crate::RangeRequest {
            limit: Some(BATCH),
            ..Default::default()
        };
        loop {
            let page = reader.range(request.clone()).await?;
            request.revision = Some(page.revision);
            request.start_after = page.kvs.last().map(|kv| kv.key.clone());
            let puts: Vec<TxnOp> = page
                .kvs
                .iter()
                .map(|kv| TxnOp::put(kv.key.as_str(), kv.value.to_vec(), None))
                .collect();
            keys += puts.len();
            if !puts.is_empty() {
                kv.txn(Txn::new().and_then(puts))
                    .await
                    .map_err(etcd_error)?;
            }
            if !page.more {
                break;
            }
        }
        drop(source);
        Ok(RestoreInfo {
            keys,
            revision: self.current_revision().await?,
        })
    }
}

/// Unpacks an etcd snapshot into a fresh data directory with `etcdctl snapshot restore`, which
/// also verifies the snapshot's integrity hash.
fn unpack(file: &Path, data_dir: &Path) -> StoreResult<()> {
    let peer = "http://127.0.0.1:2380";
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(file)
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--name=skiff")
        .arg(format!("--initial-cluster=skiff={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .output()
        .map_err(|error| StoreError::EtcdUnavailable(format!("could not run etcdctl: {error}")))?;
    if !output.status.success() {
        return Err(StoreError::Corrupt(format!(
            "{} is not a usable etcd snapshot: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
