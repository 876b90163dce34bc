//! `skiff bench`: measurements reported in BENCHMARKS.md, always as ratios taken in one run.

mod api;
mod multiplexed;
mod pods;
pub mod probe;
mod schedule;
mod services;
mod store;
mod workloads;

use std::path::PathBuf;

use clap::Subcommand;

/// Benchmark subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable writes/s of each store backend (1 and 64 writers) beside the disk's own
    /// write+fdatasync rate, and watch delivery latency with 1 and 1,000 watchers.
    Store {
        /// Seconds per throughput measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Directory to measure in (its disk is the one measured); a temporary one by default.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Skip the etcd backend (otherwise a private etcd is started, if installed).
        #[arg(long)]
        no_etcd: bool,
        /// Writes per watch-latency measurement.
        #[arg(long, default_value_t = 300)]
        watch_events: usize,
    },
    /// Creates/s through HTTPS (1 and 64 clients) beside the store's own rate, watch latency
    /// with many watchers, LIST latency for many pods, the garbage collector's rate, and the
    /// server's memory.
    Api {
        /// Seconds per throughput measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent watchers.
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Pods to list.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// ConfigMaps to hold for the memory figure.
        #[arg(long, default_value_t = 100_000)]
        objects: usize,
        /// Dependents the garbage collector deletes after their owner.
        #[arg(long, default_value_t = 1_000)]
        dependents: usize,
        /// Back the server (and the store baseline) with a private etcd instead of SQLite.
        #[arg(long)]
        etcd: bool,
    },
    /// Pods bound (and running) per second end to end through HTTPS, with simulated nodes and
    /// the server's own scheduler, and the server's memory.
    Schedule {
        /// Simulated nodes, one measurement per size (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1000, 5000])]
        nodes: Vec<usize>,
        /// Pending pods created per measurement.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
    },
    /// The workload controllers: a Deployment rolled out and updated on simulated nodes beside
    /// the same pod writes made directly, and the controllers' idle CPU and memory with many
    /// Deployments.
    Workloads {
        /// Simulated nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Replicas of the measured Deployment.
        #[arg(long, default_value_t = 1000)]
        replicas: usize,
        /// One-replica Deployments held for the idle figures.
        #[arg(long, default_value_t = 1000)]
        deployments: usize,
        /// Seconds each idle measurement lasts.
        #[arg(long, default_value_t = 30)]
        idle_seconds: u64,
    },
    /// On a real node (root, containerd): request latency through a ClusterIP beside the pod
    /// IP and cluster DNS queries per second, both from a pod; time from an endpoint change to
    /// the rules in place with few and many Services; the proxy's and the DNS's idle cost.
    Services {
        /// Services held for the large measurement.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Services held for the small one.
        #[arg(long, default_value_t = 100)]
        small: usize,
        /// Endpoints per Service.
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// Endpoint changes measured per size.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Seconds of each idle measurement.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// On a real node (root, containerd): pod start latency through skiff beside the raw CRI
    /// calls, and the idle CPU and memory of the server, containerd and its shims with no pods
    /// and with the pods running.
    Pods {
        /// Pods started one after the other, then left running.
        #[arg(long, default_value_t = 50)]
        pods: usize,
        /// Seconds each idle measurement lasts.
        #[arg(long, default_value_t = 30)]
        idle_seconds: u64,
    },
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Store {
            seconds,
            dir,
            no_etcd,
            watch_events,
        } => {
            store::run(store::Options {
                seconds,
                dir,
                etcd: !no_etcd,
                watch_events,
            })
            .await
        }
        BenchCommand::Services {
            services,
            small,
            endpoints,
            changes,
            seconds,
        } => {
            services::run(services::Options {
                services,
                small,
                endpoints,
                changes,
                seconds,
            })
            .await
        }
        BenchCommand::Pods { pods, idle_seconds } => {
            pods::run(pods::Options { pods, idle_seconds }).await
        }
        BenchCommand::Workloads {
            nodes,
            replicas,
            deployments,
            idle_seconds,
        } => {
            workloads::run(workloads::Options {
                nodes,
                replicas,
                deployments,
                idle_seconds,
            })
            .await
        }
        BenchCommand::Schedule { nodes, pods } => {
            schedule::run(schedule::Options { nodes, pods }).await
        }
        BenchCommand::Api {
            seconds,
            watchers,
            pods,
            objects,
            dependents,
            etcd,
        } => {
            api::run(api::Options {
                seconds,
                watchers,
                pods,
                objects,
                dependents,
                etcd,
            })
            .await
        }
    }
}
