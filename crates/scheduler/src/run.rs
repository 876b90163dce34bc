//! The scheduler's loop: five watches (nodes, namespaces, pods, claims, volumes) feed the
//! [`Cache`] and the [`Queue`]; active
//! pods are placed one at a time by [`decide::place`]; each placement is assumed in the cache
//! at once and bound through `pods/binding` in the background, so binds of a burst travel in
//! parallel while later decisions already count them. A pod that fits nowhere gets the
//! PodScheduled=False / Unschedulable condition (upstream's message, then skiff's sentence) and
//! a FailedScheduling Event, and is parked until the cluster changes; if it may preempt, the
//! lower-priority pods [`preempt::preempt`] picks are evicted (a DisruptionTarget condition,
//! then a graceful delete, and a Preempted Event), and the pod is nominated for their node
//! (`status.nominatedNodeName`), which it tries first when it is next attempted. Everything is
//! rebuilt from the watches' initial lists, after a restart and after a lost watch alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use rand::SeedableRng;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cache::Cache;
use crate::decide::{self, FitError};
use crate::filters::Candidate;
use crate::message;
use crate::preempt::{self, Preemption, Victim};
use crate::queue::Queue;
use skiff_client::events::{Note, Recorder, Reporter};
use skiff_client::lean::{WatchedNode, WatchedPod};

/// Binds and status writes in flight at once.
const WRITES_IN_FLIGHT: usize = 64;
/// Pods placed per turn of the loop before the watches are read again.
const PLACEMENTS_PER_TURN: usize = 256;
/// How often parked pods are tried again even without a cluster change (upstream: 5 min).
const PARKED_FLUSH: Duration = Duration::from_secs(60);

/// How a scheduler runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `spec.schedulerName` whose pods it places.
    pub scheduler_name: String,
    /// Its identity in Events and the leader Lease.
    pub identity: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler_name: crate::DEFAULT_SCHEDULER.into(),
            identity: skiff_client::leader::identity(),
        }
    }
}

/// How a bind ended.
struct Bound {
    key: String,
    uid: String,
    result: Result<(), kube::Error>,
}

struct Scheduler {
    options: Options,
    client: Client,
    cache: Cache,
    queue: Queue,
    /// Pending pods of this scheduler, by key.
    pending: HashMap<String, Pod>,
    /// Pods assumed on a node whose assignment the watch has not shown yet, with their uid.
    assumed: HashMap<String, String>,
    /// Whether the node and pod watches have delivered their initial lists: no decision is
    /// made on a partial picture.
    nodes_synced: bool,
    pods_synced: bool,
    /// Whether the claim and volume watches have delivered their initial lists.
    claims_synced: bool,
    volumes_synced: bool,
    /// The binds and status writes in flight, cancelled with the loop (when leadership is
    /// lost, none lands afterwards).
    writes_in_flight: JoinSet<()>,
    next_node: usize,
    rng: rand::rngs::StdRng,
    writes: Arc<Semaphore>,
    bound: mpsc::UnboundedSender<Bound>,
    /// Victims whose eviction failed.
    not_evicted: mpsc::UnboundedSender<String>,
    recorder: Recorder,
}

/// What a status write does to a pod's nomination.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Nomination {
    /// Leave `status.nominatedNodeName` as it is.
    Keep,
    /// Set it.
    Set(String),
    /// Remove it.
    Clear,
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Runs the scheduler until the future is dropped.
pub async fn run(client: Client, options: Options) {
    let reporter = Reporter {
        component: crate::COMPONENT,
        instance: options.identity.clone(),
        host: None,
        action: |reason| match reason {
            "Scheduled" => "Binding",
            "Preempted" => "Preempting",
            _ => "Scheduling",
        },
    };
    let (recorder, events) = Recorder::new(client.clone(), reporter);
    let (bound, mut binds) = mpsc::unbounded_channel();
    let (not_evicted, mut failed_evictions) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler {
        options,
        client: client.clone(),
        cache: Cache::default(),
        queue: Queue::default(),
        pending: HashMap::new(),
        assumed: HashMap::new(),
        nodes_synced: false,
        pods_synced: false,
        claims_synced: false,
        volumes_synced: false,
        writes_in_flight: JoinSet::new(),
        next_node: 0,
        rng: rand::rngs::StdRng::from_os_rng(),
        writes: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
        bound,
        not_evicted,
        recorder,
    };
    // Whole nodes but for their managedFields, annotations and images.
    let nodes = watcher::watcher(
        Api::<WatchedNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let namespaces = watcher::watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let claims = watcher::watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let volumes = watcher::watcher(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    // Whole pods but for their managedFields, skipped unread.
    let pods = watcher::watcher(Api::<WatchedPod>::all(client), watcher::Config::default())
        .default_backoff();
    tokio::pin!(nodes, namespaces, pods, claims, volumes, events);
    let mut flush = tokio::time::interval(PARKED_FLUSH);
    loop {
        let wakeup = scheduler.queue.next_wakeup();
        tokio::select! {
            () = &mut events => {}
            Some(event) = nodes.next() => match event {
                Ok(event) => scheduler.on_node(event),
                Err(error) => tracing::debug!(%error, "node watch"),
            },
            Some(event) = namespaces.next() => match event {
                Ok(Event::InitApply(ns) | Event::Apply(ns)) => {
                    scheduler.cache.upsert_namespace(ns.name_any(), ns.labels().clone());
                }
                Ok(Event::Delete(ns)) => scheduler.cache.remove_namespace(&ns.name_any()),
                Ok(Event::Init | Event::InitDone) => {}
                Err(error) => tracing::debug!(%error, "namespace watch"),
            },
            Some(event) = claims.next() => match event {
                Ok(event) => scheduler.on_claim(event),
                Err(error) => tracing::debug!(%error, "claim watch"),
            },
            Some(event) = volumes.next() => match event {
                Ok(event) => scheduler.on_volume(event),
                Err(error) => tracing::debug!(%error, "volume watch"),
            },
            Some(event) = pods.next() => match event {
                Ok(event) => scheduler.on_pod(event),
                Err(error) => tracing::debug!(%error, "pod watch"),
            },
            Some(done) = binds.recv() => scheduler.on_bound(done),
            Some(key) = failed_evictions.recv() => {
                scheduler.cache.unmark_preempted(&key);
                scheduler.queue.cluster_changed();
            }
            Some(_) = scheduler.writes_in_flight.join_next(), if !scheduler.writes_in_flight.is_empty() => {}
            () = sleep_until(wakeup), if wakeup.is_some() => {}
            _ = flush.tick() => scheduler.queue.cluster_changed(),
            () = std::future::ready(()), if scheduler.ready() => {
                for _ in 0..PLACEMENTS_PER_TURN {
                    let Some(key) = scheduler.queue.pop() else { break };
                    scheduler.schedule(&key);
                }
            }
        }
        scheduler.queue.promote(Instant::now());
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Scheduler {
    /// Whether a placement may be made now.
    fn ready(&self) -> bool {
        self.nodes_synced
            && self.pods_synced
            && self.claims_synced
            && self.volumes_synced
            && self.queue.has_active()
    }

    fn on_claim(&mut self, event: Event<PersistentVolumeClaim>) {
        let volumes = self.cache.volumes_mut();
        match event {
            Event::Init => {
                self.claims_synced = false;
                volumes.clear_claims();
            }
            Event::InitApply(claim) | Event::Apply(claim) => volumes.upsert_claim(&claim),
            Event::Delete(claim) => volumes.remove_claim(&claim),
            Event::InitDone => self.claims_synced = true,
        }
        self.queue.cluster_changed();
    }

    fn on_volume(&mut self, event: Event<PersistentVolume>) {
        let volumes = self.cache.volumes_mut();
        match event {
            Event::Init => {
                self.volumes_synced = false;
                volumes.clear_volumes();
            }
            Event::InitApply(volume) | Event::Apply(volume) => volumes.upsert_volume(&volume),
            Event::Delete(volume) => volumes.remove_volume(&volume),
            Event::InitDone => self.volumes_synced = true,
        }
        self.queue.cluster_changed();
    }

    fn on_node(&mut self, event: Event<WatchedNode>) {
        match event {
            Event::Init => {
                self.nodes_synced = false;
                self.cache.clear_nodes();
            }
            Event::InitApply(watched) | Event::Apply(watched) => {
                self.cache.upsert_node(watched.node);
                self.queue.cluster_changed();
            }
            Event::Delete(watched) => self.cache.remove_node(&watched.name_any()),
            Event::InitDone => {
                self.nodes_synced = true;
                self.queue.cluster_changed();
            }
        }
    }

    fn on_pod(&mut self, event: Event<WatchedPod>) {
        match event {
            Event::Init => {
                self.pods_synced = false;
                let assumed = &self.assumed;
                self.cache.retain_pods(|key| assumed.contains_key(key));
                self.pending.clear();
                self.queue = Queue::default();
            }
            Event::InitApply(pod) | Event::Apply(pod) => self.apply_pod(pod.pod),
            Event::Delete(pod) => self.remove_pod(&key_of(&pod.pod)),
            Event::InitDone => self.pods_synced = true,
        }
    }

    fn remove_pod(&mut self, key: &str) {
        // (An assumed pod deleted while its bind travels is forgotten here too.)
        if self.cache.assigned_node(key).is_some() {
            self.cache.unassign(key);
            self.queue.cluster_changed();
        }
        self.assumed.remove(key);
        self.pending.remove(key);
        self.queue.forget(key);
        self.cache.nominations_mut().remove(key);
    }

    fn apply_pod(&mut self, pod: Pod) {
        let key = key_of(&pod);
        if is_terminal(&pod) {
            return self.remove_pod(&key);
        }
        let spec = pod.spec.as_ref();
        if let Some(node) = spec
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            let node = node.to_string();
            self.cache.assign(&key, &pod, &node);
            self.assumed.remove(&key);
            self.pending.remove(&key);
            self.queue.forget(&key);
            return;
        }
        let ours = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::DEFAULT_SCHEDULER)
            == self.options.scheduler_name;
        // Pods held back by scheduling gates wait outside the queue, as upstream's
        // SchedulingGates plugin keeps them.
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if !ours || gated || pod.metadata.deletion_timestamp.is_some() {
            self.pending.remove(&key);
            self.queue.forget(&key);
            return;
        }
        // A nomination written earlier (by this scheduler before a restart, or by another
        // leader) holds the pod's node; an empty field never ends one (the watch may show the
        // pod before this scheduler's own write of it lands).
        if let Some(node) = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
            && self.cache.nominations().node_of(&key) != Some(node)
        {
            let node = node.to_string();
            self.cache.nominations_mut().nominate(&key, &node, &pod);
        }
        let priority = spec.and_then(|s| s.priority).unwrap_or(0);
        let assumed = self.assumed.contains_key(&key);
        self.pending.insert(key.clone(), pod);
        if !assumed {
            self.queue.add(&key, priority);
        }
    }

    /// One scheduling attempt for the pod `key`.
    fn schedule(&mut self, key: &str) {
        let Some(pod) = self.pending.get(key).cloned() else {
            self.queue.forget(key);
            return;
        };
        let mut candidate = Candidate::new(&pod);
        // A nominated pod tries the node its preemption made room on first.
        if let Some(node) = self.cache.nominations().node_of(key).map(str::to_string)
            && decide::fits_on(&mut candidate, &self.cache, &node).is_ok()
        {
            return self.assume(key, &pod, node);
        }
        match decide::place(
            &mut candidate,
            &self.cache,
            &mut self.next_node,
            &mut self.rng,
        ) {
            Ok(node) => self.assume(key, &pod, node),
            Err(error) => {
                self.queue.park(key, Instant::now());
                self.fit_failed(key, &pod, &candidate, &error);
            }
        }
    }

    /// Counts `pod` on `node` at once and binds it in the background.
    fn assume(&mut self, key: &str, pod: &Pod, node: String) {
        self.cache.assign(key, pod, &node);
        self.assumed
            .insert(key.to_string(), pod.uid().unwrap_or_default());
        self.bind(key.to_string(), pod, node);
    }

    /// A pod fits nowhere: preempt for it if that helps, and tell it why it waits.
    fn fit_failed(&mut self, key: &str, pod: &Pod, candidate: &Candidate<'_>, error: &FitError) {
        let upstream = message::upstream(error);
        let sentence = message::explain(error, candidate, &self.cache);
        let nominated = self.cache.nominations().node_of(key).map(str::to_string);
        let outcome = if error.nodes == 0 {
            // No nodes at all: upstream runs no preemption.
            Preemption::Fails {
                message: String::new(),
                clear: false,
            }
        } else {
            preempt::preempt(
                candidate,
                error,
                &self.cache,
                nominated.as_deref(),
                &mut self.rng,
            )
        };
        match outcome {
            Preemption::Victims { node, victims } => {
                self.evict(pod, &node, &victims);
                self.clear_lower_nominations(&node, candidate.priority);
                self.cache.nominations_mut().nominate(key, &node, pod);
                let names: Vec<&str> = victims.iter().map(|v| v.key.as_str()).collect();
                let text = format!(
                    "{upstream} {sentence} Preempting {} lower-priority {} on node {node} to make room: {}.",
                    victims.len(),
                    if victims.len() == 1 { "pod" } else { "pods" },
                    names.join(", ")
                );
                self.report_unschedulable(pod, text, Nomination::Set(node));
            }
            Preemption::Fails { message, clear } => {
                let text = if message.is_empty() {
                    format!("{upstream} {sentence}")
                } else {
                    format!("{upstream} preemption: {message} {sentence}")
                };
                let nomination = if clear && nominated.is_some() {
                    self.cache.nominations_mut().remove(key);
                    Nomination::Clear
                } else {
                    Nomination::Keep
                };
                self.report_unschedulable(pod, text, nomination);
            }
        }
    }

    /// Evicts `victims` from `node` for `preemptor`, as upstream does: the DisruptionTarget
    /// condition, a graceful delete (conditional on the victim's uid), a Preempted Event. Each
    /// victim counts as terminating at once, so the preemptor waits for them rather than
    /// preempting again.
    fn evict(&mut self, preemptor: &Pod, node: &str, victims: &[Victim]) {
        let by = preemptor.uid().unwrap_or_default();
        for victim in victims.iter().filter(|v| !v.deleting) {
            self.cache.mark_preempted(&victim.key);
            let Some((namespace, name)) = victim.key.split_once('/') else {
                continue;
            };
            let (namespace, name) = (namespace.to_string(), name.to_string());
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let writes = Arc::clone(&self.writes);
            let recorder = self.recorder.clone();
            let failed = self.not_evicted.clone();
            let victim = victim.clone();
            let scheduler_name = self.options.scheduler_name.clone();
            let message = format!("Preempted by pod {by} on node {node}");
            self.writes_in_flight.spawn(async move {
                let _permit = writes.acquire_owned().await;
                let condition = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": crate::cache::PREEMPTION_BY_SCHEDULER,
                    "message": format!("{scheduler_name}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
                }]}});
                let patched = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&condition))
                    .await;
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(victim.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let result = match patched {
                    Ok(_) => pods.delete(&name, &params).await.map(drop),
                    Err(error) => Err(error),
                };
                match result {
                    Ok(()) => recorder.record(Note {
                        namespace,
                        name,
                        uid: victim.uid,
                        type_: "Normal",
                        reason: "Preempted",
                        message,
                        field_path: None,
                        object: None,
                    }),
                    // Gone already: nothing to evict, and no Event.
                    Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                    Err(error) => {
                        tracing::warn!(pod = %victim.key, %error, "evicting a preemption victim failed");
                        let _ = failed.send(victim.key);
                    }
                }
            });
        }
    }

    /// Ends the nominations of pods of lower priority than `priority` for `node`: a more
    /// important pod takes the room they waited for.
    fn clear_lower_nominations(&mut self, node: &str, priority: i32) {
        let lower: Vec<String> = self
            .cache
            .nominations()
            .on(node)
            .filter(|(_, n)| n.priority < priority)
            .map(|(key, _)| key.to_string())
            .collect();
        for key in lower {
            self.cache.nominations_mut().remove(&key);
            let Some((namespace, name)) = key.split_once('/') else {
                continue;
            };
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let name = name.to_string();
            let writes = Arc::clone(&self.writes);
            self.writes_in_flight.spawn(async move {
                let _permit = writes.acquire_owned().await;
                let patch = json!({"status": {"nominatedNodeName": null}});
                if let Err(error) = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    tracing::debug!(pod = %name, %error, "clearing a nomination failed");
                }
            });
        }
    }

    fn bind(&mut self, key: String, pod: &Pod, node: String) {
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let uid = pod.uid();
        let writes = Arc::clone(&self.writes);
        let bound = self.bound.clone();
        let recorder = self.recorder.clone();
        let namespace = pod.namespace().unwrap_or_default();
        self.writes_in_flight.spawn(async move {
            let _permit = writes.acquire_owned().await;
            let binding = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let result = pods
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
                .map(drop);
            let uid = uid.unwrap_or_default();
            if result.is_ok() {
                recorder.record(Note {
                    message: format!("Successfully assigned {namespace}/{name} to {node}"),
                    namespace,
                    name,
                    uid: uid.clone(),
                    type_: "Normal",
                    reason: "Scheduled",
                    field_path: None,
                    object: None,
                });
            }
            let _ = bound.send(Bound { key, uid, result });
        });
    }

    fn on_bound(&mut self, done: Bound) {
        let Err(error) = done.result else {
            return;
        };
        let key = done.key;
        // A bind of an earlier pod of the same name says nothing about this one.
        if self.assumed.get(&key) != Some(&done.uid) {
            return;
        }
        self.assumed.remove(&key);
        self.cache.unassign(&key);
        match &error {
            // Gone, or bound already (by another scheduler): nothing left to do.
            kube::Error::Api(status) if status.code == 404 || status.code == 409 => {
                tracing::debug!(pod = %key, %error, "binding refused");
                self.pending.remove(&key);
                self.queue.forget(&key);
            }
            _ => {
                tracing::warn!(pod = %key, %error, "binding failed; retrying");
                let priority = self
                    .pending
                    .get(&key)
                    .and_then(|p| p.spec.as_ref()?.priority)
                    .unwrap_or(0);
                self.queue.retry(&key, priority, Instant::now());
            }
        }
    }

    /// Writes the FailedScheduling Event, and the PodScheduled=False condition (with the
    /// nomination) unless the pod says so already.
    fn report_unschedulable(&mut self, pod: &Pod, text: String, nomination: Nomination) {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        self.recorder.record(Note {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: pod.uid().unwrap_or_default(),
            type_: "Warning",
            reason: "FailedScheduling",
            message: text.clone(),
            field_path: None,
            object: None,
        });
        let current = scheduled_condition(pod);
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        let nomination = match nomination {
            Nomination::Set(node) if nominated == Some(node.as_str()) => Nomination::Keep,
            Nomination::Clear if nominated.is_none() => Nomination::Keep,
            other => other,
        };
        if nomination == Nomination::Keep
            && current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(text.as_str())
            })
        {
            return;
        }
        let since = current
            .filter(|c| c.status == "False")
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(k8s_openapi::jiff::Timestamp::now()));
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": text,
            "lastProbeTime": null,
            "lastTransitionTime": since,
        }]}});
        match nomination {
            Nomination::Set(node) => patch["status"]["nominatedNodeName"] = json!(node),
            Nomination::Clear => patch["status"]["nominatedNodeName"] = json!(null),
            Nomination::Keep => {}
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let writes = Arc::clone(&self.writes);
        self.writes_in_flight.spawn(async move {
            let _permit = writes.acquire_owned().await;
            if let Err(error) = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                tracing::debug!(pod = %name, %error, "writing the Unschedulable condition failed");
            }
        });
    }
}

fn scheduled_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
}
