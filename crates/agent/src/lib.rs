//! skiff's node agent, its kubelet: it registers its Node, runs the pods bound to it through a
//! CRI runtime (by default a containerd it starts and supervises itself), reports their status,
//! and keeps them running when the control plane is gone — a kube-rs client of the API like
//! every component.
//!
//! - [`runtime`]: the CRI calls behind one trait (containerd over its socket, or a fake).
//! - [`containerd`]: the agent's own containerd, configured and supervised ([`registries`]:
//!   its registry mirrors).
//! - [`images`]: image archives without a registry, and the sandbox image skiff builds.
//! - [`network`]: the CNI configuration and the egress guard, installed before any pod runs.
//!   The service proxy (`skiff_proxy`) runs beside the pods once the guard is in place.
//! - [`node`]: registration, status and Lease.
//! - [`pods`]: a worker per pod, carrying out what its spec asks of the runtime.
//! - [`cgroups`]: pod cgroups removed with their pods.
//! - [`bootstrap`]: joining a cluster with its join token (a client certificate of its own).
//! - [`server`]: the agent's HTTPS endpoint for the API server (`pods/log` from [`logs`];
//!   exec, attach and port-forward from [`streaming`]).

pub mod bootstrap;
pub mod cgroups;
pub mod containerd;
pub mod health;
pub mod images;
pub mod log_rotation;
pub mod logs;
pub mod network;
pub mod node;
pub mod pods;
pub mod registries;
pub mod runtime;
pub mod server;
pub mod streaming;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use skiff_client::events::{Recorder, Reporter};

use runtime::Runtime;
use runtime::cri::Cri;

/// The component the agent's Events come from (upstream's name, which tools filter on).
pub const COMPONENT: &str = "kubelet";

/// Where the container runtime comes from.
#[derive(Clone, Debug)]
pub enum RuntimeSource {
    /// A containerd the agent starts and supervises, under its data directory.
    Supervised,
    /// An existing CRI runtime at this socket.
    Endpoint(PathBuf),
}

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The Node's name.
    pub node_name: String,
    /// The Node's address.
    pub node_ip: IpAddr,
    /// Where the agent keeps its files (containerd's, CNI's, pods' volumes and logs).
    pub data_dir: PathBuf,
    /// The container runtime.
    pub runtime: RuntimeSource,
    /// The cluster's pod CIDR.
    pub cluster_cidr: String,
    /// The cluster's service CIDR.
    pub service_cidr: String,
    /// Extra Node labels.
    pub labels: Vec<(String, String)>,
    /// The cluster CA (PEM file): the agent's endpoint admits the API server by a client
    /// certificate it signed. Without it the endpoint is not served (no logs).
    pub cluster_ca: Option<PathBuf>,
    /// The endpoint's port (0: any free port, reported in the Node's status).
    pub port: u16,
    /// Registry mirrors (and plain-HTTP registries) for the agent's own containerd.
    pub registry_mirrors: Vec<registries::Mirror>,
    /// Pull only from the mirrors, never from the registries themselves.
    pub registry_mirrors_only: bool,
    /// How often running pods' configMap, secret, downwardAPI and projected files are written
    /// again from their sources (kubelet's `--sync-frequency`, a minute by default).
    pub sync_frequency: std::time::Duration,
    /// The cluster DNS pods are pointed at.
    pub dns: pods::dns::ClusterDns,
}

impl Options {
    fn containerd(&self) -> containerd::Paths {
        containerd_paths(&self.data_dir)
    }

    fn socket(&self) -> PathBuf {
        match &self.runtime {
            RuntimeSource::Supervised => self.containerd().socket(),
            RuntimeSource::Endpoint(path) => path.clone(),
        }
    }

    /// The agent's cgroup (parent of every pod's).
    pub fn node_slice(&self) -> String {
        format!("skiff-{}", network::suffix(&self.node_name))
    }

    /// The service proxy's nftables table.
    pub fn proxy_table(&self) -> String {
        skiff_proxy::table_name(&network::suffix(&self.node_name))
    }

    fn network(&self, pod_cidr: &str) -> network::Network {
        network::Network::new(
            &self.node_name,
            &self.cluster_cidr,
            &self.service_cidr,
            pod_cidr,
            self.data_dir.join("cni"),
        )
    }
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// containerd could not be started.
    #[error("starting containerd")]
    Containerd(#[from] containerd::ContainerdError),
    /// The runtime could not be reached.
    #[error("reaching the container runtime")]
    Runtime(#[from] runtime::RuntimeError),
    /// The sandbox image could not be provided.
    #[error("providing the sandbox image")]
    Image(#[from] images::ImageError),
    /// The Node could not be registered.
    #[error("registering the node {name}")]
    Register {
        /// The node.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The pod network could not be set up.
    #[error("setting up the pod network")]
    Network(#[from] network::NetworkError),
    /// The agent's endpoint could not be set up.
    #[error("setting up the agent's endpoint")]
    Endpoint(#[from] server::ServerError),
    /// The registry host files could not be written.
    #[error("writing containerd's registry host files")]
    Registries(#[source] std::io::Error),
}

/// Runs the agent until the future is dropped. Pods keep running when it stops (and when it is
/// killed): a new agent adopts them.
pub async fn run(client: Client, options: Options) -> Result<(), AgentError> {
    let mut supervisor = None;
    match options.runtime {
        RuntimeSource::Supervised => {
            let paths = options.containerd();
            registries::write(
                &paths.registries(),
                &options.registry_mirrors,
                options.registry_mirrors_only,
            )
            .map_err(AgentError::Registries)?;
            supervisor = Some(containerd::Supervisor::start(paths).await?);
        }
        RuntimeSource::Endpoint(_) if !options.registry_mirrors.is_empty() => {
            tracing::warn!("registry mirrors apply only to the agent's own containerd; ignored");
        }
        RuntimeSource::Endpoint(_) => {}
    }
    let socket = options.socket();
    let cri: Arc<dyn Runtime> = Arc::new(Cri::new(&socket)?);
    let (runtime_name, runtime_version) = cri.version().await?;
    images::ensure_pause(cri.as_ref(), &socket, &options.data_dir.join("images")).await?;
    let endpoint = match &options.cluster_ca {
        Some(path) => Some(endpoint(&options, path).await?),
        None => {
            tracing::warn!("no cluster CA given: the agent's endpoint (logs) is not served");
            None
        }
    };
    let facts = node::Facts {
        name: options.node_name.clone(),
        ip: options.node_ip.to_string(),
        runtime_version: format!("{runtime_name}://{runtime_version}"),
        port: endpoint.as_ref().map_or(0, |(_, _, port)| *port),
        labels: options.labels.clone(),
        storage_bytes: health::filesystem_bytes(&options.data_dir),
    };
    register(&client, &facts).await?;
    let pod_cidr = node::pod_cidr(&client, &options.node_name).await;
    State::of(&options, &pod_cidr).save(&options.data_dir);
    let network = options.network(&pod_cidr);
    network.install().await?;
    let proxy = skiff_proxy::Options {
        node_name: options.node_name.clone(),
        table: options.proxy_table(),
        cluster_cidr: options.cluster_cidr.clone(),
        bridge: Some(network.bridge.clone()),
    };
    tracing::info!(node = %options.node_name, %pod_cidr, "node agent ready");
    let reporter = Reporter {
        component: COMPONENT,
        instance: options.node_name.clone(),
        host: Some(options.node_name.clone()),
        action: |_| "",
    };
    let (recorder, events) = Recorder::new(client.clone(), reporter);
    let shared = Arc::new(pods::worker::Shared {
        client: client.clone(),
        runtime: cri,
        node: options.node_name.clone(),
        node_ip: options.node_ip.to_string(),
        runtime_name,
        logs: options.data_dir.join("logs"),
        pods: options.data_dir.join("pods"),
        node_slice: options.node_slice(),
        recorder,
        sync_frequency: options.sync_frequency,
        dns: options.dns.clone(),
        host_ports: Default::default(),
        secrets_in_memory: true,
    });
    let supervise = async {
        match supervisor {
            Some(supervisor) => supervisor.watch().await,
            None => std::future::pending().await,
        }
    };
    let served = Arc::new(server::Endpoint {
        logs: shared.logs.clone(),
        runtime: Arc::clone(&shared.runtime),
        node: shared.node.clone(),
    });
    let serve = async move {
        match endpoint {
            Some((listener, tls, _)) => server::serve(listener, tls, served).await,
            None => std::future::pending().await,
        }
    };
    let runtime = Arc::clone(&shared.runtime);
    let logs = shared.logs.clone();
    tokio::select! {
        () = supervise => {}
        () = serve => {}
        () = events => {}
        () = node::keep_alive(client.clone(), facts, &options.data_dir, runtime.as_ref()) => {}
        () = log_rotation::run(runtime.as_ref(), &options.node_name, &logs) => {}
        () = pods::run(shared) => {}
        () = skiff_proxy::run(client.clone(), proxy) => {}
    }
    Ok(())
}

/// Registers the Node, trying again while the API cannot be reached or answers with a server
/// error or asks to slow down (as kubelet does: an agent restarted while the control plane is
/// down waits for it, and the pods its runtime holds run on meanwhile); a refusal (any other
/// 4xx) ends the agent.
async fn register(client: &kube::Client, facts: &node::Facts) -> Result<(), AgentError> {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match node::register(client, facts).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code < 500 && status.code != 429 => {
                return Err(AgentError::Register {
                    name: facts.name.clone(),
                    source: kube::Error::Api(status),
                });
            }
            Err(error) => {
                tracing::warn!(node = %facts.name, %error, "registering the node failed; trying again (running pods go on)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(7));
            }
        }
    }
}

/// What a clean stop of the agent undoes (a crash leaves it): the service proxy's rules. Pods
/// keep running.
pub async fn stopped(options: &Options) {
    skiff_proxy::remove(&options.proxy_table()).await;
}

/// Binds the agent's endpoint; returns it with its TLS and port.
async fn endpoint(
    options: &Options,
    ca: &std::path::Path,
) -> Result<(tokio::net::TcpListener, Arc<rustls::ServerConfig>, u16), server::ServerError> {
    let ca_pem = std::fs::read_to_string(ca).map_err(|source| server::ServerError::Ca {
        path: ca.to_path_buf(),
        source,
    })?;
    let tls = server::tls_config(
        &ca_pem,
        vec![options.node_ip.to_string(), options.node_name.clone()],
    )?;
    let address = std::net::SocketAddr::new(options.node_ip, options.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| server::ServerError::Bind { address, source })?;
    let port = listener.local_addr().map_or(options.port, |a| a.port());
    Ok((listener, tls, port))
}

/// What a reset needs to know of the agent that ran in a data directory (`agent.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    node_name: String,
    pod_cidr: String,
    cluster_cidr: String,
    service_cidr: String,
    endpoint: Option<PathBuf>,
}

impl State {
    fn of(options: &Options, pod_cidr: &str) -> Self {
        State {
            node_name: options.node_name.clone(),
            pod_cidr: pod_cidr.to_string(),
            cluster_cidr: options.cluster_cidr.clone(),
            service_cidr: options.service_cidr.clone(),
            endpoint: match &options.runtime {
                RuntimeSource::Supervised => None,
                RuntimeSource::Endpoint(path) => Some(path.clone()),
            },
        }
    }

    fn save(&self, data_dir: &std::path::Path) {
        let written = std::fs::create_dir_all(data_dir).and_then(|()| {
            std::fs::write(
                data_dir.join("agent.json"),
                serde_json::to_vec(self).unwrap_or_default(),
            )
        });
        if let Err(error) = written {
            tracing::warn!(%error, "recording the agent's state failed; a reset will miss its network");
        }
    }
}

/// Where the containerd an agent supervises keeps its files, under the agent's data directory.
fn containerd_paths(data_dir: &std::path::Path) -> containerd::Paths {
    containerd::Paths {
        dir: data_dir.join("containerd"),
        cni_conf_dir: data_dir.join("cni").join("net.d"),
        sandbox_image: images::PAUSE_IMAGE.into(),
    }
}

/// Removes everything the agent that ran with `data_dir` made on this machine (see [`reset`]);
/// `false` if no agent ran there.
pub async fn reset_data_dir(data_dir: &std::path::Path) -> bool {
    let state = std::fs::read(data_dir.join("agent.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<State>(&bytes).ok());
    let Some(state) = state else {
        return stop_unregistered(data_dir).await;
    };
    let options = Options {
        node_name: state.node_name,
        node_ip: IpAddr::from([127, 0, 0, 1]),
        data_dir: data_dir.to_path_buf(),
        runtime: state
            .endpoint
            .map_or(RuntimeSource::Supervised, RuntimeSource::Endpoint),
        cluster_cidr: state.cluster_cidr,
        service_cidr: state.service_cidr,
        labels: Vec::new(),
        cluster_ca: None,
        port: 0,
        registry_mirrors: Vec::new(),
        registry_mirrors_only: false,
        sync_frequency: std::time::Duration::from_secs(60),
        dns: pods::dns::ClusterDns {
            server: None,
            domain: String::new(),
        },
    };
    reset(&options, &state.pod_cidr).await;
    true
}

/// Stops the containerd of an agent that ended before it registered its node: it starts
/// containerd first and records `agent.json` only once the node has its pod CIDR, so a server
/// stopped while its API did not answer left a containerd that nothing else would stop. Such an
/// agent made no pods, network or cgroups yet. `false` if it started no containerd either.
async fn stop_unregistered(data_dir: &std::path::Path) -> bool {
    let paths = containerd_paths(data_dir);
    if !paths.pid_file().exists() {
        return false;
    }
    containerd::stop(&paths).await;
    pods::tmpfs::unmount_below(data_dir);
    true
}

/// Removes everything an agent with `options` made on this machine: its pods' sandboxes and
/// containers, their cgroups, the guard, the bridge, and the containerd it started (by the pid
/// it recorded; started again first if it was killed, to take the sandboxes apart). For tests
/// and `skiff agent --reset`; a running agent must be stopped first.
pub async fn reset(options: &Options, pod_cidr: &str) {
    if let RuntimeSource::Supervised = options.runtime {
        containerd::revive(&options.containerd()).await;
    }
    if let Ok(cri) = Cri::new(&options.socket()) {
        let labels = pods::labels::AGENT;
        let ours = |l: &std::collections::HashMap<String, String>| {
            l.get(labels).map(String::as_str) == Some(options.node_name.as_str())
        };
        if let Ok(sandboxes) = cri.list_sandboxes(None).await {
            for sandbox in sandboxes.iter().filter(|s| ours(&s.labels)) {
                let _ = cri.stop_sandbox(&sandbox.id).await;
                let _ = cri.remove_sandbox(&sandbox.id).await;
            }
        }
    }
    pods::tmpfs::unmount_below(&options.data_dir.join("pods"));
    cgroups::remove_slice(&options.node_slice());
    stopped(options).await;
    options.network(pod_cidr).remove().await;
    if let RuntimeSource::Supervised = options.runtime {
        containerd::stop(&options.containerd()).await;
        // What its containerd left mounted (sandboxes' shm, rootfs of containers it could not
        // stop because it was not running) goes too.
        pods::tmpfs::unmount_below(&options.data_dir);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

    use super::*;

    #[tokio::test]
    async fn reset_should_find_nothing_where_no_agent_ran() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!reset_data_dir(dir.path()).await);
    }

    /// An agent stopped before it registered leaves only containerd's pid file; the reset stops
    /// that process only if it is the containerd of this directory, never a stranger.
    #[tokio::test]
    async fn reset_of_an_unregistered_agent_should_leave_other_processes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let paths = containerd_paths(dir.path());
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(paths.pid_file(), stranger.id().to_string()).unwrap();
        assert!(reset_data_dir(dir.path()).await);
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "the stranger was stopped"
        );
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }
}
