//! What the runtime holds for each pod, read back from it (kubelet's relist): the pod's
//! sandboxes and every container instance, found by the labels the agent put on them. The
//! details of a container (exit code, times, reason) come from its status, asked once per
//! container and state and remembered, so a relist of a steady node asks nothing more than the
//! two lists.

use std::collections::HashMap;

use super::{labels, termination};
use crate::runtime::{Runtime, RuntimeError, api};

/// A container instance's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl RunState {
    fn of(state: i32) -> Self {
        match api::ContainerState::try_from(state) {
            Ok(api::ContainerState::ContainerCreated) => Self::Created,
            Ok(api::ContainerState::ContainerRunning) => Self::Running,
            Ok(api::ContainerState::ContainerExited) => Self::Exited,
            _ => Self::Unknown,
        }
    }
}

/// One sandbox of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// Which attempt it is (0 for the pod's first).
    pub attempt: u32,
    /// Whether it is ready (its network set up, its pause process running).
    pub ready: bool,
    /// When it was made (nanoseconds since the epoch).
    pub created_at: i64,
}

/// One container instance of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// The sandbox it runs in.
    pub sandbox: String,
    /// The container's name.
    pub name: String,
    /// How many times the container had been restarted when this instance was made.
    pub restart_count: u32,
    /// Its state.
    pub state: RunState,
    /// Nanoseconds since the epoch (0: not yet).
    pub created_at: i64,
    /// When it started.
    pub started_at: i64,
    /// When it exited.
    pub finished_at: i64,
    /// Its exit code, once exited.
    pub exit_code: i32,
    /// The runtime's reason for its exit (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// The runtime's message (or the termination message).
    pub message: String,
    /// The image it runs, as asked for.
    pub image: String,
    /// The image's id.
    pub image_ref: String,
}

/// Everything the runtime holds for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRuntime {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its sandboxes, newest first.
    pub sandboxes: Vec<Sandbox>,
    /// Its container instances, newest first.
    pub instances: Vec<Instance>,
}

impl PodRuntime {
    /// The newest sandbox.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes.first()
    }

    /// The newest instance of the container `name`.
    pub fn latest(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instance before the newest of the container `name` (its `lastState`).
    pub fn previous(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().filter(|i| i.name == name).nth(1)
    }

    /// Whether any container instance is running.
    pub fn any_running(&self) -> bool {
        self.instances.iter().any(|i| i.state == RunState::Running)
    }
}

/// Container statuses already asked for, by container id and the state they were asked in.
#[derive(Default)]
pub struct StatusCache {
    statuses: HashMap<(String, i32), api::ContainerStatus>,
}

impl StatusCache {
    /// Forgets what is not in `live` (removed containers).
    fn retain(&mut self, live: &[api::Container]) {
        self.statuses
            .retain(|(id, state), _| live.iter().any(|c| &c.id == id && c.state == *state));
    }
}

/// Reads every pod this agent (`node`) runs from `runtime` (or just the pod `only`), by pod
/// uid.
pub async fn observe(
    runtime: &dyn Runtime,
    node: &str,
    only: Option<&str>,
    cache: &mut StatusCache,
) -> Result<HashMap<String, PodRuntime>, RuntimeError> {
    let ours = |labels: &HashMap<String, String>| {
        labels.get(labels::AGENT).map(String::as_str) == Some(node)
    };
    let sandboxes = runtime.list_sandboxes(only).await?;
    let containers = runtime.list_containers(only).await?;
    let mut pods: HashMap<String, PodRuntime> = HashMap::new();
    for sandbox in sandboxes.iter().filter(|s| ours(&s.labels)) {
        let Some(uid) = sandbox.labels.get(labels::POD_UID) else {
            continue;
        };
        let pod = pods.entry(uid.clone()).or_default();
        pod.name = sandbox
            .labels
            .get(labels::POD_NAME)
            .cloned()
            .unwrap_or_default();
        pod.namespace = sandbox
            .labels
            .get(labels::POD_NAMESPACE)
            .cloned()
            .unwrap_or_default();
        pod.sandboxes.push(Sandbox {
            id: sandbox.id.clone(),
            attempt: sandbox.metadata.as_ref().map_or(0, |m| m.attempt),
            ready: sandbox.state == api::PodSandboxState::SandboxReady as i32,
            created_at: sandbox.created_at,
        });
    }
    let mine: Vec<&api::Container> = containers.iter().filter(|c| ours(&c.labels)).collect();
    if only.is_none() {
        cache.retain(&containers);
    }
    for container in mine {
        let Some(uid) = container.labels.get(labels::POD_UID) else {
            continue;
        };
        let key = (container.id.clone(), container.state);
        let status = match cache.statuses.get(&key) {
            Some(status) => status.clone(),
            None => match runtime.container_status(&container.id).await {
                Ok(mut status) => {
                    // Read once per state, once settled: an exited container's file and log
                    // no longer change.
                    status.message = termination::message(&status);
                    let now =
                        i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
                    if termination::settled(&status, now) {
                        cache.statuses.insert(key, status.clone());
                    }
                    status
                }
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error),
            },
        };
        let restart_count = container
            .annotations
            .get(labels::RESTART_COUNT)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| container.metadata.as_ref().map_or(0, |m| m.attempt));
        let pod = pods.entry(uid.clone()).or_default();
        pod.instances.push(Instance {
            id: container.id.clone(),
            sandbox: container.pod_sandbox_id.clone(),
            name: container
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default(),
            restart_count,
            state: RunState::of(status.state),
            created_at: status.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            image: container
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_ref: container.image_ref.clone(),
        });
    }
    for pod in pods.values_mut() {
        pod.sandboxes
            .sort_by_key(|s| std::cmp::Reverse((s.created_at, s.attempt)));
        pod.instances
            .sort_by_key(|i| std::cmp::Reverse((i.restart_count, i.created_at)));
    }
    Ok(pods)
}
