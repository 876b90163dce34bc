//! End to end on simulated nodes: a real `skiff server` without controllers, `skiff controllers`
//! and `skiff sim-nodes` as their own processes, kubectl. A 100-replica Deployment is rolled out
//! and updated while a watch checks maxSurge and maxUnavailable at every event; the controllers
//! are killed (SIGKILL) in the middle of the update and a new process finishes it without a
//! single extra pod; `kubectl rollout history` and `undo` work on what they left. Needs kubectl,
//! so it is ignored unless `--include-ignored` (as `./scripts/test` runs it); it fails when a
//! binary is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use support::kubectl::{Kubectl, kubectl_binaries};
use support::start_server_with;

/// A child process of ours, killed (by its PID, through `Child`) when dropped.
struct Process(Child);

impl Process {
    fn start(args: &[&str], kubeconfig: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Process(child)
    }

    /// SIGKILL: no chance to give the leader Lease up.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGTERM first, so simulated nodes remove their Node objects.
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

/// Polls `check` every 200 ms for up to `timeout`.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

const REPLICAS: usize = 100;
const MAX_SURGE: usize = 10;
const MAX_UNAVAILABLE: usize = 5;

fn deployment(image: &str) -> String {
    format!(
        "
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {REPLICAS}
  minReadySeconds: 1
  selector: {{matchLabels: {{app: web}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: {MAX_SURGE}, maxUnavailable: {MAX_UNAVAILABLE}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: web, image: '{image}'}}
"
    )
}

/// What the watch saw, at its worst moments.
#[derive(Default, Debug)]
struct Worst {
    /// The most pods (not being deleted) at once.
    most_pods: usize,
    /// The fewest ready pods (not being deleted) at once, once the first rollout was done.
    fewest_ready: usize,
    /// The largest sum of the ReplicaSets' `spec.replicas` at once.
    most_replicas: i32,
    /// Every pod uid seen, by its pod-template-hash.
    uids_by_hash: BTreeMap<String, BTreeSet<String>>,
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Watches `api` from now on and calls `judge` with every object live after each event, once
/// the initial listing (which arrives object by object) is complete.
fn watch_each<K, F>(api: Api<K>, mut judge: F)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: FnMut(&BTreeMap<String, K>) + Send + 'static,
{
    tokio::spawn(async move {
        let mut live: BTreeMap<String, K> = BTreeMap::new();
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        let mut listed = false;
        while let Some(Ok(event)) = stream.next().await {
            match event {
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                    live.insert(object.name_any(), object);
                }
                watcher::Event::Delete(object) => {
                    live.remove(&object.name_any());
                }
                watcher::Event::Init => listed = false,
                watcher::Event::InitDone => listed = true,
            }
            if listed {
                judge(&live);
            }
        }
    });
}

/// Watches pods and ReplicaSets from now on, folding every event into `worst`.
fn watch(client: Client, worst: Arc<Mutex<Worst>>) {
    let pods_worst = worst.clone();
    watch_each(
        Api::<Pod>::namespaced(client.clone(), "default"),
        move |live| {
            let alive: Vec<&Pod> = live
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = alive.iter().filter(|p| is_ready(p)).count();
            let mut worst = pods_worst.lock().unwrap();
            worst.most_pods = worst.most_pods.max(alive.len());
            worst.fewest_ready = worst.fewest_ready.min(ready);
            for pod in &alive {
                let hash = pod
                    .labels()
                    .get("pod-template-hash")
                    .cloned()
                    .unwrap_or_default();
                worst
                    .uids_by_hash
                    .entry(hash)
                    .or_default()
                    .insert(pod.uid().unwrap_or_default());
            }
        },
    );
    watch_each(
        Api::<ReplicaSet>::namespaced(client, "default"),
        move |sets| {
            let total: i32 = sets
                .values()
                .map(|s| s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
                .sum();
            let mut worst = worst.lock().unwrap();
            worst.most_replicas = worst.most_replicas.max(total);
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl 1.33 and 1.35"]
async fn a_100_replica_rolling_update_should_keep_its_bounds_at_every_event_across_a_controller_kill()
 {
    let binaries = kubectl_binaries();
    let server = start_server_with(&["--no-controllers"]);
    let kubeconfig = server.kubeconfig.clone();
    let client = {
        let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        Client::try_from(config).unwrap()
    };
    let k = Kubectl {
        binary: &binaries[0],
        kubeconfig: &kubeconfig,
        namespace: "default".into(),
    };
    let _nodes = Process::start(
        &["sim-nodes", "--count", "5", "--prefix", "sim-"],
        &kubeconfig,
    );
    let controllers = Process::start(&["controllers"], &kubeconfig);
    let apply = k.apply_yaml(&deployment("busybox:1"), &[]);
    assert!(apply.status.success(), "{apply:?}");
    k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);

    let worst = Arc::new(Mutex::new(Worst {
        fewest_ready: usize::MAX,
        ..Worst::default()
    }));
    watch(client, worst.clone());
    eventually(
        "the watch to see the rollout",
        Duration::from_secs(30),
        || worst.lock().unwrap().most_pods == REPLICAS,
    );
    k.ok(&["set", "image", "deployment/web", "web=busybox:2"]);
    eventually("a third of the update", Duration::from_secs(120), || {
        // Of the new generation, not what the first rollout left in the status.
        let seen = k.jsonpath(
            "deployment/web",
            "{.metadata.generation} {.status.observedGeneration} {.status.updatedReplicas}",
        );
        let fields: Vec<&str> = seen.split_whitespace().collect();
        fields.len() == 3
            && fields[0] == fields[1]
            && fields[2].parse::<usize>().unwrap_or(0) >= REPLICAS / 3
    });
    controllers.kill();
    let updated: usize = k
        .jsonpath("deployment/web", "{.status.updatedReplicas}")
        .parse()
        .unwrap();
    assert!(
        updated < REPLICAS,
        "the kill came before the end: {updated} updated"
    );
    let _controllers = Process::start(&["controllers"], &kubeconfig);
    // The new process waits for the dead one's Lease to run out (15 s), then finishes.
    k.ok(&["rollout", "status", "deployment/web", "--timeout=240s"]);
    std::thread::sleep(Duration::from_millis(500));

    let worst = worst.lock().unwrap();
    eprintln!(
        "most pods {}, most replicas {}, fewest ready {}",
        worst.most_pods, worst.most_replicas, worst.fewest_ready
    );
    assert!(
        worst.most_pods <= REPLICAS + MAX_SURGE,
        "at most {} pods, saw {}",
        REPLICAS + MAX_SURGE,
        worst.most_pods
    );
    assert!(
        worst.most_replicas <= i32::try_from(REPLICAS + MAX_SURGE).unwrap(),
        "at most {} replicas, saw {}",
        REPLICAS + MAX_SURGE,
        worst.most_replicas
    );
    assert!(
        worst.fewest_ready >= REPLICAS - MAX_UNAVAILABLE,
        "at least {} ready pods, saw {}",
        REPLICAS - MAX_UNAVAILABLE,
        worst.fewest_ready
    );
    let hash = k.jsonpath(
        "rs",
        "{.items[?(@.spec.template.spec.containers[0].image==\"busybox:2\")].metadata.labels.pod-template-hash}",
    );
    assert_eq!(
        worst.uids_by_hash.get(hash.trim()).map(BTreeSet::len),
        Some(REPLICAS),
        "exactly {REPLICAS} new pods were made, none extra"
    );
    drop(worst);

    for binary in &binaries {
        let k = Kubectl {
            binary,
            kubeconfig: &kubeconfig,
            namespace: "default".into(),
        };
        let history = k.ok(&["rollout", "history", "deployment/web"]);
        assert!(history.contains('1') && history.contains('2'), "{history}");
    }
    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    assert_eq!(
        k.jsonpath(
            "deployment/web",
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:1"
    );
    assert_eq!(
        k.jsonpath(
            "deployment/web",
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    k.ok(&["delete", "deployment", "web", "--timeout=120s"]);
}
