//! Shape checks: a built-in object must deserialize into its k8s-openapi type (right field
//! types, required fields present). The stored form stays the JSON the client sent, so fields
//! k8s-openapi does not know yet are not lost.

use k8s_openapi::api;
use serde_json::Value;
use skiff_apimachinery::{ApiError, ResourceInfo};

fn check<T: serde::de::DeserializeOwned>(object: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(object.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks `object` against the k8s-openapi type of `info`'s kind.
pub fn check_shape(info: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
    let result = match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => check::<api::core::v1::Namespace>(object),
        ("", "Pod") => check::<api::core::v1::Pod>(object),
        ("", "Service") => check::<api::core::v1::Service>(object),
        ("", "Endpoints") => check::<api::core::v1::Endpoints>(object),
        ("", "ConfigMap") => check::<api::core::v1::ConfigMap>(object),
        ("", "Secret") => check::<api::core::v1::Secret>(object),
        ("", "ServiceAccount") => check::<api::core::v1::ServiceAccount>(object),
        ("", "Node") => check::<api::core::v1::Node>(object),
        ("", "Event") => check::<api::core::v1::Event>(object),
        ("", "PersistentVolume") => check::<api::core::v1::PersistentVolume>(object),
        ("", "PersistentVolumeClaim") => check::<api::core::v1::PersistentVolumeClaim>(object),
        ("", "PodTemplate") => check::<api::core::v1::PodTemplate>(object),
        ("", "ReplicationController") => check::<api::core::v1::ReplicationController>(object),
        ("", "ResourceQuota") => check::<api::core::v1::ResourceQuota>(object),
        ("", "LimitRange") => check::<api::core::v1::LimitRange>(object),
        ("apps", "Deployment") => check::<api::apps::v1::Deployment>(object),
        ("apps", "ReplicaSet") => check::<api::apps::v1::ReplicaSet>(object),
        ("apps", "StatefulSet") => check::<api::apps::v1::StatefulSet>(object),
        ("apps", "DaemonSet") => check::<api::apps::v1::DaemonSet>(object),
        ("apps", "ControllerRevision") => check::<api::apps::v1::ControllerRevision>(object),
        ("batch", "Job") => check::<api::batch::v1::Job>(object),
        ("batch", "CronJob") => check::<api::batch::v1::CronJob>(object),
        ("coordination.k8s.io", "Lease") => check::<api::coordination::v1::Lease>(object),
        ("discovery.k8s.io", "EndpointSlice") => check::<api::discovery::v1::EndpointSlice>(object),
        ("events.k8s.io", "Event") => check::<api::events::v1::Event>(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            check::<apiextensions::CustomResourceDefinition>(object)
        }
        ("rbac.authorization.k8s.io", "Role") => check::<api::rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io", "RoleBinding") => check::<api::rbac::v1::RoleBinding>(object),
        ("rbac.authorization.k8s.io", "ClusterRole") => check::<api::rbac::v1::ClusterRole>(object),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            check::<api::rbac::v1::ClusterRoleBinding>(object)
        }
        ("storage.k8s.io", "StorageClass") => check::<api::storage::v1::StorageClass>(object),
        ("policy", "PodDisruptionBudget") => check::<api::policy::v1::PodDisruptionBudget>(object),
        ("networking.k8s.io", "Ingress") => check::<api::networking::v1::Ingress>(object),
        ("networking.k8s.io", "IngressClass") => check::<api::networking::v1::IngressClass>(object),
        ("networking.k8s.io", "NetworkPolicy") => {
            check::<api::networking::v1::NetworkPolicy>(object)
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            check::<api::scheduling::v1::PriorityClass>(object)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            check::<api::autoscaling::v2::HorizontalPodAutoscaler>(object)
        }
        ("apiregistration.k8s.io", "APIService") => check::<apiregistration::APIService>(object),
        ("authentication.k8s.io", "SelfSubjectReview") => {
            check::<api::authentication::v1::SelfSubjectReview>(object)
        }
        _ => Ok(()),
    };
    result.map_err(|message| {
        ApiError::BadRequest(format!("{} in body is malformed: {message}", info.kind))
    })
}
