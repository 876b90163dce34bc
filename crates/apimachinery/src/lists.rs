//! List semantics of the built-in types, which k8s-openapi's schemas do not carry: for each
//! list field (by the OpenAPI schema name of its parent and the field name), how it merges in a
//! strategic merge patch (`patchStrategy`, `patchMergeKey`) and in server-side apply
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`). Written from the Kubernetes API
//! reference; a list not named here is atomic (replaced as a whole).

/// How a list merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListSemantics {
    /// `atomic`, `set` or `map` (server-side apply).
    pub list_type: &'static str,
    /// The keys of a `map` list.
    pub map_keys: &'static [&'static str],
    /// `merge`, `merge,retainKeys` or `None` (strategic merge patch replaces the list).
    pub patch_strategy: Option<&'static str>,
    /// The key a `merge` list of objects merges by (none for a list of scalars).
    pub merge_key: Option<&'static str>,
}

const fn map(keys: &'static [&'static str], merge_key: &'static str) -> ListSemantics {
    ListSemantics {
        list_type: "map",
        map_keys: keys,
        patch_strategy: Some("merge"),
        merge_key: Some(merge_key),
    }
}

const fn map_retain(keys: &'static [&'static str], merge_key: &'static str) -> ListSemantics {
    ListSemantics {
        list_type: "map",
        map_keys: keys,
        patch_strategy: Some("merge,retainKeys"),
        merge_key: Some(merge_key),
    }
}

/// A set of scalars that strategic merge patch merges.
const MERGED_SET: ListSemantics = ListSemantics {
    list_type: "set",
    map_keys: &[],
    patch_strategy: Some("merge"),
    merge_key: None,
};

/// A list that server-side apply replaces whole but strategic merge patch merges by key.
const fn atomic_merged(merge_key: &'static str) -> ListSemantics {
    ListSemantics {
        list_type: "atomic",
        map_keys: &[],
        patch_strategy: Some("merge"),
        merge_key: Some(merge_key),
    }
}

const CONDITIONS: ListSemantics = map(&["type"], "type");

const CONTAINER: &[(&str, ListSemantics)] = &[
    (
        "ports",
        map(&["containerPort", "protocol"], "containerPort"),
    ),
    ("env", map(&["name"], "name")),
    ("volumeMounts", map(&["mountPath"], "mountPath")),
    ("volumeDevices", map(&["devicePath"], "devicePath")),
];

const TABLE: &[(&str, &[(&str, ListSemantics)])] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        &[
            ("finalizers", MERGED_SET),
            ("ownerReferences", map(&["uid"], "uid")),
        ],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        &[
            ("volumes", map_retain(&["name"], "name")),
            ("initContainers", map(&["name"], "name")),
            ("containers", map(&["name"], "name")),
            ("ephemeralContainers", map(&["name"], "name")),
            ("imagePullSecrets", map(&["name"], "name")),
            ("hostAliases", map(&["ip"], "ip")),
            (
                "topologySpreadConstraints",
                map(&["topologyKey", "whenUnsatisfiable"], "topologyKey"),
            ),
            ("resourceClaims", map_retain(&["name"], "name")),
            ("schedulingGates", map(&["name"], "name")),
        ],
    ),
    ("io.k8s.api.core.v1.Container", CONTAINER),
    ("io.k8s.api.core.v1.EphemeralContainer", CONTAINER),
    (
        "io.k8s.api.core.v1.PodStatus",
        &[
            ("conditions", CONDITIONS),
            ("podIPs", map(&["ip"], "ip")),
            ("hostIPs", atomic_merged("ip")),
        ],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        &[("ports", map(&["port", "protocol"], "port"))],
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        &[
            ("conditions", CONDITIONS),
            ("addresses", atomic_merged("type")),
        ],
    ),
    ("io.k8s.api.core.v1.NodeSpec", &[("podCIDRs", MERGED_SET)]),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        &[("conditions", atomic_merged("type"))],
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        &[("conditions", CONDITIONS)],
    ),
    (
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus",
        &[("conditions", CONDITIONS)],
    ),
];

/// The semantics of list field `field` in objects of schema `schema`, if it is not atomic.
pub fn list_semantics(schema: &str, field: &str) -> Option<ListSemantics> {
    TABLE
        .iter()
        .find(|(name, _)| *name == schema)
        .and_then(|(_, fields)| fields.iter().find(|(f, _)| *f == field))
        .map(|(_, semantics)| *semantics)
}

/// Every (schema, field) the table names (for tests that check they exist).
pub fn fields() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE
        .iter()
        .flat_map(|(name, fields)| fields.iter().map(move |(field, _)| (*name, *field)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_should_merge_by_their_parents_key() {
        assert_eq!(
            list_semantics("io.k8s.api.core.v1.Container", "ports")
                .unwrap()
                .merge_key,
            Some("containerPort")
        );
        assert_eq!(
            list_semantics("io.k8s.api.core.v1.ServiceSpec", "ports")
                .unwrap()
                .merge_key,
            Some("port")
        );
        assert_eq!(
            list_semantics("io.k8s.api.core.v1.PodSpec", "tolerations"),
            None
        );
    }
}
