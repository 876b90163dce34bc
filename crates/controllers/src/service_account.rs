//! The service-account controller (upstream's `serviceaccounts-controller`): every active
//! namespace has a ServiceAccount named `default`, the identity its pods run as when they name
//! none. A deleted `default` account comes back; accounts are never changed once they exist, and
//! nothing is created in a namespace that is going away.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// The account every namespace gets.
pub const DEFAULT: &str = "default";

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
}

/// Runs the controller until the task is dropped.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let only_default = watcher::Config::default().fields(&format!("metadata.name={DEFAULT}"));
    let context = Arc::new(Context { client });
    Controller::new(namespaces, watcher::Config::default())
        .watches(accounts, only_default, |account| {
            account.namespace().map(|ns| ObjectRef::new(&ns))
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "service-account controller");
            }
        })
        .await;
}

fn error_policy(namespace: Arc<Namespace>, error: &ServiceAccountError, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "creating the default service account failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Whether a namespace takes new objects (not deleted, not terminating).
pub(crate) fn active(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_none()
        && namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|phase| phase != "Terminating")
}

async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, ServiceAccountError> {
    if !active(&namespace) {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced(context.client.clone(), &name);
    if accounts.get_opt(DEFAULT).await?.is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => tracing::info!(namespace = %name, "default service account created"),
        // Someone else made it, or the namespace began terminating meanwhile.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 403 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Action::await_change())
}
