//! The pod garbage collector (upstream's `pod-garbage-collector`). Every period (20 s) it looks
//! at the shared pod watch's cache of all pods and the shared node cache — no request per pod,
//! no list of pods or nodes — and:
//!
//! - force-deletes pods bound to a node that has not existed for the quarantine (40 s): no
//!   agent will ever confirm their end;
//! - deletes the oldest finished pods (Succeeded or Failed) beyond the threshold (12,500, as
//!   upstream's `--terminated-pod-gc-threshold`), so finished Jobs' pods do not pile up without
//!   bound.
//!
//! Each delete carries the pod's uid as a precondition, so a pod made again under the same name
//! is never the one deleted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use skiff_client::lean::NodeHealth;
use tokio::time::Instant;

use crate::shared_pods::PodSummary;

/// How the collector runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often it looks (upstream: 20 s).
    pub period: Duration,
    /// How long a pod's node must have been gone before the pod is deleted (upstream: 40 s).
    pub quarantine: Duration,
    /// Finished pods kept at most (upstream's `--terminated-pod-gc-threshold`).
    pub terminated_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
            terminated_threshold: 12_500,
        }
    }
}

/// Runs the collector over `pods` and `nodes` (the shared caches) until the task is dropped.
pub async fn run(
    client: Client,
    options: Options,
    pods: Store<PodSummary>,
    nodes: Store<NodeHealth>,
) {
    if pods.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    let period = options.period;
    let mut collector = Collector {
        client,
        options,
        orphans: HashMap::new(),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = collector.pass(&pods, &nodes).await {
            tracing::debug!(%error, "pod garbage collection pass");
        }
    }
}

struct Collector {
    client: Client,
    options: Options,
    /// Pods bound to a node that does not exist, by uid, and since when.
    orphans: HashMap<String, Instant>,
}

impl Collector {
    async fn pass(
        &mut self,
        store: &Store<PodSummary>,
        nodes: &Store<NodeHealth>,
    ) -> Result<(), kube::Error> {
        let pods = store.state();
        self.orphaned(&pods, nodes).await?;
        self.terminated(&pods).await
    }

    /// Force-deletes pods whose node has been gone for the quarantine.
    async fn orphaned(
        &mut self,
        pods: &[Arc<PodSummary>],
        nodes: &Store<NodeHealth>,
    ) -> Result<(), kube::Error> {
        let now = Instant::now();
        let orphaned: Vec<&Arc<PodSummary>> = pods
            .iter()
            .filter(|p| {
                p.spec
                    .node_name
                    .as_deref()
                    .is_some_and(|n| !n.is_empty() && nodes.get(&ObjectRef::new(n)).is_none())
            })
            .collect();
        let uids: BTreeSet<String> = orphaned.iter().filter_map(|p| p.uid()).collect();
        self.orphans.retain(|uid, _| uids.contains(uid));
        for pod in orphaned {
            let uid = pod.uid().unwrap_or_default();
            let since = *self.orphans.entry(uid.clone()).or_insert(now);
            if now.duration_since(since) < self.options.quarantine {
                continue;
            }
            if self.force_delete(pod).await? {
                tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "deleted a pod of a node that is gone");
                self.orphans.remove(&uid);
            }
        }
        Ok(())
    }

    /// Deletes the oldest finished pods beyond the threshold.
    async fn terminated(&self, pods: &[Arc<PodSummary>]) -> Result<(), kube::Error> {
        let mut finished: Vec<&Arc<PodSummary>> = pods
            .iter()
            .filter(|p| p.is_finished() && p.metadata.deletion_timestamp.is_none())
            .collect();
        let surplus = finished
            .len()
            .saturating_sub(self.options.terminated_threshold);
        if surplus == 0 {
            return Ok(());
        }
        finished.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), p.name_any()));
        tracing::info!(
            surplus,
            threshold = self.options.terminated_threshold,
            "deleting the oldest finished pods"
        );
        for pod in finished.into_iter().take(surplus) {
            self.force_delete(pod).await?;
        }
        Ok(())
    }

    /// Deletes `pod` at once if it is still the one seen; whether it went.
    async fn force_delete(&self, pod: &PodSummary) -> Result<bool, kube::Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}
