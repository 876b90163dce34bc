//! The fields each kind can be selected on (`fieldSelector`), as upstream supports them.

use serde_json::Value;
use skiff_apimachinery::ApiError;
use skiff_apimachinery::selector::FieldSelector;

fn supported(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
        ],
        "Secret" => &["type"],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "Service" => &["spec.clusterIP", "spec.type"],
        "CertificateSigningRequest" => &["spec.signerName"],
        _ => &[],
    }
}

/// Every field the kind can be selected on.
pub fn selectable(kind: &str) -> impl Iterator<Item = &'static str> {
    ["metadata.name", "metadata.namespace"]
        .into_iter()
        .chain(supported(kind).iter().copied())
}

/// Rejects fields the kind cannot be selected on, as upstream does.
pub fn check(kind: &str, selector: &FieldSelector) -> Result<(), ApiError> {
    for field in selector.fields() {
        if !selectable(kind).any(|f| f == field) {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {field}"
            )));
        }
    }
    Ok(())
}

/// A field's value as a selector compares it ("" when unset).
pub fn value(object: &Value, field: &str) -> String {
    if field == "source" {
        return object
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // Upstream selects on Go's zero value of an unset field.
        _ => match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
            "status.replicas" | "status.successful" => "0".into(),
            _ => String::new(),
        },
    }
}

/// Whether `object` passes both selectors.
pub fn selected(
    object: &Value,
    labels: &skiff_apimachinery::selector::LabelSelector,
    fields: &FieldSelector,
) -> bool {
    labels.matches(
        object
            .pointer("/metadata/labels")
            .and_then(Value::as_object),
    ) && fields.matches(|f| value(object, f))
}
