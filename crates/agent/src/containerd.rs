//! The agent's own containerd: its configuration (written under the agent's data directory:
//! own socket, root and state, cgroupfs, CNI from Debian's plugins, the sandbox image skiff
//! builds, and `restrict_oom_score_adj`, without which every sandbox fails on these machines),
//! and a supervisor that starts it as a child process, adopts one an earlier agent left running,
//! and starts it again when it dies (containers survive: their shims are not its children).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::runtime::Runtime;
use crate::runtime::cri::Cri;

/// How long containerd gets to answer after it starts.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How often an adopted containerd is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Starting containerd failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// Its files could not be written.
    #[error("writing containerd's configuration in {dir}")]
    Files {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be run.
    #[error("starting containerd (is Debian's containerd package installed?)")]
    Spawn(#[source] std::io::Error),
    /// It did not answer in time.
    #[error("containerd did not answer on {socket} within {READY_WITHIN:?}; see {log}")]
    NotReady {
        /// Its socket.
        socket: PathBuf,
        /// Its log.
        log: PathBuf,
    },
}

/// Where containerd keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The directory of everything containerd writes.
    pub dir: PathBuf,
    /// Where the CNI configuration is.
    pub cni_conf_dir: PathBuf,
    /// The sandbox (pause) image.
    pub sandbox_image: String,
}

impl Paths {
    /// Its gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The pid file of the containerd this agent started.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }

    /// Per-registry host configuration (`certs.d/{registry}/hosts.toml`: mirrors, plain HTTP).
    pub fn registries(&self) -> PathBuf {
        self.dir.join("certs.d")
    }
}

/// containerd's configuration for `paths`.
pub fn config(paths: &Paths) -> String {
    let dir = paths.dir.display();
    format!(
        r#"# Written by skiff's node agent; rewritten at every start.
version = 2
root = "{dir}/root"
state = "{dir}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registries}"
"#,
        socket = paths.socket().display(),
        sandbox = paths.sandbox_image,
        cni = paths.cni_conf_dir.display(),
        registries = paths.registries().display(),
    )
}

/// Whether process `pid` runs: it exists and has not ended (a zombie has, until its parent
/// reaps it: [`revive`]'s child is this process's).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command's closing parenthesis.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Whether a containerd answers on `socket`.
async fn answers(socket: &Path) -> bool {
    match Cri::new(socket) {
        Ok(cri) => tokio::time::timeout(Duration::from_secs(2), cri.version())
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    }
}

/// Starts containerd as a child; returns it once it answers.
async fn spawn(paths: &Paths) -> Result<tokio::process::Child, ContainerdError> {
    let files = |source| ContainerdError::Files {
        dir: paths.dir.clone(),
        source,
    };
    std::fs::create_dir_all(&paths.dir).map_err(files)?;
    std::fs::create_dir_all(paths.registries()).map_err(files)?;
    std::fs::write(paths.config(), config(paths)).map_err(files)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())
        .map_err(files)?;
    let err = log.try_clone().map_err(files)?;
    let child = tokio::process::Command::new("containerd")
        .arg("--config")
        .arg(paths.config())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(ContainerdError::Spawn)?;
    if let Some(pid) = child.id() {
        std::fs::write(paths.pid_file(), pid.to_string()).map_err(files)?;
    }
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    while tokio::time::Instant::now() < deadline {
        if answers(&paths.socket()).await {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ContainerdError::NotReady {
        socket: paths.socket(),
        log: paths.log(),
    })
}

/// A supervised containerd.
pub struct Supervisor {
    paths: Paths,
    child: Option<tokio::process::Child>,
}

impl Supervisor {
    /// Adopts the containerd an earlier agent left running on `paths`, or starts one.
    pub async fn start(paths: Paths) -> Result<Self, ContainerdError> {
        if answers(&paths.socket()).await {
            tracing::info!(socket = %paths.socket().display(), "adopting the running containerd");
            return Ok(Supervisor { paths, child: None });
        }
        let child = spawn(&paths).await?;
        tracing::info!(socket = %paths.socket().display(), "containerd started");
        Ok(Supervisor {
            paths,
            child: Some(child),
        })
    }

    /// Keeps containerd running until the future is dropped (the child keeps running then:
    /// workloads outlive the agent).
    pub async fn watch(mut self) {
        loop {
            match self.child.as_mut() {
                Some(child) => {
                    let status = child.wait().await;
                    tracing::warn!(?status, "containerd exited; starting it again");
                    self.child = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => {
                    tokio::time::sleep(CHECK_EVERY).await;
                    if answers(&self.paths.socket()).await {
                        continue;
                    }
                }
            }
            match spawn(&self.paths).await {
                Ok(child) => self.child = Some(child),
                Err(error) => tracing::error!(%error, "containerd could not be started again"),
            }
        }
    }
}

/// For a reset: starts again the containerd an agent ran on `paths` when it no longer answers
/// (killed with everything else, as when a machine's processes all die), since only it can take
/// its pods apart: their network namespaces, addresses and mounts. Nothing when no containerd
/// ran there since the last reset (no pid file); [`stop`] ends it afterwards.
pub async fn revive(paths: &Paths) {
    if !paths.pid_file().exists() || answers(&paths.socket()).await {
        return;
    }
    match spawn(paths).await {
        Ok(_child) => {
            tracing::info!(socket = %paths.socket().display(), "containerd started again for the reset")
        }
        Err(error) => {
            tracing::warn!(%error, "containerd could not be started for the reset; its pods' network namespaces stay");
        }
    }
}

/// Stops the containerd this agent's data directory records (teardown only): SIGTERM to that
/// process, which must be a containerd started with this configuration.
pub async fn stop(paths: &Paths) {
    let Ok(pid) = std::fs::read_to_string(paths.pid_file()) else {
        return;
    };
    let pid = pid.trim();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&paths.config().display().to_string());
    if !ours {
        return;
    }
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .await;
    for _ in 0..50 {
        if !running(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(paths.pid_file());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

    use super::*;

    #[test]
    fn a_zombie_should_count_as_ended_and_a_live_process_as_running() {
        assert!(running(&std::process::id().to_string()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id().to_string();
        // Not reaped yet: a zombie until `wait`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running(&pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!running(&pid), "an ended child not yet reaped");
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "still a zombie"
        );
        child.wait().unwrap();
        assert!(!running(&pid));
    }
}
