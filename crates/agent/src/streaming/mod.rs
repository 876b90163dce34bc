//! Exec, attach and port-forward (kubelet's `/exec`, `/attach` and `/portForward`), reached
//! through the API server, which passes the caller's upgrade request on and pipes the bytes.
//! The agent finds the container or sandbox, asks the runtime for a streaming URL (CRI `Exec`,
//! `Attach`, `PortForward`) and then, depending on what the caller speaks:
//! - a protocol the runtime speaks itself (SPDY exec, attach and port-forward; WebSocket
//!   `v4.channel.k8s.io` exec and port-forward, as kube-rs and the Python client use): passes
//!   the request on and pipes the connections, so the runtime serves it;
//! - WebSocket `v5.channel.k8s.io` exec and attach (kubectl's first choice): translates to the
//!   runtime's SPDY streams ([`channels`]);
//! - WebSocket `SPDY/3.1+portforward.k8s.io` (kubectl's port-forward): unwraps the tunnelled
//!   SPDY onto a SPDY connection to the runtime ([`tunnel`]).
//!
//! The runtime is contacted before the caller gets its `101`, so a refusal reaches the caller
//! as an error status (kubectl then falls back to SPDY and shows the message).

mod channels;
mod runtime_server;
mod spdy;
mod tunnel;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::pods::labels;
use crate::runtime::{Runtime, StreamRequest, api};
pub use channels::Streams;
use runtime_server::RuntimeServerError;

/// kubectl's WebSocket exec and attach protocol, translated here.
const V5: &str = "v5.channel.k8s.io";
/// kubectl's WebSocket port-forward protocol, unwrapped here.
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The headers an upgrade carries on to the runtime.
const UPGRADE_REQUEST: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// The headers of the runtime's `101` passed back.
const UPGRADE_RESPONSE: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// What is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// A command in a container.
    Exec {
        /// The container.
        container: &'a str,
    },
    /// A container's main process.
    Attach {
        /// The container.
        container: &'a str,
    },
    /// Ports of the pod.
    PortForward,
}

/// A request the agent will not serve, with the status and message for the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// Why.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl From<RuntimeServerError> for Refusal {
    fn from(error: RuntimeServerError) -> Self {
        match error {
            RuntimeServerError::Refused { status, body } => Refusal::new(status, body),
            other => Refusal::new(StatusCode::BAD_GATEWAY, error_chain(&other)),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The options of the request's query.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    command: Vec<String>,
    streams: (bool, bool, bool, bool),
    ports: Vec<i32>,
}

fn options(query: &str) -> Result<Options, Refusal> {
    let mut out = Options::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let flag = value == "true" || value == "1";
        match &*key {
            "command" => out.command.push(value.into_owned()),
            "stdin" | "input" => out.streams.0 = flag,
            "stdout" | "output" => out.streams.1 = flag,
            "stderr" | "error" => out.streams.2 = flag,
            "tty" => out.streams.3 = flag,
            "ports" | "port" => {
                for port in value.split(',').filter(|p| !p.is_empty()) {
                    let parsed = port
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            Refusal::new(
                                StatusCode::BAD_REQUEST,
                                format!("invalid port {port:?}: must be 1-65535"),
                            )
                        })?;
                    out.ports.push(i32::from(parsed));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A pod this agent runs: its namespace and name.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    /// This node.
    pub node: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's name.
    pub name: &'a str,
}

impl PodRef<'_> {
    fn owns(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        let is = |key: &str, value: &str| labels.get(key).map(String::as_str) == Some(value);
        is(labels::AGENT, self.node)
            && is(labels::POD_NAMESPACE, self.namespace)
            && is(labels::POD_NAME, self.name)
    }
}

/// The id of the pod's running instance of `container`.
async fn running_container(
    runtime: &dyn Runtime,
    pod: PodRef<'_>,
    container: &str,
) -> Result<String, Refusal> {
    let containers = runtime
        .list_containers(None)
        .await
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)))?;
    containers
        .into_iter()
        .filter(|c| {
            pod.owns(&c.labels)
                && c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
                && c.state == api::ContainerState::ContainerRunning as i32
        })
        .max_by_key(|c| c.metadata.as_ref().map_or(0, |m| m.attempt))
        .map(|c| c.id)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("container not found ({container:?})"),
            )
        })
}

/// The id of the pod's ready sandbox.
async fn ready_sandbox(runtime: &dyn Runtime, pod: PodRef<'_>) -> Result<String, Refusal> {
    let sandboxes = runtime
        .list_sandboxes(None)
        .await
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, error_chain(&e)))?;
    sandboxes
        .into_iter()
        .find(|s| pod.owns(&s.labels) && s.state == api::PodSandboxState::SandboxReady as i32)
        .map(|s| s.id)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("pod not found (\"{}_{}\")", pod.name, pod.namespace),
            )
        })
}

/// The protocols the caller offers over a WebSocket, if it asks for one.
fn websocket_protocols(headers: &HeaderMap) -> Option<Vec<String>> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    Some(
        headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

/// A `101` accepting the caller's WebSocket with `protocol`.
fn accept_websocket(
    headers: &HeaderMap,
    protocol: &'static str,
) -> Result<http::Response<()>, Refusal> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))?;
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept)
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "a bad Sec-WebSocket-Key"))?,
    );
    Ok(response)
}

/// The runtime's side over SPDY speaking `protocol`.
async fn spdy_to_runtime(
    url: &str,
    protocol: &'static str,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, Refusal> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    let response = runtime_server::request(url, Method::POST, None, &headers).await?;
    Ok(runtime_server::upgraded(response).await?)
}

/// Serves an exec, attach or port-forward upgrade `request` for `pod`: the `101` to answer
/// (the session then runs on its own) or why not.
pub async fn serve<B: Send + 'static>(
    runtime: &dyn Runtime,
    pod: PodRef<'_>,
    kind: Kind<'_>,
    mut request: http::Request<B>,
) -> Result<http::Response<()>, Refusal> {
    let query = request.uri().query().unwrap_or("").to_string();
    let options = options(&query)?;
    let (stdin, stdout, stderr, tty) = options.streams;
    let streams = Streams {
        stdin,
        stdout,
        stderr,
        tty,
    };
    let port_forward = matches!(kind, Kind::PortForward);
    if !(port_forward || stdin || stdout || stderr) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let stream_request = match kind {
        Kind::Exec { container } => {
            if options.command.is_empty() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "you must specify at least one command for the container",
                ));
            }
            StreamRequest::Exec(api::ExecRequest {
                container_id: running_container(runtime, pod, container).await?,
                cmd: options.command.clone(),
                tty,
                stdin,
                stdout,
                stderr,
            })
        }
        Kind::Attach { container } => StreamRequest::Attach(api::AttachRequest {
            container_id: running_container(runtime, pod, container).await?,
            stdin,
            tty,
            stdout,
            stderr,
        }),
        Kind::PortForward => StreamRequest::PortForward(api::PortForwardRequest {
            pod_sandbox_id: ready_sandbox(runtime, pod).await?,
            port: options.ports.clone(),
        }),
    };
    let url = runtime
        .stream_url(stream_request)
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))?;
    let offered = websocket_protocols(request.headers());
    let offers = |p: &str| offered.as_ref().is_some_and(|o| o.iter().any(|x| x == p));
    let caller = hyper::upgrade::on(&mut request);
    let to_websocket =
        |upgraded| WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None);
    match kind {
        Kind::Exec { .. } | Kind::Attach { .. } if offers(V5) => {
            let runtime_side = spdy_to_runtime(&url, "v4.channel.k8s.io").await?;
            let response = accept_websocket(request.headers(), V5)?;
            tokio::spawn(async move {
                if let Ok(upgraded) = caller.await {
                    channels::bridge(to_websocket(upgraded).await, runtime_side, streams).await;
                }
            });
            Ok(response)
        }
        Kind::PortForward if offers(TUNNEL) => {
            let runtime_side = spdy_to_runtime(&url, "portforward.k8s.io").await?;
            let response = accept_websocket(request.headers(), TUNNEL)?;
            tokio::spawn(async move {
                if let Ok(upgraded) = caller.await {
                    tunnel::carry(to_websocket(upgraded).await, runtime_side).await;
                }
            });
            Ok(response)
        }
        _ => {
            let mut headers = HeaderMap::new();
            for name in UPGRADE_REQUEST {
                for value in request.headers().get_all(name) {
                    headers.append(name, value.clone());
                }
            }
            let method = request.method().clone();
            let answer = runtime_server::request(&url, method, Some(&query), &headers).await?;
            let mut response = http::Response::new(());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            for name in UPGRADE_RESPONSE {
                for value in answer.headers().get_all(name) {
                    response.headers_mut().append(name, value.clone());
                }
            }
            let runtime_side = runtime_server::upgraded(answer).await?;
            tokio::spawn(async move {
                if let Ok(upgraded) = caller.await {
                    let mut caller = TokioIo::new(upgraded);
                    let mut runtime_side = runtime_side;
                    let _ = tokio::io::copy_bidirectional(&mut caller, &mut runtime_side).await;
                }
            });
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking

    use super::*;

    #[test]
    fn options_should_read_repeated_commands_flags_and_ports() {
        let read = options("command=sh&command=-c&command=echo%20hi&stdin=true&stdout=1&tty=false&ports=80,8080&ports=9090").unwrap();
        assert_eq!(read.command, ["sh", "-c", "echo hi"]);
        assert_eq!(read.streams, (true, true, false, false));
        assert_eq!(read.ports, [80, 8080, 9090]);
        assert_eq!(
            options("ports=0").unwrap_err(),
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid port \"0\": must be 1-65535"
            )
        );
    }

    #[test]
    fn websocket_protocols_should_list_every_offer() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert_eq!(
            websocket_protocols(&headers).unwrap(),
            ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(websocket_protocols(&headers), None);
    }
}
