//! The agent's own HTTPS endpoint (kubelet's API, port 10250 by default), which the API server
//! calls to serve `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`. Only the API server gets in: a client certificate signed by the
//! cluster's CA is required (TLS refuses anything else) and its subject must be the API
//! server's (`kube-apiserver-kubelet-client`) or an administrator's (`system:masters`). The
//! serving certificate is the agent's own, made at start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use crate::logs;
use crate::runtime::Runtime;
use crate::streaming;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The cluster CA could not be read.
    #[error("reading the cluster CA {path}")]
    Ca {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate could not be made or read.
    #[error("the endpoint's certificate")]
    Certificate(#[from] rcgen::Error),
    /// TLS could not be configured.
    #[error("the endpoint's TLS configuration")]
    Tls(#[from] rustls::Error),
    /// A PEM block did not read.
    #[error("a PEM block")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// The client verifier could not be built.
    #[error("the endpoint's client verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The port could not be bound.
    #[error("listening on {address}")]
    Bind {
        /// Where.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the endpoint serves from.
pub struct Endpoint {
    /// Where logs are.
    pub logs: PathBuf,
    /// The runtime (is a followed container still running?).
    pub runtime: Arc<dyn Runtime>,
    /// This node.
    pub node: String,
}

/// TLS for the endpoint: its own certificate for `names`, clients verified against `ca_pem`.
pub fn tls_config(
    ca_pem: &str,
    names: Vec<String>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()?;
    let certified = rcgen::generate_simple_self_signed(names)?;
    let chain = vec![certified.cert.der().clone()];
    let key = PrivateKeyDer::from_pem_slice(certified.signing_key.serialize_pem().as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// Whether the client's certificate is the API server's or an administrator's.
fn allowed(certificates: Option<&[CertificateDer<'_>]>) -> bool {
    let Some(first) = certificates.and_then(<[_]>::first) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(first.as_ref()) else {
        return false;
    };
    let subject = cert.subject();
    let common = subject
        .iter_common_name()
        .filter_map(|n| n.as_str().ok())
        .any(|n| n == "kube-apiserver-kubelet-client");
    let masters = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .any(|o| o == "system:masters");
    common || masters
}

fn text(status: http::StatusCode, message: impl Into<String>) -> http::Response<Body> {
    let mut response = http::Response::new(Full::new(Bytes::from(message.into())).boxed());
    *response.status_mut() = status;
    response
}

/// Serves until the future is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    endpoint: Arc<Endpoint>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, endpoint) = (acceptor.clone(), Arc::clone(&endpoint));
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "a TLS handshake with the agent's endpoint failed");
                    return;
                }
            };
            let permitted = allowed(stream.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |request| {
                let endpoint = Arc::clone(&endpoint);
                async move {
                    Ok::<_, Infallible>(if permitted {
                        handle(&endpoint, request).await
                    } else {
                        text(
                            http::StatusCode::FORBIDDEN,
                            "only the API server may call the node agent",
                        )
                    })
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, %error, "an endpoint connection ended with an error");
            }
        });
    }
}

async fn handle(
    endpoint: &Endpoint,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let streaming = match segments.as_slice() {
        ["exec", namespace, pod, container] => {
            Some((*namespace, *pod, streaming::Kind::Exec { container }))
        }
        ["attach", namespace, pod, container] => {
            Some((*namespace, *pod, streaming::Kind::Attach { container }))
        }
        ["portForward", namespace, pod] => Some((*namespace, *pod, streaming::Kind::PortForward)),
        _ => None,
    };
    if let Some((namespace, name, kind)) = streaming {
        if !matches!(*request.method(), http::Method::GET | http::Method::POST) {
            return text(http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let pod = streaming::PodRef {
            node: &endpoint.node,
            namespace,
            name,
        };
        return match streaming::serve(endpoint.runtime.as_ref(), pod, kind, request).await {
            Ok(switching) => switching.map(|()| Empty::new().boxed()),
            Err(refusal) => {
                tracing::debug!(%path, message = %refusal.message, "a streaming request was refused");
                text(refusal.status, refusal.message)
            }
        };
    }
    if request.method() != http::Method::GET {
        return text(http::StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    if path == "/healthz" {
        return text(http::StatusCode::OK, "ok");
    }
    match segments.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            container_logs(
                endpoint,
                namespace,
                pod,
                container,
                request.uri().query().unwrap_or(""),
            )
            .await
        }
        _ => text(http::StatusCode::NOT_FOUND, "404 page not found"),
    }
}

async fn container_logs(
    endpoint: &Endpoint,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> http::Response<Body> {
    let query = match logs::Query::parse(query, jiff::Timestamp::now()) {
        Ok(query) => query,
        Err(message) => return text(http::StatusCode::BAD_REQUEST, message),
    };
    let Some((dir, uid)) = logs::pod_directory(&endpoint.logs, namespace, pod) else {
        return text(
            http::StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{namespace}\" has no logs on this node"),
        );
    };
    let files = logs::instance_files(&dir.join(container));
    // As kubelet's: `previous` is the last instance that ended (while the newest waits to be
    // restarted, that is the newest itself).
    let newest_runs = match files.last() {
        Some((restarts, _)) => {
            logs::instance_running(
                endpoint.runtime.as_ref(),
                &endpoint.node,
                &uid,
                container,
                *restarts,
            )
            .await
        }
        None => false,
    };
    let picked = if query.previous && newest_runs {
        files.iter().rev().nth(1)
    } else {
        files.last()
    };
    let Some((restarts, path)) = picked.cloned() else {
        let message = if query.previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" has not written a log yet")
        };
        return text(http::StatusCode::NOT_FOUND, message);
    };
    let (sender, mut receiver) = mpsc::channel::<Bytes>(64);
    let runtime = Arc::clone(&endpoint.runtime);
    let (node, container) = (endpoint.node.clone(), container.to_string());
    tokio::spawn(logs::stream(path, query, sender, move || {
        let (runtime, node, uid, container) = (
            Arc::clone(&runtime),
            node.clone(),
            uid.clone(),
            container.clone(),
        );
        async move { logs::instance_running(runtime.as_ref(), &node, &uid, &container, restarts).await }
    }));
    let body = StreamBody::new(futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }));
    let mut response = http::Response::new(body.boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}
