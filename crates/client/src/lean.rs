//! Decoding what a component reads off an object and nothing more. A watch of every pod sends
//! each pod whole, managedFields included, and k8s-openapi decodes managedFields into nested
//! JSON maps: most of a pod's decoding cost for a reader that never looks at them. Types that
//! follow many objects (the controllers' shared pod feed, simulated nodes, [`WatchedPod`] for
//! the scheduler, [`WatchedNode`] for readers of whole nodes, [`NodeHealth`] for those of their
//! health, [`MetadataOnly`] for the garbage collector) decode their `metadata` with
//! [`metadata`], which keeps an object's identity, labels, owners and lifecycle and skips the
//! rest (managedFields, annotations) unread.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::{ApiResource, DynamicResourceScope};
use serde::{Deserialize, Deserializer};

/// The metadata fields kept.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kept {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<i64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    finalizers: Option<Vec<String>>,
}

/// Decodes an object's `metadata` without its managedFields and annotations (use as
/// `#[serde(deserialize_with = "skiff_client::lean::metadata")]`).
pub fn metadata<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let kept = Kept::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: kept.name,
        generate_name: kept.generate_name,
        namespace: kept.namespace,
        uid: kept.uid,
        resource_version: kept.resource_version,
        generation: kept.generation,
        creation_timestamp: kept.creation_timestamp,
        deletion_timestamp: kept.deletion_timestamp,
        deletion_grace_period_seconds: kept.deletion_grace_period_seconds,
        labels: kept.labels,
        owner_references: kept.owner_references,
        finalizers: kept.finalizers,
        ..ObjectMeta::default()
    })
}

/// Implements `kube::Resource` for a lean type, given its group (`""` for core), version, kind,
/// plural, scope and where its `ObjectMeta` lies
/// (`lean_resource!(MyNode, "", "v1", "Node", "nodes", ClusterResourceScope, metadata)`).
#[macro_export]
macro_rules! lean_resource {
    (
        $type:ty, $group:literal, $version:literal, $kind:literal, $plural:literal, $scope:ident,
        $($field:ident).+
    ) => {
        impl ::kube::Resource for $type {
            type DynamicType = ();
            type Scope = ::kube::core::$scope;

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.$($field).+
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.$($field).+
            }
        }
    };
}

/// Implements `kube::Resource` for a lean type read from core/v1 `pods`, given where its
/// `ObjectMeta` lies (`pod_resource!(MyPod, metadata)`).
#[macro_export]
macro_rules! pod_resource {
    ($type:ty, $($field:ident).+) => {
        $crate::lean_resource!($type, "", "v1", "Pod", "pods", NamespaceResourceScope, $($field).+);
    };
}

/// Implements `kube::Resource` for a lean type read from core/v1 `nodes`, given where its
/// `ObjectMeta` lies (`node_resource!(MyNode, metadata)`).
#[macro_export]
macro_rules! node_resource {
    ($type:ty, $($field:ident).+) => {
        $crate::lean_resource!($type, "", "v1", "Node", "nodes", ClusterResourceScope, $($field).+);
    };
}

/// A whole Pod as a watch sends it, but for its managedFields and annotations, skipped unread
/// (the scheduler follows every pod and reads neither).
#[derive(Clone, Debug)]
pub struct WatchedPod {
    /// The pod.
    pub pod: Pod,
}

/// An object's lean metadata, its spec and its status, as watches send them.
#[derive(Deserialize)]
struct Parts<Spec, Status> {
    #[serde(deserialize_with = "metadata")]
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<Spec>,
    #[serde(default = "Option::default")]
    status: Option<Status>,
}

impl<'de> Deserialize<'de> for WatchedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parts = Parts::<PodSpec, PodStatus>::deserialize(deserializer)?;
        Ok(WatchedPod {
            pod: Pod {
                metadata: parts.metadata,
                spec: parts.spec,
                status: parts.status,
            },
        })
    }
}

crate::pod_resource!(WatchedPod, pod.metadata);

/// A whole Node as a watch sends it, but for its managedFields and annotations, skipped unread,
/// and the images it holds (`status.images`), dropped: none of the components that follow every
/// node (the scheduler, the load balancer, pod CIDR allocation, node lifecycle, DaemonSets)
/// reads them, and at thousands of nodes whole Nodes kept by some were most of the server's
/// memory.
#[derive(Clone, Debug)]
pub struct WatchedNode {
    /// The node.
    pub node: Node,
}

impl<'de> Deserialize<'de> for WatchedNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut parts = Parts::<NodeSpec, NodeStatus>::deserialize(deserializer)?;
        if let Some(status) = parts.status.as_mut() {
            status.images = None;
        }
        Ok(WatchedNode {
            node: Node {
                metadata: parts.metadata,
                spec: parts.spec,
                status: parts.status,
            },
        })
    }
}

impl WatchedNode {
    /// Every Node, listed without what [`WatchedNode`] leaves out.
    pub async fn list_all(client: &kube::Client) -> Result<Vec<Node>, kube::Error> {
        Ok(kube::Api::<WatchedNode>::all(client.clone())
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|watched| watched.node)
            .collect())
    }
}

crate::node_resource!(WatchedNode, node.metadata);

/// A Node as the controllers that judge its health read it (node lifecycle, and the pod
/// garbage collector, which needs its name alone): the lean metadata, `spec.taints` and
/// `status.conditions`; everything else (addresses, capacity, node info, images) is skipped
/// unread, so a cache of thousands of them stays small.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    /// The node, with only those fields.
    pub node: Node,
}

/// The spec fields [`NodeHealth`] keeps.
#[derive(Deserialize)]
struct HealthSpec {
    #[serde(default)]
    taints: Option<Vec<Taint>>,
}

/// The status fields [`NodeHealth`] keeps.
#[derive(Deserialize)]
struct HealthStatus {
    #[serde(default)]
    conditions: Option<Vec<NodeCondition>>,
}

impl<'de> Deserialize<'de> for NodeHealth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let parts = Parts::<HealthSpec, HealthStatus>::deserialize(deserializer)?;
        Ok(NodeHealth {
            node: Node {
                metadata: parts.metadata,
                spec: parts.spec.map(|s| NodeSpec {
                    taints: s.taints,
                    ..NodeSpec::default()
                }),
                status: parts.status.map(|s| NodeStatus {
                    conditions: s.conditions,
                    ..NodeStatus::default()
                }),
            },
        })
    }
}

crate::node_resource!(NodeHealth, node.metadata);

/// Any object, of any resource, as a reader of its metadata alone sees it (the garbage
/// collector): the lean metadata; everything else the watch sends is skipped unread.
#[derive(Clone, Debug, Deserialize)]
pub struct MetadataOnly {
    /// Identity, labels, owners and lifecycle.
    #[serde(deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
}

impl kube::Resource for MetadataOnly {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(resource: &ApiResource) -> Cow<'_, str> {
        resource.kind.as_str().into()
    }
    fn group(resource: &ApiResource) -> Cow<'_, str> {
        resource.group.as_str().into()
    }
    fn version(resource: &ApiResource) -> Cow<'_, str> {
        resource.version.as_str().into()
    }
    fn api_version(resource: &ApiResource) -> Cow<'_, str> {
        resource.api_version.as_str().into()
    }
    fn plural(resource: &ApiResource) -> Cow<'_, str> {
        resource.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Deserialize)]
    struct Object {
        #[serde(deserialize_with = "metadata")]
        metadata: ObjectMeta,
    }

    #[test]
    fn a_watched_node_should_keep_spec_and_status_but_not_managed_fields_or_images() {
        let watched: WatchedNode = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "labels": {"zone": "a"}, "annotations": {"a": "b"},
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {}}]},
            "spec": {"podCIDR": "10.64.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "allocatable": {"cpu": "4"}, "images": [{"names": ["busybox"], "sizeBytes": 1}]},
        }))
        .unwrap();
        let node = watched.node;
        assert_eq!(node.metadata.name.as_deref(), Some("n"));
        assert_eq!(node.metadata.labels.unwrap()["zone"], "a");
        assert!(node.metadata.managed_fields.is_none() && node.metadata.annotations.is_none());
        let spec = node.spec.unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.64.0.0/24"));
        assert_eq!(spec.taints.unwrap()[0].key, "k");
        let status = node.status.unwrap();
        assert_eq!(status.addresses.unwrap()[0].address, "10.0.0.1");
        assert!(status.allocatable.unwrap().contains_key("cpu"));
        assert!(status.images.is_none());
    }

    #[test]
    fn node_health_should_keep_taints_and_conditions_and_drop_the_rest() {
        let health: NodeHealth = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "uid": "u", "resourceVersion": "7",
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {}}]},
            "spec": {"podCIDR": "10.64.0.0/24", "taints": [{"key": "k", "effect": "NoExecute"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "allocatable": {"cpu": "4"}, "nodeInfo": {"kubeletVersion": "v1.34.0",
                "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                "kernelVersion": "", "kubeProxyVersion": "", "machineID": "",
                "operatingSystem": "linux", "osImage": "", "systemUUID": ""},
                "conditions": [{"type": "Ready", "status": "True",
                    "lastHeartbeatTime": "2026-12-06T00:00:00Z"}]},
        }))
        .unwrap();
        let node = health.node;
        assert_eq!(node.metadata.name.as_deref(), Some("n"));
        assert_eq!(node.metadata.uid.as_deref(), Some("u"));
        assert_eq!(node.metadata.resource_version.as_deref(), Some("7"));
        assert!(node.metadata.managed_fields.is_none());
        let spec = node.spec.unwrap();
        assert_eq!(spec.taints.unwrap()[0].effect, "NoExecute");
        assert!(spec.pod_cidr.is_none());
        let status = node.status.unwrap();
        let ready = &status.conditions.unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert!(ready.last_heartbeat_time.is_some());
        assert!(status.addresses.is_none() && status.allocatable.is_none());
        assert!(status.node_info.is_none());
    }

    #[test]
    fn lean_metadata_should_keep_identity_labels_and_owners_and_skip_managed_fields() {
        let object: Object = serde_json::from_value(json!({"metadata": {
            "name": "p", "namespace": "d", "uid": "u", "resourceVersion": "9",
            "creationTimestamp": "2026-12-04T00:00:00Z", "deletionTimestamp": "2026-12-05T00:00:00Z",
            "labels": {"app": "web"}, "annotations": {"a": "b"}, "finalizers": ["f"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r",
                "uid": "o", "controller": true}],
            "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
        }}))
        .unwrap();
        let meta = object.metadata;
        assert_eq!(meta.name.as_deref(), Some("p"));
        assert_eq!(meta.namespace.as_deref(), Some("d"));
        assert_eq!(meta.uid.as_deref(), Some("u"));
        assert_eq!(meta.resource_version.as_deref(), Some("9"));
        assert!(meta.creation_timestamp.is_some() && meta.deletion_timestamp.is_some());
        assert_eq!(meta.labels.unwrap()["app"], "web");
        assert_eq!(meta.owner_references.unwrap()[0].uid, "o");
        assert_eq!(meta.finalizers.unwrap(), ["f"]);
        assert!(meta.managed_fields.is_none());
        assert!(meta.annotations.is_none());
    }

    #[test]
    fn a_watched_pod_should_keep_spec_and_status_and_skip_managed_fields() {
        let pod: WatchedPod = serde_json::from_value(json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "d",
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"schedulerName": "default-scheduler", "containers": [{"name": "c"}]},
            "status": {"phase": "Pending"},
        }))
        .unwrap();
        let pod = pod.pod;
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(pod.spec.unwrap().containers[0].name, "c");
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn metadata_only_should_name_the_resource_it_was_given() {
        let resource = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        };
        let url = <MetadataOnly as kube::Resource>::url_path(&resource, Some("d"));
        assert_eq!(url, "/apis/apps/v1/namespaces/d/deployments");
    }
}
