//! The API server as a client of node agents (kubelet's API): `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward` are requests the API server makes to the agent of the
//! pod's node, at the address and port its Node reports, presenting its own client certificate
//! (`kube-apiserver-kubelet-client`, signed by the cluster CA), which is how the agent knows the
//! caller is the API server. The agent's serving certificate is not verified, as upstream does
//! not without `--kubelet-certificate-authority`: the agent makes its own.

use std::net::IpAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use skiff_apimachinery::unverified_tls;
use tokio_rustls::TlsConnector;

/// Reaching a node agent failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The TLS configuration could not be built.
    #[error("the kubelet client's TLS configuration")]
    Tls(#[from] rustls::Error),
    /// A PEM block did not read.
    #[error("the kubelet client's certificate")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The connection failed.
    #[error("connecting to {address}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the node agent")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("building the request")]
    Request(#[from] http::Error),
}

/// A client of node agents.
pub struct KubeletClient {
    connector: TlsConnector,
}

impl KubeletClient {
    /// A client presenting `cert_pem` / `key_pem`.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, KubeletError> {
        let chain =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let config = unverified_tls::builder()?.with_client_auth_cert(chain, key)?;
        Ok(KubeletClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// `GET path_and_query` on the agent at `host:port`; the response streams its body.
    pub async fn get(
        &self,
        host: IpAddr,
        port: u16,
        path_and_query: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, KubeletError> {
        let request = http::Request::get(path_and_query).body(())?;
        self.send(host, port, request).await
    }

    /// Sends `request` (without a body; an upgrade request may switch protocols) to the agent
    /// at `host:port`.
    pub async fn send(
        &self,
        host: IpAddr,
        port: u16,
        request: http::Request<()>,
    ) -> Result<http::Response<hyper::body::Incoming>, KubeletError> {
        let address = std::net::SocketAddr::new(host, port);
        let connect = |source| KubeletError::Connect {
            address: address.to_string(),
            source,
        };
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(connect)?;
        let tls = self
            .connector
            .connect(ServerName::IpAddress(host.into()), tcp)
            .await
            .map_err(connect)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "a node agent connection ended");
            }
        });
        let (mut parts, ()) = request.into_parts();
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&address.to_string())
                .map_err(|e| KubeletError::Request(e.into()))?,
        );
        let request =
            http::Request::from_parts(parts, http_body_util::Empty::<bytes::Bytes>::new());
        Ok(sender.send_request(request).await?)
    }
}
