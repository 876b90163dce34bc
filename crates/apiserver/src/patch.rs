//! Applying PATCH bodies: JSON patch (RFC 6902) and merge patch (RFC 7386) through the
//! json-patch crate, and Kubernetes strategic merge patch, which no crate implements. Strategic
//! merge patch walks the object alongside its type's schema (`schemas`) so that each list merges
//! as the list-semantics table says (containers by `name`, a container's ports by
//! `containerPort`, a Service's by `port`, conditions by `type`, finalizers as a set); other
//! lists are replaced. The directives `$patch`, `$retainKeys`, `$setElementOrder/...` and
//! `$deleteFromPrimitiveList/...` are honoured. As upstream: a JSON patch has at most 10,000
//! operations (more is a 413), and custom resources, which have no list semantics to merge by,
//! take no strategic merge patch (a 415 naming the types they take).

use serde_json::{Map, Value};
use skiff_apimachinery::ApiError;

use crate::body::PatchType;
use crate::schemas;

/// The most operations a JSON patch may carry (upstream's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The patch types a custom resource takes, as upstream's 415 lists them.
pub const CUSTOM_RESOURCE_PATCH_TYPES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// Upstream's answer to a patch type that `custom` (a custom resource) does not take: a
/// strategic merge patch needs a built-in type's list semantics.
pub fn check_type(kind: PatchType, custom: bool) -> Result<(), ApiError> {
    if custom && kind == PatchType::Strategic {
        return Err(ApiError::UnsupportedMediaType(
            CUSTOM_RESOURCE_PATCH_TYPES.into(),
        ));
    }
    Ok(())
}

/// Applies `patch` of type `kind` to `target`, an object of schema `schema` (e.g.
/// `io.k8s.api.core.v1.Pod`; `None` when it has no built-in type: a custom resource, which
/// refuses a strategic merge patch with 415, or an `autoscaling/v1` Scale, whose scalar fields
/// merge either way).
pub fn apply(
    kind: PatchType,
    target: &mut Value,
    patch: &Value,
    schema: Option<&str>,
) -> Result<(), ApiError> {
    match kind {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::RequestEntityTooLarge(format!(
                    "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                    operations.0.len()
                )));
            }
            json_patch::patch(target, &operations).map_err(|e| {
                ApiError::BadRequest(format!("the JSON patch could not be applied: {e}"))
            })
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be an object".into(),
                ));
            }
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchType::Strategic => {
            let scale = target.get("apiVersion").and_then(Value::as_str) == Some("autoscaling/v1")
                && target.get("kind").and_then(Value::as_str) == Some("Scale");
            check_type(kind, schema.is_none() && !scale)?;
            let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else {
                return Err(ApiError::BadRequest(
                    "a strategic merge patch must be an object".into(),
                ));
            };
            merge_map(target, patch, schema);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::BadRequest(
            "an apply patch is not supported here".into(),
        )),
    }
}

/// How list `field` of an object of schema `parent` merges: its merge key (`None` for a set of
/// scalars), and the schema of its items; `None` when the list is replaced.
fn list_merge(
    parent: Option<&str>,
    field: &str,
) -> Option<(Option<&'static str>, Option<&'static str>)> {
    let property = schemas::property(parent?, field)?;
    let semantics = property.semantics?;
    semantics
        .patch_strategy
        .filter(|s| s.starts_with("merge"))
        .map(|_| (semantics.merge_key, property.definition))
}

fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(without_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>, schema: Option<&str>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        if let Value::Object(replacement) = without_directives(&Value::Object(patch.clone())) {
            *target = replacement;
        }
        return;
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub) if sub.get("$patch").and_then(Value::as_str) == Some("delete") => {
                target.remove(key);
            }
            Value::Object(sub) => match target.get_mut(key) {
                Some(Value::Object(existing)) => {
                    let child = schema.and_then(|s| schemas::field_schema(s, key));
                    merge_map(existing, sub, child);
                }
                _ => {
                    target.insert(key.clone(), without_directives(value));
                }
            },
            Value::Array(items) => {
                let merged = match target.remove(key) {
                    Some(Value::Array(existing)) => {
                        merge_list(list_merge(schema, key), existing, items)
                    }
                    _ => match without_directives(value) {
                        Value::Array(items) => items,
                        _ => Vec::new(),
                    },
                };
                target.insert(key.clone(), Value::Array(merged));
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Value::Array(remove)) = (target.get_mut(field), value)
        {
            list.retain(|v| !remove.contains(v));
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Value::Array(order)) = (target.get_mut(field), value)
        {
            reorder(
                list_merge(schema, field).and_then(|(key, _)| key),
                list,
                order,
            );
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
}

fn merge_list(
    how: Option<(Option<&str>, Option<&str>)>,
    mut existing: Vec<Value>,
    patch: &[Value],
) -> Vec<Value> {
    let replaced = || match without_directives(&Value::Array(patch.to_vec())) {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return replaced();
    }
    let Some((merge_key, item_schema)) = how else {
        return replaced();
    };
    let Some(key) = merge_key else {
        // A set of scalars: union.
        for item in patch {
            if !existing.contains(item) {
                existing.push(item.clone());
            }
        }
        return existing;
    };
    for item in patch {
        let id = item.get(key);
        let position = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let (Value::Object(target), Value::Object(patch)) = (&mut existing[i], item) {
                    merge_map(target, patch, item_schema);
                }
            }
            (None, false) => existing.push(without_directives(item)),
        }
    }
    existing
}

fn reorder(key: Option<&str>, list: &mut [Value], order: &[Value]) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        let wanted = id(v);
        order
            .iter()
            .position(|o| id(o) == wanted)
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value) -> Value {
        let mut target = target;
        apply(
            PatchType::Strategic,
            &mut target,
            &patch,
            Some("io.k8s.api.core.v1.Pod"),
        )
        .unwrap();
        target
    }

    #[test]
    fn strategic_patch_should_merge_containers_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:1"}]}});
        let patched = smp(
            pod,
            json!({"spec": {"containers": [{"name": "a", "image": "a:2"}]}}),
        );
        assert_eq!(patched["spec"]["containers"][0]["image"], "a:2");
        assert_eq!(
            patched["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(patched["spec"]["containers"][1]["name"], "b");
    }

    #[test]
    fn strategic_patch_should_honour_directives() {
        let target = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "tolerations": [{"key": "k"}]}});
        let patched = smp(
            target,
            json!({
                "metadata": {"labels": {"x": null}, "$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {
                    "containers": [{"name": "a", "$patch": "delete"}, {"name": "c"}],
                    "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}],
                    "tolerations": [{"key": "new"}]
                }
            }),
        );
        assert_eq!(patched["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            patched["spec"]["containers"],
            json!([{"name": "c"}, {"name": "b"}])
        );
        assert_eq!(
            patched["spec"]["tolerations"],
            json!([{"key": "new"}]),
            "no merge key: replaced"
        );
    }

    #[test]
    fn strategic_patch_should_merge_ports_by_their_parents_key() {
        let pod = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}});
        let patched = smp(
            pod,
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}]}]}}),
        );
        assert_eq!(
            patched["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 81}])
        );
    }

    #[test]
    fn strategic_patch_should_replace_and_retain_keys() {
        let target = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patched = smp(
            target,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
        let replaced = smp(
            json!({"data": {"a": "1"}}),
            json!({"data": {"$patch": "replace", "b": "2"}}),
        );
        assert_eq!(replaced["data"], json!({"b": "2"}));
    }

    #[test]
    fn json_and_merge_patches_should_apply() {
        let mut target = json!({"a": {"b": 1}, "l": [1, 2]});
        apply(
            PatchType::Json,
            &mut target,
            &json!([{"op": "add", "path": "/l/-", "value": 3}]),
            None,
        )
        .unwrap();
        apply(
            PatchType::Merge,
            &mut target,
            &json!({"a": {"b": null, "c": 2}}),
            None,
        )
        .unwrap();
        assert_eq!(target, json!({"a": {"c": 2}, "l": [1, 2, 3]}));
        let failing = apply(
            PatchType::Json,
            &mut target,
            &json!([{"op": "remove", "path": "/nope"}]),
            None,
        );
        assert!(failing.is_err());
    }

    #[test]
    fn json_patch_of_more_than_10000_operations_should_be_a_413() {
        let op = json!({"op": "add", "path": "/a", "value": 1});
        let mut target = json!({});
        let at_limit = Value::Array(vec![op.clone(); MAX_JSON_PATCH_OPERATIONS]);
        apply(PatchType::Json, &mut target, &at_limit, None).unwrap();
        let over = Value::Array(vec![op; MAX_JSON_PATCH_OPERATIONS + 1]);
        let error = apply(PatchType::Json, &mut target, &over, None).unwrap_err();
        assert_eq!(error.code(), 413);
        assert_eq!(error.reason(), "RequestEntityTooLarge");
        assert_eq!(
            error.to_string(),
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn strategic_merge_patch_on_a_custom_resource_should_be_a_415() {
        let mut target = json!({"spec": {"a": 1}});
        let error = apply(
            PatchType::Strategic,
            &mut target,
            &json!({"spec": {"a": 2}}),
            None,
        )
        .unwrap_err();
        assert_eq!(error.code(), 415);
        assert_eq!(
            error.to_string(),
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        );
        let mut scale =
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1}});
        apply(
            PatchType::Strategic,
            &mut scale,
            &json!({"spec": {"replicas": 3}}),
            None,
        )
        .unwrap();
        assert_eq!(scale["spec"]["replicas"], 3);
        assert!(check_type(PatchType::Merge, true).is_ok());
        assert!(check_type(PatchType::Strategic, false).is_ok());
    }
}
