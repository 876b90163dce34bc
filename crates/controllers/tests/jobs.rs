//! The Job controller against the real API router over the in-memory store, in one process; the
//! test plays the node, setting the pods' phases: completions with parallelism, the backoff
//! limit, Indexed Jobs, and a pod deleted before it finished counted as a failure, each finished
//! pod counted once and released from the tracking finalizer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::eventually;

struct World {
    _cluster: skiff_cluster::InProcess,
    _controllers: skiff_cluster::in_process::Controllers,
    jobs: Api<Job>,
    pods: Api<Pod>,
}

async fn world() -> World {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client: Client = cluster.client("test");
    let controllers = cluster.start_controllers();
    World {
        jobs: Api::namespaced(client.clone(), "default"),
        pods: Api::namespaced(client, "default"),
        _controllers: controllers,
        _cluster: cluster,
    }
}

fn job(name: &str, spec: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "work", "image": "busybox"}]}});
    serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

impl World {
    /// The Job's pods not being deleted.
    async fn running(&self, name: &str) -> Vec<Pod> {
        self.pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect()
    }

    async fn finish(&self, pod: &Pod, phase: &str, code: i32) {
        let status = json!({"status": {"phase": phase, "containerStatuses": [{
            "name": "work", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "finishedAt": "2026-01-01T00:00:00Z"}}}]}});
        self.pods
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .unwrap();
    }

    async fn status(&self, name: &str) -> Value {
        serde_json::to_value(self.jobs.get(name).await.unwrap().status).unwrap()
    }

    async fn condition(&self, name: &str, type_: &str) -> Option<Value> {
        let status = self.status(name).await;
        status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_should_run_its_completions_at_most_parallelism_at_once() {
    let w = world().await;
    w.jobs
        .create(
            &PostParams::default(),
            &job("batch", json!({"completions": 3, "parallelism": 2})),
        )
        .await
        .unwrap();
    eventually("2 pods", || async { w.running("batch").await.len() == 2 }).await;
    let first = w.running("batch").await.remove(0);
    assert!(
        first
            .finalizers()
            .contains(&"batch.kubernetes.io/job-tracking".to_string())
    );
    w.finish(&first, "Succeeded", 0).await;
    eventually("a third pod, one counted", || async {
        w.running("batch").await.len() == 2 && w.status("batch").await["succeeded"] == 1
    })
    .await;
    for pod in w.running("batch").await {
        w.finish(&pod, "Succeeded", 0).await;
    }
    eventually("Complete", || async {
        w.condition("batch", "Complete").await.is_some()
    })
    .await;
    let status = w.status("batch").await;
    assert_eq!(status["succeeded"], 3, "{status}");
    assert_eq!(status["active"], 0, "{status}");
    assert!(status["completionTime"].is_string());
    assert!(w.condition("batch", "SuccessCriteriaMet").await.is_some());
    // Each finished pod is released once counted, and counted once.
    eventually("finalizers gone", || async {
        let pods = w
            .pods
            .list(&ListParams::default().labels("job-name=batch"))
            .await
            .unwrap();
        pods.items.len() == 3
            && pods.items.iter().all(|p| {
                !p.finalizers()
                    .contains(&"batch.kubernetes.io/job-tracking".to_string())
            })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.status("batch").await["succeeded"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_should_fail_past_its_backoff_limit_and_count_early_deletions() {
    let w = world().await;
    w.jobs
        .create(
            &PostParams::default(),
            &job("fragile", json!({"backoffLimit": 1})),
        )
        .await
        .unwrap();
    eventually("a pod", || async { w.running("fragile").await.len() == 1 }).await;
    // Deleted before it finished: a failure (the finalizer holds it until counted).
    let first = w.running("fragile").await.remove(0);
    w.pods
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    eventually("counted as failed and gone", || async {
        w.status("fragile").await["failed"] == 1
            && w.pods.get_opt(&first.name_any()).await.unwrap().is_none()
    })
    .await;
    // The next one comes after the back-off (10 s); fail it too.
    eventually("a second pod", || async {
        w.running("fragile").await.len() == 1
    })
    .await;
    let second = w.running("fragile").await.remove(0);
    w.finish(&second, "Failed", 1).await;
    eventually("Failed", || async {
        w.condition("fragile", "Failed")
            .await
            .is_some_and(|c| c["reason"] == "BackoffLimitExceeded")
    })
    .await;
    assert_eq!(w.status("fragile").await["failed"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_should_run_each_index_once() {
    let w = world().await;
    w.jobs
        .create(
            &PostParams::default(),
            &job(
                "shards",
                json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            ),
        )
        .await
        .unwrap();
    eventually("3 pods", || async { w.running("shards").await.len() == 3 }).await;
    let pods = w.running("shards").await;
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| {
            let container = &p.spec.as_ref().unwrap().containers[0];
            let env = container.env.as_ref().unwrap();
            let index = env
                .iter()
                .find(|e| e.name == "JOB_COMPLETION_INDEX")
                .unwrap()
                .value
                .clone()
                .unwrap();
            assert_eq!(
                p.spec.as_ref().unwrap().hostname.as_deref(),
                Some(format!("shards-{index}").as_str())
            );
            index
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    let of = |i: &str| {
        pods.iter()
            .find(|p| {
                p.annotations()
                    .get("batch.kubernetes.io/job-completion-index")
                    .map(String::as_str)
                    == Some(i)
            })
            .unwrap()
            .clone()
    };
    w.finish(&of("2"), "Succeeded", 0).await;
    w.finish(&of("0"), "Succeeded", 0).await;
    eventually("indexes 0 and 2 done", || async {
        w.status("shards").await["completedIndexes"] == "0,2"
    })
    .await;
    w.finish(&of("1"), "Succeeded", 0).await;
    eventually("Complete", || async {
        w.status("shards").await["completedIndexes"] == "0-2"
            && w.condition("shards", "Complete").await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_should_go_after_its_ttl() {
    let w = world().await;
    w.jobs
        .create(
            &PostParams::default(),
            &job("brief", json!({"ttlSecondsAfterFinished": 0})),
        )
        .await
        .unwrap();
    eventually("a pod", || async { w.running("brief").await.len() == 1 }).await;
    let pod = w.running("brief").await.remove(0);
    w.finish(&pod, "Succeeded", 0).await;
    eventually("the Job deleted", || async {
        w.jobs
            .get_opt("brief")
            .await
            .unwrap()
            .is_none_or(|j| j.metadata.deletion_timestamp.is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failure_policy_should_ignore_some_failures_and_fail_the_job_on_others() {
    let w = world().await;
    let policy = json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "work", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
    ]}});
    w.jobs
        .create(&PostParams::default(), &job("judged", policy))
        .await
        .unwrap();
    eventually("a pod", || async { w.running("judged").await.len() == 1 }).await;
    let first = w.running("judged").await.remove(0);
    w.finish(&first, "Failed", 3).await;
    // Ignored: not counted, so neither the backoff limit of 0 nor a back-off delay applies.
    eventually("a replacement", || async {
        w.running("judged")
            .await
            .first()
            .is_some_and(|p| p.uid() != first.uid())
    })
    .await;
    assert_eq!(w.status("judged").await["failed"], 0);
    assert!(w.condition("judged", "Failed").await.is_none());
    let second = w.running("judged").await.remove(0);
    w.finish(&second, "Failed", 42).await;
    eventually("Failed by the policy", || async {
        w.condition("judged", "Failed")
            .await
            .is_some_and(|c| c["reason"] == "PodFailurePolicy")
    })
    .await;
    let failed = w.condition("judged", "Failed").await.unwrap();
    assert_eq!(
        failed["message"],
        format!(
            "Container work for pod default/{} failed with exit code 42 matching FailJob rule at index 0",
            second.name_any()
        )
    );
}
