//! CustomResourceDefinitions: turning stored CRDs into served resources, accepting their names
//! (status conditions NamesAccepted and Established), and the schema walk their objects go
//! through on every write.
//!
//! The set of served custom resources is rebuilt from the store: at start, after every CRD write
//! this server makes (so a CRD is served when its create returns), and on every CRD change seen by
//! a store watch (so CRDs written through another API server on the same etcd appear too).

pub mod printer;
pub mod rules;
pub mod schema;

use serde_json::{Value, json};
use skiff_apimachinery::resources::{CRUD_VERBS, Scope};
use skiff_apimachinery::status::{Cause, Target};
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{EventKind, RangeRequest};

use crate::registry::CustomResource;
use crate::state::ApiState;

/// Where CRDs are stored.
pub const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

/// The served versions of an established CRD.
pub fn resources_of(crd: &Value) -> Vec<CustomResource> {
    let established = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    if !established || crd.pointer("/metadata/deletionTimestamp").is_some() {
        return Vec::new();
    }
    let names = crd.pointer("/status/acceptedNames").unwrap_or(&Value::Null);
    let scope = if str_at(crd, "/spec/scope") == "Cluster" {
        Scope::Cluster
    } else {
        Scope::Namespaced
    };
    let mut out = Vec::new();
    for version in crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["served"] == true)
    {
        let mut subresources = Vec::new();
        if version.pointer("/subresources/status").is_some() {
            subresources.push("status".to_string());
        }
        let scale = version.pointer("/subresources/scale").cloned();
        if scale.is_some() {
            subresources.push("scale".to_string());
        }
        out.push(CustomResource {
            info: ResourceInfo {
                group: str_at(crd, "/spec/group").into(),
                version: str_at(version, "/name").into(),
                kind: str_at(names, "/kind").into(),
                plural: str_at(names, "/plural").into(),
                singular: str_at(names, "/singular").into(),
                scope,
                short_names: strings(names.get("shortNames")),
                categories: strings(names.get("categories")),
                verbs: CRUD_VERBS.iter().map(|v| v.to_string()).collect(),
                subresources,
            },
            schema: version.pointer("/schema/openAPIV3Schema").cloned(),
            rules: version
                .pointer("/schema/openAPIV3Schema")
                .and_then(rules::Rules::compile),
            columns: version
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            scale,
            storage: version["storage"] == true,
        });
    }
    out
}

fn invalid(crd: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        kind: "CustomResourceDefinition.apiextensions.k8s.io".into(),
        target: Target::new(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            str_at(crd, "/metadata/name"),
        ),
        causes,
    }
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// Defaults, validates and accepts a CRD being written: names defaulted (singular, listKind),
/// one storage version, `metadata.name` = `<plural>.<group>`, and the status conditions
/// NamesAccepted and Established set, with the storage version recorded in storedVersions.
/// `served` lists the custom resources already served, for name conflicts.
pub fn accept(crd: &mut Value, served: &[CustomResource]) -> Result<(), ApiError> {
    let kind = str_at(crd, "/spec/names/kind").to_string();
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        if !names.contains_key("singular") {
            names.insert("singular".into(), json!(kind.to_ascii_lowercase()));
        }
        if !names.contains_key("listKind") {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
    let group = str_at(crd, "/spec/group").to_string();
    let plural = str_at(crd, "/spec/names/plural").to_string();
    let mut causes = Vec::new();
    if group.is_empty() || !group.contains('.') {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.group",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    for (field, value) in [("spec.names.plural", &plural), ("spec.names.kind", &kind)] {
        if value.is_empty() {
            causes.push(cause("FieldValueRequired", field, "Required value".into()));
        }
    }
    let name = str_at(crd, "/metadata/name");
    if !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if !matches!(str_at(crd, "/spec/scope"), "Namespaced" | "Cluster") {
        causes.push(cause(
            "FieldValueNotSupported",
            "spec.scope",
            format!(
                "Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"",
                str_at(crd, "/spec/scope")
            ),
        ));
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage: Vec<&str> = versions
        .iter()
        .filter(|v| v["storage"] == true)
        .map(|v| str_at(v, "/name"))
        .collect();
    if versions.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "spec.versions",
            "Required value".into(),
        ));
    } else if storage.len() != 1 {
        causes.push(cause(
            "FieldValueInvalid",
            "spec.versions",
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                versions.len()
            ),
        ));
    }
    causes.extend(rules::compile_errors(crd));
    if !causes.is_empty() {
        return Err(invalid(crd, causes));
    }
    let conflict = served.iter().any(|r| {
        r.info.group == group
            && format!("{}.{}", r.info.plural, r.info.group) != name
            && (r.info.kind == kind || r.info.plural == plural)
    });
    let (status, reason, message) = if conflict {
        (
            "False",
            "KindConflict",
            format!("{kind:?} or {plural:?} is already in use"),
        )
    } else {
        ("True", "NoConflicts", "no conflicts found".to_string())
    };
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let now = crd
        .pointer("/metadata/creationTimestamp")
        .cloned()
        .unwrap_or(Value::Null);
    let mut stored = strings(crd.pointer("/status/storedVersions"));
    if let Some(version) = storage.first()
        && !stored.iter().any(|s| s == version)
    {
        stored.push((*version).to_string());
    }
    let established = if conflict {
        json!({"type": "Established", "status": "False", "reason": "NotAccepted",
               "message": "not all names are accepted", "lastTransitionTime": now})
    } else {
        json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
               "message": "the initial names have been accepted", "lastTransitionTime": now})
    };
    if let Some(object) = crd.as_object_mut() {
        object.insert(
            "status".into(),
            json!({
                "conditions": [
                    {"type": "NamesAccepted", "status": status, "reason": reason,
                     "message": message, "lastTransitionTime": now},
                    established,
                ],
                "acceptedNames": if conflict { json!({"plural": "", "kind": ""}) } else { names },
                "storedVersions": stored,
            }),
        );
    }
    Ok(())
}

/// Rebuilds the served custom resources from the stored CRDs.
pub async fn refresh(state: &ApiState) -> Result<(), ApiError> {
    let response = state
        .store
        .range(RangeRequest {
            prefix: CRD_PREFIX.into(),
            ..RangeRequest::default()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("listing CRDs: {e}")))?;
    let mut resources = Vec::new();
    for kv in &response.kvs {
        if let Ok(crd) = crate::storage::decode(kv) {
            resources.extend(resources_of(&crd));
        }
    }
    state.registry.set_custom(resources);
    state.openapi_changed();
    Ok(())
}

/// Keeps the served custom resources in step with the stored CRDs for as long as the server runs.
pub async fn follow(state: ApiState) {
    loop {
        let revision = match state.store.current_revision().await {
            Ok(revision) => revision,
            Err(error) => {
                tracing::warn!(%error, "CRD watch: reading the revision failed");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = refresh(&state).await {
            tracing::warn!(%error, "CRD watch: refresh failed");
        }
        let Ok(mut events) = state.store.watch(CRD_PREFIX, revision).await else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        };
        use futures::StreamExt;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if matches!(event.kind, EventKind::Put | EventKind::Delete) => {
                    if let Err(error) = refresh(&state).await {
                        tracing::warn!(%error, "CRD watch: refresh failed");
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::info!(%error, "CRD watch ended; restarting");
                    break;
                }
            }
        }
    }
}

/// Deletes every stored object of a CRD's resource (all versions share one storage prefix).
pub async fn purge(state: &ApiState, crd: &Value) -> Result<usize, ApiError> {
    let prefix = format!(
        "{}{}/{}/",
        crate::storage::ROOT,
        str_at(crd, "/spec/group"),
        str_at(crd, "/spec/names/plural")
    );
    let response = state
        .store
        .range(RangeRequest {
            prefix,
            ..RangeRequest::default()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("listing custom objects: {e}")))?;
    let mut deleted = 0;
    for kv in response.kvs {
        if state.store.delete(&kv.key, None).await.is_ok() {
            deleted += 1;
        }
    }
    Ok(deleted)
}
