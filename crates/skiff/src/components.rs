//! The subcommands that run one component alone against a cluster's kubeconfig: `skiff
//! scheduler`, `skiff controllers`, `skiff proxy` and `skiff dns` (what `skiff server` also
//! runs inside) and `skiff sim-nodes` (simulated nodes for scale tests and benchmarks).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// Options of `skiff proxy`.
#[derive(clap::Args)]
pub struct ProxyArgs {
    /// The kubeconfig of the cluster whose Services to proxy.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// This node's name (its endpoints are local for externalTrafficPolicy Local; it names
    /// the nftables table).
    #[arg(long, default_value_t = crate::agent::hostname())]
    node_name: String,
    /// The cluster's pod CIDR.
    #[arg(long, default_value = skiff_controllers::node_ipam::CLUSTER_CIDR)]
    cluster_cidr: String,
    /// The pod bridge, allowed to reach loopback endpoints (`route_localnet`).
    #[arg(long)]
    bridge: Option<String>,
}

/// Runs the service proxy until SIGINT or SIGTERM, then removes its rules.
pub async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let client = kubeconfig::client(&args.kubeconfig).await?;
    let table = skiff_proxy::table_name(&skiff_agent::network::suffix(&args.node_name));
    let options = skiff_proxy::Options {
        node_name: args.node_name,
        table: table.clone(),
        cluster_cidr: args.cluster_cidr,
        bridge: args.bridge,
    };
    tokio::select! {
        () = skiff_proxy::run(client, options) => {}
        () = signals::terminated() => skiff_proxy::remove(&table).await,
    }
    Ok(())
}

/// The cluster DNS's settings, shared by `skiff server` and `skiff dns`.
#[derive(clap::Args, Clone)]
pub struct DnsArgs {
    /// A resolver for names outside the cluster (repeatable; default: the host's, from
    /// /etc/resolv.conf; `none`: answer only the cluster's names).
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]|none")]
    dns_upstreams: Vec<String>,
}

impl DnsArgs {
    /// The DNS server's options.
    pub fn options(
        &self,
        listen: SocketAddr,
        domain: &str,
        service_ip: Ipv4Addr,
        networks: Vec<String>,
    ) -> anyhow::Result<skiff_dns::Options> {
        let upstreams = if self.dns_upstreams.is_empty() {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            skiff_dns::resolv_conf_upstreams(&host)
        } else {
            let mut upstreams = Vec::new();
            for given in self.dns_upstreams.iter().filter(|u| *u != "none") {
                let address = given
                    .parse::<SocketAddr>()
                    .or_else(|_| given.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .with_context(|| format!("--dns-upstream {given}: not an IP[:PORT]"))?;
                upstreams.push(address);
            }
            upstreams
        };
        Ok(skiff_dns::Options {
            listen,
            domain: domain.to_string(),
            upstreams,
            service_ip,
            networks,
        })
    }
}

/// Options of `skiff dns`.
#[derive(clap::Args)]
pub struct DnsServerArgs {
    /// The kubeconfig of the cluster whose names to serve.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Where to listen (UDP and TCP); the `kube-dns` Service forwards port 53 to it.
    #[arg(long, default_value = "127.0.0.1:10053")]
    listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = skiff_dns::CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// The `kube-dns` Service's address.
    #[arg(long, default_value = "10.43.0.10")]
    cluster_dns: Ipv4Addr,
    /// The cluster's pod and service CIDRs (reverse names in them are answered here).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10.42.0.0/16,10.43.0.0/16"
    )]
    networks: Vec<String>,
    #[command(flatten)]
    dns: DnsArgs,
}

/// Serves the cluster DNS until SIGINT or SIGTERM.
pub async fn dns(args: DnsServerArgs) -> anyhow::Result<()> {
    let client = kubeconfig::client(&args.kubeconfig).await?;
    let options = args.dns.options(
        args.listen,
        &args.cluster_domain,
        args.cluster_dns,
        args.networks.clone(),
    )?;
    let bound = skiff_dns::bind(options.listen).await?;
    eprintln!("skiff dns: serving at {}", bound.address);
    tokio::select! {
        () = bound.serve(client, options) => {}
        () = signals::terminated() => {}
    }
    Ok(())
}
