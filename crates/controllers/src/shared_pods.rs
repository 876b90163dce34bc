//! One watch of every pod, shared by the controllers that follow pods (ReplicaSet,
//! ReplicationController, StatefulSet, DaemonSet, Job, EndpointSlice, the pod garbage
//! collector and the [`PodIndex`](crate::pods::PodIndex)), as upstream's controller manager
//! shares one pod informer among its controllers. Each event is decoded once, and only into
//! what those controllers read off a pod event ([`PodSummary`]: metadata without managedFields
//! or annotations, the node, the phase); every subscriber gets the same `Arc`. A controller
//! that needs a whole pod reads it from a consistent list in its pass.
//!
//! Subscribers see what kube-rs's `touched_objects` would (objects listed, changed or
//! deleted), through an unbounded channel each: the controllers' trigger streams are always
//! polled, so nothing waits on a slow reader and no event is dropped.

use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// A pod as the controllers read it off a watch event.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodSummary {
    /// Identity, labels, owners and lifecycle.
    #[serde(deserialize_with = "skiff_client::lean::metadata")]
    pub metadata: ObjectMeta,
    /// The spec fields kept.
    #[serde(default)]
    pub spec: SpecSummary,
    /// The status fields kept.
    #[serde(default)]
    pub status: StatusSummary,
}

/// The spec fields a pod event's readers use.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecSummary {
    /// The node it is bound to.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// The status fields a pod event's readers use.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatusSummary {
    /// Pending, Running, Succeeded, Failed.
    #[serde(default)]
    pub phase: Option<String>,
}

impl PodSummary {
    /// Whether the pod ran to its end (Succeeded or Failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }
}

skiff_client::pod_resource!(PodSummary, metadata);

type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<PodSummary>>>>>;

/// The shared pod watch: a cache of every pod and a stream of changes per subscriber.
#[derive(Clone)]
pub struct SharedPods {
    store: Store<PodSummary>,
    subscribers: Subscribers,
}

impl SharedPods {
    /// The shared watch and the future that feeds it (run it as long as it is used). Subscribe
    /// before the future first runs to see every pod from the first list on.
    pub fn start(client: &kube::Client) -> (Self, impl Future<Output = ()> + use<>) {
        let (store, mut writer) = reflector::store::<PodSummary>();
        let subscribers = Subscribers::default();
        let fan_out = Arc::clone(&subscribers);
        let feed = watcher(
            Api::<PodSummary>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .for_each(move |event| {
            if let Ok(event) = event {
                writer.apply_watcher_event(&event);
                if let watcher::Event::Apply(pod)
                | watcher::Event::InitApply(pod)
                | watcher::Event::Delete(pod) = event
                {
                    let pod = Arc::new(pod);
                    fan_out
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .retain(|subscriber| subscriber.send(Arc::clone(&pod)).is_ok());
                }
            }
            std::future::ready(())
        });
        (SharedPods { store, subscribers }, feed)
    }

    /// Every pod, as last seen.
    pub fn store(&self) -> Store<PodSummary> {
        self.store.clone()
    }

    /// A stream of every pod listed, changed or deleted from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<PodSummary>> + Send + 'static + use<> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sender);
        UnboundedReceiverStream::new(receiver)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_event_should_decode_to_what_the_controllers_read() {
        let pod: PodSummary = serde_json::from_value(json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "web"},
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Succeeded", "conditions": []},
        }))
        .unwrap();
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "web");
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(pod.spec.node_name.as_deref(), Some("n1"));
        assert!(pod.is_finished());
    }
}
