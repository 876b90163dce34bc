//! Container log rotation, as kubelet's `ContainerLogManager` does it with its defaults
//! (`containerLogMaxSize` 10Mi, `containerLogMaxFiles` 5): every 10 s, the log of a running
//! container grown past [`MAX_SIZE`] is renamed `N.log.<time>` and the runtime is told to reopen
//! its log (CRI `ReopenContainerLog`), so it writes a new `N.log`; of the renamed files the
//! newest [`MAX_FILES`]` - 1` are kept. A chatty container cannot fill the node's disk.
//! `kubectl logs` reads the live file (a follower starts over on the new one).

use std::path::Path;
use std::time::Duration;

use crate::logs;
use crate::runtime::Runtime;

/// kubelet's `containerLogMaxSize`.
const MAX_SIZE: u64 = 10 * 1024 * 1024;
/// kubelet's `containerLogMaxFiles`: the live file and the rotated ones.
const MAX_FILES: usize = 5;
/// kubelet's `containerLogMonitorInterval`.
const EVERY: Duration = Duration::from_secs(10);

/// Rotates the logs under `logs` of `node`'s containers until the future is dropped.
pub async fn run(runtime: &dyn Runtime, node: &str, logs: &Path) {
    loop {
        tokio::time::sleep(EVERY).await;
        rotate(runtime, node, logs, MAX_SIZE).await;
    }
}

/// One pass: each pod directory (`NAMESPACE_NAME_UID`), each container, each instance's log.
async fn rotate(runtime: &dyn Runtime, node: &str, logs: &Path, max_size: u64) {
    for pod in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let name = pod.file_name().to_string_lossy().into_owned();
        let Some(uid) = name.rsplit('_').next().map(str::to_string) else {
            continue;
        };
        for container in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let container_name = container.file_name().to_string_lossy().into_owned();
            for (restarts, path) in logs::instance_files(&container.path()) {
                if std::fs::metadata(&path).map_or(0, |m| m.len()) <= max_size {
                    continue;
                }
                let Ok(Some(id)) =
                    logs::running_instance_id(runtime, node, &uid, &container_name, restarts).await
                else {
                    // Ended: it writes no more.
                    continue;
                };
                rotate_one(runtime, &id, &path).await;
            }
            prune(&container.path());
        }
    }
}

/// Renames the live log away and has the runtime open a new one (the rename is undone if the
/// runtime cannot).
async fn rotate_one(runtime: &dyn Runtime, id: &str, path: &Path) {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S%.6f");
    let rotated = path.with_file_name(format!(
        "{}.{stamp}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    if let Err(error) = std::fs::rename(path, &rotated) {
        tracing::warn!(path = %path.display(), %error, "rotating a container log failed");
        return;
    }
    if let Err(error) = runtime.reopen_container_log(id).await {
        tracing::warn!(container = %id, %error, "the runtime could not reopen a rotated log");
        let _ = std::fs::rename(&rotated, path);
    }
}

/// Removes each instance's rotated logs beyond its newest `MAX_FILES - 1`.
fn prune(container: &Path) {
    let mut by_instance: std::collections::BTreeMap<u32, Vec<std::path::PathBuf>> =
        std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(container).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((restarts, _)) = name.split_once(".log.")
            && let Ok(restarts) = restarts.parse()
        {
            by_instance.entry(restarts).or_default().push(entry.path());
        }
    }
    for rotated in by_instance.values_mut() {
        // The stamps sort as they happened.
        rotated.sort();
        let surplus = rotated.len().saturating_sub(MAX_FILES - 1);
        for old in &rotated[..surplus] {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// Removes the logs of the `restarts`-th instance of a container (its live file and the
/// rotated ones) from the container's log directory.
pub fn remove_instance(container: &Path, restarts: u32) {
    let live = format!("{restarts}.log");
    let rotated = format!("{restarts}.log.");
    for entry in std::fs::read_dir(container).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == live || name.starts_with(&rotated) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::pods::labels;
    use crate::runtime::api;
    use crate::runtime::fake::FakeRuntime;

    #[tokio::test]
    async fn a_running_containers_grown_log_should_be_rotated() {
        let logs = tempfile::tempdir().unwrap();
        let container = logs.path().join("default_web_u1").join("c");
        std::fs::create_dir_all(&container).unwrap();
        std::fs::write(container.join("0.log"), vec![b'x'; 100]).unwrap();
        let runtime = FakeRuntime::new();
        runtime.add_image("busybox");
        let sandbox_config = api::PodSandboxConfig::default();
        let sandbox = runtime.run_sandbox(sandbox_config.clone()).await.unwrap();
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: "busybox".into(),
                ..api::ImageSpec::default()
            }),
            labels: HashMap::from([
                (labels::AGENT.to_string(), "n1".to_string()),
                (labels::POD_UID.to_string(), "u1".to_string()),
                (labels::CONTAINER_NAME.to_string(), "c".to_string()),
            ]),
            ..api::ContainerConfig::default()
        };
        let id = runtime
            .create_container(&sandbox, config, sandbox_config)
            .await
            .unwrap();
        runtime.start_container(&id).await.unwrap();
        rotate(&runtime, "n1", logs.path(), 10).await;
        let names: Vec<String> = std::fs::read_dir(&container)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with("0.log."), "{names:?}");
        // (The fake runtime writes no log: a real one opens a new `0.log` on reopening.)
    }

    #[tokio::test]
    async fn a_grown_log_should_be_rotated_and_old_ones_pruned() {
        let logs = tempfile::tempdir().unwrap();
        let container = logs.path().join("default_web_u1").join("c");
        std::fs::create_dir_all(&container).unwrap();
        for i in 0..6 {
            std::fs::write(container.join(format!("0.log.2026120{i}-000000")), "old").unwrap();
        }
        std::fs::write(container.join("0.log"), vec![b'x'; 100]).unwrap();
        // No running instance in this runtime: an ended container's log is left whole.
        let runtime = FakeRuntime::new();
        rotate(&runtime, "n1", logs.path(), 10).await;
        assert_eq!(
            std::fs::metadata(container.join("0.log")).unwrap().len(),
            100
        );
        // The rotated files beyond four are gone, oldest first.
        let mut left: Vec<String> = std::fs::read_dir(&container)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "0.log",
                "0.log.20261202-000000",
                "0.log.20261203-000000",
                "0.log.20261204-000000",
                "0.log.20261205-000000"
            ]
        );
        // Each instance keeps its own newest four; removing an instance takes all its files.
        for i in 0..5 {
            std::fs::write(container.join(format!("10.log.2026120{i}-000000")), "").unwrap();
        }
        std::fs::write(container.join("9.log.20261209-000000"), "").unwrap();
        std::fs::write(container.join("9.log"), "").unwrap();
        prune(&container);
        let count = |prefix: &str| {
            std::fs::read_dir(&container)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .count()
        };
        assert_eq!((count("10.log."), count("9.log.")), (4, 1));
        assert!(!container.join("10.log.20261200-000000").exists());
        remove_instance(&container, 9);
        assert_eq!((count("9.log"), count("10.log.")), (0, 4));
    }
}
