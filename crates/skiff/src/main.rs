//! `skiff`: Kubernetes in one small binary. This file only parses the command line and hands
//! each subcommand to its module; the components themselves live in the workspace's crates.

mod agent;
mod bench;
mod components;
mod datastore;
mod debug;
mod kubeconfig;
mod server;
mod signals;
mod snapshot;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The allocator: jemalloc, measured against mimalloc and glibc's malloc in BENCHMARKS.md
/// (its thread caches take frees of memory another thread allocated cheaply, which a tokio
/// runtime's tasks do all the time).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kubernetes in one small binary.
#[derive(Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the cluster's state lives.
#[derive(clap::Args, Clone, Debug)]
pub struct DatastoreArgs {
    /// The server's data directory; the embedded SQLite store lives in its `db/` folder.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// Use etcd instead of the embedded store: `http://HOST:PORT[,http://HOST:PORT...]`.
    #[arg(long)]
    pub datastore_endpoint: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the Kubernetes API over HTTPS, backed by the store.
    Server(server::ServerArgs),
    /// Run the node agent alone, joining a cluster (`skiff server` runs one inside).
    Agent(agent::AgentArgs),
    /// Remove what a node agent made on this machine: its pods, network and containerd.
    Reset(agent::ResetArgs),
    /// Side-load or pack container images without a registry.
    #[command(subcommand)]
    Images(agent::ImagesCommand),
    /// Run the scheduler alone against a cluster (`skiff server` runs one inside).
    Scheduler(components::SchedulerArgs),
    /// Run the controllers alone against a cluster (`skiff server` runs them inside).
    Controllers(components::ControllersArgs),
    /// Run the service proxy alone (every node agent runs one inside).
    Proxy(components::ProxyArgs),
    /// Serve the cluster DNS alone (`skiff server` serves it inside).
    Dns(components::DnsServerArgs),
    /// Register simulated nodes that run the pods bound to them without containers.
    SimNodes(components::SimNodesArgs),
    /// Back up or restore the cluster's state.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Measure skiff on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Tools for skiff's own tests.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Reset(args) => agent::reset(args).await,
            Command::Images(command) => agent::images(command).await,
            Command::Scheduler(args) => components::scheduler(args).await,
            Command::Controllers(args) => components::controllers(args).await,
            Command::Proxy(args) => components::proxy(args).await,
            Command::Dns(args) => components::dns(args).await,
            Command::SimNodes(args) => components::sim_nodes(args).await,
            Command::Snapshot(command) => snapshot::run(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Debug(command) => debug::run(command).await,
        }
    })
}
