//! Starts a private etcd server as a child process: for the conformance tests, benchmarks and
//! etcd snapshot restores. It listens on loopback ports only, keeps its data in its own directory,
//! and is killed (by its PID, which we started) when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{StoreError, StoreResult};

/// A running etcd child process.
pub struct EtcdProcess {
    child: Child,
    endpoint: String,
    _dir: Option<tempfile::TempDir>,
}

/// Whether an `etcd` binary is on the PATH.
pub fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn free_port() -> StoreResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdProcess {
    /// Starts etcd on a fresh temporary data directory.
    pub fn start() -> StoreResult<Self> {
        let dir = tempfile::Builder::new().prefix("skiff-etcd-").tempdir()?;
        let mut process = Self::start_in(&dir.path().join("data"))?;
        process._dir = Some(dir);
        Ok(process)
    }

    /// Starts etcd on `data_dir` (existing data is served as is).
    pub fn start_in(data_dir: &Path) -> StoreResult<Self> {
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--name=skiff")
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=skiff={peer_url}"))
            // Room for a 1.5 MiB value plus the request around it.
            .arg("--max-request-bytes=2097152")
            .arg("--log-level=error")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                StoreError::EtcdUnavailable(format!("could not start etcd: {error}"))
            })?;
        let mut process = Self {
            child,
            endpoint,
            _dir: None,
        };
        process.wait_ready(client)?;
        Ok(process)
    }

    fn wait_ready(&mut self, port: u16) -> StoreResult<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(StoreError::EtcdUnavailable(format!(
                    "etcd exited at start: {status}"
                )));
            }
            if etcd_healthy(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StoreError::EtcdUnavailable(
            "etcd did not become healthy in 20 s".into(),
        ))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The etcd data directory, when this process owns a temporary one.
    pub fn temp_dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().to_path_buf())
    }
}

/// etcd answers `GET /health` with `{"health":"true"}` once it has a leader.
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
