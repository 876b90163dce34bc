//! Validation beyond shape: what upstream rejects with 422 even though the JSON types fit
//! (k8s-openapi fills missing required strings with ""), and pruning of unknown fields, which
//! upstream never stores for built-in kinds. `validate` runs on every create and update:
//! `metadata` as upstream's `ValidateObjectMeta` checks it (`meta`), then each kind's own rules
//! (`kinds`) and the pod spec's required fields; `validate_update` adds what an update may not
//! change. The field errors and string formats themselves are upstream's, in
//! `skiff_apimachinery::validation`.

mod kinds;
mod meta;

use serde_json::Value;
use skiff_apimachinery::status::Target;
use skiff_apimachinery::validation::{FieldError, invalid, is_dns1123_label};
use skiff_apimachinery::{ApiError, ResourceInfo};

fn pod_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for list in ["containers", "initContainers"] {
        for (i, container) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let here = format!("{path}.{list}[{i}]");
            match container
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                None => errors.push(FieldError::required(format!("{here}.name"), "")),
                Some(name) => {
                    for problem in is_dns1123_label(name) {
                        errors.push(FieldError::invalid(format!("{here}.name"), name, problem));
                    }
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError::required(format!("{here}.image"), ""));
            }
        }
    }
}

/// Whether `info` is one of Kubernetes' own kinds (not a custom resource).
fn builtin(info: &ResourceInfo) -> bool {
    crate::schemas::root_name(&info.group, &info.kind).is_some()
}

/// Kinds that are never stored (reviews) or never written (component statuses): no metadata
/// rules apply.
fn exempt(info: &ResourceInfo) -> bool {
    info.kind.ends_with("Review") || info.kind == "ComponentStatus"
}

/// The 422 for `errors` about `object`, named as the rest of the write path names its kind.
fn refuse(info: &ResourceInfo, object: &Value, errors: &[FieldError]) -> ApiError {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = if builtin(info) {
        info.kind.clone()
    } else {
        format!("{}.{}", info.kind, info.group)
    };
    invalid(&kind, Target::new(&info.group, &info.plural, name), errors)
}

/// Checks what the types cannot, on every create and update: `metadata` (name by the kind's
/// rule, generateName, namespace, labels, annotations, owner references, finalizers,
/// managedFields), the kind's own fields (ConfigMap and Secret data, workload counts and
/// selectors, Jobs, CronJobs) and the required pod-spec fields of pods and templates.
pub fn validate(info: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    if exempt(info) {
        return Ok(());
    }
    let mut errors = Vec::new();
    let builtin = builtin(info);
    if let Some(metadata) = object.get("metadata").and_then(Value::as_object) {
        let rule = meta::name_rule(info, builtin);
        let core = builtin
            && !matches!(
                info.group.as_str(),
                "apiextensions.k8s.io" | "apiregistration.k8s.io"
            );
        meta::object_meta(info, metadata, rule, core, &mut errors);
    }
    kinds::check(info, object, &mut errors);
    let template = match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => Some(("/spec", "spec")),
        ("", "PodTemplate") => Some(("/template/spec", "template.spec")),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some(("/spec/template/spec", "spec.template.spec")),
        ("batch", "CronJob") => Some((
            "/spec/jobTemplate/spec/template/spec",
            "spec.jobTemplate.spec.template.spec",
        )),
        _ => None,
    };
    if let Some((pointer, path)) = template
        && let Some(spec) = object.pointer(pointer)
    {
        pod_spec(spec, path, &mut errors);
    }
    if errors.is_empty() {
        return Ok(());
    }
    tracing::debug!(kind = %info.kind, errors = errors.len(), "object refused by validation");
    Err(refuse(info, object, &errors))
}

/// Checks what an update (`new` over the stored `old`) may not change: an immutable ConfigMap's
/// or Secret's data, a Secret's type, the selector of a Deployment, ReplicaSet or DaemonSet, a
/// StatefulSet's spec beyond replicas, ordinals, template, updateStrategy,
/// persistentVolumeClaimRetentionPolicy and minReadySeconds. Call it after `validate`.
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    kinds::check_update(info, new, old, &mut errors);
    if errors.is_empty() {
        return Ok(());
    }
    Err(refuse(info, new, &errors))
}

/// Upstream's `ValidateObjectMetaUpdate` for `metadata.uid`: an update (any verb or
/// subresource) may leave the uid out, and then keeps the stored one, but may not name another:
/// a writer holding an object that was deleted and created again under its name is refused
/// with a 422 instead of overwriting the new object. Call it before the stored fields are
/// copied into `new`.
pub fn check_uid(info: &ResourceInfo, new: &Value, old: &Value) -> Result<(), ApiError> {
    let uid = |object: &Value| {
        object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    };
    match (uid(new), uid(old)) {
        (Some(given), Some(stored)) if given != stored => Err(refuse(
            info,
            new,
            &[FieldError::invalid(
                "metadata.uid",
                given.as_str(),
                "field is immutable",
            )],
        )),
        _ => Ok(()),
    }
}

/// Upstream's `checkName` for an update or a patch: the object in the body (or the patched
/// object) must carry the name of the URL. A missing or empty name is a 400 as upstream words
/// it, not a name taken from the URL.
pub fn check_url_name(object: &Value, name: &str) -> Result<(), ApiError> {
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == name => Ok(()),
        None | Some("") => Err(ApiError::BadRequest(format!(
            "the name of the object ({name} based on URL) was undeterminable: name must be provided"
        ))),
        Some(n) => Err(ApiError::BadRequest(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
    }
}

enum Step {
    Key(String),
    Index(usize),
}

/// Splits `spec.containers[0].name1` into steps.
fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Step::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Step::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Step::Key(rest.to_string()));
        }
    }
    out
}

fn remove_at(value: &mut Value, steps: &[Step], last: &str) {
    match steps.split_first() {
        None => {
            if let Some(map) = value.as_object_mut() {
                map.remove(last);
            }
        }
        Some((Step::Key(key), rest)) => {
            if let Some(child) = value.get_mut(key.as_str()) {
                remove_at(child, rest, last);
            }
        }
        Some((Step::Index(index), rest)) => {
            if let Some(child) = value.get_mut(*index) {
                remove_at(child, rest, last);
            }
        }
    }
}

/// Removes the fields at `paths` (as reported by the shape check) from `object`.
pub fn prune(object: &mut Value, paths: &[String]) {
    for path in paths {
        let mut steps = steps(path);
        if let Some(Step::Key(last)) = steps.pop() {
            remove_at(object, &steps, &last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::builtin_info as info;
    use serde_json::json;

    #[test]
    fn prune_should_remove_nested_unknown_fields() {
        let mut object = json!({"spec": {"containers": [{"name": "a", "name1": "x"}]}, "extra": 1});
        prune(
            &mut object,
            &["spec.containers[0].name1".into(), "extra".into()],
        );
        assert_eq!(object, json!({"spec": {"containers": [{"name": "a"}]}}));
    }

    #[test]
    fn a_bad_label_should_be_a_422_with_upstreams_cause() {
        let object =
            json!({"metadata": {"name": "c", "namespace": "default", "labels": {"-bad": "x"}}});
        let Err(ApiError::Invalid {
            kind,
            target,
            causes,
        }) = validate(&info("configmaps"), &object)
        else {
            panic!("not refused");
        };
        assert_eq!((kind.as_str(), target.name.as_str()), ("ConfigMap", "c"));
        assert_eq!(causes[0].field, "metadata.labels");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"-bad\": name part must consist")
        );
    }

    #[test]
    fn pods_should_need_containers_with_valid_names() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "Bad_Name", "image": ""}]}});
        let error = validate(&info("pods"), &pod).unwrap_err().to_string();
        assert!(error.starts_with("Pod \"p\" is invalid: [spec.containers[0].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"), "{error}");
        assert!(
            error.ends_with("spec.containers[0].image: Required value]"),
            "{error}"
        );
        assert!(validate(&info("tokenreviews"), &json!({})).is_ok());
    }

    #[test]
    fn an_update_without_the_urls_name_should_be_refused_as_upstream_does() {
        assert!(check_url_name(&json!({"metadata": {"name": "a"}}), "a").is_ok());
        assert_eq!(
            check_url_name(&json!({"metadata": {}}), "a")
                .unwrap_err()
                .to_string(),
            "the name of the object (a based on URL) was undeterminable: name must be provided"
        );
        assert_eq!(
            check_url_name(&json!({"metadata": {"name": "b"}}), "a")
                .unwrap_err()
                .to_string(),
            "the name of the object (b) does not match the name on the URL (a)"
        );
    }

    #[test]
    fn an_immutable_config_map_should_refuse_new_data() {
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let new = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
        let error = validate_update(&info("configmaps"), &new, &old).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ConfigMap \"c\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
        );
        assert!(validate_update(&info("configmaps"), &old, &old).is_ok());
    }
}
