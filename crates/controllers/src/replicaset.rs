//! The ReplicaSet controller (upstream's `replicaset-controller`, and through the same code its
//! `replication-controller`): keeps `spec.replicas` pods
//! matching a ReplicaSet's selector. Each pass reads the pods its selector selects live from the
//! API (a consistent read, filtered by the server), so what a slow watch has not delivered yet can never cause extra pods —
//! the job upstream's expectations do over its cache. Matching orphans are adopted and owned
//! pods that stopped matching released (both through ownerReferences with a resourceVersion
//! precondition); missing pods are created in slow-start batches (1, 2, 4, ...) from the
//! template with `generateName`, as upstream does; surplus pods are deleted unscheduled,
//! pending, not ready, newest first, each with a uid precondition. The status (`replicas`,
//! `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` after `minReadySeconds`,
//! `observedGeneration`, and `ReplicaFailure` when creating failed, with the API's words) is
//! written once per pass, only when it changed; Events say what was done.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use crate::owned;
use crate::pods::{PodIndex, adopt, available, controller_of, is_active, ready_since, release};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

/// Pods created in one pass at most (upstream's `burstReplicas`).
const BURST: usize = 500;

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

/// What the controller keeps pods for: a ReplicaSet, or its older form, a ReplicationController
/// (a map selector, an optional template; the same status fields).
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + k8s_openapi::Resource
    + Clone
    + std::fmt::Debug
    + k8s_openapi::serde::de::DeserializeOwned
    + k8s_openapi::serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// The controller's name in Events and logs.
    const COMPONENT: &'static str;
    /// The selector, if it is one a controller may act on (not empty, parseable).
    fn selector(&self) -> Option<Selector>;
    /// `spec.replicas` (default 1).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// The pod template.
    fn template(&self) -> PodTemplateSpec;
    /// The status as JSON (both kinds' statuses have the same fields).
    fn status_json(&self) -> serde_json::Value;
}

/// The methods both kinds spell the same (their specs have the same field names).
macro_rules! replicated {
    ($kind:ty, $component:literal, $selector:expr) => {
        impl Replicated for $kind {
            const COMPONENT: &'static str = $component;
            fn selector(&self) -> Option<Selector> {
                $selector(self)
            }
            fn replicas(&self) -> i32 {
                self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            }
            fn min_ready_seconds(&self) -> i32 {
                self.spec
                    .as_ref()
                    .and_then(|s| s.min_ready_seconds)
                    .unwrap_or(0)
            }
            fn template(&self) -> PodTemplateSpec {
                self.spec
                    .as_ref()
                    .and_then(|s| s.template.clone())
                    .unwrap_or_default()
            }
            fn status_json(&self) -> serde_json::Value {
                serde_json::to_value(&self.status).unwrap_or_default()
            }
        }
    };
}

replicated!(ReplicaSet, "replicaset-controller", |set: &ReplicaSet| {
    crate::pods::selector(&set.spec.as_ref()?.selector)
});

// A ReplicationController's selector is a plain map of labels.
replicated!(
    ReplicationController,
    "replication-controller",
    |rc: &ReplicationController| {
        let labels = rc.spec.as_ref()?.selector.clone()?;
        crate::pods::selector(
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            },
        )
    }
);

/// What a pass works with.
type Context = crate::pods::Keeper;

/// Runs the controller of `K`s until the task is dropped.
pub async fn run<K: Replicated>(
    client: Client,
    index: PodIndex,
    pods: impl futures::Stream<Item = std::sync::Arc<crate::shared_pods::PodSummary>> + Send + 'static,
) {
    let (context, events) = crate::pods::Keeper::new(client.clone(), K::COMPONENT, index);
    let sets: Api<K> = Api::all(client.clone());
    let controller =
        Controller::new(sets, watcher::Config::default()).with_config(owned::controller_config());
    let store = controller.store();
    let work = controller
        // A pod's owner, or (an orphan) every ReplicaSet in its namespace that might adopt it.
        .watches_shared_stream(pods, move |pod| {
            let namespace = pod.namespace().unwrap_or_default();
            let owner = pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .cloned();
            let refs: Vec<ObjectRef<K>> = match owner {
                Some(owner) if owner.kind == <K as k8s_openapi::Resource>::KIND => {
                    vec![ObjectRef::new(&owner.name).within(&namespace)]
                }
                Some(_) => Vec::new(),
                None => store
                    .state()
                    .iter()
                    .filter(|set| set.namespace().as_deref() == Some(namespace.as_str()))
                    .filter(|set| set.selector().is_some_and(|s| s.matches(pod.labels())))
                    .map(|set| ObjectRef::from_obj(set.as_ref()))
                    .collect(),
            };
            refs
        })
        .run(reconcile, owned::retry, context);
    owned::drive(work, events, "replicaset").await;
}

/// The order surplus pods are deleted in (upstream's `ActivePods`): smaller first.
fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = ready_since(pod);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).max().unwrap_or(0));
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        assigned,
        phase,
        ready.is_some(),
        Reverse(ready),
        Reverse(restarts),
        Reverse(created),
    )
}

/// A pod from the template, owned by `set`.
fn new_pod<K: Replicated>(set: &K) -> Pod {
    let template = set.template();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = None;
    metadata.generate_name = Some(format!("{}-", set.name_any()));
    metadata.namespace = set.namespace();
    metadata.owner_references = Some(vec![owned::controller_reference(set)]);
    Pod {
        metadata,
        spec: template.spec,
        status: None,
    }
}

async fn reconcile<K: Replicated>(
    set: Arc<K>,
    context: Arc<Context>,
) -> Result<Action, ReplicaSetError> {
    let set = set.as_ref();
    if set.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(selector) = set.selector() else {
        tracing::debug!(replicaset = %set.name_any(), "an empty or invalid selector selects nothing");
        return Ok(Action::await_change());
    };
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let mut owned: Vec<Pod> = Vec::new();
    for pod in crate::pods::selected(&pods, &selector).await? {
        match controller_of(&pod) {
            Some(owner) if owner.uid == uid => owned.push(pod),
            None if is_active(&pod) => {
                if let Some(adopted) = adopt(&pods, &pod, set).await {
                    owned.push(adopted);
                }
            }
            _ => {}
        }
    }
    for stray in context.index.strayed(&namespace, &uid, &selector) {
        release(&pods, stray.as_ref(), &uid).await;
    }
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let wanted = usize::try_from(set.replicas()).unwrap_or(0);
    let failure = if active.len() < wanted {
        create(&context, &pods, set, (wanted - active.len()).min(BURST)).await
    } else {
        if active.len() > wanted {
            remove(&context, &pods, set, &active, active.len() - wanted).await;
        }
        None
    };
    let now = Timestamp::now();
    let min_ready = i64::from(set.min_ready_seconds());
    let status = status(set, &active, failure, now, min_ready);
    write_status(&context.client, set, status).await?;
    // Pods Ready but not yet for minReadySeconds become available without an event.
    let waiting = active
        .iter()
        .any(|p| ready_since(p).is_some() && !available(p, min_ready, now));
    Ok(if waiting {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::await_change()
    })
}

/// Creates `count` pods in batches of 1, 2, 4, ...; the first refusal stops it and is returned.
async fn create<K: Replicated>(
    context: &Context,
    pods: &Api<Pod>,
    set: &K,
    count: usize,
) -> Option<String> {
    let mut left = count;
    let mut batch = 1;
    while left > 0 {
        let size = batch.min(left);
        let pod = new_pod(set);
        let params = PostParams::default();
        let made = futures::future::join_all((0..size).map(|_| pods.create(&params, &pod))).await;
        let mut failure = None;
        for result in made {
            match result {
                Ok(pod) => context.note(
                    set,
                    "Normal",
                    "SuccessfulCreate",
                    format!("Created pod: {}", pod.name_any()),
                ),
                Err(error) => {
                    let message = owned::refusal(&error);
                    context.note(
                        set,
                        "Warning",
                        "FailedCreate",
                        format!("Error creating: {message}"),
                    );
                    failure = Some(message);
                }
            }
        }
        if failure.is_some() {
            return failure;
        }
        left -= size;
        batch *= 2;
    }
    None
}

/// Deletes the `count` most deletable of `active`.
async fn remove<K: Replicated>(
    context: &Context,
    pods: &Api<Pod>,
    set: &K,
    active: &[&Pod],
    count: usize,
) {
    let mut ranked: Vec<&&Pod> = active.iter().collect();
    ranked.sort_by_key(|p| deletion_rank(p));
    let doomed = ranked.into_iter().take(count);
    let deletions =
        doomed.map(|pod| async move { (pod.name_any(), owned::delete_read(pods, pod).await) });
    for (name, result) in futures::future::join_all(deletions).await {
        match result {
            Ok(()) => context.note(
                set,
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(error) => context.note(
                set,
                "Warning",
                "FailedDelete",
                format!("Error deleting: {error}"),
            ),
        }
    }
}

/// The status the pass observed.
fn status<K: Replicated>(
    set: &K,
    active: &[&Pod],
    failure: Option<String>,
    now: Timestamp,
    min_ready: i64,
) -> ReplicaSetStatus {
    let template_labels = set
        .template()
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let stored: Option<ReplicaSetStatus> = serde_json::from_value(set.status_json()).ok();
    let count = |keep: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| keep(p)).count()).unwrap_or(i32::MAX)
    };
    let previous = stored
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = previous
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(message) = failure {
        let was = stored
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure").cloned());
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            last_transition_time: was.and_then(|w| w.last_transition_time).or(Some(Time(now))),
            message: Some(message),
        });
    }
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.labels().get(k) == Some(v))
        })),
        ready_replicas: Some(count(&|p| ready_since(p).is_some())),
        available_replicas: Some(count(&|p| available(p, min_ready, now))),
        observed_generation: set.meta().generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// Writes `status` unless the object already says it.
async fn write_status<K: Replicated>(
    client: &Client,
    set: &K,
    status: ReplicaSetStatus,
) -> Result<(), kube::Error> {
    if set.status_json() == serde_json::to_value(&status).unwrap_or_default() {
        return Ok(());
    }
    let sets: Api<K> = Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    owned::patch_status(&sets, &set.name_any(), &json!({"status": status})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn surplus_pods_should_go_unscheduled_then_pending_then_unready_then_newest_first() {
        let unscheduled = pod(
            json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Pending"}}),
        );
        let pending = pod(
            json!({"metadata": {"name": "b", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n", "containers": []}, "status": {"phase": "Pending"}}),
        );
        let running = |name: &str, created: &str, ready: bool| {
            pod(
                json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"nodeName": "n", "containers": []},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" },
                     "lastTransitionTime": created}]}}),
            )
        };
        let unready = running("c", "2026-01-01T00:00:00Z", false);
        let old = running("d", "2026-01-01T00:00:00Z", true);
        let new = running("e", "2026-01-02T00:00:00Z", true);
        let mut all = [&old, &new, &unready, &pending, &unscheduled];
        all.sort_by_key(|p| deletion_rank(p));
        let order: Vec<String> = all.iter().map(|p| p.name_any()).collect();
        assert_eq!(order, ["a", "b", "c", "e", "d"]);
    }
}
