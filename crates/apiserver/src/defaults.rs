//! Defaulting, as upstream does it for the fields tools and controllers rely on (pod
//! restartPolicy, dnsPolicy, imagePullPolicy...; Service type, ports, targetPort; workload
//! replicas, strategies and history limits...), and Service ClusterIP allocation from the
//! service CIDR. An allocated IP is a key in the store, created with compare-and-swap, so two
//! Services can never get the same address.

use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};
use skiff_apimachinery::status::{Cause, Target};
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::StoreError;

use crate::state::ApiState;

/// The service CIDR: 10.43.0.0/16 (as k3s).
pub const SERVICE_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 0);
/// The `kubernetes` Service's address: the first in the service CIDR.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);

const IP_KEYS: &str = "/registry/skiff/serviceips/";

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
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

/// A rolling-update strategy defaulted field by field, as upstream does: `type` RollingUpdate,
/// then each unset `rollingUpdate` field (an empty `{}` strategy from a protobuf body included).
fn strategy(spec: &mut Map<String, Value>, key: &str, rolling: Value) {
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

fn object_at_map<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    if !map.get(key).is_some_and(Value::is_object) {
        map.insert(key.to_string(), json!({}));
    }
    map.get_mut(key)?.as_object_mut()
}

fn object_at<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
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

fn pod_spec(spec: &mut Map<String, Value>) {
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

fn template(object: &mut Value) {
    if let Some(spec) = object
        .pointer_mut("/spec/template")
        .and_then(|t| object_at(t, "spec"))
    {
        pod_spec(spec);
    }
}

/// The `NoExecute` tolerations upstream's DefaultTolerationSeconds admission adds to every pod:
/// 300 s on a not-ready or unreachable node.
fn default_tolerations(spec: &mut Map<String, Value>) {
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

/// Fills in upstream's defaults for `info`'s kind.
pub fn apply(info: &ResourceInfo, object: &mut Value) {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => {
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
            if let Some(status) = object_at(object, "status") {
                set_default(status, "phase", json!("Pending"));
                set_default(status, "qosClass", json!("BestEffort"));
            }
        }
        ("", "Service") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                if spec.get("type") != Some(&json!("ExternalName")) {
                    set_default(spec, "ipFamilies", json!(["IPv4"]));
                    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(port, "protocol", json!("TCP"));
                        // 0 and "" are Go's zero values (a protobuf body carries them): unset.
                        if matches!(port.get("targetPort"), Some(t) if *t == json!(0) || *t == json!(""))
                        {
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
        ("", "Namespace") => {
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
        ("", "Secret") => {
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
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "replicas", json!(1));
            }
            template(object);
        }
        ("apps", "Deployment") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                strategy(
                    spec,
                    "strategy",
                    json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
                );
            }
            template(object);
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                strategy(spec, "updateStrategy", json!({"partition": 0}));
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            template(object);
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                strategy(
                    spec,
                    "updateStrategy",
                    json!({"maxUnavailable": 1, "maxSurge": 0}),
                );
            }
            template(object);
        }
        ("batch", "Job") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "parallelism", json!(1));
                if spec.get("completions").is_none() && spec.get("parallelism") == Some(&json!(1)) {
                    spec.insert("completions".into(), json!(1));
                }
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
            }
            template(object);
        }
        ("batch", "CronJob") => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(spec) = object
                .pointer_mut("/spec/jobTemplate/spec/template")
                .and_then(|t| object_at(t, "spec"))
            {
                pod_spec(spec);
            }
        }
        _ => {}
    }
}

/// A service IP taken for an object being created (released again if the create fails).
pub struct Allocation(Option<Ipv4Addr>);

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_KEYS}{ip}")
}

/// Whether creating `object` takes pooled resources (a Service's ClusterIP).
pub fn allocates(info: &ResourceInfo, object: &Value) -> bool {
    info.kind == "Service" && info.group.is_empty() && wants_cluster_ip(object)
}

fn wants_cluster_ip(object: &Value) -> bool {
    let kind = object.pointer("/spec/type").and_then(Value::as_str);
    kind != Some("ExternalName")
        && object.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
}

/// Reserves a specific service IP.
pub async fn reserve(state: &ApiState, ip: Ipv4Addr, owner: &str) -> Result<bool, StoreError> {
    match state
        .store
        .create(&ip_key(ip), owner.as_bytes().to_vec().into())
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Allocates what a new object needs from shared pools: a Service's ClusterIP.
pub async fn allocate(
    state: &ApiState,
    info: &ResourceInfo,
    object: &mut Value,
    name: &str,
) -> Result<Allocation, ApiError> {
    if !allocates(info, object) {
        return Ok(Allocation(None));
    }
    let target = Target::new("", "services", name);
    let owner = format!(
        "{}/{name}",
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let requested = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match requested {
        Some(text) => {
            let invalid = |message: String| ApiError::Invalid {
                kind: "Service".into(),
                target: target.clone(),
                causes: vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message,
                    field: "spec.clusterIPs".into(),
                }],
            };
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                invalid(format!(
                    "Invalid value: \"{text}\": must be a valid IP address"
                ))
            })?;
            let [a, b, ..] = ip.octets();
            if [a, b] != [10, 43] {
                return Err(invalid(format!(
                    "Invalid value: \"{text}\": failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {SERVICE_NETWORK}/16"
                )));
            }
            if !reserve(state, ip, &owner)
                .await
                .map_err(|e| crate::storage::api_error(e, &target))?
            {
                return Err(invalid(format!(
                    "Invalid value: \"{text}\": failed to allocate IP {text}: provided IP is already allocated"
                )));
            }
            ip
        }
        None => {
            let mut chosen = None;
            for _ in 0..256 {
                let bytes = uuid::Uuid::new_v4().into_bytes();
                let host = u16::from_be_bytes([bytes[0], bytes[1]]);
                if host < 2 || host == u16::MAX {
                    continue;
                }
                let [c, d] = host.to_be_bytes();
                let ip = Ipv4Addr::new(10, 43, c, d);
                if reserve(state, ip, &owner)
                    .await
                    .map_err(|e| crate::storage::api_error(e, &target))?
                {
                    chosen = Some(ip);
                    break;
                }
            }
            chosen.ok_or_else(|| {
                ApiError::Internal("failed to allocate a service IP: the range is full".into())
            })?
        }
    };
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), json!(ip.to_string()));
        spec.insert("clusterIPs".into(), json!([ip.to_string()]));
    }
    Ok(Allocation(Some(ip)))
}

/// Gives back what [`allocate`] took, after a failed create.
pub async fn release(state: &ApiState, allocation: Allocation) {
    if let Some(ip) = allocation.0
        && let Err(error) = state.store.delete(&ip_key(ip), None).await
    {
        tracing::warn!(%ip, %error, "could not release a service IP");
    }
}

/// Gives back the pooled resources of a deleted object.
pub async fn release_for(state: &ApiState, object: &Value) {
    if object.get("kind").and_then(Value::as_str) != Some("Service")
        || object.get("apiVersion").and_then(Value::as_str) != Some("v1")
    {
        return;
    }
    let ip = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Ipv4Addr>().ok());
    if let Some(ip) = ip {
        release(state, Allocation(Some(ip))).await;
    }
}

/// Keeps allocated fields (a Service's ClusterIP) across updates that omit them.
pub fn keep_allocations(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if info.kind != "Service" || !info.group.is_empty() {
        return;
    }
    for field in ["clusterIP", "clusterIPs"] {
        if let (Some(value), Some(spec)) = (
            old.pointer(&format!("/spec/{field}")).cloned(),
            new.get_mut("spec").and_then(Value::as_object_mut),
        ) {
            spec.insert(field.into(), value);
        }
    }
}
