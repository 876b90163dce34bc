//! The pod garbage collector against the real API router over the in-memory store, with short
//! periods: a pod bound to a node that does not exist is deleted after the quarantine, and the
//! oldest finished pods beyond the threshold go while running ones stay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_controllers::pod_gc;
use support::eventually;

async fn pod(client: &Client, name: &str, node: &str, phase: Option<&str>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    if let Some(phase) = phase {
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase}})),
        )
        .await
        .unwrap();
    }
}

async fn names(client: &Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_gone_nodes_and_the_oldest_finished_pods_beyond_the_threshold_should_go() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "here"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    pod(&client, "stranded", "ghost", None).await;
    pod(&client, "running", "here", Some("Running")).await;
    for name in ["done-a", "done-b", "done-c"] {
        pod(&client, name, "here", Some("Succeeded")).await;
    }
    pod(&client, "failed-d", "here", Some("Failed")).await;
    let options = pod_gc::Options {
        period: Duration::from_millis(100),
        quarantine: Duration::from_millis(300),
        terminated_threshold: 2,
    };
    let controllers = cluster.client("controllers");
    let (pods, feed) = skiff_controllers::shared_pods::SharedPods::start(&controllers);
    let feed = tokio::spawn(feed);
    let (nodes, nodes_feed) = skiff_controllers::shared_nodes::start(&controllers);
    let nodes_feed = tokio::spawn(nodes_feed);
    let collector = tokio::spawn(pod_gc::run(controllers, options, pods.store(), nodes));
    eventually(
        "the stranded pod and the two oldest finished pods gone",
        || async { names(&client).await == ["done-c", "failed-d", "running"] },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        names(&client).await,
        ["done-c", "failed-d", "running"],
        "nothing more goes"
    );
    collector.abort();
    feed.abort();
    nodes_feed.abort();
}
