//! The subcommands that run one component alone against a cluster's kubeconfig: `skiff
//! scheduler` and `skiff controllers` (what `skiff server` also runs inside) and `skiff
//! sim-nodes` (simulated nodes for scale tests and benchmarks).

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

/// Options of `skiff controllers`.
#[derive(clap::Args)]
pub struct ControllersArgs {
    /// The kubeconfig of the cluster to run the controllers for.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The cluster's pod CIDR, cut into a /24 per node.
    #[arg(long, default_value = skiff_controllers::node_ipam::CLUSTER_CIDR)]
    cluster_cidr: String,
    /// The cluster CA's certificate, published in every namespace as `kube-root-ca.crt`
    /// (default: the kubeconfig's).
    #[arg(long)]
    root_ca: Option<PathBuf>,
    /// The cluster CA's certificate and key (`CERT,KEY`), to sign joining nodes' client
    /// certificates; none are signed without it.
    #[arg(long, value_delimiter = ',', num_args = 2)]
    signer: Option<Vec<PathBuf>>,
}

/// Runs the controllers until SIGINT or SIGTERM.
pub async fn controllers(args: ControllersArgs) -> anyhow::Result<()> {
    let client = kubeconfig::client(&args.kubeconfig).await?;
    let root_ca = match &args.root_ca {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::from_utf8(kubeconfig::certificate_authority(&args.kubeconfig)?)
            .context("the kubeconfig's CA is not text")?,
    };
    let signer = match args.signer.as_deref() {
        Some([cert, key]) => Some(skiff_controllers::csr::Signer {
            ca_cert: std::fs::read_to_string(cert)
                .with_context(|| format!("reading {}", cert.display()))?,
            ca_key: std::fs::read_to_string(key)
                .with_context(|| format!("reading {}", key.display()))?,
        }),
        _ => None,
    };
    let options = skiff_controllers::Options {
        cluster_cidr: args.cluster_cidr,
        root_ca: Some(root_ca),
        signer,
        ..skiff_controllers::Options::default()
    };
    tokio::select! {
        () = skiff_controllers::run(client, options) => {}
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
