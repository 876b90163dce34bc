//! What every namespace gets, against the real API router over the in-memory store: the
//! service-account controller's `default` ServiceAccount and the root-CA publisher's
//! `kube-root-ca.crt` ConfigMap, both in namespaces made after the controllers started, both put
//! back when deleted (the ConfigMap also when changed), and neither made in a terminating
//! namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controllers::{root_ca, service_account};
use support::eventually;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

async fn namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_should_get_a_default_account_and_the_root_ca_and_keep_them() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let accounts = tokio::spawn(service_account::run(cluster.client("controllers")));
    let publisher = tokio::spawn(root_ca::run(cluster.client("controllers"), CA.into()));
    namespace(&client, "team-a").await;
    let account: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    let ca_of = |map: Option<ConfigMap>| {
        map.and_then(|m| m.data)
            .and_then(|d| d.get(root_ca::KEY).cloned())
    };
    eventually("team-a's account and CA", || async {
        account.get_opt("default").await.unwrap().is_some()
            && ca_of(maps.get_opt(root_ca::NAME).await.unwrap()).as_deref() == Some(CA)
    })
    .await;
    // Existing namespaces too.
    let default_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    eventually("default's CA", || async {
        ca_of(default_maps.get_opt(root_ca::NAME).await.unwrap()).as_deref() == Some(CA)
    })
    .await;

    // Deleted: back. Changed: put right.
    let first = account.get("default").await.unwrap().metadata.uid;
    account
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    maps.delete(root_ca::NAME, &DeleteParams::default())
        .await
        .unwrap();
    eventually("both back", || async {
        account
            .get_opt("default")
            .await
            .unwrap()
            .is_some_and(|a| a.metadata.uid != first)
            && ca_of(maps.get_opt(root_ca::NAME).await.unwrap()).as_deref() == Some(CA)
    })
    .await;
    maps.patch(
        root_ca::NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {root_ca::KEY: "tampered"}})),
    )
    .await
    .unwrap();
    eventually("the CA put right", || async {
        ca_of(maps.get_opt(root_ca::NAME).await.unwrap()).as_deref() == Some(CA)
    })
    .await;

    // A namespace being deleted gets nothing new: its ServiceAccount is not made again.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            "team-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold"]}})),
        )
        .await
        .unwrap();
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    account
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        account.get_opt("default").await.unwrap().is_none(),
        "an account made in a terminating namespace"
    );
    accounts.abort();
    publisher.abort();
}
