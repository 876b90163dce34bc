//! The hickory-server request handler: answers the cluster domain from the [`Directory`] and
//! forwards other names to the upstream resolvers (none configured: REFUSED).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::UdpSocket;

use crate::records::{Answer, Directory};

/// How long an upstream resolver has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers queries.
pub struct Handler {
    /// Where the cluster's names come from.
    pub directory: Directory,
    /// The zone's SOA record.
    pub soa: Record,
    /// Resolvers for names outside the cluster domain, tried in order.
    pub upstreams: Vec<SocketAddr>,
}

/// Forwarding a query failed.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("the network")]
    Io(#[from] std::io::Error),
    #[error("encoding or decoding a message")]
    Proto(#[from] hickory_server::proto::ProtoError),
    #[error("decoding the answer")]
    Decode(#[from] hickory_server::proto::serialize::binary::DecodeError),
    #[error("no answer in time")]
    Timeout,
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

impl Handler {
    async fn forward(&self, request: &Request) -> Option<Message> {
        for upstream in &self.upstreams {
            match forward_to(*upstream, request).await {
                Ok(message) => return Some(message),
                Err(error) => tracing::debug!(%upstream, %error, "forwarding a query failed"),
            }
        }
        None
    }
}

async fn forward_to(upstream: SocketAddr, request: &Request) -> Result<Message, ForwardError> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    for query in request.queries.queries() {
        message.add_query(query.original().clone());
    }
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.send_to(&message.to_vec()?, upstream).await?;
    let mut buffer = vec![0u8; 4096];
    loop {
        let (size, from) = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv_from(&mut buffer))
            .await
            .map_err(|_| ForwardError::Timeout)??;
        let answer = Message::from_vec(buffer.get(..size).unwrap_or_default())?;
        if from == upstream && answer.metadata.id == message.metadata.id {
            return Ok(answer);
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let info = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info,
            _ => {
                let response = builder.error_msg(&request.metadata, ResponseCode::Refused);
                return response_handle
                    .send_response(response)
                    .await
                    .unwrap_or_else(|_| failed(request));
            }
        };
        let mut name = info.query.name().to_string().to_lowercase();
        if name.ends_with('.') {
            name.pop();
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = !self.upstreams.is_empty();
        let answer = self.directory.answer(&name, info.query.query_type());
        let sent = match answer {
            Answer::Records(records) => {
                metadata.authoritative = true;
                let response = builder.build(metadata, records.iter(), [], [], []);
                response_handle.send_response(response).await
            }
            Answer::NoData | Answer::NxDomain => {
                metadata.authoritative = true;
                if answer == Answer::NxDomain {
                    metadata.response_code = ResponseCode::NXDomain;
                }
                let response = builder.build(metadata, [], [], Some(&self.soa), []);
                response_handle.send_response(response).await
            }
            Answer::NotOurs => match self.forward(request).await {
                Some(upstream) => {
                    metadata.response_code = upstream.metadata.response_code;
                    let response = builder.build(
                        metadata,
                        &upstream.answers,
                        &upstream.authorities,
                        [],
                        &upstream.additionals,
                    );
                    response_handle.send_response(response).await
                }
                None => {
                    metadata.response_code = if self.upstreams.is_empty() {
                        ResponseCode::Refused
                    } else {
                        ResponseCode::ServFail
                    };
                    let response = builder.build_no_records(metadata);
                    response_handle.send_response(response).await
                }
            },
        };
        sent.unwrap_or_else(|_| failed(request))
    }
}
