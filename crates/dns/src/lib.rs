//! skiff's cluster DNS (the part of CoreDNS that Kubernetes needs), served by skiff itself with
//! hickory-server: names of Services and pods in the cluster domain come from a watch-fed
//! cache, never from a request to the API per query; other names go to the host's resolvers.
//! It publishes itself as the `kube-system/kube-dns` Service at the cluster DNS address
//! (10.43.0.10), with an EndpointSlice (and Endpoints) naming where it listens, so that pods'
//! resolv.conf points at it through the service proxy. A kube-rs client of the API.
//!
//! - [`records`]: the answers (pure).
//! - [`handler`]: the hickory request handler, and forwarding.
//! - [`publish`]: the `kube-dns` Service and its endpoints.

pub mod handler;
pub mod publish;
pub mod records;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::net::{TcpListener, UdpSocket};

/// The default cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// How the DNS server runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where it listens (UDP and TCP; port 0: any free port).
    pub listen: SocketAddr,
    /// The cluster domain.
    pub domain: String,
    /// Resolvers for other names (empty: none; such queries are refused).
    pub upstreams: Vec<SocketAddr>,
    /// The `kube-dns` Service's address.
    pub service_ip: Ipv4Addr,
    /// The cluster's networks (pod and service CIDRs), whose reverse names are ours.
    pub networks: Vec<String>,
}

/// The DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Its address could not be bound.
    #[error("binding the DNS server to {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bound DNS server, ready to [`Bound::serve`].
pub struct Bound {
    udp: UdpSocket,
    tcp: TcpListener,
    /// Where it listens.
    pub address: SocketAddr,
}

/// Binds the server's sockets (UDP and TCP on the same port).
pub async fn bind(listen: SocketAddr) -> Result<Bound, DnsError> {
    let bind_error = |address, source| DnsError::Bind { address, source };
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| bind_error(listen, e))?;
        let address = udp.local_addr().map_err(|e| bind_error(listen, e))?;
        match TcpListener::bind(address).await {
            Ok(tcp) => return Ok(Bound { udp, tcp, address }),
            // Port 0: the UDP port the kernel chose may be a TCP connection's local port (the
            // two protocols' ports are chosen apart): choose again.
            Err(error)
                if listen.port() == 0
                    && error.kind() == std::io::ErrorKind::AddrInUse
                    && tries < FREE_PORT_TRIES =>
            {
                tries += 1;
            }
            Err(error) => return Err(bind_error(address, error)),
        }
    }
}

/// How many free UDP ports `bind` tries for a TCP port free as well.
const FREE_PORT_TRIES: usize = 32;

impl Bound {
    /// Serves until the future is dropped; publishes the `kube-dns` Service meanwhile.
    pub async fn serve(self, client: Client, options: Options) {
        let (services, service_writer) = reflector::store::<Service>();
        let (slices, slice_writer) = reflector::store::<EndpointSlice>();
        let service_feed = watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(service_writer)
        .for_each(|_| async {});
        let slice_feed = watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(slice_writer)
        .for_each(|_| async {});
        let domain = options.domain.trim_end_matches('.').to_lowercase();
        let handler = handler::Handler {
            directory: records::Directory {
                services,
                slices,
                domain: domain.clone(),
                networks: options
                    .networks
                    .iter()
                    .filter_map(|c| records::network(c))
                    .collect(),
            },
            soa: records::soa(&domain),
            upstreams: options.upstreams.clone(),
        };
        let mut server = hickory_server::Server::new(handler);
        server.register_socket(self.udp);
        server.register_listener(self.tcp, Duration::from_secs(10), 32);
        let address = self.address;
        tracing::info!(%address, domain, "cluster DNS serving");
        let serve = async move {
            if let Err(error) = server.block_until_done().await {
                tracing::error!(%error, "the DNS server stopped");
            }
        };
        tokio::join!(
            service_feed,
            slice_feed,
            serve,
            publish::keep(client, options.service_ip, address)
        );
    }
}

/// The resolvers in a resolv.conf (`nameserver` lines), at port 53.
pub fn resolv_conf_upstreams(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
