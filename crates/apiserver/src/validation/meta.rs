//! `metadata` as upstream's `ValidateObjectMeta` checks it on every create and update: the name
//! (by the kind's rule) and generateName, the namespace, generation, labels, annotations (keys
//! and their 256 KiB total), owner references, finalizers and managedFields.

use serde_json::{Map, Value};
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::validation::{
    BadValue, FieldError, field_manager, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain,
    is_qualified_name, is_valid_label_value, is_valid_path_segment_name,
};

/// The most bytes annotations may take, keys and values together.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Upstream's message for a negative count.
pub const IS_NEGATIVE: &str = "must be greater than or equal to 0";
/// The finalizers core kinds may use without a `/`.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// How a kind's names are checked (its `ValidateNameFunc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain: most kinds and every custom resource.
    Subdomain,
    /// A DNS-1123 label: namespaces, StatefulSets.
    Label,
    /// A DNS-1035 label (a letter first): Services.
    Dns1035,
    /// Only a safe path segment: RBAC objects (`system:...`), and kinds whose rule skiff does
    /// not know for sure.
    PathSegment,
    /// Checked elsewhere (APIService names are `version.group`).
    Elsewhere,
}

/// The name rule of `info`'s kind; `builtin` says whether the kind is one of Kubernetes' own.
pub fn name_rule(info: &ResourceInfo, builtin: bool) -> NameRule {
    if !builtin {
        return NameRule::Subdomain;
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") | ("apps", "StatefulSet") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _)
        | ("", "PersistentVolume" | "PersistentVolumeClaim")
        | ("certificates.k8s.io", _)
        | ("storage.k8s.io", "CSIDriver") => NameRule::PathSegment,
        ("apiregistration.k8s.io", _) => NameRule::Elsewhere,
        _ => NameRule::Subdomain,
    }
}

/// Upstream's `maskTrailingDash`: a generateName may end in `-`, since a suffix follows.
fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(rest) if name.len() > 1 => {
            let mut masked = rest.to_string();
            masked.pop();
            masked.push('a');
            masked
        }
        _ => name.to_string(),
    }
}

/// What is wrong with `name` under `rule`; `prefix` for a generateName.
pub fn name_problems(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let masked = || {
        if prefix {
            mask_trailing_dash(name)
        } else {
            name.to_string()
        }
    };
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(&masked()),
        NameRule::Label => is_dns1123_label(&masked()),
        NameRule::Dns1035 => is_dns1035_label(&masked()),
        NameRule::PathSegment => is_valid_path_segment_name(name, prefix),
        NameRule::Elsewhere => Vec::new(),
    }
}

/// `ValidateNonnegativeField`.
pub fn nonnegative(value: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) {
    if let Some(n) = value.and_then(Value::as_i64)
        && n < 0
    {
        errors.push(FieldError::invalid(field, n, IS_NEGATIVE));
    }
}

fn strings(value: Option<&Value>) -> impl Iterator<Item = (&String, &str)> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
}

/// `ValidateLabels` of the map at `field` (e.g. `metadata.labels`, `spec.selector.matchLabels`).
pub fn labels(value: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) {
    for (key, label) in strings(value) {
        for problem in is_qualified_name(key) {
            errors.push(FieldError::invalid(field, key.as_str(), problem));
        }
        for problem in is_valid_label_value(label) {
            errors.push(FieldError::invalid(field, label, problem));
        }
    }
}

/// `ValidateAnnotations`: keys are qualified names (of any case), and all of them with their
/// values take at most 256 KiB.
pub fn annotations(value: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) {
    let mut total = 0;
    for (key, annotation) in strings(value) {
        for problem in is_qualified_name(&key.to_lowercase()) {
            errors.push(FieldError::invalid(field, key.as_str(), problem));
        }
        total += key.len() + annotation.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

fn owner_references(list: &[Value], errors: &mut Vec<FieldError>) {
    let field = "metadata.ownerReferences";
    let mut first_controller: Option<String> = None;
    for reference in list {
        let text = |key: &str| reference.get(key).and_then(Value::as_str).unwrap_or("");
        let api_version = text("apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() {
            errors.push(FieldError::invalid(
                format!("{field}.apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        for key in ["kind", "name", "uid"] {
            if text(key).is_empty() {
                errors.push(FieldError::invalid(
                    format!("{field}.{key}"),
                    text(key),
                    "must not be empty",
                ));
            }
        }
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{}/{}", text("kind"), text("name"));
            match &first_controller {
                Some(first) => errors.push(FieldError::invalid(
                    field,
                    BadValue::Json(Value::Array(list.to_vec()).to_string()),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

fn finalizers(list: &[Value], core: bool, errors: &mut Vec<FieldError>) {
    let field = "metadata.finalizers";
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for name in &names {
        for problem in is_qualified_name(name) {
            errors.push(FieldError::invalid(field, *name, problem));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        errors.push(FieldError::invalid(
            field,
            BadValue::Json(Value::Array(list.to_vec()).to_string()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    if !core {
        return;
    }
    // The core API's wrapper checks each name again, and wants a `/` in non-standard ones.
    for (i, name) in names.iter().enumerate() {
        let here = format!("{field}[{i}]");
        for problem in is_qualified_name(name) {
            errors.push(FieldError::invalid(&here, *name, problem));
        }
        if !name.contains('/') && !STANDARD_FINALIZERS.contains(name) {
            errors.push(FieldError::invalid(
                &here,
                *name,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

fn managed_fields(list: &[Value], errors: &mut Vec<FieldError>) {
    for (i, entry) in list.iter().enumerate() {
        let here = format!("metadata.managedFields[{i}]");
        let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or("");
        if !matches!(text("operation"), "Apply" | "Update") {
            errors.push(FieldError::invalid(
                format!("{here}.operation"),
                text("operation"),
                "must be `Apply` or `Update`",
            ));
        }
        if !matches!(text("fieldsType"), "" | "FieldsV1") {
            errors.push(FieldError::invalid(
                format!("{here}.fieldsType"),
                text("fieldsType"),
                "must be `FieldsV1`",
            ));
        }
        errors.extend(field_manager(text("manager"), &format!("{here}.manager")));
        if text("subresource").len() > 256 {
            errors.push(FieldError::too_long(format!("{here}.subresource"), 256));
        }
    }
}

/// What upstream checks of an object's `metadata` (`ValidateObjectMeta`, with the core API's
/// finalizer rule when `core`).
pub fn object_meta(
    info: &ResourceInfo,
    meta: &Map<String, Value>,
    rule: NameRule,
    core: bool,
    errors: &mut Vec<FieldError>,
) {
    let text = |key: &str| meta.get(key).and_then(Value::as_str).unwrap_or("");
    let generate_name = text("generateName");
    if !generate_name.is_empty() {
        for problem in name_problems(rule, generate_name, true) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                problem,
            ));
        }
    }
    let name = text("name");
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for problem in name_problems(rule, name, false) {
            errors.push(FieldError::invalid("metadata.name", name, problem));
        }
    }
    let namespace = text("namespace");
    if info.namespaced() {
        if namespace.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            for problem in is_dns1123_label(namespace) {
                errors.push(FieldError::invalid(
                    "metadata.namespace",
                    namespace,
                    problem,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    nonnegative(meta.get("generation"), "metadata.generation", errors);
    labels(meta.get("labels"), "metadata.labels", errors);
    annotations(meta.get("annotations"), "metadata.annotations", errors);
    let list = |key: &str| meta.get(key).and_then(Value::as_array).map(Vec::as_slice);
    owner_references(list("ownerReferences").unwrap_or_default(), errors);
    finalizers(list("finalizers").unwrap_or_default(), core, errors);
    managed_fields(list("managedFields").unwrap_or_default(), errors);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::builtin_info as info;
    use serde_json::json;

    fn check(plural: &str, meta: Value) -> Vec<String> {
        let info = info(plural);
        let mut errors = Vec::new();
        let rule = name_rule(&info, true);
        object_meta(&info, meta.as_object().unwrap(), rule, true, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn label_keys_and_values_should_be_checked_as_upstream() {
        let errors = check(
            "configmaps",
            json!({"name": "a", "namespace": "default", "labels": {"-bad": "ok", "k": "-v"}}),
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .starts_with("metadata.labels: Invalid value: \"-bad\": name part must consist")
        );
        assert!(
            errors[1].starts_with("metadata.labels: Invalid value: \"-v\": a valid label must be")
        );
    }

    #[test]
    fn annotations_over_256_kib_should_be_too_long() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errors = check(
            "configmaps",
            json!({"name": "a", "namespace": "default", "annotations": {"a": big, "Upper.Case/X": "1", "a b": "1"}}),
        );
        assert_eq!(
            errors.len(),
            2,
            "case does not matter in annotation keys: {errors:?}"
        );
        assert!(
            errors[0].starts_with(
                "metadata.annotations: Invalid value: \"a b\": name part must consist"
            )
        );
        assert_eq!(
            errors[1],
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn names_should_follow_each_kinds_rule() {
        assert!(
            check("services", json!({"name": "1web", "namespace": "d"}))[0]
                .starts_with("metadata.name: Invalid value: \"1web\": a DNS-1035 label")
        );
        assert!(check("namespaces", json!({"name": "a.b"}))[0].ends_with("must not contain dots"));
        assert!(check("clusterroles", json!({"name": "system:controller:x"})).is_empty());
        assert!(
            check(
                "replicationcontrollers",
                json!({"name": "a.b", "namespace": "d"})
            )
            .is_empty()
        );
        assert_eq!(
            check("configmaps", json!({"namespace": "d"})),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        assert!(
            check(
                "configmaps",
                json!({"name": "ab", "generateName": "web-", "namespace": "d"})
            )
            .is_empty()
        );
        assert!(
            check(
                "configmaps",
                json!({"name": "ab", "generateName": "Web-", "namespace": "d"})
            )[0]
            .starts_with("metadata.generateName: Invalid value: \"Web-\"")
        );
        assert!(
            check("configmaps", json!({"name": "a", "namespace": "Bad_ns"}))[0].starts_with(
                "metadata.namespace: Invalid value: \"Bad_ns\": a lowercase RFC 1123 label"
            )
        );
    }

    #[test]
    fn finalizers_owner_references_and_managed_fields_should_be_checked() {
        let errors = check(
            "configmaps",
            json!({"name": "a", "namespace": "d", "finalizers": ["hold", "example.com/ok"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": ""}],
                "managedFields": [{"manager": "m", "operation": "Patch"}]}),
        );
        assert_eq!(
            errors,
            vec![
                "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty",
                "metadata.finalizers[0]: Invalid value: \"hold\": name is neither a standard finalizer name nor is it fully qualified",
                "metadata.managedFields[0].operation: Invalid value: \"Patch\": must be `Apply` or `Update`",
            ]
        );
        assert!(
            check(
                "configmaps",
                json!({"name": "a", "namespace": "d", "generation": -1})
            )[0]
            .starts_with(
                "metadata.generation: Invalid value: -1: must be greater than or equal to 0"
            )
        );
    }
}
