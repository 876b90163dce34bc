//! `SPDY/3.1+portforward.k8s.io` over a WebSocket (kubectl's port-forward since 1.31): the
//! binary messages carry a SPDY connection's bytes, message boundaries meaning nothing. The
//! agent unwraps them onto a plain SPDY connection to the runtime's streaming server and wraps
//! what comes back, as upstream's API server tunnels to the kubelet.

use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Carries the tunnel until either side ends it.
pub async fn carry(caller: WebSocketStream<TokioIo<Upgraded>>, runtime: TokioIo<Upgraded>) {
    let (mut runtime_in, mut runtime_out) = tokio::io::split(runtime);
    let (mut sink, mut source) = caller.split();
    let inbound = async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if runtime_out.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = runtime_out.shutdown().await;
    };
    let outbound = async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match runtime_in.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(buffer[..n].to_vec().into());
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}
