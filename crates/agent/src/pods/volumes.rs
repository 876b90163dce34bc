//! A pod's volumes on the node: emptyDir (a tmpfs for `medium: Memory`) and the files of
//! configMap and secret volumes live in
//! the pod's own directory under the agent's data directory; hostPath volumes are the host's.
//! downwardAPI volumes hold pod fields; projected volumes put ConfigMap, Secret, downwardAPI
//! files and service-account tokens (fetched by the worker) side by side.
//! ConfigMap, Secret, downwardAPI and projected files are written again whenever their source
//! changes, so the files a running container sees follow the source: the directory is
//! bind-mounted, and each version of its files replaces the last in one rename (kubelet's
//! `AtomicWriter` layout, `..data`). Containers get their volumeMounts as CRI mounts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume, VolumeProjection,
};

use super::env::{self, Sources};
use crate::runtime::api;

/// The directory of the pod `uid`'s volumes.
pub fn pod_directory(pods: &Path, uid: &str) -> PathBuf {
    pods.join(uid)
}

/// Where the pod `uid`'s emptyDir volume `name` lives.
pub fn empty_dir(pods: &Path, uid: &str, name: &str) -> PathBuf {
    pod_directory(pods, uid)
        .join("volumes")
        .join("empty-dir")
        .join(name)
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let path = path.display().to_string();
    let what = what.to_string();
    move |error| format!("{what} {path}: {error}")
}

/// The link to the current version of a volume's files (kubelet's `AtomicWriter` layout).
const DATA_LINK: &str = "..data";

/// Writes `files` (relative path → content) into `dir` with `mode` (or the item's own, from
/// `modes`) as kubelet's `AtomicWriter` does: each version of the files is a hidden directory
/// `..<version>`, `..data` links to the current one, and every top-level name is a link
/// through `..data`. A change writes a new version and swaps `..data` in one rename, so a
/// container never sees half an update (several keys changed, or a file half written), and
/// programs that watch `..data` see each update as one event. Unchanged files write nothing.
fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: u32,
    modes: &BTreeMap<String, u32>,
) -> Result<(), String> {
    let wanted: BTreeMap<&str, (&[u8], u32)> = files
        .iter()
        .map(|(name, content)| {
            let file_mode = modes.get(name).copied().unwrap_or(mode);
            (name.as_str(), (content.as_slice(), file_mode))
        })
        .collect();
    for name in wanted.keys() {
        if name
            .split('/')
            .any(|part| part.is_empty() || part == ".." || part.starts_with(".."))
        {
            return Err(format!("invalid path {name:?}"));
        }
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let link = dir.join(DATA_LINK);
    // Only a version this writer made counts: one hidden name in `dir` (a container that may
    // write here could point the link anywhere, and what it points at is removed below).
    let current = std::fs::read_link(&link).ok().filter(|old| is_version(old));
    let unchanged = current.as_ref().is_some_and(|old| {
        let version = dir.join(old);
        wanted.iter().all(|(name, (content, file_mode))| {
            let path = version.join(name);
            std::fs::symlink_metadata(&path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == *file_mode)
                && std::fs::read(&path).is_ok_and(|old| old == *content)
        }) && listed(&version) == wanted.keys().map(|n| (*n).to_string()).collect::<Vec<_>>()
    });
    if !unchanged {
        let version = format!(
            "..{}",
            jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
        );
        let fresh = dir.join(&version);
        for (name, (content, file_mode)) in &wanted {
            let path = fresh.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            let mut file = std::fs::File::create(&path).map_err(io("writing", &path))?;
            file.write_all(content).map_err(io("writing", &path))?;
            file.set_permissions(std::fs::Permissions::from_mode(*file_mode))
                .map_err(io("writing", &path))?;
        }
        std::fs::create_dir_all(&fresh).map_err(io("creating", &fresh))?;
        let swap = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&swap);
        std::os::unix::fs::symlink(&version, &swap).map_err(io("linking", &swap))?;
        std::fs::rename(&swap, &link).map_err(io("linking", &link))?;
        if let Some(old) = current.filter(|old| *old != Path::new(&version)) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    // The top-level names, each a link through `..data`; anything else at the top goes (an
    // earlier name, or files of the layout before versions).
    let tops: std::collections::BTreeSet<&str> = wanted
        .keys()
        .filter_map(|name| name.split('/').next())
        .collect();
    for top in &tops {
        let path = dir.join(top);
        let target = Path::new(DATA_LINK).join(top);
        if std::fs::read_link(&path).is_ok_and(|t| t == target) {
            continue;
        }
        remove_entry(&path);
        std::os::unix::fs::symlink(&target, &path).map_err(io("linking", &path))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(name.as_str()) {
                remove_entry(&entry.path());
            }
        }
    }
    Ok(())
}

/// Whether `name` (a `..data` link's target) is a version directory this writer names: one
/// path component beginning with `..`, neither `..` itself nor the link.
fn is_version(name: &Path) -> bool {
    let mut parts = name.components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(part)), None)
            if part.to_str().is_some_and(|p| p.starts_with("..") && p != DATA_LINK && p != "..data_tmp")
    )
}

/// Every entry below `dir` but directories (links not followed), as relative paths in order.
fn listed(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, here: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(here) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Removes a file, a link or a directory tree, whichever `path` is.
fn remove_entry(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// What a configMap or secret volume's item names: upstream's words for a key it lacks.
#[derive(Clone, Copy)]
enum Keys {
    ConfigMap,
    Secret,
}

/// The files of a configMap or secret volume: every key, or just `items` at their paths (an
/// item whose key is missing is an error, unless the source is optional).
fn projected(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    keys: Keys,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data.clone());
    };
    let mut files = BTreeMap::new();
    for item in items {
        let Some(content) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(match keys {
                Keys::ConfigMap => {
                    format!("configmap references non-existent config key: {}", item.key)
                }
                Keys::Secret => format!("references non-existent secret key: {}", item.key),
            });
        };
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
            projected(&data, items, Keys::ConfigMap, optional == Some(true)).map(Some)
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
            projected(&data, items, Keys::Secret, optional == Some(true)).map(Some)
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
    addresses: &VolumeContext,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            match field.field_path.as_str() {
                // Whole maps, only in files: one `key="value"` line each (upstream's
                // `fieldpath.FormatMap`).
                "metadata.labels" => format_map(kube::ResourceExt::labels(pod)),
                "metadata.annotations" => format_map(kube::ResourceExt::annotations(pod)),
                path => env::field(pod, path, addresses.host_ip, addresses.pod_ip)?,
            }
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

/// `map` as upstream's `fieldpath.FormatMap` writes it: `key="value"` lines in key order,
/// values quoted, no newline after the last.
fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| {
            let quoted = serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"));
            format!("{key}={quoted}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files of a projected volume: its sources' files side by side.
fn projected_volume_files(
    pod: &Pod,
    sources_of: &[VolumeProjection],
    sources: &Sources,
    addresses: &VolumeContext,
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

/// What a pod's volumes are written with: the node's and the pod's addresses, for fields that
/// name them, and whether secret-bearing volumes get a tmpfs of their own.
pub struct VolumeContext<'a> {
    /// The node's InternalIP.
    pub host_ip: &'a str,
    /// The pod's IP.
    pub pod_ip: &'a str,
    /// Whether secret, downwardAPI and projected volumes are tmpfs mounts (as kubelet's; off
    /// only where nothing may be mounted, in tests of the agent without root).
    pub secrets_in_memory: bool,
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
    addresses: &VolumeContext,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut paths = HashMap::new();
    let base = pod_directory(pods, uid).join("volumes");
    // Secret, downwardAPI and projected files live in memory (a tmpfs per volume), as
    // kubelet's: a secret is never written to the node's disk.
    // (A directory already holding files from before, on disk, stays so: a running container
    // has it bind-mounted and would not see a tmpfs laid over it.)
    let in_memory = |dir: &Path| -> Result<(), String> {
        let fresh = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        if addresses.secrets_in_memory && fresh {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            super::tmpfs::mount(dir, None)?;
        }
        Ok(())
    };
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let path = if let Some(empty) = &volume.empty_dir {
            let dir = empty_dir(pods, uid, &volume.name);
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
            in_memory(&dir)?;
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
            in_memory(&dir)?;
            let items = source.items.as_deref().unwrap_or_default();
            let files = downward_files(pod, items, addresses)?;
            write_files(&dir, &files, mode(source.default_mode), &item_modes(volume))?;
            dir
        } else if let Some(source) = &volume.projected {
            let dir = base.join("projected").join(&volume.name);
            in_memory(&dir)?;
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
        .any(agent_written)
}

/// Whether `volume`'s files are the agent's to write: configMap, secret, downwardAPI and
/// projected.
fn agent_written(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// Whether the pod's volume `name` is one kubelet always mounts read-only: the files the
/// agent writes (configMap, secret, downwardAPI, projected), which a container must not be able
/// to change under the agent's feet.
fn written_by_the_agent(pod: &Pod, name: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .find(|v| v.name == name)
        .is_some_and(agent_written)
}

/// A container's volumeMounts as CRI mounts.
pub fn mounts(
    pod: &Pod,
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
                Some(sub) if sub.split('/').any(|part| part == "..") || sub.starts_with('/') => {
                    return Err(format!("invalid subPath {sub:?}"));
                }
                Some(sub) => sub_path(host, sub)?,
                None => host.clone(),
            };
            Ok(api::Mount {
                container_path: mount.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: mount.read_only.unwrap_or(false)
                    || written_by_the_agent(pod, &mount.name),
                ..api::Mount::default()
            })
        })
        .collect()
}

/// The path `sub` of the volume at `volume`, made if missing, which must stay inside the
/// volume once links are resolved (a container could have put a link to `/` there).
fn sub_path(volume: &Path, sub: &str) -> Result<PathBuf, String> {
    let root = volume.canonicalize().map_err(io("resolving", volume))?;
    let inside = |path: &Path| -> Result<PathBuf, String> {
        let resolved = path.canonicalize().map_err(io("resolving", path))?;
        if resolved.starts_with(&root) {
            Ok(resolved)
        } else {
            Err(format!(
                "subPath {sub:?} resolves to {} outside the volume",
                resolved.display()
            ))
        }
    };
    // What exists of the path is checked before anything missing is made below it.
    let mut existing = volume.to_path_buf();
    let mut missing = PathBuf::new();
    for part in Path::new(sub).components() {
        if missing.as_os_str().is_empty() && std::fs::symlink_metadata(existing.join(part)).is_ok()
        {
            existing.push(part);
        } else {
            missing.push(part);
        }
    }
    let base = inside(&existing)?;
    if missing.as_os_str().is_empty() {
        return Ok(base);
    }
    let path = base.join(missing);
    std::fs::create_dir_all(&path).map_err(io("creating", &path))?;
    inside(&path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A file's permission bits.
    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_should_change_as_one_version_behind_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        // The layout before versions: a plain file, replaced by a link on the first write.
        std::fs::write(dir.join("a"), "old").unwrap();
        let files = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let modes = BTreeMap::from([("a".to_string(), 0o400)]);
        write_files(dir, &files(&[("a", "1"), ("sub/b", "2")]), 0o644, &modes).unwrap();
        let first = std::fs::read_link(dir.join(DATA_LINK)).unwrap();
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        let mode = |file: &str| mode_of(&dir.join(file));
        assert_eq!((mode("a"), mode("sub/b")), (0o400, 0o644));
        // Unchanged: nothing is written.
        write_files(dir, &files(&[("a", "1"), ("sub/b", "2")]), 0o644, &modes).unwrap();
        assert_eq!(std::fs::read_link(dir.join(DATA_LINK)).unwrap(), first);
        // Two keys change and one goes: a new version, swapped in whole; the old one is gone.
        write_files(dir, &files(&[("a", "3"), ("c", "4")]), 0o644, &modes).unwrap();
        let second = std::fs::read_link(dir.join(DATA_LINK)).unwrap();
        assert_ne!(second, first);
        assert!(!dir.join(&first).exists());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "4");
        assert!(
            std::fs::symlink_metadata(dir.join("sub")).is_err(),
            "a name no longer given"
        );
        assert!(write_files(dir, &files(&[("../x", "no")]), 0o644, &modes).is_err());
    }

    #[test]
    fn config_map_volumes_should_hold_their_keys_and_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "scratch", "mountPath": "/tmp/x"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "items": [
                {"key": "a", "path": "a", "mode": 0o400}, {"key": "b", "path": "b"}]}},
                {"name": "scratch", "emptyDir": {}}]}}))
        .unwrap();
        let mut sources = Sources::default();
        let map = |v: &str| serde_json::from_value(json!({"data": {"a": v, "b": "2"}})).unwrap();
        sources.config_maps.insert("cfg".into(), Some(map("1")));
        let here = VolumeContext {
            host_ip: "192.0.2.1",
            pod_ip: "10.42.0.9",
            secrets_in_memory: false,
        };
        let paths = prepare(&pod, dir.path(), "u", &sources, &here).unwrap();
        let cfg = &paths["cfg"];
        assert_eq!(std::fs::read_to_string(cfg.join("a")).unwrap(), "1");
        let mode = |file: &str| mode_of(&cfg.join(file));
        assert_eq!(mode("a"), 0o400, "the item's own mode");
        assert_eq!(mode("b"), 0o644, "the default mode");
        sources
            .config_maps
            .insert("cfg".into(), Some(map("changed")));
        prepare(&pod, dir.path(), "u", &sources, &here).unwrap();
        assert_eq!(std::fs::read_to_string(cfg.join("a")).unwrap(), "changed");
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = mounts(&pod, container, &paths).unwrap();
        assert_eq!(mounts[0].container_path, "/etc/cfg");
        assert!(mounts[0].readonly, "the agent's files are always read-only");
        assert!(!mounts[1].readonly);
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
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop", "uid": "u",
            "labels": {"tier": "web", "app": "say \"hi\""}},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "api", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                {"name": "info", "downwardAPI": {"items": [{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}))
        .unwrap();
        let mut sources = Sources::default();
        let ca = serde_json::from_value(json!({"data": {"ca.crt": "PEM"}})).unwrap();
        sources
            .config_maps
            .insert("kube-root-ca.crt".into(), Some(ca));
        let here = VolumeContext {
            host_ip: "192.0.2.1",
            pod_ip: "10.42.0.9",
            secrets_in_memory: false,
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
        assert_eq!(
            read("info", "labels"),
            "app=\"say \\\"hi\\\"\"\ntier=\"web\""
        );
        let mode = std::fs::metadata(paths["api"].join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_data_link_pointed_elsewhere_should_remove_nothing_outside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        let outside = dir.path().join("precious");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let files = BTreeMap::from([("a".to_string(), b"1".to_vec())]);
        write_files(&volume, &files, 0o644, &BTreeMap::new()).unwrap();
        // What a container that could write here might do: point `..data` outside, and
        // leave a loop of links in the version.
        let version = std::fs::read_link(volume.join(DATA_LINK)).unwrap();
        std::os::unix::fs::symlink(".", volume.join(&version).join("loop")).unwrap();
        std::fs::remove_file(volume.join(DATA_LINK)).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join(DATA_LINK)).unwrap();
        write_files(&volume, &files, 0o644, &BTreeMap::new()).unwrap();
        assert!(
            outside.join("keep").exists(),
            "a directory outside was removed"
        );
        assert_eq!(std::fs::read_to_string(volume.join("a")).unwrap(), "1");
        // A version with a stray link is written again, without following it.
        assert!(is_version(Path::new("..2026_12_05")));
        for bad in ["..", "..data", "/", "../x", "..a/b", "a"] {
            assert!(!is_version(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn a_sub_path_should_stay_inside_its_volume() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("v");
        std::fs::create_dir_all(volume.join("d")).unwrap();
        std::os::unix::fs::symlink("/", volume.join("escape")).unwrap();
        assert!(sub_path(&volume, "d").is_ok());
        assert!(sub_path(&volume, "new/dir").is_ok_and(|p| p.is_dir()));
        assert!(sub_path(&volume, "escape").is_err());
        assert!(sub_path(&volume, "escape/etc").is_err());
        // Nothing is made outside on the way to the refusal.
        let name = format!("skiff-test-{}", std::process::id());
        assert!(sub_path(&volume, &format!("escape/tmp/{name}")).is_err());
        assert!(!Path::new("/tmp").join(&name).exists());
    }
}
