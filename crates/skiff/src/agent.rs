//! `skiff agent` (the node agent alone, joining a cluster with its join token or a kubeconfig), `skiff reset`
//! (removes what an agent made on this machine), and `skiff images` (side-loading and packing
//! images without a registry).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{kubeconfig, signals};

/// The options a node agent is started with, in `skiff server` and `skiff agent`.
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// The Node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The Node's address (default: for `skiff server`, 127.0.0.1; for `skiff agent`, this
    /// machine's address on the way to the API server).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Use this CRI runtime (`unix:///run/containerd/containerd.sock`) instead of starting a
    /// containerd of the agent's own.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// The port of the agent's endpoint, which the API server calls for logs (kubelet's 10250;
    /// 0 for any free port).
    #[arg(long, default_value_t = 10250)]
    pub agent_port: u16,
    /// The cluster's pod CIDR (each node gets a /24 of it).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The cluster's service CIDR (guarded: it never leaves through the uplink).
    #[arg(long, default_value = "10.43.0.0/16", value_parser = service_cidr)]
    pub service_cidr: String,
    /// A registry mirror, `REGISTRY=URL` (repeatable; tried in order, then the registry):
    /// `docker.io=http://127.0.0.1:5000` pulls Docker Hub images from a local registry over
    /// plain HTTP.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<skiff_agent::registries::Mirror>,
    /// Pull only from the mirrors: a registry itself is never contacted (no internet).
    #[arg(long)]
    pub registry_mirrors_only: bool,
    /// Seconds between rewrites of running pods' configMap, secret, downwardAPI and projected
    /// files from their sources (kubelet's `--sync-frequency`).
    #[arg(long, default_value_t = 60)]
    pub sync_frequency: u64,
    /// The cluster DNS address pods' resolv.conf names (the `kube-dns` Service's; default:
    /// the tenth address of the service CIDR, 10.43.0.10).
    #[arg(long)]
    pub cluster_dns: Option<std::net::Ipv4Addr>,
    /// The cluster domain.
    #[arg(long, default_value = skiff_dns::CLUSTER_DOMAIN)]
    pub cluster_domain: String,
}

impl NodeArgs {
    /// The agent's options, with its files under `data_dir`, the cluster's CA at
    /// `cluster_ca`, and `default_ip` as its address unless `--node-ip` says otherwise.
    pub fn options(
        &self,
        data_dir: &Path,
        labels: Vec<(String, String)>,
        cluster_ca: PathBuf,
        default_ip: IpAddr,
    ) -> skiff_agent::Options {
        let node_name = self.node_name.clone().unwrap_or_else(hostname);
        skiff_agent::Options {
            node_name,
            node_ip: self.node_ip.unwrap_or(default_ip),
            data_dir: data_dir.to_path_buf(),
            runtime: match &self.container_runtime_endpoint {
                Some(endpoint) => skiff_agent::RuntimeSource::Endpoint(
                    skiff_agent::runtime::cri::socket_path(endpoint),
                ),
                None => skiff_agent::RuntimeSource::Supervised,
            },
            cluster_cidr: self.cluster_cidr.clone(),
            service_cidr: self.service_cidr.clone(),
            labels,
            cluster_ca: Some(cluster_ca),
            port: self.agent_port,
            registry_mirrors: self.registry_mirrors.clone(),
            registry_mirrors_only: self.registry_mirrors_only,
            sync_frequency: std::time::Duration::from_secs(self.sync_frequency.max(1)),
            dns: skiff_agent::pods::dns::ClusterDns {
                server: Some(self.cluster_dns().to_string()),
                domain: self.cluster_domain.clone(),
            },
        }
    }
}

impl NodeArgs {
    /// The service CIDR as a network; `--service-cidr` is checked when parsed.
    pub fn service_network(&self) -> skiff_apiserver::allocation::ServiceNetwork {
        skiff_apiserver::allocation::ServiceNetwork::parse(&self.service_cidr).unwrap_or_default()
    }

    /// The cluster DNS address: as given, or the tenth of the service CIDR.
    pub fn cluster_dns(&self) -> std::net::Ipv4Addr {
        self.cluster_dns
            .unwrap_or_else(|| self.service_network().nth(10))
    }
}

/// A `--service-cidr`: an IPv4 network of /8 to /28.
fn service_cidr(text: &str) -> Result<String, String> {
    skiff_apiserver::allocation::ServiceNetwork::parse(text)
        .map(|_| text.to_string())
        .ok_or_else(|| "an IPv4 network a.b.c.d/n with n from 8 to 28".into())
}

/// The host's name, as Node names go (lower case).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

/// Options of `skiff agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The API server to join (`https://HOST:6443`), with `--token`.
    #[arg(long, requires = "token", conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// The cluster's join token (the server prints where it keeps it), presented once to get
    /// the node's own client certificate.
    #[arg(long, requires = "server")]
    token: Option<String>,
    /// A kubeconfig to reach the cluster with instead of joining with a token.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its files.
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

/// The kubeconfig the agent reaches the cluster with: the one given, the one it got when it
/// joined earlier, or a new one from joining with the token now.
async fn credentials(args: &AgentArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.kubeconfig {
        return Ok(path.clone());
    }
    let joined = args.data_dir.join(skiff_agent::bootstrap::KUBECONFIG);
    if joined.exists() {
        return Ok(joined);
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        anyhow::bail!(
            "give --server and --token to join a cluster (or --kubeconfig); {} does not exist yet",
            joined.display()
        );
    };
    let node = args.node.node_name.clone().unwrap_or_else(hostname);
    let path = skiff_agent::bootstrap::join(server, token, &node, &args.data_dir)
        .await
        .context("joining the cluster")?;
    eprintln!(
        "skiff agent: joined as system:node:{node}; credentials in {}",
        path.display()
    );
    Ok(path)
}

/// Runs the node agent until SIGINT or SIGTERM (its pods keep running after).
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let kubeconfig = credentials(&args).await?;
    let client = kubeconfig::client(&kubeconfig).await?;
    // The cluster's CA, from the kubeconfig: it signed the API server's client certificate.
    let ca = args.data_dir.join("cluster-ca.crt");
    std::fs::write(&ca, kubeconfig::certificate_authority(&kubeconfig)?)
        .with_context(|| format!("writing {}", ca.display()))?;
    let server = kubeconfig::config(&kubeconfig).await?.cluster_url;
    let towards_server = address_towards(&server).await.with_context(|| {
        format!("finding this machine's address towards {server} (give --node-ip)")
    })?;
    let options = args
        .node
        .options(&args.data_dir, Vec::new(), ca, towards_server);
    tokio::select! {
        result = skiff_agent::run(client, options.clone()) => result.context("running the node agent")?,
        () = signals::terminated() => {
            eprintln!("skiff agent: stopping (pods keep running)");
            skiff_agent::stopped(&options).await;
        }
    }
    Ok(())
}

/// The address this machine sends from to reach `url`'s host, as the kernel's routes choose
/// it (a UDP socket is connected, which sends nothing): the API server calls the agent there.
async fn address_towards(url: &http::Uri) -> anyhow::Result<IpAddr> {
    let host = url.host().context("the server URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let server = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .context("the server's name resolves to nothing")?;
    let unspecified: IpAddr = if server.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = std::net::UdpSocket::bind((unspecified, 0))?;
    socket.connect(server)?;
    Ok(socket.local_addr()?.ip())
}

/// Options of `skiff reset`.
#[derive(clap::Args)]
pub struct ResetArgs {
    /// The data directory of the server or agent whose node to clear.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
}

/// Removes every pod, network object, cgroup and the containerd an agent made on this machine.
pub async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let mut any = false;
    for dir in [args.data_dir.join("agent"), args.data_dir.clone()] {
        any |= skiff_agent::reset_data_dir(&dir).await;
    }
    if !any {
        anyhow::bail!("no node agent ran with {}", args.data_dir.display());
    }
    eprintln!("skiff reset: removed the node's pods, network and containerd");
    Ok(())
}

/// `skiff images`.
#[derive(clap::Subcommand)]
pub enum ImagesCommand {
    /// Side-load an image archive (docker or OCI) into the node's containerd.
    Import {
        /// The server's or agent's data directory.
        #[arg(long, default_value = "/var/lib/skiff")]
        data_dir: PathBuf,
        /// The archive.
        file: PathBuf,
    },
    /// Pack a directory as a one-layer OCI image archive.
    Pack {
        /// The directory that becomes the image's root.
        #[arg(long)]
        rootfs: PathBuf,
        /// The image's name (`registry/repository:tag`).
        #[arg(long)]
        name: String,
        /// The program the image runs, with its arguments (last: it takes the rest).
        #[arg(long, num_args = 1.., required = true, allow_hyphen_values = true)]
        entrypoint: Vec<String>,
        /// Where to write the archive.
        #[arg(long)]
        output: PathBuf,
    },
}

/// Runs `skiff images`.
pub async fn images(command: ImagesCommand) -> anyhow::Result<()> {
    match command {
        ImagesCommand::Import { data_dir, file } => {
            let socket = [data_dir.join("agent"), data_dir.clone()]
                .iter()
                .map(|d| d.join("containerd").join("containerd.sock"))
                .find(|s| s.exists())
                .with_context(|| {
                    format!("no containerd of skiff's runs under {}", data_dir.display())
                })?;
            skiff_agent::images::import(&socket, &file).await?;
            eprintln!("skiff images: imported {}", file.display());
        }
        ImagesCommand::Pack {
            rootfs,
            name,
            entrypoint,
            output,
        } => {
            let files = skiff_agent::images::files_of(&rootfs)?;
            let entrypoint: Vec<&str> = entrypoint.iter().map(String::as_str).collect();
            let bytes = skiff_agent::images::archive(&name, &files, &entrypoint)
                .context("packing the image")?;
            std::fs::write(&output, bytes)
                .with_context(|| format!("writing {}", output.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_address_towards_a_local_server_should_be_loopback() {
        let url: http::Uri = "https://127.0.0.1:6443".parse().unwrap();
        assert_eq!(
            address_towards(&url).await.unwrap(),
            IpAddr::from([127, 0, 0, 1])
        );
        let url: http::Uri = "https://localhost:6443".parse().unwrap();
        assert!(address_towards(&url).await.unwrap().is_loopback());
    }
}
