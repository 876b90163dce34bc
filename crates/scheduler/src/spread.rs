//! PodTopologySpread: keep matching pods spread over topology domains. For each constraint the
//! matching pods (same namespace, the constraint's selector plus `matchLabelKeys`) are counted
//! per domain over the eligible nodes (those with the topology label and, under the default
//! `nodeAffinityPolicy: Honor`, matching the pod's node selector and affinity; under
//! `nodeTaintsPolicy: Honor`, tolerated). `DoNotSchedule` refuses a node where placing the pod
//! would make `count - min` exceed `maxSkew` (the minimum is 0 while there are fewer domains than
//! `minDomains`); `ScheduleAnyway` prefers nodes in emptier domains.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::cache::Cache;
use crate::filters::{self, Reason};

/// One constraint, counted.
#[derive(Debug)]
struct Counted {
    key: String,
    max_skew: i64,
    hard: bool,
    /// Matching pods per domain value, every eligible domain present.
    counts: HashMap<String, i64>,
    /// The smallest count (0 while there are fewer domains than minDomains).
    min: i64,
    /// 1 when the pod matches its own selector.
    self_match: i64,
}

/// What one attempt needs to answer per node.
#[derive(Debug, Default)]
pub struct Prepared {
    constraints: Vec<Counted>,
}

/// Counts the pod's constraints against what `cache` holds.
pub fn prepare(pod: &Pod, cache: &Cache) -> Prepared {
    let Some(constraints) = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
    else {
        return Prepared::default();
    };
    let namespace = pod.namespace().unwrap_or_default();
    let own = pod.labels();
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut prepared = Prepared::default();
    for constraint in constraints {
        let mut selector = constraint.label_selector.clone().unwrap_or_default();
        for key in constraint.match_label_keys.iter().flatten() {
            if let Some(value) = own.get(key) {
                selector
                    .match_labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key.clone(), value.clone());
            }
        }
        // No selector matches no pod.
        let selector = constraint
            .label_selector
            .as_ref()
            .and_then(|_| Selector::try_from(selector).ok());
        let honor_affinity = constraint.node_affinity_policy.as_deref() != Some("Ignore");
        let honor_taints = constraint.node_taints_policy.as_deref() == Some("Honor");
        let key = constraint.topology_key.clone();
        let mut counts: HashMap<String, i64> = HashMap::new();
        let mut eligible: HashMap<&str, &str> = HashMap::new();
        for node in cache.nodes() {
            let Some(value) = node.node.labels().get(&key) else {
                continue;
            };
            if honor_affinity && !filters::matches_affinity(pod, &node.node) {
                continue;
            }
            if honor_taints && filters::first_untolerated(&tolerations, &node.taints).is_some() {
                continue;
            }
            counts.entry(value.clone()).or_insert(0);
            eligible.insert(node.name.as_str(), value.as_str());
        }
        for assigned in cache.assigned() {
            let Some(value) = eligible.get(assigned.node) else {
                continue;
            };
            if assigned.namespace == namespace
                && selector
                    .as_ref()
                    .is_some_and(|s| s.matches(assigned.labels))
            {
                *counts.entry((*value).to_string()).or_insert(0) += 1;
            }
        }
        let min_domains = usize::try_from(constraint.min_domains.unwrap_or(1)).unwrap_or(1);
        let min = if counts.len() < min_domains {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        prepared.constraints.push(Counted {
            self_match: i64::from(selector.as_ref().is_some_and(|s| s.matches(own))),
            key,
            max_skew: i64::from(constraint.max_skew),
            hard: constraint.when_unsatisfiable != "ScheduleAnyway",
            counts,
            min,
        });
    }
    prepared
}

impl Prepared {
    /// Why a node with `labels` cannot take the pod, if it cannot.
    pub fn check(&self, labels: &BTreeMap<String, String>) -> Option<Reason> {
        for constraint in self.constraints.iter().filter(|c| c.hard) {
            let Some(value) = labels.get(&constraint.key) else {
                return Some(Reason::SpreadMissingLabel);
            };
            let count = constraint.counts.get(value).copied().unwrap_or(0);
            if count + constraint.self_match - constraint.min > constraint.max_skew {
                return Some(Reason::Spread);
            }
        }
        None
    }

    /// The soft constraints' raw figure of a node with `labels`: matching pods in its domains
    /// (fewer is better).
    pub fn crowding(&self, labels: &BTreeMap<String, String>) -> i64 {
        self.constraints
            .iter()
            .filter(|c| !c.hard)
            .map(|c| {
                labels
                    .get(&c.key)
                    .and_then(|v| c.counts.get(v))
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Whether the pod has soft constraints to score.
    pub fn scores(&self) -> bool {
        self.constraints.iter().any(|c| !c.hard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide;
    use crate::filters::Candidate;
    use k8s_openapi::api::core::v1::Node;
    use rand::SeedableRng;
    use serde_json::json;

    fn node(name: &str, zone: Option<&str>) -> Node {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(zone) = zone {
            labels["zone"] = json!(zone);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {
                "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .unwrap()
    }

    fn pod(name: &str, when: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c"}], "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": {"app": "web"}},
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn do_not_schedule_should_refuse_the_crowded_zone_and_nodes_without_the_label() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a1", Some("a")));
        cache.upsert_node(node("b1", Some("b")));
        cache.upsert_node(node("x", None));
        cache.assign("default/w0", &pod("w0", "DoNotSchedule"), "a1");
        let p = pod("w1", "DoNotSchedule");
        let mut candidate = Candidate::new(&p);
        candidate.prepare(&cache);
        let reasons: Vec<(String, Vec<String>)> = cache
            .nodes()
            .iter()
            .map(|n| {
                let r = crate::filters::check(&candidate, n, cache.usage(&n.name));
                (n.name.clone(), r.iter().map(ToString::to_string).collect())
            })
            .collect();
        assert_eq!(
            reasons[0].1,
            ["node(s) didn't match pod topology spread constraints"]
        );
        assert!(reasons[1].1.is_empty());
        assert_eq!(
            reasons[2].1,
            ["node(s) didn't match pod topology spread constraints (missing required label)"]
        );
    }

    #[test]
    fn schedule_anyway_should_prefer_the_emptier_zone() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a1", Some("a")));
        cache.upsert_node(node("b1", Some("b")));
        for i in 0..3 {
            cache.assign(
                &format!("default/w{i}"),
                &pod(&format!("w{i}"), "ScheduleAnyway"),
                "a1",
            );
        }
        let p = pod("new", "ScheduleAnyway");
        let mut candidate = Candidate::new(&p);
        let chosen = decide::place(
            &mut candidate,
            &cache,
            &mut 0,
            &mut rand::rngs::StdRng::seed_from_u64(5),
        )
        .unwrap();
        assert_eq!(chosen, "b1");
    }
}
