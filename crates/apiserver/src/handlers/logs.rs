//! `pods/log`: a container's log, read by the agent of the pod's node and streamed through
//! (`kubectl logs`, with `follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`,
//! `timestamps` and `limitBytes` passed on). The container is checked here first, with
//! upstream's messages: a pod with several containers needs `container`, and a container that
//! has not started has no log yet.

use std::net::IpAddr;

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use serde_json::Value;
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;

use super::params::Params;
use crate::state::ApiState;
use crate::storage;

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

async fn object(state: &ApiState, key: &str, target: &Target) -> Result<Value, ApiError> {
    Ok(crate::guaranteed::current(state, key, target).await?.1)
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The container whose log is asked for, with upstream's refusals.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers = names(pod, "containers");
    let inits = names(pod, "initContainers");
    match asked {
        Some(asked) if containers.iter().chain(&inits).any(|c| c == asked) => Ok(asked.into()),
        Some(asked) => Err(ApiError::BadRequest(format!(
            "container {asked} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !inits.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

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
    let pods = state
        .registry
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::Internal("pods are not registered".into()))?;
    let target = Target::new("", "pods", name);
    let pod = object(state, &storage::key(&pods, Some(namespace), name), &target).await?;
    let container = container(&pod, name, params.get("container"))?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    if !params.flag("previous")
        && let Some(message) = waiting(&pod, name, &container)
    {
        return Err(ApiError::BadRequest(message));
    }
    let nodes = state
        .registry
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes are not registered".into()))?;
    let node_target = Target::new("", "nodes", node);
    let node_object = object(state, &storage::key(&nodes, None, node), &node_target).await?;
    let address: IpAddr = node_object
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| ApiError::BadRequest(format!("node {node} has no InternalIP address")))?;
    let port = node_object
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(10250);
    let kubelet = state
        .kubelet
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this server cannot reach node agents".into()))?;
    let query: Vec<String> = PASSED
        .iter()
        .filter_map(|p| params.get(p).map(|v| format!("{p}={v}")))
        .collect();
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}?{}",
        query.join("&")
    );
    let unreachable = |error: &dyn std::error::Error| {
        ApiError::Unavailable(format!(
            "the node agent of {node} ({address}:{port}) cannot be reached: {error}"
        ))
    };
    let response = kubelet
        .get(address, port, &path)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    if status != StatusCode::OK {
        use http_body_util::BodyExt;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?;
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
