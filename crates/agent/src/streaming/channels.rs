//! `v5.channel.k8s.io` (kubectl's WebSocket exec and attach) onto the runtime's SPDY
//! `v4.channel.k8s.io` streams, as upstream's API server translates for the kubelet. Each
//! binary message's first byte is its channel: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize;
//! `[255, 0]` closes stdin (what v4 cannot say over a WebSocket, hence SPDY to the runtime).
//! An empty stdout message goes first, as upstream sends; the runtime's status goes last, as one
//! channel-3 message, then a normal close (anything else reads as an error to kubectl).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::spdy::{self, Frame, Opener};

/// The status of a command that ended well.
const SUCCESS: &[u8] = br#"{"metadata":{},"status":"Success"}"#;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Which streams the caller asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error.
    pub stderr: bool,
    /// A terminal (with resize messages).
    pub tty: bool,
}

/// The SPDY stream ids of the opened streams.
#[derive(Debug, Clone, Copy)]
struct Ids {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

/// Opens the runtime's streams, in the order kubectl opens them.
fn open(opener: &mut Opener, streams: Streams) -> std::io::Result<(Ids, Vec<Bytes>)> {
    let mut next = 1;
    let mut frames = Vec::new();
    let mut stream = |kind: &str, wanted: bool| -> std::io::Result<Option<u32>> {
        if !wanted {
            return Ok(None);
        }
        let id = next;
        next += 2;
        frames.push(opener.syn_stream(id, &[("streamtype", kind)])?);
        Ok(Some(id))
    };
    let error = stream("error", true)?.unwrap_or(1);
    let stdin = stream("stdin", streams.stdin)?;
    let stdout = stream("stdout", streams.stdout)?;
    let stderr = stream("stderr", streams.stderr && !streams.tty)?;
    let resize = stream("resize", streams.tty)?;
    Ok((
        Ids {
            error,
            stdin,
            stdout,
            stderr,
            resize,
        },
        frames,
    ))
}

fn message(channel: u8, payload: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Message::Binary(bytes.into())
}

/// Carries one exec or attach session until the runtime ends it or the caller goes away.
pub async fn bridge(
    caller: WebSocketStream<TokioIo<Upgraded>>,
    runtime: TokioIo<Upgraded>,
    streams: Streams,
) {
    let (mut runtime_in, mut runtime_out) = tokio::io::split(runtime);
    let mut opener = Opener::default();
    let Ok((ids, opening)) = open(&mut opener, streams) else {
        return;
    };
    let (to_runtime, mut outgoing) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(async move {
        for frame in opening {
            runtime_out.write_all(&frame).await?;
        }
        while let Some(frame) = outgoing.recv().await {
            runtime_out.write_all(&frame).await?;
        }
        runtime_out.shutdown().await
    });
    let (mut sink, mut source) = caller.split();
    // Caller → runtime: stdin, its close, and terminal sizes.
    let pings = to_runtime.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let Message::Binary(data) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let frame = match (data.first(), ids.stdin, ids.resize) {
                (Some(&STDIN), Some(id), _) => spdy::data(id, &data[1..], false),
                (Some(&CLOSE), Some(id), _) if data.get(1) == Some(&STDIN) => {
                    spdy::data(id, &[], true)
                }
                (Some(&RESIZE), _, Some(id)) => spdy::data(id, &data[1..], false),
                _ => continue,
            };
            if to_runtime.send(frame).await.is_err() {
                break;
            }
        }
    });
    // Runtime → caller: output, then the status.
    let mut status = Vec::new();
    let mut ok = sink.send(message(STDOUT, &[])).await.is_ok();
    while ok {
        let frame = match spdy::read_frame(&mut runtime_in).await {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        match frame {
            Frame::Data {
                stream, payload, ..
            } if !payload.is_empty() => {
                if stream == ids.error {
                    status.extend_from_slice(&payload);
                } else if Some(stream) == ids.stdout {
                    ok = sink.send(message(STDOUT, &payload)).await.is_ok();
                } else if Some(stream) == ids.stderr {
                    ok = sink.send(message(STDERR, &payload)).await.is_ok();
                }
            }
            Frame::Ping(id) => ok = pings.send(spdy::ping(id)).await.is_ok(),
            Frame::GoAway => break,
            _ => {}
        }
    }
    if ok {
        let status = if status.is_empty() { SUCCESS } else { &status };
        let _ = sink.send(message(STATUS, status)).await;
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
    reader.abort();
    writer.abort();
}
