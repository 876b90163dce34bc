//! The EndpointSlice controller (with the scheduler and simulated nodes that give pods IPs and
//! readiness) against the real API router over the in-memory store: a Service's slice and
//! Endpoints follow its pods as they come, stop matching and go; a Service without a selector
//! is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::eventually;

async fn pod(pods: &Api<Pod>, name: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// (ready addresses, port) across the Service's slices.
async fn sliced(slices: &Api<EndpointSlice>, service: &str) -> (Vec<String>, Vec<i32>) {
    let listed = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap()
        .items;
    let mut ready: Vec<String> = listed
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .map(|e| e.addresses[0].clone())
        .collect();
    ready.sort();
    let ports = listed
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.port)
        .collect();
    (ready, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_and_endpoints_should_follow_the_pods_a_service_selects() {
    let sim = support::sim_cluster(2).await;
    let client: Client = sim.cluster.client("test");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        pod(&pods, name).await;
    }
    let ip = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.get(name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.pod_ip)
                .unwrap_or_default()
        }
    };
    eventually("three ready endpoints on port 8080", || async {
        let (ready, ports) = sliced(&slices, "web").await;
        ready.len() == 3 && ports == [8080]
    })
    .await;
    let mut ips = vec![ip("a").await, ip("b").await, ip("c").await];
    ips.sort();
    assert_eq!(sliced(&slices, "web").await.0, ips);
    eventually("the Endpoints mirrored", || async {
        endpoints.get_opt("web").await.unwrap().is_some_and(|e| {
            e.subsets
                .unwrap_or_default()
                .iter()
                .map(|s| s.addresses.clone().unwrap_or_default().len())
                .sum::<usize>()
                == 3
        })
    })
    .await;

    // A pod that stops matching leaves the slice (nothing else happens meanwhile), then a pod
    // that goes.
    let b = ip("b").await;
    let c = ip("c").await;
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    eventually("a relabelled away", || async {
        let mut left = vec![b.clone(), c.clone()];
        left.sort();
        sliced(&slices, "web").await.0 == left
    })
    .await;
    pods.delete("c", &DeleteParams::default()).await.unwrap();
    eventually("only b left", || async {
        sliced(&slices, "web").await.0 == [b.clone()]
    })
    .await;
    assert!(
        slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=manual"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "a Service without a selector is its user's"
    );
    let owner = &slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap()
        .items[0];
    assert_eq!(owner.owner_references()[0].name, "web");
}
