//! One scheduling decision, pure: filter the nodes (stopping, as upstream does, once enough
//! feasible ones are found in a large cluster: `percentageOfNodesToScore`'s adaptive default,
//! starting where the previous decision stopped so that every node gets its turn), score the
//! feasible ones, take the best, breaking ties at random.

use rand::Rng;

use crate::cache::Cache;
use crate::filters::{self, Candidate, Reason};
use crate::scores;

/// No node can take the pod: how many there are and why each one refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FitError {
    /// How many nodes were considered (all of them).
    pub nodes: usize,
    /// Each node that refused, with its reasons.
    pub failures: Vec<(String, Vec<Reason>)>,
    /// Why no node was even tried (the pod's claims), if so.
    pub unusable: Option<crate::volumes::Unusable>,
}

/// How many feasible nodes are enough in a cluster of `nodes` (upstream's
/// `numFeasibleNodesToFind` with the adaptive percentage: 50 % minus 1 % per 125 nodes, at
/// least 5 %, and never fewer than 100 nodes).
pub fn enough_feasible(nodes: usize) -> usize {
    const MIN: usize = 100;
    if nodes < MIN {
        return nodes;
    }
    let percentage = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percentage / 100).max(MIN)
}

/// The node `pod` should run on, or why none can take it. `next` is where the search starts
/// and is moved past the nodes examined.
pub fn place(
    pod: &mut Candidate<'_>,
    cache: &Cache,
    next: &mut usize,
    rng: &mut impl Rng,
) -> Result<String, FitError> {
    pod.prepare(cache);
    let pod = &*pod;
    let nodes = cache.nodes();
    let count = nodes.len();
    if let Err(unusable) = &pod.volumes {
        return Err(FitError {
            nodes: count,
            failures: Vec::new(),
            unusable: Some(unusable.clone()),
        });
    }
    let wanted = enough_feasible(count);
    let mut feasible = Vec::new();
    let mut failures = Vec::new();
    let start = if count == 0 { 0 } else { *next % count };
    let mut examined = 0;
    while examined < count && feasible.len() < wanted {
        let at = (start + examined) % count;
        let node = &nodes[at];
        examined += 1;
        let usage = cache.usage_for(at, pod.priority, &pod.uid);
        let reasons = filters::check(pod, node, &usage);
        if reasons.is_empty() {
            feasible.push((node, scores::raw(pod, node, &usage)));
        } else {
            failures.push((node.name.clone(), reasons));
        }
    }
    *next = start + examined;
    if feasible.is_empty() {
        return Err(FitError {
            nodes: count,
            failures,
            unusable: None,
        });
    }
    let raws: Vec<scores::Raw> = feasible.iter().map(|(_, raw)| *raw).collect();
    let totals = scores::totals(&raws);
    let mut best = 0;
    let mut ties = 0;
    for (at, &total) in totals.iter().enumerate() {
        if total > totals[best] {
            best = at;
            ties = 1;
        } else if total == totals[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = at;
            }
        }
    }
    Ok(feasible[best].0.name.clone())
}

/// Whether `pod` passes every filter on the node `name` (a nominated pod tries its node first,
/// as upstream's `evaluateNominatedNode` does); the reasons when it does not.
pub fn fits_on(pod: &mut Candidate<'_>, cache: &Cache, name: &str) -> Result<(), Vec<Reason>> {
    let Some(at) = cache.node_index(name) else {
        return Err(Vec::new());
    };
    pod.prepare(cache);
    let usage = cache.usage_for(at, pod.priority, &pod.uid);
    let reasons = filters::check(pod, &cache.nodes()[at], &usage);
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use rand::SeedableRng;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .unwrap()
    }

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu}}},
        ]}}))
        .unwrap()
    }

    #[test]
    fn large_clusters_should_stop_filtering_at_upstreams_adaptive_share() {
        assert_eq!(enough_feasible(50), 50);
        assert_eq!(enough_feasible(100), 100);
        assert_eq!(enough_feasible(1000), 420);
        assert_eq!(enough_feasible(5000), 500);
        assert_eq!(enough_feasible(100_000), 5000);
    }

    #[test]
    fn a_pod_should_go_to_the_only_node_it_fits() {
        let mut cache = Cache::default();
        cache.upsert_node(node("small", "1"));
        cache.upsert_node(node("big", "8"));
        let p = pod("2");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut next = 0;
        assert_eq!(
            place(&mut Candidate::new(&p), &cache, &mut next, &mut rng),
            Ok("big".into())
        );
    }

    #[test]
    fn a_pod_that_fits_nowhere_should_say_why_for_every_node() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", "1"));
        cache.upsert_node(node("b", "1"));
        let p = pod("2");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let error = place(&mut Candidate::new(&p), &cache, &mut 0, &mut rng).unwrap_err();
        assert_eq!(error.nodes, 2);
        assert_eq!(error.failures.len(), 2);
        assert_eq!(error.failures[0].1, [Reason::Insufficient("cpu".into())]);
    }

    #[test]
    fn assumed_pods_should_spread_a_burst_over_equal_nodes() {
        let mut cache = Cache::default();
        for name in ["a", "b", "c"] {
            cache.upsert_node(node(name, "4"));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut next = 0;
        for i in 0..12 {
            let p = pod("1");
            let chosen = place(&mut Candidate::new(&p), &cache, &mut next, &mut rng).unwrap();
            cache.assign(&format!("default/p{i}"), &p, &chosen);
        }
        for name in ["a", "b", "c"] {
            assert_eq!(cache.usage(name).pods, 4, "{name}");
        }
        let p = pod("1");
        assert!(place(&mut Candidate::new(&p), &cache, &mut next, &mut rng).is_err());
    }
}
