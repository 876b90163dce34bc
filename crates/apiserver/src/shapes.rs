//! Shape checks: a built-in object must deserialize into its k8s-openapi type (right field
//! types, required fields present), and fields the type does not know are reported for
//! `fieldValidation`. One typed decode does both: it reads the object in place (no copy), and
//! `serde_ignored` notes every field the type skips. The stored form stays the JSON the client
//! sent.

use serde_json::Value;
use skiff_apimachinery::{ApiError, ResourceInfo};

use crate::types::{KindVisitor, with_type};

/// Decodes an object into its type: the paths of the fields it skipped, or why it does not fit.
struct Typed<'a>(&'a Value);

impl KindVisitor for Typed<'_> {
    type Output = Result<Vec<Vec<Step>>, String>;
    fn visit<T>(&mut self) -> Self::Output
    where
        T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
    {
        let mut skipped = Vec::new();
        serde_ignored::deserialize(self.0, |path| skipped.push(steps(&path)))
            .map(|_: T| skipped)
            .map_err(|e| e.to_string())
    }
}

/// One step of a field path.
#[derive(Debug)]
enum Step {
    Field(String),
    Index(usize),
}

fn steps(path: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => steps(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Step::Index(*index)),
        Path::Map { key, .. } => out.push(Step::Field(key.clone())),
        _ => {}
    }
    out
}

/// The value at `path` in `object`.
fn at<'a>(object: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, step| match step {
        Step::Field(name) => value.get(name),
        Step::Index(i) => value.get(i),
    })
}

/// A path as `fieldValidation` names it: `spec.containers[0].bogus`.
fn show(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Checks `object` against the k8s-openapi type of `info`'s kind; returns the fields the type
/// does not know and the object sets (not to null), for `fieldValidation`.
pub fn check_shape(info: &ResourceInfo, object: &Value) -> Result<Vec<String>, ApiError> {
    let Some(result) = with_type(&info.group, &info.kind, &mut Typed(object)) else {
        return Ok(Vec::new());
    };
    let skipped = result.map_err(|message| {
        ApiError::BadRequest(format!("{} in body is malformed: {message}", info.kind))
    })?;
    Ok(skipped
        .iter()
        .filter(|path| at(object, path).is_some_and(|v| !v.is_null()))
        .map(|path| show(path))
        .collect())
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
        let pod = builtin().into_iter().find(|r| r.kind == "Pod").unwrap();
        let unknown = check_shape(
            &pod,
            &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"},
            {"name": "d", "bogus": {"deep": 1}, "ports": [{"containerPort": 80, "odd": true}]}]}}),
        )
        .unwrap();
        assert_eq!(
            unknown,
            [
                "spec.containers[1].bogus",
                "spec.containers[1].ports[0].odd"
            ]
        );
    }
}
