//! Per-kind checks after `metadata`, following each kind's upstream `Validate*` field by field:
//! ConfigMap and Secret data (keys, the 1 MiB cap, the keys each Secret type needs), the
//! workload controllers (counts that may not be negative, selectors and their match with the
//! pod template's labels, the template's own labels and annotations, restart policies), Jobs
//! and CronJobs; and on update, what may not change (immutable ConfigMaps and Secrets, a
//! Secret's type, selectors, a StatefulSet's spec beyond its mutable fields).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::validation::{
    BadValue, FieldError, is_config_map_key, is_qualified_name, is_valid_label_value,
};

use super::meta::{self, nonnegative};

/// The most bytes a ConfigMap's or a Secret's data may hold (upstream's `MaxSecretSize`).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;
/// The longest CronJob name (its Jobs' names append 11 characters).
const MAX_CRON_JOB_NAME: usize = 52;
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

/// The decoded length of a base64 value (a Secret's data, a ConfigMap's binaryData).
fn decoded_len(value: &str) -> usize {
    let length = value.len();
    if !length.is_multiple_of(4) {
        return length * 3 / 4;
    }
    let padding = value
        .bytes()
        .rev()
        .take_while(|b| *b == b'=')
        .count()
        .min(2);
    length / 4 * 3 - padding
}

fn entries<'a>(object: &'a Value, key: &str) -> impl Iterator<Item = (String, &'a str)> {
    object
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default()))
}

/// Checks the keys of the base64 map `field` (a ConfigMap's `binaryData`, a Secret's `data`)
/// and returns the size of its decoded values.
fn binary_keys(object: &Value, field: &str, errors: &mut Vec<FieldError>) -> usize {
    let mut total = 0;
    for (key, value) in entries(object, field) {
        for problem in is_config_map_key(&key) {
            errors.push(FieldError::invalid(
                format!("{field}[{key}]"),
                key.as_str(),
                problem,
            ));
        }
        total += decoded_len(value);
    }
    total
}

fn config_map(object: &Value, errors: &mut Vec<FieldError>) {
    let binary = object.get("binaryData").and_then(Value::as_object);
    let mut total = 0;
    for (key, value) in entries(object, "data") {
        let here = format!("data[{key}]");
        for problem in is_config_map_key(&key) {
            errors.push(FieldError::invalid(&here, key.as_str(), problem));
        }
        if binary.is_some_and(|b| b.contains_key(&key)) {
            errors.push(FieldError::invalid(
                &here,
                key.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += value.len();
    }
    total += binary_keys(object, "binaryData", errors);
    if total > MAX_DATA_SIZE {
        // Upstream names the whole object with an empty path, which prints as `[]`.
        errors.push(FieldError::too_long("[]", MAX_DATA_SIZE));
    }
}

fn secret(object: &Value, errors: &mut Vec<FieldError>) {
    let data = object.get("data").and_then(Value::as_object);
    let total = binary_keys(object, "data", errors);
    if total > MAX_DATA_SIZE {
        errors.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
    let required = |key: &str| FieldError::required(format!("data[{key}]"), "");
    match object.get("type").and_then(Value::as_str).unwrap_or("") {
        "kubernetes.io/service-account-token" => {
            let annotation = object
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if annotation.is_empty() {
                errors.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => errors.push(required(".dockercfg")),
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errors.push(required(".dockerconfigjson"));
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errors.push(required("username"));
            errors.push(required("password"));
        }
        "kubernetes.io/ssh-auth" => {
            let key = data
                .and_then(|d| d.get("ssh-privatekey"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if key.is_empty() {
                errors.push(required("ssh-privatekey"));
            }
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errors.push(required(key));
                }
            }
        }
        _ => {}
    }
}

/// Go's JSON of a `map[string]string` (sorted keys; `null` when absent).
fn map_json(value: Option<&Value>) -> BadValue {
    match value.and_then(Value::as_object) {
        Some(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            BadValue::Json(serde_json::to_string(&sorted).unwrap_or_default())
        }
        None => BadValue::Json("null".into()),
    }
}

/// `ValidateLabelSelector` of the `metav1.LabelSelector` at `path`.
pub fn label_selector(selector: &Value, path: &str, errors: &mut Vec<FieldError>) {
    meta::labels(
        selector.get("matchLabels"),
        &format!("{path}.matchLabels"),
        errors,
    );
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    for (i, expression) in expressions.into_iter().flatten().enumerate() {
        let here = format!("{path}.matchExpressions[{i}]");
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let operator = expression
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or("");
        match operator {
            "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
                format!("{here}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                errors.push(FieldError::forbidden(
                    format!("{here}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::invalid(
                format!("{here}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
        for problem in is_qualified_name(key) {
            errors.push(FieldError::invalid(format!("{here}.key"), key, problem));
        }
        for (j, value) in values.iter().enumerate() {
            for problem in is_valid_label_value(value) {
                errors.push(FieldError::invalid(
                    format!("{here}.values[{j}]"),
                    *value,
                    problem,
                ));
            }
        }
    }
}

/// A `metav1.LabelSelector` as upstream's `LabelSelectorAsSelector` reads it: `None` when it
/// cannot be converted, else whether it selects nothing (absent), everything (empty), or what
/// it matches.
enum Selection<'a> {
    Nothing,
    Everything,
    Terms(&'a Value),
}

fn selection(selector: Option<&Value>) -> Option<Selection<'_>> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Some(Selection::Nothing);
    };
    let labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    if labels.is_none_or(Map::is_empty) && expressions.is_none_or(Vec::is_empty) {
        return Some(Selection::Everything);
    }
    let mut problems = Vec::new();
    label_selector(selector, "", &mut problems);
    problems.is_empty().then_some(Selection::Terms(selector))
}

fn selects(selector: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let pairs_match = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| get(k) == v.as_str());
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    pairs_match
        && expressions.into_iter().flatten().all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                _ => get(key).is_none(),
            }
        })
}

/// The labels and annotations of a pod template (`ValidatePodTemplateSpec`'s own part: upstream
/// names them `<template>.labels` and `<template>.annotations`).
fn template_meta(template: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let metadata = template.and_then(|t| t.get("metadata"));
    let field = |key: &str| metadata.and_then(|m| m.get(key));
    meta::labels(field("labels"), &format!("{path}.labels"), errors);
    meta::annotations(field("annotations"), &format!("{path}.annotations"), errors);
}

/// The workload controllers of `apps/v1`: Deployment, ReplicaSet, StatefulSet, DaemonSet.
fn workload(kind: &str, object: &Value, errors: &mut Vec<FieldError>) {
    let Some(spec) = object.get("spec") else {
        return;
    };
    let at = |key: &str| spec.get(key);
    let noun = kind.to_lowercase();
    let daemon = kind == "DaemonSet";
    if !daemon {
        nonnegative(at("replicas"), "spec.replicas", errors);
    }
    nonnegative(at("minReadySeconds"), "spec.minReadySeconds", errors);
    if kind != "ReplicaSet" {
        nonnegative(
            at("revisionHistoryLimit"),
            "spec.revisionHistoryLimit",
            errors,
        );
    }
    let selector = at("selector").filter(|s| !s.is_null());
    match selector {
        None if !daemon => errors.push(FieldError::required("spec.selector", "")),
        None => {}
        Some(selector) => {
            label_selector(selector, "spec.selector", errors);
            if matches!(selection(Some(selector)), Some(Selection::Everything)) {
                // ReplicaSets share the Deployment's wording upstream.
                let owner = if kind == "ReplicaSet" {
                    "deployment"
                } else {
                    &noun
                };
                errors.push(FieldError::invalid(
                    "spec.selector",
                    BadValue::Json("{}".into()),
                    format!("empty selector is invalid for {owner}"),
                ));
            }
        }
    }
    let template = at("template");
    let labels = template.and_then(|t| t.pointer("/metadata/labels"));
    match selection(selector) {
        None if kind == "StatefulSet" => errors.push(FieldError::invalid(
            "spec.selector",
            BadValue::from(selector.unwrap_or(&Value::Null)),
            "",
        )),
        None if !daemon => errors.push(FieldError::invalid(
            "spec.selector",
            BadValue::from(selector.unwrap_or(&Value::Null)),
            "invalid label selector",
        )),
        None => {}
        Some(chosen) => {
            let matched = match chosen {
                Selection::Nothing => false,
                Selection::Everything => true,
                Selection::Terms(terms) => selects(terms, labels.and_then(Value::as_object)),
            };
            if !matched {
                errors.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    map_json(labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    let owner = if kind == "Deployment" {
        "ReplicaSet"
    } else {
        kind
    };
    replicated_template(template, owner, errors);
    match kind {
        "Deployment" => {
            if let Some(deadline) = at("progressDeadlineSeconds").and_then(Value::as_i64) {
                nonnegative(
                    at("progressDeadlineSeconds"),
                    "spec.progressDeadlineSeconds",
                    errors,
                );
                let min_ready = at("minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
                if deadline <= min_ready {
                    errors.push(FieldError::invalid(
                        "spec.progressDeadlineSeconds",
                        deadline,
                        "must be greater than minReadySeconds",
                    ));
                }
            }
        }
        "StatefulSet" => {
            nonnegative(
                spec.pointer("/updateStrategy/rollingUpdate/partition"),
                "spec.updateStrategy.rollingUpdate.partition",
                errors,
            );
            nonnegative(
                spec.pointer("/ordinals/start"),
                "spec.ordinals.start",
                errors,
            );
        }
        "DaemonSet" => nonnegative(at("templateGeneration"), "spec.templateGeneration", errors),
        _ => {}
    }
}

/// `ValidateReplicationControllerSpec` (its selector is a plain map).
fn replication_controller(object: &Value, errors: &mut Vec<FieldError>) {
    let Some(spec) = object.get("spec") else {
        return;
    };
    nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds", errors);
    nonnegative(spec.get("replicas"), "spec.replicas", errors);
    let template = spec.get("template");
    if let Some(selector) = spec.get("selector").and_then(Value::as_object)
        && !selector.is_empty()
        && template.is_some()
    {
        let labels = template.and_then(|t| t.pointer("/metadata/labels"));
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        if !selector.iter().all(|(k, v)| get(k) == v.as_str()) {
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels",
                map_json(labels),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if template.is_some() {
        replicated_template(template, "ReplicationController", errors);
    }
}

/// The pod template of a controller that keeps replicas running (`owner` names it in the
/// message): its metadata, `restartPolicy: Always`, and no `activeDeadlineSeconds`.
fn replicated_template(template: Option<&Value>, owner: &str, errors: &mut Vec<FieldError>) {
    template_meta(template, "spec.template", errors);
    let pod = template.and_then(|t| t.get("spec"));
    let restart = pod
        .and_then(|p| p.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if restart != "Always" {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["Always"],
        ));
    }
    if pod.and_then(|p| p.get("activeDeadlineSeconds")).is_some() {
        errors.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
}

/// `validateJobSpec` of the Job spec at `path`.
fn job_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for key in ["parallelism", "completions", "backoffLimit"] {
        nonnegative(spec.get(key), &format!("{path}.{key}"), errors);
    }
    let template = spec.get("template");
    template_meta(template, &format!("{path}.template"), errors);
    let restart = template
        .and_then(|t| t.pointer("/spec/restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(restart, "OnFailure" | "Never") {
        errors.push(FieldError::required(
            format!("{path}.template.spec.restartPolicy"),
            "valid values: \"OnFailure\", \"Never\"",
        ));
    }
}

fn cron_job(object: &Value, errors: &mut Vec<FieldError>) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > MAX_CRON_JOB_NAME {
        errors.push(FieldError::invalid(
            "metadata.name",
            name,
            format!("must be no more than {MAX_CRON_JOB_NAME} characters"),
        ));
    }
    let Some(spec) = object.get("spec") else {
        return;
    };
    if spec
        .get("schedule")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(FieldError::required("spec.schedule", ""));
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        nonnegative(spec.get(key), &format!("spec.{key}"), errors);
    }
    match spec
        .get("concurrencyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("")
    {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errors.push(FieldError::required("spec.concurrencyPolicy", "")),
        other => errors.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    if let Some(job) = spec.pointer("/jobTemplate/spec") {
        job_spec(job, "spec.jobTemplate.spec", errors);
        if let Some(selector) = job.get("selector").filter(|s| !s.is_null()) {
            errors.push(FieldError::invalid(
                "spec.jobTemplate.spec.selector",
                BadValue::from(selector),
                "`selector` will be auto-generated",
            ));
        }
    }
}

/// The per-kind checks of a create or an update.
pub fn check(info: &ResourceInfo, object: &Value, errors: &mut Vec<FieldError>) {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "ConfigMap") => config_map(object, errors),
        ("", "Secret") => secret(object, errors),
        ("", "ReplicationController") => replication_controller(object, errors),
        ("", "PodTemplate") => template_meta(object.get("template"), "template", errors),
        ("apps", kind @ ("Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")) => {
            workload(kind, object, errors);
        }
        ("batch", "Job") => {
            if let Some(spec) = object.get("spec") {
                job_spec(spec, "spec", errors);
            }
        }
        ("batch", "CronJob") => cron_job(object, errors),
        _ => {}
    }
}

/// What an update may not change.
pub fn check_update(info: &ResourceInfo, new: &Value, old: &Value, errors: &mut Vec<FieldError>) {
    let field = |object: &Value, key: &str| object.get(key).cloned().unwrap_or(Value::Null);
    let immutable = |key: &str, errors: &mut Vec<FieldError>| {
        if field(new, key) != field(old, key) {
            errors.push(FieldError::forbidden(key, IMMUTABLE_SET));
        }
    };
    let selector_changed = || new.pointer("/spec/selector") != old.pointer("/spec/selector");
    let selector_error = || {
        FieldError::invalid(
            "spec.selector",
            BadValue::from(new.pointer("/spec/selector").unwrap_or(&Value::Null)),
            "field is immutable",
        )
    };
    match (info.group.as_str(), info.kind.as_str()) {
        ("", kind @ ("ConfigMap" | "Secret")) => {
            if kind == "Secret" && field(new, "type") != field(old, "type") {
                errors.push(FieldError::invalid(
                    "type",
                    BadValue::from(&field(new, "type")),
                    "field is immutable",
                ));
            }
            if old.get("immutable") == Some(&Value::Bool(true)) {
                if new.get("immutable") != Some(&Value::Bool(true)) {
                    errors.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
                }
                immutable("data", errors);
                if kind == "ConfigMap" {
                    immutable("binaryData", errors);
                }
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") if selector_changed() => {
            errors.push(selector_error());
        }
        ("apps", "StatefulSet") => {
            let mutable = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            let rest = |object: &Value| -> Map<String, Value> {
                object
                    .get("spec")
                    .and_then(Value::as_object)
                    .map(|spec| {
                        spec.iter()
                            .filter(|(k, _)| !mutable.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if rest(new) != rest(old) {
                errors.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::builtin_info as info;
    use serde_json::json;

    fn errors(plural: &str, object: Value) -> Vec<String> {
        let mut errors = Vec::new();
        check(&info(plural), &object, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    fn deployment(spec: Value) -> Value {
        let mut base = json!({"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}});
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        json!({"metadata": {"name": "web"}, "spec": base})
    }

    #[test]
    fn config_map_data_keys_and_size_should_be_checked() {
        assert_eq!(
            errors(
                "configmaps",
                json!({"data": {"a/b": "x", "ok": "y"}, "binaryData": {"ok": "eQ=="}})
            ),
            vec![
                "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                "data[ok]: Invalid value: \"ok\": duplicate of key present in binaryData",
            ]
        );
        let big = "x".repeat(MAX_DATA_SIZE + 1);
        assert_eq!(
            errors("configmaps", json!({"data": {"k": big}})),
            vec!["[]: Too long: may not be more than 1048576 bytes"]
        );
        assert!(
            errors(
                "configmaps",
                json!({"data": {"k": "x".repeat(MAX_DATA_SIZE)}})
            )
            .is_empty()
        );
    }

    #[test]
    fn secret_data_over_1_mib_should_be_too_long() {
        // 1 MiB + 3 bytes, in base64.
        let encoded = "QUJD".repeat(MAX_DATA_SIZE / 3 + 1);
        assert_eq!(
            errors("secrets", json!({"type": "Opaque", "data": {"k": encoded}})),
            vec!["data: Too long: may not be more than 1048576 bytes"]
        );
        assert_eq!(decoded_len("QUI="), 2);
        assert_eq!(
            errors(
                "secrets",
                json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}})
            ),
            vec!["data[tls.key]: Required value"]
        );
        assert_eq!(
            errors("secrets", json!({"type": "Opaque", "data": {"..x": ""}})),
            vec!["data[..x]: Invalid value: \"..x\": must not start with '..'"]
        );
    }

    #[test]
    fn negative_replicas_should_be_rejected_on_every_workload_kind() {
        for plural in ["deployments", "replicasets", "statefulsets"] {
            assert_eq!(
                errors(plural, deployment(json!({"replicas": -1}))),
                vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
                "{plural}"
            );
        }
        assert_eq!(
            errors("replicationcontrollers", json!({"spec": {"replicas": -2}})),
            vec!["spec.replicas: Invalid value: -2: must be greater than or equal to 0"]
        );
        assert_eq!(
            errors(
                "jobs",
                json!({"spec": {"parallelism": -1, "template": {"spec": {"restartPolicy": "Never"}}}})
            ),
            vec!["spec.parallelism: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn workload_selectors_should_match_their_templates() {
        let mismatch = deployment(json!({"selector": {"matchLabels": {"app": "other"}}}));
        assert_eq!(
            errors("deployments", mismatch),
            vec![
                "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
        let missing = deployment(json!({"selector": null}));
        assert_eq!(
            errors("deployments", missing),
            vec![
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
        let empty = deployment(json!({"selector": {}}));
        assert_eq!(
            errors("replicasets", empty),
            vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
        );
        let bad_expression = deployment(
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
        );
        assert_eq!(
            errors("statefulsets", bad_expression),
            vec![
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector: Invalid value: {\"matchExpressions\":[{\"key\":\"app\",\"operator\":\"In\"}]}"
            ]
        );
        let expression = deployment(
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}}),
        );
        assert!(errors("daemonsets", expression).is_empty());
    }

    #[test]
    fn nested_template_labels_and_policies_should_be_checked() {
        let mut object = deployment(json!({}));
        object["spec"]["template"]["metadata"]["labels"]["bad key"] = json!("x");
        object["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let found = errors("deployments", object);
        assert!(
            found[0].starts_with(
                "spec.template.labels: Invalid value: \"bad key\": name part must consist"
            ),
            "{found:?}"
        );
        assert_eq!(
            found[1],
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        );
        assert_eq!(
            errors(
                "jobs",
                json!({"spec": {"template": {"spec": {"restartPolicy": "Always"}}}})
            ),
            vec![
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
            ]
        );
        let cron = json!({"metadata": {"name": "c".repeat(53)}, "spec": {"concurrencyPolicy": "Allow",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}}});
        assert_eq!(
            errors("cronjobs", cron),
            vec![
                format!(
                    "metadata.name: Invalid value: \"{}\": must be no more than 52 characters",
                    "c".repeat(53)
                ),
                "spec.schedule: Required value".to_string(),
            ]
        );
    }

    #[test]
    fn immutable_fields_should_refuse_changes() {
        let mut errors = Vec::new();
        let old = json!({"immutable": true, "data": {"a": "1"}, "type": "Opaque"});
        let new = json!({"immutable": true, "data": {"a": "2"}, "type": "kubernetes.io/tls"});
        check_update(&info("secrets"), &new, &old, &mut errors);
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                "type: Invalid value: \"kubernetes.io/tls\": field is immutable",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let mut errors = Vec::new();
        let old = deployment(json!({}));
        let new = deployment(json!({"selector": {"matchLabels": {"app": "x"}}}));
        check_update(&info("deployments"), &new, &old, &mut errors);
        assert_eq!(
            errors[0].to_string(),
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"x\"}}: field is immutable"
        );
        let mut errors = Vec::new();
        let new = deployment(json!({"serviceName": "other", "replicas": 3}));
        check_update(&info("statefulsets"), &new, &old, &mut errors);
        assert_eq!(errors.len(), 1);
    }
}
