//! Structural OpenAPI v3 schemas of custom resources: defaulting, pruning and validation in one
//! walk, as the apiextensions server does. Defaults fill absent (or null, non-nullable) fields
//! first; fields the schema does not know are reported for pruning (`fieldValidation`); every
//! violation becomes one cause of a 422 `Invalid`, named by its field path.

use serde_json::{Map, Value};
use skiff_apimachinery::status::Cause;

/// What a walk found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Fields the schema does not know, as paths (`spec.extra`).
    pub unknown: Vec<String>,
    /// Violations.
    pub causes: Vec<Cause>,
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Go's `%v`-ish rendering of a value inside messages: strings quoted, others as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Defaults, prunes and validates a whole custom object against its version's schema. The root's
/// apiVersion, kind and metadata are the server's, never pruned.
pub fn apply(schema: &Value, object: &mut Value) -> Outcome {
    let mut outcome = Outcome::default();
    let Value::Object(root) = object else {
        return outcome;
    };
    let mut rest: Map<String, Value> = root
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut schema = schema.clone();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for key in ["apiVersion", "kind", "metadata"] {
            properties.remove(key);
        }
    }
    if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
    }
    let mut rest_value = Value::Object(std::mem::take(&mut rest));
    walk(&schema, &mut rest_value, "", &mut outcome);
    if let Value::Object(rest) = rest_value {
        root.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
        root.extend(rest);
    }
    outcome
}

fn type_matches(schema: &Value, value: &Value) -> Option<&'static str> {
    if flag(schema, "x-kubernetes-int-or-string") {
        return (!(value.is_i64() || value.is_u64() || value.is_string()))
            .then_some("integer or string");
    }
    let wanted = schema.get("type").and_then(Value::as_str)?;
    let ok = match wanted {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match wanted {
        "object" => "object",
        "array" => "array",
        "string" => "string",
        "boolean" => "boolean",
        "integer" => "integer",
        _ => "number",
    })
}

fn walk(schema: &Value, value: &mut Value, path: &str, out: &mut Outcome) {
    if value.is_null() {
        if !flag(schema, "nullable") {
            out.causes.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if let Some(wanted) = type_matches(schema, value) {
        out.causes.push(cause(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: {}: {path} in body must be of type {wanted}: {}",
                shown(value),
                shown(value)
            ),
        ));
        return;
    }
    check_enum(schema, value, path, out);
    match value {
        Value::Object(map) => object(schema, map, path, out),
        Value::Array(items) => array(schema, items, path, out),
        Value::String(text) => string(schema, text, path, out),
        Value::Number(_) => number(schema, value, path, out),
        _ => {}
    }
}

fn check_enum(schema: &Value, value: &Value, path: &str, out: &mut Outcome) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if !allowed.contains(value) {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        out.causes.push(cause(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(value),
                list.join(", ")
            ),
        ));
    }
}

fn object(schema: &Value, map: &mut Map<String, Value>, path: &str, out: &mut Outcome) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields")
        || additional.is_some_and(|a| a == &Value::Bool(true));
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    // Defaults: absent fields, and nulls where null is not allowed.
    for (key, property) in properties.into_iter().flatten() {
        let Some(default) = property.get("default") else {
            continue;
        };
        let absent = match map.get(key) {
            None => true,
            Some(Value::Null) => !flag(property, "nullable"),
            Some(_) => false,
        };
        if absent {
            map.insert(key.clone(), default.clone());
        }
    }
    // Nulls in non-nullable fields without a default are dropped, as upstream prunes them.
    map.retain(|key, v| {
        !(v.is_null()
            && properties
                .and_then(|p| p.get(key))
                .is_some_and(|p| !flag(p, "nullable")))
    });
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child = join(path, &key);
        let sub = properties
            .and_then(|p| p.get(&key))
            .or_else(|| additional.filter(|a| a.is_object()));
        match sub {
            Some(sub) => {
                if let Some(v) = map.get_mut(&key) {
                    walk(sub, v, &child, out);
                }
            }
            None if preserve => {}
            None if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") => {}
            None => {
                out.unknown.push(child);
                map.remove(&key);
            }
        }
    }
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(name) {
            out.causes.push(cause(
                "FieldValueRequired",
                &join(path, name),
                "Required value".into(),
            ));
        }
    }
    let count = map.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        out.causes.push(cause(
            "FieldValueTooMany",
            path,
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        out.causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {count}: {path} in body should have at least {min} properties"),
        ));
    }
}

fn array(schema: &Value, items: &mut [Value], path: &str, out: &mut Outcome) {
    if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
        for (i, item) in items.iter_mut().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
    let count = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        out.causes.push(cause(
            "FieldValueTooMany",
            path,
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        out.causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {count}: {path} in body should have at least {min} items"),
        ));
    }
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    let set = flag(schema, "uniqueItems") || list_type == Some("set");
    if set {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.causes.push(cause(
                    "FieldValueDuplicate",
                    &format!("{path}[{i}]"),
                    format!("Duplicate value: {}", shown(item)),
                ));
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key_of = |item: &Value| -> Vec<Value> {
            keys.iter()
                .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                .collect()
        };
        for (i, item) in items.iter().enumerate() {
            let key = key_of(item);
            if items[..i].iter().any(|other| key_of(other) == key) {
                let shown_key: Vec<String> = keys
                    .iter()
                    .zip(&key)
                    .map(|(k, v)| format!("\"{k}\"={}", shown(v)))
                    .collect();
                out.causes.push(cause(
                    "FieldValueDuplicate",
                    &format!("{path}[{i}]"),
                    format!("Duplicate value: map[{}]", shown_key.join(" ")),
                ));
            }
        }
    }
}

fn string(schema: &Value, text: &str, path: &str, out: &mut Outcome) {
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && length > max
    {
        out.causes.push(cause(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && length < min
    {
        out.causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {text:?}: {path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(text) => out.causes.push(cause(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {text:?}: {path} in body should match '{pattern}'"),
            )),
            _ => {}
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && !format_ok(format, text)
    {
        out.causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {text:?}: {path} in body must be of type {format}: {text:?}"),
        ));
    }
}

/// The formats upstream checks that clients lean on; others pass.
fn format_ok(format: &str, text: &str) -> bool {
    match format {
        "date-time" => text.parse::<jiff::Timestamp>().is_ok(),
        "date" => text.parse::<jiff::civil::Date>().is_ok(),
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(text).is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok()
        }
        _ => true,
    }
}

fn number(schema: &Value, value: &Value, path: &str, out: &mut Outcome) {
    let Some(n) = value.as_f64() else {
        return;
    };
    let exclusive = |key| flag(schema, key);
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let bad = if exclusive("exclusiveMaximum") {
            n >= max
        } else {
            n > max
        };
        if bad {
            let how = if exclusive("exclusiveMaximum") {
                "less than"
            } else {
                "less than or equal to"
            };
            out.causes.push(cause(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {value}: {path} in body should be {how} {max}"),
            ));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let bad = if exclusive("exclusiveMinimum") {
            n <= min
        } else {
            n < min
        };
        if bad {
            let how = if exclusive("exclusiveMinimum") {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.causes.push(cause(
                "FieldValueInvalid",
                path,
                format!("Invalid value: {value}: {path} in body should be {how} {min}"),
            ));
        }
    }
    if let Some(step) = schema.get("multipleOf").and_then(Value::as_f64)
        && step != 0.0
        && (n / step).fract() != 0.0
    {
        out.causes.push(cause(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {value}: {path} in body should be a multiple of {step}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["host"], "properties": {
                "host": {"type": "string", "pattern": "^[a-z.]+$", "maxLength": 20},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 587},
                "mode": {"type": "string", "enum": ["tls", "plain"]},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
                "target": {"x-kubernetes-int-or-string": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "note": {"type": "string", "nullable": true},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }})
    }

    #[test]
    fn defaults_should_fill_absent_fields_and_unknown_fields_should_be_pruned() {
        let mut object = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"host": "mail.example", "bogus": 1, "extra": {"any": {"thing": 1}},
                     "labels": {"a": "b"}, "note": null, "target": "http"},
            "top": 2});
        let outcome = apply(&schema(), &mut object);
        assert!(outcome.causes.is_empty(), "{:?}", outcome.causes);
        assert_eq!(outcome.unknown, ["spec.bogus", "top"]);
        assert_eq!(
            object,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                "spec": {"host": "mail.example", "extra": {"any": {"thing": 1}},
                         "labels": {"a": "b"}, "note": null, "target": "http", "port": 587}})
        );
    }

    #[test]
    fn violations_should_be_listed_per_field() {
        let mut object = json!({"spec": {"port": 0, "mode": "ssl", "tags": ["a", "a"],
            "target": 1.5, "labels": {"a": 1}}, "status": {"ready": "yes"}});
        let outcome = apply(&schema(), &mut object);
        let fields: Vec<(&str, &str)> = outcome
            .causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("spec.port", "FieldValueInvalid"),
                ("spec.mode", "FieldValueNotSupported"),
                ("spec.tags[1]", "FieldValueDuplicate"),
                ("spec.target", "FieldValueTypeInvalid"),
                ("spec.labels.a", "FieldValueTypeInvalid"),
                ("spec.host", "FieldValueRequired"),
                ("status.ready", "FieldValueTypeInvalid"),
            ]
        );
        assert_eq!(
            outcome.causes[1].message,
            "Unsupported value: \"ssl\": supported values: \"tls\", \"plain\""
        );
    }
}
