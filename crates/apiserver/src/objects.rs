//! The rules every object follows on the way into the store: names, namespaces, uid,
//! creationTimestamp, generateName, generation (bumped on spec changes only), and which parts
//! the main resource and the `status` subresource may change.

use serde_json::{Map, Value, json};
use skiff_apimachinery::status::{Cause, Target};
use skiff_apimachinery::{ApiError, ResourceInfo};

/// Kinds whose names must be DNS-1123 labels (no dots, at most 63 characters).
const LABEL_NAMED: [&str; 3] = ["Namespace", "Service", "ReplicationController"];

fn invalid(
    info: &ResourceInfo,
    name: &str,
    field: &str,
    reason: &str,
    message: String,
) -> ApiError {
    ApiError::Invalid {
        kind: info.kind.clone(),
        target: Target::new(&info.group, &info.plural, name),
        causes: vec![Cause {
            reason: reason.into(),
            message,
            field: field.into(),
        }],
    }
}

/// Why `name` is not a valid DNS-1123 subdomain (or label), if it is not.
pub fn name_problem(name: &str, label_only: bool) -> Option<String> {
    let max = if label_only { 63 } else { 253 };
    if name.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok_chars = name
        .chars()
        .all(|c| alnum(c) || c == '-' || (c == '.' && !label_only));
    let ends_ok = name.chars().next().is_some_and(alnum) && name.chars().last().is_some_and(alnum);
    if ok_chars && ends_ok && !name.contains("..") {
        return None;
    }
    Some(if label_only {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()
    })
}

/// The `metadata` map of an object (created if missing).
pub fn meta_mut(object: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))
}

/// A string field of `metadata`.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Checks `apiVersion` and `kind` against the endpoint, filling them in when absent.
pub fn check_type(info: &ResourceInfo, object: &mut Value) -> Result<(), ApiError> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON object".into()))?;
    let expected = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )));
        }
        Some(_) => {}
        None => {
            map.insert("apiVersion".into(), Value::String(expected));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != info.kind => Err(ApiError::BadRequest(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            info.kind
        ))),
        Some(_) => Ok(()),
        None => {
            map.insert("kind".into(), Value::String(info.kind.clone()));
            Ok(())
        }
    }
}

/// Reconciles the namespace in the body with the one in the path.
pub fn check_namespace(
    info: &ResourceInfo,
    object: &mut Value,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let meta = meta_mut(object)?;
    if !info.namespaced() {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(namespace) = namespace else {
        return Err(ApiError::BadRequest(
            "the namespace of the object must be given in the request path".into(),
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
            Ok(())
        }
    }
}

/// Fills in what a new object gets from the server. Returns the object's name.
pub fn prepare_create(
    info: &ResourceInfo,
    object: &mut Value,
    now: &str,
    uid: &str,
    random_suffix: &str,
) -> Result<String, ApiError> {
    let meta = meta_mut(object)?;
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        let Some(base) = meta.get("generateName").and_then(Value::as_str) else {
            return Err(invalid(
                info,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required".into(),
            ));
        };
        let base: String = base.chars().take(58).collect();
        name = format!("{base}{random_suffix}");
        meta.insert("name".into(), Value::String(name.clone()));
    }
    let label_only = LABEL_NAMED.contains(&info.kind.as_str());
    // APIServices are named `{version}.{group}`: `v1.` for the core group.
    let checked = match (info.kind.as_str(), name.strip_suffix('.')) {
        ("APIService", Some(version)) => version,
        _ => name.as_str(),
    };
    if let Some(problem) = name_problem(checked, label_only) {
        return Err(invalid(
            info,
            &name,
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": {problem}"),
        ));
    }
    meta.insert("uid".into(), Value::String(uid.to_string()));
    meta.insert("creationTimestamp".into(), Value::String(now.to_string()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    let has_spec = object.get("spec").is_some();
    if has_spec && let Ok(meta) = meta_mut(object) {
        meta.insert("generation".into(), json!(1));
    }
    // A new object's status is the server's to write, for resources that have a status
    // subresource.
    if info.has_subresource("status")
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    Ok(name)
}

/// Everything but metadata and status: what `generation` tracks.
fn desired_state(object: &Value) -> Map<String, Value> {
    object
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a write through `subresource` changes nothing but the object's `status`: the rest
/// is kept as stored. A CSR's approval is written like its status.
pub fn writes_only_status(subresource: &str) -> bool {
    matches!(subresource, "status" | "approval")
}

/// Makes `new` the stored object `old` with `new`'s status (none if it has none) and `new`'s
/// resourceVersion (the stored one if it gives none): a status write changes nothing else. The
/// fields `new` holds as stored are moved over, not copied from `old` (a patch's `new` is a
/// copy of `old` already); the result has `old`'s field order.
fn only_status(new: &mut Value, old: &Value) -> Result<(), ApiError> {
    let resource_version = meta_str(new, "resourceVersion").map(str::to_string);
    let Some(stored) = old.as_object() else {
        *new = old.clone();
        return Ok(());
    };
    let mut given = match std::mem::take(new) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut out = Map::new();
    for (key, value) in stored {
        let value = match (key.as_str(), given.remove(key)) {
            ("status", Some(status)) => status,
            ("status", None) => continue,
            ("metadata", Some(meta)) if same_but_version(&meta, value) => meta,
            (_, Some(same)) if same == *value => same,
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    if let Some(status) = given
        .remove("status")
        .filter(|_| !stored.contains_key("status"))
    {
        out.insert("status".into(), status);
    }
    *new = Value::Object(out);
    let stored_version = || meta_str(old, "resourceVersion").map(str::to_string);
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        match resource_version.or_else(stored_version) {
            Some(rv) => meta.insert("resourceVersion".into(), Value::String(rv)),
            None => meta.remove("resourceVersion"),
        };
    } else if let Some(rv) = resource_version {
        meta_mut(new)?.insert("resourceVersion".into(), Value::String(rv));
    }
    Ok(())
}

/// Whether two metadata say the same, resourceVersion aside.
fn same_but_version(a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => same_fields(a, b, |_, x, y| x == y),
        _ => a == b,
    }
}

/// Whether two maps have the same keys (a `resourceVersion` aside) and `same` holds for each
/// key's two values.
pub fn same_fields(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let keys = |m: &Map<String, Value>| m.keys().filter(|k| *k != "resourceVersion").count();
    keys(a) == keys(b)
        && a.iter().all(|(key, value)| match b.get(key) {
            Some(other) => same(key, value, other),
            None => key == "resourceVersion",
        })
}

/// Merges an update into the stored object's server-owned fields. `subresource` is `None` for
/// the main resource, or the subresource written (`status`, `approval`, `ephemeralcontainers`).
pub fn prepare_update(
    info: &ResourceInfo,
    new: &mut Value,
    old: &Value,
    subresource: Option<&str>,
) -> Result<(), ApiError> {
    if subresource == Some("ephemeralcontainers") {
        // Only the ephemeral containers change.
        let containers = new.pointer("/spec/ephemeralContainers").cloned();
        let resource_version = meta_str(new, "resourceVersion").map(str::to_string);
        *new = old.clone();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            match containers {
                Some(c) => spec.insert("ephemeralContainers".into(), c),
                None => spec.remove("ephemeralContainers"),
            };
        }
        if let Some(rv) = resource_version {
            meta_mut(new)?.insert("resourceVersion".into(), Value::String(rv));
        }
        return Ok(());
    }
    if subresource.is_some_and(writes_only_status) {
        return only_status(new, old);
    }
    if info.has_subresource("status")
        && let Some(map) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let generation = old_meta.get("generation").and_then(Value::as_i64);
    let spec_changed = desired_state(new) != desired_state(old);
    let meta = meta_mut(new)?;
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    ] {
        match old_meta.get(field) {
            Some(value) => meta.insert(field.into(), value.clone()),
            None => meta.remove(field),
        };
    }
    match generation {
        Some(g) => {
            meta.insert(
                "generation".into(),
                json!(if spec_changed { g + 1 } else { g }),
            );
        }
        None => {
            meta.remove("generation");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::builtin_info as info;

    #[test]
    fn names_should_follow_dns_1123() {
        assert!(name_problem("web-1.example", false).is_none());
        assert!(name_problem("web.1", true).is_some());
        assert!(name_problem("Web", false).is_some());
        assert!(name_problem("-web", false).is_some());
        assert!(name_problem("", false).is_some());
    }

    #[test]
    fn create_should_fill_server_fields_and_generate_names() {
        let mut object = json!({"metadata": {"generateName": "web-"}, "spec": {"replicas": 1}});
        let name = prepare_create(&info("deployments"), &mut object, "T", "U", "abcde").unwrap();
        assert_eq!(name, "web-abcde");
        assert_eq!(object["metadata"]["uid"], "U");
        assert_eq!(object["metadata"]["generation"], 1);
    }

    #[test]
    fn a_status_write_should_change_only_the_status_and_keep_the_stored_order() {
        let pods = info("pods");
        let old = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "a", "resourceVersion": "7", "labels": {"x": "1"}},
            "spec": {"nodeName": "n"}, "status": {"phase": "Pending"}});
        // A patch's copy: resourceVersion dropped, spec and labels changed, status written.
        let mut patched = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"x": "2"}},
            "spec": {"nodeName": "other"}, "status": {"phase": "Running"}, "extra": 1});
        prepare_update(&pods, &mut patched, &old, Some("status")).unwrap();
        let mut expected = old.clone();
        expected["status"] = json!({"phase": "Running"});
        assert_eq!(patched, expected);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&patched), keys(&old));
        // A resourceVersion given is kept (the write's precondition); no status removes it.
        let mut given = json!({"metadata": {"name": "a", "resourceVersion": "5"}});
        prepare_update(&pods, &mut given, &old, Some("status")).unwrap();
        let mut expected = old.clone();
        expected["metadata"]["resourceVersion"] = json!("5");
        expected.as_object_mut().unwrap().remove("status");
        assert_eq!(given, expected);
        // A status where the stored object had none goes last.
        let bare = json!({"metadata": {"name": "a"}, "spec": {}});
        let mut first = json!({"status": {"phase": "Running"}, "metadata": {"name": "a"}});
        prepare_update(&pods, &mut first, &bare, Some("status")).unwrap();
        assert_eq!(keys(&first), ["metadata", "spec", "status"]);
        assert_eq!(first["metadata"], json!({"name": "a"}));
    }

    #[test]
    fn update_should_bump_generation_on_spec_changes_only() {
        let deployments = info("deployments");
        let old = json!({"metadata": {"name": "a", "uid": "U", "generation": 3}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut labels_only = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_update(&deployments, &mut labels_only, &old, None).unwrap();
        assert_eq!(labels_only["metadata"]["generation"], 3);
        assert_eq!(
            labels_only["status"]["replicas"], 1,
            "main resource ignores status"
        );
        let mut scaled = json!({"metadata": {"name": "a"}, "spec": {"replicas": 2}});
        prepare_update(&deployments, &mut scaled, &old, None).unwrap();
        assert_eq!(scaled["metadata"]["generation"], 4);
        assert_eq!(scaled["metadata"]["uid"], "U");
        let mut status =
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 5}, "status": {"replicas": 2}});
        prepare_update(&deployments, &mut status, &old, Some("status")).unwrap();
        assert_eq!(
            (
                status["spec"]["replicas"].clone(),
                status["status"]["replicas"].clone()
            ),
            (json!(1), json!(2))
        );
    }
}
