//! The container runtime behind one narrow trait: the CRI calls the agent makes, in CRI's own
//! types (`k8s_cri::v1`). [`cri::Cri`] speaks CRI over a unix socket (containerd, or any CRI
//! runtime); [`fake::FakeRuntime`] keeps sandboxes and containers in memory for tests, where
//! containers exit when a test says so.

pub mod cri;
pub mod fake;

use async_trait::async_trait;
pub use k8s_cri::v1 as api;

/// A CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime's socket could not be reached.
    #[error("cannot reach the container runtime at {endpoint}")]
    Unreachable {
        /// The socket.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime answered a call with an error.
    #[error("{call}: {message}", message = status.message())]
    Call {
        /// The CRI call.
        call: &'static str,
        /// The runtime's answer.
        #[source]
        status: tonic::Status,
    },
    /// The runtime answered without what the call returns.
    #[error("{call}: the runtime's answer lacks {what}")]
    Incomplete {
        /// The CRI call.
        call: &'static str,
        /// What is missing.
        what: &'static str,
    },
}

impl RuntimeError {
    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// Whether the runtime gave up on the call at its deadline (an `ExecSync` command that ran
    /// past its timeout).
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Self::Call { status, .. } if status.code() == tonic::Code::DeadlineExceeded)
    }
}

/// What a streaming URL is asked for.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    /// A command run in a container.
    Exec(api::ExecRequest),
    /// The streams of a container's main process.
    Attach(api::AttachRequest),
    /// Connections to ports in a sandbox's network namespace.
    PortForward(api::PortForwardRequest),
}

/// The CRI calls the agent makes.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The runtime's name and version (`containerd`, `1.6.20`).
    async fn version(&self) -> Result<(String, String), RuntimeError>;
    /// The runtime's own conditions (`RuntimeReady`, `NetworkReady`).
    async fn conditions(&self) -> Result<Vec<api::RuntimeCondition>, RuntimeError>;
    /// Starts a pod sandbox; returns its id.
    async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, RuntimeError>;
    /// Stops a sandbox and every container in it.
    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    /// Removes a stopped sandbox.
    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError>;
    /// A sandbox's status (its IP among it).
    async fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, RuntimeError>;
    /// Every sandbox, or those of the pod `pod_uid`.
    async fn list_sandboxes(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::PodSandbox>, RuntimeError>;
    /// Creates a container in a sandbox; returns its id.
    async fn create_container(
        &self,
        sandbox: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, RuntimeError>;
    /// Starts a created container.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops a container: SIGTERM, then SIGKILL after `timeout` seconds.
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError>;
    /// Removes a stopped container.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container, or those of the pod `pod_uid`.
    async fn list_containers(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::Container>, RuntimeError>;
    /// One container's status (exit code, reason, message, times).
    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, RuntimeError>;
    /// Runs `command` in a running container and waits for it (at most `timeout` seconds):
    /// its exit code, standard output and standard error.
    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: i64,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError>;
    /// A one-use URL on the runtime's streaming server that serves the exec, attach or
    /// port-forward `request` (the protocols `kubectl` speaks).
    async fn stream_url(&self, request: StreamRequest) -> Result<String, RuntimeError>;
    /// Makes the runtime write the container `id`'s log to a new file at its log path (after
    /// the old one was renamed away: log rotation).
    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError>;
    /// The image `image`, if the runtime has it.
    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, RuntimeError>;
    /// Pulls `image`, with `auth` for its registry if given; returns its reference (the image
    /// id).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&api::AuthConfig>,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, RuntimeError>;
}
