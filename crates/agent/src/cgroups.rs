//! The cgroups the runtime leaves behind (containerd with the cgroupfs driver removes the
//! containers' own, not the pod-level parents): every pod's cgroup sits under one per agent
//! (`/{slice}/pod{uid}`), in each hierarchy under `/sys/fs/cgroup` (cgroup v1 controllers, the
//! unified v2 tree, or both), and is removed when the pod goes.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Every hierarchy's root: `/sys/fs/cgroup` itself on a pure v2 host, else each controller's
/// mount below it (and the unified tree of a hybrid host).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir() && !path.is_symlink())
        .collect()
}

/// Removes `relative` (and, deepest first, the empty cgroups in it) in every hierarchy.
fn remove(relative: &str) {
    for hierarchy in hierarchies() {
        let path = hierarchy.join(relative.trim_start_matches('/'));
        remove_tree(&path);
    }
}

fn remove_tree(path: &Path) {
    if !path.is_dir() {
        return;
    }
    for child in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if child.path().is_dir() {
            remove_tree(&child.path());
        }
    }
    // A cgroup directory is removed with rmdir (its files are the kernel's); one still in use
    // stays, and the next clean-up tries again.
    if let Err(error) = std::fs::remove_dir(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!(path = %path.display(), %error, "a cgroup could not be removed yet");
    }
}

/// Removes the pod `uid`'s cgroup under the agent's `slice`.
pub fn remove_pod(slice: &str, uid: &str) {
    remove(&format!("{slice}/pod{uid}"));
}

/// Removes the agent's whole slice (at teardown).
pub fn remove_slice(slice: &str) {
    remove(slice);
}
