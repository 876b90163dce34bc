//! What the controllers that own objects share (ReplicaSet, Deployment, Job, node lifecycle):
//! their Events recorder, the Events they write about an object of theirs, the controller
//! ownerReference they put on what they make, the words of an API refusal, a delete that
//! takes only the object it was read as, and a status write that an object gone meanwhile
//! does not fail.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use skiff_client::events::{Note, Recorder, Reporter};

/// Reconciles a controller runs at once: bounded, so a burst of thousands of objects is worked
/// through steadily instead of holding thousands of passes (and their lists) in memory.
pub(crate) const CONCURRENCY: u16 = 16;

/// The kube-runtime settings every workload controller runs with.
pub(crate) fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// The error policy of the workload controllers: the failure logged, the object tried again in
/// 2 s.
pub(crate) fn retry<K, E, C>(object: Arc<K>, error: &E, _: Arc<C>) -> Action
where
    K: k8s_openapi::Resource + ResourceExt,
    E: std::fmt::Display,
{
    tracing::warn!(kind = K::KIND, name = %object.name_any(), %error, "syncing failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Drives a controller's reconcile stream (a failed pass is logged; it is retried by its
/// error policy) together with its Events writer, until dropped.
pub(crate) async fn drive<S, T, E>(
    work: S,
    events: impl Future<Output = ()>,
    controller: &'static str,
) where
    S: Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let work = async move {
        let mut work = std::pin::pin!(work);
        while let Some(result) = work.next().await {
            if let Err(error) = result {
                tracing::debug!(%error, controller, "reconcile");
            }
        }
    };
    tokio::join!(work, events);
}

/// A recorder for `component`'s Events, and the future that writes them.
pub(crate) fn recorder(
    client: &Client,
    component: &'static str,
) -> (Recorder, impl Future<Output = ()> + use<>) {
    let reporter = Reporter {
        component,
        instance: component.into(),
        host: None,
        action: |_| "",
    };
    Recorder::new(client.clone(), reporter)
}

/// Records an Event about `object`.
pub(crate) fn note<K>(
    recorder: &Recorder,
    object: &K,
    type_: &'static str,
    reason: &'static str,
    message: String,
) where
    K: k8s_openapi::Resource + Resource<DynamicType = ()>,
{
    recorder.record(Note {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
        type_,
        reason,
        message,
        field_path: None,
        object: Some((
            <K as k8s_openapi::Resource>::API_VERSION,
            <K as k8s_openapi::Resource>::KIND,
        )),
    });
}

/// The ownerReference of an object made by `owner`'s controller.
pub(crate) fn controller_reference<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).into(),
        kind: K::kind(&()).into(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What the API said when it refused a write, in its own words.
pub(crate) fn refusal(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Deletes `object` if it is still the one read (its uid); a gone object is no error.
pub(crate) async fn delete_read<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&object.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Merge-patches `patch` (`{"status": ...}`) onto the status of the object `name`; one that is
/// gone meanwhile has nothing to report.
pub(crate) async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Writes `status` onto the namespaced `object` unless `current` (what it says now) equals it.
pub(crate) async fn write_status<K, S>(
    client: &kube::Client,
    object: &K,
    current: Option<&S>,
    status: S,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
    S: PartialEq + k8s_openapi::serde::Serialize,
{
    if current == Some(&status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    patch_status(
        &api,
        &object.name_any(),
        &serde_json::json!({"status": status}),
    )
    .await
}
