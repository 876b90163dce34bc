//! `skiff snapshot save|restore`: consistent backups of the cluster's state.
//!
//! With the embedded store, `save` copies the database online (the server may keep running) and
//! `restore` swaps a copy in (the server must be stopped; the command refuses otherwise). With
//! etcd, `save` streams etcd's own snapshot and `restore` writes its keys back through the API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use skiff_store::etcd::EtcdStore;
use skiff_store::sqlite::snapshot as sqlite_snapshot;

use crate::{DatastoreArgs, datastore};

/// Snapshot subcommands.
#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent snapshot of the cluster's state to FILE.
    Save {
        #[command(flatten)]
        datastore: DatastoreArgs,
        /// Where to write the snapshot (must not exist).
        file: PathBuf,
    },
    /// Replace the cluster's state with the snapshot in FILE (stop the server first).
    Restore {
        #[command(flatten)]
        datastore: DatastoreArgs,
        /// The snapshot to restore.
        file: PathBuf,
    },
}

/// Runs a snapshot subcommand.
pub async fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { datastore, file } => match &datastore.datastore_endpoint {
            Some(endpoints) => {
                let store = EtcdStore::connect(endpoints).await?;
                store
                    .snapshot_save(&file)
                    .await
                    .with_context(|| format!("saving an etcd snapshot to {}", file.display()))?;
                println!("saved etcd snapshot to {}", file.display());
            }
            None => {
                let dir = datastore::sqlite_dir(&datastore.data_dir);
                let (source, target) = (dir.clone(), file.clone());
                let revision =
                    tokio::task::spawn_blocking(move || sqlite_snapshot::save(&source, &target))
                        .await?
                        .with_context(|| format!("saving a snapshot of {}", dir.display()))?;
                println!(
                    "saved snapshot at revision {revision} to {}",
                    file.display()
                );
            }
        },
        SnapshotCommand::Restore { datastore, file } => match &datastore.datastore_endpoint {
            Some(endpoints) => {
                let store = EtcdStore::connect(endpoints).await?;
                let info = store
                    .snapshot_restore(&file)
                    .await
                    .with_context(|| format!("restoring {} into etcd", file.display()))?;
                println!(
                    "restored {} keys from {}; etcd is now at revision {}",
                    info.keys,
                    file.display(),
                    info.revision
                );
            }
            None => {
                let dir = datastore::sqlite_dir(&datastore.data_dir);
                let (target, source) = (dir.clone(), file.clone());
                let info =
                    tokio::task::spawn_blocking(move || sqlite_snapshot::restore(&target, &source))
                        .await?
                        .with_context(|| {
                            format!("restoring {} into {}", file.display(), dir.display())
                        })?;
                println!(
                    "restored snapshot of revision {} into {}; the store continues at revision {}",
                    info.revision,
                    dir.display(),
                    info.restored_revision
                );
            }
        },
    }
    Ok(())
}
