//! The filters: whether a pod may run on a node, in upstream's order (NodeUnschedulable,
//! TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, VolumeBinding, PodTopologySpread,
//! InterPodAffinity — the last two prepared per attempt in [`crate::spread`] and
//! [`crate::affinity`]), stopping at the first filter that
//! refuses, with upstream's reason strings (they make up the `0/3 nodes are available: ...`
//! message that clients parse). A node that is not Ready counts as carrying the
//! `node.kubernetes.io/not-ready:NoSchedule` taint, as upstream's node lifecycle controller
//! would have put on it, so pods that tolerate it (DaemonSets) still land there.

use std::fmt;

use k8s_openapi::api::core::v1::{Node, NodeSelector, Pod, Taint, Toleration};

use crate::cache::{HostPort, NodeEntry, Usage};
use crate::resources::Resources;

/// The taint of nodes that are not Ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of cordoned nodes.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why one node cannot take a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The node is cordoned.
    Unschedulable,
    /// The node has a NoSchedule or NoExecute taint the pod does not tolerate.
    Taint(Taint),
    /// The node's labels do not match the pod's nodeSelector or required node affinity.
    Affinity,
    /// A host port the pod wants is taken on the node.
    Ports,
    /// The node has too little of a resource left.
    Insufficient(String),
    /// The node runs as many pods as it may.
    TooManyPods,
    /// Placing the pod would break a `DoNotSchedule` topology spread constraint.
    Spread,
    /// The node lacks a topology spread constraint's label.
    SpreadMissingLabel,
    /// The node does not match the node affinity of a PersistentVolume the pod's claims are
    /// bound to.
    VolumeNodeAffinity,
    /// The node's domain has no pod the pod's required affinity asks for.
    PodAffinity,
    /// The node's domain has a pod the pod's required anti-affinity refuses.
    PodAntiAffinity,
    /// A pod in the node's domain refuses this pod (its required anti-affinity).
    ExistingAntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::Taint(taint) => write!(
                f,
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ),
            Reason::Affinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::Insufficient(resource) => write!(f, "Insufficient {resource}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Spread => f.write_str("node(s) didn't match pod topology spread constraints"),
            Reason::SpreadMissingLabel => f.write_str(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ),
            Reason::VolumeNodeAffinity => f.write_str("node(s) had volume node affinity conflict"),
            Reason::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
        }
    }
}

/// The pending pod, with what the filters and scores need computed once per attempt.
pub struct Candidate<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its priority.
    pub priority: i32,
    /// Its uid.
    pub uid: String,
    /// What it requests.
    pub requests: Resources,
    /// What it requests with upstream's scoring defaults.
    pub scoring: Resources,
    /// The host ports it wants.
    pub ports: Vec<HostPort>,
    /// Its topology spread constraints, counted.
    pub spread: crate::spread::Prepared,
    /// Its inter-pod affinity rules, and the placed pods' against it.
    pub affinity: crate::affinity::Prepared,
    /// The node affinities of the volumes its claims are bound to, or why no node can take it.
    pub volumes: Result<Vec<NodeSelector>, crate::volumes::Unusable>,
}

impl<'a> Candidate<'a> {
    /// Computes what the filters need of `pod`.
    pub fn new(pod: &'a Pod) -> Self {
        Candidate {
            pod,
            priority: crate::priority_of(pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            requests: crate::resources::pod_requests(pod, false),
            scoring: crate::resources::pod_requests(pod, true),
            ports: crate::cache::host_ports(pod),
            spread: crate::spread::Prepared::default(),
            affinity: crate::affinity::Prepared::default(),
            volumes: Ok(Vec::new()),
        }
    }

    /// Counts what the topology spread and inter-pod affinity rules need from `cache`.
    pub fn prepare(&mut self, cache: &crate::cache::Cache) {
        self.spread = crate::spread::prepare(self.pod, cache);
        self.affinity = crate::affinity::prepare(self.pod, cache);
        self.volumes = cache.volumes().requirements(self.pod);
    }

    /// The pod's tolerations.
    pub fn tolerations(&self) -> &[Toleration] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[])
    }
}

/// Why `node` cannot take the pod, by the first filter that refuses; empty when it can.
pub fn check(pod: &Candidate<'_>, node: &NodeEntry, usage: &Usage) -> Vec<Reason> {
    if let Some(reason) = unschedulable(pod, &node.node) {
        return vec![reason];
    }
    if let Some(taint) = first_untolerated(pod.tolerations(), &node.taints) {
        return vec![Reason::Taint(taint)];
    }
    if !matches_affinity(pod.pod, &node.node) {
        return vec![Reason::Affinity];
    }
    if pod
        .ports
        .iter()
        .any(|want| usage.ports.iter().any(|held| want.conflicts(held)))
    {
        return vec![Reason::Ports];
    }
    let reasons = fit(&pod.requests, &node.allocatable, usage);
    if !reasons.is_empty() {
        return reasons;
    }
    let volumes = pod.volumes.as_deref().unwrap_or(&[]);
    if !volumes.iter().all(|v| {
        v.node_selector_terms
            .iter()
            .any(|t| term_matches(t, &node.node))
    }) {
        return vec![Reason::VolumeNodeAffinity];
    }
    let labels = node.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    pod.spread
        .check(labels)
        .or_else(|| pod.affinity.check(labels))
        .into_iter()
        .collect()
}

static NO_LABELS: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

fn unschedulable(pod: &Candidate<'_>, node: &Node) -> Option<Reason> {
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if !cordoned {
        return None;
    }
    let taint = Taint {
        key: UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    (!pod.tolerations().iter().any(|t| tolerates(t, &taint))).then_some(Reason::Unschedulable)
}

/// Whether `node` reports the Ready condition as True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The node's taints, with `not-ready:NoSchedule` added when it is not Ready.
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if !is_ready(node) && !taints.iter().any(|t| t.key == NOT_READY) {
        taints.push(Taint {
            key: NOT_READY.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        });
    }
    taints
}

pub use skiff_client::placement::{first_untolerated, matches_affinity, term_matches, tolerates};

/// NodeResourcesFit: every resource the pod requests that the node has too little left of.
pub fn fit(requests: &Resources, allocatable: &Resources, usage: &Usage) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let allowed_pods = allocatable.pods() / 1000;
    if i128::try_from(usage.pods).unwrap_or(i128::MAX) + 1 > allowed_pods {
        reasons.push(Reason::TooManyPods);
    }
    for (name, wanted) in requests.iter() {
        if name == "pods" || wanted <= 0 {
            continue;
        }
        if wanted > allocatable.get(name) - usage.requested.get(name) {
            reasons.push(Reason::Insufficient(name.to_string()));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(spec: serde_json::Value, labels: serde_json::Value, ready: bool) -> NodeEntry {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels},
            "spec": spec,
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .unwrap();
        NodeEntry::new(node)
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "resources": {"requests": {"cpu": "1"}}}]);
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn reasons(pod: &Pod, node: &NodeEntry) -> Vec<String> {
        check(&Candidate::new(pod), node, &Usage::default())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn scheduler_should_skip_tainted_nodes_unless_the_pod_tolerates_the_taint() {
        let tainted = node(
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
            json!({}),
            true,
        );
        assert_eq!(
            reasons(&pod(json!({})), &tainted),
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let tolerating = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
        );
        assert!(reasons(&tolerating, &tainted).is_empty());
        let exists_all = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert!(reasons(&exists_all, &tainted).is_empty());
        let prefer = node(
            json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}),
            json!({}),
            true,
        );
        assert!(reasons(&pod(json!({})), &prefer).is_empty());
    }

    #[test]
    fn nodes_that_are_not_ready_should_count_as_tainted_not_ready() {
        let down = node(json!({}), json!({}), false);
        assert_eq!(
            reasons(&pod(json!({})), &down),
            ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        let daemon = pod(json!({"tolerations": [{"key": NOT_READY, "operator": "Exists"}]}));
        assert!(reasons(&daemon, &down).is_empty());
    }

    #[test]
    fn cordoned_nodes_should_be_unschedulable() {
        let cordoned = node(json!({"unschedulable": true}), json!({}), true);
        assert_eq!(
            reasons(&pod(json!({})), &cordoned),
            ["node(s) were unschedulable"]
        );
    }

    #[test]
    fn node_selector_and_required_affinity_should_both_have_to_match() {
        let ssd = node(json!({}), json!({"disktype": "ssd", "cores": "8"}), true);
        assert!(reasons(&pod(json!({"nodeSelector": {"disktype": "ssd"}})), &ssd).is_empty());
        assert_eq!(
            reasons(&pod(json!({"nodeSelector": {"disktype": "hdd"}})), &ssd),
            ["node(s) didn't match Pod's node affinity/selector"]
        );
        let affinity = |op: &str, values: serde_json::Value| {
            pod(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "cores", "operator": op, "values": values}]},
                ]},
            }}}))
        };
        assert!(reasons(&affinity("Gt", json!(["4"])), &ssd).is_empty());
        assert!(!reasons(&affinity("Lt", json!(["4"])), &ssd).is_empty());
        assert!(reasons(&affinity("In", json!(["8", "16"])), &ssd).is_empty());
        assert!(!reasons(&affinity("NotIn", json!(["8"])), &ssd).is_empty());
        assert!(reasons(&affinity("Exists", json!(null)), &ssd).is_empty());
        assert!(!reasons(&affinity("DoesNotExist", json!(null)), &ssd).is_empty());
    }

    #[test]
    fn resources_should_fit_what_is_left_after_the_assigned_pods() {
        let n = node(json!({}), json!({}), true);
        let p = pod(json!({}));
        let mut usage = Usage::default();
        usage.requested.set("cpu", 1500);
        usage.pods = 2;
        let got: Vec<String> = check(&Candidate::new(&p), &n, &usage)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["Insufficient cpu"]);
        usage.pods = 3;
        usage.requested.set("cpu", 0);
        let got: Vec<String> = check(&Candidate::new(&p), &n, &usage)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["Too many pods"]);
    }

    #[test]
    fn extended_resources_the_node_lacks_should_be_insufficient() {
        let n = node(json!({}), json!({}), true);
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}},
            ]}}))
            .unwrap();
        assert_eq!(reasons(&p, &n), ["Insufficient example.com/gpu"]);
    }

    #[test]
    fn a_taken_host_port_should_refuse_the_node() {
        let n = node(json!({}), json!({}), true);
        let p: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]},
            ]}}))
            .unwrap();
        let mut usage = Usage::default();
        usage.ports.push(HostPort {
            ip: "".into(),
            protocol: "TCP".into(),
            port: 8080,
        });
        let got: Vec<String> = check(&Candidate::new(&p), &n, &usage)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["node(s) didn't have free ports for the requested pod ports"]
        );
    }
}
