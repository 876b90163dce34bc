//! The subcommands that run one component alone against a cluster's kubeconfig: `skiff
//! scheduler` (the scheduler `skiff server` also runs inside) and `skiff sim-nodes` (simulated
//! nodes for scale tests and benchmarks).

use std::path::PathBuf;

use anyhow::Context;

use crate::{kubeconfig, signals};

/// Options of `skiff scheduler`.
#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// The kubeconfig of the cluster to schedule for.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The `spec.schedulerName` of the pods to place.
    #[arg(long, default_value = skiff_scheduler::DEFAULT_SCHEDULER)]
    scheduler_name: String,
}

/// Runs the scheduler (leading through the `kube-system/kube-scheduler` Lease) until SIGINT or
/// SIGTERM.
pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = kubeconfig::client(&args.kubeconfig).await?;
    let options = skiff_scheduler::Options {
        scheduler_name: args.scheduler_name,
        ..skiff_scheduler::Options::default()
    };
    tokio::select! {
        () = skiff_scheduler::run(client, options) => {}
        () = signals::terminated() => {}
    }
    Ok(())
}

/// Options of `skiff sim-nodes`.
#[derive(clap::Args)]
pub struct SimNodesArgs {
    /// The kubeconfig of the cluster to join.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many nodes.
    #[arg(long)]
    count: usize,
    /// The nodes' name prefix (`{prefix}0`, `{prefix}1`, ...).
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Each node's CPUs.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Each node's memory.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// How many pods each node may run.
    #[arg(long, default_value_t = 110)]
    pods: u32,
}

/// Simulates the nodes until SIGINT or SIGTERM, then removes the Nodes it created.
pub async fn sim_nodes(args: SimNodesArgs) -> anyhow::Result<()> {
    let client = kubeconfig::client(&args.kubeconfig).await?;
    let options = skiff_sim_nodes::Options {
        count: args.count,
        prefix: args.prefix,
        shape: skiff_sim_nodes::Shape {
            cpu: args.cpu,
            memory: args.memory,
            pods: args.pods,
        },
    };
    let count = skiff_sim_nodes::run(client, options, signals::terminated())
        .await
        .context("simulating nodes")?;
    eprintln!("skiff sim-nodes: stopped; removed the {count} simulated nodes it created");
    Ok(())
}
