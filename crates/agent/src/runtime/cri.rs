//! [`Runtime`] over CRI's gRPC API on a unix socket (containerd's CRI plugin, or any other CRI
//! runtime given by `--container-runtime-endpoint`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Runtime, RuntimeError, StreamRequest, api};

/// How long one CRI call may take (image pulls get longer).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A CRI runtime reached through its socket.
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// The socket path of an endpoint given as `unix:///path` or a plain path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    /// A client of the runtime at `socket`. Connects lazily: the runtime may start later, and
    /// a call made while it is down fails and is retried by the caller.
    pub fn new(socket: &Path) -> Result<Self, RuntimeError> {
        let path = socket.to_path_buf();
        let unreachable = |source| RuntimeError::Unreachable {
            endpoint: path.display().to_string(),
            source,
        };
        let channel = Endpoint::try_from("http://cri.local")
            .map_err(unreachable)?
            .timeout(CALL_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}

/// A label selector for the runtime objects of one pod.
fn uid_selector(uid: &str) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([(crate::pods::labels::POD_UID.to_string(), uid.to_string())])
}

fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |status| RuntimeError::Call { call, status }
}

#[async_trait]
impl Runtime for Cri {
    async fn version(&self) -> Result<(String, String), RuntimeError> {
        let answer = self
            .runtime
            .clone()
            .version(api::VersionRequest::default())
            .await
            .map_err(call("Version"))?
            .into_inner();
        Ok((answer.runtime_name, answer.runtime_version))
    }

    async fn conditions(&self) -> Result<Vec<api::RuntimeCondition>, RuntimeError> {
        let answer = self
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await
            .map_err(call("Status"))?
            .into_inner();
        Ok(answer.status.map(|s| s.conditions).unwrap_or_default())
    }

    async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, RuntimeError> {
        let request = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(self
            .runtime
            .clone()
            .run_pod_sandbox(request)
            .await
            .map_err(call("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let request = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime
            .clone()
            .stop_pod_sandbox(request)
            .await
            .map_err(call("StopPodSandbox"))?;
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let request = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime
            .clone()
            .remove_pod_sandbox(request)
            .await
            .map_err(call("RemovePodSandbox"))?;
        Ok(())
    }

    async fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, RuntimeError> {
        let request = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        self.runtime
            .clone()
            .pod_sandbox_status(request)
            .await
            .map_err(call("PodSandboxStatus"))?
            .into_inner()
            .status
            .ok_or(RuntimeError::Incomplete {
                call: "PodSandboxStatus",
                what: "a status",
            })
    }

    async fn list_sandboxes(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::PodSandbox>, RuntimeError> {
        let request = api::ListPodSandboxRequest {
            filter: pod_uid.map(|uid| api::PodSandboxFilter {
                label_selector: uid_selector(uid),
                ..api::PodSandboxFilter::default()
            }),
        };
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(request)
            .await
            .map_err(call("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    async fn create_container(
        &self,
        sandbox: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let request = api::CreateContainerRequest {
            pod_sandbox_id: sandbox.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self
            .runtime
            .clone()
            .create_container(request)
            .await
            .map_err(call("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let request = api::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime
            .clone()
            .start_container(request)
            .await
            .map_err(call("StartContainer"))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), RuntimeError> {
        let request = api::StopContainerRequest {
            container_id: id.to_string(),
            timeout,
        };
        let mut request = tonic::Request::new(request);
        // The call lasts as long as the grace period it gives the container.
        request.set_timeout(CALL_TIMEOUT + Duration::from_secs(timeout.max(0).unsigned_abs()));
        self.runtime
            .clone()
            .stop_container(request)
            .await
            .map_err(call("StopContainer"))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let request = api::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime
            .clone()
            .remove_container(request)
            .await
            .map_err(call("RemoveContainer"))?;
        Ok(())
    }

    async fn list_containers(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<api::Container>, RuntimeError> {
        let request = api::ListContainersRequest {
            filter: pod_uid.map(|uid| api::ContainerFilter {
                label_selector: uid_selector(uid),
                ..api::ContainerFilter::default()
            }),
        };
        Ok(self
            .runtime
            .clone()
            .list_containers(request)
            .await
            .map_err(call("ListContainers"))?
            .into_inner()
            .containers)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, RuntimeError> {
        let request = api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.runtime
            .clone()
            .container_status(request)
            .await
            .map_err(call("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or(RuntimeError::Incomplete {
                call: "ContainerStatus",
                what: "a status",
            })
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: i64,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
        let mut request = tonic::Request::new(api::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: command.to_vec(),
            timeout,
        });
        request.set_timeout(Duration::from_secs(timeout.max(1).unsigned_abs() + 5));
        let answer = self
            .runtime
            .clone()
            .exec_sync(request)
            .await
            .map_err(call("ExecSync"))?
            .into_inner();
        Ok((answer.exit_code, answer.stdout, answer.stderr))
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        self.runtime
            .clone()
            .reopen_container_log(api::ReopenContainerLogRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(call("ReopenContainerLog"))?;
        Ok(())
    }

    async fn stream_url(&self, request: StreamRequest) -> Result<String, RuntimeError> {
        let mut runtime = self.runtime.clone();
        Ok(match request {
            StreamRequest::Exec(request) => {
                runtime
                    .exec(request)
                    .await
                    .map_err(call("Exec"))?
                    .into_inner()
                    .url
            }
            StreamRequest::Attach(request) => {
                runtime
                    .attach(request)
                    .await
                    .map_err(call("Attach"))?
                    .into_inner()
                    .url
            }
            StreamRequest::PortForward(request) => {
                runtime
                    .port_forward(request)
                    .await
                    .map_err(call("PortForward"))?
                    .into_inner()
                    .url
            }
        })
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, RuntimeError> {
        let request = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..api::ImageSpec::default()
            }),
            verbose: false,
        };
        Ok(self
            .images
            .clone()
            .image_status(request)
            .await
            .map_err(call("ImageStatus"))?
            .into_inner()
            .image)
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&api::AuthConfig>,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let request = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..api::ImageSpec::default()
            }),
            auth: auth.cloned(),
            sandbox_config: Some(sandbox_config.clone()),
        };
        Ok(self
            .images
            .clone()
            .pull_image(request)
            .await
            .map_err(call("PullImage"))?
            .into_inner()
            .image_ref)
    }
}
