//! A pod's life on the real node as kubelet runs it, and the ways a pod goes wrong, each
//! explained in its status with upstream's reason: an init container runs first; a readiness
//! probe holds Ready back until it passes; a failing liveness probe restarts the container; a
//! crash's back-off grows (10 s, then 20 s); a changed Secret reaches the mounted files; an
//! image that does not exist, a command that does not exist, a missing ConfigMap and a host
//! port another pod holds each name their cause, and the other pods keep running; a pod's
//! security context (user, group, read-only root, dropped capabilities, working directory),
//! its host port and a second container's log hold as asked; a memory limit too small to start
//! says so.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{eventually, http_get};
use crate::support::kubectl::Kubectl;

const GATED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: prepare
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "echo prepared > /work/state"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: c
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "rm -f /work/ready /work/dead; cat /work/state; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{name: work, mountPath: /work}, {name: creds, mountPath: /etc/creds}]
    readinessProbe:
      exec: {command: ["/bin/sh", "-c", "test -f /work/ready"]}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["/bin/sh", "-c", "! test -f /work/dead"]}
      periodSeconds: 1
      failureThreshold: 2
  volumes:
  - {name: work, emptyDir: {}}
  - {name: creds, secret: {secretName: creds}}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: first}
"#;

const TROUBLE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: missing-image}
spec:
  automountServiceAccountToken: false
  containers:
  - {name: c, image: "busybox:no-such-tag", imagePullPolicy: Always, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-command}
spec:
  automountServiceAccountToken: false
  containers:
  - {name: c, image: "busybox:stable", imagePullPolicy: IfNotPresent, command: [/no/such/binary]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-config}
spec:
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    env: [{name: COLOUR, valueFrom: {configMapKeyRef: {name: nope, key: colour}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: backoff}
spec:
  automountServiceAccountToken: false
  containers:
  - {name: c, image: "busybox:stable", imagePullPolicy: IfNotPresent, command: [/bin/sh, -c, "exit 1"]}
"#;

const SECURE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: secure}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1234, runAsGroup: 5678}
  containers:
  - name: c
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: [/bin/httpd, -f, -p, "8081", -h, /etc]
    workingDir: /tmp
    securityContext: {readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    ports: [{containerPort: 8081, hostPort: 18081}]
  - name: side
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: [/bin/sh, -c, "echo from the side; trap 'exit 0' TERM; while true; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: tiny}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: "busybox:stable", imagePullPolicy: IfNotPresent, command: [sleep, "3600"], resources: {limits: {memory: 1Mi}}}
"#;

/// A pod on the node holding host port `port` (its name: `name`).
fn holder(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:stable
    imagePullPolicy: IfNotPresent
    command: [/bin/sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]
    ports: [{{containerPort: 80, hostPort: 18080}}]
"
    )
}

fn apply(k: &Kubectl, yaml: &str) {
    let out = k.apply_yaml(yaml, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container `c`'s status of `pod`, as JSON text.
fn container_status(k: &Kubectl, pod: &str) -> String {
    k.jsonpath(&format!("pod/{pod}"), "{.status.containerStatuses[0]}")
}

pub fn a_pod_should_live_as_kubelet_runs_it(k: &Kubectl) {
    apply(k, GATED);
    // The init container ran to completion before the container, which read what it wrote.
    eventually("gated running", Duration::from_secs(60), || {
        k.jsonpath("pod/gated", "{.status.phase}") == "Running"
    });
    assert_eq!(
        k.jsonpath(
            "pod/gated",
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    eventually("gated's log", Duration::from_secs(10), || {
        k.ok(&["logs", "gated"]) == "prepared\n"
    });
    // Not ready while its readiness probe fails, for many periods; ready once it passes.
    std::thread::sleep(Duration::from_secs(3));
    let ready = || {
        k.jsonpath(
            "pod/gated",
            "{.status.containerStatuses[0].ready}/{.status.conditions[?(@.type==\"Ready\")].status}",
        )
    };
    assert_eq!(ready(), "false/False");
    k.ok(&["exec", "gated", "--", "touch", "/work/ready"]);
    eventually("gated ready", Duration::from_secs(10), || {
        ready() == "true/True"
    });

    // A changed Secret reaches the mounted file.
    let password = || k.ok(&["exec", "gated", "--", "cat", "/etc/creds/password"]);
    assert_eq!(password(), "first");
    k.ok(&[
        "patch",
        "secret",
        "creds",
        "-p",
        r#"{"stringData":{"password":"second"}}"#,
    ]);
    eventually(
        "the new password in the pod",
        Duration::from_secs(90),
        || password() == "second",
    );

    // A failing liveness probe restarts the container (Unhealthy, then Killing), and it is not
    // ready again until its readiness probe passes.
    k.ok(&["exec", "gated", "--", "touch", "/work/dead"]);
    eventually("gated restarted", Duration::from_secs(30), || {
        k.jsonpath("pod/gated", "{.status.containerStatuses[0].restartCount}") == "1"
            && !k
                .jsonpath(
                    "pod/gated",
                    "{.status.containerStatuses[0].state.running.startedAt}",
                )
                .is_empty()
    });
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=gated",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("Unhealthy: Liveness probe failed"),
        "{events}"
    );
    assert!(
        events.contains("Killing: Container c failed liveness probe, will be restarted"),
        "{events}"
    );
    eventually(
        "gated not ready after its restart",
        Duration::from_secs(10),
        || ready() == "false/False",
    );
    k.ok(&["delete", "pod", "gated", "--wait=false"]);
    k.ok(&["delete", "secret", "creds"]);
}

pub fn troubles_should_explain_themselves(k: &Kubectl, node: &str) {
    apply(k, TROUBLE);
    // An image that does not exist: ErrImagePull, then ImagePullBackOff, naming the image.
    eventually(
        "missing-image's pull refused",
        Duration::from_secs(60),
        || {
            let status = container_status(k, "missing-image");
            status.contains("ImagePullBackOff") || status.contains("ErrImagePull")
        },
    );
    assert!(
        container_status(k, "missing-image").contains("busybox:no-such-tag"),
        "{}",
        container_status(k, "missing-image")
    );
    // A command that does not exist: the start fails, and the status says which command.
    eventually(
        "no-command's start refused",
        Duration::from_secs(60),
        || container_status(k, "no-command").contains("/no/such/binary"),
    );
    let refused = container_status(k, "no-command");
    assert!(
        refused.contains("RunContainerError") || refused.contains("CrashLoopBackOff"),
        "{refused}"
    );
    // A missing ConfigMap: CreateContainerConfigError with upstream's message.
    eventually("no-config refused", Duration::from_secs(60), || {
        k.jsonpath(
            "pod/no-config",
            "{.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
        ) == "CreateContainerConfigError: configmap \"nope\" not found"
    });
    // A crash's back-off doubles: 10 s, then 20 s, in the waiting message.
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while start.elapsed() < Duration::from_secs(90) && !seen.contains("20s") {
        let message = k.jsonpath(
            "pod/backoff",
            "{.status.containerStatuses[0].state.waiting.message}",
        );
        for delay in ["10s", "20s", "40s"] {
            if message.starts_with(&format!("back-off {delay} restarting failed container=c")) {
                seen.insert(delay);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["10s", "20s"],
        "the back-off messages seen"
    );
    // A host port another pod on the node holds: the second pod is rejected (NodePorts).
    apply(k, &holder("holder", node));
    eventually("holder running", Duration::from_secs(60), || {
        k.jsonpath("pod/holder", "{.status.phase}") == "Running"
    });
    apply(k, &holder("taker", node));
    eventually("taker rejected", Duration::from_secs(30), || {
        k.jsonpath("pod/taker", "{.status.phase}/{.status.reason}") == "Failed/NodePorts"
    });
    let message = k.jsonpath("pod/taker", "{.status.message}");
    assert_eq!(
        message,
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports: hostPort 18080/TCP is already used by pod default/holder"
    );
    // None of it stopped the other pods.
    assert_eq!(k.jsonpath("pod/holder", "{.status.phase}"), "Running");
    let mut delete = vec!["delete", "pod"];
    delete.extend(TROUBLED);
    delete.extend(["--grace-period=1", "--wait=false"]);
    k.ok(&delete);
    eventually("the troubled pods gone", Duration::from_secs(60), || {
        k.ok(&["get", "pods", "-o", "name"])
            .lines()
            .all(|p| !TROUBLED.contains(&p.trim_start_matches("pod/")))
    });
}

/// The pods of `troubles_should_explain_themselves`.
const TROUBLED: [&str; 6] = [
    "missing-image",
    "no-command",
    "no-config",
    "backoff",
    "holder",
    "taker",
];

pub fn security_and_resources_should_hold(k: &Kubectl) {
    apply(k, SECURE);
    eventually("secure running", Duration::from_secs(60), || {
        k.jsonpath("pod/secure", "{.status.phase}") == "Running"
    });
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "secure", "-c", "c", "--"];
        all.extend_from_slice(args);
        k.run(&all)
    };
    let text = |args: &[&str]| String::from_utf8_lossy(&exec(args).stdout).to_string();
    assert_eq!(text(&["id", "-u"]), "1234\n");
    assert_eq!(text(&["id", "-g"]), "5678\n");
    assert_eq!(text(&["pwd"]), "/tmp\n");
    let touched = exec(&["touch", "/written"]);
    assert!(!touched.status.success());
    assert!(
        String::from_utf8_lossy(&touched.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&touched.stderr)
    );
    assert!(
        text(&["grep", "CapEff", "/proc/1/status"]).contains("0000000000000000"),
        "every capability dropped"
    );
    // The host port reaches the container; the second container logs on its own.
    eventually("the host port answering", Duration::from_secs(20), || {
        // (httpd serving /etc: any answer of its is the container's.)
        http_get("127.0.0.1", 18081).is_ok_and(|answer| answer.starts_with("HTTP/"))
    });
    eventually("the side container's log", Duration::from_secs(20), || {
        k.ok(&["logs", "secure", "-c", "side"]) == "from the side\n"
    });
    // A memory limit too small for the container to start: the runtime's own words.
    eventually("tiny refused", Duration::from_secs(60), || {
        let status = container_status(k, "tiny");
        status.contains("StartError") && status.contains("unable to set memory limit")
    });
    k.ok(&[
        "delete",
        "pod",
        "secure",
        "tiny",
        "--grace-period=1",
        "--wait=false",
    ]);
}
