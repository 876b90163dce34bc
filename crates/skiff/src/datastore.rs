//! Opens the store a command asked for: etcd when `--datastore-endpoint` is given, otherwise the
//! embedded SQLite store in `DATA_DIR/db`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use skiff_store::Store;
use skiff_store::etcd::EtcdStore;
use skiff_store::sqlite::SqliteStore;

use crate::DatastoreArgs;

/// The embedded store's directory inside a data directory.
pub fn sqlite_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Opens the configured store.
pub async fn open(args: &DatastoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    match &args.datastore_endpoint {
        Some(endpoints) => {
            Ok(Arc::new(EtcdStore::connect(endpoints).await.with_context(
                || format!("connecting to etcd at {endpoints}"),
            )?))
        }
        None => {
            let dir = sqlite_dir(&args.data_dir);
            Ok(Arc::new(SqliteStore::open(&dir).with_context(|| {
                format!("opening the store in {}", dir.display())
            })?))
        }
    }
}
