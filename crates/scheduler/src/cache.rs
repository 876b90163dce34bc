//! The scheduler's picture of the cluster: every node, and per node what the pods assigned to it
//! use (requests, host ports, count). Pods count from the moment the scheduler *assumes* them on
//! a node (just before its bind is sent), so a burst of pods never overcommits a node while
//! their bindings travel; the watch then confirms the assignment, or a failed bind forgets it.
//! Usage is kept per node name, whether or not the Node object is known yet, so the order in
//! which nodes and pods arrive after a restart does not matter.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::ResourceExt;

use crate::affinity::{self, Term};
use crate::nominations::Nominations;
use crate::resources::{self, Resources};
use crate::volumes::Volumes;

pub use skiff_client::placement::{HostPort, host_ports};

/// What one assigned pod uses on its node, what later pods' affinity rules look at, and what
/// preemption weighs.
#[derive(Clone, Debug)]
struct Assigned {
    node: String,
    requests: Resources,
    scoring: Resources,
    ports: Vec<HostPort>,
    namespace: String,
    labels: BTreeMap<String, String>,
    anti_affinity: Vec<Term>,
    uid: String,
    priority: i32,
    /// `status.startTime`, if it started.
    start: Option<String>,
    /// Being deleted (`deletionTimestamp`, or a deletion this scheduler sent).
    deleting: bool,
    /// Carries the DisruptionTarget condition of a preemption by a scheduler.
    preempted: bool,
}

impl Assigned {
    fn of(pod: &Pod, node: &str) -> Self {
        let status = pod.status.as_ref();
        Assigned {
            node: node.to_string(),
            requests: resources::pod_requests(pod, false),
            scoring: resources::pod_requests(pod, true),
            ports: host_ports(pod),
            namespace: pod.namespace().unwrap_or_default(),
            labels: pod.labels().clone(),
            anti_affinity: affinity::required_anti_affinity(pod),
            uid: pod.uid().unwrap_or_default(),
            priority: crate::priority_of(pod),
            start: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string()),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            preempted: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionTarget"))
                .is_some_and(|c| {
                    c.status == "True" && c.reason.as_deref() == Some(PREEMPTION_BY_SCHEDULER)
                }),
        }
    }
}

/// The reason of the DisruptionTarget condition a preemption writes on its victims.
pub const PREEMPTION_BY_SCHEDULER: &str = "PreemptionByScheduler";

/// A pod on a node, as preemption weighs it.
pub struct PodOnNode<'a> {
    /// `namespace/name`.
    pub key: &'a str,
    /// Its uid.
    pub uid: &'a str,
    /// Its priority.
    pub priority: i32,
    /// When it started (RFC 3339), if it did.
    pub start: Option<&'a str>,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Whether a scheduler's preemption is deleting it.
    pub preempted: bool,
    assigned: &'a Assigned,
}

impl Assigned {
    fn view(&self) -> AssignedPod<'_> {
        AssignedPod {
            node: &self.node,
            namespace: &self.namespace,
            labels: &self.labels,
            anti_affinity: &self.anti_affinity,
        }
    }
}

/// An assigned pod as the inter-pod rules see it.
pub struct AssignedPod<'a> {
    /// Its node's name.
    pub node: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Its required anti-affinity terms.
    pub anti_affinity: &'a [Term],
}

/// What the pods assigned to one node use.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// The sum of their requests.
    pub requested: Resources,
    /// The same with upstream's defaults for containers without requests (for scoring).
    pub scoring: Resources,
    /// How many pods.
    pub pods: usize,
    /// The host ports they hold.
    pub ports: Vec<HostPort>,
}

impl Usage {
    fn add(&mut self, pod: &Assigned) {
        self.add_parts(&pod.requests, &pod.scoring, &pod.ports);
    }

    /// Counts one more pod with these requests and host ports.
    pub fn add_parts(&mut self, requests: &Resources, scoring: &Resources, ports: &[HostPort]) {
        self.requested.add(requests);
        self.scoring.add(scoring);
        self.pods += 1;
        self.ports.extend(ports.iter().cloned());
    }

    fn remove(&mut self, pod: &Assigned) {
        self.requested.subtract(&pod.requests);
        self.scoring.subtract(&pod.scoring);
        self.pods = self.pods.saturating_sub(1);
        for port in &pod.ports {
            if let Some(at) = self.ports.iter().position(|p| p == port) {
                self.ports.swap_remove(at);
            }
        }
    }

    /// Counts `pod` (a pod of this node) again.
    pub fn add_pod(&mut self, pod: &PodOnNode<'_>) {
        self.add(pod.assigned);
    }

    /// Stops counting `pod` (a pod of this node).
    pub fn remove_pod(&mut self, pod: &PodOnNode<'_>) {
        self.remove(pod.assigned);
    }
}

/// A node as the filters see it, with what every attempt asks of it computed once.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    /// The node's name.
    pub name: String,
    /// The Node object.
    pub node: Node,
    /// What it offers pods.
    pub allocatable: Resources,
    /// Its taints, `not-ready` included when it is not Ready.
    pub taints: Vec<Taint>,
}

impl NodeEntry {
    /// The entry of `node`.
    pub fn new(node: Node) -> Self {
        NodeEntry {
            name: node.name_any(),
            allocatable: resources::allocatable(&node),
            taints: crate::filters::effective_taints(&node),
            node,
        }
    }
}

/// Nodes and what is assigned to them. What each node name's pods use sits in a slot of its
/// own (kept while the name has a Node or pods), so the filters read a node's usage by position
/// instead of looking its name up, for every node of every attempt.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeEntry>,
    /// The usage slot of each of `nodes`.
    node_slots: Vec<usize>,
    index: HashMap<String, usize>,
    slots: HashMap<String, usize>,
    usage: Vec<Usage>,
    /// The keys of the pods each usage slot counts.
    members: Vec<BTreeSet<String>>,
    free_slots: Vec<usize>,
    pods: HashMap<String, Assigned>,
    /// Pods this scheduler is deleting to preempt them (until the watch shows it).
    marked: HashSet<String>,
    nominations: Nominations,
    volumes: Volumes,
    /// The assigned pods with required anti-affinity terms.
    anti_affine: std::collections::HashSet<String>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    empty: Usage,
}

impl Cache {
    /// The usage slot of the node name `name`, made when it has none.
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&slot) = self.slots.get(name) {
            return slot;
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.usage.push(Usage::default());
            self.members.push(BTreeSet::new());
            self.usage.len() - 1
        });
        self.slots.insert(name.to_string(), slot);
        slot
    }

    /// Gives back the slot of `name` once neither a Node nor a pod needs it.
    fn release_slot(&mut self, name: &str) {
        if self.index.contains_key(name) {
            return;
        }
        if let Some(&slot) = self.slots.get(name)
            && self.usage[slot].pods == 0
        {
            self.usage[slot] = Usage::default();
            self.members[slot].clear();
            self.slots.remove(name);
            self.free_slots.push(slot);
        }
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&mut self, node: Node) {
        let entry = NodeEntry::new(node);
        let name = entry.name.clone();
        match self.index.get(&name) {
            Some(&at) => self.nodes[at] = entry,
            None => {
                let slot = self.slot(&name);
                self.index.insert(name, self.nodes.len());
                self.nodes.push(entry);
                self.node_slots.push(slot);
            }
        }
    }

    /// Removes a node (its pods' usage stays, should it come back).
    pub fn remove_node(&mut self, name: &str) {
        if let Some(at) = self.index.remove(name) {
            self.nodes.swap_remove(at);
            self.node_slots.swap_remove(at);
            if let Some(moved) = self.nodes.get(at) {
                self.index.insert(moved.name.clone(), at);
            }
            self.release_slot(name);
        }
    }

    /// Forgets every node (before a relist); what pods use stays.
    pub fn clear_nodes(&mut self) {
        let names: Vec<String> = self.index.drain().map(|(name, _)| name).collect();
        self.nodes.clear();
        self.node_slots.clear();
        for name in names {
            self.release_slot(&name);
        }
    }

    /// Forgets every pod but those `keep` says (before a relist).
    pub fn retain_pods(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.pods.keys().filter(|k| !keep(k)).cloned().collect();
        for key in gone {
            self.unassign(&key);
        }
    }

    /// The nodes, in a stable order.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.nodes
    }

    /// Where the node `name` is in [`Cache::nodes`], if it is known.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The labels of the node `name`, if it is known.
    pub fn node_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        let at = *self.index.get(name)?;
        Some(self.nodes[at].node.labels())
    }

    /// Every assigned (or assumed) pod.
    pub fn assigned(&self) -> impl Iterator<Item = AssignedPod<'_>> {
        self.pods.values().map(Assigned::view)
    }

    /// The assigned pods that have required anti-affinity terms.
    pub fn anti_affine(&self) -> impl Iterator<Item = AssignedPod<'_>> {
        self.anti_affine
            .iter()
            .filter_map(|key| self.pods.get(key))
            .map(Assigned::view)
    }

    /// Records a namespace's labels (for terms' namespace selectors).
    pub fn upsert_namespace(&mut self, name: String, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name, labels);
    }

    /// Forgets a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// The labels of the namespace `name`, if it is known.
    pub fn namespace_labels(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(name)
    }

    /// What is assigned to `node`.
    pub fn usage(&self, node: &str) -> &Usage {
        self.slots
            .get(node)
            .map_or(&self.empty, |&slot| &self.usage[slot])
    }

    /// What is assigned to the node at `at` in [`Cache::nodes`].
    pub fn usage_at(&self, at: usize) -> &Usage {
        self.node_slots
            .get(at)
            .map_or(&self.empty, |&slot| &self.usage[slot])
    }

    /// Records `pod` (key `key`) as assigned to `node`, replacing what was recorded for it.
    pub fn assign(&mut self, key: &str, pod: &Pod, node: &str) {
        self.forget(key);
        let mut assigned = Assigned::of(pod, node);
        assigned.deleting |= self.marked.contains(key);
        assigned.preempted |= self.marked.contains(key);
        let slot = self.slot(node);
        self.usage[slot].add(&assigned);
        self.members[slot].insert(key.to_string());
        self.nominations.remove(key);
        if !assigned.anti_affinity.is_empty() {
            self.anti_affine.insert(key.to_string());
        }
        self.pods.insert(key.to_string(), assigned);
    }

    /// Removes whatever was recorded for the pod `key`.
    pub fn unassign(&mut self, key: &str) {
        self.marked.remove(key);
        self.forget(key);
    }

    /// Removes the pod's usage (its preemption mark stays: the pod may be recorded again).
    fn forget(&mut self, key: &str) {
        self.anti_affine.remove(key);
        if let Some(old) = self.pods.remove(key)
            && let Some(&slot) = self.slots.get(&old.node)
        {
            self.usage[slot].remove(&old);
            self.members[slot].remove(key);
            self.release_slot(&old.node);
        }
    }

    /// The pods recorded on `node`.
    pub fn pods_on(&self, node: &str) -> impl Iterator<Item = PodOnNode<'_>> {
        self.slots
            .get(node)
            .map(|&slot| &self.members[slot])
            .into_iter()
            .flatten()
            .filter_map(|key| {
                let assigned = self.pods.get(key)?;
                Some(PodOnNode {
                    key,
                    uid: &assigned.uid,
                    priority: assigned.priority,
                    start: assigned.start.as_deref(),
                    deleting: assigned.deleting,
                    preempted: assigned.preempted,
                    assigned,
                })
            })
    }

    /// Records that this scheduler is deleting the pod `key` to preempt it: it counts as a
    /// terminating victim until the watch shows so or it is gone.
    pub fn mark_preempted(&mut self, key: &str) {
        self.marked.insert(key.to_string());
        if let Some(assigned) = self.pods.get_mut(key) {
            assigned.deleting = true;
            assigned.preempted = true;
        }
    }

    /// Forgets [`Cache::mark_preempted`] (the deletion failed); the watch's view stands.
    pub fn unmark_preempted(&mut self, key: &str) {
        self.marked.remove(key);
    }

    /// The claims and volumes.
    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// The claims and volumes, to change.
    pub fn volumes_mut(&mut self) -> &mut Volumes {
        &mut self.volumes
    }

    /// The nominations: pods that preempted others, by the node they wait for.
    pub fn nominations(&self) -> &Nominations {
        &self.nominations
    }

    /// The nominations, to change.
    pub fn nominations_mut(&mut self) -> &mut Nominations {
        &mut self.nominations
    }

    /// What `node` (at `at` in [`Cache::nodes`]) has in use as a pod of `priority` (uid
    /// `uid`) sees it: the assigned pods, and the pods nominated to it of at least that
    /// priority, as upstream's filters count them.
    pub fn usage_for(&self, at: usize, priority: i32, uid: &str) -> Cow<'_, Usage> {
        let usage = self.usage_at(at);
        match self.nodes.get(at) {
            Some(node) if !self.nominations.is_empty() => {
                self.nominations.added_to(usage, &node.name, priority, uid)
            }
            _ => Cow::Borrowed(usage),
        }
    }

    /// The node the pod `key` is recorded on, if any.
    pub fn assigned_node(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(|a| a.node.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: &str, host_port: Option<i32>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{
                "name": "c",
                "resources": {"requests": {"cpu": cpu}},
                "ports": host_port.map(|p| vec![json!({"containerPort": 80, "hostPort": p})]),
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn assigning_a_pod_again_should_replace_its_usage_not_add_to_it() {
        let mut cache = Cache::default();
        cache.assign("default/p", &pod("1", Some(80)), "n1");
        cache.assign("default/p", &pod("1", Some(80)), "n1");
        assert_eq!(cache.usage("n1").requested.get("cpu"), 1000);
        assert_eq!(cache.usage("n1").pods, 1);
        cache.assign("default/p", &pod("1", Some(80)), "n2");
        assert_eq!(cache.usage("n1").pods, 0);
        assert_eq!(cache.usage("n2").ports.len(), 1);
        cache.unassign("default/p");
        assert_eq!(cache.usage("n2").pods, 0);
    }

    #[test]
    fn removing_a_node_should_keep_the_others_findable() {
        let mut cache = Cache::default();
        for name in ["a", "b", "c"] {
            cache.upsert_node(serde_json::from_value(json!({"metadata": {"name": name}})).unwrap());
        }
        cache.remove_node("a");
        let names: Vec<_> = cache.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["c", "b"]);
        cache.upsert_node(serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap());
        assert_eq!(cache.nodes().len(), 2);
    }

    #[test]
    fn host_ports_on_any_address_should_conflict_with_specific_ones() {
        let any = HostPort {
            ip: String::new(),
            protocol: "TCP".into(),
            port: 80,
        };
        let one = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let udp = HostPort {
            ip: String::new(),
            protocol: "UDP".into(),
            port: 80,
        };
        assert!(any.conflicts(&one));
        assert!(!any.conflicts(&udp));
    }
}
