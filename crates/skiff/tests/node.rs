//! End to end on a real node: `skiff server` with its node agent, its own containerd (Debian's
//! containerd, runc and CNI plugins) and busybox images packed from Debian's busybox-static by
//! `scripts/test-registry` (side-loaded, and pulled from a local registry through a mirror: no
//! internet), driven by kubectl 1.33 and 1.35. A web server pod answers on its pod IP and its
//! probes pass; logs (tail, previous, follow) come through the API; exec, cp, attach and
//! port-forward work over kubectl's WebSocket protocols and its SPDY fallback; a crashing
//! container is restarted with back-off; the server is killed with SIGKILL and the pod keeps
//! serving, then a new server finds it as it was; deleted pods go with their sandboxes; the
//! egress guard is in place before any pod; a joined agent's endpoint answers administrators
//! only; and everything the node made is removed at the end.
//! Needs root, containerd and kubectl, so it is ignored unless asked for
//! (`./scripts/test` asks); it fails, naming what is missing, rather than skip.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

#[path = "node/external.rs"]
mod external;
#[path = "node/lifecycle.rs"]
mod lifecycle;
#[path = "node/services.rs"]
mod services;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;
use support::kubectl::{Kubectl, kubectl_binaries};

/// Fails, naming the tool, unless every program the node needs is installed.
fn require_node_tools() {
    for tool in [
        "containerd",
        "runc",
        "ctr",
        "nft",
        "ip",
        "/usr/lib/cni/bridge",
        "/bin/busybox",
        "docker-registry",
        "skopeo",
        // util-linux's `script`: a terminal for `kubectl exec -it`.
        "script",
    ] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(
            found,
            "this test needs {tool} (./scripts/install-deps installs it)"
        );
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .unwrap();
    assert_eq!(uid, "0", "this test runs containers: it needs root");
}

fn skiff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
}

/// The local registry of `scripts/test-registry` (busybox-static packed as images, pushed to
/// Debian's docker-registry on loopback), stopped when dropped.
struct Registry {
    dir: PathBuf,
    address: String,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-registry");
        let out = Command::new(script)
            .arg("start")
            .arg(dir)
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/test-registry failed");
        Registry {
            dir: dir.to_path_buf(),
            address: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }

    /// The busybox image's archive (`docker.io/library/busybox:stable`), for side-loading.
    fn archive(&self) -> PathBuf {
        self.dir.join("shell.tar")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-registry");
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
    }
}

/// A `skiff server` with its node agent, over a data directory that outlives it.
struct Node {
    child: Option<Child>,
    data: PathBuf,
    port: u16,
    name: String,
    registry: String,
    kubeconfig: PathBuf,
}

/// Starts `skiff server` over `data`; returns it and its kubeconfig.
fn spawn_server(data: &Path, port: u16, name: &str, registry: &str) -> (Child, PathBuf) {
    // CIDRs of its own, so that a skiff already running on this machine is no bother.
    let mut child = skiff()
        .args([
            "server",
            "--https-port",
            &port.to_string(),
            "--agent-port",
            "0",
        ])
        .args([
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.245.0.0/16",
        ])
        .arg("--registry-mirror")
        .arg(format!("docker.io=http://{registry}"))
        .arg("--registry-mirrors-only")
        // Volume files follow their sources within seconds (a minute by default).
        .args(["--sync-frequency", "2"])
        // The cluster DNS on any free port, answering only the cluster's names.
        .args(["--dns-port", "0", "--dns-upstream", "none"])
        .args(["--node-name", name, "--data-dir"])
        .arg(data)
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let kubeconfig = stdout
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("kubeconfig: ").map(PathBuf::from))
        .expect("the server prints its kubeconfig");
    std::thread::spawn(move || stdout.for_each(drop));
    (child, kubeconfig)
}

impl Node {
    fn start(data: &Path, port: u16, name: &str, registry: &str) -> Node {
        let (child, kubeconfig) = spawn_server(data, port, name, registry);
        Node {
            child: Some(child),
            data: data.to_path_buf(),
            port,
            name: name.to_string(),
            registry: registry.to_string(),
            kubeconfig,
        }
    }

    /// SIGKILL, as a crash: the agent gets no chance to do anything.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, as a clean stop, and the wait for it to finish.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// A new server over the same data directory.
    fn restart(&mut self) {
        self.crash();
        let (child, kubeconfig) = spawn_server(&self.data, self.port, &self.name, &self.registry);
        self.child = Some(child);
        self.kubeconfig = kubeconfig;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        // Everything the node made on this machine goes, the test passed or not.
        let _ = skiff()
            .arg("reset")
            .arg("--data-dir")
            .arg(&self.data)
            .status();
    }
}

/// A `skiff agent` joining the cluster with its join token, as a second node on this machine
/// (its own name, data directory and agent port), on a containerd it does not run itself
/// (`--container-runtime-endpoint`).
struct Joined {
    child: Option<Child>,
    data: PathBuf,
    name: String,
    runtime: PathBuf,
}

impl Joined {
    fn start(data: &Path, server_port: u16, token: &str, name: &str, runtime: &Path) -> Joined {
        let joining = [
            "--server".to_string(),
            format!("https://127.0.0.1:{server_port}"),
            "--token".into(),
            token.into(),
        ];
        Joined {
            child: Some(Self::spawn(data, &joining, name, runtime)),
            data: data.to_path_buf(),
            name: name.into(),
            runtime: runtime.to_path_buf(),
        }
    }

    fn spawn(data: &Path, joining: &[String], name: &str, runtime: &Path) -> Child {
        skiff()
            .arg("agent")
            .args(joining)
            .args(["--node-name", name, "--agent-port", "0"])
            .args([
                "--cluster-cidr",
                "10.244.0.0/16",
                "--service-cidr",
                "10.245.0.0/16",
            ])
            .arg("--container-runtime-endpoint")
            .arg(format!("unix://{}", runtime.display()))
            .arg("--data-dir")
            .arg(data)
            .env("SKIFF_LOG", "warn")
            .spawn()
            .unwrap()
    }

    /// SIGKILL: the agent gets no chance to do anything.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The agent again, without the token: it has credentials of its own now.
    fn restart(&mut self) {
        self.crash();
        self.child = Some(Self::spawn(&self.data, &[], &self.name, &self.runtime));
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        let _ = skiff()
            .arg("reset")
            .arg("--data-dir")
            .arg(&self.data)
            .status();
    }
}

/// What pods leave on the machine when they are not cleaned up: containers (sandboxes
/// included) in the node's containerd, network namespaces, pod IPs held by host-local IPAM,
/// and pod cgroups under the node's slice.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    containers: usize,
    network_namespaces: usize,
    addresses: usize,
    cgroups: usize,
}

impl Census {
    fn take(data: &Path, node: &str) -> Census {
        let count = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| keep(&e.file_name().to_string_lossy()))
                        .count()
                })
                .unwrap_or(0)
        };
        let listed = Command::new("ctr")
            .arg("--address")
            .arg(data.join("agent/containerd/containerd.sock"))
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .output()
            .unwrap();
        let ipam = data.join("agent/cni/ipam");
        let addresses = std::fs::read_dir(&ipam)
            .map(|networks| {
                networks
                    .flatten()
                    .map(|n| count(&n.path(), &|f| f.parse::<std::net::IpAddr>().is_ok()))
                    .sum()
            })
            .unwrap_or(0);
        Census {
            containers: String::from_utf8_lossy(&listed.stdout).lines().count(),
            network_namespaces: count(Path::new("/var/run/netns"), &|_| true),
            addresses,
            // Every hierarchy (cgroup v1 controllers, v2's unified one, or v2 alone).
            cgroups: std::iter::once(PathBuf::from("/sys/fs/cgroup"))
                .chain(
                    std::fs::read_dir("/sys/fs/cgroup")
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                )
                .map(|root| {
                    count(&root.join(format!("skiff-{}", suffix(node))), &|f| {
                        f.starts_with("pod")
                    })
                })
                .sum(),
        }
    }
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

/// The client certificate and key (PEM) of the kubeconfig at `path`, given inline (`-data`) or
/// as files.
fn identity(path: &Path) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine;
    let text = std::fs::read_to_string(path).unwrap();
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let value = l.trim().strip_prefix(name)?.strip_prefix(':')?.trim();
            Some(value.trim_matches('"').to_string())
        })
    };
    let read = |name: &str| match field(&format!("{name}-data")) {
        Some(inline) => base64::engine::general_purpose::STANDARD
            .decode(inline)
            .unwrap(),
        None => std::fs::read(field(name).unwrap()).unwrap(),
    };
    (read("client-certificate"), read("client-key"))
}

/// What a node agent's endpoint on 127.0.0.1:`port` answers to GET /healthz from a caller
/// presenting `identity` (certificate and key, PEM), or why there was no answer. (The agent's
/// certificate is its own, self-signed: not verified, as the API server does not.)
fn agent_answer(port: u16, identity: Option<&(Vec<u8>, Vec<u8>)>) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = skiff_apimachinery::unverified_tls::AnyServer::new(provider.clone());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier));
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // The agent may close without TLS's close_notify once it answered.
        Err(_) if !answer.is_empty() => {}
        Err(error) => return Err(error.to_string()),
    }
    Ok(String::from_utf8_lossy(&answer).to_string())
}

/// GET / on `ip:port`, the body.
fn http_get(ip: &str, port: u16) -> std::io::Result<String> {
    let address: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: httpd
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["/bin/sh", "-c", "test -d /www"]}
      periodSeconds: 1
"#;

const TALK: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: talk
spec:
  containers:
  - name: c
    image: busybox:1.36
    imagePullPolicy: Always
    command: ["/bin/sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 1; done"]
"#;

const CRASH: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: crash
spec:
  containers:
  - name: c
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "echo about to fail; exit 3"]
"#;

/// The line of `/proc/mounts` inside `pod` for `path`.
fn k8s_mount(k: &Kubectl, pod: &str, path: &str) -> String {
    k.ok(&[
        "exec",
        pod,
        "--",
        "grep",
        &format!(" {path} "),
        "/proc/mounts",
    ])
}

/// A ConfigMap and a pod that reads it as files.
const SETTINGS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  containers:
  - name: c
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{name: settings, mountPath: /etc/settings}, {name: scratch, mountPath: /scratch}]
  volumes:
  - {name: settings, configMap: {name: settings}}
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
"#;

/// Containers that end: one killed by the kernel for its memory limit, one that leaves a
/// termination message, one whose log stands in for it.
const DONE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"]
    resources: {limits: {memory: 20Mi}}
  - name: message
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "echo 3 items left > /dev/termination-log; exit 4"]
  - name: fallback
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["/bin/sh", "-c", "echo cannot reach the database; exit 5"]
"#;

const TICK: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          automountServiceAccountToken: false
          containers:
          - {name: c, image: "busybox:stable", imagePullPolicy: IfNotPresent, command: [/bin/true]}
"#;

/// A workload of `kind` whose pods loop until SIGTERM, with `spec` lines of its own.
fn looping(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}}}
spec:
{spec}  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 2
      containers:
      - {{name: c, image: \"busybox:stable\", imagePullPolicy: IfNotPresent, command: [/bin/sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]}}
"
    )
}

/// A StatefulSet comes up in order with stable names and hostnames, updates and scales down
/// from its highest ordinal; a DaemonSet runs one pod on the node and rolls an update out:
/// each followed by `kubectl rollout status` (1.33 and 1.35 read their status fields).
fn stateful_and_daemon_sets_should_roll_out(k33: &Kubectl, k35: &Kubectl) {
    let db = looping("StatefulSet", "db", "  replicas: 2\n  serviceName: db\n");
    let agent = looping("DaemonSet", "agent", "");
    for yaml in [db, agent] {
        let out = k33.apply_yaml(&yaml, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    k33.ok(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    assert_eq!(k33.ok(&["exec", "db-1", "--", "hostname"]), "db-1\n");
    let created = |pod: &str| k33.jsonpath(&format!("pod/{pod}"), "{.metadata.creationTimestamp}");
    assert!(created("db-0") <= created("db-1"), "db-0 first");
    k35.ok(&["rollout", "status", "daemonset/agent", "--timeout=90s"]);
    assert_eq!(
        k33.jsonpath(
            "daemonset/agent",
            "{.status.numberReady}/{.status.desiredNumberScheduled}"
        ),
        "1/1"
    );
    for (kind, name) in [("statefulset", "db"), ("daemonset", "agent")] {
        k33.ok(&["set", "image", &format!("{kind}/{name}"), "c=busybox:1.36"]);
        k35.ok(&[
            "rollout",
            "status",
            &format!("{kind}/{name}"),
            "--timeout=120s",
        ]);
        let history = k33.ok(&["rollout", "history", &format!("{kind}/{name}")]);
        assert!(
            history.contains("1 ") && history.contains("2 "),
            "{history}"
        );
    }
    assert_eq!(
        k33.jsonpath("pod/db-0", "{.spec.containers[0].image}"),
        "busybox:1.36"
    );
    k33.ok(&["scale", "statefulset/db", "--replicas=1"]);
    eventually("db-1 gone, db-0 kept", Duration::from_secs(60), || {
        k33.ok(&["get", "pods", "-l", "app=db", "-o", "name"]) == "pod/db-0\n"
    });
    k33.ok(&["delete", "statefulset", "db"]);
    k33.ok(&["delete", "daemonset", "agent"]);
    eventually("their pods gone", Duration::from_secs(60), || {
        k33.ok(&["get", "pods", "-l", "app in (db, agent)", "-o", "name"])
            .is_empty()
    });
}

#[test]
#[ignore = "needs root, containerd and kubectl: ./scripts/test runs it"]
fn pods_should_run_on_the_servers_own_node_and_outlive_the_server() {
    require_node_tools();
    let binaries = kubectl_binaries();
    // The CNI portmap plugin's chains, which the reset must remove if nothing else had them.
    let host_port_chains_before = ruleset().contains("CNI-HOSTPORT");
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"));
    let name = format!("e2e-{}", std::process::id());
    let mut node = Node::start(
        &dir.path().join("data"),
        free_port(),
        &name,
        &registry.address,
    );
    // The same file across restarts (the data directory stays).
    let kubeconfig = node.kubeconfig.clone();
    let k = |binary| Kubectl {
        binary,
        kubeconfig: &kubeconfig,
        namespace: "default".into(),
    };
    let k33 = k(&binaries[0]);
    eventually("the node Ready", Duration::from_secs(60), || {
        k33.run(&["get", "node", &name]).status.success()
            && k33.jsonpath(
                &format!("node/{name}"),
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True"
    });
    // The egress guard is in place: the service CIDR goes to the pod bridge, and an nftables
    // table drops cluster traffic towards anything else.
    let route = Command::new("ip")
        .args(["route", "get", "10.245.0.99"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&route.stdout).contains("dev skiff"),
        "{}",
        String::from_utf8_lossy(&route.stdout)
    );
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tables.stdout).contains("skiff-guard-"));
    let status = skiff()
        .args(["images", "import", "--data-dir"])
        .arg(&node.data)
        .arg(registry.archive())
        .status()
        .unwrap();
    assert!(status.success());

    for yaml in [WEB, TALK, CRASH, DONE, SETTINGS] {
        let out = k33.apply_yaml(yaml, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eventually("web and talk running", Duration::from_secs(60), || {
        k33.jsonpath("pod/web", "{.status.phase}") == "Running"
            && k33.jsonpath("pod/talk", "{.status.phase}") == "Running"
    });
    // Its readiness (HTTP) and liveness (exec) probes pass.
    eventually("web ready", Duration::from_secs(20), || {
        k33.jsonpath("pod/web", "{.status.containerStatuses[0].ready}") == "true"
    });
    // web's image was side-loaded (IfNotPresent: no registry touched); talk's was pulled from
    // the local registry through the node's docker.io mirror (Always).
    let pulled = |pod: &str| {
        k33.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=Pulled"),
            "-o",
            "jsonpath={.items[*].message}",
        ])
    };
    assert_eq!(
        pulled("web"),
        "Container image \"busybox:stable\" already present on machine"
    );
    eventually("talk's pull reported", Duration::from_secs(20), || {
        pulled("talk").starts_with("Successfully pulled image \"busybox:1.36\"")
    });
    let ip = k33.jsonpath("pod/web", "{.status.podIP}");
    assert!(ip.starts_with("10.244."), "{ip}");
    let page = http_get(&ip, 8080).unwrap();
    assert!(page.contains("hello from skiff"), "{page}");

    // Logs through the API, with both kubectl versions.
    for binary in &binaries {
        let kb = k(binary);
        eventually("talk's log", Duration::from_secs(20), || {
            kb.ok(&["logs", "talk", "--tail=2"]).lines().count() == 2
        });
        let stamped = kb.ok(&["logs", "talk", "--tail=1", "--timestamps"]);
        assert!(stamped.contains("Z line "), "{stamped}");
        let mut follow = kb
            .command(&["logs", "-f", "talk", "--tail=1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let second = lines.next().unwrap().unwrap();
        assert!(
            first.starts_with("line ") && second.starts_with("line "),
            "{first} / {second}"
        );
        follow.kill().unwrap();
        let _ = follow.wait();
    }

    // The node's own endpoint through the API (nodes/proxy): its health and its logs.
    let proxied = |path: &str| {
        k33.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{name}/proxy/{path}"),
        ])
    };
    assert_eq!(proxied("healthz"), "ok");
    assert!(
        proxied("containerLogs/default/talk/c?tailLines=1").starts_with("line "),
        "the agent's containerLogs"
    );

    // Exec, cp, attach and port-forward, with both versions, over WebSocket and over SPDY.
    let copied = dir.path().join("copied");
    // Well over SPDY's 64 KiB window, which nothing may wait for.
    std::fs::write(&copied, "a file for the pod\n".repeat(60_000)).unwrap();
    for binary in &binaries {
        let kb = k(binary);
        for websockets in ["true", "false"] {
            streaming_should_work(&kb, websockets, &ip, &copied);
        }
    }

    // A changed ConfigMap reaches the files of the running pod that mounts it.
    eventually("reader running", Duration::from_secs(30), || {
        k33.jsonpath("pod/reader", "{.status.phase}") == "Running"
    });
    let colour = || k33.ok(&["exec", "reader", "--", "cat", "/etc/settings/colour"]);
    assert_eq!(colour(), "blue");
    k33.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"colour":"green"}}"#,
    ]);
    eventually("the new colour in the pod", Duration::from_secs(20), || {
        colour() == "green"
    });

    // Its memory-backed emptyDir is a tmpfs of its size limit.
    let scratch = k8s_mount(&k33, "reader", "/scratch");
    assert!(
        scratch.contains("tmpfs") && scratch.contains("size=8192k"),
        "{scratch}"
    );

    // The pod's service-account token, its CA and its namespace, read with exec: the token
    // authenticates as the pod's account.
    let account = "/var/run/secrets/kubernetes.io/serviceaccount";
    let read = |file: &str| k33.ok(&["exec", "web", "--", "cat", &format!("{account}/{file}")]);
    assert_eq!(read("namespace"), "default");
    // In memory and read-only, as kubelet mounts it: the token never touches the node's disk.
    let token_mount = k8s_mount(&k33, "web", account);
    assert!(
        token_mount.contains("tmpfs") && token_mount.contains(" ro"),
        "{token_mount}"
    );
    let ca = node.data.join("tls/ca.crt");
    assert_eq!(read("ca.crt"), std::fs::read_to_string(&ca).unwrap());
    let as_pod = dir.path().join("pod.kubeconfig");
    std::fs::write(
        &as_pod,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority: '{}'}}}}]\nusers: [{{name: pod, user: {{token: '{}'}}}}]\ncontexts: [{{name: pod, context: {{cluster: c, user: pod}}}}]\ncurrent-context: pod\n",
            node.port,
            ca.display(),
            read("token")
        ),
    )
    .unwrap();
    let whoami = Kubectl {
        binary: &binaries[0],
        kubeconfig: &as_pod,
        namespace: "default".into(),
    }
    .ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:serviceaccount:default:default");

    // The crashing container: restarted, then held back, with its earlier log.
    eventually("CrashLoopBackOff", Duration::from_secs(60), || {
        k33.ok(&["get", "pod", "crash"])
            .contains("CrashLoopBackOff")
    });
    let previous = k33.ok(&["logs", "crash", "--previous"]);
    assert_eq!(previous, "about to fail\n");
    let described = k33.ok(&["describe", "pod", "crash"]);
    assert!(
        described.contains("Back-off restarting failed container c"),
        "{described}"
    );
    assert!(described.contains("Exit Code:    3"), "{described}");

    // How containers ended, in their statuses: OOMKilled, their own message, their log's end.
    eventually("done failed", Duration::from_secs(30), || {
        k33.jsonpath("pod/done", "{.status.phase}") == "Failed"
    });
    let ended = |name: &str, field: &str| {
        k33.jsonpath(
            "pod/done",
            &format!(
                "{{.status.containerStatuses[?(@.name==\"{name}\")].state.terminated.{field}}}"
            ),
        )
    };
    assert_eq!(ended("hog", "reason"), "OOMKilled");
    assert_eq!(ended("hog", "exitCode"), "137");
    assert_eq!(ended("message", "message"), "3 items left\n");
    assert_eq!(ended("message", "reason"), "Error");
    assert_eq!(ended("fallback", "message"), "cannot reach the database\n");

    // A pod's life as kubelet runs it (init, readiness, liveness, Secret updates), and the ways
    // pods go wrong, each explained.
    lifecycle::a_pod_should_live_as_kubelet_runs_it(&k33);
    lifecycle::troubles_should_explain_themselves(&k33, &name);
    lifecycle::security_and_resources_should_hold(&k33);

    // A second node joins with the join token alone: its client certificate is asked for,
    // approved and signed, and the API reaches its pods (logs).
    let token = std::fs::read_to_string(node.data.join("join-token")).unwrap();
    let second = format!("{name}-b");
    // (Declared first, dropped last: the agent's reset removes its pods through it.)
    let runtime_dir = dir.path().join("external-containerd");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    let external = external::ExternalContainerd::start(
        &runtime_dir,
        &dir.path().join("second"),
        &registry.address,
    );
    let mut joined = Joined::start(
        &dir.path().join("second"),
        node.port,
        token.trim(),
        &second,
        &external.socket(),
    );
    eventually("the second node Ready", Duration::from_secs(90), || {
        k33.run(&["get", "node", &second]).status.success()
            && k33.jsonpath(
                &format!("node/{second}"),
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            ) == "True"
    });
    let csr = k33.ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.username} {.status.conditions[0].type}{\"\\n\"}{end}",
    ]);
    assert!(csr.contains("system:bootstrap:join Approved"), "{csr}");
    assert!(joined.data.join("node.kubeconfig").exists());
    let pinned = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: there}}\nspec:\n  nodeName: {second}\n  containers:\n  - name: c\n    image: busybox:1.36\n    command: [/bin/sh, -c, 'echo hello from the second node; exec sleep 3600']\n"
    );
    let out = k33.apply_yaml(&pinned, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        "the pod on the second node logging",
        Duration::from_secs(60),
        || k33.run(&["logs", "there"]).stdout == b"hello from the second node\n",
    );
    // The second agent's endpoint answers the cluster's administrators (and the API server),
    // not a caller without a certificate, nor one holding a node's certificate.
    let agent_port: u16 = k33
        .jsonpath(
            &format!("node/{second}"),
            "{.status.daemonEndpoints.kubeletEndpoint.Port}",
        )
        .parse()
        .unwrap();
    let admin = identity(&kubeconfig);
    assert!(
        agent_answer(agent_port, Some(&admin))
            .unwrap()
            .starts_with("HTTP/1.1 200"),
        "an administrator is answered"
    );
    for (who, caller) in [
        ("no certificate", None),
        (
            "a node's certificate",
            Some(identity(&joined.data.join("node.kubeconfig"))),
        ),
    ] {
        let answer = agent_answer(agent_port, caller.as_ref());
        assert!(
            !answer.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
            "{who}: {answer:?}"
        );
    }
    // The agent is killed: its pod runs on; a new agent (no token now) finds it as it was.
    joined.crash();
    let second_socket = external.socket();
    let tasks = Command::new("ctr")
        .arg("--address")
        .arg(&second_socket)
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .unwrap();
    let tasks = String::from_utf8_lossy(&tasks.stdout);
    assert_eq!(tasks.matches("RUNNING").count(), 2, "pause and c: {tasks}");
    joined.restart();
    eventually(
        "logs through the new agent",
        Duration::from_secs(60),
        || k33.run(&["logs", "there"]).stdout == b"hello from the second node\n",
    );
    assert_eq!(
        k33.jsonpath("pod/there", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    k33.ok(&["delete", "pod", "there", "--grace-period=1"]);
    // The control plane goes away: the joined agent still restarts a crashing container by
    // its restart policy (a new instance appears in its runtime), and the pod's status
    // catches up once the API is back.
    let flaky = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: flaky}}\nspec:\n  nodeName: {second}\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: busybox:1.36\n    command: [/bin/sh, -c, 'sleep 1; exit 1']\n"
    );
    let out = k33.apply_yaml(&flaky, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restarts = || {
        k33.jsonpath("pod/flaky", "{.status.containerStatuses[0].restartCount}")
            .parse::<u32>()
            .unwrap_or(0)
    };
    eventually("flaky restarted once", Duration::from_secs(60), || {
        restarts() >= 1
    });
    let instances = || -> std::collections::BTreeSet<String> {
        let listed = Command::new("ctr")
            .arg("--address")
            .arg(&second_socket)
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let before = instances();
    node.crash();
    eventually(
        "flaky restarted with the API down",
        Duration::from_secs(45),
        || !instances().is_subset(&before),
    );
    // The agent restarts while the API is still down: it waits for the API, touching nothing,
    // and once the API is back it registers and the status catches up.
    joined.restart();
    std::thread::sleep(Duration::from_secs(2));
    node.restart();
    eventually("flaky's restarts reported", Duration::from_secs(60), || {
        restarts() >= 2
    });
    k33.ok(&["delete", "pod", "flaky", "--grace-period=1"]);
    // The machine leaves the cluster: its agent stops and its Node goes.
    drop(joined);
    drop(external);
    k33.ok(&["delete", "node", &second]);

    // The server dies: the workload does not notice.
    node.crash();
    let page = http_get(&ip, 8080).unwrap();
    assert!(page.contains("hello from skiff"));
    node.restart();
    eventually(
        "web Running again, as it was",
        Duration::from_secs(60),
        || k33.jsonpath("pod/web", "{.status.phase}") == "Running",
    );
    assert_eq!(k33.jsonpath("pod/web", "{.status.podIP}"), ip);
    assert_eq!(
        k33.jsonpath("pod/web", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert!(http_get(&ip, 8080).unwrap().contains("hello from skiff"));

    // containerd dies: the pods run on (their shims are not its children), the agent starts it
    // again, and new pods run.
    let pid_file = node.data.join("agent/containerd/containerd.pid");
    let containerd = std::fs::read_to_string(&pid_file).unwrap();
    let containerd = containerd.trim().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &containerd])
            .status()
            .unwrap()
            .success()
    );
    assert!(http_get(&ip, 8080).unwrap().contains("hello from skiff"));
    eventually("containerd started again", Duration::from_secs(30), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| {
            pid.trim() != containerd && Path::new(&format!("/proc/{}", pid.trim())).exists()
        })
    });
    k33.ok(&[
        "run",
        "after",
        "--image=busybox:stable",
        "--image-pull-policy=IfNotPresent",
        "--restart=Never",
        "--command",
        "--",
        "/bin/sh",
        "-c",
        "echo after containerd",
    ]);
    eventually(
        "a pod run by the new containerd",
        Duration::from_secs(60),
        || k33.jsonpath("pod/after", "{.status.phase}") == "Succeeded",
    );
    assert_eq!(k33.ok(&["logs", "after"]), "after containerd\n");
    k33.ok(&["delete", "pod", "after"]);
    assert!(http_get(&ip, 8080).unwrap().contains("hello from skiff"));

    // Deleted pods go, with their sandboxes.
    // (Their shells, PID 1, ignore SIGTERM: a short grace period keeps the test short.)
    k33.ok(&[
        "delete",
        "pod",
        "web",
        "talk",
        "crash",
        "done",
        "reader",
        "--grace-period=2",
    ]);
    let socket = node.data.join("agent/containerd/containerd.sock");
    eventually("every sandbox removed", Duration::from_secs(60), || {
        let listed = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "containers", "ls", "-q"])
            .output()
            .unwrap();
        listed.stdout.is_empty()
    });
    assert!(
        http_get(&ip, 8080).is_err(),
        "the web pod's address is gone"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let pods_dir = node.data.join("agent/pods").display().to_string();
    assert!(!mounts.contains(&pods_dir), "a pod's tmpfs left mounted");

    // A Deployment rolls out, updates, and rolls back, with kubectl's own commands.
    let serve = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
    k33.ok(&[
        "create",
        "deployment",
        "site",
        "--image=busybox:stable",
        "--replicas=2",
        "--",
        "/bin/sh",
        "-c",
        serve,
    ]);
    k33.ok(&["rollout", "status", "deployment/site", "--timeout=60s"]);
    k33.ok(&["set", "image", "deployment/site", "busybox=busybox:1.36"]);
    k33.ok(&["rollout", "status", "deployment/site", "--timeout=60s"]);
    let history = k33.ok(&["rollout", "history", "deployment/site"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    k33.ok(&["rollout", "undo", "deployment/site"]);
    k33.ok(&["rollout", "status", "deployment/site", "--timeout=60s"]);
    let sets = k33.ok(&["get", "rs", "-l", "app=site", "-o", "jsonpath={range .items[*]}{.spec.replicas} {.spec.template.spec.containers[0].image}{\"\\n\"}{end}"]);
    let mut sets: Vec<&str> = sets.lines().collect();
    sets.sort_unstable();
    assert_eq!(
        sets,
        ["0 busybox:1.36", "2 busybox:stable"],
        "the first ReplicaSet again"
    );
    // (The updated pods are on their way out: rollout status does not wait for that.)
    eventually(
        "only the first template's pods",
        Duration::from_secs(30),
        || {
            let images = k33.ok(&[
                "get",
                "pods",
                "-l",
                "app=site",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ]);
            images == "busybox:stable busybox:stable"
        },
    );
    k33.ok(&["delete", "deployment", "site"]);
    eventually(
        "the Deployment's pods gone",
        Duration::from_secs(30),
        || {
            k33.ok(&["get", "pods", "-l", "app=site", "-o", "name"])
                .is_empty()
        },
    );

    // A Job runs to completion; its pod's log is there after.
    k33.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox:stable",
        "--",
        "/bin/sh",
        "-c",
        "echo the job ran",
    ]);
    k33.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=60s",
    ]);
    // (The log is read from the node; under load it may trail the Job's Complete by a moment.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while k33.ok(&["logs", "job/once"]) != "the job ran\n" {
        if Instant::now() > deadline {
            let pods = k33.ok(&["get", "pods", "-l", "job-name=once", "-o", "wide"]);
            let described = k33.ok(&["describe", "pods", "-l", "job-name=once"]);
            panic!("the Job's log stayed empty:\n{pods}\n{described}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let row = k33.ok(&["get", "job", "once", "--no-headers"]);
    assert!(row.contains("Complete") && row.contains("1/1"), "{row}");
    k33.ok(&["delete", "job", "once"]);
    eventually("the Job's pod gone", Duration::from_secs(30), || {
        k33.ok(&["get", "pods", "-l", "job-name=once", "-o", "name"])
            .is_empty()
    });

    // A CronJob runs every minute, keeping one finished Job: checked once the section below
    // has given it time. (Created after the Job above: twice a CI run read an empty
    // `kubectl logs job/once` while the CronJob ran alongside; see the note of 2026-12-05.)
    let out = k33.apply_yaml(TICK, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    stateful_and_daemon_sets_should_roll_out(&k33, &k(&binaries[1]));
    services::services_and_dns_should_work(&k33, &binaries[0], &mut node);

    // The CronJob's history: a Job seen completed, and the one before it deleted.
    let cron_events = || {
        k33.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=CronJob,involvedObject.name=tick",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ])
    };
    eventually(
        "two runs of the CronJob, the first pruned",
        Duration::from_secs(180),
        || {
            let events = cron_events();
            events.contains("SawCompletedJob") && events.contains("SuccessfulDelete")
        },
    );
    let jobs = k33.ok(&[
        "get",
        "jobs",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences[0].name}",
    ]);
    assert!(
        jobs == "tick" || jobs == "tick tick",
        "one finished Job kept (and perhaps one running): {jobs}"
    );
    assert!(
        !k33.jsonpath("cronjob/tick", "{.status.lastSuccessfulTime}")
            .is_empty()
    );
    k33.ok(&["delete", "cronjob", "tick"]);
    eventually("the CronJob's pods gone", Duration::from_secs(60), || {
        k33.ok(&["get", "pods", "-o", "name"]).is_empty()
    });

    // A hundred pods created and deleted leave nothing behind.
    let census = || Census::take(&node.data, &name);
    let before = census();
    for round in 0..10 {
        let pods: String = (0..10)
            .map(|i| {
                format!(
                    "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: cycle-{round}-{i}, labels: {{round: \"{round}\"}}}}\nspec:\n  automountServiceAccountToken: false\n  containers: [{{name: c, image: busybox:stable, imagePullPolicy: IfNotPresent, command: [/bin/sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]}}]\n"
                )
            })
            .collect();
        let out = k33.apply_yaml(&pods, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let waited = k33.run(&[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            &format!("round={round}"),
            "--timeout=60s",
        ]);
        assert!(
            waited.status.success(),
            "round {round}: {}",
            k33.ok(&["describe", "pod", &format!("cycle-{round}-0")])
        );
        if round == 0 {
            // The census sees what ten running pods hold.
            let during = census();
            assert!(
                during.containers >= before.containers + 20
                    && during.network_namespaces >= before.network_namespaces + 10
                    && during.addresses >= before.addresses + 10
                    && during.cgroups >= before.cgroups + 10,
                "{before:?} then {during:?}"
            );
        }
        k33.ok(&["delete", "pod", "-l", &format!("round={round}")]);
    }
    eventually("nothing left of 100 pods", Duration::from_secs(30), || {
        census() == before
    });

    // A clean stop removes the service proxy's rules (pods keep running); the reset removes
    // what the node made on this machine.
    node.stop();
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout)
            .contains(&format!("skiff-proxy-{}", suffix(&name))),
        "the proxy's table after a clean stop"
    );
    // A crash of the whole node (the server and its containerd killed, as when a machine's
    // processes all die) leaves a running pod that only its containerd can take apart: the
    // reset starts that containerd again for it.
    node.restart();
    let out = k33.apply_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: orphan}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: c, image: busybox:stable, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}]\n",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the orphan pod running", Duration::from_secs(60), || {
        k33.jsonpath("pod/orphan", "{.status.phase}") == "Running"
    });
    node.crash();
    let containerd =
        std::fs::read_to_string(node.data.join("agent/containerd/containerd.pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", containerd.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(Census::take(&node.data, &name).network_namespaces > before.network_namespaces);
    drop(node);
    let after = Census::take(&dir.path().join("data"), &name);
    assert_eq!(
        (after.network_namespaces, after.addresses, after.cgroups),
        (before.network_namespaces, before.addresses, before.cgroups),
        "what a reset after a crash left: {after:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data = dir.path().join("data");
    assert!(
        !mounts.contains(&*data.to_string_lossy()),
        "mounts left below {}",
        data.display()
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let bridge = format!("skiff{}", &suffix(&name));
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&bridge));
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains(&format!("skiff-guard-{}", suffix(&name))));
    assert!(!tables.contains(&format!("skiff-proxy-{}", suffix(&name))));
    if !host_port_chains_before {
        let rules = ruleset();
        assert!(
            !rules.contains("CNI-HOSTPORT"),
            "host-port chains left:\n{rules}"
        );
    }
}

/// `nft list ruleset`.
fn ruleset() -> String {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl exec` (exit codes, stdin, stderr), `cp`, `attach` and `port-forward` against the
/// running `web` and `talk` pods, with kubectl's WebSocket protocols or (`websockets` false) its
/// SPDY fallback.
fn streaming_should_work(k: &Kubectl, websockets: &str, ip: &str, copied: &Path) {
    let with = |args: &[&str]| {
        let mut command = k.command(args);
        command
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets);
        command
    };
    let out = with(&["exec", "web", "--", "echo", "hello"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\n",
        "websockets={websockets}"
    );
    let out = with(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "websockets={websockets}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("err\n") && stderr.contains("command terminated with exit code 7"),
        "{stderr}"
    );
    // `exec -it` from a terminal (util-linux `script` gives kubectl one): the command gets a
    // terminal of kubectl's size and its exit code comes back.
    let line = format!(
        "stty rows 31 cols 101; {} --namespace {} exec -it web -- sh -c 'tty; sleep 1; stty size; exit 3'",
        k.binary.display(),
        k.namespace
    );
    let mut terminal = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("KUBECONFIG", k.kubeconfig)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stdin stays open until the end: at its end `script` would type a NUL.
    let keep_open = terminal.stdin.take();
    let mut seen = String::new();
    terminal
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let status = terminal.wait().unwrap();
    drop(keep_open);
    assert_eq!(status.code(), Some(3), "websockets={websockets}: {seen}");
    assert!(
        seen.contains("/dev/pts/") && seen.contains("31 101\r\n"),
        "websockets={websockets}: {seen:?}"
    );
    let mut cat = with(&["exec", "-i", "web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = cat.wait_with_output().unwrap();
    assert!(out.status.success(), "stdin's end ends the command");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    let missing = with(&["exec", "web", "-c", "nope", "--", "true"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("container nope is not valid for pod web"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    // cp is exec with tar on both ends.
    let copy = copied.to_str().unwrap();
    let back = format!("{copy}.back.{websockets}");
    assert!(
        with(&["cp", copy, "web:/tmp/copied"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        with(&["cp", "web:/tmp/copied", &back])
            .status()
            .unwrap()
            .success()
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(copied).unwrap());
    // attach streams the main process's output.
    let mut attach = with(&["attach", "talk"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.starts_with("line "), "{line}");
    std::thread::spawn(move || lines.for_each(drop));
    attach.kill().unwrap();
    let _ = attach.wait();
    // port-forward reaches the pod's port from loopback.
    let local = free_port();
    let mut forward = with(&["port-forward", "pod/web", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("Forwarding from 127.0.0.1"), "{ready}");
    // kubectl goes on writing ("Handling connection for …"): keep reading.
    std::thread::spawn(move || lines.for_each(drop));
    for _ in 0..2 {
        let page = http_get("127.0.0.1", local).unwrap();
        assert!(page.contains("hello from skiff"), "{page}");
    }
    forward.kill().unwrap();
    let _ = forward.wait();
    assert!(http_get(ip, 8080).is_ok());
}

/// The agent's short name suffix for `node`, as its bridge and nft table are named (the first
/// three bytes of the name's SHA-256).
fn suffix(node: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("printf %s '{node}' | sha256sum")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..6].to_string()
}
