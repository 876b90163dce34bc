//! `skiff sim-nodes`: simulated nodes for scale tests, benchmarks and controller tests, as
//! kwok does it. It registers N Node objects (Ready, with a pod CIDR), renews their Leases in
//! `kube-node-lease` every 10 s (spread evenly over the interval), marks the pods bound to them
//! Running and Ready with a pod IP (no containers run: their statuses are filled in), deletes
//! pods that are being deleted on them, and at the end removes the Nodes it created itself and
//! nothing else. A kube-rs client of the API like every component.
//!
//! - [`node`]: the Node, its status and Lease, pure.
//! - [`pods`]: what to do with a pod on a simulated node, pure.
//! - [`lean`]: a pod as a simulated node reads it.

pub mod lean;
pub mod node;
pub mod pods;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;

pub use node::Shape;

/// How often every node's Lease is renewed (a kubelet's default).
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How many slices the renewal interval is cut into.
const RENEW_SLICES: u32 = 100;
/// API writes in flight at once.
const WRITES_IN_FLIGHT: usize = 64;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many nodes.
    pub count: usize,
    /// Their names' prefix: nodes are `{prefix}0` … `{prefix}{count-1}`.
    pub prefix: String,
    /// Each node's size.
    pub shape: Shape,
}

/// Simulating failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// More nodes were asked for than the address ranges hold.
    #[error("at most {max} nodes can be simulated, not {0}", max = node::MAX_NODES)]
    TooMany(usize),
    /// A node could not be registered.
    #[error("registering node {name}")]
    Register {
        /// The node.
        name: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
}

/// A node this run simulates.
#[derive(Clone, Debug)]
struct Simulated {
    index: usize,
    /// Whether this run created the Node (and so removes it at the end).
    created: bool,
    /// The Node's uid: the removal is conditional on it, so a Node someone else made under
    /// the same name meanwhile is left alone.
    uid: String,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Registers the nodes, then simulates them until `shutdown` resolves, then removes the Nodes
/// it created. Returns how many nodes it simulated.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<usize, SimError> {
    if options.count > node::MAX_NODES {
        return Err(SimError::TooMany(options.count));
    }
    let nodes = register_all(&client, &options).await?;
    let count = nodes.len();
    tracing::info!(nodes = count, prefix = %options.prefix, "simulated nodes registered");
    let names: Vec<String> = nodes.keys().cloned().collect();
    tokio::select! {
        () = renew_leases(&client, &names) => {}
        () = run_pods(&client, &nodes) => {}
        () = shutdown => {}
    }
    remove_created(&client, &nodes).await;
    Ok(count)
}

async fn register_all(
    client: &Client,
    options: &Options,
) -> Result<HashMap<String, Simulated>, SimError> {
    let registered: Vec<Result<Option<(String, Simulated)>, SimError>> =
        futures::stream::iter(0..options.count)
            .map(|index| {
                let name = format!("{}{index}", options.prefix);
                async move {
                    register(client, &name, index, &options.shape)
                        .await
                        .map(|registered| {
                            registered.map(|(created, uid)| {
                                (
                                    name,
                                    Simulated {
                                        index,
                                        created,
                                        uid,
                                    },
                                )
                            })
                        })
                }
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
    let mut nodes = HashMap::new();
    for result in registered {
        if let Some((name, simulated)) = result? {
            nodes.insert(name, simulated);
        }
    }
    Ok(nodes)
}

/// Registers one node: `Some((created, uid))`, or `None` when a Node of that name exists and is
/// not a simulated one (it is left alone).
async fn register(
    client: &Client,
    name: &str,
    index: usize,
    shape: &Shape,
) -> Result<Option<(bool, String)>, SimError> {
    let error = |source| SimError::Register {
        name: name.to_string(),
        source,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let object: Node = serde_json::from_value(node::node(name, index))
        .map_err(|e| error(kube::Error::SerdeError(e)))?;
    let (stored, created) = match nodes.create(&PostParams::default(), &object).await {
        Ok(stored) => (stored, true),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let stored = nodes.get(name).await.map_err(error)?;
            if stored.labels().get(node::SIMULATED).map(String::as_str) != Some("true") {
                tracing::warn!(
                    node = name,
                    "a node of this name exists and is not simulated: left alone"
                );
                return Ok(None);
            }
            (stored, false)
        }
        Err(source) => return Err(error(source)),
    };
    let status = node::status(name, index, shape, &now());
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(error)?;
    let uid = stored.uid().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = node::lease(name, &uid, &now());
    let typed: Lease =
        serde_json::from_value(lease.clone()).map_err(|e| error(kube::Error::SerdeError(e)))?;
    match leases.create(&PostParams::default(), &typed).await {
        Ok(_) => {}
        // Left by an earlier run: it must point at this Node, or the garbage collector takes
        // it.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let owners =
                json!({"metadata": {"ownerReferences": lease["metadata"]["ownerReferences"]}});
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&owners))
                .await
                .map_err(error)?;
        }
        Err(source) => return Err(error(source)),
    }
    Ok(Some((created, uid)))
}

/// Renews every node's Lease once per [`RENEW_EVERY`], a slice of the nodes at a time.
async fn renew_leases(client: &Client, names: &[String]) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut tick = tokio::time::interval(RENEW_EVERY / RENEW_SLICES);
    let slice = names.len().div_ceil(RENEW_SLICES as usize).max(1);
    let params = PatchParams::default();
    for chunk in names.chunks(slice).cycle() {
        tick.tick().await;
        let renewal = json!({"spec": {"renewTime": now()}});
        futures::stream::iter(chunk)
            .for_each_concurrent(WRITES_IN_FLIGHT, |name| {
                let (leases, params, renewal) = (&leases, &params, &renewal);
                async move {
                    if let Err(error) = leases.patch(name, params, &Patch::Merge(renewal)).await {
                        tracing::debug!(node = %name, %error, "renewing a node lease failed");
                    }
                }
            })
            .await;
    }
}

/// Starts and removes the pods bound to the simulated nodes.
async fn run_pods(client: &Client, nodes: &HashMap<String, Simulated>) {
    let writes = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut handled: HashSet<(String, pods::Action)> = HashSet::new();
    let mut slots: HashMap<String, usize> = HashMap::new();
    let stream = watcher::watcher(
        Api::<lean::Pod>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                handled.retain(|(u, _)| *u != uid);
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(error) => {
                tracing::debug!(%error, "pod watch");
                continue;
            }
        };
        let Some(node_name) = pod.spec.node_name.clone() else {
            continue;
        };
        let Some(simulated) = nodes.get(&node_name) else {
            continue;
        };
        let action = pods::decide(&pod);
        let uid = pod.uid().unwrap_or_default();
        if action == pods::Action::Leave || !handled.insert((uid.clone(), action)) {
            continue;
        }
        let slot = slots.entry(node_name).or_insert(0);
        *slot += 1;
        let pod_ip = node::pod_ip(simulated.index, *slot - 1);
        let host_ip = node::node_ip(simulated.index);
        let api: Api<lean::Pod> =
            Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let writes = Arc::clone(&writes);
        tokio::spawn(async move {
            let _permit = writes.acquire_owned().await;
            let name = pod.name_any();
            let result = match action {
                pods::Action::Start => {
                    let now = now();
                    let status = pods::running_status(&pod, &pod_ip, &host_ip, &now);
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .map(drop)
                }
                pods::Action::Remove => {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    api.delete(&name, &params).await.map(drop)
                }
                pods::Action::Leave => Ok(()),
            };
            if let Err(error) = result {
                tracing::debug!(pod = %name, %error, "simulated pod write failed");
            }
        });
    }
}

/// Deletes the Nodes this run created (their Leases go with them, through owner references).
async fn remove_created(client: &Client, nodes: &HashMap<String, Simulated>) {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(nodes.iter().filter(|(_, s)| s.created))
        .for_each_concurrent(WRITES_IN_FLIGHT, |(name, simulated)| {
            let api = &api;
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(simulated.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            async move {
                if let Err(error) = api.delete(name, &params).await {
                    tracing::warn!(node = %name, %error, "removing a simulated node failed");
                }
            }
        })
        .await;
}
