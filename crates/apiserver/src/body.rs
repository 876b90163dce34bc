//! Request bodies: size limit (3 MiB, then 413), media types (a missing Content-Type means
//! JSON; YAML and client-go's protobuf are accepted), and the patch types.

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use skiff_apimachinery::ApiError;

/// The largest request body accepted.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How a PATCH body is to be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes strategic merge patch.
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`; JSON is YAML).
    Apply,
}

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes.
pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|error| {
        let over_the_limit =
            std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over_the_limit {
            ApiError::TooLarge { limit: MAX_BODY }
        } else {
            // The client broke off or sent a malformed body: its request is bad, not large.
            ApiError::BadRequest(format!("reading the request body: {error}"))
        }
    })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Parses JSON or YAML bytes into a JSON value.
pub fn parse(bytes: &[u8], yaml: bool) -> Result<Value, ApiError> {
    if yaml {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest("the YAML body is not UTF-8".into()))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding JSON: {e}")))
    }
}

/// Decodes an object body (create, update).
pub fn object(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let value = match media_type(headers).as_str() {
        "" | "application/json" | "*/*" => parse(bytes, false)?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => parse(bytes, true)?,
        skiff_protobuf::MEDIA_TYPE => skiff_protobuf::decode_object(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding protobuf: {e}")))?,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "application/json, application/yaml, {} (got {other})",
                skiff_protobuf::MEDIA_TYPE
            )));
        }
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest("the body must be an object".into()));
    }
    Ok(value)
}

/// Decodes a patch body and its type.
pub fn patch(headers: &HeaderMap, bytes: &[u8]) -> Result<(PatchType, Value), ApiError> {
    let kind = match media_type(headers).as_str() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" => PatchType::Apply,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"
            )));
        }
    };
    Ok((kind, parse(bytes, kind == PatchType::Apply)?))
}
