//! DELETE and deletecollection with upstream's semantics. Preconditions (`uid`,
//! `resourceVersion`) are checked first. An object with finalizers is only marked
//! (`deletionTimestamp`) and stays until they are gone. Garbage-collection propagation is
//! expressed as finalizers that the garbage collector acts on: `orphan` (dependents lose their
//! owner reference) and `foregroundDeletion` (the owner stays until its blocking dependents are
//! gone); background deletion removes the object at once and leaves its dependents to the
//! collector. A namespace turns `Terminating` and is emptied by the namespace controller, which
//! then removes the `kubernetes` entry of `spec.finalizers`.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::{Cause, Target};

use super::read::{self, render_one};
use super::write_request::WriteRequest;
use crate::body;
use crate::guaranteed::{
    Decision, Outcome, check_uid_precondition, guaranteed_update, spec_finalizers_pending,
};
use crate::objects::{meta_mut, meta_str};
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;
use crate::strategy;

/// The finalizer that makes the garbage collector orphan an owner's dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that keeps an owner until the collector has deleted its blocking dependents.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// `propagationPolicy` of DeleteOptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// The parts of DeleteOptions (body or query) that deletion acts on.
#[derive(Debug, Default)]
struct Options {
    propagation: Option<Propagation>,
    orphan_dependents: Option<bool>,
    uid: Option<String>,
    resource_version: Option<String>,
    grace_period: Option<i64>,
}

fn invalid_options(field: &str, message: String) -> ApiError {
    ApiError::Invalid {
        kind: "DeleteOptions.meta.k8s.io".into(),
        target: Target::new("meta.k8s.io", "deleteoptions", ""),
        causes: vec![Cause {
            reason: "FieldValueNotSupported".into(),
            message,
            field: field.into(),
        }],
    }
}

impl Options {
    /// Reads DeleteOptions from the body, with query parameters as the fallback.
    fn parse(body: &Value, request: &WriteRequest<'_>) -> Result<Self, ApiError> {
        let text = |field: &str| {
            body.get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| request.params.get(field).map(str::to_string))
        };
        let propagation = match text("propagationPolicy").as_deref() {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(invalid_options(
                    "propagationPolicy",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                ));
            }
        };
        let orphan_dependents = match body.get("orphanDependents") {
            Some(Value::Bool(b)) => Some(*b),
            _ => request
                .params
                .get("orphanDependents")
                .map(|v| matches!(v, "true" | "1")),
        };
        if propagation.is_some() && orphan_dependents.is_some() {
            return Err(invalid_options(
                "propagationPolicy",
                "orphanDependents and deletionPropagation cannot be both set".into(),
            ));
        }
        let precondition = |field: &str| {
            body.pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        // Already checked as a number by the query's validation; a body's is an integer.
        let grace_period = body
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| request.params.get("gracePeriodSeconds")?.parse().ok());
        Ok(Self {
            propagation,
            orphan_dependents,
            uid: precondition("uid"),
            resource_version: precondition("resourceVersion"),
            grace_period,
        })
    }

    fn check_preconditions(&self, object: &Value, target: &Target) -> Result<(), ApiError> {
        // (The resourceVersion's failure is the one reported when both fail, as upstream's.)
        if let Some(rv) = &self.resource_version
            && meta_str(object, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::ConflictMessage {
                target: target.clone(),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    target.qualified(),
                    target.name,
                    meta_str(object, "resourceVersion").unwrap_or_default()
                ),
            });
        }
        match &self.uid {
            Some(uid) => check_uid_precondition(uid, object, target),
            None => Ok(()),
        }
    }
}

fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The object's finalizers after this deletion request: the garbage-collection finalizers
/// follow an explicit policy, else the ones already present, else the kind's default.
fn finalizers_after(existing: &[String], options: &Options, default_orphan: bool) -> Vec<String> {
    let has = |f: &str| existing.iter().any(|e| e == f);
    let (orphan, foreground) = match (options.orphan_dependents, options.propagation) {
        (Some(orphan), _) => (orphan, false),
        (None, Some(policy)) => (
            policy == Propagation::Orphan,
            policy == Propagation::Foreground,
        ),
        (None, None) if has(ORPHAN_FINALIZER) => (true, false),
        (None, None) if has(FOREGROUND_FINALIZER) => (false, true),
        (None, None) => (default_orphan, false),
    };
    let mut out: Vec<String> = existing
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN_FINALIZER.into());
    }
    if foreground {
        out.push(FOREGROUND_FINALIZER.into());
    }
    let same_set = out.len() == existing.len() && out.iter().all(|f| has(f));
    if same_set { existing.to_vec() } else { out }
}

/// Marks `object` as being deleted: `deletionTimestamp` `grace` seconds from `now` (an earlier
/// one is kept), that grace period, the generation bumped once, and a namespace's phase
/// `Terminating`.
fn mark_deleting(
    object: &mut Value,
    finalizers: Vec<String>,
    now: jiff::Timestamp,
    grace: i64,
) -> Result<(), ApiError> {
    let namespace = object.get("kind").and_then(Value::as_str) == Some("Namespace");
    let meta = meta_mut(object)?;
    let at = now
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or(now);
    let earlier = meta
        .get("deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|set| set <= at);
    if !meta.contains_key("deletionTimestamp")
        && let Some(generation) = meta.get("generation").and_then(Value::as_i64)
        && generation > 0
    {
        meta.insert("generation".into(), json!(generation + 1));
    }
    if !earlier {
        meta.insert("deletionTimestamp".into(), json!(crate::clock::rfc3339(at)));
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(finalizers));
    }
    if namespace && let Some(map) = object.as_object_mut() {
        let status = map.entry("status").or_insert_with(|| json!({}));
        status["phase"] = json!("Terminating");
    }
    Ok(())
}

/// DELETE on one object.
pub async fn delete(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    let body = if bytes.is_empty() {
        json!({})
    } else {
        body::object(request.headers, bytes)?
    };
    let options = Options::parse(&body, request)?;
    let target = Target::new(&info.group, &info.plural, name);
    let strategy = strategy::of(info);
    if strategy.undeletable.contains(&name) {
        return Err(ApiError::Forbidden {
            target,
            message: format!(
                "{} \"{name}\" is forbidden: this {} may not be deleted",
                info.plural,
                info.kind.to_lowercase()
            ),
        });
    }
    let key = storage::key(info, request.namespace, name);
    if info.group.is_empty() && matches!(info.plural.as_str(), "namespaces" | "serviceaccounts") {
        // Before the write: a create in this namespace, or a token of this service account,
        // that follows the deletion must look it up live.
        state.recent_deletions.note(&key, state.clock.now());
    }
    let accepted = if options.orphan_dependents == Some(false) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let site = request.site(&key, &target)?;
    let outcome = guaranteed_update(state, site, |_, old| {
        options.check_preconditions(old, &target)?;
        let before = finalizers(old);
        let after = finalizers_after(&before, &options, strategy.orphans_by_default);
        // A graceful deletion only ever shortens the grace period an earlier one gave.
        let mut grace = (strategy.grace_period)(old, options.grace_period);
        if old.pointer("/metadata/deletionTimestamp").is_some()
            && let Some(given) = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
        {
            grace = grace.min(given);
        }
        if grace == 0 && after.is_empty() && !spec_finalizers_pending(old) {
            return Ok(Decision::Delete);
        }
        let mut object = old.clone();
        mark_deleting(&mut object, after, state.clock.now(), grace)?;
        Ok(Decision::Write {
            object,
            precondition: None,
        })
    })
    .await?;
    let status = match outcome {
        Outcome::Written(..) => accepted,
        Outcome::Deleted(_) => StatusCode::OK,
    };
    Ok(render_one(
        state,
        info,
        outcome.object(),
        request.format,
        status,
    ))
}

/// DELETE on a collection: deletes every selected object and returns them as a list.
pub async fn delete_collection(
    state: &ApiState,
    request: &WriteRequest<'_>,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    let listed = read::list_objects(state, info, request.namespace, request.params).await?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let Some(name) = meta_str(&object, "name").map(str::to_string) else {
            continue;
        };
        let namespace = meta_str(&object, "namespace").map(str::to_string);
        let one = WriteRequest {
            namespace: namespace.as_deref(),
            format: Format::Json,
            ..*request
        };
        match delete(state, &one, &name, bytes).await {
            Ok(_) | Err(ApiError::NotFound(_)) => deleted.push(object),
            Err(error) => return Err(error),
        }
    }
    let list = json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version(),
        "metadata": {"resourceVersion": listed.revision.to_string()},
        "items": deleted,
    });
    Ok(respond::value(StatusCode::OK, &list, Format::Json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn options(propagation: Option<Propagation>, orphan: Option<bool>) -> Options {
        Options {
            propagation,
            orphan_dependents: orphan,
            ..Options::default()
        }
    }

    #[test]
    fn explicit_policy_should_replace_the_gc_finalizers() {
        let existing = strings(&["example.com/x", ORPHAN_FINALIZER]);
        let out = finalizers_after(
            &existing,
            &options(Some(Propagation::Foreground), None),
            false,
        );
        assert_eq!(out, strings(&["example.com/x", FOREGROUND_FINALIZER]));
        let out = finalizers_after(
            &existing,
            &options(Some(Propagation::Background), None),
            false,
        );
        assert_eq!(out, strings(&["example.com/x"]));
    }

    #[test]
    fn no_policy_should_keep_existing_gc_finalizers_or_use_the_default() {
        let existing = strings(&[FOREGROUND_FINALIZER]);
        assert_eq!(
            finalizers_after(&existing, &options(None, None), true),
            existing
        );
        assert_eq!(
            finalizers_after(&[], &options(None, None), true),
            strings(&[ORPHAN_FINALIZER])
        );
        assert!(finalizers_after(&[], &options(None, None), false).is_empty());
        assert_eq!(
            finalizers_after(&[], &options(None, Some(true)), false),
            strings(&[ORPHAN_FINALIZER])
        );
    }
}
