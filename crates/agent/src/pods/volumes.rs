//! A pod's volumes on the node: emptyDir (a tmpfs for `medium: Memory`) and the files of
//! configMap and secret volumes live in
//! the pod's own directory under the agent's data directory; hostPath volumes are the host's.
//! downwardAPI volumes hold pod fields; projected volumes put ConfigMap, Secret, downwardAPI
//! files and service-account tokens (fetched by the worker) side by side.
//! ConfigMap and Secret files are written again whenever their source changes, so the files a
//! running container sees follow the source (the directory is bind-mounted, and each file is
//! replaced whole by a rename). Containers get their volumeMounts as CRI mounts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, VolumeProjection,
};

use super::env::{self, Sources};
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

/// Writes `files` (relative path → content) into `dir` with `mode` (or the item's own, from
/// `modes`), replacing changed files whole and removing files no longer there.
fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: u32,
    modes: &BTreeMap<String, u32>,
) -> Result<(), String> {
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
        let mode = modes.get(name).copied().unwrap_or(mode);
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

/// The files a ConfigMap gives (`items`, or every key); `None` when it is missing but optional.
fn config_map_files(
    sources: &Sources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    match sources.config_maps.get(name).cloned().flatten() {
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
            projected(&data, items, name).map(Some)
        }
        None if optional == Some(true) => Ok(None),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

/// The files a Secret gives (`items`, or every key); `None` when it is missing but optional.
fn secret_files(
    sources: &Sources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    match sources.secrets.get(name).cloned().flatten() {
        Some(secret) => {
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            projected(&data, items, name).map(Some)
        }
        None if optional == Some(true) => Ok(None),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

/// The files of a downwardAPI volume or projection: each item's pod field or container
/// resource.
fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    addresses: &Addresses,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            env::field(pod, &field.field_path, addresses.host_ip, addresses.pod_ip)?
        } else if let Some(reference) = &item.resource_field_ref {
            let name = reference.container_name.as_deref().unwrap_or_default();
            let container = pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name:?} not found for {}", item.path))?;
            env::resource(
                container,
                &reference.resource,
                reference.divisor.as_ref().map(|d| d.0.as_str()),
            )?
        } else {
            continue;
        };
        files.insert(item.path.clone(), value.into_bytes());
    }
    Ok(files)
}

/// The files of a projected volume: its sources' files side by side.
fn projected_volume_files(
    pod: &Pod,
    sources_of: &[VolumeProjection],
    sources: &Sources,
    addresses: &Addresses,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    for source in sources_of {
        if let Some(c) = &source.config_map {
            let found = config_map_files(sources, &c.name, c.items.as_ref(), c.optional)?;
            files.extend(found.unwrap_or_default());
        } else if let Some(s) = &source.secret {
            let found = secret_files(sources, &s.name, s.items.as_ref(), s.optional)?;
            files.extend(found.unwrap_or_default());
        } else if let Some(d) = &source.downward_api {
            let items = d.items.as_deref().unwrap_or_default();
            files.extend(downward_files(pod, items, addresses)?);
        } else if let Some(t) = &source.service_account_token {
            let key = (
                t.audience.clone().unwrap_or_default(),
                t.expiration_seconds.unwrap_or(3600),
            );
            let token = match sources.tokens.get(&key) {
                Some(Ok(token)) => token.token.clone(),
                Some(Err(error)) => return Err(format!("failed to fetch token: {error}")),
                None => return Err("failed to fetch token: not requested yet".into()),
            };
            files.insert(t.path.clone(), token.into_bytes());
        }
    }
    Ok(files)
}

/// The node's and the pod's addresses, for fields that name them.
pub struct Addresses<'a> {
    /// The node's InternalIP.
    pub host_ip: &'a str,
    /// The pod's IP.
    pub pod_ip: &'a str,
}

/// The modes items of `volume` ask for themselves (`items[].mode`), by path.
fn item_modes(volume: &k8s_openapi::api::core::v1::Volume) -> BTreeMap<String, u32> {
    let mut modes = BTreeMap::new();
    let mut keys = |items: Option<&Vec<KeyToPath>>| {
        for item in items.into_iter().flatten() {
            if let Some(mode) = item.mode.and_then(|m| u32::try_from(m).ok()) {
                modes.insert(item.path.clone(), mode);
            }
        }
    };
    keys(volume.config_map.as_ref().and_then(|c| c.items.as_ref()));
    keys(volume.secret.as_ref().and_then(|s| s.items.as_ref()));
    let projections = volume
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .into_iter()
        .flatten();
    let mut downward: Vec<&DownwardAPIVolumeFile> = Vec::new();
    for projection in projections {
        keys(
            projection
                .config_map
                .as_ref()
                .and_then(|c| c.items.as_ref()),
        );
        keys(projection.secret.as_ref().and_then(|s| s.items.as_ref()));
        downward.extend(
            projection
                .downward_api
                .iter()
                .flat_map(|d| d.items.iter().flatten()),
        );
    }
    downward.extend(
        volume
            .downward_api
            .iter()
            .flat_map(|d| d.items.iter().flatten()),
    );
    for item in downward {
        if let Some(mode) = item.mode.and_then(|m| u32::try_from(m).ok()) {
            modes.insert(item.path.clone(), mode);
        }
    }
    modes
}

/// A volume's file mode (`defaultMode`, 0644 by default).
fn mode(default_mode: Option<i32>) -> u32 {
    default_mode
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0o644)
}

/// Makes every volume of `pod` ready on the node; returns each volume's host path.
pub fn prepare(
    pod: &Pod,
    pods: &Path,
    uid: &str,
    sources: &Sources,
    addresses: &Addresses,
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
        let path = if let Some(empty) = &volume.empty_dir {
            let dir = base.join("empty-dir").join(&volume.name);
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io("creating", &dir))?;
            if empty.medium.as_deref() == Some("Memory") {
                let size = empty
                    .size_limit
                    .as_ref()
                    .and_then(|q| skiff_apimachinery::quantity::milli(&q.0).ok())
                    .and_then(|milli| u64::try_from(milli / 1000).ok());
                super::tmpfs::mount(&dir, size)?;
            }
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
            let files = config_map_files(
                sources,
                &source.name,
                source.items.as_ref(),
                source.optional,
            )?;
            write_files(
                &dir,
                &files.unwrap_or_default(),
                mode(source.default_mode),
                &item_modes(volume),
            )?;
            dir
        } else if let Some(source) = &volume.secret {
            let dir = base.join("secret").join(&volume.name);
            let name = source.secret_name.clone().unwrap_or_default();
            let files = secret_files(sources, &name, source.items.as_ref(), source.optional)?;
            write_files(
                &dir,
                &files.unwrap_or_default(),
                mode(source.default_mode),
                &item_modes(volume),
            )?;
            dir
        } else if let Some(source) = &volume.downward_api {
            let dir = base.join("downward-api").join(&volume.name);
            let items = source.items.as_deref().unwrap_or_default();
            let files = downward_files(pod, items, addresses)?;
            write_files(&dir, &files, mode(source.default_mode), &item_modes(volume))?;
            dir
        } else if let Some(source) = &volume.projected {
            let dir = base.join("projected").join(&volume.name);
            let of = source.sources.as_deref().unwrap_or_default();
            let files = projected_volume_files(pod, of, sources, addresses)?;
            write_files(&dir, &files, mode(source.default_mode), &item_modes(volume))?;
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

/// Whether the pod has volumes whose files follow their sources (configMap, secret,
/// downwardAPI, projected), which the worker writes again now and then.
pub fn refreshed(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        })
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
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "items": [
                {"key": "a", "path": "a", "mode": 0o400}, {"key": "b", "path": "b"}]}},
                {"name": "scratch", "emptyDir": {}}]}}))
        .unwrap();
        let mut sources = Sources::default();
        let map = |v: &str| serde_json::from_value(json!({"data": {"a": v, "b": "2"}})).unwrap();
        sources.config_maps.insert("cfg".into(), Some(map("1")));
        let here = Addresses {
            host_ip: "192.0.2.1",
            pod_ip: "10.42.0.9",
        };
        let paths = prepare(&pod, dir.path(), "u", &sources, &here).unwrap();
        let cfg = &paths["cfg"];
        assert_eq!(std::fs::read_to_string(cfg.join("a")).unwrap(), "1");
        let mode = |file: &str| {
            std::fs::metadata(cfg.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("a"), 0o400, "the item's own mode");
        assert_eq!(mode("b"), 0o644, "the default mode");
        sources
            .config_maps
            .insert("cfg".into(), Some(map("changed")));
        prepare(&pod, dir.path(), "u", &sources, &here).unwrap();
        assert_eq!(std::fs::read_to_string(cfg.join("a")).unwrap(), "changed");
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = mounts(container, &paths).unwrap();
        assert_eq!(mounts[0].container_path, "/etc/cfg");
        assert!(mounts[0].readonly);
        assert!(paths["scratch"].is_dir());
        sources.config_maps.insert("cfg".into(), None);
        assert_eq!(
            prepare(&pod, dir.path(), "u", &sources, &here),
            Err("configmap \"cfg\" not found".into())
        );
    }

    #[test]
    fn projected_volumes_should_hold_token_ca_and_namespace_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop", "uid": "u"},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "api", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                {"name": "info", "downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}]}}))
        .unwrap();
        let mut sources = Sources::default();
        let ca = serde_json::from_value(json!({"data": {"ca.crt": "PEM"}})).unwrap();
        sources
            .config_maps
            .insert("kube-root-ca.crt".into(), Some(ca));
        let here = Addresses {
            host_ip: "192.0.2.1",
            pod_ip: "10.42.0.9",
        };
        assert_eq!(
            prepare(&pod, dir.path(), "u", &sources, &here),
            Err("failed to fetch token: not requested yet".into())
        );
        let token = env::Token {
            token: "jwt".into(),
            refresh_at: std::time::Instant::now(),
        };
        sources.tokens.insert((String::new(), 3607), Ok(token));
        let paths = prepare(&pod, dir.path(), "u", &sources, &here).unwrap();
        let read =
            |volume: &str, file: &str| std::fs::read_to_string(paths[volume].join(file)).unwrap();
        assert_eq!(read("api", "token"), "jwt");
        assert_eq!(read("api", "ca.crt"), "PEM");
        assert_eq!(read("api", "namespace"), "shop");
        assert_eq!(read("info", "ip"), "10.42.0.9");
        let mode = std::fs::metadata(paths["api"].join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
