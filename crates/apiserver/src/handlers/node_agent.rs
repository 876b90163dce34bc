//! The node agent a request is served by (`pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward`, `nodes/proxy`): the pod, its node's InternalIP and kubelet port, and the
//! container a request names, with upstream's messages when any of it is missing.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;

use crate::kubelet::KubeletClient;
use crate::state::ApiState;
use crate::storage;

/// Where a node's agent listens.
pub struct Agent {
    /// The node.
    pub node: String,
    /// The node's InternalIP.
    pub address: IpAddr,
    /// The agent's port.
    pub port: u16,
    /// The client to reach it with.
    pub client: Arc<KubeletClient>,
}

impl Agent {
    /// The error for an agent that cannot be reached.
    pub fn unreachable(&self, error: &dyn std::error::Error) -> ApiError {
        ApiError::Unavailable(format!(
            "the node agent of {} ({}:{}) cannot be reached: {error}",
            self.node, self.address, self.port
        ))
    }
}

/// A pod and where its node's agent listens.
pub struct Located {
    /// The pod.
    pub pod: Value,
    /// Its node's agent.
    pub at: Agent,
}

async fn object(
    state: &ApiState,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let info = state
        .registry
        .find("", "v1", resource)
        .ok_or_else(|| ApiError::Internal(format!("{resource} are not registered")))?;
    let target = Target::new("", resource, name);
    let key = storage::key(&info, namespace, name);
    Ok(crate::guaranteed::current(state, &key, &target).await?.1)
}

/// Finds the pod `namespace/name` and its node's agent.
pub async fn locate(state: &ApiState, namespace: &str, name: &str) -> Result<Located, ApiError> {
    let pod = object(state, "pods", Some(namespace), name).await?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let at = agent(state, &node).await?;
    Ok(Located { pod, at })
}

/// Finds where the agent of the node `node` listens: its InternalIP and kubelet port.
pub async fn agent(state: &ApiState, node: &str) -> Result<Agent, ApiError> {
    let node_object = object(state, "nodes", None, node).await?;
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
    let client = state
        .kubelet
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this server cannot reach node agents".into()))?;
    Ok(Agent {
        node: node.to_string(),
        address,
        port,
        client,
    })
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The container a request is for, with upstream's refusals.
pub fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
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
