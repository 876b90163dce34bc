//! The scores of upstream's default profile, each 0–100 per node and weighted as upstream
//! weighs them: NodeResourcesFit's LeastAllocated (1), NodeResourcesBalancedAllocation (1),
//! NodeAffinity's preferred terms (2, normalised to the best node), TaintToleration's
//! PreferNoSchedule count (3, normalised and reversed), InterPodAffinity's preferred terms (2,
//! normalised between the worst and the best node), PodTopologySpread's ScheduleAnyway
//! constraints (2, fewer matching pods in the node's domains is better).

use k8s_openapi::api::core::v1::Toleration;
use kube::ResourceExt;

use crate::cache::{NodeEntry, Usage};
use crate::filters::{self, Candidate};

/// Upstream's weights.
const LEAST_ALLOCATED: i64 = 1;
const BALANCED: i64 = 1;
const NODE_AFFINITY: i64 = 2;
const TAINT_TOLERATION: i64 = 3;
const INTER_POD_AFFINITY: i64 = 2;
const TOPOLOGY_SPREAD: i64 = 2;
/// The best score of one plugin.
const MAX: i64 = 100;

/// One feasible node's raw figures, before normalising across nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw {
    least_allocated: i64,
    balanced: i64,
    affinity: i64,
    intolerable: i64,
    pod_affinity: i64,
    crowding: i64,
}

/// The raw figures of one feasible node.
pub fn raw(pod: &Candidate<'_>, node: &NodeEntry, usage: &Usage) -> Raw {
    let fractions = [
        (
            usage.scoring.cpu() + pod.scoring.cpu(),
            node.allocatable.cpu(),
        ),
        (
            usage.scoring.memory() + pod.scoring.memory(),
            node.allocatable.memory(),
        ),
    ];
    let least_allocated = fractions
        .iter()
        .map(|&(requested, capacity)| {
            if capacity <= 0 || requested > capacity {
                0
            } else {
                i64::try_from((capacity - requested) * i128::from(MAX) / capacity).unwrap_or(0)
            }
        })
        .sum::<i64>()
        / 2;
    let shares = fractions.map(|(requested, capacity)| {
        if capacity <= 0 {
            1.0
        } else {
            (requested as f64 / capacity as f64).min(1.0)
        }
    });
    let deviation = (shares[0] - shares[1]).abs() / 2.0;
    let balanced = ((1.0 - deviation) * MAX as f64) as i64;
    let labels = node.node.labels();
    Raw {
        pod_affinity: pod.affinity.score(labels),
        crowding: pod.spread.crowding(labels),
        least_allocated,
        balanced,
        affinity: preferred_affinity(pod, node),
        intolerable: intolerable_prefer_no_schedule(pod.tolerations(), node),
    }
}

fn preferred_affinity(pod: &Candidate<'_>, node: &NodeEntry) -> i64 {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|term| filters::term_matches(&term.preference, &node.node))
        .map(|term| i64::from(term.weight))
        .sum()
}

fn intolerable_prefer_no_schedule(tolerations: &[Toleration], node: &NodeEntry) -> i64 {
    let relevant: Vec<&Toleration> = tolerations
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    let count = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|taint| taint.effect == "PreferNoSchedule")
        .filter(|taint| !relevant.iter().any(|t| filters::tolerates(t, taint)))
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The weighted totals of feasible nodes from their raw figures, normalised across them.
pub fn totals(raws: &[Raw]) -> Vec<i64> {
    let best_affinity = raws.iter().map(|r| r.affinity).max().unwrap_or(0);
    let most_intolerable = raws.iter().map(|r| r.intolerable).max().unwrap_or(0);
    let spread = |values: Vec<i64>| {
        let (low, high) = (
            values.iter().copied().min().unwrap_or(0),
            values.iter().copied().max().unwrap_or(0),
        );
        move |v: i64| {
            if high > low {
                (v - low) * MAX / (high - low)
            } else {
                0
            }
        }
    };
    let pod_affinity = spread(raws.iter().map(|r| r.pod_affinity).collect());
    let crowding = spread(raws.iter().map(|r| r.crowding).collect());
    raws.iter()
        .map(|r| {
            let affinity = if best_affinity > 0 {
                r.affinity * MAX / best_affinity
            } else {
                0
            };
            let toleration = if most_intolerable > 0 {
                MAX - r.intolerable * MAX / most_intolerable
            } else {
                MAX
            };
            r.least_allocated * LEAST_ALLOCATED
                + r.balanced * BALANCED
                + affinity * NODE_AFFINITY
                + toleration * TAINT_TOLERATION
                + pod_affinity(r.pod_affinity) * INTER_POD_AFFINITY
                + (MAX - crowding(r.crowding)) * TOPOLOGY_SPREAD
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    fn node(name: &str, extra: serde_json::Value) -> NodeEntry {
        let mut value = json!({
            "metadata": {"name": name, "labels": {"zone": name}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        });
        if let Some(spec) = extra.get("spec") {
            value["spec"] = spec.clone();
        }
        let node: Node = serde_json::from_value(value).unwrap();
        NodeEntry::new(node)
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] =
            json!([{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]);
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn the_emptier_node_should_score_higher() {
        let p = pod(json!({}));
        let candidate = Candidate::new(&p);
        let mut busy = Usage::default();
        busy.scoring.set("cpu", 2000);
        busy.scoring.set("memory", 4 * 1024 * 1024 * 1024 * 1000);
        let raws = [
            raw(&candidate, &node("a", json!({})), &Usage::default()),
            raw(&candidate, &node("b", json!({})), &busy),
        ];
        let scores = totals(&raws);
        assert!(scores[0] > scores[1], "{scores:?}");
    }

    #[test]
    fn preferred_affinity_and_prefer_no_schedule_taints_should_steer_the_choice() {
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
            ]}}}),
        );
        let candidate = Candidate::new(&p);
        let raws = [
            raw(&candidate, &node("a", json!({})), &Usage::default()),
            raw(&candidate, &node("b", json!({})), &Usage::default()),
        ];
        let scores = totals(&raws);
        assert!(scores[1] > scores[0], "{scores:?}");

        let plain = pod(json!({}));
        let candidate = Candidate::new(&plain);
        let tainted = node(
            "a",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        let raws = [
            raw(&candidate, &tainted, &Usage::default()),
            raw(&candidate, &node("b", json!({})), &Usage::default()),
        ];
        let scores = totals(&raws);
        assert!(scores[1] > scores[0], "{scores:?}");
    }
}
