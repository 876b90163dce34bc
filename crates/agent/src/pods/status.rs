//! A pod's status as kubelet reports it, pure: its phase, its conditions and every container's
//! state, computed from the pod's spec, what the runtime holds for it and why containers wait.
//! The words are upstream's (reasons, messages, field names), so `kubectl get pods` and every
//! client read skiff's pods as they read Kubernetes'.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition};
use serde_json::{Value, json};

use super::observed::{Instance, PodRuntime, RunState};
use super::plan::{Waiting, is_sidecar};

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not every container started yet.
    Pending,
    /// Containers run (or will be restarted).
    Running,
    /// Every container ended successfully and none will restart.
    Succeeded,
    /// Every container ended, some failed, and none will restart.
    Failed,
}

impl Phase {
    /// The phase's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// Whether the API holds the pod as finished (Succeeded or Failed): it never runs again.
pub fn finished_in_api(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

/// Whether every (non-sidecar) init container completed in the current sandbox, and whether
/// one failed for good.
fn initialization(pod: &Pod, runtime: &PodRuntime) -> (bool, bool) {
    let never = restart_policy(pod) == "Never";
    let mut done = true;
    for init in init_containers(pod).iter().filter(|c| !is_sidecar(c)) {
        match runtime.latest(&init.name) {
            Some(i) if i.state == RunState::Exited && i.exit_code == 0 => {}
            Some(i) if i.state == RunState::Exited && never => return (false, true),
            _ => done = false,
        }
    }
    (done, false)
}

/// Upstream's `getPhase`: the pod's phase from its containers' states.
pub fn phase(pod: &Pod, runtime: &PodRuntime) -> Phase {
    let policy = restart_policy(pod);
    let (initialized, init_failed) = initialization(pod, runtime);
    if init_failed {
        return Phase::Failed;
    }
    if !initialized {
        return Phase::Pending;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in containers(pod) {
        match runtime.latest(&container.name) {
            Some(i) if i.state == RunState::Running => running += 1,
            Some(i) if i.state == RunState::Exited => {
                stopped += 1;
                if i.exit_code == 0 {
                    succeeded += 1;
                }
            }
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        return Phase::Pending;
    }
    if running > 0 {
        return Phase::Running;
    }
    if stopped == 0 {
        return Phase::Pending;
    }
    match policy {
        "Always" => Phase::Running,
        _ if stopped == succeeded => Phase::Succeeded,
        "OnFailure" => Phase::Running,
        _ => Phase::Failed,
    }
}

/// RFC 3339 with whole seconds (as `metav1.Time` is written) of nanoseconds since the epoch.
fn time(nanos: i64) -> Option<String> {
    if nanos <= 0 {
        return None;
    }
    let at = jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok()?;
    Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// What the node knows beyond the runtime.
pub struct Context<'a> {
    /// The runtime's name (`containerd`), for container ids.
    pub runtime_name: &'a str,
    /// The node's address.
    pub host_ip: &'a str,
    /// The pod's address, once its sandbox has one.
    pub pod_ip: Option<&'a str>,
    /// Why containers wait, by name.
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// The containers' probes (readiness and startup).
    pub probes: &'a super::probes::Probes,
    /// Now, RFC 3339.
    pub now: &'a str,
    /// Why the agent ended the pod, if it did.
    pub ended: Option<&'a super::ending::Ending>,
}

fn terminated(instance: &Instance, runtime_name: &str) -> Value {
    let reason = match instance.reason.as_str() {
        "" if instance.exit_code == 0 => "Completed",
        "" => "Error",
        other => other,
    };
    let mut state = json!({
        "exitCode": instance.exit_code,
        "reason": reason,
        "startedAt": time(instance.started_at),
        "finishedAt": time(instance.finished_at),
        "containerID": format!("{runtime_name}://{}", instance.id),
    });
    if !instance.message.is_empty() {
        state["message"] = json!(instance.message);
    }
    json!({"terminated": state})
}

/// One container's status.
fn container_status(
    container: &Container,
    runtime: &PodRuntime,
    context: &Context<'_>,
    not_started_reason: &str,
    init: bool,
) -> Value {
    let latest = runtime.latest(&container.name);
    let waiting = context.waiting.get(&container.name);
    let (state, last) = match (latest, waiting) {
        (_, Some(w)) => (
            json!({"waiting": {"reason": w.reason, "message": w.message}}),
            latest
                .filter(|i| i.state == RunState::Exited)
                .map(|i| terminated(i, context.runtime_name)),
        ),
        (None, None) => (json!({"waiting": {"reason": not_started_reason}}), None),
        (Some(i), None) => {
            let state = match i.state {
                RunState::Running => json!({"running": {"startedAt": time(i.started_at)}}),
                RunState::Exited => terminated(i, context.runtime_name),
                RunState::Created | RunState::Unknown => json!({"waiting": {}}),
            };
            let last = runtime
                .previous(&container.name)
                .filter(|p| p.state == RunState::Exited)
                .map(|p| terminated(p, context.runtime_name));
            (state, last)
        }
    };
    let running = waiting.is_none() && latest.is_some_and(|i| i.state == RunState::Running);
    let (ready, started) = if init {
        let done = latest.is_some_and(|i| i.state == RunState::Exited && i.exit_code == 0);
        (done || (running && is_sidecar(container)), running)
    } else {
        (
            running && context.probes.ready(&container.name),
            running && context.probes.started(&container.name),
        )
    };
    let mut status = json!({
        "name": container.name,
        "state": state,
        "lastState": last.unwrap_or_else(|| json!({})),
        "ready": ready,
        "restartCount": latest.map_or(0, |i| i.restart_count),
        "image": container.image.clone().unwrap_or_default(),
        "imageID": latest.map(|i| i.image_ref.clone()).unwrap_or_default(),
        "started": started,
    });
    if let Some(instance) = latest {
        status["containerID"] = json!(format!("{}://{}", context.runtime_name, instance.id));
    }
    status
}

/// The condition `type_` with `status`, keeping its transition time when it did not change.
fn condition(
    pod: &Pod,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let before: Option<&PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let since = before
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map_or_else(
            || now.to_string(),
            |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    let mut value = json!({"type": type_, "status": status, "lastProbeTime": null,
        "lastTransitionTime": since});
    if let Some(reason) = reason {
        value["reason"] = json!(reason);
    }
    if let Some(message) = message {
        value["message"] = json!(message);
    }
    value
}

/// The pod's status: what the agent writes to `pods/status`. `terminal`: the pod is done
/// (deleted, or every container ended and none will restart).
pub fn status(pod: &Pod, runtime: &PodRuntime, context: &Context<'_>, terminal: bool) -> Value {
    let mut phase = phase(pod, runtime);
    if terminal && !runtime.any_running() {
        phase = final_phase(pod, runtime);
    }
    if context.ended.is_some() {
        phase = Phase::Failed;
    }
    let inits = init_containers(pod);
    let init_statuses: Vec<Value> = inits
        .iter()
        .map(|c| container_status(c, runtime, context, not_started(pod), true))
        .collect();
    let mut app: Vec<(&Container, Value)> = containers(pod)
        .iter()
        .map(|c| {
            (
                c,
                container_status(c, runtime, context, not_started(pod), false),
            )
        })
        .collect();
    app.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let unready: Vec<&str> = containers(pod)
        .iter()
        .filter(|c| {
            !app.iter()
                .any(|(a, s)| a.name == c.name && s["ready"] == json!(true))
        })
        .map(|c| c.name.as_str())
        .collect();
    let now = context.now;
    let containers_ready = match phase {
        Phase::Succeeded => condition(
            pod,
            "ContainersReady",
            false,
            Some("PodCompleted"),
            None,
            now,
        ),
        Phase::Failed => condition(pod, "ContainersReady", false, Some("PodFailed"), None, now),
        _ if unready.is_empty() => condition(pod, "ContainersReady", true, None, None, now),
        _ => condition(
            pod,
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
            now,
        ),
    };
    let mut ready = containers_ready.clone();
    ready["type"] = json!("Ready");
    if let Some(before) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| json!(c.status) == ready["status"])
        .and_then(|c| c.last_transition_time.as_ref())
    {
        ready["lastTransitionTime"] = json!(before.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    let incomplete: Vec<&str> = inits
        .iter()
        .filter(|c| !is_sidecar(c))
        .filter(|c| {
            !runtime
                .latest(&c.name)
                .is_some_and(|i| i.state == RunState::Exited && i.exit_code == 0)
        })
        .map(|c| c.name.as_str())
        .collect();
    let regular_started = containers(pod)
        .iter()
        .any(|c| runtime.latest(&c.name).is_some());
    let initialized = if phase == Phase::Succeeded {
        condition(pod, "Initialized", true, Some("PodCompleted"), None, now)
    } else if incomplete.is_empty() || regular_started {
        condition(pod, "Initialized", true, None, None, now)
    } else {
        condition(
            pod,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
            now,
        )
    };
    let sandbox_ready = runtime.sandbox().is_some_and(|s| s.ready) && context.pod_ip.is_some();
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(
            || now.to_string(),
            |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    let mut status = json!({
        "phase": phase.as_str(),
        "conditions": [
            condition(pod, "PodReadyToStartContainers", sandbox_ready, None, None, now),
            initialized,
            ready,
            containers_ready,
            // A pod on a node is scheduled (kubelet reports it so for pods given a nodeName).
            condition(pod, "PodScheduled", true, None, None, now),
        ],
        "hostIP": context.host_ip,
        "hostIPs": [{"ip": context.host_ip}],
        "startTime": start_time,
        "containerStatuses": app.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
    });
    // The class is the API server's, set once at creation.
    if let Some(class) = pod.status.as_ref().and_then(|s| s.qos_class.as_ref()) {
        status["qosClass"] = json!(class);
    }
    if let Some(ip) = context.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ending) = context.ended {
        status["reason"] = json!(ending.reason);
        status["message"] = json!(ending.message);
        if ending.reason == super::ending::EVICTED
            && let Some(conditions) = status["conditions"].as_array_mut()
        {
            conditions.push(condition(
                pod,
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                Some(ending.message.clone()),
                now,
            ));
        }
    }
    status
}

/// The reason a container that has not started waits with.
fn not_started(pod: &Pod) -> &'static str {
    if init_containers(pod).is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    }
}

/// The phase of a pod that is done: Succeeded if every app container ended with 0.
fn final_phase(pod: &Pod, runtime: &PodRuntime) -> Phase {
    let all_succeeded = containers(pod).iter().all(|c| {
        runtime
            .latest(&c.name)
            .is_some_and(|i| i.state == RunState::Exited && i.exit_code == 0)
    });
    if all_succeeded {
        Phase::Succeeded
    } else {
        Phase::Failed
    }
}
