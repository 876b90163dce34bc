//! The client half of SPDY/3.1 as Kubernetes' streaming protocols use it (moby/spdystream, which
//! containerd's streaming server speaks): frames in, frames out, nothing more. The agent opens
//! streams (`SYN_STREAM` with a `streamtype` header), sends data with or without FIN, echoes
//! pings, and reads data, replies, resets and GOAWAY. Header blocks it sends are zlib-compressed
//! with one context for the connection and a sync flush per block, which the Go reader needs;
//! the blocks it receives (the server's empty replies) are skipped, not decoded, so the SPDY/3
//! dictionary is never needed. Flow control is not enforced, as spdystream enforces none.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The version word of every control frame (`0x8000 | 3`).
const CONTROL: u16 = 0x8003;
/// The largest payload one frame carries (a 24-bit length).
const MAX_PAYLOAD: usize = 0x00FF_FFFF;
/// The FIN flag.
const FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// A frame that matters to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes on a stream; `fin` closes the sender's half.
    Data {
        /// The stream.
        stream: u32,
        /// The payload.
        payload: Bytes,
        /// Whether the sender is done.
        fin: bool,
    },
    /// The server accepted a stream.
    Reply {
        /// The stream.
        stream: u32,
    },
    /// A stream was cancelled.
    Reset {
        /// The stream.
        stream: u32,
    },
    /// A ping to echo.
    Ping(u32),
    /// The peer ends the session.
    GoAway,
    /// Anything else (settings, window updates, headers, server pushes): ignored.
    Other,
}

/// Reads the next frame; `None` at the end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = BytesMut::zeroed(length);
    reader.read_exact(&mut payload).await?;
    let word = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0] & 0x7F, b[1], b[2], b[3]]))
    };
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Some(Frame::Data {
            stream,
            payload: payload.freeze(),
            fin: flags & FIN != 0,
        }));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let short = || std::io::Error::new(std::io::ErrorKind::InvalidData, "a short SPDY frame");
    Ok(Some(match kind {
        SYN_REPLY => Frame::Reply {
            stream: word(0).ok_or_else(short)?,
        },
        RST_STREAM => Frame::Reset {
            stream: word(0).ok_or_else(short)?,
        },
        PING => Frame::Ping(word(0).ok_or_else(short)?),
        GOAWAY => Frame::GoAway,
        _ => Frame::Other,
    }))
}

fn control_head(out: &mut BytesMut, kind: u16, flags: u8, length: usize) {
    out.put_u16(CONTROL);
    out.put_u16(kind);
    out.put_u8(flags);
    out.put_uint(length as u64, 3);
}

/// Data on `stream`, split into frames of at most 16 MiB; `fin` on the last.
pub fn data(stream: u32, payload: &[u8], fin: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
    if chunks.peek().is_none() {
        out.put_u32(stream);
        out.put_u8(if fin { FIN } else { 0 });
        out.put_uint(0, 3);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.put_u32(stream);
        out.put_u8(if fin && last { FIN } else { 0 });
        out.put_uint(chunk.len() as u64, 3);
        out.put_slice(chunk);
    }
    out.freeze()
}

/// The answer to a ping.
pub fn ping(id: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(12);
    control_head(&mut out, PING, 0, 4);
    out.put_u32(id);
    out.freeze()
}

/// Opens streams: holds the connection's header compression context.
pub struct Opener {
    encoder: ZlibEncoder<Vec<u8>>,
}

impl Default for Opener {
    fn default() -> Self {
        Opener {
            encoder: ZlibEncoder::new(Vec::new(), Compression::default()),
        }
    }
}

impl Opener {
    /// A `SYN_STREAM` opening `stream` with `headers` (lowercase names).
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)]) -> std::io::Result<Bytes> {
        let mut block = Vec::new();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        block.extend(count(headers.len()));
        for (name, value) in headers {
            block.extend(count(name.len()));
            block.extend(name.as_bytes());
            block.extend(count(value.len()));
            block.extend(value.as_bytes());
        }
        self.encoder.write_all(&block)?;
        self.encoder.flush()?;
        let compressed = std::mem::take(self.encoder.get_mut());
        let mut out = BytesMut::with_capacity(compressed.len() + 18);
        control_head(&mut out, SYN_STREAM, 0, compressed.len() + 10);
        out.put_u32(stream);
        out.put_u32(0); // no associated stream
        out.put_u8(0); // priority
        out.put_u8(0); // slot
        out.put_slice(&compressed);
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking

    use std::io::Read;

    use super::*;

    /// Decodes the header blocks of consecutive SYN_STREAMs with one zlib context.
    fn headers(frames: &[Bytes]) -> Vec<Vec<(String, String)>> {
        let compressed: Vec<u8> = frames.iter().flat_map(|f| f[18..].to_vec()).collect();
        let mut plain = Vec::new();
        let mut decoder = flate2::read::ZlibDecoder::new(&compressed[..]);
        let _ = decoder.read_to_end(&mut plain);
        let mut rest = &plain[..];
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            head
        }
        fn word(rest: &mut &[u8]) -> usize {
            u32::from_be_bytes(take(rest, 4).try_into().unwrap()) as usize
        }
        let mut blocks = Vec::new();
        for _ in frames {
            let n = word(&mut rest);
            let mut pairs = Vec::new();
            for _ in 0..n {
                let len = word(&mut rest);
                let name = String::from_utf8(take(&mut rest, len).to_vec()).unwrap();
                let len = word(&mut rest);
                let value = String::from_utf8(take(&mut rest, len).to_vec()).unwrap();
                pairs.push((name, value));
            }
            blocks.push(pairs);
        }
        blocks
    }

    #[test]
    fn streams_should_open_with_headers_in_one_compression_context() {
        let mut opener = Opener::default();
        let first = opener.syn_stream(1, &[("streamtype", "error")]).unwrap();
        let second = opener.syn_stream(3, &[("streamtype", "stdout")]).unwrap();
        for (frame, id) in [(&first, 1u32), (&second, 3)] {
            assert_eq!(&frame[0..4], &[0x80, 0x03, 0x00, 0x01]);
            let length = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
            assert_eq!(
                length,
                frame.len() - 8,
                "the length covers the payload exactly"
            );
            assert_eq!(&frame[8..12], &id.to_be_bytes());
            assert!(
                frame.ends_with(&[0, 0, 0xff, 0xff]),
                "each block is sync-flushed"
            );
        }
        assert_eq!(
            headers(&[first, second]),
            [
                vec![("streamtype".to_string(), "error".to_string())],
                vec![("streamtype".to_string(), "stdout".to_string())],
            ]
        );
    }

    #[tokio::test]
    async fn frames_should_read_back_as_written() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&data(5, b"hello", false));
        wire.extend_from_slice(&data(5, b"", true));
        wire.extend_from_slice(&ping(7));
        // A SYN_REPLY for stream 3 with some header block, then RST_STREAM and GOAWAY.
        wire.extend_from_slice(&[0x80, 3, 0, 2, 0, 0, 0, 6, 0, 0, 0, 3, 0xAA, 0xBB]);
        wire.extend_from_slice(&[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 5]);
        wire.extend_from_slice(&[0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut reader = &wire[..];
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(&mut reader).await.unwrap() {
            frames.push(frame);
        }
        assert_eq!(
            frames,
            [
                Frame::Data {
                    stream: 5,
                    payload: Bytes::from_static(b"hello"),
                    fin: false
                },
                Frame::Data {
                    stream: 5,
                    payload: Bytes::new(),
                    fin: true
                },
                Frame::Ping(7),
                Frame::Reply { stream: 3 },
                Frame::Reset { stream: 9 },
                Frame::GoAway,
            ]
        );
    }
}
