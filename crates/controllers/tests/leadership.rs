//! Two controller managers over one API: one leads (holds the Lease and runs the controllers),
//! and when it stops, it gives the Lease up and the other takes over at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::eventually;
use tokio::sync::oneshot;

fn manager(client: kube::Client, identity: &str) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let options = skiff_controllers::Options {
        identity: identity.into(),
        ..skiff_controllers::Options::default()
    };
    tokio::spawn(skiff_controllers::run_until(client, options, async {
        let _ = stopped.await;
    }));
    stop
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(skiff_controllers::LEASE_NAME)
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> usize {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

fn replica_set(name: &str) -> ReplicaSet {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_manager_should_lead_and_a_standby_take_over_when_it_stops() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let leases: Api<Lease> = Api::namespaced(client.clone(), skiff_controllers::LEASE_NAMESPACE);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first = manager(cluster.client("controllers"), "first");
    eventually("first leads", || async {
        holder(&leases).await.as_deref() == Some("first")
    })
    .await;
    let second = manager(cluster.client("controllers"), "second");
    sets.create(&PostParams::default(), &replica_set("one"))
        .await
        .unwrap();
    eventually("a pod from the leader", || async {
        pods_of(&pods, "one").await == 1
    })
    .await;
    // Both would make a pod each if both ran: one stays one.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(pods_of(&pods, "one").await, 1);
    assert_eq!(holder(&leases).await.as_deref(), Some("first"));

    first.send(()).unwrap();
    eventually("second leads", || async {
        holder(&leases).await.as_deref() == Some("second")
    })
    .await;
    sets.create(&PostParams::default(), &replica_set("two"))
        .await
        .unwrap();
    eventually("a pod from the new leader", || async {
        pods_of(&pods, "two").await == 1
    })
    .await;
    drop(second);
}
