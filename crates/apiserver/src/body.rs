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

/// The most YAML events that aliases may replay in one body. An alias repeats its anchor's
/// whole subtree, so nested aliases grow exponentially ("billion laughs": a few hundred bytes
/// that expand to 9^9 strings, and with serde-saphyr's default of a million replayed events grew
/// the server by 120 MiB before it refused them); this bounds what a small body can cost, while
/// leaving room for a manifest that reuses a block of 40 events 250 times.
pub const MAX_YAML_ALIAS_EVENTS: usize = 10_000;

/// Parses JSON or YAML bytes into a JSON value.
pub fn parse(bytes: &[u8], yaml: bool) -> Result<Value, ApiError> {
    if yaml {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest("the YAML body is not UTF-8".into()))?;
        let options = serde_saphyr::options! {
            alias_limits: serde_saphyr::alias_limits! {
                max_total_replayed_events: MAX_YAML_ALIAS_EVENTS,
            },
        };
        serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
            if excessive_aliasing(&e) {
                // Upstream's YAML decoder (go-yaml) refuses the same with these words.
                ApiError::BadRequest(format!(
                    "error decoding YAML: yaml: document contains excessive aliasing (over \
                     {MAX_YAML_ALIAS_EVENTS} events replayed by aliases)"
                ))
            } else {
                ApiError::BadRequest(format!("error decoding YAML: {e}"))
            }
        })
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::BadRequest(format!("error decoding JSON: {e}")))
    }
}

/// Whether decoding stopped at one of the alias limits (under the wrappers that add the
/// source snippet and the alias's location).
fn excessive_aliasing(mut error: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error;
    while let Error::WithSnippet { error: inner, .. } | Error::AliasError { error: inner, .. } =
        error
    {
        error = inner;
    }
    matches!(
        error,
        Error::AliasReplayLimitExceeded { .. }
            | Error::AliasExpansionLimitExceeded { .. }
            | Error::AliasReplayStackDepthExceeded { .. }
            | Error::AliasReplayCounterOverflow { .. }
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// "Billion laughs": nine levels of nine aliases each, 9^9 strings from a few hundred bytes.
    fn billion_laughs() -> String {
        let mut yaml = String::from("a: &a [");
        yaml.push_str(&["\"lol\""; 9].join(","));
        yaml.push_str("]\n");
        for (previous, level) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let aliases = vec![format!("*{previous}"); 9].join(",");
            yaml.push_str(&format!("{level}: &{level} [{aliases}]\n"));
        }
        yaml
    }

    #[test]
    fn yaml_alias_bomb_should_be_refused_as_a_bad_request_early() {
        let bomb = billion_laughs();
        let started = std::time::Instant::now();
        let error = parse(bomb.as_bytes(), true).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(
            error
                .to_string()
                .contains("yaml: document contains excessive aliasing"),
            "{error}"
        );
        // Refused after at most MAX_YAML_ALIAS_EVENTS replayed events, not a million.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn yaml_aliases_within_the_limit_should_still_decode() {
        let env = (0..20)
            .map(|i| format!("{{name: V{i}, value: x}}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut yaml = format!("env: &env [{env}]\ncontainers:\n");
        for i in 0..50 {
            yaml.push_str(&format!("- {{name: c{i}, env: *env}}\n"));
        }
        let value = parse(yaml.as_bytes(), true).unwrap();
        assert_eq!(value["containers"][49]["env"][19]["name"], "V19");
    }

    #[test]
    fn other_yaml_errors_should_keep_their_message() {
        let error = parse(b"a: *undefined\n", true).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(!error.to_string().contains("excessive aliasing"), "{error}");
    }
}
