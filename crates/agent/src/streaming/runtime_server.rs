//! Requests to the runtime's streaming server (containerd's: plain HTTP on loopback, one-use
//! URLs the CRI `Exec`, `Attach` and `PortForward` calls return): an upgrade request out, the
//! response back, and the upgraded connection once it switched protocols.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

/// The runtime's streaming server could not be reached or refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeServerError {
    /// The URL it gave does not parse.
    #[error("the runtime's streaming URL {url:?} is not an http URL")]
    Url {
        /// The URL.
        url: String,
    },
    /// The connection failed.
    #[error("connecting to the runtime's streaming server at {address}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the runtime's streaming server")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("building a request to the runtime's streaming server")]
    Request(#[from] http::Error),
    /// It answered without switching protocols.
    #[error("the runtime's streaming server answered {status}: {body}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its body.
        body: String,
    },
}

/// Sends an upgrade request (`method`, `headers`, `query` appended) to `url`.
pub async fn request(
    url: &str,
    method: Method,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<http::Response<hyper::body::Incoming>, RuntimeServerError> {
    let uri: http::Uri = url.parse().map_err(|_| RuntimeServerError::Url {
        url: url.to_string(),
    })?;
    let authority = uri
        .authority()
        .filter(|_| uri.scheme_str() == Some("http"))
        .ok_or_else(|| RuntimeServerError::Url {
            url: url.to_string(),
        })?
        .clone();
    let address = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:80", authority.host()),
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|source| RuntimeServerError::Connect {
            address: address.clone(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "a connection to the runtime's streaming server ended");
        }
    });
    let path = match query.filter(|q| !q.is_empty()) {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority.as_str());
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    Ok(sender
        .send_request(builder.body(Empty::<Bytes>::new())?)
        .await?)
}

/// The connection behind a `101 Switching Protocols`, or why there is none.
pub async fn upgraded(
    response: http::Response<hyper::body::Incoming>,
) -> Result<TokioIo<Upgraded>, RuntimeServerError> {
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = response.into_body().collect().await?.to_bytes();
        return Err(RuntimeServerError::Refused {
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(TokioIo::new(hyper::upgrade::on(response).await?))
}
