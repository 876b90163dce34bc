//! Container probes as kubelet runs them: a startup probe holds the others back until it
//! succeeds; a liveness probe that fails `failureThreshold` times in a row gets the container
//! killed (and restarted by its policy); a readiness probe decides the container's `ready`
//! (no readiness probe: ready once started). Each probe waits `initialDelaySeconds` after the
//! container starts and then runs every `periodSeconds`, given `timeoutSeconds`. Handlers: exec
//! (CRI ExecSync), httpGet (a GET from the node to the pod over HTTP or HTTPS, the certificate
//! not verified, as kubelet's; 200–399 passes), tcpSocket (a connection) and grpc (the
//! `grpc.health.v1.Health/Check` call, `grpc_probe`).
//!
//! A probe that cannot be run (the runtime does not answer the exec, the pod has no IP yet) is
//! neither a success nor a failure: as kubelet's `probe.Unknown`, its result is thrown away, so
//! a runtime outage never gets healthy containers killed.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::observed::{PodRuntime, RunState};
use crate::runtime::Runtime;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Has the container started?
    Startup,
    /// Is it alive?
    Liveness,
    /// Can it take traffic?
    Readiness,
}

impl Kind {
    /// The word kubelet's events use.
    pub fn word(self) -> &'static str {
        match self {
            Self::Startup => "Startup",
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
        }
    }

    fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            Self::Startup => container.startup_probe.as_ref(),
            Self::Liveness => container.liveness_probe.as_ref(),
            Self::Readiness => container.readiness_probe.as_ref(),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Counter {
    successes: i32,
    failures: i32,
    next: Option<Instant>,
}

/// One running instance's probes.
#[derive(Clone, Debug)]
struct Tracked {
    instance: String,
    started: bool,
    ready: bool,
    counters: HashMap<Kind, Counter>,
}

/// A probe to run now.
#[derive(Clone, Debug)]
pub struct Due {
    /// The container.
    pub container: String,
    /// Its running instance.
    pub instance: String,
    /// Which probe.
    pub kind: Kind,
    /// The probe.
    pub probe: Probe,
    /// The container's declared ports (for named ports).
    pub ports: Vec<(String, i32)>,
}

/// What one run of a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The probe passed.
    Passed,
    /// The probe failed (a timeout is a failure too).
    Failed,
    /// The probe could not be run; the result counts for nothing.
    Unknown,
}

/// What a probe result changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Nothing,
    /// Kill the instance (liveness or startup gave up on it).
    Kill,
}

fn seconds(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.unwrap_or(default).max(0)).unwrap_or(0))
}

/// The probes of one pod.
#[derive(Debug, Default)]
pub struct Probes {
    tracked: HashMap<String, Tracked>,
}

impl Probes {
    /// Follows the running instances: a new instance starts its probes afresh (its initial
    /// delays counted from now); a stopped one is forgotten.
    pub fn track(&mut self, pod: &Pod, runtime: &PodRuntime, now: Instant) {
        let containers = pod
            .spec
            .as_ref()
            .map_or(&[][..], |s| s.containers.as_slice());
        let mut running = Vec::new();
        for container in containers {
            let Some(instance) = runtime
                .latest(&container.name)
                .filter(|i| i.state == RunState::Running)
            else {
                continue;
            };
            running.push(container.name.clone());
            if self
                .tracked
                .get(&container.name)
                .is_some_and(|t| t.instance == instance.id)
            {
                continue;
            }
            let mut counters = HashMap::new();
            for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                if let Some(probe) = kind.of(container) {
                    let delay = seconds(probe.initial_delay_seconds, 0);
                    counters.insert(
                        kind,
                        Counter {
                            next: Some(now + delay),
                            ..Counter::default()
                        },
                    );
                }
            }
            self.tracked.insert(
                container.name.clone(),
                Tracked {
                    instance: instance.id.clone(),
                    started: container.startup_probe.is_none(),
                    ready: container.readiness_probe.is_none(),
                    counters,
                },
            );
        }
        self.tracked.retain(|name, _| running.contains(name));
    }

    /// Whether the container `name` counts as started (no startup probe, or it passed).
    pub fn started(&self, name: &str) -> bool {
        self.tracked.get(name).is_some_and(|t| t.started)
    }

    /// Whether the container `name` is ready (started, and its readiness probe passes).
    pub fn ready(&self, name: &str) -> bool {
        self.tracked.get(name).is_some_and(|t| t.started && t.ready)
    }

    /// The probes due at `now`.
    pub fn due(&self, pod: &Pod, now: Instant) -> Vec<Due> {
        let containers = pod
            .spec
            .as_ref()
            .map_or(&[][..], |s| s.containers.as_slice());
        let mut due = Vec::new();
        for container in containers {
            let Some(tracked) = self.tracked.get(&container.name) else {
                continue;
            };
            for (kind, counter) in &tracked.counters {
                // Until the startup probe passes, the others wait.
                if *kind != Kind::Startup && !tracked.started {
                    continue;
                }
                if *kind == Kind::Startup && tracked.started {
                    continue;
                }
                let (Some(next), Some(probe)) = (counter.next, kind.of(container)) else {
                    continue;
                };
                if next <= now {
                    due.push(Due {
                        container: container.name.clone(),
                        instance: tracked.instance.clone(),
                        kind: *kind,
                        probe: probe.clone(),
                        ports: container
                            .ports
                            .iter()
                            .flatten()
                            .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                            .collect(),
                    });
                }
            }
        }
        due
    }

    /// Records one result of `due`; says whether the instance must be killed.
    pub fn record(&mut self, due: &Due, outcome: Outcome, now: Instant) -> Verdict {
        let Some(tracked) = self
            .tracked
            .get_mut(&due.container)
            .filter(|t| t.instance == due.instance)
        else {
            return Verdict::Nothing;
        };
        let Some(counter) = tracked.counters.get_mut(&due.kind) else {
            return Verdict::Nothing;
        };
        counter.next = Some(now + seconds(due.probe.period_seconds, 10));
        match outcome {
            Outcome::Passed => {
                counter.successes += 1;
                counter.failures = 0;
            }
            Outcome::Failed => {
                counter.failures += 1;
                counter.successes = 0;
            }
            Outcome::Unknown => return Verdict::Nothing,
        }
        let success_threshold = due.probe.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = due.probe.failure_threshold.unwrap_or(3).max(1);
        match due.kind {
            Kind::Startup if counter.successes >= success_threshold => {
                // Once passed, a startup probe never runs again for this instance.
                counter.next = None;
                tracked.started = true;
                Verdict::Nothing
            }
            Kind::Readiness if counter.successes >= success_threshold => {
                tracked.ready = true;
                Verdict::Nothing
            }
            Kind::Readiness if counter.failures >= failure_threshold => {
                tracked.ready = false;
                Verdict::Nothing
            }
            Kind::Startup | Kind::Liveness if counter.failures >= failure_threshold => {
                counter.next = None;
                Verdict::Kill
            }
            _ => Verdict::Nothing,
        }
    }

    /// When the next probe is due: of the probes [`Probes::due`] would run, the earliest.
    pub fn next_wake(&self) -> Option<Instant> {
        self.tracked
            .values()
            .flat_map(|t| {
                t.counters
                    .iter()
                    .filter(|(kind, _)| (**kind == Kind::Startup) != t.started)
                    .map(|(_, counter)| counter)
            })
            .filter_map(|c| c.next)
            .min()
    }
}

/// A probe's port, resolved from a container port's name when it is one.
fn port(port: &IntOrString, named: &[(String, i32)]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse() {
            Ok(n) => n,
            Err(_) => named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("the container has no port named {name:?}"))?,
        },
    };
    u16::try_from(number).map_err(|_| format!("port {number} is out of range"))
}

/// Runs one probe against the pod at `pod_ip`; what it found, with what it said (for
/// [`Outcome::Unknown`], why it could not run).
pub async fn run(runtime: &dyn Runtime, due: &Due, pod_ip: &str) -> (Outcome, String) {
    let probe = &due.probe;
    let timeout = seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let secs = i64::try_from(timeout.as_secs()).unwrap_or(1);
        return match runtime.exec_sync(&due.instance, &command, secs).await {
            Ok((code, stdout, stderr)) => {
                let output = format!(
                    "{}{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
                let outcome = if code == 0 {
                    Outcome::Passed
                } else {
                    Outcome::Failed
                };
                (outcome, output.trim().to_string())
            }
            // The runtime's deadline for the command: kubelet's "timed out" failure.
            Err(error) if error.is_deadline_exceeded() => (
                Outcome::Failed,
                format!("command {:?} timed out", command.join(" ")),
            ),
            Err(error) => (Outcome::Unknown, error.to_string()),
        };
    }
    let (host, port_value, http) = if let Some(get) = &probe.http_get {
        let host = get
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        (host, &get.port, Some(get))
    } else if let Some(tcp) = &probe.tcp_socket {
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        (host, &tcp.port, None)
    } else if let Some(grpc) = &probe.grpc {
        let address = format!("{pod_ip}:{}", grpc.port);
        let service = grpc.service.clone().unwrap_or_default();
        if pod_ip.is_empty() {
            return (Outcome::Unknown, NO_POD_IP.into());
        }
        return match super::grpc_probe::check(&address, &service, timeout).await {
            Ok(()) => (Outcome::Passed, String::new()),
            Err(message) => (Outcome::Failed, message),
        };
    } else {
        return (Outcome::Passed, String::new());
    };
    if host.is_empty() {
        return (Outcome::Unknown, NO_POD_IP.into());
    }
    let port = match port(port_value, &due.ports) {
        Ok(port) => port,
        Err(message) => return (Outcome::Failed, message),
    };
    let address = format!("{host}:{port}");
    let scheme = match http {
        Some(get) if get.scheme.as_deref() == Some("HTTPS") => "https",
        _ => "http",
    };
    let path = http
        .and_then(|get| get.path.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| {
                let dial = format!("dial tcp {address}: connect: {}", go_error(&e));
                match http {
                    Some(_) => format!("Get \"{scheme}://{address}{path}\": {dial}"),
                    None => dial,
                }
            })?;
        let Some(get) = http else {
            return Ok(String::new());
        };
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for header in get.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", header.name, header.value));
        }
        request.push_str("\r\n");
        let url = format!("{scheme}://{address}{path}");
        let line = if scheme == "https" {
            // kubelet's HTTPS probes do not verify the certificate (InsecureSkipVerify).
            let config = skiff_apimachinery::unverified_tls::client_config()
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, stream)
                .await
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            status_line(tls, &request).await
        } else {
            status_line(stream, &request).await
        }
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
        if (200..400).contains(&code) {
            Ok(String::new())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(output)) => (Outcome::Passed, output),
        Ok(Err(message)) => (Outcome::Failed, message),
        Err(_) => (
            Outcome::Failed,
            format!(
                "Get \"{scheme}://{address}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
        ),
    }
}

/// An I/O error in Go's words, as kubelet's messages carry it: the system's text in lower case,
/// without Rust's `(os error N)` (`connection refused`).
fn go_error(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why a network probe was not run: the sandbox's IP is not known (its runtime did not say).
const NO_POD_IP: &str = "the pod's IP address is not known yet";

/// Sends `request` and reads the start of the answer (its status line).
async fn status_line<S>(mut stream: S, request: &str) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut head = vec![0u8; 64];
    let read = stream.read(&mut head).await?;
    Ok(String::from_utf8_lossy(&head[..read]).to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pods::observed::Instance;

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{
            "name": "c",
            "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 2, "periodSeconds": 5},
            "readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 3}}]}}))
        .unwrap()
    }

    fn running(id: &str) -> PodRuntime {
        PodRuntime {
            instances: vec![Instance {
                id: id.into(),
                sandbox: "s".into(),
                name: "c".into(),
                restart_count: 0,
                state: RunState::Running,
                created_at: 1,
                started_at: 1,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                image: String::new(),
                image_ref: String::new(),
            }],
            ..PodRuntime::default()
        }
    }

    #[test]
    fn startup_should_hold_the_others_and_liveness_should_kill_after_its_threshold() {
        let pod = pod();
        let mut probes = Probes::default();
        let start = Instant::now();
        probes.track(&pod, &running("i1"), start);
        let due = probes.due(&pod, start);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].kind, Kind::Startup);
        assert!(!probes.started("c") && !probes.ready("c"));
        // Only the startup probe is waited for until it passes.
        assert_eq!(probes.next_wake(), Some(start));
        assert_eq!(
            probes.record(&due[0], Outcome::Passed, start),
            Verdict::Nothing
        );
        assert!(probes.started("c"));
        // Readiness waits its initial delay; liveness runs now.
        let due = probes.due(&pod, start);
        assert_eq!(
            due.iter().map(|d| d.kind).collect::<Vec<_>>(),
            [Kind::Liveness]
        );
        assert_eq!(
            probes.record(&due[0], Outcome::Failed, start),
            Verdict::Nothing
        );
        let later = start + Duration::from_secs(5);
        let due: Vec<Due> = probes.due(&pod, later);
        let liveness = due.iter().find(|d| d.kind == Kind::Liveness).unwrap();
        let readiness = due.iter().find(|d| d.kind == Kind::Readiness).unwrap();
        probes.record(readiness, Outcome::Passed, later);
        assert!(probes.ready("c"));
        // A probe that could not run counts for nothing, however often.
        for _ in 0..5 {
            assert_eq!(
                probes.record(liveness, Outcome::Unknown, later),
                Verdict::Nothing
            );
        }
        assert!(probes.next_wake().is_some_and(|at| at > later));
        assert_eq!(
            probes.record(liveness, Outcome::Failed, later),
            Verdict::Kill
        );
        // A new instance starts over.
        probes.track(&pod, &running("i2"), later);
        assert!(!probes.started("c"));
    }

    #[test]
    fn named_ports_should_resolve_from_the_container() {
        let named = vec![("http".to_string(), 8080)];
        assert_eq!(port(&IntOrString::String("http".into()), &named), Ok(8080));
        assert_eq!(port(&IntOrString::Int(81), &named), Ok(81));
        assert!(port(&IntOrString::String("nope".into()), &named).is_err());
    }

    /// A TLS server with a self-signed certificate answering `/ok` with 204, anything else
    /// with 500; its port.
    async fn https_server() -> u16 {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let certified = rcgen::generate_simple_self_signed(vec!["probe.test".into()]).unwrap();
        let key = PrivateKeyDer::from_pem_slice(certified.signing_key.serialize_pem().as_bytes())
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = vec![0u8; 1024];
                    let read = tls.read(&mut head).await.unwrap_or(0);
                    let answer = if head[..read].starts_with(b"GET /ok ") {
                        "HTTP/1.1 204 No Content\r\n\r\n"
                    } else {
                        "HTTP/1.1 500 Internal Server Error\r\n\r\n"
                    };
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_probes_should_speak_tls_without_verifying_the_certificate() {
        let port = https_server().await;
        let runtime = crate::runtime::fake::FakeRuntime::new();
        let due = |path: &str, scheme: &str| Due {
            container: "c".into(),
            instance: "i1".into(),
            kind: Kind::Readiness,
            probe: serde_json::from_value(
                json!({"httpGet": {"path": path, "port": port, "scheme": scheme}}),
            )
            .unwrap(),
            ports: Vec::new(),
        };
        assert_eq!(
            run(&runtime, &due("/ok", "HTTPS"), "127.0.0.1").await,
            (Outcome::Passed, String::new())
        );
        assert_eq!(
            run(&runtime, &due("/bad", "HTTPS"), "127.0.0.1").await,
            (
                Outcome::Failed,
                "HTTP probe failed with statuscode: 500".into()
            )
        );
        // Plain HTTP to a TLS port does not pass.
        let (outcome, _) = run(&runtime, &due("/ok", "HTTP"), "127.0.0.1").await;
        assert_eq!(outcome, Outcome::Failed);
        // Without the pod's IP there is nothing to probe.
        let (outcome, _) = run(&runtime, &due("/ok", "HTTPS"), "").await;
        assert_eq!(outcome, Outcome::Unknown);
    }

    #[tokio::test]
    async fn a_probe_on_a_closed_port_should_fail_in_kubelets_words() {
        let runtime = crate::runtime::fake::FakeRuntime::new();
        // A port nobody listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let due = |probe: serde_json::Value| Due {
            container: "c".into(),
            instance: "i1".into(),
            kind: Kind::Liveness,
            probe: serde_json::from_value(probe).unwrap(),
            ports: Vec::new(),
        };
        assert_eq!(
            run(
                &runtime,
                &due(json!({"tcpSocket": {"port": port}})),
                "127.0.0.1"
            )
            .await,
            (
                Outcome::Failed,
                format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
            )
        );
        assert_eq!(
            run(
                &runtime,
                &due(json!({"httpGet": {"port": port, "path": "/healthz"}})),
                "127.0.0.1"
            )
            .await,
            (
                Outcome::Failed,
                format!(
                    "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
                )
            )
        );
    }

    #[tokio::test]
    async fn an_exec_probe_the_runtime_cannot_run_should_count_for_nothing() {
        let runtime = crate::runtime::fake::FakeRuntime::new();
        let due = Due {
            container: "c".into(),
            instance: "gone".into(),
            kind: Kind::Liveness,
            probe: serde_json::from_value(json!({"exec": {"command": ["true"]}})).unwrap(),
            ports: Vec::new(),
        };
        let (outcome, message) = run(&runtime, &due, "10.42.0.5").await;
        assert_eq!(outcome, Outcome::Unknown, "{message}");
    }
}
