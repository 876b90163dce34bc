//! skiff's controllers. Each is a kube-rs client of the API and nothing more — it never touches
//! the store or the API server's internals — so it runs the same in the server's process (over
//! the in-process transport) or anywhere else (over HTTPS). Every controller rebuilds what it
//! knows from the API after a restart, and retries failures with back-off. They run together
//! only while they lead, through the Lease `kube-system/kube-controller-manager` (as upstream's
//! controller manager): two servers on one store never run the same controller twice, a standby
//! takes over within the Lease's duration, and `componentstatuses` reads the same Lease.
//!
//! - [`gc`]: the garbage collector (owner references; background, foreground and orphan
//!   deletion).
//! - [`namespace`]: empties namespaces that are being deleted, then lets them go.
//! - [`node_ipam`]: gives each Node a pod CIDR.
//! - [`service_account`]: a `default` ServiceAccount in every namespace.
//! - [`root_ca`]: the `kube-root-ca.crt` ConfigMap in every namespace.
//! - [`csr`]: approves and signs joining nodes' client certificates.
//! - [`replicaset`]: keeps each ReplicaSet's (and ReplicationController's) pods.
//! - [`deployment`]: rolls Deployments out through ReplicaSets.
//! - [`statefulset`]: keeps StatefulSets' ordered pods and their claims.
//! - [`daemonset`]: one pod of each DaemonSet on every eligible node.
//! - [`endpointslice`]: the endpoints of every Service with a selector (and its Endpoints).
//! - [`service_lb`]: publishes LoadBalancer Services at their nodes' addresses.
//! - [`job`]: runs Jobs' pods to completion.
//! - [`cronjob`]: starts Jobs on a schedule.
//! - [`node_lifecycle`]: marks silent nodes, taints unhealthy ones, evicts their pods.
//! - [`pod_gc`]: deletes pods of nodes that are gone and finished pods beyond a threshold.

pub mod clock;
pub mod cronjob;
pub mod csr;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
mod failure_policy;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
mod owned;
pub mod pod_gc;
pub mod pods;
pub mod replicaset;
mod resources;
pub mod revisions;
pub mod root_ca;
pub mod service_account;
pub mod service_lb;
pub mod shared_nodes;
pub mod shared_pods;
pub mod statefulset;

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The cluster's pod CIDR, cut into one `/24` per node.
    pub cluster_cidr: String,
    /// The cluster CA's certificate (PEM) that the root-CA publisher puts in every namespace;
    /// `None` publishes nothing.
    pub root_ca: Option<String>,
    /// The cluster CA that signs node client certificates; `None` signs nothing.
    pub signer: Option<csr::Signer>,
    /// How the node-lifecycle controller times nodes' health.
    pub node_timing: node_lifecycle::Timing,
    /// How the pod garbage collector runs.
    pub pod_gc: pod_gc::Options,
    /// This instance's identity in the leader Lease (distinct per process by default).
    pub identity: String,
    /// Where time-driven controllers (CronJobs) read the time.
    pub clock: clock::Clock,
}

/// The leader Lease's namespace.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The leader Lease's name (upstream's controller manager uses the same).
pub const LEASE_NAME: &str = "kube-controller-manager";

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster_cidr: node_ipam::CLUSTER_CIDR.into(),
            root_ca: None,
            signer: None,
            node_timing: node_lifecycle::Timing::default(),
            pod_gc: pod_gc::Options::default(),
            identity: skiff_client::leader::identity(),
            clock: clock::Clock::system(),
        }
    }
}

/// Runs every controller while this instance leads, until the returned future is dropped.
pub async fn run(client: kube::Client, options: Options) {
    run_until(client, options, std::future::pending()).await;
}

/// Runs every controller while this instance leads, until `stop`; then gives the Lease up so
/// that a standby takes over at once.
pub async fn run_until(client: kube::Client, options: Options, stop: impl Future<Output = ()>) {
    let mut candidate = skiff_client::leader::Candidate::new(
        client.clone(),
        LEASE_NAMESPACE,
        LEASE_NAME,
        options.identity.clone(),
    );
    candidate
        .lead_until(|| all(client.clone(), options.clone()), stop)
        .await;
}

/// Every controller, each a task of its own (so that one busy controller can neither hold the
/// others' watches unread nor keep them off the second core), until the future is dropped,
/// which stops them all.
async fn all(client: kube::Client, options: Options) {
    let mut tasks = tokio::task::JoinSet::new();
    let cidr = options.cluster_cidr.clone();
    let c = client.clone();
    tasks.spawn(async move {
        match node_ipam::Range::parse(&cidr) {
            Some(range) => node_ipam::run(c, range).await,
            None => tracing::error!(
                %cidr,
                "the cluster CIDR does not parse (a.b.c.d/n, n at most 24)"
            ),
        }
    });
    if let Some(ca) = options.root_ca.clone() {
        tasks.spawn(root_ca::run(client.clone(), ca));
    }
    if let Some(signer) = options.signer.clone() {
        tasks.spawn(csr::run(client.clone(), signer));
    }
    // Every subscription is taken before the shared watch first runs.
    let (shared, pods_feed) = shared_pods::SharedPods::start(&client);
    let index = pods::PodIndex::new(&shared);
    tasks.spawn(gc::run(client.clone()));
    tasks.spawn(namespace::run(client.clone()));
    tasks.spawn(replicaset::run::<k8s_openapi::api::apps::v1::ReplicaSet>(
        client.clone(),
        index.clone(),
        shared.subscribe(),
    ));
    tasks.spawn(replicaset::run::<
        k8s_openapi::api::core::v1::ReplicationController,
    >(client.clone(), index.clone(), shared.subscribe()));
    tasks.spawn(deployment::run(client.clone()));
    tasks.spawn(statefulset::run(
        client.clone(),
        index.clone(),
        shared.subscribe(),
    ));
    tasks.spawn(daemonset::run(client.clone(), index, shared.subscribe()));
    tasks.spawn(endpointslice::run(client.clone(), shared.subscribe()));
    tasks.spawn(service_lb::run(client.clone()));
    tasks.spawn(job::run(client.clone(), shared.subscribe()));
    tasks.spawn(cronjob::run(client.clone(), options.clock.clone()));
    let (nodes, nodes_feed) = shared_nodes::start(&client);
    tasks.spawn(nodes_feed);
    tasks.spawn(node_lifecycle::run(
        client.clone(),
        options.node_timing.clone(),
        nodes.clone(),
    ));
    tasks.spawn(pod_gc::run(
        client.clone(),
        options.pod_gc.clone(),
        shared.store(),
        nodes,
    ));
    tasks.spawn(service_account::run(client.clone()));
    // The shared pod watch starts last: every subscriber above is taken.
    tasks.spawn(pods_feed);
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            tracing::error!(%error, "a controller stopped");
        }
    }
}
