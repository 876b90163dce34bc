//! The scheduler and simulated nodes against the real API router over the in-memory store, in
//! one process: pods are bound and run, a pod that fits nowhere says why and runs once a node
//! that fits appears, and a scheduler restarted in the middle of a burst binds every pod
//! exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_cluster::InProcess;
use tokio::sync::oneshot;

/// Simulated nodes running until the returned sender is dropped or fired.
fn sim_nodes(client: &Client, prefix: &str, count: usize, cpu: &str) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let options = skiff_sim_nodes::Options {
        count,
        prefix: prefix.into(),
        shape: skiff_sim_nodes::Shape {
            cpu: cpu.into(),
            ..skiff_sim_nodes::Shape::default()
        },
    };
    let client = client.clone();
    tokio::spawn(async move {
        skiff_sim_nodes::run(client, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    stop
}

fn pod(name: &str, cpu: &str, extra: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu}}}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
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

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_should_be_bound_to_simulated_nodes_and_run() {
    let cluster = InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let _nodes = sim_nodes(&client, "sim-", 3, "4");
    let _scheduler = cluster.start_scheduler(skiff_scheduler::Options::default());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..9 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), "1", json!({})),
        )
        .await
        .unwrap();
    }
    eventually("nine running pods", || async {
        let list = pods.list(&ListParams::default()).await.unwrap();
        list.items.iter().filter(|p| running(p)).count() == 9
    })
    .await;
    let list = pods.list(&ListParams::default()).await.unwrap();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in &list.items {
        *per_node.entry(node_of(p).unwrap()).or_default() += 1;
        let status = p.status.as_ref().unwrap();
        assert!(
            status.pod_ip.as_deref().unwrap().starts_with("10.64."),
            "{status:?}"
        );
        assert!(status.container_statuses.as_ref().unwrap()[0].ready);
    }
    // Least-allocated spreads equal pods evenly over equal nodes.
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{per_node:?}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("a Scheduled event per pod", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count()
            == 9
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_should_say_why_and_run_once_a_node_fits() {
    let cluster = InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let small = sim_nodes(&client, "small-", 2, "2");
    let _scheduler = cluster.start_scheduler(skiff_scheduler::Options::default());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("big", "4", json!({})))
        .await
        .unwrap();
    let expected = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling. Needs 4 CPUs; the largest free share on any node is 2 CPUs (node small-0).";
    eventually("the Unschedulable condition", || async {
        let pod = pods.get("big").await.unwrap();
        let conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(expected)
        })
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("a FailedScheduling event", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref() == Some(expected)
                && e.involved_object.name.as_deref() == Some("big")
        })
    })
    .await;
    let _big = sim_nodes(&client, "big-", 1, "8");
    eventually("the pod running on the big node", || async {
        let pod = pods.get("big").await.unwrap();
        running(&pod) && node_of(&pod).as_deref() == Some("big-0")
    })
    .await;
    // Simulated nodes remove what they created, and nothing else.
    drop(small);
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the small nodes removed", || async {
        let names: Vec<String> = nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        names == ["big-0"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_higher_priority_should_preempt_lower_ones_and_run_in_their_place() {
    let cluster = InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    for (name, value) in [("low", 10), ("high", 1000)] {
        let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        classes
            .create(
                &PostParams::default(),
                &serde_json::from_value(class).unwrap(),
            )
            .await
            .unwrap();
    }
    let _nodes = sim_nodes(&client, "one-", 1, "3");
    let _scheduler = cluster.start_scheduler(skiff_scheduler::Options::default());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, cpu) in [("low-a", "1"), ("low-b", "1"), ("low-c", "1")] {
        pods.create(
            &PostParams::default(),
            &pod(name, cpu, json!({"priorityClassName": "low"})),
        )
        .await
        .unwrap();
    }
    eventually("three low-priority pods running", || async {
        let list = pods.list(&ListParams::default()).await.unwrap();
        list.items.iter().filter(|p| running(p)).count() == 3
    })
    .await;
    let version = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = pods
        .watch(&WatchParams::default(), &version)
        .await
        .unwrap()
        .boxed();
    pods.create(
        &PostParams::default(),
        &pod("high", "2", json!({"priorityClassName": "high"})),
    )
    .await
    .unwrap();
    // Two of the three make room; the pod takes their node, nominated for it first.
    let mut marked = Vec::new();
    let mut deleted = Vec::new();
    let mut nominated = false;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the preemption to finish within 30 s")
    {
        match event.unwrap() {
            WatchEvent::Modified(p) => {
                let status = p.status.clone().unwrap_or_default();
                if p.name_any() == "high" {
                    nominated |= status.nominated_node_name.as_deref() == Some("one-0");
                    if running(&p) {
                        break;
                    }
                }
                let disrupted = status.conditions.unwrap_or_default().iter().any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.reason.as_deref() == Some("PreemptionByScheduler")
                        && c.message.as_deref()
                            == Some("default-scheduler: preempting to accommodate a higher priority pod")
                });
                if disrupted && !marked.contains(&p.name_any()) {
                    marked.push(p.name_any());
                }
            }
            WatchEvent::Deleted(p) => deleted.push(p.name_any()),
            _ => {}
        }
    }
    assert!(nominated, "the pod was never nominated for one-0");
    assert_eq!(marked.len(), 2, "{marked:?}");
    marked.sort();
    deleted.sort();
    assert_eq!(marked, deleted);
    let high = pods.get("high").await.unwrap();
    assert_eq!(node_of(&high).as_deref(), Some("one-0"));
    let left = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(left.items.len(), 2, "one low-priority pod stays");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let uid = high.uid().unwrap();
    eventually("a Preempted event per victim", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Preempted")
                    && e.message.as_deref()
                        == Some(format!("Preempted by pod {uid} on node one-0").as_str())
            })
            .count()
            == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_restarted_in_a_burst_should_bind_every_pod_exactly_once() {
    let cluster = InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let _nodes = sim_nodes(&client, "sim-", 5, "32");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Every change of every pod's nodeName, as a watch sees it.
    let mut watch = pods
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let recorder = tokio::spawn(async move {
        let mut bindings: HashMap<String, Vec<String>> = HashMap::new();
        while let Some(Ok(event)) = watch.next().await {
            if let WatchEvent::Added(pod) | WatchEvent::Modified(pod) = event {
                if let Some(node) = node_of(&pod) {
                    let seen = bindings.entry(pod.name_any()).or_default();
                    if seen.last() != Some(&node) {
                        seen.push(node);
                    }
                }
                if bindings.len() == 300 && bindings.values().all(|b| !b.is_empty()) {
                    return bindings;
                }
            }
        }
        bindings
    });
    let mut schedulers: HashMap<&str, _> = ["first", "second"]
        .into_iter()
        .map(|identity| {
            let options = skiff_scheduler::Options {
                identity: identity.into(),
                ..skiff_scheduler::Options::default()
            };
            (identity, cluster.start_scheduler(options))
        })
        .collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    for i in 0..300 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), "100m", json!({})),
        )
        .await
        .unwrap();
        if i == 100 {
            // The leader stops mid-burst; the standby takes over once the Lease expires.
            let lease = leases.get("kube-scheduler").await.unwrap();
            let leader = lease.spec.unwrap().holder_identity.unwrap();
            schedulers.remove(leader.as_str()).unwrap().stop().await;
        }
    }
    let bindings = tokio::time::timeout(Duration::from_secs(60), recorder)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bindings.len(), 300);
    for (pod, nodes) in &bindings {
        assert_eq!(nodes.len(), 1, "{pod} was bound more than once: {nodes:?}");
    }
    for (_, scheduler) in schedulers {
        scheduler.stop().await;
    }
}
