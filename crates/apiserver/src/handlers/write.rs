//! create, update and patch (deletion is in `delete.rs`). Every write is a compare-and-swap on the
//! object's resource version: an update that carries one gets 409 when it is stale; one that
//! does not (and every patch without a `metadata.resourceVersion` precondition) is retried on
//! the fresh object.

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{KeyValue, StoreError};

use super::params::Params;
use super::read::render_one;
use crate::apply;
use crate::auth::Caller;
use crate::body::{self, PatchType};
use crate::crd;
use crate::defaults;
use crate::objects::{self, meta_mut, meta_str};
use crate::patch;
use crate::respond::{self, Format};
use crate::shapes;
use crate::state::ApiState;
use crate::storage;

/// How many times a write without a precondition is retried on conflicts.
pub(super) const RETRIES: usize = 16;

/// What a write handler needs about its request.
pub struct WriteRequest<'a> {
    /// The resource.
    pub info: &'a ResourceInfo,
    /// The namespace in the path.
    pub namespace: Option<&'a str>,
    /// The query parameters.
    pub params: &'a Params,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The response format.
    pub format: Format,
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

async fn ensure_namespace(state: &ApiState, namespace: &str) -> Result<(), ApiError> {
    let info = &state
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::Internal("namespaces are not registered".into()))?;
    let target = Target::new("", "namespaces", namespace);
    let (kv, _) = state
        .store
        .get(&storage::key(info, None, namespace), None)
        .await
        .map_err(|e| storage::api_error(e, &target))?;
    let namespace_object = storage::decode(&kv.ok_or_else(|| ApiError::NotFound(target.clone()))?)?;
    if namespace_object
        .pointer("/metadata/deletionTimestamp")
        .is_some()
    {
        return Err(ApiError::Forbidden {
            target,
            message: format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        });
    }
    Ok(())
}

/// POST: creates an object.
pub async fn create(
    state: &ApiState,
    request: &WriteRequest<'_>,
    caller: &Caller,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    // The review's body carries nothing (kubectl sends it as protobuf): answer from the caller.
    if info.kind == "SelfSubjectReview" {
        return Ok(self_subject_review(caller));
    }
    let object = body::object(request.headers, bytes)?;
    if info.kind == "TokenReview" {
        return Ok(super::tokens::review(state, &object).await);
    }
    create_object(state, request, object, bytes, false).await
}

/// Creates `object` (a decoded body, or the result of an apply when `applied`).
async fn create_object(
    state: &ApiState,
    request: &WriteRequest<'_>,
    mut object: Value,
    bytes: &[u8],
    applied: bool,
) -> Result<Response, ApiError> {
    let info = request.info;
    objects::check_type(info, &mut object)?;
    objects::check_namespace(info, &mut object, request.namespace)?;
    let now = crate::clock::rfc3339(state.clock.now());
    let uid = uuid::Uuid::new_v4().to_string();
    let name = objects::prepare_create(info, &mut object, &now, &uid, &random_suffix())?;
    defaults::apply(info, &mut object);
    let unknown = admit(state, info, &mut object, None)?;
    if !applied {
        apply::record_update(
            &mut object,
            None,
            &shape(state, info),
            &writer(request, &now, ""),
        );
    }
    let warnings = field_validation(request.params, &unknown, bytes)?;
    crate::validation::prune(&mut object, &unknown);
    crate::validation::validate(info, &object)?;
    if let Some(namespace) = request.namespace.filter(|_| info.namespaced()) {
        ensure_namespace(state, namespace).await?;
    }
    if request.params.dry_run()? {
        return Ok(with_warnings(
            render_one(state, info, &object, request.format, StatusCode::CREATED),
            &warnings,
        ));
    }
    let key = storage::key(info, request.namespace, &name);
    let target = Target::new(&info.group, &info.plural, &name);
    // An existing object is a conflict, whatever it would have been allocated.
    if state
        .store
        .get(&key, None)
        .await
        .map_err(|e| storage::api_error(e, &target))?
        .0
        .is_some()
    {
        return Err(ApiError::AlreadyExists(target));
    }
    let allocation = defaults::allocate(state, info, &mut object, &name).await?;
    let revision = match state.store.create(&key, storage::encode(&object)?).await {
        Ok(revision) => revision,
        Err(error) => {
            defaults::release(state, allocation).await;
            return Err(storage::api_error(error, &target));
        }
    };
    meta_mut(&mut object)?.insert("resourceVersion".into(), json!(revision.to_string()));
    crd_written(state, info).await;
    Ok(with_warnings(
        render_one(state, info, &object, request.format, StatusCode::CREATED),
        &warnings,
    ))
}

/// The schema view server-side apply walks objects of `info` with.
pub(super) fn shape(state: &ApiState, info: &ResourceInfo) -> apply::shape::Shape {
    match state
        .registry
        .find_custom(&info.group, &info.version, &info.plural)
        .and_then(|c| c.schema)
    {
        Some(schema) => apply::shape::Shape::Custom(schema),
        None => apply::shape::Shape::builtin(&info.group, &info.kind),
    }
}

/// The field manager of a request: `fieldManager`, else the user agent's program name.
pub(super) fn writer<'a>(
    request: &'a WriteRequest<'_>,
    now: &'a str,
    subresource: &'a str,
) -> apply::Writer<'a> {
    let manager = request
        .params
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .map(String::from)
        .unwrap_or_else(|| {
            apply::default_manager(
                request
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            )
        });
    apply::Writer {
        manager,
        api_version: request.info.api_version(),
        now,
        subresource,
    }
}

pub(super) fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.kind == "CustomResourceDefinition"
}

/// After a CRD write: serve what it now defines before answering.
pub(super) async fn crd_written(state: &ApiState, info: &ResourceInfo) {
    if is_crd(info)
        && let Err(error) = crd::refresh(state).await
    {
        tracing::warn!(%error, "refreshing custom resources failed; the CRD watch retries");
    }
}

/// What every create and update goes through after defaulting: a CRD is accepted (names,
/// conditions); a custom object is defaulted, pruned and validated by its version's schema; a
/// built-in object is checked against its k8s-openapi type. A custom object's CEL rules see
/// `old` (the stored object) on updates. Returns the unknown fields.
fn admit(
    state: &ApiState,
    info: &ResourceInfo,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    if is_crd(info) {
        crd::accept(object, &state.registry.custom())?;
    }
    let Some(custom) = state
        .registry
        .find_custom(&info.group, &info.version, &info.plural)
    else {
        return shapes::check_shape(info, object);
    };
    let Some(schema) = &custom.schema else {
        return Ok(Vec::new());
    };
    let mut outcome = crd::schema::apply(schema, object);
    if outcome.causes.is_empty()
        && let Some(rules) = &custom.rules
    {
        outcome.causes = rules.check(schema, object, old);
    }
    if outcome.causes.is_empty() {
        return Ok(outcome.unknown);
    }
    Err(ApiError::Invalid {
        kind: format!("{}.{}", info.kind, info.group),
        target: Target::new(
            &info.group,
            &info.plural,
            meta_str(object, "name").unwrap_or_default(),
        ),
        causes: outcome.causes,
    })
}

/// Applies `fieldValidation` to the unknown fields of a request: `Strict` rejects them, `Warn`
/// (the default) reports them in `Warning` headers, `Ignore` drops them silently.
fn field_validation(
    params: &Params,
    unknown: &[String],
    bytes: &[u8],
) -> Result<Vec<String>, ApiError> {
    let duplicates = crate::duplicates::duplicate_fields(bytes);
    let messages = duplicates
        .iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .chain(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
    match params.get("fieldValidation").unwrap_or("Warn") {
        "Ignore" => Ok(Vec::new()),
        "Warn" => Ok(messages.collect()),
        "Strict" if unknown.is_empty() && duplicates.is_empty() => Ok(Vec::new()),
        "Strict" => Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            messages.collect::<Vec<_>>().join(", ")
        ))),
        other => Err(ApiError::BadRequest(format!(
            "fieldValidation must be one of Ignore, Warn or Strict, not \"{other}\""
        ))),
    }
}

/// Adds `Warning: 299 - "..."` headers, as upstream reports warnings.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    response
}

fn self_subject_review(caller: &Caller) -> Response {
    let (name, groups) = caller
        .0
        .as_ref()
        .map(|u| (u.name.clone(), u.groups.clone()))
        .unwrap_or_else(|| {
            (
                "system:anonymous".into(),
                vec!["system:unauthenticated".into()],
            )
        });
    let review = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": name, "groups": groups}},
    });
    respond::value(StatusCode::CREATED, &review, Format::Json)
}

pub(super) async fn current(
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

/// Writes `new` over `old` (compare-and-swap on `expected`). An object that is being deleted and
/// has no finalizers left is removed instead. Returns the stored object.
pub(super) async fn write_over(
    state: &ApiState,
    key: &str,
    target: &Target,
    old: &KeyValue,
    mut new: Value,
    expected: i64,
) -> Result<Value, StoreError> {
    let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && !super::delete::spec_finalizers_pending(&new);
    if finalized {
        let (revision, _) = state.store.delete(key, Some(expected)).await?;
        defaults::release_for(state, &new).await;
        if let Ok(meta) = meta_mut(&mut new) {
            meta.insert("resourceVersion".into(), json!(revision.to_string()));
        }
        return Ok(new);
    }
    let encoded = storage::encode(&new).map_err(|e| StoreError::Storage(e.to_string()))?;
    // A write that changes nothing is not a write: no new revision, no watch event. Field
    // order does not count, nor do the times of managedFields entries (upstream keeps the old
    // ones when nothing else changed), so a controller re-applying the same object settles.
    if expected == old.mod_revision
        && let Some(stored) = unchanged(&old.value, &encoded)
    {
        let meta = meta_mut(&mut new).map_err(|e| StoreError::Storage(e.to_string()))?;
        meta.insert(
            "resourceVersion".into(),
            json!(old.mod_revision.to_string()),
        );
        if let Some(fields) = stored.pointer("/metadata/managedFields") {
            meta.insert("managedFields".into(), fields.clone());
        }
        return Ok(new);
    }
    let _ = target;
    let revision = state.store.update(key, encoded, expected).await?;
    if let Ok(meta) = meta_mut(&mut new) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
    Ok(new)
}

/// The stored object, when `new` says the same thing (see `write_over`).
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

fn check_finalizers(new: &Value, old: &Value, target: &Target, kind: &str) -> Result<(), ApiError> {
    if old.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    let list = |v: &Value| -> Vec<Value> {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let before = list(old);
    if list(new).iter().any(|f| !before.contains(f)) {
        return Err(ApiError::Forbidden {
            target: target.clone(),
            message: format!(
                "{kind} \"{}\" is forbidden: no new finalizers can be added if the object is being deleted",
                target.name
            ),
        });
    }
    Ok(())
}

/// PUT: replaces an object (or its status).
pub async fn update(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    subresource: Option<&str>,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    let mut incoming = body::object(request.headers, bytes)?;
    objects::check_type(info, &mut incoming)?;
    objects::check_namespace(info, &mut incoming, request.namespace)?;
    match meta_str(&incoming, "name") {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        None => {
            meta_mut(&mut incoming)?.insert("name".into(), json!(name));
        }
    }
    let precondition = meta_str(&incoming, "resourceVersion")
        .map(storage::parse_revision)
        .transpose()?;
    let target = Target::new(&info.group, &info.plural, name);
    let key = storage::key(info, request.namespace, name);
    for _ in 0..RETRIES {
        let (kv, old) = current(state, &key, &target).await?;
        let attempt = Attempt {
            applied: false,
            key: &key,
            target: &target,
            subresource,
            kv: &kv,
            old: &old,
        };
        if let Some(response) = replace(
            state,
            request,
            &attempt,
            incoming.clone(),
            precondition,
            bytes,
        )
        .await?
        {
            return Ok(response);
        }
    }
    Err(ApiError::Conflict(target))
}

/// What one write attempt replaces.
struct Attempt<'a> {
    /// Whether `new` is the result of a server-side apply (which records its own fields).
    applied: bool,
    key: &'a str,
    target: &'a Target,
    subresource: Option<&'a str>,
    kv: &'a KeyValue,
    old: &'a Value,
}

/// The shared tail of update and patch: server-owned fields, defaults, shape and field
/// validation, finalizer rules, then one compare-and-swap. `Ok(None)` means the object changed
/// underneath a write without a precondition: the caller retries on the fresh object.
async fn replace(
    state: &ApiState,
    request: &WriteRequest<'_>,
    attempt: &Attempt<'_>,
    mut new: Value,
    precondition: Option<skiff_store::Revision>,
    bytes: &[u8],
) -> Result<Option<Response>, ApiError> {
    let info = request.info;
    objects::prepare_update(info, &mut new, attempt.old, attempt.subresource)?;
    defaults::apply(info, &mut new);
    defaults::keep_allocations(info, &mut new, attempt.old);
    let unknown = admit(state, info, &mut new, Some(attempt.old))?;
    let warnings = field_validation(request.params, &unknown, bytes)?;
    crate::validation::prune(&mut new, &unknown);
    crate::validation::validate(info, &new)?;
    if !attempt.applied {
        let now = crate::clock::rfc3339(state.clock.now());
        let writer = writer(request, &now, attempt.subresource.unwrap_or_default());
        apply::record_update(&mut new, Some(attempt.old), &shape(state, info), &writer);
    }
    check_finalizers(&new, attempt.old, attempt.target, &info.kind)?;
    let reply = |object: &Value| {
        with_warnings(
            render_one(state, info, object, request.format, StatusCode::OK),
            &warnings,
        )
    };
    if request.params.dry_run()? {
        return Ok(Some(reply(&new)));
    }
    let expected = precondition.unwrap_or(attempt.kv.mod_revision);
    match write_over(
        state,
        attempt.key,
        attempt.target,
        attempt.kv,
        new,
        expected,
    )
    .await
    {
        Ok(stored) => {
            crd_written(state, info).await;
            Ok(Some(reply(&stored)))
        }
        Err(StoreError::Conflict { .. }) if precondition.is_none() => Ok(None),
        Err(error) => Err(storage::api_error(error, attempt.target)),
    }
}

/// PATCH: applies a JSON, merge or strategic merge patch.
pub async fn patch(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    subresource: Option<&str>,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    let (kind, patch_body) = body::patch(request.headers, bytes)?;
    let target = Target::new(&info.group, &info.plural, name);
    let key = storage::key(info, request.namespace, name);
    if kind == PatchType::Apply {
        if request.params.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::Invalid {
                kind: "PatchOptions.meta.k8s.io".into(),
                target: Target::new("meta.k8s.io", "patchoptions", ""),
                causes: vec![skiff_apimachinery::status::Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: is required for apply patch".into(),
                    field: "fieldManager".into(),
                }],
            });
        }
        if !patch_body.is_object() {
            return Err(ApiError::BadRequest(
                "an apply patch must be an object".into(),
            ));
        }
    }
    for _ in 0..RETRIES {
        let (kv, old) = match current(state, &key, &target).await {
            Err(ApiError::NotFound(_)) if kind == PatchType::Apply && subresource.is_none() => {
                let now = crate::clock::rfc3339(state.clock.now());
                let mut object = apply::apply(
                    None,
                    &patch_body,
                    &shape(state, info),
                    &writer(request, &now, ""),
                    request.params.flag("force"),
                    &target,
                )?;
                meta_mut(&mut object)?.insert("name".into(), json!(name));
                return create_object(state, request, object, bytes, true).await;
            }
            other => other?,
        };
        let mut new = old.clone();
        if kind == PatchType::Apply {
            let now = crate::clock::rfc3339(state.clock.now());
            new = apply::apply(
                Some(&old),
                &patch_body,
                &shape(state, info),
                &writer(request, &now, subresource.unwrap_or_default()),
                request.params.flag("force"),
                &target,
            )?;
        } else {
            let schema = crate::schemas::root_name(&info.group, &info.kind);
            patch::apply(kind, &mut new, &patch_body, schema.as_deref())?;
        }
        objects::check_type(info, &mut new)?;
        objects::check_namespace(info, &mut new, request.namespace)?;
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::BadRequest(
                "the patch may not change the object's name".into(),
            ));
        }
        // A resourceVersion in the patch is a precondition; otherwise patch the fresh object.
        let precondition = match meta_str(&new, "resourceVersion") {
            Some(rv) if rv != kv.mod_revision.to_string() => Some(storage::parse_revision(rv)?),
            _ => None,
        };
        if kind == PatchType::Json || precondition.is_none() {
            meta_mut(&mut new)?.remove("resourceVersion");
        }
        let attempt = Attempt {
            applied: kind == PatchType::Apply,
            key: &key,
            target: &target,
            subresource,
            kv: &kv,
            old: &old,
        };
        if let Some(response) = replace(state, request, &attempt, new, precondition, bytes).await? {
            return Ok(response);
        }
    }
    Err(ApiError::Conflict(target))
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
}
