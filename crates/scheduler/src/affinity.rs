//! InterPodAffinity: where a pod may go given the pods already placed, by topology domain (the
//! value of a node label such as `kubernetes.io/hostname` or `topology.kubernetes.io/zone`).
//! Computed once per attempt from the assigned pods, then asked per node, as upstream's
//! PreFilter/Filter split does: the pod's required affinity (every term must have a matching
//! pod in the node's domain — unless no pod matches anywhere and the pod matches its own terms,
//! the first of a group), its required anti-affinity (no matching pod in the node's domain),
//! existing pods' required anti-affinity against it, and the preferred terms' score.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::cache::Cache;
use crate::filters::Reason;

/// Which namespaces a term's selector looks in.
#[derive(Clone, Debug)]
enum Scope {
    /// These namespaces (the owner's when the term names none).
    Listed(Vec<String>),
    /// Every namespace.
    All,
    /// The listed ones and those whose labels match.
    Matching(Vec<String>, Selector),
}

/// A pod (anti-)affinity term, resolved against the namespace of the pod that carries it.
#[derive(Clone, Debug)]
pub struct Term {
    /// `None`: the term has no label selector and so matches no pod.
    selector: Option<Selector>,
    scope: Scope,
    /// The node label whose value is the domain.
    pub topology_key: String,
}

impl Term {
    /// Resolves `term` of a pod in `namespace`; `None` when its selector cannot be read.
    pub fn new(
        term: &PodAffinityTerm,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<Term> {
        let selector = match term.label_selector.clone() {
            None => None,
            Some(mut selector) => {
                // matchLabelKeys: the carrier's own values for those keys join the selector.
                for key in term.match_label_keys.iter().flatten() {
                    if let Some(value) = labels.get(key) {
                        selector
                            .match_labels
                            .get_or_insert_with(BTreeMap::new)
                            .insert(key.clone(), value.clone());
                    }
                }
                Some(Selector::try_from(selector).ok()?)
            }
        };
        let listed = term.namespaces.clone().unwrap_or_default();
        let scope = match &term.namespace_selector {
            None if listed.is_empty() => Scope::Listed(vec![namespace.to_string()]),
            None => Scope::Listed(listed),
            Some(selector) => {
                let selector = Selector::try_from(selector.clone()).ok()?;
                if selector.selects_all() {
                    Scope::All
                } else {
                    Scope::Matching(listed, selector)
                }
            }
        };
        Some(Term {
            selector,
            scope,
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether a pod in `namespace` with `labels` matches the term.
    pub fn matches(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        cache: &Cache,
    ) -> bool {
        let in_scope = match &self.scope {
            Scope::Listed(names) => names.iter().any(|n| n == namespace),
            Scope::All => true,
            Scope::Matching(names, selector) => {
                names.iter().any(|n| n == namespace)
                    || cache
                        .namespace_labels(namespace)
                        .is_some_and(|l| selector.matches(l))
            }
        };
        in_scope && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// The required anti-affinity terms of a pod, resolved (kept in the cache for every assigned
/// pod, since they constrain pods placed after it).
pub fn required_anti_affinity(pod: &Pod) -> Vec<Term> {
    let namespace = pod.namespace().unwrap_or_default();
    terms(pod, true, true)
        .iter()
        .filter_map(|(_, t)| Term::new(t, &namespace, pod.labels()))
        .collect()
}

/// Topology domains: per topology key, the values that hold what is looked for.
#[derive(Debug, Default)]
struct Domains(HashMap<String, HashSet<String>>);

impl Domains {
    fn insert(&mut self, key: &str, labels: &BTreeMap<String, String>) {
        if let Some(value) = labels.get(key) {
            self.0
                .entry(key.to_string())
                .or_default()
                .insert(value.clone());
        }
    }

    /// Whether the node with `labels` is in one of the domains of `key`.
    fn holds(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        labels
            .get(key)
            .is_some_and(|v| self.0.get(key).is_some_and(|values| values.contains(v)))
    }

    /// Whether the node with `labels` is in any domain.
    fn holds_any(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.keys().any(|key| self.holds(key, labels))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one attempt needs to answer per node.
#[derive(Debug, Default)]
pub struct Prepared {
    affinity: Vec<Term>,
    /// Domains holding a pod that matches every affinity term.
    affinity_domains: Domains,
    /// The pod matches its own affinity terms (it may start a group).
    self_affine: bool,
    /// Domains holding a pod that a required anti-affinity term of the pod matches.
    anti_domains: Domains,
    /// Domains holding a pod whose required anti-affinity matches this pod.
    existing_anti: Domains,
    /// The preferred terms' weights per topology key and value (anti-affinity counts
    /// negative).
    preferred: HashMap<String, HashMap<String, i64>>,
}

/// The pod's (anti-)affinity terms of one kind, with their weights (0 for required terms).
fn terms(pod: &Pod, anti: bool, required: bool) -> Vec<(i64, PodAffinityTerm)> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let (req, pref) = if anti {
        let a = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        (
            a.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            a.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        )
    } else {
        let a = affinity.and_then(|a| a.pod_affinity.as_ref());
        (
            a.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            a.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        )
    };
    if required {
        req.into_iter().flatten().map(|t| (0, t.clone())).collect()
    } else {
        pref.into_iter()
            .flatten()
            .map(|w| (i64::from(w.weight), w.pod_affinity_term.clone()))
            .collect()
    }
}

/// Prepares the inter-pod checks of `pod` against what `cache` holds. Only pods with terms of
/// their own are scanned for a pod without terms, so the common case costs nothing per
/// assigned pod.
pub fn prepare(pod: &Pod, cache: &Cache) -> Prepared {
    let namespace = pod.namespace().unwrap_or_default();
    let labels = pod.labels().clone();
    let resolve = |anti, required| -> Vec<(i64, Term)> {
        terms(pod, anti, required)
            .iter()
            .filter_map(|(w, t)| Term::new(t, &namespace, &labels).map(|t| (*w, t)))
            .collect()
    };
    let affinity: Vec<Term> = resolve(false, true).into_iter().map(|(_, t)| t).collect();
    let anti: Vec<Term> = resolve(true, true).into_iter().map(|(_, t)| t).collect();
    let preferred: Vec<(i64, Term)> = resolve(false, false)
        .into_iter()
        .chain(resolve(true, false).into_iter().map(|(w, t)| (-w, t)))
        .collect();
    let mut prepared = Prepared {
        self_affine: affinity
            .iter()
            .all(|t| t.matches(&namespace, &labels, cache)),
        ..Prepared::default()
    };
    for assigned in cache.anti_affine() {
        let Some(node_labels) = cache.node_labels(assigned.node) else {
            continue;
        };
        for term in assigned.anti_affinity {
            if term.matches(&namespace, &labels, cache) {
                prepared
                    .existing_anti
                    .insert(&term.topology_key, node_labels);
            }
        }
    }
    if affinity.is_empty() && anti.is_empty() && preferred.is_empty() {
        return prepared;
    }
    for assigned in cache.assigned() {
        let Some(node_labels) = cache.node_labels(assigned.node) else {
            continue;
        };
        let matches = |t: &Term| t.matches(assigned.namespace, assigned.labels, cache);
        if !affinity.is_empty() && affinity.iter().all(matches) {
            for term in &affinity {
                prepared
                    .affinity_domains
                    .insert(&term.topology_key, node_labels);
            }
        }
        for term in anti.iter().filter(|t| matches(t)) {
            prepared
                .anti_domains
                .insert(&term.topology_key, node_labels);
        }
        for (weight, term) in preferred.iter().filter(|(_, t)| matches(t)) {
            if let Some(value) = node_labels.get(&term.topology_key) {
                *prepared
                    .preferred
                    .entry(term.topology_key.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_insert(0) += weight;
            }
        }
    }
    prepared.affinity = affinity;
    prepared
}

impl Prepared {
    /// Why a node with `labels` cannot take the pod, if it cannot.
    pub fn check(&self, labels: &BTreeMap<String, String>) -> Option<Reason> {
        if !self.affinity.is_empty() {
            if self
                .affinity
                .iter()
                .any(|t| !labels.contains_key(&t.topology_key))
            {
                return Some(Reason::PodAffinity);
            }
            let everywhere = self
                .affinity
                .iter()
                .all(|t| self.affinity_domains.holds(&t.topology_key, labels));
            let first_of_group = self.affinity_domains.is_empty() && self.self_affine;
            if !everywhere && !first_of_group {
                return Some(Reason::PodAffinity);
            }
        }
        if self.anti_domains.holds_any(labels) {
            return Some(Reason::PodAntiAffinity);
        }
        if self.existing_anti.holds_any(labels) {
            return Some(Reason::ExistingAntiAffinity);
        }
        None
    }

    /// The preferred terms' raw score of a node with `labels`.
    pub fn score(&self, labels: &BTreeMap<String, String>) -> i64 {
        self.preferred
            .iter()
            .filter_map(|(key, values)| values.get(labels.get(key)?))
            .sum()
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

    fn node(name: &str, zone: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
            "status": {
                "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .unwrap()
    }

    fn pod(name: &str, app: &str, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"containers": [{"name": "c"}], "affinity": affinity},
        }))
        .unwrap()
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn cluster(assigned: &[(&str, &str, serde_json::Value)]) -> Cache {
        let mut cache = Cache::default();
        cache.upsert_node(node("a1", "a"));
        cache.upsert_node(node("a2", "a"));
        cache.upsert_node(node("b1", "b"));
        for (i, (node, app, affinity)) in assigned.iter().enumerate() {
            cache.assign(
                &format!("default/x{i}"),
                &pod(&format!("x{i}"), app, affinity.clone()),
                node,
            );
        }
        cache
    }

    fn feasible(cache: &Cache, pod: &Pod) -> Vec<String> {
        let mut candidate = Candidate::new(pod);
        candidate.prepare(cache);
        cache
            .nodes()
            .iter()
            .filter(|n| crate::filters::check(&candidate, n, cache.usage(&n.name)).is_empty())
            .map(|n| n.name.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn required_affinity_should_place_a_pod_in_the_zone_of_its_peers() {
        let cache = cluster(&[("b1", "db", json!(null))]);
        let web = pod(
            "web",
            "web",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
        );
        assert_eq!(feasible(&cache, &web), ["b1"]);
        // No db anywhere: nothing fits, unless the pod is the first of its own group.
        let empty = cluster(&[]);
        assert!(feasible(&empty, &web).is_empty());
        let first = pod(
            "db0",
            "db",
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
        );
        assert_eq!(feasible(&empty, &first), ["a1", "a2", "b1"]);
    }

    #[test]
    fn required_anti_affinity_should_keep_pods_apart_both_ways() {
        let cache = cluster(&[("a1", "web", json!(null))]);
        let apart = pod(
            "web2",
            "web",
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}),
        );
        assert_eq!(feasible(&cache, &apart), ["a2", "b1"]);
        // An existing pod's anti-affinity refuses newcomers that match it, zone-wide.
        let cache = cluster(&[(
            "a1",
            "lonely",
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}),
        )]);
        assert_eq!(feasible(&cache, &pod("web", "web", json!(null))), ["b1"]);
        let mut candidate = Candidate::new(&apart);
        let error = decide::place(
            &mut candidate,
            &cache,
            &mut 0,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        );
        assert!(error.is_ok());
    }

    #[test]
    fn preferred_affinity_should_score_the_peers_domain_higher() {
        let cache = cluster(&[("b1", "db", json!(null))]);
        let web = pod(
            "web",
            "web",
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term("db", "zone")},
            ]}}),
        );
        let mut candidate = Candidate::new(&web);
        let chosen = decide::place(
            &mut candidate,
            &cache,
            &mut 0,
            &mut rand::rngs::StdRng::seed_from_u64(3),
        )
        .unwrap();
        assert_eq!(chosen, "b1");
    }
}
