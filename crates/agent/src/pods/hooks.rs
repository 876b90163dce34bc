//! Lifecycle hooks, as kubelet runs them: `postStart` right after a container starts (a
//! failure kills the container, and its restart policy decides what comes next), `preStop`
//! before a running container is stopped, within its grace period. Handlers are exec, httpGet,
//! tcpSocket (run as a probe would be) and sleep; a failure is reported in upstream's words.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use super::probes;
use crate::runtime::Runtime;

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// After the container started.
    PostStart,
    /// Before the container is stopped.
    PreStop,
}

impl Hook {
    /// The Warning Event's reason when it fails.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }

    fn of(self, container: &Container) -> Option<&LifecycleHandler> {
        let lifecycle = container.lifecycle.as_ref()?;
        match self {
            Hook::PostStart => lifecycle.post_start.as_ref(),
            Hook::PreStop => lifecycle.pre_stop.as_ref(),
        }
    }
}

/// Where a hook runs.
pub struct Target<'a> {
    /// The container's running instance.
    pub instance: &'a str,
    /// The pod's IP (httpGet and tcpSocket without a host).
    pub pod_ip: &'a str,
    /// `name_namespace(uid)`, as upstream names the pod in its messages.
    pub pod: &'a str,
}

/// Runs the container's `hook`, if it has one, for at most `timeout`; `Err` says why it failed.
pub async fn run(
    runtime: &dyn Runtime,
    container: &Container,
    hook: Hook,
    target: &Target<'_>,
    timeout: Duration,
) -> Result<(), String> {
    let Some(handler) = hook.of(container) else {
        return Ok(());
    };
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(wanted.min(timeout)).await;
        return Ok(());
    }
    let probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        timeout_seconds: Some(i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX).max(1)),
        ..Probe::default()
    };
    let due = probes::Due {
        container: container.name.clone(),
        instance: target.instance.to_string(),
        kind: probes::Kind::Liveness,
        probe,
        ports: container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, p.container_port)))
            .collect(),
    };
    let (outcome, output) = probes::run(runtime, &due, target.pod_ip).await;
    if outcome == probes::Outcome::Passed {
        return Ok(());
    }
    let container_name = &container.name;
    Err(if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        format!(
            "Exec lifecycle hook ([{}]) for Container \"{container_name}\" in Pod \"{}\" failed - error: command '{}' exited with a failure, message: {output:?}",
            command.join(" "),
            target.pod,
            command.join(" "),
        )
    } else if let Some(get) = &handler.http_get {
        format!(
            "HTTP lifecycle hook ({}) for Container \"{container_name}\" in Pod \"{}\" failed - error: {output}",
            get.path.as_deref().unwrap_or("/"),
            target.pod,
        )
    } else {
        format!(
            "TCP lifecycle hook for Container \"{container_name}\" in Pod \"{}\" failed - error: {output}",
            target.pod,
        )
    })
}
