//! What the collector does through the API for one task. Every decision is re-checked against
//! the live objects first: an owner counts as gone only when a GET of it answers 404 or returns
//! an object with another uid, and every write carries the object's uid or resourceVersion as
//! a precondition, so a stale graph can delay the collector but never make it delete an object
//! whose owner exists.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use serde_json::{Value, json};

use super::graph::{Deletion, FOREGROUND, Graph, Node, ORPHAN, Task};
use crate::resources::{Resources, Served};

/// A task failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The API answered with an error (a 409 on a precondition included).
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    /// An owner reference names a kind the API does not serve (yet): the dependent is kept.
    #[error("no served resource has kind {kind} in {api_version}")]
    UnknownKind {
        /// The reference's apiVersion.
        api_version: String,
        /// The reference's kind.
        kind: String,
    },
    /// The resource a node was watched through is no longer served.
    #[error("the resource {0} is no longer served")]
    UnknownResource(String),
}

/// How an owner reference resolves.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// The owner exists.
    Solid,
    /// The owner does not exist (404, or an object with another uid).
    Dangling,
    /// The owner exists and is deleting its dependents in the foreground.
    Waiting,
}

/// The API calls of the collector.
pub struct Actions<'a> {
    /// The client.
    pub client: &'a Client,
    /// The served resources.
    pub resources: &'a Resources,
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

impl Actions<'_> {
    fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| served.namespaced) {
            Some(namespace) => {
                Api::namespaced_with(self.client.clone(), namespace, &served.resource)
            }
            None => Api::all_with(self.client.clone(), &served.resource),
        }
    }

    fn api_of(&self, node: &Node) -> Result<Api<DynamicObject>, ActionError> {
        let served = self
            .resources
            .by_key(&node.resource)
            .ok_or_else(|| ActionError::UnknownResource(node.resource.clone()))?;
        Ok(self.api(served, node.namespace.as_deref()))
    }

    /// The live metadata of `node`, if that very object (same uid) still exists.
    async fn live(
        &self,
        api: &Api<DynamicObject>,
        node: &Node,
    ) -> Result<Option<ObjectMeta>, ActionError> {
        Ok(api
            .get_metadata_opt(&node.name)
            .await?
            .map(|o| o.metadata)
            .filter(|meta| meta.uid.as_deref() == Some(node.uid.as_str())))
    }

    async fn owner(
        &self,
        namespace: Option<&str>,
        reference: &OwnerReference,
    ) -> Result<Owner, ActionError> {
        let served = self
            .resources
            .resolve(&reference.api_version, &reference.kind)
            .ok_or_else(|| ActionError::UnknownKind {
                api_version: reference.api_version.clone(),
                kind: reference.kind.clone(),
            })?;
        if served.namespaced && namespace.is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one.
            return Ok(Owner::Dangling);
        }
        let found = self
            .api(served, namespace)
            .get_metadata_opt(&reference.name)
            .await?;
        Ok(match found {
            Some(owner) if owner.metadata.uid.as_deref() == Some(reference.uid.as_str()) => {
                if Deletion::of(&owner.metadata) == Deletion::DeletingDependents {
                    Owner::Waiting
                } else {
                    Owner::Solid
                }
            }
            _ => Owner::Dangling,
        })
    }

    /// Merge-patches metadata fields guarded by the object's resourceVersion.
    async fn patch_meta(
        &self,
        api: &Api<DynamicObject>,
        meta: &ObjectMeta,
        field: &str,
        value: Value,
    ) -> Result<(), ActionError> {
        let Some(name) = meta.name.as_deref() else {
            return Ok(());
        };
        let patch = json!({"metadata": {"resourceVersion": meta.resource_version, field: value}});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn drop_owner_references(
        &self,
        api: &Api<DynamicObject>,
        meta: &ObjectMeta,
        gone: &[String],
    ) -> Result<(), ActionError> {
        let remaining: Vec<&OwnerReference> = meta
            .owner_references
            .iter()
            .flatten()
            .filter(|r| !gone.contains(&r.uid))
            .collect();
        let value = if remaining.is_empty() {
            Value::Null
        } else {
            json!(remaining)
        };
        self.patch_meta(api, meta, "ownerReferences", value).await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), ActionError> {
        let api = self.api_of(node)?;
        let Some(meta) = self.live(&api, node).await? else {
            return Ok(());
        };
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
        let value = if rest.is_empty() {
            Value::Null
        } else {
            json!(rest)
        };
        tracing::info!(object = %node.name, uid = %node.uid, finalizer, "garbage collector removes finalizer");
        self.patch_meta(&api, &meta, "finalizers", value).await
    }

    /// Deletes `node` if none of its owners exists any more (or drops the references to the
    /// owners that are gone while another remains).
    pub async fn attempt_delete(
        &self,
        graph: &Graph,
        node: &Node,
    ) -> Result<Vec<Task>, ActionError> {
        match node.deletion {
            Deletion::DeletingDependents => return self.delete_dependents(graph, node).await,
            Deletion::Deleting | Deletion::Orphaning => return Ok(Vec::new()),
            Deletion::Alive => {}
        }
        let api = self.api_of(node)?;
        let Some(meta) = self.live(&api, node).await? else {
            return Ok(Vec::new());
        };
        let references = meta.owner_references.clone().unwrap_or_default();
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let (mut solid, mut waiting, mut gone) = (0, 0, Vec::new());
        for reference in &references {
            match self.owner(node.namespace.as_deref(), reference).await? {
                Owner::Solid => solid += 1,
                Owner::Dangling => gone.push(reference.uid.clone()),
                Owner::Waiting => {
                    waiting += 1;
                    gone.push(reference.uid.clone());
                }
            }
        }
        if solid > 0 {
            if !gone.is_empty() {
                tracing::info!(object = %node.name, uid = %node.uid, ?gone, "garbage collector drops references to absent owners");
                self.drop_owner_references(&api, &meta, &gone).await?;
            }
            return Ok(Vec::new());
        }
        let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
        let policy = if waiting > 0 || has(FOREGROUND) {
            PropagationPolicy::Foreground
        } else if has(ORPHAN) {
            PropagationPolicy::Orphan
        } else {
            PropagationPolicy::Background
        };
        tracing::info!(object = %node.name, uid = %node.uid, ?policy, "garbage collector deletes an object whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&node.name, &params).await {
            Ok(_) => Ok(Vec::new()),
            Err(error) if is_not_found(&error) => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }

    /// Foreground deletion of `owner`: its blocking dependents are deleted first; once none is
    /// left its `foregroundDeletion` finalizer is removed.
    pub async fn delete_dependents(
        &self,
        graph: &Graph,
        owner: &Node,
    ) -> Result<Vec<Task>, ActionError> {
        let blocking: Vec<&Node> = graph
            .dependents(&owner.uid)
            .into_iter()
            .filter(|d| d.blocks(&owner.uid))
            .collect();
        if blocking.is_empty() {
            self.remove_finalizer(owner, FOREGROUND).await?;
            return Ok(Vec::new());
        }
        Ok(blocking
            .into_iter()
            .filter(|d| d.deletion == Deletion::Alive)
            .map(|d| Task::AttemptDelete(d.uid.clone()))
            .collect())
    }

    /// Orphan deletion of `owner`: its dependents lose their references to it, then its
    /// `orphan` finalizer is removed.
    pub async fn orphan(&self, graph: &Graph, owner: &Node) -> Result<Vec<Task>, ActionError> {
        for dependent in graph.dependents(&owner.uid) {
            let api = self.api_of(dependent)?;
            if let Some(meta) = self.live(&api, dependent).await? {
                self.drop_owner_references(&api, &meta, std::slice::from_ref(&owner.uid))
                    .await?;
            }
        }
        self.remove_finalizer(owner, ORPHAN).await?;
        Ok(Vec::new())
    }
}
