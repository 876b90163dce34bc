//! Node lifecycle (upstream's node-lifecycle controller and its NoExecute taint manager): a
//! node whose Lease in `kube-node-lease` has not been renewed for the grace period (50 s) gets
//! `Ready=Unknown` ("Kubelet stopped posting node status.") and the
//! `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute); a node its agent reports
//! `Ready=False` gets the `not-ready` ones; both go once it is Ready again. Pods on a node with
//! a NoExecute taint they do not tolerate are deleted, those that tolerate it for a while
//! (`tolerationSeconds`, 300 s by the API's default) once that while is over. NoExecute taints
//! are added to at most one node per `eviction_interval` (upstream's 0.1 node/s).
//!
//! Time is what this controller saw, not what clocks wrote: a node counts as alive when its
//! Lease's `renewTime` (or its Ready condition's heartbeat) changed since the last look, so
//! skewed clocks cannot fake health, and after a
//! restart every node starts with a fresh grace period — nothing is evicted because the control
//! plane itself was away. Evictions stop while most nodes (55 % or more, of more than two) are
//! unhealthy: then the trouble is more likely the network than the nodes. Pods of nodes that are
//! gone are [`crate::pod_gc`]'s.
//!
//! Each pass reads nodes from the shared node cache ([`crate::shared_nodes`]) and Leases from a
//! watch of its own, not from a LIST of each every 5 s (at 5,000 idle nodes those LISTs were a
//! tenth of the server's work). A cache may lag a write by a moment: a taint patch carries the
//! node's resourceVersion, and a node whose patch meets a newer version waits for the next pass.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::{owned, shared_nodes};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use skiff_client::events::{Note, Recorder};
use skiff_client::lean::NodeHealth;
use skiff_client::placement::tolerates;
use tokio::time::Instant;

/// The taint of a node that stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that reports it is not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Share of unhealthy nodes from which nothing is evicted.
const UNHEALTHY_THRESHOLD: f64 = 0.55;

/// How the controller times things.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long a node may go without renewing its Lease (upstream's
    /// `node-monitor-grace-period`).
    pub grace: Duration,
    /// How often nodes are looked at (upstream's `node-monitor-period`).
    pub period: Duration,
    /// The least time between two nodes newly tainted NoExecute (upstream's
    /// `node-eviction-rate` of 0.1 node/s: one every 10 s), so a wave of failures drains
    /// nodes one at a time.
    pub eviction_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            grace: Duration::from_secs(50),
            period: Duration::from_secs(5),
            eviction_interval: Duration::from_secs(10),
        }
    }
}

/// A node's Lease as this controller keeps it: the lean metadata and `spec.renewTime`, not the
/// holder, durations or managedFields of thousands of Leases.
#[derive(Clone, Debug, Deserialize)]
struct Renewal {
    #[serde(deserialize_with = "skiff_client::lean::metadata")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: RenewalSpec,
}

/// The one field of a Lease's spec that is read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewalSpec {
    #[serde(default)]
    renew_time: Option<MicroTime>,
}

skiff_client::lean_resource!(
    Renewal,
    "coordination.k8s.io",
    "v1",
    "Lease",
    "leases",
    NamespaceResourceScope,
    metadata
);

/// What was last seen of a node's Lease, and when.
struct Seen {
    renew_time: Option<Timestamp>,
    at: Instant,
}

/// The node's Ready condition status (`True`, `False`, `Unknown`), if it reports one.
fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// The taints a node should carry for its Ready status (NoSchedule and NoExecute of one kind).
fn wanted_taint(ready: Option<&str>) -> Option<&'static str> {
    match ready {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        // Ready, or not reported yet (a node registering, within its grace period).
        _ => None,
    }
}

/// When `pod` is to be evicted from a node with `taints` (NoExecute ones count): `None` if it
/// tolerates them all for ever, else the moment (now, or when its shortest toleration runs out).
fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut due: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let at = if matching.is_empty() {
            Some(now)
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            let seconds = matching
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            let added = taint.time_added.as_ref().map_or(now, |t| t.0);
            Some(Timestamp::from_second(added.as_second().saturating_add(seconds)).unwrap_or(now))
        };
        if let Some(at) = at {
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    due
}

struct Lifecycle {
    client: Client,
    timing: Timing,
    seen: HashMap<String, Seen>,
    recorder: Recorder,
    /// When the next node may be newly tainted NoExecute.
    next_no_execute: Instant,
}

/// Runs the controller with `timing` over `nodes` (the shared node cache) until the task is
/// dropped.
pub async fn run(client: Client, timing: Timing, nodes: Store<NodeHealth>) {
    let (recorder, events) = owned::recorder(&client, "node-controller");
    let (leases, lease_feed) = shared_nodes::cache(Api::<Renewal>::namespaced(
        client.clone(),
        "kube-node-lease",
    ));
    let mut lifecycle = Lifecycle {
        client,
        timing,
        seen: HashMap::new(),
        recorder,
        next_no_execute: Instant::now(),
    };
    let work = async move {
        if nodes.wait_until_ready().await.is_err() || leases.wait_until_ready().await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(lifecycle.timing.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = lifecycle.pass(&nodes, &leases).await {
                tracing::debug!(%error, "node lifecycle pass");
            }
        }
    };
    tokio::join!(work, events, lease_feed);
}

impl Lifecycle {
    /// One look at every node: health from its Lease, taints from its health, evictions from
    /// its taints.
    async fn pass(
        &mut self,
        cached: &Store<NodeHealth>,
        leases: &Store<Renewal>,
    ) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let all_nodes = cached.state();
        let now = Instant::now();
        let names: HashSet<String> = all_nodes.iter().map(|n| n.node.name_any()).collect();
        self.seen.retain(|name, _| names.contains(name));
        let mut unhealthy = 0;
        // The NoExecute taints of each node that has some, for the evictions.
        let mut tainted = Vec::new();
        for watched in &all_nodes {
            let node = &watched.node;
            let name = node.name_any();
            // The Lease's renewal, or the Ready condition's heartbeat, whichever moves.
            let heartbeat = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0);
            let renewal = leases
                .get(&ObjectRef::new(&name).within("kube-node-lease"))
                .and_then(|l| l.spec.renew_time.as_ref().map(|t| t.0));
            let renewed = renewal.max(heartbeat);
            let seen = self.seen.entry(name.clone()).or_insert(Seen {
                renew_time: renewed,
                at: now,
            });
            if seen.renew_time != renewed {
                seen.renew_time = renewed;
                seen.at = now;
            }
            let silent = now.duration_since(seen.at) > self.timing.grace;
            let mut marked = None;
            if silent && ready_status(node).as_deref() != Some("Unknown") {
                marked = Some(self.mark_unknown(&nodes, node).await?);
            }
            let node = marked.as_ref().unwrap_or(node);
            let ready = ready_status(node);
            if ready.as_deref() != Some("True") {
                unhealthy += 1;
            }
            let taints = match self.taint(&nodes, node, ready.as_deref()).await {
                Ok(taints) => taints,
                // The cache had not seen the node's latest write yet: the next pass will have.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(error),
            };
            let no_execute: Vec<Taint> = taints
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            if !no_execute.is_empty() {
                tainted.push((name, no_execute));
            }
        }
        let total = all_nodes.len();
        // Every node down (a single node too) or most of them: likely not the nodes' fault.
        let disrupted = unhealthy > 0
            && (unhealthy == total
                || (total > 2 && unhealthy as f64 >= UNHEALTHY_THRESHOLD * total as f64));
        if disrupted {
            tracing::warn!(
                unhealthy,
                total,
                "most nodes are unhealthy: evictions are paused"
            );
            return Ok(());
        }
        for (name, taints) in &tainted {
            self.evict(name, taints).await?;
        }
        Ok(())
    }

    /// Sets the node's conditions to Unknown, as upstream does for a silent kubelet.
    async fn mark_unknown(&self, nodes: &Api<Node>, node: &Node) -> Result<Node, kube::Error> {
        let now = Time(Timestamp::now());
        let mut current = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if !current.iter().any(|c| c.type_ == "Ready") {
            current.push(k8s_openapi::api::core::v1::NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                ..Default::default()
            });
        }
        let conditions: Vec<serde_json::Value> = current
            .into_iter()
            .map(|c| {
                let changed = c.status != "Unknown";
                json!({
                    "type": c.type_,
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": c.last_heartbeat_time,
                    "lastTransitionTime": if changed { Some(now.clone()) } else { c.last_transition_time },
                })
            })
            .collect();
        let patch = json!({"status": {"conditions": conditions}});
        let updated = nodes
            .patch_status(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        tracing::warn!(node = %node.name_any(), "the node stopped reporting: Ready is Unknown");
        self.recorder.record(Note {
            namespace: "default".into(),
            name: node.name_any(),
            uid: node.uid().unwrap_or_default(),
            type_: "Normal",
            reason: "NodeNotReady",
            message: format!("Node {} status is now: NodeNotReady", node.name_any()),
            field_path: None,
            object: Some(("v1", "Node")),
        });
        Ok(updated)
    }

    /// Puts the taints the node's health calls for, removing the others of ours.
    async fn taint(
        &mut self,
        nodes: &Api<Node>,
        node: &Node,
        ready: Option<&str>,
    ) -> Result<Vec<Taint>, kube::Error> {
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let wanted_key = wanted_taint(ready);
        let ours = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
        let mut taints: Vec<Taint> = current
            .iter()
            .filter(|t| !ours(t) || Some(t.key.as_str()) == wanted_key)
            .cloned()
            .collect();
        if let Some(key) = wanted_key {
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                    // NoExecute taints are rate-limited (a node's own may change key freely).
                    let had_no_execute = current.iter().any(|t| ours(t) && t.effect == "NoExecute");
                    if effect == "NoExecute" && !had_no_execute {
                        let now = Instant::now();
                        if now < self.next_no_execute {
                            continue;
                        }
                        self.next_no_execute = now + self.timing.eviction_interval;
                    }
                    taints.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        time_added: Some(Time(Timestamp::now())),
                        value: None,
                    });
                }
            }
        }
        if taints == current {
            return Ok(taints);
        }
        let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
        nodes
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(taints)
    }

    /// Deletes the pods of node `name` whose tolerations of its NoExecute `taints` ran out.
    async fn evict(&self, name: &str, taints: &[Taint]) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await?
            .items;
        let now = Timestamp::now();
        for pod in on_node
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            if eviction_time(pod, taints, now).is_none_or(|at| at > now) {
                continue;
            }
            let namespace = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&pod.name_any(), &params).await {
                Ok(_) => self.recorder.record(Note {
                    namespace: namespace.clone(),
                    name: pod.name_any(),
                    uid: pod.uid().unwrap_or_default(),
                    type_: "Normal",
                    reason: "TaintManagerEviction",
                    message: format!("Marking for deletion Pod {namespace}/{}", pod.name_any()),
                    field_path: None,
                    object: None,
                }),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
    }

    #[test]
    fn tolerations_should_delay_or_prevent_eviction() {
        let added: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let taints = vec![Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        }];
        assert_eq!(eviction_time(&pod(json!([])), &taints, now), Some(now));
        let default = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        let at = eviction_time(&default, &taints, now).unwrap();
        assert_eq!(at.as_second() - added.as_second(), 300);
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &taints, now), None);
        assert_eq!(wanted_taint(Some("True")), None);
        assert_eq!(wanted_taint(Some("False")), Some(NOT_READY));
        assert_eq!(wanted_taint(Some("Unknown")), Some(UNREACHABLE));
        assert_eq!(
            wanted_taint(None),
            None,
            "a node not reporting yet is in its grace period"
        );
    }
}
