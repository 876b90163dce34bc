//! A pod's volumes on the node: emptyDir and the files of configMap and secret volumes live in
//! the pod's own directory under the agent's data directory; hostPath volumes are the host's.
//! ConfigMap and Secret files are written again whenever their source changes, so the files a
//! running container sees follow the source (the directory is bind-mounted, and each file is
//! replaced whole by a rename). Containers get their volumeMounts as CRI mounts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use super::env::Sources;
use crate::runtime::api;

/// The directory of the pod `uid`'s volumes.
pub fn pod_directory(pods: &Path, uid: &str) -> PathBuf {
    pods.join(uid)
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let path = path.display().to_string();
    let what = what.to_string();
    move |error| format!("{what} {path}: {error}")
}

/// Writes `files` (relative path → content) into `dir` with `mode`, replacing changed files
/// whole and removing files no longer there.
fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    for (name, content) in files {
        if name.contains("..") || name.starts_with('/') {
            return Err(format!("invalid path {name:?}"));
        }
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == *content) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let temporary = path.with_extension("skiff-tmp");
        let mut file = std::fs::File::create(&temporary).map_err(io("writing", &temporary))?;
        file.write_all(content).map_err(io("writing", &temporary))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io("writing", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(io("writing", &path))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && !files.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// The files of a configMap or secret volume: every key, or just `items` at their paths.
fn projected(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    source: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data.clone());
    };
    let mut files = BTreeMap::new();
    for item in items {
        let content = data.get(&item.key).ok_or_else(|| {
            format!(
                "configmap references non-existent config key: {} ({source})",
                item.key
            )
        })?;
        files.insert(item.path.clone(), content.clone());
    }
    Ok(files)
}

/// Makes every volume of `pod` ready on the node; returns each volume's host path.
pub fn prepare(
    pod: &Pod,
    pods: &Path,
    uid: &str,
    sources: &Sources,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut paths = HashMap::new();
    let base = pod_directory(pods, uid).join("volumes");
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let path = if volume.empty_dir.is_some() {
            let dir = base.join("empty-dir").join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io("creating", &dir))?;
            dir
        } else if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            match host.type_.as_deref() {
                Some("DirectoryOrCreate") => {
                    std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
                }
                Some("FileOrCreate") if !path.exists() => {
                    std::fs::File::create(&path).map_err(io("creating", &path))?;
                }
                Some("Directory") if !path.is_dir() => {
                    return Err(format!(
                        "hostPath type check failed: {} is not a directory",
                        host.path
                    ));
                }
                Some("File") if !path.is_file() => {
                    return Err(format!(
                        "hostPath type check failed: {} is not a file",
                        host.path
                    ));
                }
                _ => {}
            }
            path
        } else if let Some(source) = &volume.config_map {
            let dir = base.join("configmap").join(&volume.name);
            match sources.config_maps.get(&source.name).cloned().flatten() {
                Some(map) => {
                    let mut data: BTreeMap<String, Vec<u8>> = map
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    data.extend(
                        map.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    let files = projected(&data, source.items.as_ref(), &source.name)?;
                    let mode = u32::try_from(source.default_mode.unwrap_or(0o644)).unwrap_or(0o644);
                    write_files(&dir, &files, mode)?;
                }
                None if source.optional == Some(true) => {
                    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
                }
                None => return Err(format!("configmap \"{}\" not found", source.name)),
            }
            dir
        } else if let Some(source) = &volume.secret {
            let dir = base.join("secret").join(&volume.name);
            let name = source.secret_name.clone().unwrap_or_default();
            match sources.secrets.get(&name).cloned().flatten() {
                Some(secret) => {
                    let data: BTreeMap<String, Vec<u8>> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    let files = projected(&data, source.items.as_ref(), &name)?;
                    let mode = u32::try_from(source.default_mode.unwrap_or(0o644)).unwrap_or(0o644);
                    write_files(&dir, &files, mode)?;
                }
                None if source.optional == Some(true) => {
                    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
                }
                None => return Err(format!("secret \"{name}\" not found")),
            }
            dir
        } else {
            return Err(format!(
                "volume \"{}\": this node agent does not support its type yet",
                volume.name
            ));
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

/// A container's volumeMounts as CRI mounts.
pub fn mounts(
    container: &Container,
    paths: &HashMap<String, PathBuf>,
) -> Result<Vec<api::Mount>, String> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let host = paths
                .get(&mount.name)
                .ok_or_else(|| format!("unable to find volume \"{}\" to mount", mount.name))?;
            let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if sub.contains("..") => {
                    return Err(format!("invalid subPath {sub:?}"));
                }
                Some(sub) => {
                    let path = host.join(sub);
                    if !path.exists() {
                        std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
                    }
                    path
                }
                None => host.clone(),
            };
            Ok(api::Mount {
                container_path: mount.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: mount.read_only.unwrap_or(false),
                ..api::Mount::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_map_volumes_should_hold_their_keys_and_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                {"name": "scratch", "mountPath": "/tmp/x"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "scratch", "emptyDir": {}}]}}))
        .unwrap();
        let mut sources = Sources::default();
        let map = |v: &str| serde_json::from_value(json!({"data": {"a": v, "b": "2"}})).unwrap();
        sources.config_maps.insert("cfg".into(), Some(map("1")));
        let paths = prepare(&pod, dir.path(), "u", &sources).unwrap();
        let cfg = &paths["cfg"];
        assert_eq!(std::fs::read_to_string(cfg.join("a")).unwrap(), "1");
        sources
            .config_maps
            .insert("cfg".into(), Some(map("changed")));
        prepare(&pod, dir.path(), "u", &sources).unwrap();
        assert_eq!(std::fs::read_to_string(cfg.join("a")).unwrap(), "changed");
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = mounts(container, &paths).unwrap();
        assert_eq!(mounts[0].container_path, "/etc/cfg");
        assert!(mounts[0].readonly);
        assert!(paths["scratch"].is_dir());
        sources.config_maps.insert("cfg".into(), None);
        assert_eq!(
            prepare(&pod, dir.path(), "u", &sources),
            Err("configmap \"cfg\" not found".into())
        );
    }
}
