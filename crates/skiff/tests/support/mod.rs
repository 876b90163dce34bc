//! What the end-to-end tests share: a real `skiff server` process on a free port with a
//! temporary data directory, stopped (by its PID, through `Child`) when dropped.

#[allow(dead_code)] // not every test binary drives kubectl
pub mod kubectl;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running `skiff server`.
#[allow(dead_code)] // not every test binary starts an API-only server
pub struct Server {
    child: Child,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server (without a node agent) and waits until it prints its kubeconfig.
#[allow(dead_code)] // not every test binary starts an API-only server
pub fn start_server() -> Server {
    start_server_with(&[])
}

/// Starts a server (without a node agent) with `extra` arguments and waits until it prints its
/// kubeconfig.
#[allow(dead_code)] // not every test binary starts an API-only server
pub fn start_server_with(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--no-agent",
            // Servers run side by side: the cluster DNS on any free port, asking no resolver.
            "--dns-port",
            "0",
            "--dns-upstream",
            "none",
            "--https-port",
            &free_port().to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut kubeconfig = None;
    for line in stdout.by_ref().map_while(Result::ok) {
        if let Some(path) = line.strip_prefix("kubeconfig: ") {
            kubeconfig = Some(PathBuf::from(path));
            break;
        }
    }
    // Keep draining the server's output.
    std::thread::spawn(move || stdout.for_each(drop));
    Server {
        child,
        kubeconfig: kubeconfig.expect("the server prints its kubeconfig"),
        _dir: dir,
    }
}
