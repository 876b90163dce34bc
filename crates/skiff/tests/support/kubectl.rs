//! Real kubectl binaries for the end-to-end tests: both versions, found or the test fails, and
//! a small driver that runs one against a kubeconfig in a namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Both kubectl binaries; panics, naming the missing one, unless both are installed.
pub fn kubectl_binaries() -> Vec<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("run sh");
    let dispatcher = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = dispatcher
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .expect("this test needs the `kubectl` dispatcher on PATH, with kubectl.1.33 beside it");
    let mut found = vec![dir.join("kubectl.1.33")];
    let tools = std::env::var("SKIFF_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/skiff/tools")
        });
    found.push(tools.join("kubectl.1.35"));
    for path in &found {
        assert!(
            path.is_file(),
            "this test needs {} (./scripts/install-deps installs kubectl 1.35; 1.33 sits beside \
             the `kubectl` dispatcher on PATH)",
            path.display()
        );
    }
    found
}

pub struct Kubectl<'a> {
    /// The kubectl binary.
    pub binary: &'a Path,
    /// The kubeconfig it uses.
    pub kubeconfig: &'a Path,
    /// The namespace it works in.
    pub namespace: String,
}

impl Kubectl<'_> {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.binary);
        command
            .env("KUBECONFIG", self.kubeconfig)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply_yaml(&self, yaml: &str, extra: &[&str]) -> Output {
        let mut child = self
            .command(&[&["apply", "-f", "-"], extra].concat())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn jsonpath(&self, resource: &str, path: &str) -> String {
        self.ok(&["get", resource, "-o", &format!("jsonpath={path}")])
    }
}
