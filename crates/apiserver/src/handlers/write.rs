//! create, update, patch, delete and deletecollection. Every write is a compare-and-swap on the
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
use super::read::{self, render_one};
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

/// Namespaces that can never be deleted.
const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

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
    let unknown = admit(state, info, &mut object)?;
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

fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.kind == "CustomResourceDefinition"
}

/// After a CRD write: serve what it now defines before answering.
async fn crd_written(state: &ApiState, info: &ResourceInfo) {
    if is_crd(info)
        && let Err(error) = crd::refresh(state).await
    {
        tracing::warn!(%error, "refreshing custom resources failed; the CRD watch retries");
    }
}

/// What every create and update goes through after defaulting: a CRD is accepted (names,
/// conditions); a custom object is defaulted, pruned and validated by its version's schema; a
/// built-in object is checked against its k8s-openapi type. Returns the unknown fields.
fn admit(
    state: &ApiState,
    info: &ResourceInfo,
    object: &mut Value,
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
    let outcome = crd::schema::apply(schema, object);
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
            .is_none_or(Vec::is_empty);
    if finalized {
        let (revision, _) = state.store.delete(key, Some(expected)).await?;
        if let Ok(meta) = meta_mut(&mut new) {
            meta.insert("resourceVersion".into(), json!(revision.to_string()));
        }
        return Ok(new);
    }
    let encoded = storage::encode(&new).map_err(|e| StoreError::Storage(e.to_string()))?;
    // A write that changes nothing is not a write: no new revision, no watch event.
    if encoded == old.value && expected == old.mod_revision {
        if let Ok(meta) = meta_mut(&mut new) {
            meta.insert(
                "resourceVersion".into(),
                json!(old.mod_revision.to_string()),
            );
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
    let unknown = admit(state, info, &mut new)?;
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

/// DeleteOptions preconditions (`preconditions.uid`, `preconditions.resourceVersion`).
fn check_preconditions(options: &Value, object: &Value, target: &Target) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    if let Some(uid) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
        && meta_str(object, "uid") != Some(uid)
    {
        problems.push(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta_str(object, "uid").unwrap_or_default()
        ));
    }
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        && meta_str(object, "resourceVersion") != Some(rv)
    {
        problems.push(format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta_str(object, "resourceVersion").unwrap_or_default()
        ));
    }
    match problems.pop() {
        None => Ok(()),
        Some(message) => Err(ApiError::ConflictMessage {
            target: target.clone(),
            message,
        }),
    }
}

/// DELETE on one object. Objects with finalizers are marked (`deletionTimestamp`) and stay until
/// the finalizers are gone.
pub async fn delete(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    let options = if bytes.is_empty() {
        json!({})
    } else {
        body::object(request.headers, bytes)?
    };
    let target = Target::new(&info.group, &info.plural, name);
    if info.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name) {
        return Err(ApiError::Forbidden {
            target,
            message: format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ),
        });
    }
    let dry_run = request.params.dry_run()?;
    let key = storage::key(info, request.namespace, name);
    for _ in 0..RETRIES {
        let (kv, mut object) = current(state, &key, &target).await?;
        check_preconditions(&options, &object, &target)?;
        if dry_run {
            return Ok(render_one(
                state,
                info,
                &object,
                request.format,
                StatusCode::OK,
            ));
        }
        let has_finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(render_one(
                    state,
                    info,
                    &object,
                    request.format,
                    StatusCode::OK,
                ));
            }
            let now = crate::clock::rfc3339(state.clock.now());
            let meta = meta_mut(&mut object)?;
            meta.insert("deletionTimestamp".into(), json!(now));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            match write_over(state, &key, &target, &kv, object, kv.mod_revision).await {
                Ok(stored) => {
                    crd_written(state, info).await;
                    return Ok(render_one(
                        state,
                        info,
                        &stored,
                        request.format,
                        StatusCode::OK,
                    ));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(storage::api_error(error, &target)),
            }
        }
        if info.kind == "Namespace" {
            delete_namespace_contents(state, name).await?;
        }
        if is_crd(info) {
            let purged = crd::purge(state, &object).await?;
            tracing::info!(crd = name, objects = purged, "CRD deleted with its objects");
        }
        match state.store.delete(&key, Some(kv.mod_revision)).await {
            Ok((revision, _)) => {
                defaults::release_for(state, info, &object).await;
                crd_written(state, info).await;
                meta_mut(&mut object)?
                    .insert("resourceVersion".into(), json!(revision.to_string()));
                return Ok(render_one(
                    state,
                    info,
                    &object,
                    request.format,
                    StatusCode::OK,
                ));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(storage::api_error(error, &target)),
        }
    }
    Err(ApiError::Conflict(target))
}

/// Deletes every namespaced object in `namespace`, of every resource.
async fn delete_namespace_contents(state: &ApiState, namespace: &str) -> Result<(), ApiError> {
    let everything = Params::default();
    for info in state.registry.all().iter().filter(|r| r.namespaced()) {
        let listed = read::list_objects(state, info, Some(namespace), &everything).await?;
        for object in listed.items {
            let Some(name) = meta_str(&object, "name") else {
                continue;
            };
            let key = storage::key(info, Some(namespace), name);
            match state.store.delete(&key, None).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {
                    defaults::release_for(state, info, &object).await;
                }
                Err(error) => {
                    return Err(storage::api_error(
                        error,
                        &Target::new(&info.group, &info.plural, name),
                    ));
                }
            }
        }
    }
    Ok(())
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
