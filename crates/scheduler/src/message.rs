//! What a pod that fits nowhere is told. [`upstream`] is kube-scheduler's message word for word
//! (`0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu.`):
//! clients and people's scripts parse it. [`explain`] is skiff's sentence for a person, naming
//! the nearest miss: the resource short by the least, the label no node has, the taint every
//! node carries.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;

use crate::cache::Cache;
use crate::decide::FitError;
use crate::filters::{Candidate, NOT_READY, Reason};
use crate::resources;

/// Upstream's message when there are no nodes at all.
const NO_NODES: &str = "no nodes available to schedule pods";

/// kube-scheduler's message: each reason with the number of nodes it refused, sorted as
/// upstream sorts them.
pub fn upstream(error: &FitError) -> String {
    if error.nodes == 0 {
        return NO_NODES.to_string();
    }
    if let Some(unusable) = &error.unusable {
        return format!("0/{} nodes are available: {unusable}.", error.nodes);
    }
    available(
        error.nodes,
        error
            .failures
            .iter()
            .flat_map(|(_, reasons)| reasons.iter().map(ToString::to_string)),
    )
}

/// `0/N nodes are available: ...` over `nodes` nodes, from every node's reasons (upstream's
/// `FitError` text, also the inner text of a failed preemption).
pub fn available(nodes: usize, reasons: impl IntoIterator<Item = String>) -> String {
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    for reason in reasons {
        *histogram.entry(reason).or_insert(0) += 1;
    }
    let mut parts: Vec<String> = histogram
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

/// What kind of refusal a reason is, for grouping nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Resources,
    Affinity,
    Taint,
    Ports,
    Cordoned,
    Spread,
    SpreadLabel,
    PodAffinity,
    PodAntiAffinity,
    Volume,
}

fn kind(reason: &Reason) -> Kind {
    match reason {
        Reason::Unschedulable => Kind::Cordoned,
        Reason::Taint(_) => Kind::Taint,
        Reason::Affinity => Kind::Affinity,
        Reason::Ports => Kind::Ports,
        Reason::Insufficient(_) | Reason::TooManyPods => Kind::Resources,
        Reason::Spread => Kind::Spread,
        Reason::SpreadMissingLabel => Kind::SpreadLabel,
        Reason::PodAffinity => Kind::PodAffinity,
        Reason::VolumeNodeAffinity => Kind::Volume,
        Reason::PodAntiAffinity | Reason::ExistingAntiAffinity => Kind::PodAntiAffinity,
    }
}

/// One sentence for a person on why `pod` fits no node, naming the nearest miss.
pub fn explain(error: &FitError, pod: &Candidate<'_>, cache: &Cache) -> String {
    if error.nodes == 0 {
        return "No node has joined the cluster yet; the pod is placed as soon as one does.".into();
    }
    if let Some(unusable) = &error.unusable {
        return unusable.explain();
    }
    let mut groups: BTreeMap<Kind, Vec<&(String, Vec<Reason>)>> = BTreeMap::new();
    for failure in &error.failures {
        if let Some(first) = failure.1.first() {
            groups.entry(kind(first)).or_default().push(failure);
        }
    }
    let all = groups.len() == 1;
    let mut clauses: Vec<(usize, String)> = groups
        .iter()
        .map(|(kind, nodes)| {
            (
                nodes.len(),
                clause(*kind, nodes, all, error.nodes, pod, cache),
            )
        })
        .collect();
    // The largest group first: it is the main obstacle.
    clauses.sort_by_key(|c| std::cmp::Reverse(c.0));
    let text = if all {
        clauses.remove(0).1
    } else {
        let parts: Vec<String> = clauses
            .into_iter()
            .map(|(count, text)| format!("{count} {}: {text}", plural(count, "node")))
            .collect();
        format!("no node fits: {}", parts.join("; "))
    };
    capitalise(&text) + "."
}

/// The words for one group of nodes refused for the same kind of reason: a whole sentence when
/// the group is every node (`all`), else what follows "N nodes:".
fn clause(
    kind: Kind,
    nodes: &[&(String, Vec<Reason>)],
    all: bool,
    total: usize,
    pod: &Candidate<'_>,
    cache: &Cache,
) -> String {
    match kind {
        Kind::Resources => resources_clause(nodes, all, pod, cache),
        Kind::Affinity if all => affinity_clause(pod, cache, total),
        Kind::Affinity => "labels that match neither the pod's nodeSelector nor its node affinity".into(),
        Kind::Taint => taint_clause(nodes, all),
        Kind::Ports => {
            let port = pod.ports.first().map_or_else(String::new, |p| {
                format!(" {}/{}", p.port, p.protocol)
            });
            if all {
                format!("every node already has a pod holding the host port{port} it asks for")
            } else {
                format!("host port{port} already taken")
            }
        }
        Kind::Cordoned if all => {
            "every node is cordoned; `kubectl uncordon NODE` makes one available again".into()
        }
        Kind::Cordoned => "cordoned".into(),
        Kind::Spread if all => "placing it on any node would spread its group more unevenly than its topology spread constraint's maxSkew allows".into(),
        Kind::Spread => "too many pods of its group already (topology spread maxSkew)".into(),
        Kind::SpreadLabel if all => "no node has the label its topology spread constraint spreads over".into(),
        Kind::SpreadLabel => "without the topology spread constraint's label".into(),
        Kind::PodAffinity if all => "no node is in a topology domain that runs the pods its required pod affinity asks to be placed with".into(),
        Kind::PodAffinity => "no pod it must be placed with (required pod affinity)".into(),
        Kind::PodAntiAffinity if all => "every node is in a topology domain that already runs a pod it must stay apart from (required pod anti-affinity)".into(),
        Kind::PodAntiAffinity => "a pod it must stay apart from (required pod anti-affinity)".into(),
        Kind::Volume if all => "no node matches the node affinity of the PersistentVolume its claim is bound to (the volume lives on other nodes)".into(),
        Kind::Volume => "not where its PersistentVolume lives (volume node affinity)".into(),
    }
}

fn resources_clause(
    nodes: &[&(String, Vec<Reason>)],
    all: bool,
    pod: &Candidate<'_>,
    cache: &Cache,
) -> String {
    let mut short: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, reasons) in nodes {
        for reason in reasons {
            let name = match reason {
                Reason::Insufficient(name) => name.as_str(),
                Reason::TooManyPods => "pods",
                _ => continue,
            };
            *short.entry(name).or_insert(0) += 1;
        }
    }
    let order = |name: &str| match name {
        "cpu" => 0,
        "memory" => 1,
        "pods" => 3,
        _ => 2,
    };
    let Some((&resource, _)) = short
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(order(b.0).cmp(&order(a.0))))
    else {
        return "too few resources free".into();
    };
    if resource == "pods" {
        return if all {
            "every node already runs as many pods as it may".into()
        } else {
            "as many pods as they may already".into()
        };
    }
    let free = |name: &str| {
        let allocatable = cache
            .nodes()
            .iter()
            .find(|n| n.name == name)
            .map_or(0, |n| n.allocatable.get(resource));
        allocatable - cache.usage(name).requested.get(resource)
    };
    let Some((most, node)) = nodes
        .iter()
        .map(|(name, _)| (free(name), name))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
    else {
        return "too few resources free".into();
    };
    let wanted = resources::describe(resource, pod.requests.get(resource));
    let most = resources::describe(resource, most.max(0));
    let label = match resource {
        "cpu" => "CPU".to_string(),
        "memory" => "memory".to_string(),
        other => other.to_string(),
    };
    if all {
        let of = if resource == "cpu" {
            String::new()
        } else {
            format!(" of {label}")
        };
        format!("needs {wanted}{of}; the largest free share on any node is {most} (node {node})")
    } else {
        format!(
            "too little {label} (the pod needs {wanted}; the largest free share is {most}, on {node})"
        )
    }
}

fn affinity_clause(pod: &Candidate<'_>, cache: &Cache, total: usize) -> String {
    let checked = format!("{total} {} checked", plural(total, "node"));
    let selector = pod.pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    for (key, value) in selector.into_iter().flatten() {
        let anyone = cache
            .nodes()
            .iter()
            .any(|n| n.node.metadata.labels.as_ref().and_then(|l| l.get(key)) == Some(value));
        if !anyone {
            return format!("no node has label {key}={value} ({checked})");
        }
    }
    if selector.is_some_and(|s| !s.is_empty()) {
        return format!("no node has all the labels of the pod's nodeSelector ({checked})");
    }
    format!("no node matches the pod's required node affinity ({checked})")
}

fn taint_clause(nodes: &[&(String, Vec<Reason>)], all: bool) -> String {
    let taints: Vec<&Taint> = nodes
        .iter()
        .filter_map(|(_, reasons)| match reasons.first() {
            Some(Reason::Taint(taint)) => Some(taint),
            _ => None,
        })
        .collect();
    let Some(first) = taints.first() else {
        return "taints the pod does not tolerate".into();
    };
    let same = taints.iter().all(|t| t == first);
    match (same && first.key == NOT_READY, same, all) {
        (true, _, true) => "no node is Ready".into(),
        (true, _, false) => "not Ready".into(),
        (false, true, true) => format!(
            "every node has taint {}, which the pod does not tolerate",
            show_taint(first)
        ),
        (false, true, false) => {
            format!(
                "taint {}, which the pod does not tolerate",
                show_taint(first)
            )
        }
        (false, false, _) => {
            let examples: Vec<String> = nodes
                .iter()
                .zip(&taints)
                .take(3)
                .map(|((name, _), taint)| format!("{name} has {}", show_taint(taint)))
                .collect();
            let who = if all { "every node has " } else { "" };
            format!(
                "{who}taints the pod does not tolerate ({})",
                examples.join(", ")
            )
        }
    }
}

/// A taint as `kubectl taint` writes it: `key=value:Effect`.
fn show_taint(taint: &Taint) -> String {
    match taint.value.as_deref().filter(|v| !v.is_empty()) {
        Some(value) => format!("{}={value}:{}", taint.key, taint.effect),
        None => format!("{}:{}", taint.key, taint.effect),
    }
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use rand::SeedableRng;
    use serde_json::json;

    fn node(name: &str, cpu: &str, spec: serde_json::Value, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .unwrap()
    }

    fn pod(cpu: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "resources": {"requests": {"cpu": cpu}}}]);
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn messages(nodes: Vec<Node>, pod: &Pod, assigned: &[(&str, &str)]) -> (String, String) {
        let mut cache = Cache::default();
        for node in nodes {
            cache.upsert_node(node);
        }
        for (i, (node, cpu)) in assigned.iter().enumerate() {
            cache.assign(&format!("default/a{i}"), &self::pod(cpu, json!({})), node);
        }
        let mut candidate = Candidate::new(pod);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let error = decide::place(&mut candidate, &cache, &mut 0, &mut rng).unwrap_err();
        (upstream(&error), explain(&error, &candidate, &cache))
    }

    #[test]
    fn the_upstream_message_should_count_and_sort_reasons_as_kube_scheduler_does() {
        let taint = json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]});
        let nodes = vec![
            node("sim-1", "1", taint, json!({})),
            node("sim-2", "1", json!({}), json!({})),
            node("sim-3", "2", json!({}), json!({})),
        ];
        let (upstream, human) = messages(nodes, &pod("4", json!({})), &[("sim-3", "500m")]);
        assert_eq!(
            upstream,
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu."
        );
        assert_eq!(
            human,
            "No node fits: 2 nodes: too little CPU (the pod needs 4 CPUs; the largest free share is 1.5 CPUs, on sim-3); 1 node: taint k=v:NoSchedule, which the pod does not tolerate."
        );
    }

    #[test]
    fn the_sentence_should_name_the_largest_free_share_when_every_node_is_too_small() {
        let nodes = vec![
            node("sim-1", "1", json!({}), json!({})),
            node("sim-2", "2", json!({}), json!({})),
        ];
        let (_, human) = messages(nodes, &pod("4", json!({})), &[("sim-2", "500m")]);
        assert_eq!(
            human,
            "Needs 4 CPUs; the largest free share on any node is 1.5 CPUs (node sim-2)."
        );
    }

    #[test]
    fn the_sentence_should_name_the_label_no_node_has() {
        let nodes = (1..=3)
            .map(|i| {
                node(
                    &format!("sim-{i}"),
                    "4",
                    json!({}),
                    json!({"disktype": "hdd"}),
                )
            })
            .collect();
        let (upstream, human) = messages(
            nodes,
            &pod("1", json!({"nodeSelector": {"disktype": "ssd"}})),
            &[],
        );
        assert_eq!(
            upstream,
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
        );
        assert_eq!(human, "No node has label disktype=ssd (3 nodes checked).");
    }

    #[test]
    fn the_sentence_should_name_the_taint_every_node_carries() {
        let taint =
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
        let nodes = (1..=2)
            .map(|i| node(&format!("sim-{i}"), "4", taint.clone(), json!({})))
            .collect();
        let (_, human) = messages(nodes, &pod("1", json!({})), &[]);
        assert_eq!(
            human,
            "Every node has taint dedicated=gpu:NoSchedule, which the pod does not tolerate."
        );
    }

    #[test]
    fn a_cluster_without_nodes_should_say_so() {
        let (upstream, human) = messages(Vec::new(), &pod("1", json!({})), &[]);
        assert_eq!(upstream, "no nodes available to schedule pods");
        assert_eq!(
            human,
            "No node has joined the cluster yet; the pod is placed as soon as one does."
        );
    }
}
