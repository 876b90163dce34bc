//! skiff's controllers. Each is a kube-rs client of the API and nothing more — it never touches
//! the store or the API server's internals — so it runs the same in the server's process (over
//! the in-process transport) or anywhere else (over HTTPS). Every controller rebuilds what it
//! knows from the API after a restart, and retries failures with back-off.
//!
//! - [`gc`]: the garbage collector (owner references; background, foreground and orphan
//!   deletion).
//! - [`namespace`]: empties namespaces that are being deleted, then lets them go.
//! - [`heartbeat`]: renews the Lease that tells others the controllers are alive.

pub mod gc;
pub mod heartbeat;
pub mod namespace;
mod resources;

/// Runs every controller until the returned future is dropped.
pub async fn run(client: kube::Client) {
    tokio::join!(
        gc::run(client.clone()),
        namespace::run(client.clone()),
        heartbeat::run(client)
    );
}
