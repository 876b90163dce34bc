//! The `scale` subresource of workloads (Deployments, ReplicaSets, StatefulSets,
//! ReplicationControllers): an `autoscaling/v1` Scale view of `spec.replicas`, readable,
//! replaceable and patchable, as `kubectl scale` and autoscalers use it.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;
use skiff_store::StoreError;

use super::write::{RETRIES, WriteRequest, current, write_over};
use crate::body;
use crate::objects::{self, meta_str};
use crate::patch;
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;

/// `matchLabels` (or a ReplicationController's selector map) as a selector string.
fn selector(object: &Value) -> String {
    if object.pointer("/spec/selector/matchLabels").is_some() {
        crate::table::labels_text(object, "/spec/selector/matchLabels")
    } else {
        crate::table::labels_text(object, "/spec/selector")
    }
}

/// The Scale view of a workload.
fn scale_of(object: &Value) -> Value {
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
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector(object),
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
        &scale_of(&object),
        Format::Json,
    ))
}

/// PUT or PATCH `.../{name}/scale`: sets `spec.replicas` of the workload.
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
    for _ in 0..RETRIES {
        let (kv, old) = current(state, &key, &target).await?;
        let mut scale = scale_of(&old);
        if is_patch {
            let (kind, patch_body) = body::patch(request.headers, bytes)?;
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
            Some(rv) if rv != kv.mod_revision.to_string() => Some(storage::parse_revision(rv)?),
            _ => None,
        };
        let mut new = old.clone();
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(replicas(&scale)?));
        }
        objects::prepare_update(info, &mut new, &old, None)?;
        let now = crate::clock::rfc3339(state.clock.now());
        crate::apply::record_update(
            &mut new,
            Some(&old),
            &super::write::shape(state, info),
            &super::write::writer(request, &now, "scale"),
        );
        if request.params.dry_run()? {
            return Ok(respond::value(
                StatusCode::OK,
                &scale_of(&new),
                Format::Json,
            ));
        }
        match write_over(
            state,
            &key,
            &target,
            &kv,
            new,
            precondition.unwrap_or(kv.mod_revision),
        )
        .await
        {
            Ok(stored) => {
                return Ok(respond::value(
                    StatusCode::OK,
                    &scale_of(&stored),
                    Format::Json,
                ));
            }
            Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
            Err(error) => return Err(storage::api_error(error, &target)),
        }
    }
    Err(ApiError::Conflict(target))
}
