//! The cells of pods and nodes as upstream's printers compute them (`printPod`, `printNode`):
//! a pod's STATUS is its most telling container state (`CrashLoopBackOff`, `Init:0/2`,
//! `Completed`, `Terminating`), RESTARTS says when the last restart was, a node's STATUS and
//! ROLES come from its conditions and labels. `kubectl get` shows these words.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::age::human_duration;

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|v| !v.is_null())
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn array<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(value, |v, k| v.get(k))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A terminated state's words: its reason, else its signal or exit code.
fn terminated_reason(terminated: &Value) -> String {
    let reason = str_of(terminated, "reason");
    if !reason.is_empty() {
        return reason.to_string();
    }
    match terminated
        .get("signal")
        .and_then(Value::as_i64)
        .filter(|s| *s != 0)
    {
        Some(signal) => format!("Signal:{signal}"),
        None => format!(
            "ExitCode:{}",
            terminated
                .get("exitCode")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
    }
}

fn finished_at(status: &Value) -> Option<Timestamp> {
    status
        .pointer("/lastState/terminated/finishedAt")
        .and_then(Value::as_str)?
        .parse()
        .ok()
}

/// A pod's READY, STATUS and RESTARTS cells.
pub fn pod_cells(pod: &Value, now: Timestamp) -> [Value; 3] {
    let empty = json!({});
    let spec = pod.get("spec").unwrap_or(&empty);
    let status = pod.get("status").unwrap_or(&empty);
    let init_specs = array(spec, &["initContainers"]);
    let sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| str_of(c, "name") == name && str_of(c, "restartPolicy") == "Always")
    };
    let mut total = array(spec, &["containers"]).len()
        + init_specs
            .iter()
            .filter(|c| str_of(c, "restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut sidecar_last_restart: Option<Timestamp> = None;
    let later = |a: Option<Timestamp>, b: Option<Timestamp>| a.max(b);
    let mut reason = str_of(status, "phase").to_string();
    if !str_of(status, "reason").is_empty() {
        reason = str_of(status, "reason").to_string();
    }
    let conditions = array(status, &["conditions"]);
    if conditions
        .iter()
        .any(|c| str_of(c, "type") == "PodScheduled" && str_of(c, "reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let mut initializing = false;
    let init_statuses = array(status, &["initContainerStatuses"]);
    for (i, container) in init_statuses.iter().enumerate() {
        let count = container
            .get("restartCount")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        restarts += count;
        last_restart = later(last_restart, finished_at(container));
        let name = str_of(container, "name");
        if sidecar(name) {
            sidecar_restarts += count;
            sidecar_last_restart = later(sidecar_last_restart, finished_at(container));
        }
        let state = container.get("state").unwrap_or(&empty);
        let terminated = get(state, "terminated");
        let waiting_reason = get(state, "waiting").map_or("", |w| str_of(w, "reason"));
        if terminated.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64) == Some(0)) {
            continue;
        }
        if sidecar(name) && container.get("started") == Some(&json!(true)) {
            if container.get("ready") == Some(&json!(true)) {
                ready += 1;
            }
            continue;
        }
        reason = match terminated {
            Some(t) => format!("Init:{}", terminated_reason(t)),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }
    let initialized = conditions
        .iter()
        .any(|c| str_of(c, "type") == "Initialized" && str_of(c, "status") == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut running = false;
        for container in array(status, &["containerStatuses"]).iter().rev() {
            restarts += container
                .get("restartCount")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            last_restart = later(last_restart, finished_at(container));
            let state = container.get("state").unwrap_or(&empty);
            let waiting_reason = get(state, "waiting").map_or("", |w| str_of(w, "reason"));
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(terminated) = get(state, "terminated") {
                reason = terminated_reason(terminated);
            } else if container.get("ready") == Some(&json!(true))
                && get(state, "running").is_some()
            {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = conditions
                .iter()
                .any(|c| str_of(c, "type") == "Ready" && str_of(c, "status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    let terminal = matches!(str_of(status, "phase"), "Succeeded" | "Failed");
    if deleting && str_of(status, "reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && !terminal {
        reason = "Terminating".into();
    }
    let restarts_text = match last_restart.filter(|_| restarts != 0) {
        Some(at) => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - at.as_second())
        ),
        None => restarts.to_string(),
    };
    total = total.max(ready);
    [
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_text),
    ]
}

/// A node's STATUS and ROLES cells.
pub fn node_cells(node: &Value) -> [Value; 2] {
    let conditions = array(node, &["status", "conditions"]);
    let mut status = match conditions.iter().find(|c| str_of(c, "type") == "Ready") {
        Some(c) if str_of(c, "status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(
            |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                Some(role) if !role.is_empty() => Some(role),
                _ if key == "kubernetes.io/role" => value.as_str(),
                _ => None,
            },
        )
        .collect();
    roles.sort_unstable();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    [json!(status), json!(roles)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_crash_looping_pod_should_show_its_waiting_reason_and_last_restart() {
        let pod = json!({"spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-12-04T11:59:20Z"}}}]}});
        assert_eq!(
            pod_cells(&pod, now()),
            [
                json!("0/1"),
                json!("CrashLoopBackOff"),
                json!("3 (40s ago)")
            ]
        );
    }

    #[test]
    fn init_containers_completed_pods_and_deletion_should_read_as_upstreams() {
        let initializing = json!({"spec": {"initContainers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "c"}]}, "status": {"phase": "Pending",
            "initContainerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "state": {"running": {}}}],
            "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(pod_cells(&initializing, now())[1], json!("Init:1/2"));
        let done = json!({"spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Succeeded",
            "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(pod_cells(&done, now())[1], json!("Completed"));
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-12-04T11:00:00Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "c", "ready": true, "state": {"running": {}}}]}});
        assert_eq!(
            pod_cells(&deleting, now()),
            [json!("1/1"), json!("Terminating"), json!("0")]
        );
    }

    #[test]
    fn nodes_should_show_readiness_cordons_and_roles() {
        let node = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(
            node_cells(&node),
            [json!("Ready,SchedulingDisabled"), json!("control-plane")]
        );
    }
}
