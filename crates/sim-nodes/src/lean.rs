//! A Pod as simulated nodes read it: the identity, the node it is bound to, its containers'
//! names and images, whether it is being deleted, and its phase. Everything else a watch sends
//! (managedFields, the rest of the spec and status) is skipped unread, so following every pod
//! of a large cluster costs the tool little; the fields kept are those a kubelet acts on here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A pod, lean.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    /// Identity, labels, owners and lifecycle; no managedFields or annotations.
    #[serde(deserialize_with = "skiff_client::lean::metadata")]
    pub metadata: ObjectMeta,
    /// What the node runs.
    #[serde(default)]
    pub spec: Spec,
    /// How far it got.
    #[serde(default)]
    pub status: Status,
}

/// The spec fields a simulated node reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The node it is bound to.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Its containers.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Its init containers.
    #[serde(default)]
    pub init_containers: Vec<Container>,
}

/// A container's name and image (and, for init containers, whether it is a sidecar).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its image.
    #[serde(default)]
    pub image: Option<String>,
    /// `Always` for a sidecar init container.
    #[serde(default)]
    pub restart_policy: Option<String>,
}

/// The status fields a simulated node reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Status {
    /// Pending, Running, Succeeded, Failed.
    #[serde(default)]
    pub phase: Option<String>,
}

skiff_client::pod_resource!(Pod, metadata);

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_should_decode_to_what_a_simulated_node_reads() {
        let pod: Pod = serde_json::from_value(json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "resourceVersion": "9",
                "deletionTimestamp": "2026-12-04T00:00:00Z",
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "sim-1", "containers": [{"name": "c", "image": "i", "ports": []}],
                "initContainers": [{"name": "s", "restartPolicy": "Always"}], "tolerations": []},
            "status": {"phase": "Pending", "conditions": []},
        }))
        .unwrap();
        assert_eq!(pod.name_any(), "p");
        assert_eq!(pod.namespace().as_deref(), Some("d"));
        assert_eq!(pod.resource_version().as_deref(), Some("9"));
        assert!(pod.metadata.deletion_timestamp.is_some());
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(pod.spec.node_name.as_deref(), Some("sim-1"));
        assert_eq!(pod.spec.containers[0].image.as_deref(), Some("i"));
        assert_eq!(
            pod.spec.init_containers[0].restart_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(pod.status.phase.as_deref(), Some("Pending"));
    }
}
