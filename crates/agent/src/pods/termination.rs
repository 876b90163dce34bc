//! Termination messages, as kubelet makes them: every container gets an empty file of its own
//! on the node, mounted at its `terminationMessagePath` (`/dev/termination-log` by default);
//! once the container has exited, what it wrote there (at most 4 KiB) is the message of its
//! terminated state. With `terminationMessagePolicy: FallbackToLogsOnError`, a container that
//! failed and wrote nothing there gets the end of its log instead (at most 80 lines, 2 KiB).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::labels;
use crate::logs;
use crate::runtime::api;

/// The longest message read from the file (upstream's `MaxContainerTerminationMessageLength`).
const MAX_FILE_BYTES: u64 = 4096;
/// How much of the log a fallback takes (upstream's `MaxContainerTerminationMessageLog*`).
const MAX_LOG_LINES: usize = 80;
const MAX_LOG_BYTES: usize = 2048;
/// Where a container's message goes unless its spec says otherwise.
pub const DEFAULT_PATH: &str = "/dev/termination-log";

/// Creates the empty file for instance `restart_count` of the container `name` of the pod
/// whose directory is `pod_dir`, writable by any user the container runs as.
pub fn create_file(pod_dir: &Path, name: &str, restart_count: u32) -> Result<PathBuf, String> {
    let dir = pod_dir.join("containers").join(name);
    let path = dir.join(format!("{restart_count}.termination-log"));
    let failed = |error: std::io::Error| format!("creating {}: {error}", path.display());
    std::fs::create_dir_all(&dir).map_err(failed)?;
    std::fs::File::create(&path).map_err(failed)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(failed)?;
    Ok(path)
}

/// The beginning of `path`, at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> String {
    let mut text = Vec::new();
    let read =
        std::fs::File::open(path).and_then(|file| file.take(MAX_FILE_BYTES).read_to_end(&mut text));
    match read {
        Ok(_) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => String::new(),
    }
}

/// The end of the CRI log at `path`: its last lines, cut to the last [`MAX_LOG_BYTES`].
fn read_log_tail(path: &Path) -> String {
    let query = logs::Query {
        tail: Some(MAX_LOG_LINES),
        ..logs::Query::default()
    };
    let Ok((lines, _)) = logs::read_existing(path, &query) else {
        return String::new();
    };
    let text = lines.concat();
    let mut start = text.len().saturating_sub(MAX_LOG_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// The message an exited container's status carries: the runtime's own, then what the
/// container left in its termination-message file (or, by its policy, its log's end).
pub fn message(status: &api::ContainerStatus) -> String {
    let mut message = status.message.clone();
    if status.state != api::ContainerState::ContainerExited as i32 {
        return message;
    }
    let path = status
        .annotations
        .get(labels::TERMINATION_MESSAGE_PATH)
        .map_or(DEFAULT_PATH, String::as_str);
    let fallback = status
        .annotations
        .get(labels::TERMINATION_MESSAGE_POLICY)
        .is_some_and(|p| p == "FallbackToLogsOnError")
        && status.exit_code != 0
        && status.reason != "ContainerCannotRun";
    let mut written = status
        .mounts
        .iter()
        .find(|m| !path.is_empty() && m.container_path == path)
        .map(|m| read_file(Path::new(&m.host_path)))
        .unwrap_or_default();
    if written.is_empty() && fallback && Path::new(&status.log_path).is_absolute() {
        written = read_log_tail(Path::new(&status.log_path));
    }
    if !written.is_empty() {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&written);
    }
    message
}

/// How long after an exit an empty message may still fill in: the runtime writes the log's
/// last lines a moment after the process is gone.
const LOG_SETTLE_NANOS: i64 = 5_000_000_000;

/// Whether `status` (with its message read) is final: anything but a just-exited container
/// without a message, whose log may not be complete yet.
pub fn settled(status: &api::ContainerStatus, now_nanos: i64) -> bool {
    status.state != api::ContainerState::ContainerExited as i32
        || !status.message.is_empty()
        || now_nanos.saturating_sub(status.finished_at) > LOG_SETTLE_NANOS
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn exited(dir: &Path, code: i32, policy: &str) -> api::ContainerStatus {
        let file = create_file(dir, "c", 0).unwrap();
        api::ContainerStatus {
            state: api::ContainerState::ContainerExited as i32,
            exit_code: code,
            annotations: HashMap::from([
                (labels::TERMINATION_MESSAGE_PATH.into(), "/tmp/done".into()),
                (labels::TERMINATION_MESSAGE_POLICY.into(), policy.into()),
            ]),
            mounts: vec![api::Mount {
                container_path: "/tmp/done".into(),
                host_path: file.display().to_string(),
                ..api::Mount::default()
            }],
            log_path: dir.join("0.log").display().to_string(),
            ..api::ContainerStatus::default()
        }
    }

    #[test]
    fn the_file_should_win_and_the_log_should_stand_in_only_for_failures() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("0.log"),
            "2026-01-01T00:00:00Z stderr F first\n2026-01-01T00:00:01Z stderr F boom\n",
        )
        .unwrap();
        let status = exited(dir.path(), 1, "FallbackToLogsOnError");
        assert_eq!(message(&status), "first\nboom\n");
        std::fs::write(&status.mounts[0].host_path, "written by the app").unwrap();
        assert_eq!(message(&status), "written by the app");
        let quiet = exited(dir.path(), 1, "File");
        assert_eq!(message(&quiet), "", "File: no fallback to the log");
        let fine = exited(dir.path(), 0, "FallbackToLogsOnError");
        assert_eq!(message(&fine), "", "success: no fallback to the log");
    }

    #[test]
    fn a_long_message_should_be_cut_to_four_kib() {
        let dir = tempfile::tempdir().unwrap();
        let status = exited(dir.path(), 2, "File");
        std::fs::write(&status.mounts[0].host_path, "x".repeat(10_000)).unwrap();
        assert_eq!(message(&status).len(), 4096);
    }

    #[test]
    fn a_just_exited_container_without_a_message_should_be_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut status = exited(dir.path(), 1, "FallbackToLogsOnError");
        status.finished_at = 10_000_000_000;
        assert!(
            !settled(&status, 11_000_000_000),
            "its log may still be coming"
        );
        assert!(settled(&status, 20_000_000_000));
        status.message = "boom".into();
        assert!(settled(&status, 11_000_000_000));
    }
}
