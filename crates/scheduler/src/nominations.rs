//! Nominated pods: a pod whose preemption evicts pods on a node waits for that node
//! (`status.nominatedNodeName`), and until it is bound the filters count it there for every pod
//! of lower or equal priority, so the room it made is not taken by another pod first, as
//! upstream's nominator does. A nomination ends when the pod is bound, deleted, or loses its
//! node to a preemptor of higher priority.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::cache::{HostPort, Usage, host_ports};
use crate::resources::{Resources, pod_requests};

/// One nominated pod.
#[derive(Clone, Debug)]
pub struct Nominated {
    /// The node it waits for.
    pub node: String,
    /// Its priority.
    pub priority: i32,
    /// Its uid.
    pub uid: String,
    requests: Resources,
    scoring: Resources,
    ports: Vec<HostPort>,
}

/// Every nominated pod, by pod and by node.
#[derive(Debug, Default)]
pub struct Nominations {
    by_pod: HashMap<String, Nominated>,
    by_node: HashMap<String, BTreeSet<String>>,
}

impl Nominations {
    /// Nominates the pod `key` for `node` (replacing an earlier nomination).
    pub fn nominate(&mut self, key: &str, node: &str, pod: &Pod) {
        self.remove(key);
        let nominated = Nominated {
            node: node.to_string(),
            priority: crate::priority_of(pod),
            uid: pod.uid().unwrap_or_default(),
            requests: pod_requests(pod, false),
            scoring: pod_requests(pod, true),
            ports: host_ports(pod),
        };
        self.by_node
            .entry(node.to_string())
            .or_default()
            .insert(key.to_string());
        self.by_pod.insert(key.to_string(), nominated);
    }

    /// Ends the nomination of the pod `key`; returns it.
    pub fn remove(&mut self, key: &str) -> Option<Nominated> {
        let nominated = self.by_pod.remove(key)?;
        if let Some(keys) = self.by_node.get_mut(&nominated.node) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_node.remove(&nominated.node);
            }
        }
        Some(nominated)
    }

    /// The node the pod `key` is nominated for.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.by_pod.get(key).map(|n| n.node.as_str())
    }

    /// Whether no pod is nominated.
    pub fn is_empty(&self) -> bool {
        self.by_pod.is_empty()
    }

    /// The pods nominated for `node`, with their keys.
    pub fn on<'a>(&'a self, node: &str) -> impl Iterator<Item = (&'a str, &'a Nominated)> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|key| Some((key.as_str(), self.by_pod.get(key)?)))
    }

    /// `usage` of `node` with the pods nominated there of at least `priority` added, but for
    /// the pod `uid` itself.
    pub fn added_to<'a>(
        &self,
        usage: &'a Usage,
        node: &str,
        priority: i32,
        uid: &str,
    ) -> Cow<'a, Usage> {
        let mut counted = self
            .on(node)
            .map(|(_, n)| n)
            .filter(|n| n.priority >= priority && n.uid != uid)
            .peekable();
        if counted.peek().is_none() {
            return Cow::Borrowed(usage);
        }
        let mut usage = usage.clone();
        for nominated in counted {
            usage.add_parts(&nominated.requests, &nominated.scoring, &nominated.ports);
        }
        Cow::Owned(usage)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(uid: &str, priority: i32) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": uid, "uid": uid},
            "spec": {"priority": priority, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": "1"}}}]}}))
        .unwrap()
    }

    #[test]
    fn nominated_pods_should_count_for_pods_of_lower_or_equal_priority_only() {
        let mut nominations = Nominations::default();
        nominations.nominate("d/high", "n1", &pod("high", 100));
        let empty = Usage::default();
        let seen = |priority, uid| {
            nominations
                .added_to(&empty, "n1", priority, uid)
                .requested
                .get("cpu")
        };
        assert_eq!(seen(50, "other"), 1000);
        assert_eq!(seen(100, "other"), 1000);
        assert_eq!(seen(200, "other"), 0);
        assert_eq!(seen(50, "high"), 0, "a pod never counts against itself");
        assert_eq!(nominations.added_to(&empty, "n2", 0, "x").pods, 0);
        nominations.nominate("d/high", "n2", &pod("high", 100));
        assert_eq!(nominations.node_of("d/high"), Some("n2"));
        assert_eq!(nominations.on("n1").count(), 0);
        assert!(nominations.remove("d/high").is_some());
        assert!(nominations.is_empty());
    }
}
