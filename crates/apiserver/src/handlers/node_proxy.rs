//! `nodes/{name}/proxy/{path}`: a GET passed to the node's agent at `/{path}` with its query (its
//! `/healthz`, `/containerLogs/...`), and the answer streamed back with its status and type.

use axum::body::Body;
use axum::response::Response;
use http::header;
use skiff_apimachinery::ApiError;

use super::node_agent;
use crate::state::ApiState;

/// Serves `nodes/{node}/proxy/{path}`.
pub async fn serve(
    state: &ApiState,
    node: &str,
    path: &str,
    parts: &http::request::Parts,
) -> Result<Response, ApiError> {
    if parts.method != http::Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let agent = node_agent::agent(state, node).await?;
    let target = match parts.uri.query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let answer = agent
        .client
        .get(agent.address, agent.port, &target)
        .await
        .map_err(|e| agent.unreachable(&e))?;
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = Response::new(Body::new(answer.into_body()));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}
