//! The core group's strategies: Pods, Services, Namespaces, Secrets, ReplicationControllers.

use serde_json::{Map, Value, json};

use super::defaulting::{
    default_tolerations, object_at, object_at_map, pod_spec, set_default, template,
};
use super::{GENERIC, Strategy};

/// The strategy of pods.
pub(super) const POD: Strategy = Strategy {
    defaults: pod_defaults,
    grace_period: pod_grace_period,
    ..GENERIC
};

/// Upstream's `CheckGracefulDelete` for pods: the requested grace period, else the pod's
/// `terminationGracePeriodSeconds` (30 s by default); 0 for a pod no node runs (not bound yet)
/// or one that has finished.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    requested
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds")?.as_i64())
        .unwrap_or(30)
        .max(0)
}

/// A pod's defaults, with its service account and default tolerations.
fn pod_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        pod_spec(spec);
        let account = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        set_default(spec, "serviceAccountName", json!(account));
        set_default(spec, "serviceAccount", json!(account));
        default_tolerations(spec);
    }
    let class = qos_class(object.get("spec"));
    if let Some(status) = object_at(object, "status") {
        set_default(status, "phase", json!("Pending"));
        set_default(status, "qosClass", json!(class));
    }
}

/// A pod's QoS class (upstream's `ComputePodQOS`, over cpu and memory): BestEffort without any
/// request or limit, Guaranteed when every container limits both and requests (defaulting to
/// the limits) equal them, Burstable otherwise.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|field| spec?.get(field)?.as_array())
        .flatten();
    let milli = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .and_then(|q| skiff_apimachinery::quantity::milli(q).ok())
            .filter(|m| *m > 0)
    };
    let (mut any, mut guaranteed, mut seen) = (false, true, false);
    for container in containers {
        seen = true;
        for resource in ["cpu", "memory"] {
            let limit = milli(container.pointer(&format!("/resources/limits/{resource}")));
            let request =
                milli(container.pointer(&format!("/resources/requests/{resource}"))).or(limit);
            any |= limit.is_some() || request.is_some();
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed && seen) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// The strategy of services.
pub(super) const SERVICE: Strategy = Strategy {
    defaults: service_defaults,
    ..GENERIC
};

/// A Service's defaults: type, session affinity, IP families, traffic policies, port protocols
/// and targets.
fn service_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let kind = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind == "NodePort" || kind == "LoadBalancer" {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if kind == "LoadBalancer" {
            set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
        }
        if spec.get("type") != Some(&json!("ExternalName")) {
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(port, "protocol", json!("TCP"));
                // 0 and "" are Go's zero values (a protobuf body carries them): unset.
                if matches!(port.get("targetPort"), Some(t) if *t == json!(0) || *t == json!("")) {
                    port.remove("targetPort");
                }
                if port.get("nodePort") == Some(&json!(0)) {
                    port.remove("nodePort");
                }
                let number = port.get("port").cloned().unwrap_or(Value::Null);
                set_default(port, "targetPort", number);
            }
        }
    }
    if let Some(status) = object_at(object, "status") {
        set_default(status, "loadBalancer", json!({}));
    }
}

/// The strategy of namespaces.
pub(super) const NAMESPACE: Strategy = Strategy {
    defaults: namespace_defaults,
    undeletable: &["default", "kube-system", "kube-public"],
    ..GENERIC
};

/// A namespace's name label, `kubernetes` finalizer and phase.
fn namespace_defaults(object: &mut Value) {
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(labels) = object
        .get_mut("metadata")
        .and_then(|m| object_at(m, "labels"))
    {
        labels.insert("kubernetes.io/metadata.name".into(), name);
    }
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = object_at(object, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

/// The strategy of secrets.
pub(super) const SECRET: Strategy = Strategy {
    defaults: secret_defaults,
    ..GENERIC
};

/// A Secret's type, its `stringData` merged into `data`, and `data` without line breaks.
fn secret_defaults(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        set_default(map, "type", json!("Opaque"));
        merge_string_data(map);
        // Go's base64 decoder skips line breaks; the stored form has none.
        if let Some(data) = map.get_mut("data").and_then(Value::as_object_mut) {
            for value in data.values_mut() {
                if let Value::String(text) = value
                    && text.contains(['\n', '\r'])
                {
                    text.retain(|c| c != '\n' && c != '\r');
                }
            }
        }
    }
}

/// A Secret's `stringData` is write-only: upstream merges it into `data` (base64, its keys
/// winning over `data`'s) on every write and never stores or returns it.
fn merge_string_data(secret: &mut Map<String, Value>) {
    use base64::Engine;
    let Some(string_data) = secret.remove("stringData") else {
        return;
    };
    let Value::Object(string_data) = string_data else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let Some(data) = object_at_map(secret, "data") else {
        return;
    };
    for (key, value) in string_data {
        let text = match value {
            Value::String(text) => text,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        data.insert(
            key,
            json!(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
}

/// The strategy of replication controllers.
pub(super) const REPLICATION_CONTROLLER: Strategy = Strategy {
    defaults: replica_defaults,
    orphans_by_default: true,
    ..GENERIC
};

/// One replica and a defaulted pod template (ReplicationControllers and ReplicaSets).
pub(super) fn replica_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "replicas", json!(1));
    }
    template(object);
}

#[cfg(test)]
mod qos_tests {
    use super::*;

    #[test]
    fn the_qos_class_should_follow_requests_and_limits() {
        let class = |spec: Value| qos_class(Some(&spec));
        assert_eq!(class(json!({"containers": [{"name": "c"}]})), "BestEffort");
        assert_eq!(
            class(
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
        assert_eq!(
            class(
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]})
            ),
            "Burstable"
        );
        assert_eq!(
            class(
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                {"name": "d"}]})
            ),
            "Burstable"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_defaults_should_match_upstreams() {
        let cases = [
            (
                POD.defaults as fn(&mut Value),
                json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
                "/spec/containers/0/imagePullPolicy",
                json!("Always"),
            ),
            (
                POD.defaults,
                json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}),
                "/spec/containers/0/imagePullPolicy",
                json!("IfNotPresent"),
            ),
            (
                POD.defaults,
                json!({"spec": {}}),
                "/spec/serviceAccountName",
                json!("default"),
            ),
            (
                SERVICE.defaults,
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/ports/0/targetPort",
                json!(80),
            ),
            (
                NAMESPACE.defaults,
                json!({"metadata": {"name": "web"}}),
                "/metadata/labels/kubernetes.io~1metadata.name",
                json!("web"),
            ),
            (
                SECRET.defaults,
                json!({"stringData": {"a": "x"}, "data": {"b": "eQ==\n"}}),
                "/data",
                json!({"a": "eA==", "b": "eQ=="}),
            ),
            (
                REPLICATION_CONTROLLER.defaults,
                json!({"spec": {}}),
                "/spec/replicas",
                json!(1),
            ),
        ];
        for (defaults, mut object, pointer, want) in cases {
            defaults(&mut object);
            assert_eq!(object.pointer(pointer), Some(&want), "{object}");
        }
    }

    #[test]
    fn string_data_should_never_be_stored() {
        let mut secret = json!({"stringData": {}});
        (SECRET.defaults)(&mut secret);
        assert!(secret.get("stringData").is_none(), "{secret}");
    }
}
