//! Services and DNS on the real node: `examples/web.yaml` (five httpd replicas behind a
//! LoadBalancer) answers by name from a pod and spreads requests over every replica, answers
//! from the host at its LoadBalancer address (127.0.0.1) and its NodePort, follows scaling, and
//! loses no request for longer than the readiness period when a replica is deleted; unknown
//! names are NXDOMAIN; a replica reaches its own Service (hairpin); a headless StatefulSet's pods resolve by name; a Service without
//! endpoints refuses connections; a pod reads the API through the `kubernetes` Service with its
//! own token; a crashed server leaves the rules in place. (busybox's `wget` crashes in Debian's static build, so pods speak HTTP with `nc`.)

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Node, eventually, http_get};
use crate::support::kubectl::Kubectl;

const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: "busybox:stable", imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"#;

const PEERS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: peers}
spec:
  clusterIP: None
  selector: {app: peers}
  ports: [{name: gossip, port: 7000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: peers}
spec:
  replicas: 2
  serviceName: peers
  selector: {matchLabels: {app: peers}}
  template:
    metadata: {labels: {app: peers}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: "busybox:stable", imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody-at-all}
  ports: [{port: 80}]
"#;

/// The body's last line (the replica's name) of GET / through `nc` in the client pod.
fn get_from_client(k: &Kubectl, host: &str, times: usize) -> Vec<String> {
    get_from(k, "client", host, times)
}

/// The same from pod `pod`.
fn get_from(k: &Kubectl, pod: &str, host: &str, times: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {times}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80 | tail -n 1; echo; done"
    );
    k.ok(&["exec", pod, "--", "sh", "-c", &script])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn web_pods(k: &Kubectl) -> BTreeSet<String> {
    k.jsonpath(
        "pods",
        "{range .items[?(@.metadata.labels.app==\"web\")]}{.metadata.name}{\"\\n\"}{end}",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// The replica names GET / from the host at `port` of 127.0.0.1 sees in `times` requests.
fn seen_from_host(port: u16, times: usize) -> BTreeSet<String> {
    (0..times)
        .filter_map(|_| http_get("127.0.0.1", port).ok())
        .filter_map(|answer| answer.lines().last().map(|l| l.trim().to_string()))
        .collect()
}

pub fn services_and_dns_should_work(k: &Kubectl, kubectl_binary: &Path, node: &mut Node) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/web.yaml");
    k.ok(&["apply", "-f", example.to_str().unwrap()]);
    for yaml in [CLIENT, PEERS] {
        let out = k.apply_yaml(yaml, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    eventually(
        "the LoadBalancer published",
        Duration::from_secs(30),
        || k.jsonpath("service/web", "{.status.loadBalancer.ingress[0].ip}") == "127.0.0.1",
    );
    let node_port: u16 = k
        .jsonpath("service/web", "{.spec.ports[0].nodePort}")
        .parse()
        .unwrap();
    let replicas = web_pods(k);
    assert_eq!(replicas.len(), 5, "{replicas:?}");

    // From a pod, by its short name and its full name; 50 requests reach all five replicas.
    let seen: BTreeSet<String> = get_from_client(k, "web", 50).into_iter().collect();
    assert_eq!(seen, replicas, "50 requests to http://web");
    let full = get_from_client(k, "web.default.svc.cluster.local", 1);
    assert!(replicas.contains(&full[0]), "{full:?}");
    // Hairpin: a replica reaching its own Service, landing on itself about one time in five
    // (which only works with the proxy's hairpin masquerade), gets every answer.
    let replica = replicas.iter().next().unwrap();
    let answers = get_from(k, replica, "web", 20);
    assert_eq!(answers.len(), 20, "from {replica}: {answers:?}");
    assert!(answers.iter().all(|a| replicas.contains(a)), "{answers:?}");

    // From the host: the LoadBalancer address (127.0.0.1:80) and the NodePort.
    eventually(
        "the LoadBalancer answering every replica",
        Duration::from_secs(20),
        || seen_from_host(80, 60) == replicas,
    );
    assert!(seen_from_host(node_port, 20).is_subset(&replicas));
    assert!(
        !seen_from_host(node_port, 20).is_empty(),
        "the NodePort answers"
    );

    // Scaling changes the rules: only the replicas left answer, then the new ones too.
    k.ok(&["scale", "deployment/web", "--replicas=2"]);
    eventually("two replicas answering", Duration::from_secs(60), || {
        let left = web_pods(k);
        left.len() == 2 && seen_from_host(80, 30) == left
    });
    k.ok(&["scale", "deployment/web", "--replicas=5"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    eventually(
        "five replicas answering again",
        Duration::from_secs(30),
        || {
            let all = web_pods(k);
            all.len() == 5 && seen_from_host(80, 60) == all
        },
    );

    // Deleting a replica: no request fails for longer than the readiness period (2 s).
    let victim = web_pods(k).into_iter().next().unwrap();
    let deleting = {
        let binary = k.binary.to_path_buf();
        let kubeconfig = k.kubeconfig.to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            std::process::Command::new(binary)
                .env("KUBECONFIG", kubeconfig)
                .args(["delete", "pod", &victim, "--wait=false"])
                .output()
                .unwrap()
        })
    };
    let start = Instant::now();
    let (mut failing_since, mut longest) = (None::<Instant>, Duration::ZERO);
    while start.elapsed() < Duration::from_secs(8) {
        let answered = http_get("127.0.0.1", 80).is_ok_and(|a| a.starts_with("HTTP/1.1 200"));
        match (answered, failing_since) {
            (false, None) => failing_since = Some(Instant::now()),
            (true, Some(since)) => {
                longest = longest.max(since.elapsed());
                failing_since = None;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(since) = failing_since {
        longest = longest.max(since.elapsed());
    }
    assert!(deleting.join().unwrap().status.success());
    assert!(
        longest <= Duration::from_secs(2),
        "requests failed for {longest:?} after a replica was deleted"
    );

    // DNS: an unknown name is NXDOMAIN; a headless StatefulSet's pods resolve by name.
    let lookup = |name: &str| {
        let out = k.run(&["exec", "client", "--", "nslookup", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(lookup("nope.default.svc.cluster.local").contains("NXDOMAIN"));
    k.ok(&["rollout", "status", "statefulset/peers", "--timeout=90s"]);
    for pod in ["peers-0", "peers-1"] {
        let ip = k.jsonpath(&format!("pod/{pod}"), "{.status.podIP}");
        eventually(&format!("{pod} resolving"), Duration::from_secs(20), || {
            lookup(&format!("{pod}.peers.default.svc.cluster.local")).contains(&ip)
        });
    }

    // A Service without endpoints refuses at once rather than letting connections hang.
    let nobody = k.jsonpath("service/nobody", "{.spec.clusterIP}");
    eventually("a refusal from nobody", Duration::from_secs(20), || {
        http_get(&nobody, 80).is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });

    // kubectl in a pod reads the API through the `kubernetes` Service with its token.
    let in_cluster = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: in-cluster}}
spec:
  restartPolicy: Never
  containers:
  - name: k
    image: "busybox:stable"
    imagePullPolicy: IfNotPresent
    command: ["/kubectl", "get", "service", "kubernetes", "-o", "name"]
    volumeMounts: [{{name: bin, mountPath: /kubectl}}]
  volumes: [{{name: bin, hostPath: {{path: "{}", type: File}}}}]
"#,
        kubectl_binary.display()
    );
    let out = k.apply_yaml(&in_cluster, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("kubectl in a pod done", Duration::from_secs(60), || {
        k.jsonpath("pod/in-cluster", "{.status.phase}") == "Succeeded"
            || k.jsonpath("pod/in-cluster", "{.status.phase}") == "Failed"
    });
    assert_eq!(k.ok(&["logs", "in-cluster"]), "service/kubernetes\n");

    // The server crashes: the proxy's rules stay and the Service keeps answering; a new server
    // takes them over.
    let before = web_pods(k);
    node.crash();
    let seen = seen_from_host(80, 30);
    assert!(
        !seen.is_empty() && seen.is_subset(&before),
        "{seen:?} while the server is down"
    );
    node.restart();
    eventually("the API back", Duration::from_secs(60), || {
        k.run(&["get", "service", "web"]).status.success()
    });
    // (Twice in this session's runs every replica was not reached within 30 s, cause not
    // found: a longer wait, and what the cluster held if it still fails.)
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = BTreeSet::new();
    while Instant::now() < deadline {
        seen = seen_from_host(80, 30);
        if seen == web_pods(k) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        seen,
        web_pods(k),
        "the Service answering after the restart; slices: {}; pods: {}",
        k.ok(&["get", "endpointslices", "-o", "wide"]),
        k.ok(&["get", "pods", "-o", "wide"])
    );

    k.ok(&["delete", "-f", example.to_str().unwrap()]);
    k.ok(&["delete", "pod", "client", "in-cluster", "--wait=false"]);
    k.ok(&["delete", "statefulset", "peers", "--wait=false"]);
    k.ok(&["delete", "service", "peers", "nobody"]);
}
