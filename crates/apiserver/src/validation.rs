//! Validation beyond shape: what upstream rejects with 422 even though the JSON types fit
//! (k8s-openapi fills missing required strings with ""), and pruning of unknown fields, which
//! upstream never stores for built-in kinds.

use serde_json::Value;
use skiff_apimachinery::status::{Cause, Target};
use skiff_apimachinery::{ApiError, ResourceInfo};

use crate::objects::name_problem;

fn required(field: String) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field,
    }
}

fn pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        causes.push(required(format!("{path}.containers")));
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
                None => causes.push(required(format!("{here}.name"))),
                Some(name) => {
                    if let Some(problem) = name_problem(name, true) {
                        causes.push(Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!("Invalid value: \"{name}\": {problem}"),
                            field: format!("{here}.name"),
                        });
                    }
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(required(format!("{here}.image")));
            }
        }
    }
}

/// Checks what the types cannot: required pod-spec fields of pods and workload templates.
pub fn validate(info: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let template = match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => Some(("/spec", "spec")),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController" | "PodTemplate") => {
            Some(("/spec/template/spec", "spec.template.spec"))
        }
        ("batch", "CronJob") => Some((
            "/spec/jobTemplate/spec/template/spec",
            "spec.jobTemplate.spec.template.spec",
        )),
        _ => None,
    };
    if let Some((pointer, path)) = template
        && let Some(spec) = object.pointer(if info.kind == "PodTemplate" {
            "/template/spec"
        } else {
            pointer
        })
    {
        let path = if info.kind == "PodTemplate" {
            "template.spec"
        } else {
            path
        };
        pod_spec(spec, path, &mut causes);
    }
    if causes.is_empty() {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(ApiError::Invalid {
        kind: info.kind.clone(),
        target: Target::new(&info.group, &info.plural, name),
        causes,
    })
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
}
