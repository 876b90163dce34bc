//! The CronJob controller against the real API router over the in-memory store, on a clock the
//! test moves: a Job per scheduled time, named from that time (so never twice), Forbid
//! skipping a start while one runs, the history limit, and an invalid schedule reported.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::eventually;

struct World {
    _cluster: skiff_cluster::InProcess,
    client: Client,
    cronjobs: Api<CronJob>,
    jobs: Api<Job>,
    now: Arc<Mutex<Timestamp>>,
}

async fn world() -> World {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("test");
    let now = Arc::new(Mutex::new(Timestamp::now()));
    let clock = {
        let now = now.clone();
        skiff_controllers::clock::Clock::from_fn(move || *now.lock().unwrap())
    };
    let options = skiff_controllers::Options {
        clock,
        ..skiff_controllers::Options::default()
    };
    tokio::spawn(skiff_controllers::run(
        cluster.client("controllers"),
        options,
    ));
    World {
        cronjobs: Api::namespaced(client.clone(), "default"),
        jobs: Api::namespaced(client.clone(), "default"),
        client,
        now,
        _cluster: cluster,
    }
}

impl World {
    /// Moves the clock by `minutes` and nudges the CronJob (its own wake-up would come in real
    /// time).
    async fn advance(&self, name: &str, minutes: i64) {
        {
            let mut now = self.now.lock().unwrap();
            *now = now.checked_add(SignedDuration::from_mins(minutes)).unwrap();
        }
        let stamp = self.now.lock().unwrap().to_string();
        self.cronjobs
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/now": stamp}}})),
            )
            .await
            .unwrap();
    }

    async fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .map(ResourceExt::name_any)
            .collect();
        names.sort();
        names
    }

    async fn complete(&self, name: &str) {
        let now = Timestamp::now().to_string();
        self.jobs
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"completionTime": now, "succeeded": 1,
                    "conditions": [{"type": "Complete", "status": "True"}]}})),
            )
            .await
            .unwrap();
    }
}

fn cronjob(name: &str, schedule: &str, policy: &str) -> CronJob {
    serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "concurrencyPolicy": policy,
                 "successfulJobsHistoryLimit": 1,
                 "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox"}]}}}}}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_should_start_one_job_per_scheduled_time() {
    let w = world().await;
    w.cronjobs
        .create(
            &PostParams::default(),
            &cronjob("tick", "*/5 * * * *", "Forbid"),
        )
        .await
        .unwrap();
    // Nothing is due until the first five-minute mark after creation.
    w.advance("tick", 6).await;
    eventually("the first Job", || async { w.job_names().await.len() == 1 }).await;
    let first = w.job_names().await.remove(0);
    let minutes: i64 = first.trim_start_matches("tick-").parse().unwrap();
    assert_eq!(minutes % 5, 0, "{first}: named after a five-minute mark");
    let scheduled = w.jobs.get(&first).await.unwrap();
    assert!(
        scheduled
            .annotations()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
    );
    // Forbid: the next time comes while the first still runs, and nothing starts.
    w.advance("tick", 5).await;
    eventually("the skip reported", || async {
        let events: Api<Event> = Api::namespaced(w.client.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("JobAlreadyActive"))
    })
    .await;
    assert_eq!(w.job_names().await, std::slice::from_ref(&first));
    // Once it completes, the next time starts the next Job.
    w.complete(&first).await;
    w.advance("tick", 5).await;
    eventually("the second Job", || async {
        w.job_names().await.len() == 2
    })
    .await;
    let second = w
        .job_names()
        .await
        .into_iter()
        .find(|n| *n != first)
        .unwrap();
    // Two completed, a history of one: the oldest goes.
    w.complete(&second).await;
    w.advance("tick", 5).await;
    eventually("the third Job, the first gone", || async {
        let names = w.job_names().await;
        names.len() == 2 && names.contains(&second) && !names.contains(&first)
    })
    .await;
    let status = serde_json::to_value(w.cronjobs.get("tick").await.unwrap().status).unwrap();
    assert_eq!(
        status["active"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert!(status["lastScheduleTime"].is_string(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schedule_should_be_reported_and_start_nothing() {
    let w = world().await;
    w.cronjobs
        .create(
            &PostParams::default(),
            &cronjob("broken", "0 0 L * *", "Allow"),
        )
        .await
        .unwrap();
    w.advance("broken", 60 * 24 * 40).await;
    eventually("InvalidSchedule", || async {
        let events: Api<Event> = Api::namespaced(w.client.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSchedule"))
    })
    .await;
    assert!(w.job_names().await.is_empty());
}
