//! The DaemonSet controller (with the scheduler and simulated nodes that run pods) against the
//! real API router over the in-memory store: one pod per node placed through node affinity,
//! nodes that stop being eligible, cordoned nodes, and rolling updates that keep within
//! maxUnavailable or maxSurge at every sampled moment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::eventually;

struct World {
    _sim: support::SimCluster,
    sets: Api<DaemonSet>,
    pods: Api<Pod>,
    nodes: Api<Node>,
}

async fn world() -> World {
    let sim = support::sim_cluster(3).await;
    let client: Client = sim.cluster.client("test");
    let world = World {
        sets: Api::namespaced(client.clone(), "default"),
        pods: Api::namespaced(client.clone(), "default"),
        nodes: Api::all(client),
        _sim: sim,
    };
    eventually("three nodes", || async {
        world
            .nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 3
    })
    .await;
    world
}

fn daemon_set(name: &str, strategy: Value) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}},
        },
    }))
    .unwrap()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl World {
    async fn status(&self, name: &str) -> Value {
        serde_json::to_value(self.sets.get(name).await.unwrap().status).unwrap()
    }

    /// Node → images of the live pods bound there.
    async fn placed(&self) -> BTreeMap<String, Vec<String>> {
        let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pod in self.pods.list(&ListParams::default()).await.unwrap().items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let spec = pod.spec.unwrap_or_default();
            placed
                .entry(spec.node_name.unwrap_or_default())
                .or_default()
                .push(spec.containers[0].image.clone().unwrap_or_default());
        }
        placed
    }

    async fn settled(&self, name: &str, nodes: i64) -> bool {
        let status = self.status(name).await;
        status["desiredNumberScheduled"] == nodes
            && status["numberAvailable"] == nodes
            && status["updatedNumberScheduled"] == nodes
            && status["currentNumberScheduled"] == nodes
            && self.placed().await.values().all(|p| p.len() == 1)
    }

    async fn taint(&self, node: &str, taints: Value) {
        let patch = json!({"spec": {"taints": taints}});
        self.nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn set_image(&self, name: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        self.sets
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
    }

    /// Samples the pods until `done`: the most live pods and the fewest nodes with a ready pod.
    fn sample(&self, done: Arc<AtomicBool>) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let most = Arc::new(AtomicUsize::new(0));
        let fewest_ready_nodes = Arc::new(AtomicUsize::new(usize::MAX));
        let (pods, m, f) = (self.pods.clone(), most.clone(), fewest_ready_nodes.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let listed = pods.list(&ListParams::default()).await.unwrap().items;
                let live: Vec<&Pod> = listed
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                m.fetch_max(live.len(), Ordering::Relaxed);
                let mut nodes: Vec<String> = live
                    .iter()
                    .filter(|p| ready(p))
                    .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                    .collect();
                nodes.sort();
                nodes.dedup();
                f.fetch_min(nodes.len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        (most, fewest_ready_nodes)
    }
}

#[tokio::test]
async fn a_daemon_set_should_run_one_pod_on_each_eligible_node_and_follow_the_nodes() {
    let w = world().await;
    w.sets
        .create(&PostParams::default(), &daemon_set("agent", json!({})))
        .await
        .unwrap();
    eventually("a pod on each node", || w.settled("agent", 3)).await;
    let placed = w.placed().await;
    assert_eq!(
        placed.keys().cloned().collect::<Vec<_>>(),
        ["sim-0", "sim-1", "sim-2"]
    );
    let pod = &w.pods.list(&ListParams::default()).await.unwrap().items[0];
    let terms = &pod
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    assert_eq!(
        terms[0].match_fields.as_ref().unwrap()[0].key,
        "metadata.name",
        "placed by the scheduler through node affinity"
    );

    // A cordon does not move daemon pods; an untolerated NoExecute taint does.
    w.nodes
        .patch(
            "sim-0",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    w.taint(
        "sim-1",
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]),
    )
    .await;
    eventually("sim-1 without its pod", || async {
        let placed = w.placed().await;
        !placed.contains_key("sim-1")
            && placed.contains_key("sim-0")
            && w.status("agent").await["desiredNumberScheduled"] == 2
    })
    .await;
    w.taint("sim-1", json!([])).await;
    eventually("sim-1 with its pod again", || w.settled("agent", 3)).await;
}

/// Creates the DaemonSet `agent` with `strategy`, updates its image once its pods run, and
/// returns what sampling saw during the update: (most live pods, fewest nodes with a ready pod).
async fn sampled_update(strategy: Value) -> (usize, usize) {
    let w = world().await;
    w.sets
        .create(&PostParams::default(), &daemon_set("agent", strategy))
        .await
        .unwrap();
    eventually("a pod on each node", || w.settled("agent", 3)).await;
    let done = Arc::new(AtomicBool::new(false));
    let (most, fewest) = w.sample(done.clone());
    w.set_image("agent", "busybox:2").await;
    eventually("the update", || async {
        w.settled("agent", 3).await
            && w.placed()
                .await
                .values()
                .all(|images| images == &["busybox:2"])
    })
    .await;
    done.store(true, Ordering::Relaxed);
    (most.load(Ordering::Relaxed), fewest.load(Ordering::Relaxed))
}

#[tokio::test]
async fn a_rolling_update_should_leave_at_most_max_unavailable_nodes_without_a_ready_pod() {
    let (most, fewest) =
        sampled_update(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}))
            .await;
    assert!(most <= 3, "no surge: {most} pods");
    assert!(fewest >= 2, "nodes with a ready pod at least: {fewest}");
}

#[tokio::test]
async fn a_surging_update_should_start_the_new_pod_before_stopping_the_old() {
    let (most, fewest) = sampled_update(
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
    )
    .await;
    assert!(most <= 4, "pods at most: {most}");
    assert_eq!(fewest, 3, "every node kept a ready pod");
}

#[tokio::test]
async fn on_delete_should_leave_old_pods_until_they_are_deleted() {
    let w = world().await;
    w.sets
        .create(
            &PostParams::default(),
            &daemon_set("agent", json!({"type": "OnDelete"})),
        )
        .await
        .unwrap();
    eventually("a pod on each node", || w.settled("agent", 3)).await;
    w.set_image("agent", "busybox:2").await;
    eventually("the new revision seen", || async {
        w.status("agent").await["updatedNumberScheduled"] == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        w.placed()
            .await
            .values()
            .all(|images| images == &["busybox:1"])
    );
    let victim = w
        .pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("sim-2"))
        .unwrap();
    w.pods
        .delete(&victim.name_any(), &Default::default())
        .await
        .unwrap();
    eventually("sim-2 on the new template", || async {
        w.placed().await.get("sim-2") == Some(&vec!["busybox:2".to_string()])
    })
    .await;
    assert_eq!(
        w.placed().await.get("sim-0"),
        Some(&vec!["busybox:1".to_string()])
    );
}
