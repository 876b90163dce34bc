//! The root-CA publisher (upstream's `root-ca-cert-publisher`): every active namespace has a
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA's certificate, so that pods can
//! check the API server's certificate (their service-account volume projects it). A changed or
//! deleted ConfigMap is put back as it should be.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// The ConfigMap's name in every namespace.
pub const NAME: &str = "kube-root-ca.crt";
/// Its key holding the PEM certificate.
pub const KEY: &str = "ca.crt";
/// The description upstream gives it.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum RootCaError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
    ca: String,
}

/// Publishes `ca` (a PEM certificate) in every namespace until the task is dropped.
pub async fn run(client: Client, ca: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let context = Arc::new(Context { client, ca });
    Controller::new(namespaces, watcher::Config::default())
        .watches(maps, only_ours, |map| {
            map.namespace().map(|ns| ObjectRef::new(&ns))
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "root-CA publisher");
            }
        })
        .await;
}

fn error_policy(namespace: Arc<Namespace>, error: &RootCaError, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "publishing the root CA failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The ConfigMap as it should be, with `base`'s metadata (name, resourceVersion, labels) kept.
fn desired(base: ObjectMeta, ca: &str) -> ConfigMap {
    let mut metadata = base;
    metadata.name = Some(NAME.into());
    metadata.managed_fields = None;
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("kubernetes.io/description".into(), DESCRIPTION.into());
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(KEY.to_string(), ca.to_string())])),
        ..ConfigMap::default()
    }
}

/// Whether `map` already says what it should.
fn current(map: &ConfigMap, ca: &str) -> bool {
    map.data
        .as_ref()
        .is_some_and(|d| d.len() == 1 && d.get(KEY).is_some_and(|v| v == ca))
        && map.binary_data.as_ref().is_none_or(BTreeMap::is_empty)
        && map.annotations().contains_key("kubernetes.io/description")
}

async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, RootCaError> {
    if !crate::service_account::active(&namespace) {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &name);
    let result = match maps.get_opt(NAME).await? {
        Some(map) if current(&map, &context.ca) => return Ok(Action::await_change()),
        Some(map) => {
            let wanted = desired(map.metadata, &context.ca);
            maps.replace(NAME, &PostParams::default(), &wanted).await
        }
        None => {
            let wanted = desired(ObjectMeta::default(), &context.ca);
            maps.create(&PostParams::default(), &wanted).await
        }
    };
    match result {
        Ok(_) => tracing::info!(namespace = %name, "root CA published"),
        // A concurrent change (its event brings us back), or a namespace now terminating.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 403 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_should_be_current_only_with_exactly_the_ca() {
        let ca = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let good = desired(ObjectMeta::default(), ca);
        assert!(current(&good, ca));
        assert!(!current(&good, "other"));
        let mut extra = good.clone();
        extra
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("more".into(), "x".into());
        assert!(!current(&extra, ca));
        let bare = ConfigMap {
            data: good.data.clone(),
            ..ConfigMap::default()
        };
        assert!(!current(&bare, ca));
    }
}
