//! The control plane of `skiff server`: compactor, API server, controllers, scheduler and node
//! agent, started over one
//! store and stopped together. Every background task listens to one cancellation token and is
//! joined on [`ControlPlane::shutdown`]; nothing is aborted mid-write.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_apiserver::clock::Clock;
use skiff_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for the tasks to finish before it gives up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to start the control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where certificates, tokens' keys and the admin kubeconfig live.
    pub data_dir: PathBuf,
    /// The address the API listens on.
    pub bind_address: IpAddr,
    /// The API's HTTPS port (0: any free port).
    pub https_port: u16,
    /// The network ClusterIPs come from.
    pub service_network: skiff_apiserver::allocation::ServiceNetwork,
    /// How often the store is compacted.
    pub compaction_interval: Duration,
    /// Whether to run the controllers in this process.
    pub controllers: bool,
    /// How the controllers run (the cluster's pod CIDR; the root CA and the signer of node
    /// certificates, by default the server's CA).
    pub controller_options: skiff_controllers::Options,
    /// Whether to run the scheduler in this process.
    pub scheduler: bool,
    /// The node agent to run in this process, if any.
    pub agent: Option<skiff_agent::Options>,
    /// The cluster DNS to serve from this process, if any (its `listen` address's IP is
    /// replaced by the API's when unspecified).
    pub dns: Option<skiff_dns::Options>,
}

/// Starting the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The API server did not start.
    #[error("starting the API server")]
    ApiServer(#[source] skiff_apiserver::ServerError),
}

/// A running control plane.
pub struct ControlPlane {
    /// The API's address.
    pub address: SocketAddr,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The file holding the join token.
    pub join_token: PathBuf,
    server: skiff_apiserver::Server,
    stop: CancellationToken,
    tasks: JoinSet<&'static str>,
}

/// Runs `work` until it ends or `stop` is cancelled; returns `name` for the shutdown log.
pub(crate) async fn until_cancelled<F>(
    name: &'static str,
    stop: CancellationToken,
    work: F,
) -> &'static str
where
    F: Future<Output = ()>,
{
    tokio::select! {
        () = work => tracing::warn!(task = name, "task ended on its own"),
        () = stop.cancelled() => {}
    }
    name
}

/// Starts the compactor, the API server and (unless disabled) the controllers and the scheduler
/// over `store`.
pub async fn start(
    options: Options,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<ControlPlane, ControlPlaneError> {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(until_cancelled(
        "compactor",
        stop.clone(),
        skiff_store::compactor::run(Arc::clone(&store), options.compaction_interval),
    ));
    let tls = options.data_dir.join("tls");
    let config = skiff_apiserver::Config {
        data_dir: options.data_dir,
        bind_address: options.bind_address,
        https_port: options.https_port,
        service_network: options.service_network,
    };
    let server = match skiff_apiserver::start(config, store, clock).await {
        Ok(server) => server,
        Err(error) => {
            stop.cancel();
            tasks.join_all().await;
            return Err(ControlPlaneError::ApiServer(error));
        }
    };
    if options.controllers {
        let client = component_client(&server.router, "controllers");
        let mut controller_options = options.controller_options.clone();
        // Pods trust the API through the CA the server serves with, unless told otherwise.
        controller_options
            .root_ca
            .get_or_insert_with(|| server.ca_cert.clone());
        // Node client certificates are signed with the CA the server trusts clients by.
        if controller_options.signer.is_none()
            && let Ok(ca_key) = std::fs::read_to_string(tls.join("ca.key"))
        {
            controller_options.signer = Some(skiff_controllers::csr::Signer {
                ca_cert: server.ca_cert.clone(),
                ca_key,
            });
        }
        let stopped = stop.clone();
        tasks.spawn(async move {
            // The controllers stop themselves, to give their leader Lease up on the way out.
            skiff_controllers::run_until(client, controller_options, stopped.cancelled_owned())
                .await;
            "controllers"
        });
    }
    if options.scheduler {
        let client = component_client(&server.router, "scheduler");
        let stopped = stop.clone();
        tasks.spawn(async move {
            // The scheduler stops itself, to give its leader Lease up on the way out.
            let options = skiff_scheduler::Options::default();
            skiff_scheduler::run_until(client, options, stopped.cancelled_owned()).await;
            "scheduler"
        });
    }
    if let Some(mut dns) = options.dns {
        if dns.listen.ip().is_unspecified() {
            let ip = match server.address.ip() {
                ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
                ip => ip,
            };
            dns.listen.set_ip(ip);
        }
        match skiff_dns::bind(dns.listen).await {
            Ok(bound) => {
                let client = component_client(&server.router, "dns");
                tasks.spawn(until_cancelled(
                    "cluster DNS",
                    stop.clone(),
                    bound.serve(client, dns),
                ));
            }
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "the cluster DNS cannot start")
            }
        }
    }
    if let Some(agent) = options.agent {
        let client = component_client(&server.router, "node");
        let stopped = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                result = skiff_agent::run(client, agent.clone()) => {
                    if let Err(error) = result {
                        tracing::error!(error = %error_chain(&error), "the node agent stopped");
                    }
                }
                () = stopped.cancelled() => skiff_agent::stopped(&agent).await,
            }
            "node agent"
        });
    }
    Ok(ControlPlane {
        address: server.address,
        kubeconfig: server.kubeconfig.clone(),
        join_token: server.join_token.clone(),
        server,
        stop,
        tasks,
    })
}

/// An error with its causes, one after the other.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A kube-rs client of `router` with the identity `system:skiff:{component}`.
pub fn component_client(router: &axum::Router, component: &str) -> kube::Client {
    skiff_client::in_process(
        skiff_apiserver::for_component(router.clone(), component),
        "default",
    )
}

impl ControlPlane {
    /// A client for an in-process component named `component`.
    pub fn client(&self, component: &str) -> kube::Client {
        component_client(&self.server.router, component)
    }

    /// Cancels every task, waits for each to finish (up to a grace period), then stops serving.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let joined = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(result) = self.tasks.join_next().await {
                match result {
                    Ok(name) => tracing::debug!(task = name, "stopped"),
                    Err(error) => tracing::warn!(%error, "a task failed while stopping"),
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = self.tasks.len(),
                "tasks did not stop within the grace period"
            );
        }
        self.server.stop();
    }
}
