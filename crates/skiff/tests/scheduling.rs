//! End to end: a real `skiff server` (its scheduler inside), `skiff sim-nodes` processes and
//! both kubectl versions. A pod too big for every node explains itself in `kubectl describe`,
//! and runs once a simulated node that fits joins. Needs kubectl, so it is ignored unless
//! `--include-ignored` (as `./scripts/test` runs it); it fails when a binary is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::kubectl::{Kubectl, kubectl_binaries};
use support::start_server;

/// A `skiff sim-nodes` process, stopped by SIGTERM (so that it removes its nodes) when dropped.
struct SimNodes(Child);

impl SimNodes {
    fn start(kubeconfig: &Path, prefix: &str, count: u32, cpu: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("sim-nodes")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--prefix",
                prefix,
                "--count",
                &count.to_string(),
                "--cpu",
                cpu,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        SimNodes(child)
    }

    /// Stops it and waits for it to end.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Polls `check` every 200 ms for up to 60 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

const BIG_POD: &str = "
apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  containers:
  - name: web
    image: busybox:1.36
    resources: {requests: {cpu: '4'}}
";

#[test]
#[ignore = "needs kubectl 1.33 and 1.35"]
fn kubectl_describe_should_say_why_a_pod_is_pending_until_a_node_fits() {
    let binaries = kubectl_binaries();
    let server = start_server();
    let kubectl = |binary| Kubectl {
        binary,
        kubeconfig: &server.kubeconfig,
        namespace: "default".into(),
    };
    let first = kubectl(&binaries[0]);
    let small = SimNodes::start(&server.kubeconfig, "small-", 2, "2");
    eventually("two Ready nodes", || {
        first
            .ok(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 2
    });
    assert!(first.apply_yaml(BIG_POD, &[]).status.success());
    let sentence = "Needs 4 CPUs; the largest free share on any node is 2 CPUs (node small-0).";
    for binary in &binaries {
        let k = kubectl(binary);
        eventually("kubectl describe to explain the pending pod", || {
            let described = k.ok(&["describe", "pod", "big"]);
            described.contains("FailedScheduling")
                && described.contains("0/2 nodes are available: 2 Insufficient cpu.")
                && described.contains(sentence)
        });
        let message = k.jsonpath(
            "pod/big",
            "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        );
        assert!(
            message.starts_with("0/2 nodes are available: 2 Insufficient cpu."),
            "{message}"
        );
        assert_eq!(k.jsonpath("pod/big", "{.status.phase}"), "Pending");
    }
    let big = SimNodes::start(&server.kubeconfig, "big-", 1, "8");
    eventually("the pod running on the new node", || {
        first.jsonpath("pod/big", "{.spec.nodeName} {.status.phase}") == "big-0 Running"
    });
    for binary in &binaries {
        let described = kubectl(binary).ok(&["describe", "pod", "big"]);
        assert!(
            described.contains("Successfully assigned default/big to big-0"),
            "{described}"
        );
    }
    // `kubectl delete` waits until the simulated node has let the pod go.
    first.ok(&["delete", "pod", "big", "--timeout=60s"]);
    small.stop();
    big.stop();
    eventually("the simulated nodes removed", || {
        first
            .ok(&["get", "nodes", "--no-headers"])
            .trim()
            .is_empty()
    });
}
