//! `pods/exec`, `pods/attach` and `pods/portforward`: upgrade requests (WebSocket or SPDY)
//! passed on to the agent of the pod's node with their query and upgrade headers; once the
//! agent switches protocols the API server answers `101` with the agent's headers and pipes
//! the two connections, so the agent speaks to the caller directly. An agent's refusal comes
//! back as the agent wrote it (kubectl shows `unable to upgrade connection: <why>`, as against
//! upstream's kubelet).

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use skiff_apimachinery::ApiError;

use super::node_agent;
use super::params::Params;
use crate::state::ApiState;

/// The headers an upgrade carries on to the agent.
const UPGRADE_REQUEST: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// The headers of the agent's `101` passed back.
const UPGRADE_RESPONSE: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Serves `subresource` (`exec`, `attach` or `portforward`) of the pod `namespace/name`.
pub async fn serve(
    state: &ApiState,
    namespace: &str,
    name: &str,
    subresource: &str,
    parts: &http::request::Parts,
    params: &Params,
) -> Result<Response, ApiError> {
    let agent = node_agent::locate(state, namespace, name).await?;
    let upgrade = parts
        .extensions
        .get::<hyper::upgrade::OnUpgrade>()
        .cloned()
        .filter(|_| parts.headers.contains_key(header::UPGRADE))
        .ok_or_else(|| ApiError::BadRequest("Upgrade request required".into()))?;
    let path = match subresource {
        "portforward" => format!("/portForward/{namespace}/{name}"),
        _ => {
            let container = node_agent::container(&agent.pod, name, params.get("container"))?;
            format!("/{subresource}/{namespace}/{name}/{container}")
        }
    };
    let path = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut request = http::Request::builder()
        .method(parts.method.clone())
        .uri(path);
    for name in UPGRADE_REQUEST {
        for value in parts.headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut answer = agent
        .at
        .client
        .send(agent.at.address, agent.at.port, request)
        .await
        .map_err(|e| agent.at.unreachable(&e))?;
    let status = answer.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| agent.at.unreachable(&e))?
            .to_bytes();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(response);
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in UPGRADE_RESPONSE {
        for value in answer.headers().get_all(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    let from_agent = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (Ok(caller), Ok(agent)) = (upgrade.await, from_agent.await) else {
            return;
        };
        let (mut caller, mut agent) = (TokioIo::new(caller), TokioIo::new(agent));
        if let Err(error) = tokio::io::copy_bidirectional(&mut caller, &mut agent).await {
            tracing::debug!(%error, "a streaming session ended with an error");
        }
    });
    Ok(response)
}
