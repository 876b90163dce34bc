//! HTTPS serving: a TLS accept loop (rustls; HTTP/2 through ALPN and HTTP/1.1) that hands each
//! connection to hyper with the caller's certificate identity attached to every request.
//! Client certificates are optional at the TLS layer so that anonymous probes (`/version`,
//! `/healthz`) still connect; the API itself rejects anonymous callers. The writes of a
//! connection that chose HTTP/2 are sent in batches ([`Coalesced`]).
//!
//! A request hyper cannot parse (a URI over its 64 KiB, a head over [`MAX_HEAD_BYTES`], a
//! malformed request line) never reaches the router: hyper answers it itself, with an empty body,
//! and closes the connection. [`StatusOnParseErrors`] rewrites those answers into the same code
//! with a `Status` body, as every other 4xx of the API carries.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use skiff_apimachinery::ApiError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth;
use crate::certs::Pki;
use crate::coalesced::Coalesced;

/// The most bytes of request line and headers a connection accepts.
const MAX_HEAD_BYTES: usize = 1 << 20;

/// The most concurrent HTTP/2 streams a connection may open: upstream's `RecommendedOptions`
/// (`HTTP2MaxStreamsPerConnection = 1000`) rather than Go's 250 or hyper's 200.
const MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// Building the TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block could not be read.
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls rejected the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The server's TLS configuration: our serving certificate, the cluster CA for client
/// certificates, and ALPN `h2` then `http/1.1`.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
        roots.add(cert?)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()?;
    let chain = CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections forever, serving `app` on each.
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "tls handshake failed");
                    return;
                }
            };
            let caller = auth::from_certificates(stream.get_ref().1.peer_certificates());
            // An HTTP/2 connection carries many streams' frames at once: sent in batches. (Not
            // through `StatusOnParseErrors`: a frame's payload is no HTTP/1 answer to rewrite.)
            let served = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_connection(Coalesced::new(stream), app, caller).await
            } else {
                serve_connection(StatusOnParseErrors::new(stream), app, caller).await
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection.
/// Every request carries `caller`, the identity of the connection's client certificate.
async fn serve_connection<IO>(
    io: IO,
    app: Router,
    caller: auth::Caller,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        request.extensions_mut().insert(caller.clone());
        app.clone().oneshot(request)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Go's 1 MiB of request head, as upstream's server allows: a URI longer than the API takes
    // gets its 414 with a Status from the handler (or, past hyper's own 64 KiB, from
    // `StatusOnParseErrors`), not a 431 from here.
    builder.http1().max_buf_size(MAX_HEAD_BYTES);
    builder.http2().max_header_list_size(MAX_HEAD_BYTES as u32);
    // Clients multiplex every request, watches included, on one HTTP/2 connection (client-go
    // does): as many streams as upstream's recommended serving options allow.
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
}

/// A connection whose bodiless error answers from hyper's HTTP/1 parser are replaced by the same
/// answer with a `Status` body. Everything else passes through untouched.
struct StatusOnParseErrors<IO> {
    inner: IO,
    /// The replacement being written, once hyper's answer was recognised.
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// How many bytes of hyper's to report as written once `bytes` are out.
    claimed: usize,
}

impl<IO> StatusOnParseErrors<IO> {
    fn new(inner: IO) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

/// The code of `head` if it is, byte for byte, one of the answers hyper's HTTP/1 server writes
/// for a request it could not parse: `HTTP/1.1 {code} {reason}`, `connection: close`,
/// `content-length: 0` and `date`, and nothing else. The API's own answers never look like
/// that: every 4xx of the router has a body.
fn parse_error_answer(head: &[u8]) -> Option<(u16, &[u8])> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let code: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !matches!(code, 400 | 414 | 431) {
        return None;
    }
    let reason = http::StatusCode::from_u16(code).ok()?.canonical_reason()?;
    let rest = rest.get(3..)?.strip_prefix(b" ")?;
    let rest = rest.strip_prefix(reason.as_bytes())?;
    let date = rest.strip_prefix(b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ")?;
    // An HTTP date is 29 bytes: `Wed, 02 Dec 2026 15:45:49 GMT`.
    let (date, end) = (date.get(..29)?, date.get(29..)?);
    (end == b"\r\n\r\n" && date.ends_with(b" GMT")).then_some((code, date))
}

/// The `Status` for one of hyper's parse-error answers.
fn parse_error_status(code: u16) -> Vec<u8> {
    match code {
        414 => ApiError::UriTooLong {
            limit: crate::handlers::MAX_URI_BYTES,
        }
        .to_body(),
        431 => {
            // Upstream has no reason for it (Go's server answers it before the API sees the
            // request): the reason is left out, as `StatusReasonUnknown` is.
            let status = json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "the request's header fields are too large (limit {MAX_HEAD_BYTES} bytes)"
                ),
                "code": 431,
            });
            let mut body = status.to_string().into_bytes();
            body.push(b'\n');
            body
        }
        _ => ApiError::BadRequest("the request could not be parsed as HTTP".into()).to_body(),
    }
}

fn replacement(code: u16, date: &[u8], claimed: usize) -> Replacement {
    let body = parse_error_status(code);
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or_default();
    let mut bytes = format!(
        "HTTP/1.1 {code} {reason}\r\nconnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\ndate: ",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(date);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(&body);
    tracing::debug!(
        code,
        "hyper refused an unparsable request; answering with a Status"
    );
    Replacement {
        bytes,
        written: 0,
        claimed,
    }
}

impl<IO: AsyncWrite + Unpin> StatusOnParseErrors<IO> {
    /// Writes the replacement out; then reports hyper's bytes as written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(replacing) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while replacing.written < replacing.bytes.len() {
            let rest = &replacing.bytes[replacing.written..];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            replacing.written += n;
        }
        let claimed = replacing.claimed;
        self.replacing = None;
        Poll::Ready(Ok(claimed))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StatusOnParseErrors<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StatusOnParseErrors<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match parse_error_answer(buf) {
                Some((code, date)) => this.replacing = Some(replacement(code, date, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replacement(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
            match (
                filled.next().map(|buf| parse_error_answer(buf)),
                filled.next(),
            ) {
                (Some(Some((code, date))), None) => {
                    let claimed = bufs.iter().map(|buf| buf.len()).sum();
                    this.replacing = Some(replacement(code, date, claimed));
                }
                _ => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_replacement(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A connection that takes at most 7 bytes a write and claims vectored writes, as a TLS
    /// stream under back-pressure does.
    struct Trickle(DuplexStream);

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(7);
            Pin::new(&mut self.get_mut().0).poll_write(cx, &buf[..n])
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/empty", axum::routing::get(|| async { "" }))
            .fallback(|| async { crate::respond::error(&ApiError::NoSuchResource) })
    }

    /// Sends `request` on a fresh connection (over a trickling one if `trickle`) and reads the
    /// answer until the server closes.
    async fn exchange(request: Vec<u8>, trickle: bool) -> String {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(async move {
            let caller = auth::Caller(None);
            if trickle {
                let io = StatusOnParseErrors::new(Trickle(server));
                serve_connection(io, app(), caller).await.ok();
            } else {
                serve_connection(StatusOnParseErrors::new(server), app(), caller)
                    .await
                    .ok();
            }
        });
        let (mut read, mut write) = tokio::io::split(&mut client);
        let sending = async move {
            // The server may stop reading (and close) before all of it is sent.
            write.write_all(&request).await.ok();
        };
        let mut answer = Vec::new();
        let receiving = read.read_to_end(&mut answer);
        let ((), received) = tokio::join!(sending, receiving);
        received.unwrap();
        serving.await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    /// The status line, the headers (lowercase) and the body of an HTTP/1.1 answer.
    fn split(answer: &str) -> (&str, Vec<String>, &str) {
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap();
        (status, lines.map(str::to_ascii_lowercase).collect(), body)
    }

    fn assert_status_answer(answer: &str, line: &str, code: u16) -> serde_json::Value {
        let (status, headers, body) = split(answer);
        assert_eq!(status, line, "{answer}");
        assert!(headers.contains(&"content-type: application/json".to_string()));
        assert!(headers.contains(&format!("content-length: {}", body.len())));
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (&status["kind"], &status["code"]),
            (&json!("Status"), &json!(code))
        );
        status
    }

    #[tokio::test]
    async fn uri_over_hypers_64_kib_should_get_a_414_with_a_status() {
        for trickle in [false, true] {
            let path = format!(
                "/api/v1/namespaces/default/configmaps/{}",
                "a".repeat(70_000)
            );
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes();
            let answer = exchange(request, trickle).await;
            let status = assert_status_answer(&answer, "HTTP/1.1 414 URI Too Long", 414);
            assert_eq!(status["reason"], "RequestURITooLong");
        }
    }

    #[tokio::test]
    async fn head_over_1_mib_should_get_a_431_with_a_status() {
        let big = "v".repeat(MAX_HEAD_BYTES + 10);
        let request = format!("GET /version HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
        let answer = exchange(request.into_bytes(), false).await;
        let status =
            assert_status_answer(&answer, "HTTP/1.1 431 Request Header Fields Too Large", 431);
        assert!(status.get("reason").is_none(), "{status}");
    }

    #[tokio::test]
    async fn malformed_request_line_should_get_a_400_with_a_status() {
        for trickle in [false, true] {
            let answer = exchange(b"GARBAGE\r\n\r\n".to_vec(), trickle).await;
            let status = assert_status_answer(&answer, "HTTP/1.1 400 Bad Request", 400);
            assert_eq!(status["reason"], "BadRequest");
        }
    }

    #[tokio::test]
    async fn answers_of_the_router_should_pass_through_untouched() {
        for trickle in [false, true] {
            let request = b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec();
            let answer = exchange(request, trickle).await;
            let status = assert_status_answer(&answer, "HTTP/1.1 404 Not Found", 404);
            assert_eq!(status["reason"], "NotFound");
            // A 200 with an empty body is the router's, not a parse error.
            let request = b"GET /empty HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec();
            let answer = exchange(request, trickle).await;
            let (status, headers, body) = split(&answer);
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert!(headers.contains(&"content-length: 0".to_string()));
            assert_eq!(body, "");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_streams_on_one_http2_connection_should_each_get_their_whole_answer() {
        use futures::StreamExt;
        use http_body_util::{BodyExt, Empty};
        let (client, server) = tokio::io::duplex(64 * 1024);
        let app = app().route(
            "/chunks",
            axum::routing::get(|| async {
                let chunks = futures::stream::iter(0..5).then(|i| async move {
                    tokio::task::yield_now().await;
                    Ok::<_, io::Error>(format!("chunk {i} {}\n", "x".repeat(300 * i)))
                });
                axum::body::Body::from_stream(chunks)
            }),
        );
        let serving = tokio::spawn(async move {
            serve_connection(Coalesced::new(server), app, auth::Caller(None))
                .await
                .ok();
        });
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(connection);
        let expected: String = (0..5)
            .map(|i| format!("chunk {i} {}\n", "x".repeat(300 * i)))
            .collect();
        let requests = (0..300).map(|i| {
            let mut sender = sender.clone();
            async move {
                let path = if i % 3 == 0 { "/nope" } else { "/chunks" };
                let request = http::Request::get(path)
                    .body(Empty::<bytes::Bytes>::new())
                    .unwrap();
                let answer = sender.send_request(request).await.unwrap();
                let status = answer.status();
                let body = answer.into_body().collect().await.unwrap().to_bytes();
                (path, status, body)
            }
        });
        let answers = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            futures::future::join_all(requests),
        );
        let answers = answers.await.expect("answers held back");
        drop(sender);
        tokio::time::timeout(std::time::Duration::from_secs(30), serving)
            .await
            .expect("the connection did not end")
            .unwrap();
        for (path, status, body) in answers {
            if path == "/nope" {
                assert_eq!(status, 404);
                let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(status["reason"], "NotFound");
            } else {
                assert_eq!(status, 200);
                assert_eq!(body, expected.as_bytes());
            }
        }
    }

    #[test]
    fn only_hypers_exact_parse_error_answers_should_be_recognised() {
        let date = "Wed, 02 Dec 2026 15:45:49 GMT";
        let hyper = |line: &str| {
            format!("{line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n")
        };
        assert_eq!(
            parse_error_answer(hyper("HTTP/1.1 414 URI Too Long").as_bytes()),
            Some((414, date.as_bytes()))
        );
        assert!(parse_error_answer(hyper("HTTP/1.1 400 Bad Request").as_bytes()).is_some());
        // Other codes, other reasons, anything after the head: not hyper's.
        assert!(parse_error_answer(hyper("HTTP/1.1 404 Not Found").as_bytes()).is_none());
        assert!(parse_error_answer(hyper("HTTP/1.1 414 Too Long").as_bytes()).is_none());
        let followed = format!("{}{{}}", hyper("HTTP/1.1 400 Bad Request"));
        assert!(parse_error_answer(followed.as_bytes()).is_none());
        let with_type = format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: text/plain\r\n\
             content-length: 0\r\ndate: {date}\r\n\r\n"
        );
        assert!(parse_error_answer(with_type.as_bytes()).is_none());
    }
}
