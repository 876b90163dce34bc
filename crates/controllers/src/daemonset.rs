//! The DaemonSet controller (upstream's `daemonset-controller`): one pod per eligible node. A
//! node is eligible when it matches the template's nodeSelector and required node affinity and
//! every NoSchedule/NoExecute taint it carries is tolerated — counting the tolerations upstream
//! adds to every daemon pod (not-ready and unreachable NoExecute; disk, memory and PID pressure
//! and unschedulable NoSchedule; network-unavailable for host-network pods). A pod stays on a
//! node it already runs on unless the node no longer matches or carries an untolerated NoExecute
//! taint. Pods are placed by the scheduler, as upstream does: each pod's required node affinity
//! is replaced by one term matching its node's name.
//!
//! Each pass reads nodes and the set's pods live and, per node, creates the missing pod,
//! deletes finished pods (they are made again), surplus pods (the oldest stays) and pods on
//! nodes that are no longer eligible. A template change rolls out as `RollingUpdate` says:
//! without surge, old pods are deleted while at most `maxUnavailable` nodes lack an available
//! pod (unavailable old pods first); with `maxSurge`, a new pod starts beside the old one on at
//! most that many nodes and the old one goes once the new one is available. `OnDelete` leaves
//! old pods until the user deletes them. Templates are kept as ControllerRevisions
//! ([`crate::revisions`]); pods carry their revision's `controller-revision-hash`. The status
//! counts are written once per pass, only when they changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::owned;
use crate::pods::{
    PodIndex, adopt, available, controller_of, is_active, is_finished, ready_since, release,
};
use crate::revisions::{self, HASH_LABEL};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use skiff_client::lean::WatchedNode;
use skiff_client::placement::{first_untolerated, matches_affinity, tolerates};

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

/// What a pass works with.
type Context = crate::pods::Keeper;

/// Runs the controller until the task is dropped.
pub async fn run(
    client: Client,
    index: PodIndex,
    pods: impl futures::Stream<Item = std::sync::Arc<crate::shared_pods::PodSummary>> + Send + 'static,
) {
    let (context, events) = crate::pods::Keeper::new(client.clone(), "daemonset-controller", index);
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let nodes: Api<WatchedNode> = Api::all(client.clone());
    let controller =
        Controller::new(sets, watcher::Config::default()).with_config(owned::controller_config());
    let store = controller.store();
    let work = controller
        .owns_shared_stream(pods)
        // A node that comes, goes or changes its labels or taints may change where every
        // DaemonSet runs.
        .watches_stream(
            placement_changes(
                watcher::watcher(nodes, watcher::Config::default()).default_backoff(),
            ),
            move |_: WatchedNode| {
                store
                    .state()
                    .iter()
                    .map(|set| ObjectRef::from_obj(set.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, owned::retry, context);
    owned::drive(work, events, "daemonset").await;
}

/// The nodes of `events` that may run other DaemonSet pods than before: a node that comes or
/// goes, or whose labels or taints change (what [`placement`] reads; upstream's
/// `shouldIgnoreNodeUpdate` also passes over the rest). A kubelet reports its status at least
/// every five minutes, heartbeat times only: 5,000 nodes make 17 such updates a second, and each
/// would start a pass of every DaemonSet, which lists every node and every one of its pods.
/// (kube-runtime's `predicate_filter` does the same but for deletions: it drops a deleted node
/// whose digest is unchanged, and a node that goes changes where DaemonSets run.)
fn placement_changes(
    events: impl futures::Stream<Item = Result<watcher::Event<WatchedNode>, watcher::Error>>,
) -> impl futures::Stream<Item = Result<WatchedNode, watcher::Error>> {
    // What each node looked like, and during a relist what it looked like before it.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut before: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |event| {
        let changed = match event {
            Err(error) => Some(Err(error)),
            Ok(watcher::Event::Init) => {
                before = std::mem::take(&mut seen);
                None
            }
            // During a relist `seen` starts empty and `before` holds the earlier look; between
            // relists `before` is empty.
            Ok(watcher::Event::InitApply(watched) | watcher::Event::Apply(watched)) => {
                let print = placement_print(&watched.node);
                let name = watched.node.name_any();
                let earlier = before.remove(&name);
                let last = seen.insert(name, print).or(earlier);
                (last != Some(print)).then_some(Ok(watched))
            }
            // Nodes gone while the watch was down are not known by name any more.
            Ok(watcher::Event::InitDone) => {
                before.clear();
                None
            }
            Ok(watcher::Event::Delete(watched)) => {
                seen.remove(&watched.node.name_any());
                Some(Ok(watched))
            }
        };
        futures::future::ready(changed)
    })
}

/// A digest of what [`placement`] reads of a node: its labels and taints.
fn placement_print(node: &Node) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    node.metadata.labels.hash(&mut hasher);
    for taint in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
        (&taint.key, &taint.value, &taint.effect).hash(&mut hasher);
    }
    hasher.finish()
}

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut tolerations = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        tolerations.push(exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    tolerations
}

/// The set's pod for `node` (unnamed; `generateName`), of the revision `hash`.
fn new_pod(
    set: &DaemonSet,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    hash: &str,
    node: &str,
) -> Pod {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = None;
    metadata.generate_name = Some(format!("{}-", set.name_any()));
    metadata.namespace = set.namespace();
    metadata.owner_references = Some(vec![owned::controller_reference(set)]);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for wanted in daemon_tolerations(spec.host_network == Some(true)) {
        let same = |t: &Toleration| {
            t.key == wanted.key && t.effect == wanted.effect && t.operator == wanted.operator
        };
        if !tolerations.iter().any(same) {
            tolerations.push(wanted);
        }
    }
    spec.tolerations = Some(tolerations);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    });
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The node a daemon pod is bound or meant for.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Whether the set's pods should (start to) run on `node`, and whether one already there may
/// stay (upstream's `NodeShouldRunDaemonPod`).
fn placement(set: &DaemonSet, node: &Node) -> (bool, bool) {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    // The template itself, with the added tolerations, judged as the scheduler would.
    let mut pod = new_pod(set, &template, "", &node.name_any());
    if let Some(spec) = pod.spec.as_mut() {
        spec.affinity = template.spec.as_ref().and_then(|s| s.affinity.clone());
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if !matches_affinity(&pod, node) {
        return (false, false);
    }
    let run = first_untolerated(&tolerations, &taints).is_none();
    let stay = !taints.iter().any(|taint| {
        taint.effect == "NoExecute" && !tolerations.iter().any(|t| tolerates(t, taint))
    });
    (run, stay)
}

/// `maxUnavailable` or `maxSurge` of `desired` nodes: a number, or a percentage rounded up.
fn scaled(value: Option<&IntOrString>, desired: usize, default: i32) -> usize {
    let resolved = match value {
        None => i64::from(default),
        Some(IntOrString::Int(n)) => i64::from(*n),
        Some(IntOrString::String(text)) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            (i64::try_from(desired).unwrap_or(i64::MAX) * percent + 99) / 100
        }
    };
    usize::try_from(resolved.max(0)).unwrap_or(0)
}

/// What one node has of the set's pods.
#[derive(Default)]
struct NodePods {
    /// Live pods, oldest first.
    active: Vec<Pod>,
    /// Pods that ran to their end and are not yet deleted.
    finished: Vec<Pod>,
}

async fn reconcile(set: Arc<DaemonSet>, context: Arc<Context>) -> Result<Action, DaemonSetError> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = set.spec.clone().unwrap_or_default();
    let Some(selector) = crate::pods::selector(&spec.selector) else {
        tracing::debug!(daemonset = %set.name_any(), "an empty or invalid selector selects nothing");
        return Ok(Action::await_change());
    };
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let nodes = WatchedNode::list_all(&context.client).await?;
    let mut by_node: BTreeMap<String, NodePods> = BTreeMap::new();
    for stray in context.index.strayed(&namespace, &uid, &selector) {
        release(&pods_api, stray.as_ref(), &uid).await;
    }
    for pod in crate::pods::selected(&pods_api, &selector).await? {
        let pod = match controller_of(&pod) {
            Some(owner) if owner.uid == uid => pod,
            None if is_active(&pod) => match adopt(&pods_api, &pod, set.as_ref()).await {
                Some(adopted) => adopted,
                None => continue,
            },
            _ => continue,
        };
        let Some(node) = node_of(&pod) else { continue };
        let entry = by_node.entry(node).or_default();
        if is_finished(&pod) {
            entry.finished.push(pod);
        } else if pod.metadata.deletion_timestamp.is_none() {
            entry.active.push(pod);
        }
    }
    for entry in by_node.values_mut() {
        entry
            .active
            .sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    let revisions_api: Api<ControllerRevision> =
        Api::namespaced(context.client.clone(), &namespace);
    let collisions = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let history = revisions::sync(&revisions_api, set.as_ref(), &spec.template, collisions).await?;
    let hash = revisions::hash_of(history.update());
    let now = Timestamp::now();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let pass = Pass {
        context: &context,
        set: &set,
        pods_api: &pods_api,
        hash: &hash,
        min_ready,
        now,
    };
    let empty = NodePods::default();
    let mut eligible: Vec<(&Node, &NodePods)> = Vec::new();
    let mut misscheduled = 0;
    for node in &nodes {
        let (run, stay) = placement(&set, node);
        let pods = by_node.get(&node.name_any()).unwrap_or(&empty);
        for pod in &pods.finished {
            pass.note_failed(pod, &node.name_any());
            pass.delete(pod).await;
        }
        if run || (stay && !pods.active.is_empty()) {
            eligible.push((node, pods));
        } else if !pods.active.is_empty() {
            misscheduled += 1;
            for pod in &pods.active {
                pass.delete(pod).await;
            }
        }
    }
    // Pods of nodes that are gone.
    let known: BTreeSet<String> = nodes.iter().map(ResourceExt::name_any).collect();
    for (_, pods) in by_node.iter().filter(|(n, _)| !known.contains(*n)) {
        for pod in &pods.active {
            pass.delete(pod).await;
        }
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let rolling_update = strategy.rolling_update.unwrap_or_default();
    let mut surge = scaled(rolling_update.max_surge.as_ref(), eligible.len(), 0);
    let mut unavailable_budget = scaled(rolling_update.max_unavailable.as_ref(), eligible.len(), 1);
    if surge == 0 && unavailable_budget == 0 {
        unavailable_budget = 1;
    }
    if !rolling {
        surge = 0;
    }
    pass.nodes(&eligible, rolling, surge, unavailable_budget)
        .await;
    let live: BTreeSet<String> = history
        .revisions
        .iter()
        .filter(|r| {
            let h = revisions::hash_of(r);
            by_node
                .values()
                .flat_map(|p| &p.active)
                .any(|p| p.labels().get(HASH_LABEL) == Some(&h))
        })
        .map(ResourceExt::name_any)
        .collect();
    let limit = spec.revision_history_limit.unwrap_or(10);
    revisions::truncate(&revisions_api, &history, &live, limit).await;
    let status = pass.status(&eligible, misscheduled, history.collisions);
    owned::write_status(&context.client, set.as_ref(), set.status.as_ref(), status).await?;
    let waiting = eligible
        .iter()
        .flat_map(|(_, p)| &p.active)
        .any(|p| ready_since(p).is_some() && !available(p, min_ready, now));
    Ok(if waiting {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::await_change()
    })
}

/// One pass over a DaemonSet's nodes.
struct Pass<'a> {
    context: &'a Context,
    set: &'a DaemonSet,
    pods_api: &'a Api<Pod>,
    /// The update revision's hash.
    hash: &'a str,
    min_ready: i64,
    now: Timestamp,
}

impl Pass<'_> {
    fn updated(&self, pod: &Pod) -> bool {
        pod.labels().get(HASH_LABEL).map(String::as_str) == Some(self.hash)
    }

    fn available(&self, pod: &Pod) -> bool {
        available(pod, self.min_ready, self.now)
    }

    /// Gives every eligible node its pod and rolls template changes out.
    async fn nodes(
        &self,
        eligible: &[(&Node, &NodePods)],
        rolling: bool,
        surge: usize,
        unavailable_budget: usize,
    ) {
        let template = self
            .set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        // Nodes without an available pod now, and nodes running an old and a new pod.
        let mut unavailable = eligible
            .iter()
            .filter(|(_, p)| !p.active.iter().any(|p| self.available(p)))
            .count();
        let mut surging = eligible
            .iter()
            .filter(|(_, p)| {
                p.active.iter().any(|p| self.updated(p))
                    && p.active.iter().any(|p| !self.updated(p))
            })
            .count();
        for (node, pods) in eligible {
            let node_name = node.name_any();
            let new: Vec<&Pod> = pods.active.iter().filter(|p| self.updated(p)).collect();
            let old: Vec<&Pod> = pods.active.iter().filter(|p| !self.updated(p)).collect();
            match (old.len(), new.len()) {
                (0, 0) => self.create(&template, &node_name).await,
                // Surplus pods: the oldest stays.
                (0, n) if n > 1 => {
                    for pod in &new[1..] {
                        self.delete(pod).await;
                    }
                }
                (n, 0) if n > 1 => {
                    for pod in &old[1..] {
                        self.delete(pod).await;
                    }
                }
                (_, 0) if rolling => {
                    let old = old[0];
                    if !self.available(old) {
                        self.delete(old).await;
                    } else if surge > 0 {
                        if surging < surge {
                            surging += 1;
                            self.create(&template, &node_name).await;
                        }
                    } else if unavailable < unavailable_budget {
                        unavailable += 1;
                        self.delete(old).await;
                    }
                }
                // A new pod beside old ones (a surge): the old go once the new is available.
                (_, _) if new.iter().any(|p| self.available(p)) => {
                    for pod in old {
                        self.delete(pod).await;
                    }
                }
                _ => {}
            }
        }
    }

    async fn create(&self, template: &k8s_openapi::api::core::v1::PodTemplateSpec, node: &str) {
        let pod = new_pod(self.set, template, self.hash, node);
        match self.pods_api.create(&PostParams::default(), &pod).await {
            Ok(made) => self.context.note(
                self.set,
                "Normal",
                "SuccessfulCreate",
                format!("Created pod: {}", made.name_any()),
            ),
            Err(error) => self.context.note(
                self.set,
                "Warning",
                "FailedCreate",
                format!("Error creating: {}", owned::refusal(&error)),
            ),
        }
    }

    async fn delete(&self, pod: &Pod) {
        match owned::delete_read(self.pods_api, pod).await {
            Ok(()) => self.context.note(
                self.set,
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {}", pod.name_any()),
            ),
            Err(error) => self.context.note(
                self.set,
                "Warning",
                "FailedDelete",
                format!("Error deleting: {}", owned::refusal(&error)),
            ),
        }
    }

    fn note_failed(&self, pod: &Pod, node: &str) {
        self.context.note(
            self.set,
            "Warning",
            "FailedDaemonPod",
            format!(
                "Found failed daemon pod {}/{} on node {node}, will try to kill it",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ),
        );
    }

    /// The counts the pass observed, per eligible node (its oldest pod, as upstream).
    fn status(
        &self,
        eligible: &[(&Node, &NodePods)],
        misscheduled: usize,
        collisions: i32,
    ) -> DaemonSetStatus {
        let count = |keep: &dyn Fn(&[Pod]) -> bool| {
            i32::try_from(eligible.iter().filter(|(_, p)| keep(&p.active)).count())
                .unwrap_or(i32::MAX)
        };
        let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
        let available = count(&|pods| pods.iter().any(|p| self.available(p)));
        DaemonSetStatus {
            current_number_scheduled: count(&|pods| !pods.is_empty()),
            desired_number_scheduled: desired,
            number_misscheduled: i32::try_from(misscheduled).unwrap_or(i32::MAX),
            number_ready: count(&|pods| pods.iter().any(|p| ready_since(p).is_some())),
            number_available: Some(available),
            number_unavailable: Some(desired - available),
            updated_number_scheduled: Some(count(&|pods| pods.iter().any(|p| self.updated(p)))),
            observed_generation: self.set.metadata.generation,
            collision_count: Some(collisions),
            conditions: self.set.status.as_ref().and_then(|s| s.conditions.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(template_spec: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": template_spec}}
        }))
        .unwrap()
    }

    fn node(value: serde_json::Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_daemon_pod_should_be_pinned_to_its_node_and_tolerate_what_upstream_adds() {
        let set = set(json!({"containers": [{"name": "c", "image": "busybox"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "os", "operator": "In", "values": ["linux"]}]}]}}}}));
        let template = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &template, "h1", "n1");
        assert_eq!(node_of(&pod).as_deref(), Some("n1"));
        assert_eq!(pod.labels()[HASH_LABEL], "h1");
        let tolerations = pod.spec.unwrap().tolerations.unwrap();
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"))
        );
        assert!(
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
        );
    }

    #[test]
    fn nodes_should_be_eligible_by_selector_affinity_and_taints() {
        let set = set(json!({"containers": [{"name": "c", "image": "busybox"}],
            "nodeSelector": {"role": "edge"}}));
        let plain = node(json!({"metadata": {"name": "a", "labels": {"role": "edge"}}}));
        let other = node(json!({"metadata": {"name": "b", "labels": {"role": "core"}}}));
        let cordoned = node(
            json!({"metadata": {"name": "c", "labels": {"role": "edge"}},
            "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        );
        let dedicated = node(
            json!({"metadata": {"name": "d", "labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        let evicting = node(
            json!({"metadata": {"name": "e", "labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}}),
        );
        assert_eq!(placement(&set, &plain), (true, true));
        assert_eq!(placement(&set, &other), (false, false));
        assert_eq!(
            placement(&set, &cordoned),
            (true, true),
            "daemon pods tolerate cordons"
        );
        assert_eq!(
            placement(&set, &dedicated),
            (false, true),
            "a running pod may stay"
        );
        assert_eq!(placement(&set, &evicting), (false, false));
    }

    #[test]
    fn percentages_should_round_up_and_absent_values_take_the_default() {
        assert_eq!(scaled(Some(&IntOrString::String("10%".into())), 15, 1), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(3)), 15, 1), 3);
        assert_eq!(scaled(None, 15, 1), 1);
    }

    fn watched(name: &str, zone: &str, heartbeat: &str, taint: Option<&str>) -> WatchedNode {
        let taints: Vec<serde_json::Value> = taint
            .map(|key| json!({"key": key, "effect": "NoSchedule"}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"zone": zone}},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastHeartbeatTime": heartbeat}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn node_events_should_reach_daemonsets_only_when_labels_or_taints_change_or_nodes_come_and_go()
     {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let t1 = "2026-12-06T10:00:00Z";
        let t2 = "2026-12-06T10:05:00Z";
        let events = vec![
            Init,
            InitApply(watched("n1", "a", t1, None)),
            InitApply(watched("n2", "a", t1, None)),
            InitDone,
            // A heartbeat alone.
            Apply(watched("n1", "a", t2, None)),
            Apply(watched("n1", "b", t2, None)),
            Apply(watched("n2", "a", t2, Some("dedicated"))),
            Delete(watched("n2", "a", t2, Some("dedicated"))),
            // A relist: n1 as it was, n2 back as it was before its deletion, n3 new.
            Init,
            InitApply(watched("n1", "b", t2, None)),
            InitApply(watched("n2", "a", t2, Some("dedicated"))),
            InitApply(watched("n3", "a", t1, None)),
            InitDone,
            Apply(watched("n3", "a", t2, None)),
        ];
        let passed: Vec<(String, String)> =
            placement_changes(futures::stream::iter(events.into_iter().map(Ok)))
                .map(|node| {
                    let node = node.unwrap().node;
                    (node.name_any(), node.labels()["zone"].clone())
                })
                .collect()
                .await;
        // The first list, the label, the taint, the deletion; the relist's n2 and n3.
        let expected = [
            ("n1", "a"),
            ("n2", "a"),
            ("n1", "b"),
            ("n2", "a"),
            ("n2", "a"),
            ("n2", "a"),
            ("n3", "a"),
        ]
        .map(|(n, z)| (n.to_string(), z.to_string()));
        assert_eq!(passed, expected);
    }
}
