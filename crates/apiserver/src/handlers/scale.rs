//! The `scale` subresource of workloads (Deployments, ReplicaSets, StatefulSets,
//! ReplicationControllers) and of custom resources whose CRD declares one: an `autoscaling/v1`
//! Scale view of the replica count, readable, replaceable and patchable, as `kubectl scale` and
//! autoscalers use it. A custom resource's paths come from its CRD (`specReplicasPath`,
//! `statusReplicasPath`, `labelSelectorPath`).

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;

use super::write::{Change, prepare_replacement};
use super::write_request::WriteRequest;
use crate::body;
use crate::guaranteed::{Decision, current, guaranteed_update};
use crate::objects::meta_str;
use crate::patch;
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;

/// Where a resource keeps its replica counts and selector, as JSON pointers.
struct Paths {
    spec_replicas: String,
    status_replicas: String,
    /// A custom resource's selector string; `None` for built-in workloads (their
    /// `spec.selector`).
    selector: Option<String>,
    /// What a missing `spec_replicas` means (built-ins default to 1, custom resources to 0).
    default_replicas: i64,
}

/// `.spec.replicas` → `/spec/replicas`.
fn pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |out, key| {
            format!("{out}/{}", key.replace('~', "~0").replace('/', "~1"))
        })
}

fn paths(state: &ApiState, request: &WriteRequest<'_>) -> Paths {
    let info = request.info;
    let custom = state
        .registry
        .find_custom(&info.group, &info.version, &info.plural)
        .and_then(|c| c.scale);
    match custom {
        Some(scale) => {
            let text = |key: &str| scale.get(key).and_then(Value::as_str).map(pointer);
            Paths {
                spec_replicas: text("specReplicasPath").unwrap_or_else(|| "/spec/replicas".into()),
                status_replicas: text("statusReplicasPath")
                    .unwrap_or_else(|| "/status/replicas".into()),
                selector: text("labelSelectorPath"),
                default_replicas: 0,
            }
        }
        None => Paths {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            selector: None,
            default_replicas: 1,
        },
    }
}

/// `matchLabels` (or a ReplicationController's selector map) as a selector string.
fn selector(object: &Value, paths: &Paths) -> String {
    if let Some(path) = &paths.selector {
        return object
            .pointer(path)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    if object.pointer("/spec/selector/matchLabels").is_some() {
        crate::table::labels_text(object, "/spec/selector/matchLabels")
    } else {
        crate::table::labels_text(object, "/spec/selector")
    }
}

/// Sets the value at `pointer`, creating the objects on the way.
fn set_at(object: &mut Value, pointer: &str, value: Value) {
    let mut node = object;
    let keys: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|k| k.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    for key in parents {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        node = map.entry(key.clone()).or_insert_with(|| json!({}));
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(last.clone(), value);
    }
}

/// The Scale view of a workload.
fn scale_of(object: &Value, paths: &Paths) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer(&paths.spec_replicas).and_then(Value::as_i64).unwrap_or(paths.default_replicas)},
        "status": {
            "replicas": object.pointer(&paths.status_replicas).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector(object, paths),
        },
    })
}

fn replicas(scale: &Value) -> Result<i64, ApiError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::BadRequest(format!(
            "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
        )));
    }
    Ok(replicas)
}

/// GET `.../{name}/scale`.
pub async fn get(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
) -> Result<Response, ApiError> {
    let target = Target::new(&request.info.group, &request.info.plural, name);
    let key = storage::key(request.info, request.namespace, name);
    let (_, object) = current(state, &key, &target).await?;
    Ok(respond::value(
        StatusCode::OK,
        &scale_of(&object, &paths(state, request)),
        Format::Json,
    ))
}

/// PUT or PATCH `.../{name}/scale`: sets `spec.replicas` of the workload, through the same
/// preparation (admission, defaults, validation, managedFields) as any update of it.
pub async fn write(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
    is_patch: bool,
) -> Result<Response, ApiError> {
    let info = request.info;
    let target = Target::new(&info.group, &info.plural, name);
    let key = storage::key(info, request.namespace, name);
    let paths = paths(state, request);
    let site = request.site(&key, &target)?;
    let outcome = guaranteed_update(state, site, |revision, old| {
        let mut scale = scale_of(old, &paths);
        if is_patch {
            let (kind, patch_body) = body::patch(request.headers, bytes)?;
            patch::check_type(kind, false)?;
            // An apply of a Scale sets the fields it names, as a merge does.
            let kind = if kind == body::PatchType::Apply {
                body::PatchType::Merge
            } else {
                kind
            };
            patch::apply(kind, &mut scale, &patch_body, None)?;
        } else {
            scale = body::object(request.headers, bytes)?;
        }
        let precondition = match meta_str(&scale, "resourceVersion") {
            Some(rv) if rv != revision.to_string() => Some(storage::parse_revision(rv)?),
            _ => None,
        };
        let mut new = old.clone();
        set_at(&mut new, &paths.spec_replicas, json!(replicas(&scale)?));
        let change = Change {
            old,
            target: &target,
            subresource: Some("scale"),
            applied: false,
            bytes,
        };
        let (object, _) = prepare_replacement(state, request, &change, new)?;
        Ok(Decision::Write {
            object,
            precondition,
        })
    })
    .await?;
    Ok(respond::value(
        StatusCode::OK,
        &scale_of(outcome.object(), &paths),
        Format::Json,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_paths_should_become_pointers_and_be_settable() {
        assert_eq!(pointer(".spec.size"), "/spec/size");
        let mut object = json!({"metadata": {}});
        set_at(&mut object, &pointer(".spec.scale.count"), json!(3));
        assert_eq!(object["spec"]["scale"]["count"], 3);
    }
}
