//! skiff's controllers. Each is a kube-rs client of the API and nothing more — it never touches
//! the store or the API server's internals — so it runs the same in the server's process (over
//! the in-process transport) or anywhere else (over HTTPS). Every controller rebuilds what it
//! knows from the API after a restart, and retries failures with back-off.
//!
//! - [`gc`]: the garbage collector (owner references; background, foreground and orphan
//!   deletion).
//! - [`namespace`]: empties namespaces that are being deleted, then lets them go.
//! - [`heartbeat`]: renews the Lease that tells others the controllers are alive.
//! - [`node_ipam`]: gives each Node a pod CIDR.

pub mod gc;
pub mod heartbeat;
pub mod namespace;
pub mod node_ipam;
mod resources;

/// Runs every controller until the returned future is dropped.
pub async fn run(client: kube::Client) {
    let ipam = async {
        match node_ipam::Range::parse(node_ipam::CLUSTER_CIDR) {
            Some(range) => node_ipam::run(client.clone(), range).await,
            None => tracing::error!(
                cidr = node_ipam::CLUSTER_CIDR,
                "the cluster CIDR does not parse"
            ),
        }
    };
    tokio::join!(
        gc::run(client.clone()),
        namespace::run(client.clone()),
        ipam,
        heartbeat::run(client.clone())
    );
}
