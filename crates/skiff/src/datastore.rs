//! Where the embedded store lives inside a server's data directory.

use std::path::{Path, PathBuf};

/// The embedded store's directory inside a data directory.
pub fn sqlite_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}
