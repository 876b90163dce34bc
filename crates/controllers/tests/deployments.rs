//! The Deployment controller (with the ReplicaSet controller, the scheduler and simulated nodes
//! that run pods) against the real API router over the in-memory store: a rollout, a rolling
//! update that keeps within maxSurge and maxUnavailable at every sampled moment, a rollback that
//! finds the earlier ReplicaSet again, scaling, Recreate, and controllers stopped mid-rollout whose
//! successors finish it without one extra pod.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{eventually, eventually_for};

struct World {
    _sim: support::SimCluster,
    deployments: Api<Deployment>,
    sets: Api<ReplicaSet>,
    pods: Api<Pod>,
}

async fn world() -> World {
    let sim = support::sim_cluster(3).await;
    let client: Client = sim.cluster.client("test");
    World {
        deployments: Api::namespaced(client.clone(), "default"),
        sets: Api::namespaced(client.clone(), "default"),
        pods: Api::namespaced(client, "default"),
        _sim: sim,
    }
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    }))
    .unwrap()
}

impl World {
    async fn status(&self, name: &str) -> Value {
        serde_json::to_value(self.deployments.get(name).await.unwrap().status).unwrap()
    }

    /// Whether the rollout of `image` is complete: every replica updated and available, nothing
    /// else left.
    async fn rolled_out(&self, name: &str, replicas: i64) -> bool {
        let status = self.status(name).await;
        status["updatedReplicas"] == replicas
            && status["availableReplicas"] == replicas
            && status["replicas"] == replicas
            && status["observedGeneration"]
                == json!(
                    self.deployments
                        .get(name)
                        .await
                        .unwrap()
                        .metadata
                        .generation
                )
            && status["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "NewReplicaSetAvailable"))
    }

    /// The Deployment's ReplicaSets: (name, spec.replicas, revision).
    async fn sets_of(&self) -> Vec<(String, i32, String)> {
        let mut sets: Vec<(String, i32, String)> = self
            .sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|s| {
                (
                    s.name_any(),
                    s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                    s.annotations()
                        .get("deployment.kubernetes.io/revision")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        sets.sort();
        sets
    }

    async fn set_image(&self, name: &str, image: &str) {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
        self.deployments
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_should_stay_within_surge_and_availability_and_roll_back() {
    let w = world().await;
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    w.deployments
        .create(
            &PostParams::default(),
            &deployment("web", 4, "nginx:1.14.2", strategy),
        )
        .await
        .unwrap();
    eventually("the first rollout", || async {
        w.rolled_out("web", 4).await
    })
    .await;
    let first = w.sets_of().await;
    assert_eq!(first.len(), 1, "{first:?}");
    let (first_name, _, revision) = &first[0];
    assert!(first_name.starts_with("web-"), "{first_name}");
    assert_eq!(revision, "1");
    let hash = first_name.trim_start_matches("web-").to_string();
    let pods = w.pods.list(&ListParams::default()).await.unwrap().items;
    assert!(
        pods.iter()
            .all(|p| p.labels().get("pod-template-hash") == Some(&hash))
    );

    // Sample the pods all through the update: never more than 4 + 1, never fewer than 4 - 1
    // ready.
    let done = Arc::new(AtomicBool::new(false));
    let (most, fewest_ready) = (
        Arc::new(AtomicI64::new(0)),
        Arc::new(AtomicI64::new(i64::MAX)),
    );
    let sampler = {
        let (pods, done, most, fewest_ready) = (
            w.pods.clone(),
            done.clone(),
            most.clone(),
            fewest_ready.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let listed = pods.list(&ListParams::default()).await.unwrap().items;
                let live: Vec<&Pod> = listed
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                most.fetch_max(i64::try_from(live.len()).unwrap(), Ordering::Relaxed);
                let ready = live.iter().filter(|p| ready(p)).count();
                fewest_ready.fetch_min(i64::try_from(ready).unwrap(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    w.set_image("web", "nginx:1.29").await;
    eventually("the second rollout", || async {
        w.rolled_out("web", 4).await && w.sets_of().await.len() == 2
    })
    .await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(
        most.load(Ordering::Relaxed) <= 5,
        "pods at most: {}",
        most.load(Ordering::Relaxed)
    );
    assert!(
        fewest_ready.load(Ordering::Relaxed) >= 3,
        "ready at least: {}",
        fewest_ready.load(Ordering::Relaxed)
    );
    let sets = w.sets_of().await;
    let old = sets.iter().find(|s| s.0 == *first_name).unwrap();
    assert_eq!(old.1, 0, "{sets:?}");
    let new = sets.iter().find(|s| s.0 != *first_name).unwrap();
    assert_eq!((new.1, new.2.as_str()), (4, "2"), "{sets:?}");
    let annotations = w
        .deployments
        .get("web")
        .await
        .unwrap()
        .annotations()
        .clone();
    assert_eq!(
        annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );

    // Back to the first template: its ReplicaSet again, as revision 3.
    w.set_image("web", "nginx:1.14.2").await;
    eventually("the rollback", || async {
        let sets = w.sets_of().await;
        w.rolled_out("web", 4).await
            && sets
                .iter()
                .any(|s| s.0 == *first_name && s.1 == 4 && s.2 == "3")
    })
    .await;
    assert_eq!(w.sets_of().await.len(), 2, "no third ReplicaSet");

    // Scaling goes to the current ReplicaSet.
    w.deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    eventually("scaled to 2", || async { w.rolled_out("web", 2).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_should_stop_every_old_pod_before_starting_new_ones() {
    let w = world().await;
    w.deployments
        .create(
            &PostParams::default(),
            &deployment("db", 2, "postgres:16", json!({"type": "Recreate"})),
        )
        .await
        .unwrap();
    eventually("the first rollout", || async {
        w.rolled_out("db", 2).await
    })
    .await;
    let old_hash = w.sets_of().await[0].0.trim_start_matches("db-").to_string();
    let done = Arc::new(AtomicBool::new(false));
    let mixed = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pods, done, mixed, old_hash) = (
            w.pods.clone(),
            done.clone(),
            mixed.clone(),
            old_hash.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let listed = pods.list(&ListParams::default()).await.unwrap().items;
                let hashes: std::collections::BTreeSet<String> = listed
                    .iter()
                    .filter_map(|p| p.labels().get("pod-template-hash").cloned())
                    .collect();
                if hashes.contains(&old_hash) && hashes.len() > 1 {
                    mixed.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    w.set_image("db", "postgres:17").await;
    eventually("the second rollout", || async {
        w.rolled_out("db", 2).await && w.sets_of().await.len() == 2
    })
    .await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(
        !mixed.load(Ordering::Relaxed),
        "old and new pods existed at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_stopped_mid_rollout_should_be_finished_by_new_ones_without_extra_pods() {
    let mut sim = support::sim_cluster(3).await;
    let client: Client = sim.cluster.client("test");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let strategy = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}});
    let mut wanted = deployment("web", 20, "nginx:1.28", strategy);
    // Each step waits for new pods to be available for 3 s: the rollout lasts long enough to be
    // interrupted.
    wanted.spec.as_mut().unwrap().min_ready_seconds = Some(3);
    deployments
        .create(&PostParams::default(), &wanted)
        .await
        .unwrap();
    let updated = |n: i64| {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("web").await.unwrap();
            let status = serde_json::to_value(d.status).unwrap();
            status["updatedReplicas"].as_i64().unwrap_or(0) >= n
                && status["availableReplicas"] == 20
                && status["replicas"] == 20
        }
    };
    eventually_for("the first rollout", 60, || updated(20)).await;
    // Every pod ever seen, by template hash, from here on.
    let seen: Arc<
        std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    > = Arc::default();
    let watch = {
        let (pods, seen) = (pods.clone(), seen.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream =
                kube::runtime::watcher(pods, kube::runtime::watcher::Config::default()).boxed();
            while let Some(Ok(event)) = stream.next().await {
                if let kube::runtime::watcher::Event::Apply(pod)
                | kube::runtime::watcher::Event::InitApply(pod) = event
                {
                    let hash = pod
                        .labels()
                        .get("pod-template-hash")
                        .cloned()
                        .unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .entry(hash)
                        .or_default()
                        .insert(pod.uid().unwrap());
                }
            }
        })
    };
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.29"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    eventually_for("a fifth of the update", 60, || async {
        let d = deployments.get("web").await.unwrap();
        let status = d.status.unwrap_or_default();
        status.observed_generation == d.metadata.generation
            && status.updated_replicas.unwrap_or(0) >= 4
    })
    .await;
    // A crash: the Lease is not given up; the new ones take over once it runs out (15 s).
    sim.controllers.take().unwrap().stop().await;
    let stopped_at = deployments.get("web").await.unwrap().status.unwrap();
    assert!(
        stopped_at.updated_replicas.unwrap_or(0) < 20,
        "stopped mid-rollout: {stopped_at:?}"
    );
    let _second = sim.cluster.start_controllers();
    eventually_for(
        "the rollout finished by the new controllers",
        60,
        || async {
            let d = deployments.get("web").await.unwrap();
            let status = d.status.unwrap_or_default();
            status.updated_replicas == Some(20)
                && status.available_replicas == Some(20)
                && status.replicas == Some(20)
                && d.spec.unwrap().template.spec.unwrap().containers[0]
                    .image
                    .as_deref()
                    == Some("nginx:1.29")
        },
    )
    .await;
    watch.abort();
    let new_hash = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .find(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.29"))
        .and_then(|p| p.labels().get("pod-template-hash").cloned())
        .unwrap();
    assert_eq!(
        seen.lock()
            .unwrap()
            .get(&new_hash)
            .map(std::collections::BTreeSet::len),
        Some(20),
        "exactly 20 new pods were made"
    );
}
