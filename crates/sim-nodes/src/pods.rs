//! What a simulated node does with a pod bound to it, pure: [`decide`] says whether the pod
//! must be started (its status written as a kubelet would once every container runs), removed
//! (it is being deleted: there is nothing to stop, so it goes at once, as a kubelet deletes a
//! pod whose containers have stopped), or left alone; [`running_status`] is that status.

use serde_json::{Value, json};

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

/// The status of `pod` with every container running and ready.
pub fn running_status(pod: &Pod, pod_ip: &str, host_ip: &str, now: &str) -> Value {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let container = |c: &Container, running: bool| {
        let state = if running {
            json!({"running": {"startedAt": now}})
        } else {
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}})
        };
        json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": format!("sim://{}", c.image.clone().unwrap_or_default()),
            "containerID": format!("sim://{uid}/{}", c.name),
            "ready": running,
            "started": running,
            "restartCount": 0,
            "state": state,
        })
    };
    let containers: Vec<Value> = pod
        .spec
        .containers
        .iter()
        .map(|c| container(c, true))
        .collect();
    let init: Vec<Value> = pod
        .spec
        .init_containers
        .iter()
        .map(|c| container(c, c.restart_policy.as_deref() == Some("Always")))
        .collect();
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let mut status = json!({
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "containerStatuses": containers,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    json!({"status": status})
}

#[cfg(test)]
mod tests {
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
        let status = running_status(
            &pod(json!({})),
            "10.64.1.2",
            "198.18.0.2",
            "2026-12-03T00:00:00Z",
        );
        let status = &status["status"];
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
