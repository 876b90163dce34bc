//! The node agent's pod workers against the real API router over the memory store, in one
//! process, with the in-memory runtime: pods run and report upstream's statuses, crashed
//! containers come back with back-off, missing sources and images say why, deleted pods are
//! stopped and removed, and a restarted agent adopts what runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_agent::pods::worker::Shared;
use skiff_agent::runtime::fake::{Behaviour, FakeRuntime};
use skiff_client::events::{Recorder, Reporter};
use skiff_cluster::InProcess;

const NODE: &str = "n1";

/// The agent's pods on `NODE`, until the handle is aborted.
fn start_agent(
    client: &Client,
    runtime: &Arc<FakeRuntime>,
    dir: &std::path::Path,
) -> tokio::task::JoinHandle<()> {
    let reporter = Reporter {
        component: skiff_agent::COMPONENT,
        instance: NODE.into(),
        host: Some(NODE.into()),
        action: |_| "",
    };
    let (recorder, events) = Recorder::new(client.clone(), reporter);
    let shared = Arc::new(Shared {
        client: client.clone(),
        runtime: runtime.clone(),
        node: NODE.into(),
        node_ip: "192.0.2.10".into(),
        runtime_name: "fake".into(),
        logs: dir.join("logs"),
        pods: dir.join("pods"),
        node_slice: format!("skiff-test-{}", std::process::id()),
        recorder,
        sync_frequency: Duration::from_secs(1),
        dns: skiff_agent::pods::dns::ClusterDns {
            server: Some("10.43.0.10".into()),
            domain: "cluster.local".into(),
        },
        host_ports: Default::default(),
        // (Mounting needs root; the fake runtime's tests do not.)
        secrets_in_memory: false,
    });
    tokio::spawn(async move {
        tokio::join!(events, skiff_agent::pods::run(shared));
    })
}

fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["nodeName"] = json!(NODE);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// Polls `check` every 50 ms for up to 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn status(pod: &Pod) -> Value {
    serde_json::to_value(pod.status.clone().unwrap_or_default()).unwrap()
}

struct World {
    _cluster: InProcess,
    _controllers: skiff_cluster::in_process::Controllers,
    client: Client,
    pods: Api<Pod>,
    runtime: Arc<FakeRuntime>,
    agent: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let cluster = InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let runtime = Arc::new(FakeRuntime::new());
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&cluster.client("node"), &runtime, dir.path());
    // The default service account and the root CA that every pod's token volume needs.
    let controllers = cluster.start_controllers();
    World {
        _controllers: controllers,
        pods: Api::namespaced(client.clone(), "default"),
        client,
        _cluster: cluster,
        runtime,
        agent,
        dir,
    }
}

/// The agent is stopped (aborted, and on these tests' multi-threaded runtime awaited) before
/// its directory is removed: left running, it could write a pod's volumes again into a
/// directory already gone. Its pod workers are aborted with it, though not awaited.
impl Drop for World {
    fn drop(&mut self) {
        self.agent.abort();
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_threaded && !self.agent.is_finished() {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(self.stop_agent())
            });
        }
    }
}

impl World {
    /// Stops the agent and waits until it has.
    async fn stop_agent(&mut self) {
        self.agent.abort();
        let _ = (&mut self.agent).await;
    }

    /// Creates the pod `name` with `spec` in `default`.
    async fn create(&self, name: &str, spec: Value) {
        self.pods
            .create(&PostParams::default(), &pod(name, spec))
            .await
            .unwrap();
    }

    async fn status_of(&self, name: &str) -> Value {
        status(&self.pods.get(name).await.unwrap())
    }

    /// "Reason: message" of each Event the kubelet reported in the default namespace.
    async fn kubelet_events(&self) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .filter(|e| e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet"))
            .filter_map(|e| {
                Some(format!(
                    "{}: {}",
                    e.reason.as_deref()?,
                    e.message.as_deref()?
                ))
            })
            .collect()
    }

    async fn wait_for(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) {
        eventually(what, || async { check(&self.status_of(name).await) }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_should_run_and_report_its_status_as_kubelet_does() {
    let w = world().await;
    w.create(
        "web",
        json!({"containers": [
            {"name": "b", "image": "busybox:1.36"}, {"name": "a", "image": "busybox:1.36"}]}),
    )
    .await;
    w.wait_for("web", "the pod running and ready", |s| {
        s["phase"] == "Running"
            && s["containerStatuses"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["ready"] == true))
    })
    .await;
    // A steady pod is not written again: several relists later its resourceVersion stands.
    let written = w.pods.get("web").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        w.pods.get("web").await.unwrap().metadata.resource_version,
        written,
        "a steady pod's status is not written again"
    );
    let status = w.status_of("web").await;
    assert!(
        status["podIP"].as_str().unwrap().starts_with("10.99."),
        "{status}"
    );
    assert_eq!(status["hostIP"], "192.0.2.10");
    assert_eq!(status["qosClass"], "BestEffort");
    let names: Vec<&str> = status["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "statuses are sorted by name");
    let first = &status["containerStatuses"][0];
    assert_eq!(first["ready"], true, "{status}");
    assert_eq!(first["started"], true);
    assert!(
        first["containerID"]
            .as_str()
            .unwrap()
            .starts_with("fake://")
    );
    assert!(first["state"]["running"]["startedAt"].is_string());
    let conditions: Vec<(String, String)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    for wanted in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ] {
        assert!(
            conditions.contains(&(wanted.into(), "True".into())),
            "{wanted}: {conditions:?}"
        );
    }
    // Pulled once: the image was not there, and the events say so.
    assert_eq!(w.runtime.pulls(), ["busybox:1.36"]);
    eventually("the kubelet's events", || async {
        let reasons = w.kubelet_events().await;
        reasons.contains(&"Started: Started container a".to_string())
            && reasons.contains(&"Created: Created container: b".to_string())
            && reasons.contains(&"Pulling: Pulling image \"busybox:1.36\"".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_probes_should_be_ready_in_the_same_status_that_says_running() {
    // kubelet writes phase Running with the container ready when nothing probes it: a client
    // that reads the pod once it runs and writes it back must not race a second status write.
    let w = world().await;
    w.create(
        "once",
        json!({"containers": [{"name": "a", "image": "busybox:1.36"}]}),
    )
    .await;
    let params = kube::api::WatchParams::default().fields("metadata.name=once");
    let mut events = Box::pin(w.pods.watch(&params, "0").await.unwrap());
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the pod to run within 30 s")
            .expect("the watch to go on")
            .unwrap();
        let (kube::api::WatchEvent::Added(pod) | kube::api::WatchEvent::Modified(pod)) = event
        else {
            continue;
        };
        let status = status(&pod);
        let ready = status["containerStatuses"][0]["ready"] == true;
        seen.push((status["phase"].clone(), ready));
        if status["phase"] == "Running" {
            assert!(ready, "Running before ready: {seen:?}");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_should_be_restarted_then_held_in_crash_loop_back_off() {
    let w = world().await;
    w.runtime.add_image("crash");
    w.runtime.set_image("crash", Behaviour::Exit(3));
    w.create(
        "crash",
        json!({"containers": [
            {"name": "c", "image": "crash", "imagePullPolicy": "IfNotPresent"}]}),
    )
    .await;
    w.wait_for("crash", "CrashLoopBackOff", |s| {
        s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    let status = w.status_of("crash").await;
    let container = &status["containerStatuses"][0];
    // The first restart is immediate; the next waits 10 s.
    assert_eq!(container["restartCount"], 1);
    let uid = w.pods.get("crash").await.unwrap().uid().unwrap();
    assert_eq!(
        container["state"]["waiting"]["message"],
        format!("back-off 10s restarting failed container=c pod=crash_default({uid})")
    );
    assert_eq!(container["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(container["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(status["phase"], "Running");
    assert_eq!(
        w.runtime.pulls(),
        Vec::<String>::new(),
        "a present image is not pulled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_must_not_restart_should_end_succeeded_or_failed() {
    let w = world().await;
    for (image, code) in [("ok", 0), ("bad", 1)] {
        w.runtime.add_image(image);
        w.runtime.set_image(image, Behaviour::Exit(code));
    }
    w.create(
        "done",
        json!({"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "ok", "imagePullPolicy": "Never"}]}),
    )
    .await;
    w.create(
        "failed",
        json!({"restartPolicy": "Never",
            "initContainers": [{"name": "setup", "image": "ok", "imagePullPolicy": "Never"}],
            "containers": [{"name": "c", "image": "bad", "imagePullPolicy": "Never"}]}),
    )
    .await;
    w.wait_for("done", "Succeeded", |s| s["phase"] == "Succeeded")
        .await;
    w.wait_for("failed", "Failed", |s| s["phase"] == "Failed")
        .await;
    let done = w.status_of("done").await;
    assert_eq!(
        done["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let ready = done["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("PodCompleted"))
    );
    let failed = w.status_of("failed").await;
    assert_eq!(
        failed["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        failed["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sources_and_images_should_say_why_and_recover() {
    let w = world().await;
    w.runtime.set_image("nowhere:1", Behaviour::Missing);
    w.create("config", json!({"containers": [
            {"name": "c", "image": "busybox:1.36", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "x"}}}]}]})).await;
    w.create(
        "image",
        json!({"containers": [
            {"name": "c", "image": "nowhere:1"}]}),
    )
    .await;
    w.wait_for("config", "CreateContainerConfigError", |s| {
        s["containerStatuses"][0]["state"]["waiting"]
            == json!({"reason": "CreateContainerConfigError", "message": "configmap \"settings\" not found"})
    })
    .await;
    w.wait_for("image", "ErrImagePull, then ImagePullBackOff", |s| {
        s["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;
    // Later wake-ups within the back-off say the same, not a message wrapping the last one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let waiting = w.status_of("image").await["containerStatuses"][0]["state"]["waiting"].clone();
    let message = waiting["message"].as_str().unwrap_or_default();
    assert_eq!(message.matches("ErrImagePull").count(), 1, "{waiting}");
    let maps: Api<ConfigMap> = Api::namespaced(w.client.clone(), "default");
    let settings: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"x": "1"}}))
            .unwrap();
    maps.create(&PostParams::default(), &settings)
        .await
        .unwrap();
    w.wait_for("config", "the pod running once its ConfigMap exists", |s| {
        s["phase"] == "Running"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_should_be_stopped_removed_and_then_gone_from_the_api() {
    let w = world().await;
    w.create(
        "web",
        json!({"terminationGracePeriodSeconds": 40, "containers": [
            {"name": "c", "image": "busybox:1.36"}]}),
    )
    .await;
    w.wait_for("web", "the pod running", |s| s["phase"] == "Running")
        .await;
    assert_eq!(w.runtime.sandbox_count(), 1);
    // The deletion's own grace period wins over the pod's.
    w.pods
        .delete("web", &DeleteParams::default().grace_period(7))
        .await
        .unwrap();
    eventually("the pod gone from the API", || async {
        w.pods.get_opt("web").await.unwrap().is_none()
    })
    .await;
    eventually("its sandbox removed", || async {
        w.runtime.sandbox_count() == 0
    })
    .await;
    assert_eq!(
        w.runtime.stop_timeouts(),
        [7],
        "stopped with the deletion's grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_should_adopt_running_pods_and_remove_unknown_ones() {
    let mut w = world().await;
    for name in ["keep", "gone"] {
        w.create(
            name,
            json!({"containers": [
                {"name": "c", "image": "busybox:1.36"}]}),
        )
        .await;
        w.wait_for(name, "the pod running", |s| s["phase"] == "Running")
            .await;
    }
    let keep = w.pods.get("keep").await.unwrap().uid().unwrap();
    let gone = w.pods.get("gone").await.unwrap().uid().unwrap();
    // (Down for good before anything changes: an agent still finishing its last steps could
    // otherwise see the deletion itself.)
    w.stop_agent().await;
    // While the agent is down, one pod is deleted for good (as `--grace-period=0 --force`).
    w.pods
        .delete(
            "gone",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    w.agent = start_agent(&w._cluster.client("node"), &w.runtime, w.dir.path());
    eventually("the deleted pod's containers removed", || async {
        w.runtime.attempts(&gone, "c") == 0 && w.runtime.sandbox_count() == 1
    })
    .await;
    // Adopted, not restarted: still one instance, restart count 0, still Running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.runtime.attempts(&keep, "c"), 1);
    let status = w.status_of("keep").await;
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["containerStatuses"][0]["restartCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_should_gate_readiness_and_restart_containers_that_fail_liveness() {
    let w = world().await;
    let exec = |command: &str| json!({"exec": {"command": [command]}, "periodSeconds": 1});
    let mut dying = exec("false");
    dying["failureThreshold"] = json!(2);
    w.create(
        "probed",
        json!({"containers": [
            {"name": "ready", "image": "busybox:1.36", "readinessProbe": exec("true")},
            {"name": "unready", "image": "busybox:1.36", "readinessProbe": exec("false")},
            {"name": "dying", "image": "busybox:1.36", "livenessProbe": dying},
        ]}),
    )
    .await;
    w.wait_for("probed", "the liveness probe restarting a container", |s| {
        let by_name = |name: &str| {
            s["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or_default()
        };
        by_name("ready")["ready"] == true
            && by_name("unready")["ready"] == false
            && by_name("unready")["started"] == true
            && by_name("dying")["restartCount"].as_i64() >= Some(1)
    })
    .await;
    let status = w.status_of("probed").await;
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(
        ready["message"], "containers with unready status: [unready]",
        "{ready}"
    );
    eventually("Unhealthy and Killing events", || async {
        let events = w.kubelet_events().await;
        events
            .iter()
            .any(|e| e.starts_with("Unhealthy: Readiness probe failed"))
            && events
                .iter()
                .any(|e| e.starts_with("Unhealthy: Liveness probe failed"))
            && events.contains(
                &"Killing: Container dying failed liveness probe, will be restarted".to_string(),
            )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_the_runtime_cannot_run_should_never_kill_a_container() {
    let w = world().await;
    w.create(
        "steady",
        json!({"containers": [{"name": "c", "image": "busybox:1.36", "livenessProbe":
                    {"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 1}}]}),
    )
    .await;
    w.wait_for("steady", "the pod running", |s| s["phase"] == "Running")
        .await;
    let uid = w.pods.get("steady").await.unwrap().uid().unwrap();
    // The runtime stops answering execs (containerd restarting): the probe errs, again and again.
    w.runtime.set_exec_unavailable(true);
    eventually("the probe's errors reported", || async {
        w.kubelet_events().await.iter().any(|e| {
            e.starts_with("Unhealthy: Liveness probe errored and resulted in unknown state")
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.runtime.set_exec_unavailable(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.runtime.attempts(&uid, "c"), 1, "the container was killed");
    let status = w.status_of("steady").await;
    assert_eq!(status["containerStatuses"][0]["restartCount"], 0);
    assert!(
        !w.kubelet_events()
            .await
            .iter()
            .any(|e| e.starts_with("Killing")),
        "{:?}",
        w.kubelet_events().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_should_end_pods_past_their_deadline_or_over_their_empty_dir_limit() {
    let mut w = world().await;
    let c = || json!([{"name": "c", "image": "busybox:1.36"}]);
    w.create(
        "brief",
        json!({"activeDeadlineSeconds": 2, "containers": c()}),
    )
    .await;
    w.create(
        "hoarder",
        json!({"containers": c(), "volumes": [
                    {"name": "scratch", "emptyDir": {"sizeLimit": "64Ki"}}]}),
    )
    .await;
    w.wait_for("hoarder", "the pod running", |s| s["phase"] == "Running")
        .await;
    let hoarder = w.pods.get("hoarder").await.unwrap().uid().unwrap();
    let scratch = w
        .dir
        .path()
        .join("pods")
        .join(&hoarder)
        .join("volumes/empty-dir/scratch");
    std::fs::write(scratch.join("big"), vec![7u8; 128 * 1024]).unwrap();
    w.wait_for("brief", "the pod past its deadline", |s| {
        s["phase"] == "Failed" && s["reason"] == "DeadlineExceeded"
    })
    .await;
    assert_eq!(
        w.status_of("brief").await["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    w.wait_for("hoarder", "the pod evicted", |s| {
        s["phase"] == "Failed" && s["reason"] == "Evicted"
    })
    .await;
    let status = w.status_of("hoarder").await;
    let message = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"64Ki\". ";
    assert_eq!(status["message"], message);
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| { c["type"] == "DisruptionTarget" && c["reason"] == "TerminationByKubelet" }),
        "{status}"
    );
    eventually("both Events", || async {
        let events = w.kubelet_events().await;
        events.contains(&format!("Evicted: {message}"))
            && events
                .iter()
                .any(|e| e.starts_with("DeadlineExceeded: Pod was active"))
    })
    .await;
    // Nothing of theirs runs again, also after the agent restarts.
    eventually("their containers stopped", || async {
        !w.runtime.running(&hoarder, "c")
    })
    .await;
    w.stop_agent().await;
    w.agent = start_agent(&w._cluster.client("node"), &w.runtime, w.dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.runtime.attempts(&hoarder, "c"), 1);
    assert!(!w.runtime.running(&hoarder, "c"));
    assert_eq!(w.status_of("hoarder").await["phase"], "Failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_should_have_the_nodes_address_and_become_ready() {
    let w = world().await;
    w.create(
        "on-host",
        json!({"hostNetwork": true, "containers": [{"name": "c", "image": "busybox:1.36",
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}]}),
    )
    .await;
    w.wait_for("on-host", "the pod Ready with the node's address", |s| {
        s["podIP"] == "192.0.2.10"
            && s["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_should_be_pulled_with_the_pods_pull_secret() {
    use base64::Engine;
    let w = world().await;
    w.runtime.set_image(
        "registry.example.com/team/app:1",
        Behaviour::Private("robot".into(), "s3cret".into()),
    );
    let config =
        json!({"auths": {"registry.example.com": {"username": "robot", "password": "s3cret"}}});
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config.to_string())}}))
    .unwrap();
    Api::<Secret>::namespaced(w.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let private = |name: &str, secrets: serde_json::Value| {
        pod(
            name,
            json!({"imagePullSecrets": secrets, "containers": [
                {"name": "c", "image": "registry.example.com/team/app:1"}]}),
        )
    };
    w.pods
        .create(&PostParams::default(), &private("without", json!([])))
        .await
        .unwrap();
    w.wait_for("without", "the pull refused", |s| {
        s["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    })
    .await;
    w.pods
        .create(
            &PostParams::default(),
            &private("with", json!([{"name": "pull"}])),
        )
        .await
        .unwrap();
    w.wait_for("with", "the pod running", |s| s["phase"] == "Running")
        .await;
    // The refused pull, in kubelet's Events.
    eventually("the Failed events", || async {
        let events = w.kubelet_events().await;
        events.iter().any(|e| {
            e.starts_with("Failed: Failed to pull image \"registry.example.com/team/app:1\"")
                && e.contains("authorization failed")
        }) && events.contains(&"Failed: Error: ErrImagePull".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_should_run_in_order_and_on_failure_should_restart_only_failures() {
    let w = world().await;
    for (image, code) in [("init-a", 0), ("init-b", 0), ("done", 0), ("fails", 1)] {
        w.runtime.add_image(image);
        w.runtime.set_image(image, Behaviour::Exit(code));
    }
    let never_pull =
        |name: &str, image: &str| json!({"name": name, "image": image, "imagePullPolicy": "Never"});
    w.create(
        "ordered",
        json!({"restartPolicy": "OnFailure",
                    "initContainers": [never_pull("a", "init-a"), never_pull("b", "init-b")],
                    "containers": [never_pull("ok", "done"), never_pull("flaky", "fails")]}),
    )
    .await;
    w.wait_for("ordered", "the failing container restarted", |s| {
        s["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "flaky" && c["restartCount"].as_i64() >= Some(1))
    })
    .await;
    let uid = w.pods.get("ordered").await.unwrap().uid().unwrap();
    let created = w.runtime.created(&uid);
    assert_eq!(created[..2], ["a", "b"], "{created:?}");
    assert_eq!(w.runtime.attempts(&uid, "a"), 1);
    assert_eq!(w.runtime.attempts(&uid, "b"), 1);
    // OnFailure: what succeeded stays done, what failed comes back; the pod is Running.
    assert_eq!(w.runtime.attempts(&uid, "ok"), 1);
    let status = w.status_of("ordered").await;
    assert_eq!(status["phase"], "Running");
    let ok = status["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ok")
        .unwrap();
    assert_eq!(ok["state"]["terminated"]["reason"], "Completed", "{ok}");
    assert_eq!(ok["restartCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_should_get_a_token_of_its_service_account_bound_to_it() {
    let w = world().await;
    let created = w
        .pods
        .create(
            &PostParams::default(),
            &pod(
                "api",
                json!({"containers": [{"name": "c", "image": "busybox:1.36"}]}),
            ),
        )
        .await
        .unwrap();
    // Admission: upstream's projected volume, mounted read-only in every container.
    let spec = serde_json::to_value(created.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec["serviceAccountName"], "default");
    let volume = &spec["volumes"][0];
    let volume_name = volume["name"].as_str().unwrap();
    assert!(volume_name.starts_with("kube-api-access-"), "{volume}");
    assert_eq!(volume_name.len(), "kube-api-access-".len() + 5);
    assert_eq!(
        spec["containers"][0]["volumeMounts"][0],
        json!({"name": volume_name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );
    w.wait_for("api", "the pod running", |s| s["phase"] == "Running")
        .await;
    // The node wrote the token, the CA and the namespace, and mounts them where clients look.
    let uid = created.uid().unwrap();
    let files = w
        .dir
        .path()
        .join("pods")
        .join(&uid)
        .join("volumes/projected")
        .join(volume_name);
    let read = |file: &str| std::fs::read_to_string(files.join(file)).unwrap();
    assert_eq!(read("namespace"), "default");
    assert_eq!(read("ca.crt"), skiff_cluster::in_process::IN_PROCESS_CA);
    let config = w.runtime.latest_config(&uid, "c").unwrap();
    assert!(
        config.mounts.iter().any(|m| m.container_path
            == "/var/run/secrets/kubernetes.io/serviceaccount"
            && m.readonly
            && m.host_path == files.display().to_string()),
        "{:?}",
        config.mounts
    );
    let env: Vec<(String, String)> = config
        .envs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert!(
        env.contains(&("KUBERNETES_SERVICE_PORT".into(), "443".into())),
        "{env:?}"
    );
    assert!(
        env.iter().any(|(k, _)| k == "KUBERNETES_SERVICE_HOST"),
        "{env:?}"
    );
    // The token names the pod's account while the pod lives, and nothing once it is gone.
    let review = |token: String| {
        let client = w.client.clone();
        async move {
            let request = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenReview", "spec": {"token": token}}))
                    .unwrap(),
                )
                .unwrap();
            client.request::<Value>(request).await.unwrap()["status"].clone()
        }
    };
    let status = review(read("token")).await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:default"
    );
    let token = read("token");
    w.pods
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod gone", || async {
        w.pods.get_opt("api").await.unwrap().is_none()
    })
    .await;
    let status = review(token).await;
    assert_eq!(status["authenticated"], false, "{status}");

    // An account that does not exist is refused; an opt-out gets no volume.
    let error = w
        .pods
        .create(
            &PostParams::default(),
            &pod(
                "nobody",
                json!({"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "busybox:1.36"}]}),
            ),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("{error}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"nobody\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"
    );
    let quiet = w
        .pods
        .create(
            &PostParams::default(),
            &pod(
                "quiet",
                json!({"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "busybox:1.36"}]}),
            ),
        )
        .await
        .unwrap();
    assert!(quiet.spec.unwrap().volumes.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_should_leave_its_termination_message_and_exit_reason_in_its_status() {
    let w = world().await;
    let created = w
        .pods
        .create(
            &PostParams::default(),
            &pod(
                "done",
                json!({"restartPolicy": "Never", "containers": [
                    {"name": "file", "image": "busybox:1.36", "terminationMessagePath": "/tmp/done"},
                    {"name": "oom", "image": "busybox:1.36"}]}),
            ),
        )
        .await
        .unwrap();
    w.wait_for("done", "the pod running", |s| s["phase"] == "Running")
        .await;
    let uid = created.uid().unwrap();
    // The file the container sees at its terminationMessagePath is one on the node.
    let config = w.runtime.latest_config(&uid, "file").unwrap();
    let file = config
        .mounts
        .iter()
        .find(|m| m.container_path == "/tmp/done")
        .expect("the termination-message file is mounted");
    assert!(!file.readonly);
    std::fs::write(&file.host_path, "all done, 3 items").unwrap();
    assert!(w.runtime.exit(&uid, "file", 0, ""));
    assert!(w.runtime.exit(&uid, "oom", 137, "OOMKilled"));
    w.wait_for("done", "the pod failed", |s| s["phase"] == "Failed")
        .await;
    let status = w.status_of("done").await;
    let terminated = |name: &str| {
        status["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()["state"]["terminated"]
            .clone()
    };
    assert_eq!(terminated("file")["message"], "all done, 3 items");
    assert_eq!(terminated("file")["reason"], "Completed");
    assert_eq!(terminated("oom")["reason"], "OOMKilled");
    assert_eq!(terminated("oom")["exitCode"], 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_lifecycle_hooks_should_be_reported_and_a_failed_post_start_should_kill() {
    let w = world().await;
    let failing = json!({"exec": {"command": ["false"]}});
    w.create(
        "hooked",
        json!({"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "busybox:1.36", "lifecycle": {"postStart": failing}}]}),
    )
    .await;
    w.wait_for("hooked", "the pod failed", |s| s["phase"] == "Failed")
        .await;
    eventually("the postStart failure reported", || async {
        w.kubelet_events().await.iter().any(|e| {
            e.starts_with("FailedPostStartHook: Exec lifecycle hook ([false]) for Container \"c\" in Pod \"hooked_default(")
        })
    })
    .await;
    w.create(
        "stopping",
        json!({"containers": [
                    {"name": "c", "image": "busybox:1.36", "lifecycle": {"preStop": failing}}]}),
    )
    .await;
    w.wait_for("stopping", "the pod running", |s| s["phase"] == "Running")
        .await;
    w.pods
        .delete("stopping", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod gone", || async {
        w.pods.get_opt("stopping").await.unwrap().is_none()
    })
    .await;
    assert!(
        w.kubelet_events()
            .await
            .iter()
            .any(|e| e.starts_with("FailedPreStopHook: Exec lifecycle hook ([false])")),
        "{:?}",
        w.kubelet_events().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_host_port_is_taken_should_be_rejected_and_never_run() {
    let w = world().await;
    let with_port = |name: &str| {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "busybox:1.36",
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        )
    };
    w.pods
        .create(&PostParams::default(), &with_port("first"))
        .await
        .unwrap();
    w.wait_for("first", "the first pod running", |s| {
        s["phase"] == "Running"
    })
    .await;
    w.pods
        .create(&PostParams::default(), &with_port("second"))
        .await
        .unwrap();
    w.wait_for("second", "the second pod rejected", |s| {
        s["phase"] == "Failed"
    })
    .await;
    let status = w.status_of("second").await;
    assert_eq!(status["reason"], "NodePorts");
    assert_eq!(
        status["message"],
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports: hostPort 8080/TCP is already used by pod default/first"
    );
    eventually("the NodePorts event", || async {
        w.kubelet_events()
            .await
            .iter()
            .any(|e| e.starts_with("NodePorts: Predicate NodePorts failed"))
    })
    .await;
    // Once the first pod is gone, the port is free, but a rejected pod stays rejected: it
    // never runs (a third pod asking for the port gets it).
    w.pods
        .delete("first", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the first pod gone", || async {
        w.pods.get_opt("first").await.unwrap().is_none()
    })
    .await;
    w.pods
        .create(&PostParams::default(), &with_port("third"))
        .await
        .unwrap();
    w.wait_for("third", "the third pod running", |s| {
        s["phase"] == "Running"
    })
    .await;
    assert_eq!(w.status_of("second").await["phase"], "Failed");
    assert!(
        w.status_of("second").await["containerStatuses"].is_null(),
        "the rejected pod never ran"
    );
    // Deleting the rejected pod removes it from the API.
    w.pods
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the rejected pod gone", || async {
        w.pods.get_opt("second").await.unwrap().is_none()
    })
    .await;
}
