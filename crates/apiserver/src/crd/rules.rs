//! `x-kubernetes-validations`: the CEL rules of a CRD's schema, compiled once per served version
//! (kube-cel) and evaluated on every create and update of a custom object, with `oldSelf` bound
//! to the stored object on updates so transition rules work. Failures become causes of a 422
//! Invalid, worded as upstream: `spec: Invalid value: "object": <message>`. A CRD whose rules do
//! not compile is rejected when it is written.

use std::sync::Arc;

use kube_cel::{CompiledSchema, Validator, compile_schema};
use serde_json::Value;
use skiff_apimachinery::status::Cause;

/// The compiled rules of one schema.
#[derive(Debug)]
pub struct Rules(CompiledSchema);

/// Whether a schema declares any rule.
fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.contains_key("x-kubernetes-validations") || map.values().any(has_rules)
        }
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

impl Rules {
    /// Compiles the rules of `schema`; `None` when it has none.
    pub fn compile(schema: &Value) -> Option<Arc<Self>> {
        has_rules(schema).then(|| Arc::new(Self(compile_schema(schema))))
    }

    /// Evaluates the rules on `object` (and `old` on updates); returns the failures.
    pub fn check(&self, schema: &Value, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        let Err(errors) = Validator::new().validate_compiled(&self.0, object, old) else {
            return Vec::new();
        };
        errors
            .into_vec()
            .into_iter()
            .map(|error| {
                let shown = type_at(schema, &error.field_path);
                let reason = error
                    .reason
                    .clone()
                    .unwrap_or_else(|| "FieldValueInvalid".into());
                let message = match reason.as_str() {
                    "FieldValueForbidden" => format!("Forbidden: {}", error.message),
                    "FieldValueRequired" => format!("Required value: {}", error.message),
                    "FieldValueDuplicate" => format!("Duplicate value: \"{shown}\""),
                    _ => format!("Invalid value: \"{shown}\": {}", error.message),
                };
                Cause {
                    reason,
                    message,
                    field: error.field_path,
                }
            })
            .collect()
    }
}

/// The rule problems of every schema in a CRD, as causes on the CRD's own fields.
pub fn compile_errors(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    for (i, version) in versions.into_iter().flatten().enumerate() {
        let Some(schema) = version.pointer("/schema/openAPIV3Schema") else {
            continue;
        };
        if !has_rules(schema) {
            continue;
        }
        let compiled = compile_schema(schema);
        collect_errors(
            &compiled,
            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            &mut causes,
        );
    }
    causes
}

fn collect_errors(compiled: &CompiledSchema, path: &str, causes: &mut Vec<Cause>) {
    for (i, result) in compiled.validations.iter().enumerate() {
        if let Err(error) = result {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"object\": compilation failed: {error}"),
                field: format!("{path}.x-kubernetes-validations[{i}].rule"),
            });
        }
    }
    for (name, child) in &compiled.properties {
        collect_errors(child, &format!("{path}.properties[{name}]"), causes);
    }
    if let Some(items) = &compiled.items {
        collect_errors(items, &format!("{path}.items"), causes);
    }
    if let Some(values) = &compiled.additional_properties {
        collect_errors(values, &format!("{path}.additionalProperties"), causes);
    }
}

/// The schema type at a field path such as `spec.ports[0].name` (upstream shows the type, not
/// the value, in CEL failures).
fn type_at(schema: &Value, path: &str) -> String {
    let mut node = schema;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexed) = match segment.split_once('[') {
            Some((name, _)) => (name, true),
            None => (segment, false),
        };
        if !name.is_empty() {
            node = node
                .pointer(&format!("/properties/{name}"))
                .or_else(|| node.get("additionalProperties"))
                .unwrap_or(&Value::Null);
        }
        if indexed {
            node = node.get("items").unwrap_or(&Value::Null);
        }
    }
    node.get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must not exceed maxReplicas"},
                {"rule": "!has(oldSelf.mode) || self.mode == oldSelf.mode", "message": "mode is immutable"}],
            "properties": {
                "replicas": {"type": "integer"},
                "maxReplicas": {"type": "integer"},
                "mode": {"type": "string"}}}}})
    }

    #[test]
    fn failing_rules_should_be_reported_on_their_field() {
        let schema = schema();
        let rules = Rules::compile(&schema).unwrap();
        let bad = json!({"spec": {"replicas": 5, "maxReplicas": 3}});
        let causes = rules.check(&schema, &bad, None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"object\": replicas must not exceed maxReplicas"
        );
        let good = json!({"spec": {"replicas": 1, "maxReplicas": 3}});
        assert!(rules.check(&schema, &good, None).is_empty());
    }

    #[test]
    fn transition_rules_should_compare_with_the_old_object() {
        let schema = schema();
        let rules = Rules::compile(&schema).unwrap();
        let old = json!({"spec": {"replicas": 1, "maxReplicas": 3, "mode": "a"}});
        let new = json!({"spec": {"replicas": 1, "maxReplicas": 3, "mode": "b"}});
        let causes = rules.check(&schema, &new, Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(causes[0].message.ends_with("mode is immutable"));
        assert!(
            rules.check(&schema, &new, None).is_empty(),
            "no old object on create"
        );
    }

    #[test]
    fn rules_that_do_not_compile_should_reject_the_crd() {
        let crd = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-validations": [{"rule": "self.x >"}]}}}]}});
        let causes = compile_errors(&crd);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].field,
            "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule"
        );
        assert!(Rules::compile(&json!({"type": "object"})).is_none());
    }
}
