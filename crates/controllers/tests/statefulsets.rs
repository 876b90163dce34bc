//! The StatefulSet controller (with the scheduler, the garbage collector and simulated nodes that
//! run pods) against the real API router over the in-memory store: ordered creation and
//! scale-down seen from a watch, a partitioned rolling update, a rollback that renumbers the old
//! revision, a finished pod made again under its name, and claims per ordinal with the
//! retention policy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::eventually;

struct World {
    _sim: support::SimCluster,
    sets: Api<StatefulSet>,
    pods: Api<Pod>,
    revisions: Api<ControllerRevision>,
    claims: Api<PersistentVolumeClaim>,
}

async fn world() -> World {
    let sim = support::sim_cluster(2).await;
    let client: Client = sim.cluster.client("test");
    World {
        sets: Api::namespaced(client.clone(), "default"),
        pods: Api::namespaced(client.clone(), "default"),
        revisions: Api::namespaced(client.clone(), "default"),
        claims: Api::namespaced(client, "default"),
        _sim: sim,
    }
}

fn stateful_set(name: &str, replicas: i32, extra: Value) -> StatefulSet {
    let mut value = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}},
        },
    });
    if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(value).unwrap()
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a watch on pods saw, in order: (pod, ready, deleting).
type Seen = Arc<Mutex<Vec<(String, bool, bool)>>>;

fn watch_pods(pods: Api<Pod>) -> Seen {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            let changed = match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => Some((
                    pod.name_any(),
                    ready(&pod),
                    pod.metadata.deletion_timestamp.is_some(),
                )),
                watcher::Event::Delete(pod) => Some((pod.name_any(), false, true)),
                _ => None,
            };
            if let Some(changed) = changed {
                log.lock().unwrap().push(changed);
            }
        }
    });
    seen
}

impl World {
    async fn status(&self, name: &str) -> Value {
        serde_json::to_value(self.sets.get(name).await.unwrap().status).unwrap()
    }

    /// Pod name → the revision it was made from, for the live pods.
    async fn revisions_of_pods(&self) -> Vec<(String, String)> {
        let mut pods: Vec<(String, String)> = self
            .pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                (
                    p.name_any(),
                    p.labels()
                        .get("controller-revision-hash")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        pods.sort();
        pods
    }

    async fn set_image(&self, name: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        self.sets
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
    }

    async fn patch_spec(&self, name: &str, spec: Value) {
        self.sets
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    async fn settled(&self, name: &str, replicas: i64) -> bool {
        let status = self.status(name).await;
        status["readyReplicas"] == replicas
            && status["replicas"] == replicas
            && status["updatedReplicas"] == replicas
            && status["currentRevision"] == status["updateRevision"]
    }
}

#[tokio::test]
async fn ordered_ready_should_make_each_pod_only_after_the_one_below_is_ready_and_remove_highest_first()
 {
    let w = world().await;
    let seen = watch_pods(w.pods.clone());
    w.sets
        .create(&PostParams::default(), &stateful_set("web", 3, json!({})))
        .await
        .unwrap();
    eventually("three ready pods", || w.settled("web", 3)).await;
    let names: Vec<String> = w
        .revisions_of_pods()
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    let pod = w.pods.get("web-1").await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    {
        let seen = seen.lock().unwrap();
        for (lower, higher) in [("web-0", "web-1"), ("web-1", "web-2")] {
            let appeared = seen.iter().position(|(n, _, _)| n == higher).unwrap();
            let lower_ready = seen.iter().position(|(n, r, _)| n == lower && *r).unwrap();
            assert!(
                lower_ready < appeared,
                "{higher} appeared before {lower} was ready: {seen:?}"
            );
        }
    }
    w.patch_spec("web", json!({"replicas": 1})).await;
    eventually("one pod left", || async {
        w.revisions_of_pods().await.len() == 1 && w.status("web").await["replicas"] == 1
    })
    .await;
    let seen = seen.lock().unwrap();
    let first_deleting = |name: &str| seen.iter().position(|(n, _, d)| n == name && *d).unwrap();
    assert!(
        first_deleting("web-2") < first_deleting("web-1"),
        "web-2 goes first: {seen:?}"
    );
    assert!(
        !seen.iter().any(|(n, _, d)| n == "web-0" && *d),
        "web-0 stays"
    );
}

#[tokio::test]
async fn a_partitioned_rolling_update_should_update_only_ordinals_at_or_above_the_partition() {
    let w = world().await;
    w.sets
        .create(
            &PostParams::default(),
            &stateful_set(
                "db",
                3,
                json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
            ),
        )
        .await
        .unwrap();
    eventually("three ready pods", || w.settled("db", 3)).await;
    let first = w.status("db").await["currentRevision"].clone();
    w.set_image("db", "busybox:2").await;
    eventually("ordinals 1 and 2 updated", || async {
        let status = w.status("db").await;
        status["updatedReplicas"] == 2 && status["readyReplicas"] == 3
    })
    .await;
    let status = w.status("db").await;
    let second = status["updateRevision"].clone();
    assert_ne!(first, second);
    assert_eq!(status["currentRevision"], first, "not every pod is updated");
    let pods = w.revisions_of_pods().await;
    assert_eq!(pods[0], ("db-0".into(), first.as_str().unwrap().into()));
    assert_eq!(pods[1].1, second.as_str().unwrap());
    assert_eq!(pods[2].1, second.as_str().unwrap());
    let image = |pod: &Pod| pod.spec.as_ref().unwrap().containers[0].image.clone();
    assert_eq!(
        image(&w.pods.get("db-0").await.unwrap()).as_deref(),
        Some("busybox:1")
    );

    w.patch_spec(
        "db",
        json!({"updateStrategy": {"rollingUpdate": {"partition": 0}}}),
    )
    .await;
    eventually("every pod updated", || w.settled("db", 3)).await;
    assert_eq!(w.status("db").await["currentRevision"], second);

    // Back to the first template: its revision is found again and numbered newest.
    w.set_image("db", "busybox:1").await;
    eventually("the rollback", || async {
        w.settled("db", 3).await && w.status("db").await["updateRevision"] == first
    })
    .await;
    let mut revisions: Vec<(String, i64)> = w
        .revisions
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| (r.name_any(), r.revision))
        .collect();
    revisions.sort_by_key(|r| r.1);
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert_eq!(revisions[1], (first.as_str().unwrap().to_string(), 3));
}

#[tokio::test]
async fn a_finished_pod_should_be_made_again_under_its_name() {
    let w = world().await;
    w.sets
        .create(&PostParams::default(), &stateful_set("job", 1, json!({})))
        .await
        .unwrap();
    eventually("one ready pod", || w.settled("job", 1)).await;
    let before = w.pods.get("job-0").await.unwrap().uid();
    let failed = json!({"status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}});
    w.pods
        .patch_status("job-0", &PatchParams::default(), &Patch::Merge(&failed))
        .await
        .unwrap();
    eventually("a new job-0", || async {
        w.pods
            .get_opt("job-0")
            .await
            .unwrap()
            .is_some_and(|p| p.uid() != before && ready(&p))
    })
    .await;
}

#[tokio::test]
async fn parallel_sets_should_make_claims_per_ordinal_and_delete_them_on_scale_down_when_asked() {
    let w = world().await;
    let claims = json!({
        "podManagementPolicy": "Parallel",
        "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
    });
    w.sets
        .create(&PostParams::default(), &stateful_set("kv", 3, claims))
        .await
        .unwrap();
    eventually("three claims and three pods", || async {
        w.claims
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            == 3
            && w.revisions_of_pods().await.len() == 3
    })
    .await;
    let pod = w.pods.get("kv-2").await.unwrap();
    let volume = &pod.spec.unwrap().volumes.unwrap()[0];
    assert_eq!(
        volume
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("data-kv-2")
    );
    w.patch_spec("kv", json!({"replicas": 1})).await;
    eventually(
        "the claims of the removed ordinals gone with their pods",
        || async {
            let mut names: Vec<String> = w
                .claims
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect();
            names.sort();
            names == ["data-kv-0"]
        },
    )
    .await;
}
