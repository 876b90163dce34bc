//! The one write path of every existing object, upstream's `GuaranteedUpdate`: read the object,
//! let the caller decide from it (write a new version, delete it, or fail with an `ApiError`),
//! commit with a compare-and-swap on the revision read, and on a conflict read again and decide
//! again. Update, patch, apply, scale, status, binding, finalize and delete all go through
//! [`guaranteed_update`], so they share its rules:
//! - a write with an explicit `resourceVersion` precondition is not retried: a stale one is 409;
//! - a write that leaves a deleting object without finalizers removes the object;
//! - a write that changes nothing is no write (no new revision, no watch event);
//! - after a commit, the resource's hooks run (custom resources are re-served after a CRD
//!   changes, a Service's ClusterIP is given back when it is removed).
//!
//! Store errors become API errors here, through the one mapping `storage::api_error`.

use serde_json::{Value, json};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{KeyValue, Revision, StoreError};

use crate::allocation;
use crate::crd;
use crate::objects::meta_mut;
use crate::state::ApiState;
use crate::storage;

/// How many times a write without a precondition is tried before it answers 409.
pub const RETRIES: usize = 16;

/// What a write decides from the object it read.
#[derive(Debug)]
pub enum Decision {
    /// Store this version: a compare-and-swap on `precondition` when given (a stale one is a
    /// 409, not retried), else on the revision read (retried on conflicts).
    Write {
        /// The new version.
        object: Value,
        /// The caller's `resourceVersion` precondition.
        precondition: Option<Revision>,
    },
    /// Remove the object (a compare-and-swap on the revision read).
    Delete,
}

/// What a guaranteed update did (or, in a dry run, would have done).
#[derive(Debug)]
pub enum Outcome {
    /// The object as stored, with its resourceVersion (the old one when nothing changed).
    Written(Value),
    /// The object as it was removed, with the deletion's revision as its resourceVersion.
    Deleted(Value),
}

impl Outcome {
    /// The object either way.
    pub fn object(&self) -> &Value {
        match self {
            Self::Written(object) | Self::Deleted(object) => object,
        }
    }
}

/// Where the object is and how the write is made.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    /// The object's resource.
    pub info: &'a ResourceInfo,
    /// The object's store key.
    pub key: &'a str,
    /// The object, as errors name it.
    pub target: &'a Target,
    /// Decide and report, but commit nothing.
    pub dry_run: bool,
}

/// Reads the object at `key` (404 when absent).
pub async fn current(
    state: &ApiState,
    key: &str,
    target: &Target,
) -> Result<(KeyValue, Value), ApiError> {
    let (kv, _) = state
        .store
        .get(key, None)
        .await
        .map_err(|e| storage::api_error(e, target))?;
    let kv = kv.ok_or_else(|| ApiError::NotFound(target.clone()))?;
    let object = storage::decode(&kv)?;
    Ok((kv, object))
}

/// Reads, decides, commits; retries the whole on conflicts unless the decision carried a
/// precondition. `decide` sees the stored key-value and the decoded object, and may be called
/// more than once.
pub async fn guaranteed_update<F>(
    state: &ApiState,
    site: Site<'_>,
    mut decide: F,
) -> Result<Outcome, ApiError>
where
    F: FnMut(&KeyValue, &Value) -> Result<Decision, ApiError>,
{
    for _ in 0..RETRIES {
        let (kv, old) = current(state, site.key, site.target).await?;
        let decision = decide(&kv, &old)?;
        let retry_on_conflict = !matches!(
            decision,
            Decision::Write {
                precondition: Some(_),
                ..
            }
        );
        match commit(state, &site, &kv, old, decision).await {
            Ok(outcome) => {
                if !site.dry_run {
                    after_commit(state, site.info, &outcome).await;
                }
                return Ok(outcome);
            }
            Err(Failed::Store(StoreError::Conflict { .. })) if retry_on_conflict => continue,
            Err(Failed::Store(error)) => return Err(storage::api_error(error, site.target)),
            Err(Failed::Api(error)) => return Err(error),
        }
    }
    Err(ApiError::Conflict(site.target.clone()))
}

/// Why a commit did not happen.
enum Failed {
    Store(StoreError),
    Api(ApiError),
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

/// Whether `object` is being deleted and nothing holds it any more.
fn finalized(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && !spec_finalizers_pending(object)
}

/// Whether a namespace still waits for `spec.finalizers` (the namespace controller's work).
pub fn spec_finalizers_pending(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Namespace")
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

fn stamp(object: &mut Value, revision: Revision) -> Result<(), ApiError> {
    meta_mut(object)?.insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(())
}

async fn commit(
    state: &ApiState,
    site: &Site<'_>,
    kv: &KeyValue,
    old: Value,
    decision: Decision,
) -> Result<Outcome, Failed> {
    let (mut removed, expected) = match decision {
        Decision::Delete => (old, kv.mod_revision),
        Decision::Write {
            object,
            precondition,
        } if finalized(&object) => (object, precondition.unwrap_or(kv.mod_revision)),
        Decision::Write {
            object,
            precondition,
        } => return write(state, site, kv, object, precondition).await,
    };
    if site.dry_run {
        return Ok(Outcome::Deleted(removed));
    }
    if is_crd(site.info) {
        let purged = crd::purge(state, &removed).await?;
        tracing::info!(
            key = site.key,
            objects = purged,
            "CRD deleted with its objects"
        );
    }
    let (revision, _) = state
        .store
        .delete(site.key, Some(expected))
        .await
        .map_err(Failed::Store)?;
    stamp(&mut removed, revision)?;
    Ok(Outcome::Deleted(removed))
}

async fn write(
    state: &ApiState,
    site: &Site<'_>,
    kv: &KeyValue,
    mut new: Value,
    precondition: Option<Revision>,
) -> Result<Outcome, Failed> {
    let expected = precondition.unwrap_or(kv.mod_revision);
    let encoded = storage::encode(&new)?;
    // A write that changes nothing is not a write: no new revision, no watch event. Field
    // order does not count, nor do the times of managedFields entries (upstream keeps the old
    // ones when nothing else changed), so a controller re-applying the same object settles.
    if expected == kv.mod_revision
        && let Some(stored) = unchanged(&kv.value, &encoded)
    {
        let meta = meta_mut(&mut new)?;
        meta.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        if let Some(fields) = stored.pointer("/metadata/managedFields") {
            meta.insert("managedFields".into(), fields.clone());
        }
        return Ok(Outcome::Written(new));
    }
    if site.dry_run {
        return Ok(Outcome::Written(new));
    }
    let revision = state
        .store
        .update(site.key, encoded, expected)
        .await
        .map_err(Failed::Store)?;
    stamp(&mut new, revision)?;
    Ok(Outcome::Written(new))
}

/// The stored object, when `new` says the same thing (see `write`).
fn unchanged(stored: &[u8], new: &[u8]) -> Option<Value> {
    if stored == new {
        return serde_json::from_slice(stored).ok();
    }
    let without_times = |bytes: &[u8]| -> Option<Value> {
        let mut object: Value = serde_json::from_slice(bytes).ok()?;
        if let Some(entries) = object
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                entry.remove("time");
            }
        }
        Some(object)
    };
    // Map equality ignores key order.
    (without_times(stored)? == without_times(new)?)
        .then(|| serde_json::from_slice(stored).ok())
        .flatten()
}

/// Whether `info` is the CustomResourceDefinition resource.
pub fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.kind == "CustomResourceDefinition"
}

/// After a CRD write: serve what it now defines before answering.
pub async fn crd_written(state: &ApiState, info: &ResourceInfo) {
    if is_crd(info)
        && let Err(error) = crd::refresh(state).await
    {
        tracing::warn!(%error, "refreshing custom resources failed; the CRD watch retries");
    }
}

/// The hooks that follow a committed write of `info`.
async fn after_commit(state: &ApiState, info: &ResourceInfo, outcome: &Outcome) {
    if let Outcome::Deleted(object) = outcome {
        allocation::release_for(state, object).await;
    }
    crd_written(state, info).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_differing_only_in_key_order_or_managed_field_times_should_be_unchanged() {
        let stored = br#"{"kind":"Secret","metadata":{"name":"s","managedFields":[{"manager":"m","time":"2026-01-01T00:00:00Z"}]},"type":"Opaque","data":{"k":"dg=="}}"#;
        let reordered = br#"{"kind":"Secret","metadata":{"name":"s","managedFields":[{"manager":"m","time":"2026-01-01T00:00:09Z"}]},"data":{"k":"dg=="},"type":"Opaque"}"#;
        let kept = unchanged(stored, reordered).unwrap();
        assert_eq!(
            kept["metadata"]["managedFields"][0]["time"],
            "2026-01-01T00:00:00Z"
        );
        let changed = br#"{"kind":"Secret","metadata":{"name":"s","managedFields":[{"manager":"m","time":"2026-01-01T00:00:09Z"}]},"data":{"k":"dw=="},"type":"Opaque"}"#;
        assert!(unchanged(stored, changed).is_none());
    }

    #[test]
    fn a_deleting_object_without_finalizers_should_count_as_finalized() {
        let deleting = json!({"metadata": {"deletionTimestamp": "t", "finalizers": []}});
        assert!(finalized(&deleting));
        let held = json!({"metadata": {"deletionTimestamp": "t", "finalizers": ["x"]}});
        assert!(!finalized(&held));
        let namespace = json!({"kind": "Namespace", "metadata": {"deletionTimestamp": "t"},
            "spec": {"finalizers": ["kubernetes"]}});
        assert!(!finalized(&namespace));
        assert!(!finalized(&json!({"metadata": {}})));
    }
}
