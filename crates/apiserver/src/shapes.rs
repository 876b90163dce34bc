//! Shape checks: a built-in object must deserialize into its k8s-openapi type (right field
//! types, required fields present), and fields the type does not know are reported for
//! `fieldValidation`. The stored form stays the JSON the client sent.

use serde_json::Value;
use skiff_apimachinery::{ApiError, ResourceInfo};

use crate::types::{KindVisitor, with_type};

/// Round-trips an object through its type: `Err` if it does not fit, else the typed form.
struct RoundTrip<'a>(&'a Value);

impl KindVisitor for RoundTrip<'_> {
    type Output = Result<Value, String>;
    fn visit<T>(&mut self) -> Self::Output
    where
        T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
    {
        let typed: T = serde_json::from_value(self.0.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
}

/// Field paths present (and not null) in `given` but absent from `known`.
fn unknown_paths(given: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (name, value) in g {
                let here = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match k.get(name) {
                    Some(known_value) => unknown_paths(value, known_value, &here, out),
                    None if !value.is_null() => out.push(here),
                    None => {}
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (gi, ki)) in g.iter().zip(k).enumerate() {
                unknown_paths(gi, ki, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Checks `object` against the k8s-openapi type of `info`'s kind; returns the fields the type
/// does not know (for `fieldValidation`).
pub fn check_shape(info: &ResourceInfo, object: &Value) -> Result<Vec<String>, ApiError> {
    let Some(result) = with_type(&info.group, &info.kind, &mut RoundTrip(object)) else {
        return Ok(Vec::new());
    };
    let typed = result.map_err(|message| {
        ApiError::BadRequest(format!("{} in body is malformed: {message}", info.kind))
    })?;
    let mut unknown = Vec::new();
    unknown_paths(object, &typed, "", &mut unknown);
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_apimachinery::resources::builtin;

    #[test]
    fn check_shape_should_find_unknown_fields_and_reject_wrong_types() {
        let cm = builtin()
            .into_iter()
            .find(|r| r.kind == "ConfigMap")
            .unwrap();
        let unknown = check_shape(&cm, &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}, "extra": {"x": 1}, "gone": null})).unwrap();
        assert_eq!(unknown, ["metadata.bogus", "extra"]);
        let wrong = check_shape(
            &cm,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": 1}}),
        );
        assert!(matches!(wrong, Err(ApiError::BadRequest(_))));
    }
}
