//! The namespace controller: empties a namespace that is being deleted. For a namespace with a
//! `deletionTimestamp` it deletes every namespaced object of every served resource (custom ones
//! too), reports progress in the namespace's status conditions (upstream's types and reasons),
//! and once nothing is left removes the `kubernetes` entry from `spec.finalizers` through the
//! `finalize` subresource and deletes the namespace again, which lets it go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::resources::Resources;

/// The finalizer in `spec.finalizers` that this controller owns.
const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose objects are still going is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
}

/// What is left in a namespace after one deletion pass.
#[derive(Debug, Default)]
struct Remaining {
    /// Objects left, per resource.
    objects: BTreeMap<String, usize>,
    /// Objects held by each finalizer.
    finalizers: BTreeMap<String, usize>,
    /// Resources whose deletion failed, with the error.
    failures: Vec<String>,
}

/// Runs the controller until the task is dropped.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let context = Arc::new(Context { client });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "namespace controller");
            }
        })
        .await;
}

fn error_policy(namespace: Arc<Namespace>, error: &NamespaceError, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "namespace deletion failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, NamespaceError> {
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let client = &context.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let finalizers = namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let resources = Resources::discover(client).await?;
    let remaining = delete_content(client, &resources, &name).await;
    write_conditions(&namespaces, &namespace, &remaining).await?;
    if !remaining.objects.is_empty() || !remaining.failures.is_empty() {
        return Ok(Action::requeue(RECHECK));
    }
    let mut finalized = (*namespace).clone();
    finalized.metadata.managed_fields = None;
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    namespaces
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await?;
    match namespaces.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

/// Deletes every object in the namespace; returns what is still there.
async fn delete_content(client: &Client, resources: &Resources, namespace: &str) -> Remaining {
    let mut remaining = Remaining::default();
    for served in resources.namespaced_content() {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &served.resource);
        let plural = served.resource.plural.clone();
        let qualified = if served.resource.group.is_empty() {
            plural
        } else {
            format!("{plural}.{}", served.resource.group)
        };
        if let Err(error) = api
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            remaining.failures.push(format!("{qualified}: {error}"));
            continue;
        }
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => {}
            Ok(list) => {
                remaining.objects.insert(qualified, list.items.len());
                for object in &list.items {
                    for finalizer in object.metadata.finalizers.iter().flatten() {
                        *remaining.finalizers.entry(finalizer.clone()).or_default() += 1;
                    }
                }
            }
            Err(error) => remaining.failures.push(format!("{qualified}: {error}")),
        }
    }
    remaining
}

fn condition(kind: &str, status: bool, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

/// Upstream's deletion conditions for what `remaining` says.
fn conditions(remaining: &Remaining) -> Vec<NamespaceCondition> {
    let listed = |counts: &BTreeMap<String, usize>| {
        counts
            .iter()
            .map(|(what, n)| format!("{what} has {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if remaining.failures.is_empty() {
            condition(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            condition(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    remaining.failures.len(),
                    remaining.failures.join(", ")
                ),
            )
        },
        if remaining.objects.is_empty() {
            condition(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            condition(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    listed(&remaining.objects)
                ),
            )
        },
        if remaining.finalizers.is_empty() {
            condition(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            condition(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    listed(&remaining.finalizers).replace(" has ", " in ")
                ),
            )
        },
    ]
}

/// Writes the conditions once, and only when they changed (keeping transition times).
async fn write_conditions(
    namespaces: &Api<Namespace>,
    namespace: &Namespace,
    remaining: &Remaining,
) -> Result<(), NamespaceError> {
    let current = namespace
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut changed = false;
    let wanted: Vec<NamespaceCondition> = conditions(remaining)
        .into_iter()
        .map(|mut c| {
            match current.iter().find(|o| o.type_ == c.type_) {
                Some(old) if old.status == c.status && old.message == c.message => {
                    c.last_transition_time = old.last_transition_time.clone();
                }
                Some(old) if old.status == c.status => {
                    changed = true;
                    c.last_transition_time = old.last_transition_time.clone();
                }
                _ => {
                    changed = true;
                    c.last_transition_time = Some(now.clone());
                }
            }
            c
        })
        .collect();
    if !changed {
        return Ok(());
    }
    let patch = json!({"status": {"phase": "Terminating", "conditions": wanted}});
    namespaces
        .patch_status(
            &namespace.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_should_name_remaining_resources_and_finalizers() {
        let mut remaining = Remaining::default();
        remaining.objects.insert("configmaps".into(), 2);
        remaining.finalizers.insert("example.com/hold".into(), 1);
        let all = conditions(&remaining);
        let find = |t: &str| all.iter().find(|c| c.type_ == t).unwrap();
        let content = find("NamespaceContentRemaining");
        assert_eq!(content.status, "True");
        assert_eq!(
            content.message.as_deref(),
            Some("Some resources are remaining: configmaps has 2 resource instances")
        );
        let finalizers = find("NamespaceFinalizersRemaining");
        assert_eq!(
            finalizers.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
            )
        );
        assert_eq!(find("NamespaceDeletionContentFailure").status, "False");
    }
}
