//! Images without a registry: [`pack`] writes a directory (or files in memory) as a one-layer OCI
//! image archive, [`import`] side-loads an archive into the node's containerd, and the sandbox
//! image — skiff's own static pause program, built with the agent — is packed and imported at
//! start when the runtime lacks it, so no node ever needs to pull `pause`.

use std::io::Read;
use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};
use serde_json::json;

use crate::runtime::{Runtime, RuntimeError};

/// The sandbox image every pod's sandbox runs.
pub const PAUSE_IMAGE: &str = "registry.skiff.local/pause:3.10";

/// The pause program (static, built by build.rs).
const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Packing or importing an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading the files or writing the archive failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ctr` failed.
    #[error("importing {archive} into containerd failed: {output}")]
    Import {
        /// The archive.
        archive: PathBuf,
        /// What ctr said.
        output: String,
    },
    /// The runtime could not be asked.
    #[error("asking the container runtime for the sandbox image")]
    Runtime(#[source] RuntimeError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

/// One file of an image's only layer.
pub enum Entry {
    /// A regular file with its mode and content.
    File(Vec<u8>, u32),
    /// A directory.
    Directory,
    /// A symbolic link to a target.
    Link(String),
}

fn sha256(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn append(archive: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    archive.append_data(&mut header, path, bytes)
}

/// An OCI image archive named `name` (`registry/repo:tag`) whose one layer holds `files`
/// (paths without a leading `/`), running `entrypoint`.
pub fn archive(
    name: &str,
    files: &[(String, Entry)],
    entrypoint: &[&str],
) -> std::io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for (path, entry) in files {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::File(content, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                layer.append_data(&mut header, path, content.as_slice())?;
            }
            Entry::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                layer.append_data(&mut header, path, std::io::empty())?;
            }
            Entry::Link(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                layer.append_link(&mut header, path, target)?;
            }
        }
    }
    let layer = layer.into_inner()?;
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    }))?;
    let manifest_digest = sha256(&manifest);
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let mut out = tar::Builder::new(Vec::new());
    append(&mut out, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append(&mut out, "index.json", &index)?;
    for (digest, bytes) in [
        (layer_digest, &layer),
        (config_digest, &config),
        (manifest_digest, &manifest),
    ] {
        append(&mut out, &format!("blobs/sha256/{digest}"), bytes)?;
    }
    out.into_inner()
}

/// The files of directory `root`, as an image layer holds them.
pub fn files_of(root: &Path) -> Result<Vec<(String, Entry)>, ImageError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Entry)>) -> Result<(), ImageError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io("reading", dir))?
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let meta = std::fs::symlink_metadata(&path).map_err(io("reading", &path))?;
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io("reading", &path))?;
                out.push((relative, Entry::Link(target.display().to_string())));
            } else if meta.is_dir() {
                out.push((relative, Entry::Directory));
                walk(root, &path, out)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mut content = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|mut f| f.read_to_end(&mut content))
                    .map_err(io("reading", &path))?;
                out.push((
                    relative,
                    Entry::File(content, meta.permissions().mode() & 0o7777),
                ));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// Side-loads the image archive `archive` (OCI or docker) into the containerd at `socket`.
pub async fn import(socket: &Path, archive: &Path) -> Result<(), ImageError> {
    let output = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args([
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "--all-platforms",
        ])
        .arg(archive)
        .output()
        .await
        .map_err(io("running ctr on", archive))?;
    if !output.status.success() {
        return Err(ImageError::Import {
            archive: archive.to_path_buf(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Makes sure the runtime has the sandbox image: packs and imports it if not.
pub async fn ensure_pause(
    runtime: &dyn Runtime,
    socket: &Path,
    scratch: &Path,
) -> Result<(), ImageError> {
    if runtime
        .image_status(PAUSE_IMAGE)
        .await
        .map_err(ImageError::Runtime)?
        .is_some()
    {
        return Ok(());
    }
    let bytes = archive(
        PAUSE_IMAGE,
        &[("pause".into(), Entry::File(PAUSE.to_vec(), 0o755))],
        &["/pause"],
    )
    .map_err(io("packing the pause image in", scratch))?;
    std::fs::create_dir_all(scratch).map_err(io("creating", scratch))?;
    let path = scratch.join("pause.tar");
    std::fs::write(&path, bytes).map_err(io("writing", &path))?;
    import(socket, &path).await?;
    tracing::info!(image = PAUSE_IMAGE, "sandbox image imported");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn an_archive_should_hold_an_oci_layout_naming_the_image() {
        let bytes = archive(
            "registry.skiff.local/pause:3.10",
            &[("pause".into(), Entry::File(PAUSE.to_vec(), 0o755))],
            &["/pause"],
        )
        .unwrap();
        let mut reader = tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        let mut index = Value::Null;
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "index.json" {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                index = serde_json::from_str(&text).unwrap();
            }
            names.push(name);
        }
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "registry.skiff.local/pause:3.10"
        );
        assert!(PAUSE.len() > 1000, "the pause program is built in");
    }
}
