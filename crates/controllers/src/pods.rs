//! What the controllers that keep pods (ReplicaSet, StatefulSet, DaemonSet) read off a pod —
//! its controller, whether it still counts, since when it is Ready, whether it is available —
//! and how they adopt an orphan or release a pod that stopped matching (through its
//! ownerReferences, with a resourceVersion precondition so a pod changed meanwhile is left for
//! the next pass). [`PodIndex`] reads every pod's metadata from the shared pod watch
//! ([`crate::shared_pods`]): they count pods from a consistent list by their selector, and find in the
//! index only the pods they control that stopped matching it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use std::sync::Arc;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::owned;
use crate::shared_pods::{PodSummary, SharedPods};

/// A workload's selector, if it is one a controller may act on (not empty, parseable).
pub(crate) fn selector(given: &LabelSelector) -> Option<Selector> {
    let empty = given.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && given.match_expressions.as_ref().is_none_or(Vec::is_empty);
    if empty {
        return None;
    }
    Selector::try_from(given.clone()).ok()
}

/// The pod's controller, if it has one.
pub(crate) fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Whether the pod still counts: neither being deleted nor finished.
pub(crate) fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !is_finished(pod)
}

/// Whether the pod ran to its end (Succeeded or Failed).
pub(crate) fn is_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod became Ready, if it is.
pub(crate) fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// Whether the pod has been Ready for `min_ready` seconds at `now`.
pub(crate) fn available(pod: &Pod, min_ready: i64, now: Timestamp) -> bool {
    ready_since(pod).is_some_and(|since| {
        min_ready <= 0 || since.as_second().saturating_add(min_ready) <= now.as_second()
    })
}

/// Makes `pod` `owner`'s; `None` if it changed meanwhile (its own event comes).
pub(crate) async fn adopt<K>(pods: &Api<Pod>, pod: &Pod, owner: &K) -> Option<Pod>
where
    K: Resource<DynamicType = ()>,
{
    let mut owners = pod.owner_references().to_vec();
    owners.push(owned::controller_reference(owner));
    set_owners(pods, pod, &owners).await
}

/// Lets go of a pod (known by its metadata) that no longer matches the selector of the owner
/// `uid`.
pub(crate) async fn release<K: ResourceExt>(pods: &Api<Pod>, pod: &K, uid: &str) {
    let owners: Vec<OwnerReference> = pod
        .owner_references()
        .iter()
        .filter(|o| o.uid != uid)
        .cloned()
        .collect();
    set_owners(pods, pod, &owners).await;
}

/// Replaces the pod's ownerReferences if it is still as read.
async fn set_owners<K: ResourceExt>(
    pods: &Api<Pod>,
    pod: &K,
    owners: &[OwnerReference],
) -> Option<Pod> {
    let patch = json!({"metadata": {
        "resourceVersion": pod.resource_version(),
        "ownerReferences": owners,
    }});
    match pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(changed) => Some(changed),
        Err(error) => {
            tracing::debug!(pod = %pod.name_any(), %error, "changing a pod's owners failed");
            None
        }
    }
}

/// The pods of `namespace` that `selector` selects, read live (a consistent list, filtered by
/// the API server).
pub(crate) async fn selected(
    pods: &Api<Pod>,
    selector: &Selector,
) -> Result<Vec<Pod>, kube::Error> {
    Ok(pods
        .list(&ListParams::default().labels_from(selector))
        .await?
        .items)
}

/// What a pass of a pod-keeping controller works with: its client, its Events and the index.
pub(crate) struct Keeper {
    pub client: kube::Client,
    pub recorder: skiff_client::events::Recorder,
    pub index: PodIndex,
}

impl Keeper {
    /// A keeper for `component` (its Events' source) and the future that writes its Events.
    pub(crate) fn new(
        client: kube::Client,
        component: &'static str,
        index: PodIndex,
    ) -> (Arc<Self>, impl Future<Output = ()> + use<>) {
        let (recorder, events) = owned::recorder(&client, component);
        let keeper = Keeper {
            client,
            recorder,
            index,
        };
        (Arc::new(keeper), events)
    }

    /// Records an Event about `object`, a workload of this controller's.
    pub(crate) fn note<K>(
        &self,
        object: &K,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) where
        K: k8s_openapi::Resource + Resource<DynamicType = ()>,
    {
        owned::note(&self.recorder, object, type_, reason, message);
    }
}

/// Every pod's metadata (name, labels, owners, resourceVersion), from the shared pod watch.
#[derive(Clone)]
pub struct PodIndex(Store<PodSummary>);

impl PodIndex {
    /// The index over the shared pod watch's cache.
    pub fn new(pods: &SharedPods) -> Self {
        PodIndex(pods.store())
    }

    /// The pods in `namespace` whose controller is `uid` and whose labels `selector` does not
    /// select.
    pub(crate) fn strayed(
        &self,
        namespace: &str,
        uid: &str,
        selector: &Selector,
    ) -> Vec<Arc<PodSummary>> {
        self.0
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .filter(|p| !selector.matches(p.labels()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_should_wait_for_min_ready_seconds() {
        let ready: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}))
            .unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(available(&ready, 0, at("2026-01-01T00:00:00Z")));
        assert!(!available(&ready, 10, at("2026-01-01T00:00:05Z")));
        assert!(available(&ready, 10, at("2026-01-01T00:00:10Z")));
    }
}
