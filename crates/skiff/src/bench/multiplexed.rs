//! A kube-rs client whose requests all share one HTTP/2 connection, as client-go's do (Go's
//! HTTP/2 transport multiplexes every request to one server, watches included). kube-rs 5 speaks
//! HTTP/1.1 only, so each of its watches is a TLS connection of its own; the watch benchmark
//! measures both ways of watching.

use std::sync::Arc;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::client::ConfigExt;
use tower::ServiceBuilder;

/// A client for `config` over one HTTP/2 connection (ALPN `h2`, the same credentials).
pub(super) async fn client(config: &kube::Config) -> anyhow::Result<kube::Client> {
    let mut tls = config.rustls_client_config()?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let host = config
        .cluster_url
        .host()
        .context("the cluster URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = config.cluster_url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await?;
    anyhow::ensure!(
        stream.get_ref().1.alpn_protocol() == Some(b"h2"),
        "the server did not agree to HTTP/2"
    );
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let send = tower::service_fn(move |request| {
        let mut sender = sender.clone();
        async move {
            sender
                .send_request(request)
                .await
                .map_err(tower::BoxError::from)
        }
    });
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .service(send);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}
