//! Service-account tokens over the API: bearer authentication (also of the join token's
//! secret), TokenRequest
//! (`serviceaccounts/{name}/token`) and TokenReview. A token is valid while it is unexpired,
//! correctly signed, and its service account still exists with the same uid.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;

use super::write_request::WriteRequest;
use crate::auth::{Caller, User};
use crate::body;
use crate::guaranteed::current;
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;
use crate::tokens::{ISSUER, TokenSubject};

/// Shortest token lifetime upstream allows.
const MIN_SECONDS: i64 = 600;

/// The uid of the core object `plural`/`name` in `namespace`, if it exists and is not being
/// deleted.
async fn live_uid(state: &ApiState, plural: &str, namespace: &str, name: &str) -> Option<String> {
    let info = &state.registry.find("", "v1", plural)?;
    let key = storage::key(info, Some(namespace), name);
    // From the watch cache unless this server deleted the object recently, as upstream's
    // token authenticator reads its informer; from the store when the cache lacks it.
    let cached = state
        .recent_deletions
        .cached(&state.watch_cache, &key, state.clock.now());
    match cached {
        Some(looked) if looked.deleting() => None,
        Some(looked) => looked.uid,
        None => {
            let (kv, _) = state.store.get(&key, None).await.ok()?;
            let object = storage::decode(&kv?).ok()?;
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                return None;
            }
            object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_string)
        }
    }
}

/// Checks a bearer token: signature, lifetime, and that its service account still exists.
pub async fn authenticate(state: &ApiState, token: &str) -> Result<TokenSubject, String> {
    let subject = state.tokens.verify(token, state.clock.now().as_second())?;
    if let Some((pod, uid)) = &subject.pod
        && live_uid(state, "pods", &subject.namespace, pod)
            .await
            .as_ref()
            != Some(uid)
    {
        return Err(format!(
            "the pod {}/{pod} the token is bound to is gone",
            subject.namespace
        ));
    }
    match live_uid(state, "serviceaccounts", &subject.namespace, &subject.name).await {
        Some(uid) if uid == subject.uid => Ok(subject),
        Some(_) => Err("the service account was recreated: the token is no longer valid".into()),
        None => Err(format!(
            "service account {}/{} not found",
            subject.namespace, subject.name
        )),
    }
}

/// Who a node presenting the join token's secret is (upstream's bootstrap-token users are
/// `system:bootstrap:<token id>` in `system:bootstrappers`).
pub const JOIN_USER: &str = "system:bootstrap:join";

/// Compares a secret in time that does not depend on where the texts differ.
fn same_secret(secret: &str, given: &str) -> bool {
    secret.len() == given.len()
        && secret
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The caller named by an `Authorization: Bearer` header, if it carries a valid token.
pub async fn caller_from_bearer(state: &ApiState, headers: &http::HeaderMap) -> Caller {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Caller(None);
    };
    let token = token.trim();
    if state
        .join_secret
        .as_deref()
        .is_some_and(|secret| same_secret(secret, token))
    {
        return Caller(Some(User {
            name: JOIN_USER.into(),
            groups: vec!["system:bootstrappers".into(), "system:authenticated".into()],
        }));
    }
    match authenticate(state, token).await {
        Ok(subject) => Caller(Some(User {
            name: subject.username(),
            groups: subject.groups(),
        })),
        Err(reason) => {
            tracing::debug!(%reason, "bearer token rejected");
            Caller(None)
        }
    }
}

/// The audiences at `pointer` in `body`, or the API server's own when none are given.
fn audiences(body: &Value, pointer: &str) -> Vec<String> {
    body.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_string()])
}

/// The pod a TokenRequest binds its token to (`spec.boundObjectRef`, kind Pod): it must exist
/// with the uid given, as upstream checks.
async fn bound_pod(
    state: &ApiState,
    body: &Value,
    namespace: &str,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(reference) = body
        .pointer("/spec/boundObjectRef")
        .filter(|r| !r.is_null())
    else {
        return Ok(None);
    };
    let text = |field: &str| {
        reference
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if text("kind") != "Pod" {
        return Err(ApiError::BadRequest(format!(
            "spec.boundObjectRef.kind: Unsupported value: \"{}\": supported values: \"Pod\"",
            text("kind")
        )));
    }
    let name = text("name");
    let live = live_uid(state, "pods", namespace, name).await;
    match live {
        None => Err(ApiError::NotFound(Target::new("", "pods", name))),
        Some(uid) if !text("uid").is_empty() && uid != text("uid") => {
            Err(ApiError::ConflictMessage {
                target: Target::new("", "pods", name),
                message: format!(
                    "Operation cannot be fulfilled on pods \"{name}\": the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                    text("uid")
                ),
            })
        }
        Some(uid) => Ok(Some((name.to_string(), uid))),
    }
}

/// POST `serviceaccounts/{name}/token`: issues a token for the account.
pub async fn request(
    state: &ApiState,
    request: &WriteRequest<'_>,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    let body = body::object(request.headers, bytes)?;
    let namespace = request.namespace.unwrap_or("default");
    let target = Target::new("", "serviceaccounts", name);
    let key = storage::key(request.info, Some(namespace), name);
    let (_, account) = current(state, &key, &target).await?;
    let audiences = audiences(&body, "/spec/audiences");
    let seconds = body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if seconds < MIN_SECONDS {
        return Err(ApiError::BadRequest(format!(
            "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
        )));
    }
    let bound = bound_pod(state, &body, namespace).await?;
    let subject = TokenSubject {
        pod: bound.clone(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: account
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        audiences: audiences.clone(),
    };
    let now = state.clock.now().as_second();
    let token = state
        .tokens
        .issue(&subject, now, seconds)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let expiry = jiff::Timestamp::from_second(now + seconds)
        .map(crate::clock::rfc3339)
        .unwrap_or_default();
    let response = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": seconds,
            "boundObjectRef": body.pointer("/spec/boundObjectRef").filter(|_| bound.is_some()),
        },
        "status": {"token": token, "expirationTimestamp": expiry},
    });
    Ok(respond::value(StatusCode::CREATED, &response, Format::Json))
}

/// POST `tokenreviews`: tells whether a token is valid, for whom and for which audiences.
pub async fn review(state: &ApiState, review: &Value) -> Response {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let wanted = audiences(review, "/spec/audiences");
    let status = match authenticate(state, token).await {
        Ok(subject) => {
            let audiences: Vec<&String> = wanted
                .iter()
                .filter(|a| subject.audiences.contains(a))
                .collect();
            if audiences.is_empty() {
                json!({"authenticated": false, "user": {}, "error": "token audiences are invalid for the target audiences"})
            } else {
                json!({
                    "authenticated": true,
                    "user": {"username": subject.username(), "uid": subject.uid, "groups": subject.groups()},
                    "audiences": audiences,
                })
            }
        }
        Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
    };
    let response = json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": review.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": status,
    });
    respond::value(StatusCode::CREATED, &response, Format::Json)
}
