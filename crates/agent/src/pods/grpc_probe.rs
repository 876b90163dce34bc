//! gRPC probes, as kubelet runs them: the standard health service's `Check`
//! (`grpc.health.v1.Health/Check`, plain HTTP/2, no TLS) with the probe's `service`, passing
//! only when the answer is `SERVING`. The two messages are declared here (one field each)
//! rather than generated.

use std::time::Duration;

use tonic::transport::Endpoint;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The health service's status names, by number.
fn status_name(status: i32) -> &'static str {
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// Checks `service` (empty: the whole server) at `address` (`host:port`) within `timeout`;
/// `Err` says why it failed, in upstream's words.
pub async fn check(address: &str, service: &str, timeout: Duration) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("invalid address {address}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.map_err(|_| {
        format!(
            "timeout: failed to connect service \"{address}\" within {}s",
            timeout.as_secs()
        )
    })?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| format!("health rpc failed: {e}"))?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let response = client.unary(request, path, codec).await.map_err(|status| {
        format!(
            "health rpc probe failed: rpc error: code = {:?} desc = {}",
            status.code(),
            status.message()
        )
    })?;
    match response.into_inner().status {
        1 => Ok(()),
        other => Err(format!(
            "service unhealthy (responded with \"{}\")",
            status_name(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use prost::Message;

    use super::*;

    /// A health server answering every Check with `status`, over plain HTTP/2.
    async fn health_server(status: i32) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let _ = request.into_body().collect().await;
                        let message = HealthCheckResponse { status }.encode_to_vec();
                        let mut framed = vec![0u8];
                        framed.extend_from_slice(
                            &u32::try_from(message.len()).unwrap().to_be_bytes(),
                        );
                        framed.extend_from_slice(&message);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let frames = futures::stream::iter([
                            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(framed))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(frames))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        address
    }

    #[tokio::test]
    async fn only_serving_should_pass() {
        let serving = health_server(1).await;
        assert_eq!(check(&serving, "", Duration::from_secs(2)).await, Ok(()));
        let not = health_server(2).await;
        assert_eq!(
            check(&not, "db", Duration::from_secs(2)).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        let error = check(&address, "", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            error.starts_with("timeout: failed to connect service"),
            "{error}"
        );
    }
}
