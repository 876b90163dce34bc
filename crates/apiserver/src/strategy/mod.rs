//! Each resource's own rules, as upstream's registry keeps a strategy per resource: its
//! defaults, where its objects come from (componentstatuses are computed), how a create is
//! answered (reviews are computed, never stored), which objects can
//! never be deleted, and how deletion propagates by default. The handlers look the strategy up
//! once per request ([`of`]) instead of matching kind names; a new kind adds a module here.
//! Pure: no I/O (allocations that need the store are `crate::allocation`).

mod apps;
mod batch;
mod core;
mod defaulting;

use serde_json::Value;
use skiff_apimachinery::ResourceInfo;

/// How a create of the resource is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Stored, as any object.
    Store,
    /// A SelfSubjectReview: the caller's identity, never stored.
    SelfSubjectReview,
    /// A TokenReview: the token's identity, never stored.
    TokenReview,
}

/// Where a resource's objects come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// The store.
    Stored,
    /// Computed per request: the deprecated `componentstatuses`.
    ComponentStatuses,
}

/// One resource's rules.
pub struct Strategy {
    /// Where its objects come from.
    pub serving: Serving,
    /// Fills in upstream's defaults (every create and every replacement).
    pub defaults: fn(&mut Value),
    /// How a create is answered.
    pub create: Create,
    /// Names of objects that can never be deleted.
    pub undeletable: &'static [&'static str],
    /// Whether a delete that names no propagation policy orphans the dependents (upstream
    /// keeps this for core/v1 ReplicationControllers and batch/v1 Jobs).
    pub orphans_by_default: bool,
    /// The grace period a delete gives an object (`requested`: the DeleteOptions'): 0 deletes
    /// at once; more keeps the object with a `deletionTimestamp` that far ahead until someone
    /// (a node agent) deletes it for good. Only pods are deleted gracefully.
    pub grace_period: fn(object: &Value, requested: Option<i64>) -> i64,
}

fn no_defaults(_: &mut Value) {}

fn no_grace(_: &Value, _: Option<i64>) -> i64 {
    0
}

/// The rules of a resource with none of its own.
const GENERIC: Strategy = Strategy {
    serving: Serving::Stored,
    defaults: no_defaults,
    create: Create::Store,
    undeletable: &[],
    orphans_by_default: false,
    grace_period: no_grace,
};

const SELF_SUBJECT_REVIEW: Strategy = Strategy {
    create: Create::SelfSubjectReview,
    ..GENERIC
};

const TOKEN_REVIEW: Strategy = Strategy {
    create: Create::TokenReview,
    ..GENERIC
};

const COMPONENT_STATUS: Strategy = Strategy {
    serving: Serving::ComponentStatuses,
    ..GENERIC
};

/// The strategy of `info`'s resource.
pub fn of(info: &ResourceInfo) -> &'static Strategy {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => &core::POD,
        ("", "Service") => &core::SERVICE,
        ("", "Namespace") => &core::NAMESPACE,
        ("", "Secret") => &core::SECRET,
        ("", "ReplicationController") => &core::REPLICATION_CONTROLLER,
        ("", "ComponentStatus") => &COMPONENT_STATUS,
        ("apps", "ReplicaSet") => &apps::REPLICA_SET,
        ("apps", "Deployment") => &apps::DEPLOYMENT,
        ("apps", "StatefulSet") => &apps::STATEFUL_SET,
        ("apps", "DaemonSet") => &apps::DAEMON_SET,
        ("batch", "Job") => &batch::JOB,
        ("batch", "CronJob") => &batch::CRON_JOB,
        ("authentication.k8s.io", "SelfSubjectReview") => &SELF_SUBJECT_REVIEW,
        ("authentication.k8s.io", "TokenReview") => &TOKEN_REVIEW,
        _ => &GENERIC,
    }
}

/// Fills in `info`'s defaults on `object`: the kind's own, and a `status` (empty but for
/// the counts upstream always writes) for a built-in
/// kind that has one (upstream's status is a struct, never absent: a new Deployment reads
/// `status: {}`, and clients such as kr8s index it before any controller writes it).
pub fn default(info: &ResourceInfo, object: &mut Value) {
    (of(info).defaults)(object);
    let has_status = crate::schemas::root_name(&info.group, &info.kind)
        .is_some_and(|root| crate::schemas::property(&root, "status").is_some());
    if has_status
        && let Some(map) = object.as_object_mut()
        && let Some(status) = defaulting::object_at_map(map, "status")
    {
        for field in zero_status_fields(&info.group, &info.kind) {
            defaulting::set_default(status, field, serde_json::json!(0));
        }
    }
}

/// The status counts upstream's types serialize even at zero (no `omitempty`): a new
/// StatefulSet reads `availableReplicas: 0`, which clients wait on (kr8s's `wait` fails on a
/// missing field).
fn zero_status_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("apps", "StatefulSet") => &["replicas", "availableReplicas"],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => &["replicas"],
        ("apps", "DaemonSet") => &[
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
        ],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_apimachinery::resources::builtin;

    fn info(group: &str, kind: &str) -> ResourceInfo {
        builtin()
            .into_iter()
            .find(|r| r.group == group && r.kind == kind)
            .unwrap()
    }

    #[test]
    fn built_in_kinds_with_a_status_should_read_an_empty_one_before_any_controller_writes_it() {
        let mut deployment = serde_json::json!({"metadata": {"name": "d"}, "spec": {}});
        default(&info("apps", "Deployment"), &mut deployment);
        assert_eq!(deployment["status"], serde_json::json!({}));
        let mut set = serde_json::json!({"metadata": {"name": "s"}, "spec": {}});
        default(&info("apps", "StatefulSet"), &mut set);
        assert_eq!(
            set["status"],
            serde_json::json!({"replicas": 0, "availableReplicas": 0}),
            "what upstream serializes without omitempty"
        );
        let mut config = serde_json::json!({"metadata": {"name": "c"}, "data": {}});
        default(&info("", "ConfigMap"), &mut config);
        assert!(config.get("status").is_none(), "{config}");
        let mut custom_info = info("apps", "Deployment");
        custom_info.group = "example.com".into();
        let mut custom = serde_json::json!({"metadata": {"name": "x"}});
        default(&custom_info, &mut custom);
        assert!(
            custom.get("status").is_none(),
            "custom resources keep no status"
        );
    }

    #[test]
    fn each_kind_should_find_its_own_rules() {
        let cases = [
            ("", "Namespace", Create::Store, 3, false),
            ("", "ReplicationController", Create::Store, 0, true),
            ("batch", "Job", Create::Store, 0, true),
            ("apps", "Deployment", Create::Store, 0, false),
            ("", "ConfigMap", Create::Store, 0, false),
            (
                "authentication.k8s.io",
                "SelfSubjectReview",
                Create::SelfSubjectReview,
                0,
                false,
            ),
            (
                "authentication.k8s.io",
                "TokenReview",
                Create::TokenReview,
                0,
                false,
            ),
        ];
        for (group, kind, create, undeletable, orphans) in cases {
            let strategy = of(&info(group, kind));
            assert_eq!(strategy.create, create, "{kind}");
            assert_eq!(strategy.undeletable.len(), undeletable, "{kind}");
            assert_eq!(strategy.orphans_by_default, orphans, "{kind}");
        }
    }
}
