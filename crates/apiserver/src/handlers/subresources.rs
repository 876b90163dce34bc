//! The action subresources: `pods/binding` (assign a pod to a node, once), `pods/eviction`
//! (delete a pod on request; disruption budgets come with the policy controllers) and
//! `namespaces/finalize` (replace a namespace's `spec.finalizers`).

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;

use super::write_request::WriteRequest;
use crate::body;
use crate::guaranteed::{self, Decision, guaranteed_update};
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// POST `pods/{name}/binding`: sets `spec.nodeName`; a pod is bound at most once, and only the
/// pod whose uid the Binding names (when it names one).
pub async fn bind(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let binding = body::object(request.headers, bytes)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("a Binding needs target.name".into()))?
        .to_string();
    let uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let target = Target::new("", "pods", name);
    let key = storage::key(request.info, request.namespace, name);
    let site = request.site(&key, &target)?;
    let now = crate::clock::rfc3339(state.clock.now());
    // Borrowed, so that the edit (a `move` closure, made on each attempt) copies references.
    let (node, now) = (node.as_str(), now.as_str());
    let annotations = binding.pointer("/metadata/annotations");
    let outcome = guaranteed_update(state, site, |_, old| {
        let stored = old.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
        if let Some(uid) = uid.as_deref().filter(|u| *u != stored) {
            return Err(ApiError::ConflictMessage {
                target: target.clone(),
                message: format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": the UID in the precondition ({uid}) does not match the UID in record ({stored}). The object might have been deleted and then recreated"
                ),
            });
        }
        if let Some(bound) = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::ConflictMessage {
                target: target.clone(),
                message: format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{bound}\""
                ),
            });
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::ConflictMessage {
                target: target.clone(),
                message: format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"
                ),
            });
        }
        Ok(Decision::Edit(Box::new(move |pod: &mut Value| {
            if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), json!(node));
            }
            annotate(pod, annotations);
            mark_scheduled(pod, now);
        })))
    })
    .await?;
    guaranteed::remember(state, request.info, &key, outcome);
    Ok(respond::value(
        StatusCode::CREATED,
        &success(),
        Format::Json,
    ))
}

/// Copies a Binding's annotations onto the pod, as upstream's binding does.
fn annotate(pod: &mut Value, annotations: Option<&Value>) {
    let Some(annotations) = annotations
        .and_then(Value::as_object)
        .filter(|a| !a.is_empty())
    else {
        return;
    };
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let own = meta.entry("annotations").or_insert_with(|| json!({}));
    if !own.is_object() {
        *own = json!({});
    }
    if let Some(own) = own.as_object_mut() {
        for (key, value) in annotations {
            own.insert(key.clone(), value.clone());
        }
    }
}

/// Sets the pod's `PodScheduled` condition to True as upstream's `UpdatePodCondition` does: the
/// condition is replaced (an Unschedulable reason and message go), its transition time kept
/// when it was True already.
fn mark_scheduled(pod: &mut Value, now: &str) {
    let Some(object) = pod.as_object_mut() else {
        return;
    };
    let status = object.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(conditions) = conditions.as_array_mut() else {
        return;
    };
    let mut scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
    {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some("True")
                && let Some(since) = existing.get("lastTransitionTime")
            {
                scheduled["lastTransitionTime"] = since.clone();
            }
            *existing = scheduled;
        }
        None => conditions.push(scheduled),
    }
}

/// POST `pods/{name}/eviction`: deletes the pod (honouring the Eviction's delete options).
pub async fn evict(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let eviction = body::object(request.headers, bytes)?;
    let options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let options = serde_json::to_vec(&options).map_err(|e| ApiError::Internal(e.to_string()))?;
    let plain_json = http::HeaderMap::new();
    let delete = WriteRequest {
        headers: &plain_json,
        format: Format::Json,
        ..*request
    };
    super::delete::delete(state, &delete, name, &options).await?;
    Ok(respond::value(
        StatusCode::CREATED,
        &success(),
        Format::Json,
    ))
}

/// PUT `namespaces/{name}/finalize`: replaces `spec.finalizers`.
pub async fn finalize(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let incoming = body::object(request.headers, bytes)?;
    let finalizers = incoming
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let target = Target::new("", "namespaces", name);
    let key = storage::key(request.info, None, name);
    let site = request.site(&key, &target)?;
    let outcome = guaranteed_update(state, site, |_, old| {
        let mut new = old.clone();
        if let Some(map) = new.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            spec["finalizers"] = finalizers.clone();
        }
        Ok(Decision::Write {
            object: new,
            precondition: None,
        })
    })
    .await?;
    Ok(respond::value(
        StatusCode::OK,
        outcome.object(),
        Format::Json,
    ))
}
