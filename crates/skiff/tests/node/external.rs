//! A containerd the test runs itself, as a machine's existing CRI runtime would be, for an
//! agent given `--container-runtime-endpoint`: its own socket, root and state under the test's
//! directory, CNI from the agent's conflist directory (`AGENT_DATA/cni/net.d`, where the agent writes
//! it), pulls of `docker.io` images from the test's registry, and skiff's sandbox image (which
//! the agent imports). Stopped by its pid and its directory emptied when dropped, after the
//! agent's reset has removed its pods through it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

pub struct ExternalContainerd {
    child: Child,
    dir: PathBuf,
}

impl ExternalContainerd {
    /// Starts containerd in `dir` for an agent whose data directory is `agent_data`; returns it
    /// once its socket answers.
    pub fn start(dir: &Path, agent_data: &Path, registry: &str) -> ExternalContainerd {
        let cni = agent_data.join("cni/net.d");
        let hosts = dir.join("certs.d/docker.io");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{registry}\"\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
        let config = format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.skiff.local/pause:3.10"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"#,
            dir = dir.display(),
            cni = cni.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let external = ExternalContainerd {
            child,
            dir: dir.to_path_buf(),
        };
        eventually(
            "the external containerd answering",
            Duration::from_secs(30),
            || {
                Command::new("ctr")
                    .arg("--address")
                    .arg(external.socket())
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
        external
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
}

impl Drop for ExternalContainerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        // What it left mounted (sandboxes' shm, containers' root filesystems) goes before its
        // directory does.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut below: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(&self.dir))
                .collect();
            below.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for mount in below {
                let _ = Command::new("umount").arg("-l").arg(mount).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
