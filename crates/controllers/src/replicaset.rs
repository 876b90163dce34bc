//! The ReplicaSet controller (upstream's `replicaset-controller`): keeps `spec.replicas` pods
//! matching a ReplicaSet's selector. Each pass reads the namespace's pods live from the API (a
//! consistent read), so what a slow watch has not delivered yet can never cause extra pods —
//! the job upstream's expectations do over its cache. Matching orphans are adopted and owned
//! pods that stopped matching released (both through ownerReferences with a resourceVersion
//! precondition); missing pods are created in slow-start batches (1, 2, 4, ...) from the
//! template with `generateName`, as upstream does; surplus pods are deleted unscheduled,
//! pending, not ready, newest first, each with a uid precondition. The status (`replicas`,
//! `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` after `minReadySeconds`,
//! `observedGeneration`, and `ReplicaFailure` when creating failed, with the API's words) is
//! written once per pass, only when it changed; Events say what was done.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::owned;
use crate::pods::{adopt, available, controller_of, is_active, ready_since, release};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_client::events::Recorder;

/// Pods created in one pass at most (upstream's `burstReplicas`).
const BURST: usize = 500;

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(client: Client) {
    let (recorder, events) = owned::recorder(&client, "replicaset-controller");
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let context = Arc::new(Context { client, recorder });
    let work = controller
        // A pod's owner, or (an orphan) every ReplicaSet in its namespace that might adopt it.
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let namespace = pod.namespace().unwrap_or_default();
            let owner = pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .cloned();
            let refs: Vec<ObjectRef<ReplicaSet>> = match owner {
                Some(owner) if owner.kind == "ReplicaSet" => {
                    vec![ObjectRef::new(&owner.name).within(&namespace)]
                }
                Some(_) => Vec::new(),
                None => store
                    .state()
                    .iter()
                    .filter(|set| set.namespace().as_deref() == Some(namespace.as_str()))
                    .filter(|set| selects(set, pod.labels()))
                    .map(|set| ObjectRef::from_obj(set.as_ref()))
                    .collect(),
            };
            refs
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "replicaset controller");
            }
        });
    tokio::join!(work, events);
}

fn error_policy(set: Arc<ReplicaSet>, error: &ReplicaSetError, _: Arc<Context>) -> Action {
    tracing::warn!(replicaset = %set.name_any(), %error, "syncing a ReplicaSet failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The ReplicaSet's selector, if it is one a controller may act on (not empty, parseable).
fn selector(set: &ReplicaSet) -> Option<Selector> {
    crate::pods::selector(&set.spec.as_ref()?.selector)
}

fn selects(set: &ReplicaSet, labels: &BTreeMap<String, String>) -> bool {
    selector(set).is_some_and(|s| s.matches(labels))
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

/// A pod from the ReplicaSet's template, owned by it.
fn new_pod(set: &ReplicaSet) -> Pod {
    let template = set
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
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

impl Context {
    fn note(&self, set: &ReplicaSet, type_: &'static str, reason: &'static str, message: String) {
        owned::note(&self.recorder, set, type_, reason, message);
    }
}

async fn reconcile(set: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, ReplicaSetError> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(selector) = selector(&set) else {
        tracing::debug!(replicaset = %set.name_any(), "an empty or invalid selector selects nothing");
        return Ok(Action::await_change());
    };
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let listed = pods.list(&ListParams::default()).await?;
    let mut owned: Vec<Pod> = Vec::new();
    for pod in listed.items {
        let matches = selector.matches(pod.labels());
        let ours = controller_of(&pod).is_some_and(|o| o.uid == uid);
        match (ours, matches) {
            (true, true) => owned.push(pod),
            (true, false) => release(&pods, &pod, &uid).await,
            (false, true) if controller_of(&pod).is_none() && is_active(&pod) => {
                if let Some(adopted) = adopt(&pods, &pod, set.as_ref()).await {
                    owned.push(adopted);
                }
            }
            _ => {}
        }
    }
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let wanted =
        usize::try_from(set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).unwrap_or(0);
    let failure = if active.len() < wanted {
        create(&context, &pods, &set, (wanted - active.len()).min(BURST)).await
    } else {
        if active.len() > wanted {
            remove(&context, &pods, &set, &active, active.len() - wanted).await;
        }
        None
    };
    let now = Timestamp::now();
    let min_ready = i64::from(
        set.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0),
    );
    let status = status(&set, &active, failure, now, min_ready);
    write_status(&context.client, &set, status).await?;
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
async fn create(
    context: &Context,
    pods: &Api<Pod>,
    set: &ReplicaSet,
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
async fn remove(
    context: &Context,
    pods: &Api<Pod>,
    set: &ReplicaSet,
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
fn status(
    set: &ReplicaSet,
    active: &[&Pod],
    failure: Option<String>,
    now: Timestamp,
    min_ready: i64,
) -> ReplicaSetStatus {
    let template_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |keep: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| keep(p)).count()).unwrap_or(i32::MAX)
    };
    let previous = set
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = previous
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(message) = failure {
        let was = set
            .status
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
        observed_generation: set.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// Writes `status` unless the ReplicaSet already says it.
async fn write_status(
    client: &Client,
    set: &ReplicaSet,
    status: ReplicaSetStatus,
) -> Result<(), kube::Error> {
    if set.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let sets: Api<ReplicaSet> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
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
