//! The ReplicaSet controller against the real API router over the in-memory store, in one
//! process: replicas kept through scaling, orphans adopted, pods that stop matching released and
//! replaced, readiness counted, and a refused pod template reported.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::eventually;

struct World {
    _cluster: skiff_cluster::InProcess,
    _controllers: skiff_cluster::in_process::Controllers,
    client: Client,
    sets: Api<ReplicaSet>,
    pods: Api<Pod>,
}

async fn world() -> World {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let controllers = cluster.start_controllers();
    World {
        sets: Api::namespaced(client.clone(), "default"),
        pods: Api::namespaced(client.clone(), "default"),
        client,
        _controllers: controllers,
        _cluster: cluster,
    }
}

fn replica_set(name: &str, replicas: i32, container: Value) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }))
    .unwrap()
}

impl World {
    /// The pods the ReplicaSet `name` controls, not being deleted.
    async fn owned(&self, name: &str) -> Vec<Pod> {
        let set = self.sets.get(name).await.unwrap();
        let uid = set.uid().unwrap();
        self.pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .collect()
    }

    async fn status(&self, name: &str) -> Value {
        serde_json::to_value(self.sets.get(name).await.unwrap().status).unwrap()
    }

    async fn scale(&self, name: &str, replicas: i32) {
        self.sets
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicaset_should_keep_its_replicas_adopting_and_releasing_pods() {
    let w = world().await;
    let web = json!({"name": "web", "image": "busybox"});
    w.sets
        .create(&PostParams::default(), &replica_set("web", 3, web))
        .await
        .unwrap();
    eventually("3 pods", || async { w.owned("web").await.len() == 3 }).await;
    let pod = &w.owned("web").await[0];
    assert!(pod.name_any().starts_with("web-"), "{}", pod.name_any());
    assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
    eventually("status replicas 3", || async {
        w.status("web").await["replicas"] == 3
    })
    .await;
    assert_eq!(w.status("web").await["observedGeneration"], 1);

    w.scale("web", 5).await;
    eventually("5 pods", || async { w.owned("web").await.len() == 5 }).await;
    w.scale("web", 2).await;
    eventually("2 pods", || async { w.owned("web").await.len() == 2 }).await;

    // An orphan that matches is adopted (and, one too many, one pod goes).
    let orphan: Pod = serde_json::from_value(
        json!({"metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "busybox"}]}}),
    )
    .unwrap();
    w.pods
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    eventually("2 pods again, the stray one adopted or removed", || async {
        let owned = w.owned("web").await;
        let stray = w.pods.get_opt("stray").await.unwrap();
        owned.len() == 2
            && stray.is_none_or(|s| {
                s.metadata.deletion_timestamp.is_some()
                    || owned.iter().any(|p| p.name_any() == "stray")
            })
    })
    .await;

    // A pod relabelled out of the selector is released and replaced.
    let leaving = w.owned("web").await[0].name_any();
    w.pods
        .patch(
            &leaving,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "debugging"}}})),
        )
        .await
        .unwrap();
    eventually("released and replaced", || async {
        let released = w.pods.get(&leaving).await.unwrap();
        let owned = w.owned("web").await;
        released.owner_references().is_empty()
            && owned.len() == 2
            && owned.iter().all(|p| p.name_any() != leaving)
    })
    .await;

    // Readiness counts.
    let first = w.owned("web").await[0].name_any();
    w.pods
        .patch_status(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .unwrap();
    eventually("one ready and available", || async {
        let status = w.status("web").await;
        status["readyReplicas"] == 1 && status["availableReplicas"] == 1
    })
    .await;
    let events: Api<Event> = Api::namespaced(w.client.clone(), "default");
    eventually("SuccessfulCreate and SuccessfulDelete events", || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("ReplicaSet"))
            .filter_map(|e| e.reason.clone())
            .collect();
        reasons.iter().any(|r| r == "SuccessfulCreate")
            && reasons.iter().any(|r| r == "SuccessfulDelete")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_template_should_show_in_the_replica_failure_condition() {
    let w = world().await;
    // Pods of an account that does not exist: admission refuses every one.
    let mut broken = replica_set("broken", 2, json!({"name": "c", "image": "busybox"}));
    if let Some(template) = broken.spec.as_mut().and_then(|s| s.template.as_mut())
        && let Some(spec) = template.spec.as_mut()
    {
        spec.service_account_name = Some("ghost".into());
    }
    w.sets
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    eventually("ReplicaFailure", || async {
        let status = w.status("broken").await;
        status["conditions"][0]["type"] == "ReplicaFailure"
            && status["conditions"][0]["reason"] == "FailedCreate"
            && status["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("serviceaccount \"ghost\" not found"))
    })
    .await;
    assert!(w.owned("broken").await.is_empty());
}

#[tokio::test]
async fn a_replication_controller_should_keep_its_replicas_through_the_same_controller() {
    let w = world().await;
    let controllers: Api<k8s_openapi::api::core::v1::ReplicationController> =
        Api::namespaced(w.client.clone(), "default");
    let rc = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "old"},
        "spec": {
            "replicas": 2,
            "selector": {"app": "old"},
            "template": {"metadata": {"labels": {"app": "old"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }))
    .unwrap();
    controllers
        .create(&PostParams::default(), &rc)
        .await
        .unwrap();
    eventually("two pods owned by the ReplicationController", || async {
        let owned: Vec<Pod> = w
            .pods
            .list(&ListParams::default().labels("app=old"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.kind == "ReplicationController" && o.controller == Some(true))
            })
            .collect();
        let status = controllers
            .get("old")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        owned.len() == 2 && status.replicas == 2 && status.observed_generation == Some(1)
    })
    .await;
    controllers
        .patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually("no pods left", || async {
        w.pods
            .list(&ListParams::default().labels("app=old"))
            .await
            .unwrap()
            .items
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
}
