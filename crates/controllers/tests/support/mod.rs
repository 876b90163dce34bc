//! What the controllers' in-process tests share.

use std::time::Duration;

/// Polls `check` every 50 ms until it holds, for up to 30 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_for(what, 30, check).await;
}

/// Polls `check` every 50 ms until it holds, for up to `seconds`.
#[allow(dead_code)] // not every test binary waits longer
pub async fn eventually_for<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..seconds * 20 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// An in-process cluster with the controllers, a scheduler and simulated nodes `sim-0`, ...;
/// the nodes stop when it is dropped.
#[allow(dead_code)] // not every test binary runs pods
pub struct SimCluster {
    pub cluster: skiff_cluster::InProcess,
    /// The controllers (taken to stop them).
    pub controllers: Option<skiff_cluster::in_process::Controllers>,
    _scheduler: skiff_cluster::in_process::Controllers,
    _nodes: tokio::sync::oneshot::Sender<()>,
}

/// Starts a [`SimCluster`] of `count` nodes.
#[allow(dead_code)] // not every test binary runs pods
pub async fn sim_cluster(count: usize) -> SimCluster {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let controllers = cluster.start_controllers();
    let scheduler = cluster.start_scheduler(skiff_scheduler::Options::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let nodes = cluster.client("sim-nodes");
    tokio::spawn(async move {
        let options = skiff_sim_nodes::Options {
            count,
            prefix: "sim-".into(),
            shape: skiff_sim_nodes::Shape::default(),
        };
        skiff_sim_nodes::run(nodes, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    SimCluster {
        cluster,
        controllers: Some(controllers),
        _scheduler: scheduler,
        _nodes: stop,
    }
}
