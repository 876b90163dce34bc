//! The garbage collector and the namespace controller against the real API router over the
//! in-memory store, in one process, driven by a kube-rs client exactly as users drive them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::eventually;

/// A fresh API; the controllers are started by each test when it wants them.
async fn cluster() -> Client {
    skiff_cluster::InProcess::start()
        .await
        .unwrap()
        .client("controllers")
}

fn start_controllers(client: &Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(skiff_controllers::run(
        client.clone(),
        skiff_controllers::Options::default(),
    ))
}

async fn config_map(
    api: &Api<ConfigMap>,
    name: &str,
    owners: &[&ConfigMap],
    extra: serde_json::Value,
) -> ConfigMap {
    let owner_refs: Vec<_> = owners
        .iter()
        .map(|o| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o.name_any(),
                   "uid": o.uid().unwrap(), "blockOwnerDeletion": true})
        })
        .collect();
    let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owner_refs}});
    if let Some(finalizers) = extra.get("finalizers") {
        object["metadata"]["finalizers"] = finalizers.clone();
    }
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap()
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap().is_none()
}

fn delete_with(policy: &str) -> DeleteParams {
    match policy {
        "Foreground" => DeleteParams::foreground(),
        "Orphan" => DeleteParams::orphan(),
        _ => DeleteParams::background(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_statuses_should_report_the_controllers_from_their_lease() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let statuses: Api<k8s_openapi::api::core::v1::ComponentStatus> = Api::all(client);
    let healthy = || async {
        let status = statuses.get("controller-manager").await.unwrap();
        let condition = &status.conditions.unwrap_or_default()[0];
        (condition.status == "True", condition.clone())
    };
    let (up, condition) = healthy().await;
    assert!(!up, "no controllers run yet: {condition:?}");
    assert!(
        condition
            .error
            .unwrap_or_default()
            .contains("does not exist"),
        "the error names the missing lease"
    );
    let controllers = cluster.start_controllers();
    eventually("the controllers renew their lease", || async {
        healthy().await.0
    })
    .await;
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_should_collect_dependents_but_keep_those_with_a_live_owner() {
    let client = cluster().await;
    let _controllers = start_controllers(&client);
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = config_map(&cms, "owner", &[], json!({})).await;
    let other = config_map(&cms, "other", &[], json!({})).await;
    config_map(&cms, "child", &[&owner], json!({})).await;
    config_map(&cms, "shared", &[&owner, &other], json!({})).await;
    cms.delete("owner", &delete_with("Background"))
        .await
        .unwrap();
    eventually("the child is collected", || gone(&cms, "child")).await;
    eventually(
        "the shared dependent drops its dangling reference",
        || async { cms.get("shared").await.unwrap().owner_references().len() == 1 },
    )
    .await;
    assert_eq!(
        cms.get("shared").await.unwrap().owner_references()[0].name,
        "other"
    );
}

/// A client whose requests are recorded (`METHOD path`) before they reach the API.
fn recorded_client(cluster: &skiff_cluster::InProcess) -> (Client, Arc<Mutex<Vec<String>>>) {
    use tower::ServiceExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = skiff_apiserver::for_component(cluster.router.clone(), "controllers");
    let record = Arc::clone(&seen);
    let service = tower::service_fn(move |request: http::Request<axum::body::Body>| {
        record
            .lock()
            .unwrap()
            .push(format!("{} {}", request.method(), request.uri().path()));
        router.clone().oneshot(request)
    });
    (skiff_client::in_process(service, "default"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_dependents_of_an_owner_the_collector_has_seen_should_cost_it_no_reads() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let (collector, requests) = recorded_client(&cluster);
    let _controllers = start_controllers(&collector);
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = config_map(&cms, "owner", &[], json!({})).await;
    // Once the collector has seen the owner (its dependent's check reads nothing of it)...
    config_map(&cms, "first", &[&owner], json!({})).await;
    let before_owner = |requests: &Arc<Mutex<Vec<String>>>| {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/namespaces/default/configmaps/"))
            .count()
    };
    let sentinel = config_map(&cms, "sentinel", &[], json!({})).await;
    let mut dangling = sentinel.clone();
    dangling.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
    config_map(&cms, "dangling", &[&dangling], json!({})).await;
    eventually(
        "a dependent of an unseen owner is checked and collected",
        || gone(&cms, "dangling"),
    )
    .await;
    let reads = before_owner(&requests);
    // ...twenty more dependents of it are not checked through the API.
    for i in 0..20 {
        config_map(&cms, &format!("child-{i}"), &[&owner], json!({})).await;
    }
    // A dependent of an owner it has not seen is, and goes: after it, the collector has
    // handled every change before it.
    config_map(&cms, "dangling", &[&dangling], json!({})).await;
    eventually("the second dangling dependent is collected", || {
        gone(&cms, "dangling")
    })
    .await;
    let added = before_owner(&requests) - reads;
    assert!(
        added <= 3,
        "the collector read {added} config maps for 20 dependents of a seen owner and one dangling one"
    );
    cms.delete("owner", &delete_with("Background"))
        .await
        .unwrap();
    eventually("the seen owner's dependents go with it", || async {
        gone(&cms, "child-19").await && gone(&cms, "first").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_reference_with_a_stale_uid_should_not_protect_the_dependent() {
    let client = cluster().await;
    let _controllers = start_controllers(&client);
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let first = config_map(&cms, "owner", &[], json!({})).await;
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    // Same name, new uid: the dependent's owner is gone even though the name exists.
    config_map(&cms, "owner", &[], json!({})).await;
    config_map(&cms, "child", &[&first], json!({})).await;
    eventually("the child of the old owner is collected", || {
        gone(&cms, "child")
    })
    .await;
    assert!(!gone(&cms, "owner").await, "the new owner is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_should_keep_the_owner_until_blocking_dependents_are_gone() {
    let client = cluster().await;
    let _controllers = start_controllers(&client);
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = config_map(&cms, "owner", &[], json!({})).await;
    config_map(
        &cms,
        "child",
        &[&owner],
        json!({"finalizers": ["example.com/hold"]}),
    )
    .await;
    cms.delete("owner", &delete_with("Foreground"))
        .await
        .unwrap();
    eventually("the child is being deleted", || async {
        cms.get("child")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let held = cms.get("owner").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), ["foregroundDeletion"]);
    // Releasing the child lets it go, and then the owner.
    cms.patch(
        "child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the owner goes after its child", || gone(&cms, "owner")).await;
    assert!(gone(&cms, "child").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_should_keep_dependents_without_the_owner_reference() {
    let client = cluster().await;
    let _controllers = start_controllers(&client);
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let owner = config_map(&cms, "owner", &[], json!({})).await;
    config_map(&cms, "child", &[&owner], json!({})).await;
    cms.delete("owner", &delete_with("Orphan")).await.unwrap();
    eventually("the owner goes", || gone(&cms, "owner")).await;
    let child = cms.get("child").await.unwrap();
    assert!(child.owner_references().is_empty(), "{child:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_should_catch_up_after_a_restart() {
    let client = cluster().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = config_map(&cms, "owner", &[], json!({})).await;
    let keeper = config_map(&cms, "keeper", &[], json!({})).await;
    config_map(&cms, "child", &[&owner], json!({})).await;
    config_map(&cms, "kept", &[&keeper], json!({})).await;
    // The owner goes while no collector runs.
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    let _controllers = start_controllers(&client);
    eventually("the orphaned child is collected", || gone(&cms, "child")).await;
    assert!(!gone(&cms, "kept").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_custom_resource_should_collect_its_dependents() {
    let client = cluster().await;
    let _controllers = start_controllers(&client);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "mailboxes.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "mailboxes", "singular": "mailbox", "kind": "Mailbox"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}});
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Mailbox"),
        "mailboxes",
    );
    let mailboxes: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &resource);
    let mut inbox = DynamicObject::new("inbox", &resource);
    inbox.data = json!({"spec": {}});
    let inbox = mailboxes
        .create(&PostParams::default(), &inbox)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let child = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mail",
        "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Mailbox",
            "name": "inbox", "uid": inbox.uid().unwrap(), "controller": true}]}});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(child).unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!gone(&cms, "mail").await, "the owner exists");
    mailboxes
        .delete("inbox", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the mailbox's config map is collected", || {
        gone(&cms, "mail")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_should_empty_it_then_remove_it() {
    let client = cluster().await;
    let _controllers = start_controllers(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}});
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    config_map(&cms, "plain", &[], json!({})).await;
    config_map(
        &cms,
        "held",
        &[],
        json!({"finalizers": ["example.com/hold"]}),
    )
    .await;
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let refused = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, kube::Error::Api(ref s) if s.code == 403),
        "{refused:?}"
    );
    eventually("the plain object is deleted", || gone(&cms, "plain")).await;
    eventually(
        "the namespace reports the finalizer that holds it",
        || async {
            let ns = namespaces.get("doomed").await.unwrap();
            ns.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "NamespaceFinalizersRemaining" && c.status == "True")
        },
    )
    .await;
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace is gone", || gone(&namespaces, "doomed")).await;
}
