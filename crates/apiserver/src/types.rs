//! The one place that maps a built-in kind to its k8s-openapi Rust type. Everything that needs
//! the type (shape checks, unknown-field detection, OpenAPI schemas) is a [`KindVisitor`].

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;

/// Something done with a kind's Rust type.
pub trait KindVisitor {
    /// The result.
    type Output;
    /// Does it with type `T`.
    fn visit<T>(&mut self) -> Self::Output
    where
        T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema;
}

/// Calls `visitor` with the type of `group`/`kind`, or returns `None` for kinds without one.
pub fn with_type<V: KindVisitor>(group: &str, kind: &str, visitor: &mut V) -> Option<V::Output> {
    Some(match (group, kind) {
        ("", "Namespace") => visitor.visit::<api::core::v1::Namespace>(),
        ("", "Pod") => visitor.visit::<api::core::v1::Pod>(),
        ("", "Service") => visitor.visit::<api::core::v1::Service>(),
        ("", "Endpoints") => visitor.visit::<api::core::v1::Endpoints>(),
        ("", "ConfigMap") => visitor.visit::<api::core::v1::ConfigMap>(),
        ("", "Secret") => visitor.visit::<api::core::v1::Secret>(),
        ("", "ServiceAccount") => visitor.visit::<api::core::v1::ServiceAccount>(),
        ("", "Node") => visitor.visit::<api::core::v1::Node>(),
        ("", "Event") => visitor.visit::<api::core::v1::Event>(),
        ("", "PersistentVolume") => visitor.visit::<api::core::v1::PersistentVolume>(),
        ("", "PersistentVolumeClaim") => visitor.visit::<api::core::v1::PersistentVolumeClaim>(),
        ("", "PodTemplate") => visitor.visit::<api::core::v1::PodTemplate>(),
        ("", "ReplicationController") => visitor.visit::<api::core::v1::ReplicationController>(),
        ("", "ResourceQuota") => visitor.visit::<api::core::v1::ResourceQuota>(),
        ("", "LimitRange") => visitor.visit::<api::core::v1::LimitRange>(),
        ("", "ComponentStatus") => visitor.visit::<api::core::v1::ComponentStatus>(),
        ("apps", "Deployment") => visitor.visit::<api::apps::v1::Deployment>(),
        ("apps", "ReplicaSet") => visitor.visit::<api::apps::v1::ReplicaSet>(),
        ("apps", "StatefulSet") => visitor.visit::<api::apps::v1::StatefulSet>(),
        ("apps", "DaemonSet") => visitor.visit::<api::apps::v1::DaemonSet>(),
        ("apps", "ControllerRevision") => visitor.visit::<api::apps::v1::ControllerRevision>(),
        ("batch", "Job") => visitor.visit::<api::batch::v1::Job>(),
        ("batch", "CronJob") => visitor.visit::<api::batch::v1::CronJob>(),
        ("coordination.k8s.io", "Lease") => visitor.visit::<api::coordination::v1::Lease>(),
        ("discovery.k8s.io", "EndpointSlice") => {
            visitor.visit::<api::discovery::v1::EndpointSlice>()
        }
        ("events.k8s.io", "Event") => visitor.visit::<api::events::v1::Event>(),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            visitor.visit::<apiextensions::CustomResourceDefinition>()
        }
        ("rbac.authorization.k8s.io", "Role") => visitor.visit::<api::rbac::v1::Role>(),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            visitor.visit::<api::rbac::v1::RoleBinding>()
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            visitor.visit::<api::rbac::v1::ClusterRole>()
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            visitor.visit::<api::rbac::v1::ClusterRoleBinding>()
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            visitor.visit::<api::certificates::v1::CertificateSigningRequest>()
        }
        ("storage.k8s.io", "CSIDriver") => visitor.visit::<api::storage::v1::CSIDriver>(),
        ("storage.k8s.io", "CSINode") => visitor.visit::<api::storage::v1::CSINode>(),
        ("storage.k8s.io", "CSIStorageCapacity") => {
            visitor.visit::<api::storage::v1::CSIStorageCapacity>()
        }
        ("storage.k8s.io", "VolumeAttachment") => {
            visitor.visit::<api::storage::v1::VolumeAttachment>()
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            visitor.visit::<api::admissionregistration::v1::MutatingWebhookConfiguration>()
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            visitor.visit::<api::admissionregistration::v1::ValidatingWebhookConfiguration>()
        }
        ("storage.k8s.io", "StorageClass") => visitor.visit::<api::storage::v1::StorageClass>(),
        ("policy", "PodDisruptionBudget") => {
            visitor.visit::<api::policy::v1::PodDisruptionBudget>()
        }
        ("networking.k8s.io", "Ingress") => visitor.visit::<api::networking::v1::Ingress>(),
        ("networking.k8s.io", "IngressClass") => {
            visitor.visit::<api::networking::v1::IngressClass>()
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            visitor.visit::<api::networking::v1::NetworkPolicy>()
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            visitor.visit::<api::scheduling::v1::PriorityClass>()
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            visitor.visit::<api::autoscaling::v2::HorizontalPodAutoscaler>()
        }
        ("apiregistration.k8s.io", "APIService") => visitor.visit::<apiregistration::APIService>(),
        ("authentication.k8s.io", "TokenReview") => {
            visitor.visit::<api::authentication::v1::TokenReview>()
        }
        ("authentication.k8s.io", "SelfSubjectReview") => {
            visitor.visit::<api::authentication::v1::SelfSubjectReview>()
        }
        _ => return None,
    })
}
