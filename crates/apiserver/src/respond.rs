//! Responses: content negotiation on `Accept` (JSON, YAML, `as=Table`,
//! `as=PartialObjectMetadata[List]`), and errors as `Status` bodies.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use skiff_apimachinery::ApiError;

/// What representation the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Plain JSON.
    Json,
    /// YAML.
    Yaml,
    /// A `meta.k8s.io/v1` Table.
    Table,
    /// `PartialObjectMetadata` (or its list).
    Metadata,
    /// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`).
    Discovery,
}

/// Reads the client's preferred representation from `Accept`.
pub fn negotiate(headers: &HeaderMap) -> Result<Format, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mut only_unsupported = true;
    for choice in accept.split(',') {
        let mut parts = choice.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let params: Vec<&str> = parts.collect();
        let as_kind = params
            .iter()
            .find_map(|p| p.strip_prefix("as="))
            .unwrap_or_default();
        match media.as_str() {
            "application/json" | "*/*" | "application/*" | "" => {
                only_unsupported = false;
                match as_kind {
                    "Table" => return Ok(Format::Table),
                    "PartialObjectMetadata" | "PartialObjectMetadataList" => {
                        return Ok(Format::Metadata);
                    }
                    "APIGroupDiscoveryList"
                        if params.contains(&"g=apidiscovery.k8s.io")
                            && params.contains(&"v=v2") =>
                    {
                        return Ok(Format::Discovery);
                    }
                    "" => return Ok(Format::Json),
                    // An `as=` we do not serve (e.g. aggregated discovery): try the next.
                    _ => continue,
                }
            }
            "application/yaml" if as_kind.is_empty() => return Ok(Format::Yaml),
            _ => {}
        }
    }
    if only_unsupported {
        return Err(ApiError::NotAcceptable(format!(
            "only the following media types are accepted: application/json, application/yaml (asked for {accept})"
        )));
    }
    Ok(Format::Json)
}

/// A JSON (or YAML) response.
pub fn value<T: serde::Serialize>(status: StatusCode, value: &T, format: Format) -> Response {
    let (body, content_type) = if format == Format::Yaml {
        match serde_saphyr::to_string(value) {
            Ok(yaml) => (yaml.into_bytes(), "application/yaml"),
            Err(e) => return error(&ApiError::Internal(format!("encoding YAML: {e}"))),
        }
    } else if format == Format::Discovery {
        match serde_json::to_vec(value) {
            Ok(json) => (
                json,
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            ),
            Err(e) => return error(&ApiError::Internal(format!("encoding JSON: {e}"))),
        }
    } else {
        match serde_json::to_vec(value) {
            Ok(json) => (json, "application/json"),
            Err(e) => return error(&ApiError::Internal(format!("encoding JSON: {e}"))),
        }
    };
    with_body(status, body, content_type)
}

/// JSON written already, sent as it is.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response {
    with_body(status, body, "application/json")
}

fn with_body(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An error as a `Status` body with its HTTP code.
pub fn error(error: &ApiError) -> Response {
    let mut response = Response::new(Body::from(error.to_body()));
    *response.status_mut() =
        StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if error.code() >= 500 {
        tracing::warn!(code = error.code(), %error, "request failed");
    }
    response
}

/// Wraps results so handlers can use `?` with [`ApiError`].
pub struct Answer(pub Result<Response, ApiError>);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(response) => response,
            Err(e) => error(&e),
        }
    }
}
