//! The built-in resources skiff serves: for each, where it lives (group/version), what it is
//! called (kind, plural, singular, short names, categories), its scope, verbs and subresources.
//! Discovery, routing, storage keys and error messages all read this one table.

/// Whether objects live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Objects live in a namespace.
    Namespaced,
    /// Objects are cluster-wide.
    Cluster,
}

/// One served resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name, e.g. `configmaps`.
    pub plural: String,
    /// Singular name, e.g. `configmap`.
    pub singular: String,
    /// Namespaced or cluster-wide.
    pub scope: Scope,
    /// Short names, e.g. `cm`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Verbs, e.g. `get`, `list`.
    pub verbs: Vec<String>,
    /// Subresources, e.g. `status`, `scale`.
    pub subresources: Vec<String>,
}

/// The verbs of an ordinary stored resource.
pub const CRUD_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// Whether `verb` is allowed.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether the subresource exists.
    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }
}

/// What a request does, as upstream's RequestInfo names it (and RBAC will authorize it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Follow changes.
    Watch,
    /// Create an object (or a subresource action such as a binding).
    Create,
    /// Replace an object.
    Update,
    /// Patch an object.
    Patch,
    /// Delete one object.
    Delete,
    /// Delete a collection.
    DeleteCollection,
}

impl Verb {
    /// Upstream's name of the verb (`deletecollection`, ...), as discovery lists it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }
}

struct Row {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short: &'static [&'static str],
    all: bool,
    sub: &'static [&'static str],
    verbs: Option<&'static [&'static str]>,
}

const fn row(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short: &'static [&'static str],
) -> Row {
    Row {
        group,
        version,
        kind,
        plural,
        scope,
        short,
        all: false,
        sub: &[],
        verbs: None,
    }
}

impl Row {
    const fn in_all(mut self) -> Self {
        self.all = true;
        self
    }
    const fn sub(mut self, sub: &'static [&'static str]) -> Self {
        self.sub = sub;
        self
    }
    const fn verbs(mut self, verbs: &'static [&'static str]) -> Self {
        self.verbs = Some(verbs);
        self
    }
}

use Scope::{Cluster, Namespaced};

const BUILTIN: &[Row] = &[
    row("", "v1", "Namespace", "namespaces", Cluster, &["ns"]).sub(&["status", "finalize"]),
    row("", "v1", "Pod", "pods", Namespaced, &["po"])
        .in_all()
        .sub(&[
            "status",
            "binding",
            "eviction",
            "ephemeralcontainers",
            "log",
            "exec",
            "attach",
            "portforward",
        ]),
    row("", "v1", "Service", "services", Namespaced, &["svc"])
        .in_all()
        .sub(&["status"]),
    row("", "v1", "Endpoints", "endpoints", Namespaced, &["ep"]),
    row("", "v1", "ConfigMap", "configmaps", Namespaced, &["cm"]),
    row("", "v1", "Secret", "secrets", Namespaced, &[]),
    row(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        Namespaced,
        &["sa"],
    )
    .sub(&["token"]),
    row("", "v1", "Node", "nodes", Cluster, &["no"]).sub(&["status", "proxy"]),
    row("", "v1", "Event", "events", Namespaced, &["ev"]),
    row(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        Cluster,
        &["pv"],
    )
    .sub(&["status"]),
    row(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Namespaced,
        &["pvc"],
    )
    .sub(&["status"]),
    row("", "v1", "PodTemplate", "podtemplates", Namespaced, &[]),
    row(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        Namespaced,
        &["rc"],
    )
    .in_all()
    .sub(&["status", "scale"]),
    row(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        Namespaced,
        &["quota"],
    )
    .sub(&["status"]),
    row(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        Namespaced,
        &["limits"],
    ),
    // Deprecated, read-only: computed by the API server on each request, never stored.
    row(
        "",
        "v1",
        "ComponentStatus",
        "componentstatuses",
        Cluster,
        &["cs"],
    )
    .verbs(&["get", "list"]),
    row(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        Namespaced,
        &["deploy"],
    )
    .in_all()
    .sub(&["status", "scale"]),
    row(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        Namespaced,
        &["rs"],
    )
    .in_all()
    .sub(&["status", "scale"]),
    row(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        Namespaced,
        &["sts"],
    )
    .in_all()
    .sub(&["status", "scale"]),
    row("apps", "v1", "DaemonSet", "daemonsets", Namespaced, &["ds"])
        .in_all()
        .sub(&["status"]),
    row(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        Namespaced,
        &[],
    ),
    row("batch", "v1", "Job", "jobs", Namespaced, &[])
        .in_all()
        .sub(&["status"]),
    row("batch", "v1", "CronJob", "cronjobs", Namespaced, &["cj"])
        .in_all()
        .sub(&["status"]),
    row(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        Namespaced,
        &[],
    ),
    row(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        Namespaced,
        &[],
    ),
    row(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        Namespaced,
        &["ev"],
    ),
    row(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        Cluster,
        &["crd", "crds"],
    )
    .sub(&["status"]),
    row(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        Namespaced,
        &[],
    ),
    row(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        Namespaced,
        &[],
    ),
    row(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        Cluster,
        &[],
    ),
    row(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        Cluster,
        &[],
    ),
    row(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        Cluster,
        &["csr"],
    )
    .sub(&["status", "approval"]),
    row(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        Cluster,
        &["sc"],
    ),
    row(
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        "csidrivers",
        Cluster,
        &[],
    ),
    row("storage.k8s.io", "v1", "CSINode", "csinodes", Cluster, &[]),
    row(
        "storage.k8s.io",
        "v1",
        "CSIStorageCapacity",
        "csistoragecapacities",
        Namespaced,
        &[],
    ),
    row(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        Cluster,
        &[],
    )
    .sub(&["status"]),
    row(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        Cluster,
        &[],
    ),
    row(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        Cluster,
        &[],
    ),
    row(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        Namespaced,
        &["pdb"],
    )
    .sub(&["status"]),
    row(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        Namespaced,
        &["ing"],
    )
    .sub(&["status"]),
    row(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        Cluster,
        &[],
    ),
    row(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        Namespaced,
        &["netpol"],
    ),
    row(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        Cluster,
        &["pc"],
    ),
    row(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        Namespaced,
        &["hpa"],
    )
    .in_all()
    .sub(&["status"]),
    row(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        Cluster,
        &[],
    )
    .sub(&["status"]),
    row(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        Cluster,
        &[],
    )
    .verbs(&["create"]),
    row(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        Cluster,
        &[],
    )
    .verbs(&["create"]),
];

/// The built-in resources, in discovery order.
pub fn builtin() -> Vec<ResourceInfo> {
    BUILTIN
        .iter()
        .map(|r| ResourceInfo {
            group: r.group.into(),
            version: r.version.into(),
            kind: r.kind.into(),
            plural: r.plural.into(),
            singular: r.kind.to_lowercase(),
            scope: r.scope,
            short_names: r.short.iter().map(|s| s.to_string()).collect(),
            categories: if r.all { vec!["all".into()] } else { vec![] },
            verbs: r
                .verbs
                .unwrap_or(&CRUD_VERBS)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            subresources: r.sub.iter().map(|s| s.to_string()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_should_have_unique_group_version_plurals() {
        let all = builtin();
        let mut seen = std::collections::BTreeSet::new();
        for r in &all {
            assert!(seen.insert((r.group.clone(), r.version.clone(), r.plural.clone())));
        }
        let pods = all.iter().find(|r| r.plural == "pods").unwrap();
        assert_eq!(
            (pods.api_version(), pods.singular.as_str()),
            ("v1".into(), "pod")
        );
        assert!(pods.categories.contains(&"all".to_string()));
    }
}
