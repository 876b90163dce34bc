//! Preemption, pure: when a pod fits no node, which lower-priority pods to evict and on which
//! node, as upstream's DefaultPreemption plugin decides (v1.34, without PodDisruptionBudgets,
//! which skiff does not serve yet).
//!
//! - A pod with `preemptionPolicy: Never` never preempts; one whose nominated node already has
//!   a lower-priority pod terminating by a preemption waits for it.
//! - Only nodes that refused for reasons an eviction can cure are tried (not enough of a
//!   resource the node has at all, host ports, pod anti-affinity, topology spread); taints,
//!   node affinity, cordons and resources beyond the node's size are not helped by evicting.
//! - On each node tried, every pod of lower priority is removed; if the pod then fits, the
//!   removed pods are given back one by one, most important first (higher priority, then
//!   earlier start), and those that can stay stay: the rest are the victims.
//! - Of the nodes with victims, the one whose most important victim has the lowest priority
//!   wins, then the lowest sum of victims' priorities, then the fewest victims, then the
//!   latest-started most important victims.
//!
//! Inter-pod affinity and topology spread are counted with the victims still in place, so a
//! node blocked only by them is tried but never chosen: evicting there is left undone rather
//! than done without knowing it helps.

use std::cmp::Ordering;

use rand::Rng;

use crate::cache::{Cache, NodeEntry, PodOnNode};
use crate::decide::FitError;
use crate::filters::{self, Candidate, Reason};
use crate::message;

/// Upstream's status of a node no eviction can help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's status of a node without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream's status when the pod may not preempt.
pub const NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// Upstream's status when the pod waits for its nominated node's victims.
pub const WAITING: &str = "not eligible due to a terminating pod on the nominated node.";
/// Candidate nodes tried at least (upstream's `minCandidateNodesAbsolute`).
const MIN_CANDIDATES: usize = 100;
/// Share of the nodes tried, in percent (upstream's `minCandidateNodesPercentage`).
const CANDIDATE_PERCENTAGE: usize = 10;

/// A pod to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// `namespace/name`.
    pub key: String,
    /// Its uid (the eviction is conditional on it).
    pub uid: String,
    /// Whether it is being deleted already (then nothing is sent).
    pub deleting: bool,
}

/// What preemption decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preemption {
    /// Evict these pods from `node`, and nominate the pod for it.
    Victims {
        /// The node.
        node: String,
        /// The pods to evict, most important first.
        victims: Vec<Victim>,
    },
    /// Preemption cannot help (yet): the text after `preemption: ` in the pod's message, and
    /// whether the pod's nomination ends.
    Fails {
        /// Upstream's text.
        message: String,
        /// Whether the nominated node (if any) is given up.
        clear: bool,
    },
}

/// Whether evicting pods can make `node` take the pod (upstream's Unschedulable, as opposed to
/// UnschedulableAndUnresolvable).
fn resolvable(reasons: &[Reason], pod: &Candidate<'_>, node: &NodeEntry) -> bool {
    !reasons.is_empty()
        && reasons.iter().all(|reason| match reason {
            Reason::Insufficient(name) => pod.requests.get(name) <= node.allocatable.get(name),
            Reason::TooManyPods => node.allocatable.pods() >= 1000,
            Reason::Ports | Reason::Spread | Reason::PodAntiAffinity => true,
            Reason::ExistingAntiAffinity => true,
            _ => false,
        })
}

/// Higher priority first, then the earlier start (a pod that has not started counts as
/// starting now): upstream's `MoreImportantPod`.
fn more_important(a: &PodOnNode<'_>, b: &PodOnNode<'_>) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (a.start, b.start) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// A node where preemption would work.
struct Possible<'a> {
    node: &'a str,
    /// Most important first.
    victims: Vec<PodOnNode<'a>>,
}

/// The victims on the node `name`, or why evicting cannot make the pod fit there.
fn select_victims<'a>(
    pod: &Candidate<'_>,
    cache: &'a Cache,
    name: &'a str,
) -> Result<Vec<PodOnNode<'a>>, Vec<String>> {
    let Some(at) = cache.node_index(name) else {
        return Err(vec![NOT_HELPFUL.into()]);
    };
    let node = &cache.nodes()[at];
    let mut lower: Vec<PodOnNode<'a>> = cache
        .pods_on(name)
        .filter(|p| p.priority < pod.priority)
        .collect();
    if lower.is_empty() {
        return Err(vec![NO_VICTIMS.into()]);
    }
    let mut usage = cache.usage_for(at, pod.priority, &pod.uid).into_owned();
    for victim in &lower {
        usage.remove_pod(victim);
    }
    let reasons = filters::check(pod, node, &usage);
    if !reasons.is_empty() {
        return Err(reasons.iter().map(ToString::to_string).collect());
    }
    lower.sort_by(more_important);
    let mut victims = Vec::new();
    for candidate in lower {
        usage.add_pod(&candidate);
        if filters::check(pod, node, &usage).is_empty() {
            continue;
        }
        usage.remove_pod(&candidate);
        victims.push(candidate);
    }
    if victims.is_empty() {
        // It fits with every pod in place: nothing to evict here.
        return Err(vec![NO_VICTIMS.into()]);
    }
    Ok(victims)
}

/// Upstream's `pickOneNodeForPreemption` over nodes with victims (most important first).
fn pick<'c, 'a>(candidates: &'c [Possible<'a>]) -> Option<&'c Possible<'a>> {
    let highest = |c: &Possible<'_>| c.victims.first().map_or(i32::MIN, |v| v.priority);
    let sum = |c: &Possible<'_>| -> i64 {
        c.victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum()
    };
    // The earliest start among the most important victims ("" for one not started: now).
    let earliest = |c: &Possible<'_>| -> Option<String> {
        let top = highest(c);
        c.victims
            .iter()
            .filter(|v| v.priority == top)
            .map(|v| v.start.map_or_else(|| "~".to_string(), str::to_string))
            .min()
    };
    let mut left: Vec<&Possible<'a>> = candidates.iter().collect();
    let keep_best = |left: &mut Vec<&Possible<'a>>, score: &dyn Fn(&Possible<'_>) -> i128| {
        if let Some(best) = left.iter().map(|c| score(c)).max() {
            left.retain(|c| score(c) == best);
        }
    };
    keep_best(&mut left, &|c| -i128::from(highest(c)));
    keep_best(&mut left, &|c| -i128::from(sum(c)));
    keep_best(&mut left, &|c| -(c.victims.len() as i128));
    if left.len() > 1 {
        let latest = left.iter().filter_map(|c| earliest(c)).max();
        left.retain(|c| earliest(c) == latest);
    }
    left.first().copied()
}

/// What preempting for `pod`, which fits no node (`error`), would do. `nominated` is the node
/// the pod is nominated for, if any.
pub fn preempt(
    pod: &Candidate<'_>,
    error: &FitError,
    cache: &Cache,
    nominated: Option<&str>,
    rng: &mut impl Rng,
) -> Preemption {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Preemption::Fails {
            message: NEVER.into(),
            clear: false,
        };
    }
    let node_of = |name: &str| cache.node_index(name).map(|at| &cache.nodes()[at]);
    let helps = |name: &str, reasons: &[Reason]| {
        node_of(name).is_some_and(|node| resolvable(reasons, pod, node))
    };
    if let Some(nominated) = nominated {
        let still_possible = error
            .failures
            .iter()
            .find(|(name, _)| name == nominated)
            .is_some_and(|(name, reasons)| helps(name, reasons));
        let waiting = cache
            .pods_on(nominated)
            .any(|p| p.priority < pod.priority && p.deleting && p.preempted);
        if still_possible && waiting {
            return Preemption::Fails {
                message: WAITING.into(),
                clear: false,
            };
        }
    }
    let potential: Vec<&str> = error
        .failures
        .iter()
        .filter(|(name, reasons)| helps(name, reasons))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut statuses: Vec<(&str, Vec<String>)> = Vec::new();
    let mut candidates = Vec::new();
    if !potential.is_empty() {
        let count = potential.len();
        let wanted = (count * CANDIDATE_PERCENTAGE / 100)
            .max(MIN_CANDIDATES)
            .min(count);
        let offset = rng.random_range(0..count);
        for i in 0..count {
            let name = potential[(offset + i) % count];
            match select_victims(pod, cache, name) {
                Ok(victims) => candidates.push(Possible {
                    node: name,
                    victims,
                }),
                Err(reasons) => statuses.push((name, reasons)),
            }
            if candidates.len() >= wanted {
                break;
            }
        }
    }
    let Some(chosen) = pick(&candidates) else {
        let examined = statuses.len();
        let reasons =
            statuses
                .into_iter()
                .flat_map(|(_, reasons)| reasons)
                .chain(std::iter::repeat_n(
                    NOT_HELPFUL.to_string(),
                    error.nodes.saturating_sub(examined),
                ));
        return Preemption::Fails {
            message: message::available(error.nodes, reasons),
            clear: true,
        };
    };
    Preemption::Victims {
        node: chosen.node.to_string(),
        victims: chosen
            .victims
            .iter()
            .map(|v| Victim {
                key: v.key.to_string(),
                uid: v.uid.to_string(),
                deleting: v.deleting,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use rand::SeedableRng;
    use serde_json::{Value, json};

    use super::*;
    use crate::decide;

    fn node(name: &str, cpu: &str, extra: Value) -> Node {
        let mut node = json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]},
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            node[k] = v.clone();
        }
        serde_json::from_value(node).unwrap()
    }

    fn pod(name: &str, cpu: &str, priority: i32, start: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}")},
            "spec": {"priority": priority, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"startTime": start},
        }))
        .unwrap()
    }

    struct World {
        cache: Cache,
    }

    impl World {
        fn new(nodes: &[(&str, &str)]) -> Self {
            let mut cache = Cache::default();
            for (name, cpu) in nodes {
                cache.upsert_node(node(name, cpu, json!({})));
            }
            World { cache }
        }

        fn run(&mut self, node: &str, name: &str, cpu: &str, priority: i32, start: &str) {
            let pod = pod(name, cpu, priority, Some(start));
            self.cache.assign(&format!("d/{name}"), &pod, node);
        }

        fn preempt(&self, pending: &Pod) -> Preemption {
            let mut candidate = Candidate::new(pending);
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            let error = decide::place(&mut candidate, &self.cache, &mut 0, &mut rng)
                .expect_err("the pod must fit nowhere");
            preempt(&candidate, &error, &self.cache, None, &mut rng)
        }
    }

    fn victims(outcome: &Preemption) -> (String, Vec<String>) {
        match outcome {
            Preemption::Victims { node, victims } => (
                node.clone(),
                victims.iter().map(|v| v.key.clone()).collect(),
            ),
            other => panic!("expected victims, got {other:?}"),
        }
    }

    #[test]
    fn only_as_many_lower_priority_pods_as_needed_should_be_evicted() {
        let mut world = World::new(&[("n1", "4")]);
        world.run("n1", "low-old", "1", 10, "2026-01-01T00:00:00Z");
        world.run("n1", "low-new", "1", 10, "2026-01-02T00:00:00Z");
        world.run("n1", "lowest", "1", 0, "2026-01-01T00:00:00Z");
        world.run("n1", "mid", "1", 50, "2026-01-01T00:00:00Z");
        // Needs 2 CPUs on a full node: the lowest-priority pod, then the youngest of the next.
        let outcome = world.preempt(&pod("high", "2", 100, None));
        assert_eq!(
            victims(&outcome),
            ("n1".into(), vec!["d/low-new".into(), "d/lowest".into()])
        );
    }

    #[test]
    fn the_node_with_the_least_important_victims_should_be_chosen() {
        let mut world = World::new(&[("a", "2"), ("b", "2"), ("c", "2")]);
        world.run("a", "a1", "2", 50, "2026-01-01T00:00:00Z");
        world.run("b", "b1", "1", 10, "2026-01-01T00:00:00Z");
        world.run("b", "b2", "1", 10, "2026-01-01T00:00:00Z");
        world.run("c", "c1", "2", 10, "2026-01-01T00:00:00Z");
        // b and c both have priority-10 victims; c needs one, b two (sum of priorities).
        assert_eq!(
            victims(&world.preempt(&pod("high", "2", 100, None))),
            ("c".into(), vec!["d/c1".into()])
        );
    }

    #[test]
    fn equal_or_higher_priority_pods_should_never_be_victims() {
        let mut world = World::new(&[("n1", "2"), ("n2", "2")]);
        world.run("n1", "same", "2", 100, "2026-01-01T00:00:00Z");
        world.run("n2", "higher", "2", 200, "2026-01-01T00:00:00Z");
        assert_eq!(
            world.preempt(&pod("p", "2", 100, None)),
            Preemption::Fails {
                message: format!("0/2 nodes are available: 2 {NO_VICTIMS}."),
                clear: true,
            }
        );
    }

    #[test]
    fn nodes_eviction_cannot_help_should_be_named_so() {
        let mut world = World::new(&[("small", "1"), ("big", "4")]);
        world.cache.upsert_node(node(
            "tainted",
            "8",
            json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
        ));
        world.run("big", "busy", "4", 200, "2026-01-01T00:00:00Z");
        // small is too small whatever is evicted, tainted is tainted, big holds a more
        // important pod.
        assert_eq!(
            world.preempt(&pod("p", "2", 100, None)),
            Preemption::Fails {
                message: format!("0/3 nodes are available: 1 {NO_VICTIMS}, 2 {NOT_HELPFUL}."),
                clear: true,
            }
        );
    }

    #[test]
    fn a_pod_that_may_not_preempt_or_waits_for_its_victims_should_say_so() {
        let mut world = World::new(&[("n1", "2")]);
        world.run("n1", "low", "2", 0, "2026-01-01T00:00:00Z");
        let mut never = pod("p", "2", 100, None);
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            world.preempt(&never),
            Preemption::Fails {
                message: NEVER.into(),
                clear: false
            }
        );
        world.cache.mark_preempted("d/low");
        let pending = pod("p", "2", 100, None);
        let mut candidate = Candidate::new(&pending);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let error = decide::place(&mut candidate, &world.cache, &mut 0, &mut rng).unwrap_err();
        assert_eq!(
            preempt(&candidate, &error, &world.cache, Some("n1"), &mut rng),
            Preemption::Fails {
                message: WAITING.into(),
                clear: false
            }
        );
    }

    #[test]
    fn a_nominated_pod_should_hold_its_room_against_lower_priority_pods() {
        let mut world = World::new(&[("n1", "2")]);
        world
            .cache
            .nominations_mut()
            .nominate("d/high", "n1", &pod("high", "2", 100, None));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let low = pod("low", "1", 10, None);
        assert!(decide::place(&mut Candidate::new(&low), &world.cache, &mut 0, &mut rng).is_err());
        let higher = pod("higher", "1", 200, None);
        assert_eq!(
            decide::place(&mut Candidate::new(&higher), &world.cache, &mut 0, &mut rng),
            Ok("n1".into())
        );
    }
}
