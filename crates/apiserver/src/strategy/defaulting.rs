//! The defaulting steps the kinds' strategies share: set-if-unset, objects created on the way,
//! pod specs and their containers (restartPolicy, dnsPolicy, imagePullPolicy, ...), pod
//! templates, rolling-update strategies and upstream's default tolerations.

use serde_json::{Map, Value, json};

pub(super) fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// A rolling-update strategy defaulted field by field, as upstream does: `type` RollingUpdate,
/// then each unset `rollingUpdate` field (an empty `{}` strategy from a protobuf body included).
pub(super) fn rolling_update(spec: &mut Map<String, Value>, key: &str, rolling: Value) {
    let Some(strategy) = object_at_map(spec, key) else {
        return;
    };
    set_default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") != Some(&json!("RollingUpdate")) {
        return;
    }
    let Some(update) = object_at_map(strategy, "rollingUpdate") else {
        return;
    };
    if let Value::Object(fields) = rolling {
        for (field, value) in fields {
            set_default(update, &field, value);
        }
    }
}

pub(super) fn object_at_map<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    if !map.get(key).is_some_and(Value::is_object) {
        map.insert(key.to_string(), json!({}));
    }
    map.get_mut(key)?.as_object_mut()
}

pub(super) fn object_at<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    object_at_map(value.as_object_mut()?, key)
}

fn pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

fn container(c: &mut Value) {
    let Some(map) = c.as_object_mut() else { return };
    let image = map
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(map, "imagePullPolicy", json!(pull_policy(&image)));
    set_default(map, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(map, "terminationMessagePolicy", json!("File"));
    set_default(map, "resources", json!({}));
    if let Some(ports) = map.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
            if port.get("hostPort") == Some(&json!(0)) {
                port.remove("hostPort");
            }
        }
    }
}

pub(super) fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
            items.iter_mut().for_each(container);
        }
    }
}

pub(super) fn template(object: &mut Value) {
    if let Some(spec) = object
        .pointer_mut("/spec/template")
        .and_then(|t| object_at(t, "spec"))
    {
        pod_spec(spec);
    }
}

/// The `NoExecute` tolerations upstream's DefaultTolerationSeconds admission adds to every pod:
/// 300 s on a not-ready or unreachable node.
pub(super) fn default_tolerations(spec: &mut Map<String, Value>) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = list
            .iter()
            .any(|t| t["key"] == key && t.get("effect").is_none_or(|e| e == "NoExecute"));
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}
