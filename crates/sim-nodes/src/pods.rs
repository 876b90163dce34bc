//! What a simulated node does with a pod bound to it, pure: [`decide`] says whether the pod
//! must be started (its status written as a kubelet would once every container runs), removed
//! (it is being deleted: there is nothing to stop, so it goes at once, as a kubelet deletes a
//! pod whose containers have stopped), or left alone; [`running_status`] is that status.

use serde::Serialize;

use crate::lean::{Container, Pod};

/// What to do with a pod on a simulated node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Write the Running status.
    Start,
    /// Delete it now (grace period 0, uid precondition).
    Remove,
    /// Nothing.
    Leave,
}

/// What to do with `pod`.
pub fn decide(pod: &Pod) -> Action {
    if pod.metadata.deletion_timestamp.is_some() {
        return Action::Remove;
    }
    match pod.status.phase.as_deref() {
        Some("Running" | "Succeeded" | "Failed") => Action::Leave,
        _ => Action::Start,
    }
}

/// The status patch of a started pod: written straight into the request body (no JSON tree is
/// built for it), in the order a kubelet writes the fields.
#[derive(Debug, Serialize)]
pub struct Started<'a> {
    status: Status<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    phase: &'static str,
    #[serde(rename = "hostIP")]
    host_ip: &'a str,
    #[serde(rename = "hostIPs")]
    host_ips: [Ip<'a>; 1],
    #[serde(rename = "podIP")]
    pod_ip: &'a str,
    #[serde(rename = "podIPs")]
    pod_ips: [Ip<'a>; 1],
    start_time: &'a str,
    conditions: [Condition<'a>; 5],
    container_statuses: Vec<ContainerStatus<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    init_container_statuses: Vec<ContainerStatus<'a>>,
}

#[derive(Debug, Serialize)]
struct Ip<'a> {
    ip: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Condition<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    status: &'static str,
    last_probe_time: Option<&'a str>,
    last_transition_time: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus<'a> {
    name: &'a str,
    image: &'a str,
    #[serde(rename = "imageID")]
    image_id: String,
    #[serde(rename = "containerID")]
    container_id: String,
    ready: bool,
    started: bool,
    restart_count: i32,
    state: State<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum State<'a> {
    #[serde(rename_all = "camelCase")]
    Running { started_at: &'a str },
    #[serde(rename_all = "camelCase")]
    Terminated {
        exit_code: i32,
        reason: &'static str,
        started_at: &'a str,
        finished_at: &'a str,
    },
}

/// The status of `pod` with every container running and ready.
pub fn running_status<'a>(
    pod: &'a Pod,
    pod_ip: &'a str,
    host_ip: &'a str,
    now: &'a str,
) -> Started<'a> {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let container = |c: &'a Container, running: bool| {
        let image = c.image.as_deref().unwrap_or_default();
        ContainerStatus {
            name: &c.name,
            image,
            image_id: format!("sim://{image}"),
            container_id: format!("sim://{uid}/{}", c.name),
            ready: running,
            started: running,
            restart_count: 0,
            state: if running {
                State::Running { started_at: now }
            } else {
                State::Terminated {
                    exit_code: 0,
                    reason: "Completed",
                    started_at: now,
                    finished_at: now,
                }
            },
        }
    };
    let condition = |type_| Condition {
        type_,
        status: "True",
        last_probe_time: None,
        last_transition_time: now,
    };
    Started {
        status: Status {
            phase: "Running",
            host_ip,
            host_ips: [Ip { ip: host_ip }],
            pod_ip,
            pod_ips: [Ip { ip: pod_ip }],
            start_time: now,
            conditions: [
                condition("PodReadyToStartContainers"),
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ],
            container_statuses: pod
                .spec
                .containers
                .iter()
                .map(|c| container(c, true))
                .collect(),
            init_container_statuses: pod
                .spec
                .init_containers
                .iter()
                .map(|c| container(c, c.restart_policy.as_deref() == Some("Always")))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(extra: Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "sim-1", "containers": [{"name": "web", "image": "nginx"}],
                     "initContainers": [{"name": "setup", "image": "busybox"}]},
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pods_should_be_started_once_and_removed_when_deleted() {
        assert_eq!(decide(&pod(json!({}))), Action::Start);
        assert_eq!(
            decide(&pod(json!({"status": {"phase": "Pending"}}))),
            Action::Start
        );
        assert_eq!(
            decide(&pod(json!({"status": {"phase": "Running"}}))),
            Action::Leave
        );
        let deleting = pod(
            json!({"metadata": {"name": "p", "uid": "u1", "deletionTimestamp": "2026-12-03T00:00:00Z"}}),
        );
        assert_eq!(decide(&deleting), Action::Remove);
    }

    #[test]
    fn a_started_pod_should_be_running_and_ready_with_container_statuses() {
        let pod = pod(json!({}));
        let started = running_status(&pod, "10.64.1.2", "198.18.0.2", "2026-12-03T00:00:00Z");
        let started = serde_json::to_value(&started).unwrap();
        let status = &started["status"];
        assert_eq!(status["hostIPs"], json!([{"ip": "198.18.0.2"}]));
        assert_eq!(status["conditions"][0]["lastProbeTime"], Value::Null);
        assert_eq!(status["containerStatuses"][0]["imageID"], "sim://nginx");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.64.1.2");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert_eq!(
            status["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-12-03T00:00:00Z"
        );
        assert_eq!(
            status["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
    }
}
