//! An in-memory [`Runtime`] for tests: sandboxes get addresses from 10.99.0.0/16, images are
//! present or pullable as the test says, and a container runs until the test makes it exit
//! (or exits at once, when its image is set to).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Runtime, RuntimeError, StreamRequest, api};
use crate::pods::labels::POD_UID;

/// What a container of an image does once started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs until stopped or told to exit.
    Run,
    /// Exits with this code right after it starts.
    Exit(i32),
    /// Cannot be pulled (the registry says it does not exist).
    Missing,
    /// Pulled only with these credentials (user, password).
    Private(String, String),
}

#[derive(Clone, Debug)]
struct Sandbox {
    config: api::PodSandboxConfig,
    ready: bool,
    ip: String,
    created_at: i64,
}

#[derive(Clone, Debug)]
struct Container {
    sandbox: String,
    config: api::ContainerConfig,
    state: api::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
}

#[derive(Default)]
struct State {
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Container>,
    images: HashSet<String>,
    behaviours: HashMap<String, Behaviour>,
    pulls: Vec<String>,
    next: u64,
    /// The network's condition when it is not ready: (reason, message).
    network_down: Option<(String, String)>,
    exec_unavailable: bool,
    stop_timeouts: Vec<i64>,
}

/// The in-memory runtime.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

fn now() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

fn not_found(call: &'static str, what: &str) -> RuntimeError {
    RuntimeError::Call {
        call,
        status: tonic::Status::not_found(format!("{what} not found")),
    }
}

impl FakeRuntime {
    /// An empty runtime: no images, nothing running.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says what containers of `image` do, and whether it can be pulled.
    pub fn set_image(&self, image: &str, behaviour: Behaviour) {
        self.state().behaviours.insert(image.to_string(), behaviour);
    }

    /// Puts `image` in the runtime's store, as a side-load would.
    pub fn add_image(&self, image: &str) {
        self.state().images.insert(image.to_string());
    }

    /// Reports the network as not ready with `reason` and `message` (`None`: ready again).
    pub fn set_network_down(&self, down: Option<(&str, &str)>) {
        self.state().network_down = down.map(|(r, m)| (r.to_string(), m.to_string()));
    }

    /// Makes `ExecSync` fail as a runtime that does not answer would (`false`: answer again).
    pub fn set_exec_unavailable(&self, unavailable: bool) {
        self.state().exec_unavailable = unavailable;
    }

    /// The images pulled so far, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.state().pulls.clone()
    }

    /// Makes the running container `name` of the pod `pod_uid` exit with `code`.
    pub fn exit(&self, pod_uid: &str, name: &str, code: i32, reason: &str) -> bool {
        let mut state = self.state();
        let sandboxes: HashSet<String> = state
            .sandboxes
            .iter()
            .filter(|(_, s)| s.config.metadata.as_ref().is_some_and(|m| m.uid == pod_uid))
            .map(|(id, _)| id.clone())
            .collect();
        let running = state.containers.values_mut().find(|c| {
            sandboxes.contains(&c.sandbox)
                && c.config.metadata.as_ref().is_some_and(|m| m.name == name)
                && c.state == api::ContainerState::ContainerRunning
        });
        match running {
            Some(container) => {
                container.state = api::ContainerState::ContainerExited;
                container.exit_code = code;
                container.finished_at = now();
                container.reason = reason.to_string();
                true
            }
            None => false,
        }
    }

    /// The containers of the pod `pod_uid` in `state`, oldest first (ids are zero-padded
    /// counters: their order is the order of creation).
    fn of_pod<'s>(state: &'s State, pod_uid: &'s str) -> impl Iterator<Item = &'s Container> {
        state.containers.values().filter(move |c| {
            state
                .sandboxes
                .get(&c.sandbox)
                .is_some_and(|s| s.config.metadata.as_ref().is_some_and(|m| m.uid == pod_uid))
        })
    }

    /// The configs of the containers of the pod `pod_uid` named `name`, oldest first.
    fn configs(&self, pod_uid: &str, name: &str) -> Vec<api::ContainerConfig> {
        let state = self.state();
        Self::of_pod(&state, pod_uid)
            .filter(|c| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|c| c.config.clone())
            .collect()
    }

    /// The grace periods (seconds) containers were stopped with, in order.
    pub fn stop_timeouts(&self) -> Vec<i64> {
        self.state().stop_timeouts.clone()
    }

    /// The names of the pod `pod_uid`'s containers, in the order they were created.
    pub fn created(&self, pod_uid: &str) -> Vec<String> {
        let state = self.state();
        Self::of_pod(&state, pod_uid)
            .filter_map(|c| c.config.metadata.as_ref().map(|m| m.name.clone()))
            .collect()
    }

    /// Whether a container of the pod `pod_uid` named `name` runs.
    pub fn running(&self, pod_uid: &str, name: &str) -> bool {
        let state = self.state();
        Self::of_pod(&state, pod_uid).any(|c| {
            c.state == api::ContainerState::ContainerRunning
                && c.config.metadata.as_ref().is_some_and(|m| m.name == name)
        })
    }

    /// How many containers of the pod `pod_uid` named `name` exist (every attempt).
    pub fn attempts(&self, pod_uid: &str, name: &str) -> usize {
        self.configs(pod_uid, name).len()
    }

    /// The config the latest container of the pod `pod_uid` named `name` was created with.
    pub fn latest_config(&self, pod_uid: &str, name: &str) -> Option<api::ContainerConfig> {
        self.configs(pod_uid, name).pop()
    }

    /// How many sandboxes exist.
    pub fn sandbox_count(&self) -> usize {
        self.state().sandboxes.len()
    }

    fn id(state: &mut State, prefix: &str) -> String {
        state.next += 1;
        format!("{prefix}{:08x}", state.next)
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<(String, String), RuntimeError> {
        Ok(("fake".into(), "1.0".into()))
    }

    async fn conditions(&self) -> Result<Vec<api::RuntimeCondition>, RuntimeError> {
        let (reason, message) = self.state().network_down.clone().unwrap_or_default();
        Ok(vec![
            api::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                ..api::RuntimeCondition::default()
            },
            api::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: reason.is_empty(),
                reason,
                message,
            },
        ])
    }

    async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, RuntimeError> {
        let mut state = self.state();
        let id = Self::id(&mut state, "sandbox");
        // As containerd: a sandbox in the node's network namespace reports no address.
        let host_network = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref()?.namespace_options.as_ref())
            .is_some_and(|n| n.network == api::NamespaceMode::Node as i32);
        let ip = if host_network {
            String::new()
        } else {
            format!(
                "10.99.{}.{}",
                (state.next / 250) % 250,
                state.next % 250 + 2
            )
        };
        state.sandboxes.insert(
            id.clone(),
            Sandbox {
                config,
                ready: true,
                ip,
                created_at: now(),
            },
        );
        Ok(id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let Some(sandbox) = state.sandboxes.get_mut(id) else {
            return Err(not_found("StopPodSandbox", id));
        };
        sandbox.ready = false;
        for container in state.containers.values_mut().filter(|c| c.sandbox == id) {
            if container.state == api::ContainerState::ContainerRunning {
                container.state = api::ContainerState::ContainerExited;
                container.exit_code = 137;
                container.finished_at = now();
                container.reason = "Error".into();
            }
        }
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.sandboxes.remove(id);
        state.containers.retain(|_, c| c.sandbox != id);
        Ok(())
    }

    async fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, RuntimeError> {
        let state = self.state();
        let sandbox = state
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("PodSandboxStatus", id))?;
        Ok(api::PodSandboxStatus {
            id: id.to_string(),
            metadata: sandbox.config.metadata.clone(),
            state: if sandbox.ready {
                api::PodSandboxState::SandboxReady
            } else {
                api::PodSandboxState::SandboxNotready
            } as i32,
            created_at: sandbox.created_at,
            network: Some(api::PodSandboxNetworkStatus {
                ip: sandbox.ip.clone(),
                additional_ips: Vec::new(),
            }),
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
            ..api::PodSandboxStatus::default()
        })
    }

    async fn list_sandboxes(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::PodSandbox>, RuntimeError> {
        let state = self.state();
        Ok(state
            .sandboxes
            .iter()
            .filter(|(_, s)| {
                pod_uid
                    .is_none_or(|uid| s.config.labels.get(POD_UID).map(String::as_str) == Some(uid))
            })
            .map(|(id, s)| api::PodSandbox {
                id: id.clone(),
                metadata: s.config.metadata.clone(),
                state: if s.ready {
                    api::PodSandboxState::SandboxReady
                } else {
                    api::PodSandboxState::SandboxNotready
                } as i32,
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox: &str,
        config: api::ContainerConfig,
        _sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut state = self.state();
        if !state.sandboxes.contains_key(sandbox) {
            return Err(not_found("CreateContainer", sandbox));
        }
        let id = Self::id(&mut state, "container");
        state.containers.insert(
            id.clone(),
            Container {
                sandbox: sandbox.to_string(),
                config,
                state: api::ContainerState::ContainerCreated,
                created_at: now(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let image = state
            .containers
            .get(id)
            .and_then(|c| c.config.image.as_ref())
            .map(|i| i.image.clone())
            .ok_or_else(|| not_found("StartContainer", id))?;
        let behaviour = state
            .behaviours
            .get(&image)
            .cloned()
            .unwrap_or(Behaviour::Run);
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StartContainer", id))?;
        container.started_at = now();
        match behaviour {
            Behaviour::Exit(code) => {
                container.state = api::ContainerState::ContainerExited;
                container.exit_code = code;
                container.finished_at = now();
                container.reason = if code == 0 { "Completed" } else { "Error" }.into();
            }
            _ => container.state = api::ContainerState::ContainerRunning,
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.stop_timeouts.push(timeout);
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StopContainer", id))?;
        if container.state == api::ContainerState::ContainerRunning {
            container.state = api::ContainerState::ContainerExited;
            container.exit_code = 137;
            container.finished_at = now();
            container.reason = "Error".into();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.state().containers.remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::Container>, RuntimeError> {
        let state = self.state();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| {
                pod_uid
                    .is_none_or(|uid| c.config.labels.get(POD_UID).map(String::as_str) == Some(uid))
            })
            .map(|(id, c)| api::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: c
                    .config
                    .image
                    .as_ref()
                    .map(|i| format!("sha256:{}", i.image))
                    .unwrap_or_default(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                ..api::Container::default()
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, RuntimeError> {
        let state = self.state();
        let c = state
            .containers
            .get(id)
            .ok_or_else(|| not_found("ContainerStatus", id))?;
        Ok(api::ContainerStatus {
            id: id.to_string(),
            metadata: c.config.metadata.clone(),
            state: c.state as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: c
                .config
                .image
                .as_ref()
                .map(|i| format!("sha256:{}", i.image))
                .unwrap_or_default(),
            reason: c.reason.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            log_path: c.config.log_path.clone(),
            mounts: c.config.mounts.clone(),
            ..api::ContainerStatus::default()
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        _timeout: i64,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
        let state = self.state();
        if state.exec_unavailable {
            return Err(RuntimeError::Call {
                call: "ExecSync",
                status: tonic::Status::unavailable("connection refused"),
            });
        }
        let running = state
            .containers
            .get(id)
            .is_some_and(|c| c.state == api::ContainerState::ContainerRunning);
        if !running {
            return Err(not_found("ExecSync", id));
        }
        // `false` fails, anything else succeeds and echoes itself.
        let code = i32::from(command.first().map(String::as_str) == Some("false"));
        Ok((code, command.join(" ").into_bytes(), Vec::new()))
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        if self.state().containers.contains_key(id) {
            Ok(())
        } else {
            Err(not_found("ReopenContainerLog", id))
        }
    }

    async fn stream_url(&self, _request: StreamRequest) -> Result<String, RuntimeError> {
        Err(RuntimeError::Call {
            call: "Exec",
            status: tonic::Status::unimplemented("the in-memory runtime has no streaming server"),
        })
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, RuntimeError> {
        let state = self.state();
        Ok(state.images.contains(image).then(|| api::Image {
            id: format!("sha256:{image}"),
            repo_tags: vec![image.to_string()],
            ..api::Image::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&api::AuthConfig>,
        _sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut state = self.state();
        state.pulls.push(image.to_string());
        match state.behaviours.get(image) {
            Some(Behaviour::Missing) => {
                return Err(RuntimeError::Call {
                    call: "PullImage",
                    status: tonic::Status::not_found(format!(
                        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
                    )),
                });
            }
            Some(Behaviour::Private(user, password))
                if !auth.is_some_and(|a| a.username == *user && a.password == *password) =>
            {
                return Err(RuntimeError::Call {
                    call: "PullImage",
                    status: tonic::Status::unknown(format!(
                        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials"
                    )),
                });
            }
            _ => {}
        }
        state.images.insert(image.to_string());
        Ok(format!("sha256:{image}"))
    }
}
