//! The apps group's strategies: Deployments, ReplicaSets, StatefulSets, DaemonSets.

use serde_json::{Value, json};

use super::core::replica_defaults;
use super::defaulting::{object_at, rolling_update, set_default, template};
use super::{GENERIC, Strategy};

/// The strategy of replica sets.
pub(super) const REPLICA_SET: Strategy = Strategy {
    defaults: replica_defaults,
    ..GENERIC
};

/// The strategy of deployments.
pub(super) const DEPLOYMENT: Strategy = Strategy {
    defaults: deployment_defaults,
    ..GENERIC
};

/// A Deployment's replicas, history, progress deadline and rolling update.
fn deployment_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        rolling_update(
            spec,
            "strategy",
            json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
        );
    }
    template(object);
}

/// The strategy of stateful sets.
pub(super) const STATEFUL_SET: Strategy = Strategy {
    defaults: stateful_set_defaults,
    ..GENERIC
};

/// A StatefulSet's replicas, pod management, update strategy and PVC retention.
fn stateful_set_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(spec, "revisionHistoryLimit", json!(10));
        rolling_update(spec, "updateStrategy", json!({"partition": 0}));
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
    }
    template(object);
}

/// The strategy of daemon sets.
pub(super) const DAEMON_SET: Strategy = Strategy {
    defaults: daemon_set_defaults,
    ..GENERIC
};

/// A DaemonSet's history and rolling update.
fn daemon_set_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "revisionHistoryLimit", json!(10));
        rolling_update(
            spec,
            "updateStrategy",
            json!({"maxUnavailable": 1, "maxSurge": 0}),
        );
    }
    template(object);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_defaults_should_match_upstreams() {
        let cases = [
            (
                DEPLOYMENT.defaults as fn(&mut Value),
                "/spec/strategy/rollingUpdate/maxSurge",
                json!("25%"),
            ),
            (
                DEPLOYMENT.defaults,
                "/spec/progressDeadlineSeconds",
                json!(600),
            ),
            (
                STATEFUL_SET.defaults,
                "/spec/podManagementPolicy",
                json!("OrderedReady"),
            ),
            (
                DAEMON_SET.defaults,
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                json!(1),
            ),
            (REPLICA_SET.defaults, "/spec/replicas", json!(1)),
            (
                DEPLOYMENT.defaults,
                "/spec/template/spec/restartPolicy",
                json!("Always"),
            ),
        ];
        for (defaults, pointer, want) in cases {
            let mut object = json!({"spec": {"template": {"spec": {"containers": []}}}});
            defaults(&mut object);
            assert_eq!(object.pointer(pointer), Some(&want), "{object}");
        }
    }
}
