//! Upstream's Priority admission for pod creates: `spec.priorityClassName` resolves to the
//! PriorityClass's value in `spec.priority` (and its `preemptionPolicy`); a pod without a class
//! gets the `globalDefault` class (the lowest-valued one if several claim it), or priority 0.
//! An unknown class, or a `spec.priority` or `spec.preemptionPolicy` that differs from the
//! class's, is refused with upstream's 403. The two system classes always exist (bootstrap creates them). PriorityClasses
//! are read from the watch cache's snapshot, as upstream's admission reads its informer; from
//! the store while the snapshot is loading.

use serde::Deserialize;
use serde_json::{Value, json};
use skiff_apimachinery::status::{ApiError, Target};

use crate::state::ApiState;
use crate::storage;

/// The built-in classes: (name, value, description), as upstream creates them.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// What admission reads of a PriorityClass; every other field is skipped unread.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Class {
    metadata: ClassMeta,
    #[serde(default)]
    value: i64,
    #[serde(default)]
    global_default: bool,
    preemption_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClassMeta {
    #[serde(default)]
    name: String,
}

/// Every PriorityClass.
async fn classes(state: &ApiState) -> Result<Vec<Class>, ApiError> {
    let info = state
        .registry
        .find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::Internal("priorityclasses are not registered".into()))?;
    let prefix = storage::prefix(&info, None);
    if let Ok(list) = state.watch_cache.list(&prefix, None, None) {
        return Ok(list
            .objects
            .iter()
            .filter_map(|o| serde_json::from_slice(o.item()).ok())
            .collect());
    }
    let target = Target::new("scheduling.k8s.io", "priorityclasses", "");
    let listed = state
        .store
        .range(skiff_store::RangeRequest {
            prefix,
            start_after: None,
            limit: None,
            revision: None,
        })
        .await
        .map_err(|e| storage::api_error(e, &target))?;
    listed
        .kvs
        .iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::Internal(format!("stored PriorityClass: {e}")))
        })
        .collect()
}

/// Resolves the priority of the pod `object` (named `name` in errors) before it is stored.
pub async fn admit(state: &ApiState, object: &mut Value, name: &str) -> Result<(), ApiError> {
    let Some(spec) = object.get("spec") else {
        return Ok(());
    };
    let requested = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let given = spec.get("priority").and_then(Value::as_i64);
    let forbidden = |message: String| ApiError::Forbidden {
        target: Target::new("", "pods", name),
        message: format!("pods \"{name}\" is forbidden: {message}"),
    };
    let classes = classes(state).await?;
    let class = match &requested {
        Some(wanted) => Some(
            classes
                .iter()
                .find(|c| c.metadata.name == *wanted)
                .ok_or_else(|| {
                    forbidden(format!("no PriorityClass with name {wanted} was found"))
                })?,
        ),
        None => classes
            .iter()
            .filter(|c| c.global_default)
            .min_by_key(|c| c.value),
    };
    let value = class.map_or(0, |c| c.value);
    if let Some(given) = given.filter(|g| *g != value) {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    let policy = class
        .and_then(|c| c.preemption_policy.as_deref())
        .unwrap_or("PreemptLowerPriority")
        .to_string();
    let given_policy = spec.get("preemptionPolicy").and_then(Value::as_str);
    if let Some(given) = given_policy.filter(|g| class.is_some() && *g != policy) {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(class) = class {
            spec.insert("priorityClassName".into(), json!(class.metadata.name));
        }
        spec.insert("priority".into(), json!(value));
        spec.entry("preemptionPolicy").or_insert(json!(policy));
    }
    Ok(())
}
