//! `skiff server`: the control plane and, unless `--no-agent`, a node. Opens the store
//! (embedded SQLite, or etcd), starts what `skiff_cluster::control_plane` wires over it
//! (compactor, the Kubernetes API over HTTPS, the controllers, the scheduler and the node agent
//! as in-process kube-rs clients), prints where the admin kubeconfig is, and stops it all in
//! order on SIGINT or SIGTERM (pods keep running: the next start adopts them).

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skiff_apiserver::clock::SystemClock;

use crate::{DatastoreArgs, datastore};

/// How often the store is compacted (kube-apiserver's default for etcd).
const COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Options of `skiff server`.
#[derive(clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// The address the API listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The API's HTTPS port.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Do not run the scheduler in this process (`skiff scheduler` can run it elsewhere).
    #[arg(long)]
    no_scheduler: bool,
    /// Do not run the controllers in this process (`skiff controllers` can run them
    /// elsewhere).
    #[arg(long)]
    no_controllers: bool,
    /// Do not run a node agent in this process: an API without a node of its own (its pods
    /// run on nodes that join with `skiff agent`).
    #[arg(long)]
    no_agent: bool,
    /// The port the cluster DNS listens on, at the API's address (the `kube-dns` Service
    /// forwards port 53 to it; 0: any free port).
    #[arg(long, default_value_t = 10053)]
    dns_port: u16,
    #[command(flatten)]
    dns: crate::components::DnsArgs,
    /// Do not serve the cluster DNS from this process.
    #[arg(long)]
    no_dns: bool,
    #[command(flatten)]
    node: crate::agent::NodeArgs,
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.datastore.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            args.datastore.data_dir.display()
        )
    })?;
    let dns = (!args.no_dns)
        .then(|| {
            args.dns.options(
                std::net::SocketAddr::new(IpAddr::from([0, 0, 0, 0]), args.dns_port),
                &args.node.cluster_domain,
                args.node.cluster_dns(),
                vec![
                    args.node.cluster_cidr.clone(),
                    args.node.service_cidr.clone(),
                ],
            )
        })
        .transpose()?;
    let store = datastore::open(&args.datastore).await?;
    let options = skiff_cluster::Options {
        data_dir: args.datastore.data_dir.clone(),
        bind_address: args.bind_address,
        https_port: args.https_port,
        service_network: args.node.service_network(),
        compaction_interval: COMPACTION_INTERVAL,
        controllers: !args.no_controllers,
        controller_options: skiff_controllers::Options {
            cluster_cidr: args.node.cluster_cidr.clone(),
            root_ca: None,
            signer: None,
            ..skiff_controllers::Options::default()
        },
        scheduler: !args.no_scheduler,
        agent: (!args.no_agent).then(|| {
            let roles = vec![(
                "node-role.kubernetes.io/control-plane".into(),
                String::new(),
            )];
            let ca = args.datastore.data_dir.join("tls").join("ca.crt");
            args.node.options(
                &args.datastore.data_dir.join("agent"),
                roles,
                ca,
                std::net::Ipv4Addr::LOCALHOST.into(),
            )
        }),
        dns,
    };
    let control_plane = skiff_cluster::control_plane::start(options, store, Arc::new(SystemClock))
        .await
        .context("starting the control plane")?;
    // Whoever started us may have closed our stdout: that is no reason to stop.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "skiff is running: the Kubernetes API is at https://{}\nkubeconfig: {}\n  export KUBECONFIG={}\njoin token (for `skiff agent --server URL --token TOKEN` on other machines): {}",
        control_plane.address,
        control_plane.kubeconfig.display(),
        control_plane.kubeconfig.display(),
        control_plane.join_token.display()
    );
    let _ = out.flush();
    crate::signals::terminated().await;
    eprintln!("skiff: shutting down");
    control_plane.shutdown().await;
    Ok(())
}
