//! Hidden `skiff debug` commands used by skiff's own tests.
//!
//! `write-loop` writes to the embedded store from many tasks as fast as it can and prints one
//! line per *acknowledged* write (`create KEY REVISION` or `update KEY REVISION`). The crash test
//! SIGKILLs it at random moments and checks that every printed write survived.
//!
//! `net-probe` is the load `skiff bench services` runs inside a pod's network namespace.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use clap::Subcommand;
use skiff_store::Store;
use skiff_store::sqlite::SqliteStore;
use tokio::sync::mpsc;

use crate::datastore;

/// Debug subcommands.
#[derive(Subcommand)]
pub enum DebugCommand {
    /// Write until killed, printing each acknowledged write.
    WriteLoop {
        /// The data directory (the store is in its `db/` folder).
        #[arg(long)]
        data_dir: PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// A tag that keeps this run's keys apart from earlier runs'.
        #[arg(long)]
        tag: String,
    },
    /// The load `skiff bench services` generates inside a pod's network namespace.
    NetProbe(crate::bench::probe::ProbeArgs),
}

/// Runs a debug subcommand.
pub async fn run(command: DebugCommand) -> anyhow::Result<()> {
    match command {
        DebugCommand::WriteLoop {
            data_dir,
            writers,
            tag,
        } => write_loop(data_dir, writers, tag).await,
        DebugCommand::NetProbe(args) => crate::bench::probe::run(args).await,
    }
}

async fn write_loop(data_dir: PathBuf, writers: usize, tag: String) -> anyhow::Result<()> {
    let store = SqliteStore::open(&datastore::sqlite_dir(&data_dir))?;
    let (acks, mut printed) = mpsc::unbounded_channel::<String>();
    for writer in 0..writers {
        let (store, acks, tag) = (store.clone(), acks.clone(), tag.clone());
        tokio::spawn(async move {
            for i in 0u64.. {
                let key = format!("/crash/{tag}/{writer}/{i}");
                let Ok(revision) = store.create(&key, Bytes::from(key.clone())).await else {
                    return;
                };
                if acks.send(format!("create {key} {revision}")).is_err() {
                    return;
                }
                if i % 4 == 0 {
                    let value = Bytes::from(format!("{key}+updated"));
                    let Ok(revision) = store.update(&key, value, revision).await else {
                        return;
                    };
                    if acks.send(format!("update {key} {revision}")).is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(acks);
    let mut stdout = std::io::stdout().lock();
    while let Some(line) = printed.recv().await {
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    Ok(())
}
