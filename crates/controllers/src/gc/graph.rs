//! The garbage collector's dependency graph: the objects it watches that matter to it, keyed
//! by uid — those with owner references, and owners while they orphan or delete their
//! dependents — and the reverse index from an owner's uid to its dependents. Every other object
//! is only remembered as observed, in a few bytes (`observed.rs`), so a new dependent of an
//! owner the watches have shown needs no API check; any other owner is asked of the API. Pure
//! data: applying a change returns the work that change makes necessary, so the rules are
//! tested without an API.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::observed::Observed;

/// Finalizer: orphan the dependents, then let the owner go.
pub const ORPHAN: &str = "orphan";
/// Finalizer: delete the blocking dependents first, then let the owner go.
pub const FOREGROUND: &str = "foregroundDeletion";

/// Where an object is in its deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Not being deleted.
    Alive,
    /// Being deleted; nothing for the collector to do.
    Deleting,
    /// Being deleted with the `orphan` finalizer: its dependents must lose their reference.
    Orphaning,
    /// Being deleted with the `foregroundDeletion` finalizer: its dependents go first.
    DeletingDependents,
}

impl Deletion {
    /// Reads the state from an object's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        if meta.deletion_timestamp.is_none() {
            return Self::Alive;
        }
        let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
        if has(FOREGROUND) {
            Self::DeletingDependents
        } else if has(ORPHAN) {
            Self::Orphaning
        } else {
            Self::Deleting
        }
    }
}

/// One object as the collector knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The resource key (`group/version/plural`) it was watched through.
    pub resource: String,
    /// Its namespace, for namespaced objects.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
    /// Its deletion state.
    pub deletion: Deletion,
}

impl Node {
    /// The node for an object seen through `resource`; `None` without a name or uid.
    pub fn from_meta(resource: &str, meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            resource: resource.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
            owners: meta.owner_references.clone().unwrap_or_default(),
            deletion: Deletion::of(meta),
        })
    }

    /// Whether its reference to `owner` has `blockOwnerDeletion: true`.
    pub fn blocks(&self, owner: &str) -> bool {
        self.owners
            .iter()
            .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
    }
}

/// Work for the collector, by object uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Check the object's owners; delete it if none exists any more.
    AttemptDelete(String),
    /// Remove references to this owner from its dependents, then its `orphan` finalizer.
    Orphan(String),
    /// Wait for this owner's blocking dependents to go, then remove its foreground finalizer.
    DeleteDependents(String),
}

/// The graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
    observed: Observed,
}

impl Graph {
    /// The node with `uid`.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The known dependents of `owner`.
    pub fn dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.nodes.get(uid))
            .collect()
    }

    /// A check of every object with an owner reference that `owned_by` selects and that the
    /// watches do not vouch for (after a relist of the owners' resource: an owner may have
    /// vanished unseen). Owners the relist showed again are observed, and those it missed were
    /// removed with their dependents' checks: what is left are owners whose uid the graph does
    /// not keep.
    pub fn recheck_owned(&self, owned_by: impl Fn(&OwnerReference) -> bool) -> Vec<Task> {
        self.nodes
            .values()
            .filter(|n| n.owners.iter().any(|o| owned_by(o) && !self.owner_known(o)))
            .map(|n| Task::AttemptDelete(n.uid.clone()))
            .collect()
    }

    /// The uids of the objects watched through `resource`: the nodes and the observed.
    pub fn uids_of(&self, resource: &str) -> HashSet<String> {
        self.nodes
            .values()
            .filter(|n| n.resource == resource)
            .map(|n| n.uid.clone())
            .chain(self.observed.uids_of(resource))
            .collect()
    }

    /// Whether `owner` exists as far as the watches know and is not being deleted with its
    /// dependents in mind (orphaning or foreground): then a dependent of it needs no check.
    fn owner_known(&self, owner: &OwnerReference) -> bool {
        self.observed.holds(owner)
            && self
                .nodes
                .get(&owner.uid)
                .is_none_or(|n| n.deletion == Deletion::Alive)
    }

    /// Adds or updates a node; returns the work the change calls for.
    pub fn upsert(&mut self, node: Node) -> Vec<Task> {
        let uid = node.uid.clone();
        self.observed.insert(&node.resource, &uid, &node.name);
        let old = self.nodes.remove(&uid);
        let mut tasks = Vec::new();
        let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
        if let Some(old) = &old {
            for owner in &old.owners {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(&uid);
                    if set.is_empty() {
                        self.dependents.remove(&owner.uid);
                    }
                }
            }
        }
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        if owners_changed && !node.owners.iter().all(|o| self.owner_known(o)) {
            tasks.push(Task::AttemptDelete(uid.clone()));
        }
        if owners_changed && let Some(old) = &old {
            // An owner reference that went away may have been the last blocker of that owner.
            for owner in old.owners.iter().filter(|o| !node.owners.contains(o)) {
                if self.is_deleting_dependents(&owner.uid) {
                    tasks.push(Task::DeleteDependents(owner.uid.clone()));
                }
            }
        }
        let was = old.as_ref().map(|o| o.deletion);
        match node.deletion {
            Deletion::Orphaning => tasks.push(Task::Orphan(uid.clone())),
            Deletion::DeletingDependents => {
                if was != Some(Deletion::DeletingDependents) {
                    tasks.extend(
                        self.dependents(&uid)
                            .into_iter()
                            .map(|d| Task::AttemptDelete(d.uid.clone())),
                    );
                }
                tasks.push(Task::DeleteDependents(uid.clone()));
            }
            Deletion::Alive | Deletion::Deleting => {}
        }
        let kept = !node.owners.is_empty()
            || matches!(
                node.deletion,
                Deletion::Orphaning | Deletion::DeletingDependents
            );
        if kept {
            self.nodes.insert(uid, node);
        }
        tasks
    }

    /// Removes a node (the object is gone); returns the work that calls for.
    pub fn remove(&mut self, uid: &str) -> Vec<Task> {
        self.observed.remove(uid);
        let mut tasks: Vec<Task> = self
            .dependents(uid)
            .into_iter()
            .map(|d| Task::AttemptDelete(d.uid.clone()))
            .collect();
        let Some(node) = self.nodes.remove(uid) else {
            return tasks;
        };
        for owner in &node.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
            if self.is_deleting_dependents(&owner.uid) {
                tasks.push(Task::DeleteDependents(owner.uid.clone()));
            }
        }
        tasks
    }

    fn is_deleting_dependents(&self, uid: &str) -> bool {
        self.nodes
            .get(uid)
            .is_some_and(|n| n.deletion == Deletion::DeletingDependents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("owner-{uid}"),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>, deletion: Deletion) -> Node {
        Node {
            resource: "/v1/configmaps".into(),
            namespace: Some("default".into()),
            name: format!("n-{uid}"),
            uid: uid.into(),
            owners,
            deletion,
        }
    }

    #[test]
    fn a_new_dependent_should_be_checked_and_indexed_under_its_owner() {
        let mut graph = Graph::default();
        assert!(graph.upsert(node("o", vec![], Deletion::Alive)).is_empty());
        let tasks = graph.upsert(node("d", vec![owner_ref("o", false)], Deletion::Alive));
        assert_eq!(tasks, [Task::AttemptDelete("d".into())]);
        assert_eq!(graph.dependents("o").len(), 1);
        // The same node again is no new work.
        assert!(
            graph
                .upsert(node("d", vec![owner_ref("o", false)], Deletion::Alive))
                .is_empty()
        );
    }

    /// A node with a canonical uuid (as the API server gives), named `name`.
    fn observed_node(uid: &str, name: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            name: name.into(),
            ..node(uid, owners, Deletion::Alive)
        }
    }

    fn uuid(n: u8) -> String {
        format!("00000000-0000-4000-8000-0000000000{n:02x}")
    }

    fn reference_to(uid: &str, name: &str) -> OwnerReference {
        OwnerReference {
            name: name.into(),
            ..owner_ref(uid, false)
        }
    }

    #[test]
    fn a_new_dependent_of_an_observed_owner_should_need_no_api_check() {
        let mut graph = Graph::default();
        let (owner, unseen) = (uuid(1), uuid(2));
        assert!(graph.upsert(observed_node(&owner, "o", vec![])).is_empty());
        assert!(graph.node(&owner).is_none());
        let known = graph.upsert(observed_node(
            &uuid(3),
            "d1",
            vec![reference_to(&owner, "o")],
        ));
        assert!(known.is_empty());
        assert_eq!(graph.dependents(&owner).len(), 1);
        // An owner not seen (yet), or a reference whose name is not the observed object's,
        // is asked of the API.
        let d2 = uuid(4);
        let tasks = graph.upsert(observed_node(&d2, "d2", vec![reference_to(&unseen, "u")]));
        assert_eq!(tasks, [Task::AttemptDelete(d2.clone())]);
        let d3 = uuid(5);
        let tasks = graph.upsert(observed_node(&d3, "d3", vec![reference_to(&owner, "x")]));
        assert_eq!(tasks, [Task::AttemptDelete(d3.clone())]);
        // Once the owner is gone its dependents are checked, and a new one is too.
        let mut tasks = graph.remove(&owner);
        tasks.sort();
        assert_eq!(
            tasks,
            [
                Task::AttemptDelete(uuid(3)),
                Task::AttemptDelete(d3.clone())
            ]
        );
        let d4 = uuid(6);
        let tasks = graph.upsert(observed_node(&d4, "d4", vec![reference_to(&owner, "o")]));
        assert_eq!(tasks, [Task::AttemptDelete(d4)]);
    }

    #[test]
    fn a_dependent_of_an_owner_deleting_in_the_foreground_should_be_checked() {
        let mut graph = Graph::default();
        let owner = uuid(1);
        graph.upsert(Node {
            name: "o".into(),
            ..node(&owner, vec![], Deletion::DeletingDependents)
        });
        let d = uuid(2);
        let tasks = graph.upsert(observed_node(&d, "d", vec![reference_to(&owner, "o")]));
        assert_eq!(tasks, [Task::AttemptDelete(d)]);
    }

    #[test]
    fn a_relist_should_recheck_only_dependents_of_owners_the_watches_do_not_vouch_for() {
        let mut graph = Graph::default();
        let owner = uuid(1);
        graph.upsert(observed_node(&owner, "o", vec![]));
        graph.upsert(observed_node(
            &uuid(2),
            "seen",
            vec![reference_to(&owner, "o")],
        ));
        graph.upsert(node(
            "unkept",
            vec![owner_ref("not-a-uuid", false)],
            Deletion::Alive,
        ));
        assert_eq!(
            graph.recheck_owned(|_| true),
            [Task::AttemptDelete("unkept".into())]
        );
    }

    #[test]
    fn objects_without_owners_should_count_among_their_resources_uids() {
        let mut graph = Graph::default();
        graph.upsert(observed_node(&uuid(1), "plain", vec![]));
        graph.upsert(node("d", vec![owner_ref("x", false)], Deletion::Alive));
        let uids = graph.uids_of("/v1/configmaps");
        assert_eq!(uids, HashSet::from([uuid(1), "d".to_string()]));
    }

    #[test]
    fn removing_an_owner_should_check_its_dependents() {
        let mut graph = Graph::default();
        graph.upsert(node("o", vec![], Deletion::Alive));
        graph.upsert(node("d1", vec![owner_ref("o", false)], Deletion::Alive));
        graph.upsert(node("d2", vec![owner_ref("o", true)], Deletion::Alive));
        let mut tasks = graph.remove("o");
        tasks.sort();
        assert_eq!(
            tasks,
            [
                Task::AttemptDelete("d1".into()),
                Task::AttemptDelete("d2".into())
            ]
        );
    }

    #[test]
    fn foreground_deletion_should_check_dependents_and_wait_for_blockers() {
        let mut graph = Graph::default();
        graph.upsert(node("o", vec![], Deletion::Alive));
        graph.upsert(node("d", vec![owner_ref("o", true)], Deletion::Alive));
        let tasks = graph.upsert(node("o", vec![], Deletion::DeletingDependents));
        assert_eq!(
            tasks,
            [
                Task::AttemptDelete("d".into()),
                Task::DeleteDependents("o".into())
            ]
        );
        assert!(graph.dependents("o")[0].blocks("o"));
        // The blocker's removal wakes the owner.
        assert_eq!(graph.remove("d"), [Task::DeleteDependents("o".into())]);
    }

    #[test]
    fn objects_without_owners_should_not_be_kept_unless_they_are_deleting_dependents() {
        let mut graph = Graph::default();
        graph.upsert(node("plain", vec![], Deletion::Alive));
        assert!(graph.node("plain").is_none());
        graph.upsert(node("owner", vec![], Deletion::DeletingDependents));
        assert!(graph.node("owner").is_some());
        graph.upsert(node("d", vec![owner_ref("x", false)], Deletion::Alive));
        assert!(graph.node("d").is_some());
    }

    #[test]
    fn orphaning_owner_should_ask_for_orphaning() {
        let mut graph = Graph::default();
        let tasks = graph.upsert(node("o", vec![], Deletion::Orphaning));
        assert_eq!(tasks, [Task::Orphan("o".into())]);
    }

    #[test]
    fn dropping_an_owner_reference_should_wake_a_foreground_owner() {
        let mut graph = Graph::default();
        graph.upsert(node("o", vec![], Deletion::DeletingDependents));
        graph.upsert(node("d", vec![owner_ref("o", true)], Deletion::Alive));
        let tasks = graph.upsert(node("d", vec![], Deletion::Alive));
        assert_eq!(tasks, [Task::DeleteDependents("o".into())]);
        assert!(graph.dependents("o").is_empty());
    }
}
