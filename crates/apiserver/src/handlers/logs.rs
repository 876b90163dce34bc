//! `pods/log`: a container's log, read by the agent of the pod's node and streamed through
//! (`kubectl logs`, with `follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`,
//! `timestamps` and `limitBytes` passed on). The container is checked here first, with
//! upstream's messages: a pod with several containers needs `container`, and a container that
//! has not started has no log yet.

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use serde_json::Value;
use skiff_apimachinery::ApiError;

use super::node_agent;
use super::params::Params;
use crate::state::ApiState;

/// The options the agent takes, passed on as given.
const PASSED: [&str; 7] = [
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
];

/// Why a container has no log to show yet, if so.
fn waiting(pod: &Value, name: &str, container: &str) -> Option<String> {
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/status/{f}"))?.as_array())
        .flatten();
    let mut found = false;
    for status in statuses.filter(|s| s["name"] == container) {
        found = true;
        let reason = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str);
        let ran = status.pointer("/lastState/terminated").is_some();
        if let Some(reason) = reason.filter(|_| !ran) {
            return Some(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            ));
        }
    }
    (!found).then(|| {
        format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )
    })
}

/// GET `pods/{name}/log`.
pub async fn pod_log(
    state: &ApiState,
    namespace: &str,
    name: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let agent = node_agent::locate(state, namespace, name).await?;
    let container = node_agent::container(&agent.pod, name, params.get("container"))?;
    if !params.flag("previous")
        && let Some(message) = waiting(&agent.pod, name, &container)
    {
        return Err(ApiError::BadRequest(message));
    }
    let query: Vec<String> = PASSED
        .iter()
        .filter_map(|p| params.get(p).map(|v| format!("{p}={v}")))
        .collect();
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}?{}",
        query.join("&")
    );
    let response = agent
        .at
        .client
        .get(agent.at.address, agent.at.port, &path)
        .await
        .map_err(|e| agent.at.unreachable(&e))?;
    let status = response.status();
    if status != StatusCode::OK {
        use http_body_util::BodyExt;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| agent.at.unreachable(&e))?;
        let text = String::from_utf8_lossy(&body.to_bytes()).trim().to_string();
        return Err(match status {
            StatusCode::NOT_FOUND => ApiError::BadRequest(text),
            _ => ApiError::Unavailable(text),
        });
    }
    let mut answer = Response::new(Body::new(response.into_body()));
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(answer)
}
