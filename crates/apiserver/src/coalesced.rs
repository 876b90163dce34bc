//! An HTTP/2 connection's writes, gathered into few TLS records and system calls.
//!
//! h2 writes each DATA frame of more than 256 bytes to its connection on its own and flushes
//! after it, and tokio-rustls encrypts and sends every write at once: one event fanned out to
//! 1,000 watches on one connection became 1,000 TLS records and 1,000 `writev` calls. Here the
//! writes wait in a buffer, and a flush asked for after new writes first puts the connection's
//! task at the back of the scheduler's queue (it yields once): the streams woken by the same
//! event add their frames meanwhile, and the next flush with nothing new sends them together.
//! Hand-written: hyper, h2 and tokio-rustls have no such option, and tokio's `BufWriter`
//! flushes whenever asked.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered at most: a write that would pass it sends the batch first, and a write at
/// least this long goes straight through.
const BATCH: usize = 64 * 1024;

/// A connection whose writes are sent in batches (see the module doc).
pub struct Coalesced<IO> {
    inner: IO,
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already written to `inner`.
    sent: usize,
    /// Whether bytes were added since the task last yielded.
    fresh: bool,
}

impl<IO> Coalesced<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
            sent: 0,
            fresh: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// Writes the whole buffer to `inner`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buffer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buffer.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: `Some` when they were written straight through
    /// (`write`) instead, being a batch's worth or more.
    fn poll_room(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        write: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<Option<io::Result<usize>>> {
        if self.buffer.len() + len <= BATCH {
            return Poll::Ready(None);
        }
        if let Err(error) = ready!(self.poll_send(cx)) {
            return Poll::Ready(Some(Err(error)));
        }
        if len >= BATCH {
            return write(Pin::new(&mut self.inner), cx).map(Some);
        }
        Poll::Ready(None)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let through = |inner: Pin<&mut IO>, cx: &mut Context<'_>| inner.poll_write(cx, data);
        if let Some(written) = ready!(this.poll_room(cx, data.len(), through)) {
            return Poll::Ready(written);
        }
        this.buffer.extend_from_slice(data);
        this.fresh |= !data.is_empty();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|buf| buf.len()).sum();
        let through =
            |inner: Pin<&mut IO>, cx: &mut Context<'_>| inner.poll_write_vectored(cx, bufs);
        if let Some(written) = ready!(this.poll_room(cx, len, through)) {
            return Poll::Ready(written);
        }
        for buf in bufs {
            this.buffer.extend_from_slice(buf);
        }
        this.fresh |= len > 0;
        Poll::Ready(Ok(len))
    }

    /// Not vectored: h2 then gathers frames of up to 1 KiB in its own buffer instead of
    /// handing each one over on its own (and flushing after it) as it does past 256 bytes.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.fresh && !this.buffer.is_empty() {
            // Tasks woken with this one may have frames for this connection: they run first.
            this.fresh = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// What reached the connection: each write's bytes, and the flushes.
    #[derive(Default)]
    struct Recorded {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        /// At most this many bytes a write (none when zero).
        limit: usize,
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = if this.limit == 0 {
                data.len()
            } else {
                data.len().min(this.limit)
            };
            this.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(io: &mut Coalesced<Recorded>, cx: &mut Context<'_>, data: &[u8]) -> usize {
        match Pin::new(io).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("write: {other:?}"),
        }
    }

    fn flush(io: &mut Coalesced<Recorded>, cx: &mut Context<'_>) -> bool {
        match Pin::new(io).poll_flush(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Pending => false,
            Poll::Ready(Err(error)) => panic!("flush: {error}"),
        }
    }

    #[test]
    fn a_flush_after_new_writes_should_yield_once_and_then_send_them_together() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Recorded::default());
        assert_eq!(write(&mut io, &mut cx, b"one "), 4);
        // The first flush puts itself off and wakes its task.
        assert!(!flush(&mut io, &mut cx));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(io.inner.writes.is_empty());
        // Meanwhile others write; the flush after that puts itself off once more.
        let parts = [IoSlice::new(b"two "), IoSlice::new(b"three")];
        assert!(matches!(
            Pin::new(&mut io).poll_write_vectored(&mut cx, &parts),
            Poll::Ready(Ok(9))
        ));
        assert!(!flush(&mut io, &mut cx));
        assert!(io.inner.writes.is_empty());
        // Nothing new: all of it goes out in one write, then the connection is flushed.
        assert!(flush(&mut io, &mut cx));
        assert_eq!(io.inner.writes, vec![b"one two three".to_vec()]);
        assert_eq!(io.inner.flushes, 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        // With nothing gathered a flush passes straight on.
        assert!(flush(&mut io, &mut cx));
        assert_eq!(io.inner.flushes, 2);
    }

    #[test]
    fn a_full_batch_should_be_sent_before_more_is_taken_and_a_big_write_go_straight_through() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut io = Coalesced::new(Recorded {
            limit: 1000,
            ..Recorded::default()
        });
        let half = vec![1u8; BATCH / 2];
        write(&mut io, &mut cx, &half);
        write(&mut io, &mut cx, &half);
        assert!(io.inner.writes.is_empty());
        // One byte more sends the batch (in as many writes as the connection takes).
        write(&mut io, &mut cx, &[2]);
        let sent: Vec<u8> = io.inner.writes.concat();
        assert_eq!(sent, [half.clone(), half].concat());
        assert_eq!(io.buffer, vec![2]);
        // A write of a batch or more: what is gathered goes first, then the write itself.
        io.inner.writes.clear();
        let big = vec![3u8; BATCH];
        assert_eq!(write(&mut io, &mut cx, &big), 1000);
        assert_eq!(io.inner.writes, vec![vec![2], vec![3u8; 1000]]);
        assert!(io.buffer.is_empty());
    }

    #[test]
    fn shutdown_should_send_what_is_gathered_first() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut io = Coalesced::new(Recorded::default());
        write(&mut io, &mut cx, b"last words");
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(io.inner.writes, vec![b"last words".to_vec()]);
    }
}
