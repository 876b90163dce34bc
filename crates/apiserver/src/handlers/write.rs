//! create, update and patch (deletion is in `delete.rs`). Updates and patches are guaranteed
//! updates (`crate::guaranteed`): an update that carries a resourceVersion gets 409 when it is
//! stale; one that does not (and every patch without a `metadata.resourceVersion`
//! precondition) is retried on the fresh object. Every replacement of a stored object, here and
//! in the scale subresource, is prepared by `prepare_replacement`.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};

use super::params::Params;
use super::read::{render_one, render_written};
use super::write_request::WriteRequest;
use crate::allocation;
use crate::apply;
use crate::auth::Caller;
use crate::body::{self, PatchType};
use crate::crd;
use crate::guaranteed::{
    self, Decision, Outcome, check_uid_precondition, crd_written, guaranteed_update, is_crd,
};
use crate::objects::{self, meta_mut, meta_str};
use crate::patch;
use crate::respond::{self, Format};
use crate::shapes;
use crate::state::ApiState;
use crate::storage;
use crate::strategy::{self, Create};

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Refuses a create of `object` (as errors name it) in a namespace that is missing (404) or
/// terminating (403, upstream's NamespaceLifecycle wording).
async fn ensure_namespace(
    state: &ApiState,
    namespace: &str,
    object: &Target,
) -> Result<(), ApiError> {
    let info = &state
        .registry
        .find("", "v1", "namespaces")
        .ok_or_else(|| ApiError::Internal("namespaces are not registered".into()))?;
    let target = Target::new("", "namespaces", namespace);
    let key = storage::key(info, None, namespace);
    // From the watch cache when it has the namespace, as upstream's NamespaceLifecycle reads its
    // informer; from the store when the cache lacks it (it may have just been created) or when
    // this server deleted it recently (the cache may not have seen that yet).
    let cached = state
        .recent_deletions
        .cached(&state.watch_cache, &key, state.clock.now());
    let terminating = match cached {
        Some(looked) => looked.deleting(),
        None => crate::guaranteed::current(state, &key, &target)
            .await?
            .1
            .pointer("/metadata/deletionTimestamp")
            .is_some(),
    };
    if terminating {
        return Err(ApiError::Forbidden {
            target: object.clone(),
            message: format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                object.resource, object.name
            ),
        });
    }
    Ok(())
}

/// A CertificateSigningRequest names who asked for it: the caller, whatever the body says
/// (upstream's `PrepareForCreate`), so approvers can trust `spec.username` and `spec.groups`.
fn requested_by(object: &mut Value, caller: &Caller) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let (name, groups) = match &caller.0 {
        Some(user) => (user.name.clone(), user.groups.clone()),
        None => (
            "system:anonymous".into(),
            vec!["system:unauthenticated".into()],
        ),
    };
    spec.insert("username".into(), json!(name));
    spec.insert("groups".into(), json!(groups));
    spec.remove("uid");
    spec.remove("extra");
}

/// POST: creates an object.
pub async fn create(
    state: &ApiState,
    request: &WriteRequest<'_>,
    caller: &Caller,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    match strategy::of(request.info).create {
        // The review's body carries nothing (kubectl sends it as protobuf): answer from the
        // caller.
        Create::SelfSubjectReview => Ok(self_subject_review(caller)),
        Create::TokenReview => {
            let object = body::object(request.headers, bytes)?;
            Ok(super::tokens::review(state, &object).await)
        }
        Create::Store => {
            let mut object = body::object(request.headers, bytes)?;
            if request.info.group == "certificates.k8s.io" {
                requested_by(&mut object, caller);
            }
            create_object(state, request, object, bytes, false).await
        }
    }
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
    request.check_object(&mut object)?;
    let now = crate::clock::rfc3339(state.clock.now());
    let uid = uuid::Uuid::new_v4().to_string();
    let name = objects::prepare_create(info, &mut object, &now, &uid, &random_suffix())?;
    strategy::default(info, &mut object);
    if info.group.is_empty() && info.plural == "pods" {
        crate::priority::admit(state, &mut object, &name).await?;
        let namespace = request.namespace.unwrap_or("default");
        crate::service_accounts::admit(state, &mut object, namespace, &name, &random_suffix())
            .await?;
    }
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
        let target = Target::new(&info.group, &info.plural, &name);
        ensure_namespace(state, namespace, &target).await?;
    }
    if request.params.dry_run()? {
        return Ok(with_warnings(
            render_one(state, info, &object, request.format, StatusCode::CREATED),
            &warnings,
        ));
    }
    let key = storage::key(info, request.namespace, &name);
    let target = Target::new(&info.group, &info.plural, &name);
    // An existing object is a conflict, whatever it would have been allocated (without an
    // allocation, the store's create answers that itself: no read first).
    if allocation::allocates(info, &object)
        && state
            .store
            .get(&key, None)
            .await
            .map_err(|e| storage::api_error(e, &target))?
            .0
            .is_some()
    {
        return Err(ApiError::AlreadyExists(target));
    }
    let allocation = allocation::allocate(state, info, &mut object, &name).await?;
    // In the order it is stored and sent in, so the answer is rendered without a copy.
    storage::canonical_order(&mut object);
    let encoded = storage::encode(&object)?;
    let revision = match state.store.create(&key, encoded.bytes.clone()).await {
        Ok(revision) => revision,
        Err(error) => {
            allocation::release(state, allocation).await;
            return Err(storage::api_error(error, &target));
        }
    };
    meta_mut(&mut object)?.insert("resourceVersion".into(), json!(revision.to_string()));
    crd_written(state, info).await;
    let stored = storage::Stored { encoded, revision };
    let response = render_written(
        state,
        info,
        &object,
        Some(&stored),
        request.format,
        StatusCode::CREATED,
    );
    guaranteed::remember(state, info, &key, Outcome::Written(object, Some(stored)));
    Ok(with_warnings(response, &warnings))
}

/// Whether `info` is a custom resource.
pub(super) fn is_custom(state: &ApiState, info: &ResourceInfo) -> bool {
    state
        .registry
        .find_custom(&info.group, &info.version, &info.plural)
        .is_some()
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
        resets_status: subresource.is_empty() && request.info.has_subresource("status"),
        only_status: false,
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
        return check_builtin(info, object, old);
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

/// A built-in object's shape check. managedFields equal to the stored ones were checked when
/// they were stored and are left out of the typed decode (a pod's are much of its decoding).
fn check_builtin(
    info: &ResourceInfo,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let kept = match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) if stored.is_some() && meta.get("managedFields") == stored => {
            meta.shift_remove("managedFields")
        }
        _ => None,
    };
    let checked = shapes::check_shape(info, object);
    if let Some(fields) = kept
        && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("managedFields".into(), fields);
    }
    checked
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
    let incoming = replacement(request, bytes)?;
    crate::validation::check_url_name(&incoming, name)?;
    let precondition = meta_str(&incoming, "resourceVersion")
        .map(storage::parse_revision)
        .transpose()?;
    let target = Target::new(&info.group, &info.plural, name);
    let key = storage::key(info, request.namespace, name);
    let site = request.site(&key, &target)?;
    let mut warnings = Vec::new();
    // A uid in the body is a precondition on the stored object (upstream's
    // `defaultUpdatedObjectInfo.Preconditions`).
    let uid = meta_str(&incoming, "uid")
        .filter(|uid| !uid.is_empty())
        .map(str::to_string);
    // The first attempt takes the decoded body; a retry (rare) decodes it again rather than
    // every write copying it.
    let mut first = Some(incoming);
    let outcome = guaranteed_update(state, site, |_, old| {
        if let Some(uid) = &uid {
            check_uid_precondition(uid, old, &target)?;
        }
        let incoming = match first.take() {
            Some(incoming) => incoming,
            None => replacement(request, bytes)?,
        };
        let change = Change {
            old,
            target: &target,
            subresource,
            applied: false,
            bytes,
        };
        let (object, found) = prepare_replacement(state, request, &change, incoming)?;
        warnings = found;
        Ok(Decision::Write {
            object,
            precondition,
        })
    })
    .await?;
    Ok(reply(state, request, &key, outcome, &warnings))
}

/// A PUT's body as an object of the request's kind, in the request's namespace.
fn replacement(request: &WriteRequest<'_>, bytes: &[u8]) -> Result<Value, ApiError> {
    let mut incoming = body::object(request.headers, bytes)?;
    request.check_object(&mut incoming)?;
    Ok(incoming)
}

/// The answer to an update or patch of the object at `key`: the object as stored (or as
/// removed, when the write released its last finalizer), which is then kept for its next write.
fn reply(
    state: &ApiState,
    request: &WriteRequest<'_>,
    key: &str,
    outcome: Outcome,
    warnings: &[String],
) -> Response {
    let response = render_written(
        state,
        request.info,
        outcome.object(),
        outcome.stored(),
        request.format,
        StatusCode::OK,
    );
    guaranteed::remember(state, request.info, key, outcome);
    with_warnings(response, warnings)
}

/// What one replacement is made over.
pub(super) struct Change<'a> {
    /// The stored object.
    pub old: &'a Value,
    /// The object, as errors name it.
    pub target: &'a Target,
    /// The subresource written (`status`, `scale`, ...), if any.
    pub subresource: Option<&'a str>,
    /// Whether the new object is the result of a server-side apply (which records its own
    /// fields).
    pub applied: bool,
    /// The request body, for `fieldValidation`'s duplicate fields.
    pub bytes: &'a [u8],
}

/// What every replacement of a stored object goes through (update, patch, apply, scale,
/// status): server-owned fields, defaults, admission (shape or schema), field validation,
/// per-kind validation, managedFields and the finalizer rules. Returns the object to write and
/// the warnings for the caller.
pub(super) fn prepare_replacement(
    state: &ApiState,
    request: &WriteRequest<'_>,
    change: &Change<'_>,
    mut new: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let info = request.info;
    crate::validation::check_uid(info, &new, change.old)?;
    objects::prepare_update(info, &mut new, change.old, change.subresource)?;
    strategy::default(info, &mut new);
    allocation::keep_allocations(info, &mut new, change.old);
    let unknown = admit(state, info, &mut new, Some(change.old))?;
    let warnings = field_validation(request.params, &unknown, change.bytes)?;
    crate::validation::prune(&mut new, &unknown);
    crate::validation::validate(info, &new)?;
    crate::validation::validate_update(info, &new, change.old)?;
    if !change.applied {
        let now = crate::clock::rfc3339(state.clock.now());
        let subresource = change.subresource.unwrap_or_default();
        let writer = apply::Writer {
            // A custom resource's schema may default or prune more than status (`admit`).
            only_status: objects::writes_only_status(subresource) && !is_custom(state, info),
            ..writer(request, &now, subresource)
        };
        apply::record_update(&mut new, Some(change.old), &shape(state, info), &writer);
    }
    check_finalizers(&new, change.old, change.target, &info.kind)?;
    Ok((new, warnings))
}

/// PATCH: applies a JSON, merge or strategic merge patch, or a server-side apply.
pub async fn patch(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    subresource: Option<&str>,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let info = request.info;
    let (kind, patch_body) = body::patch(request.headers, bytes)?;
    patch::check_type(kind, is_custom(state, info))?;
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
    let site = request.site(&key, &target)?;
    let mut warnings = Vec::new();
    let outcome = guaranteed_update(state, site, |revision, old| {
        let mut new = if kind == PatchType::Apply {
            let now = crate::clock::rfc3339(state.clock.now());
            apply::apply(
                Some(old),
                &patch_body,
                &shape(state, info),
                &writer(request, &now, subresource.unwrap_or_default()),
                request.params.flag("force"),
                &target,
            )?
        } else {
            let mut new = old.clone();
            let schema = crate::schemas::root_name(&info.group, &info.kind);
            patch::apply(kind, &mut new, &patch_body, schema.as_deref())?;
            new
        };
        request.check_object(&mut new)?;
        crate::validation::check_url_name(&new, name)?;
        // A resourceVersion in the patch is a precondition; otherwise patch the fresh object.
        let precondition = match meta_str(&new, "resourceVersion") {
            Some(rv) if rv != revision.to_string() => Some(storage::parse_revision(rv)?),
            _ => None,
        };
        if kind == PatchType::Json || precondition.is_none() {
            meta_mut(&mut new)?.remove("resourceVersion");
        }
        let change = Change {
            old,
            target: &target,
            subresource,
            applied: kind == PatchType::Apply,
            bytes,
        };
        let (object, found) = prepare_replacement(state, request, &change, new)?;
        warnings = found;
        Ok(Decision::Write {
            object,
            precondition,
        })
    })
    .await;
    match outcome {
        // An apply creates what does not exist yet.
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
            create_object(state, request, object, bytes, true).await
        }
        outcome => Ok(reply(state, request, &key, outcome?, &warnings)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skiff_apimachinery::resources::builtin;

    use super::*;

    #[test]
    fn a_shape_check_should_pass_over_stored_managed_fields_and_keep_them() {
        let pods = builtin().into_iter().find(|r| r.plural == "pods").unwrap();
        let fields = json!([{"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {}}}]);
        let old = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "managedFields": fields}, "spec": {}});
        let mut status = old.clone();
        status["status"] = json!({"phase": "Running"});
        assert!(check_builtin(&pods, &mut status, Some(&old)).is_ok());
        assert_eq!(status["metadata"]["managedFields"], fields);
        let mut wrong = old.clone();
        wrong["spec"]["nodeName"] = json!(7);
        assert!(check_builtin(&pods, &mut wrong, Some(&old)).is_err());
        let mut given = old.clone();
        given["metadata"]["managedFields"] = json!([{"manager": 7}]);
        assert!(check_builtin(&pods, &mut given, Some(&old)).is_err());
    }
}
