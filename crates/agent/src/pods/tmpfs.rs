//! Memory-backed emptyDir volumes (`medium: Memory`): a tmpfs mounted on the volume's directory,
//! limited to its `sizeLimit` when it has one, and unmounted before the pod's directory is
//! removed (a mount left behind would keep the memory, and make the removal fail). Mounting is
//! the `mount` program's job, as kubelet leaves it to `mount(8)`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// Whether `dir` is a mount point (its device differs from its parent's).
fn mounted(dir: &Path) -> bool {
    let (Ok(own), Some(Ok(parent))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
    else {
        return false;
    };
    own.dev() != parent.dev()
}

/// Mounts a tmpfs of at most `size` bytes (no limit: the kernel's default) on `dir`, unless one
/// is there already.
pub fn mount(dir: &Path, size: Option<u64>) -> Result<(), String> {
    if mounted(dir) {
        return Ok(());
    }
    let mut options = String::from("mode=0777");
    if let Some(size) = size.filter(|s| *s > 0) {
        options.push_str(&format!(",size={size}"));
    }
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mounting a tmpfs on {}: {e}", dir.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mounting a tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Unmounts every mount below `root` (deepest first), so that `root` can be removed (a pod's
/// directory; or, when `skiff reset` clears a node, the agent's whole data directory).
pub fn unmount_below(root: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // The table holds absolute paths with links resolved, as `mount` recorded them.
    let root = root
        .canonicalize()
        .unwrap_or_else(|_| root.to_path_buf())
        .display()
        .to_string();
    let mut points: Vec<String> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| point.replace("\\040", " "))
        .filter(|point| point.starts_with(&format!("{root}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let unmounted = Command::new("umount").arg(&point).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
    }
}
