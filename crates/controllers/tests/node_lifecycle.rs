//! The node-lifecycle controller against the real API router over the in-memory store, with a
//! one-second grace period: a node whose Lease stops being renewed is marked Unknown and tainted,
//! its pods evicted as their tolerations say, and untainted once it reports Ready again; a node
//! that keeps renewing is left alone; a pod of a node that does not exist is removed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_controllers::node_lifecycle::{self, Timing, UNREACHABLE};
use skiff_controllers::shared_nodes;
use support::eventually;

/// The controller over a node cache of its own, as the controller manager runs it.
fn start(cluster: &skiff_cluster::InProcess, timing: Timing) -> tokio::task::JoinHandle<()> {
    let client = cluster.client("controllers");
    let (nodes, feed) = shared_nodes::start(&client);
    tokio::spawn(async move {
        tokio::join!(feed, node_lifecycle::run(client, timing, nodes));
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

async fn node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    report_ready(client, name).await;
    renew(client, name).await;
}

async fn report_ready(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn renew(client: &Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "renewTime": now()}});
    leases
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(lease),
        )
        .await
        .unwrap();
}

async fn pod(client: &Client, name: &str, node: &str, tolerations: Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations,
                 "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn deleting(client: &Client, name: &str) -> bool {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.get_opt(name)
        .await
        .unwrap()
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

async fn state(client: &Client, name: &str) -> (String, Vec<String>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(name).await.unwrap();
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status)
        .unwrap_or_default();
    let taints = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    (ready, taints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_should_be_tainted_and_its_pods_evicted_as_they_tolerate() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    node(&client, "alive").await;
    node(&client, "silent").await;
    pod(
        &client,
        "at-once",
        "silent",
        json!([{"key": UNREACHABLE, "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 0}]),
    )
    .await;
    pod(&client, "patient", "silent", json!([])).await;
    pod(&client, "elsewhere", "alive", json!([])).await;
    let timing = Timing {
        grace: Duration::from_secs(1),
        period: Duration::from_millis(200),
        eviction_interval: Duration::ZERO,
    };
    let controller = start(&cluster, timing);
    let keep_alive = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                renew(&client, "alive").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eventually("the silent node Unknown and tainted", || async {
        let (ready, taints) = state(&client, "silent").await;
        ready == "Unknown"
            && taints.contains(&format!("{UNREACHABLE}:NoExecute"))
            && taints.contains(&format!("{UNREACHABLE}:NoSchedule"))
    })
    .await;
    eventually("the pod that tolerates 0 s evicted", || async {
        deleting(&client, "at-once").await
    })
    .await;
    // The API's default toleration (300 s) keeps the other one, and the healthy node's.
    assert!(!deleting(&client, "patient").await);
    assert!(!deleting(&client, "elsewhere").await);
    assert_eq!(
        state(&client, "alive").await,
        ("True".into(), Vec::<String>::new())
    );

    // The node comes back: its taints go.
    renew(&client, "silent").await;
    report_ready(&client, "silent").await;
    eventually("untainted", || async {
        state(&client, "silent").await == ("True".into(), Vec::<String>::new())
    })
    .await;
    keep_alive.abort();
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nodes_should_be_tainted_no_execute_one_per_eviction_interval() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    node(&client, "first").await;
    node(&client, "second").await;
    let timing = Timing {
        grace: Duration::from_millis(500),
        period: Duration::from_millis(100),
        eviction_interval: Duration::from_secs(2),
    };
    let controller = start(&cluster, timing);
    let no_execute = |taints: &[String]| taints.contains(&format!("{UNREACHABLE}:NoExecute"));
    eventually("one node tainted NoExecute", || async {
        no_execute(&state(&client, "first").await.1)
            || no_execute(&state(&client, "second").await.1)
    })
    .await;
    let one_at = std::time::Instant::now();
    let both = || async {
        no_execute(&state(&client, "first").await.1)
            && no_execute(&state(&client, "second").await.1)
    };
    // Both are Unknown and NoSchedule at once; the second NoExecute waits its turn.
    assert!(!both().await);
    eventually("both tainted NoExecute", both).await;
    assert!(
        one_at.elapsed() >= Duration::from_millis(1500),
        "the second came after {:?}",
        one_at.elapsed()
    );
    controller.abort();
}
