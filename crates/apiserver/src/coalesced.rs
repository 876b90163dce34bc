//! An HTTP/2 connection's writes, gathered into few TLS records and system calls.
//!
//! h2 flushes its connection after each DATA frame of 256 bytes or more and at the end of each
//! poll, a stream that sends wakes the connection's task (which tokio then runs next), and
//! tokio-rustls encrypts and sends every write at once: one event fanned out to 1,000 watches
//! on one connection became 1,000 TLS records and 1,000 `writev` calls. Here the writes wait in
//! tokio's `BufWriter`, and a flush asked for after new writes first puts the connection's task
//! at the back of the scheduler's queue (it yields): the streams woken by the same event add
//! their frames meanwhile, and a flush with nothing new since the yield sends them together.
//! After [`LONGEST`] a batch yields no more, so steady traffic cannot keep putting it off.
//! Hand-written is only that delay: `BufWriter` itself flushes whenever asked.
//!
//! h2 still flushes to make room after each frame of 1 KiB or more, so such frames cost a
//! yield each; h2 has no option to write out its frames without flushing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::time::{Duration, Instant};

/// Bytes gathered at most: a write that would pass it sends the batch first, and a write at
/// least this long goes straight through (`BufWriter`'s capacity).
const BATCH: usize = 64 * 1024;

/// After this long a batch no longer puts a flush off (each put-off is a yield of the task),
/// however much is still being added.
const LONGEST: Duration = Duration::from_millis(1);

/// A connection whose writes are sent in batches (see the module doc).
pub struct Coalesced<IO> {
    inner: BufWriter<IO>,
    /// Whether bytes were added since the task last yielded.
    fresh: bool,
    /// When this batch first put off a flush.
    since: Option<Instant>,
}

impl<IO: AsyncWrite> Coalesced<IO> {
    pub fn new(inner: IO) -> Self {
        Self {
            inner: BufWriter::with_capacity(BATCH, inner),
            fresh: false,
            since: None,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<IO> {
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
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        this.fresh |= !this.inner.buffer().is_empty();
        Poll::Ready(Ok(written))
    }

    /// Not vectored (a vectored write takes its first non-empty slice, as `AsyncWrite`'s
    /// default does): h2 then copies frames of less than 1 KiB into its own buffer instead of
    /// flushing after each one of 256 bytes or more.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.fresh && !this.inner.buffer().is_empty() {
            let since = *this.since.get_or_insert_with(Instant::now);
            if since.elapsed() < LONGEST {
                // Tasks woken with this one may have frames for this connection: they run first.
                this.fresh = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.fresh = false;
        this.since = None;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
        assert!(io.inner.get_ref().writes.is_empty());
        // Meanwhile others write; the flush after that puts itself off once more.
        assert_eq!(write(&mut io, &mut cx, b"two "), 4);
        assert_eq!(write(&mut io, &mut cx, b"three"), 5);
        assert!(!flush(&mut io, &mut cx));
        assert!(io.inner.get_ref().writes.is_empty());
        // Nothing new: all of it goes out in one write, then the connection is flushed.
        assert!(flush(&mut io, &mut cx));
        assert_eq!(io.inner.get_ref().writes, vec![b"one two three".to_vec()]);
        assert_eq!(io.inner.get_ref().flushes, 1);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        // With nothing gathered a flush passes straight on.
        assert!(flush(&mut io, &mut cx));
        assert_eq!(io.inner.get_ref().flushes, 2);
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
        assert!(io.inner.get_ref().writes.is_empty());
        // One byte more sends the batch (in as many writes as the connection takes).
        write(&mut io, &mut cx, &[2]);
        let sent: Vec<u8> = io.inner.get_ref().writes.concat();
        assert_eq!(sent, [half.clone(), half].concat());
        assert_eq!(io.inner.buffer(), &[2][..]);
        // A write of a batch or more: what is gathered goes first, then the write itself.
        io.inner.get_mut().writes.clear();
        let big = vec![3u8; BATCH];
        assert_eq!(write(&mut io, &mut cx, &big), 1000);
        assert_eq!(io.inner.get_ref().writes, vec![vec![2], vec![3u8; 1000]]);
        assert!(io.inner.buffer().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn steady_writes_should_put_a_batch_off_only_for_so_long() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut io = Coalesced::new(Recorded::default());
        for _ in 0..20 {
            write(&mut io, &mut cx, b"x");
            assert!(!flush(&mut io, &mut cx));
            tokio::time::advance(LONGEST / 40).await;
        }
        tokio::time::advance(LONGEST / 2).await;
        write(&mut io, &mut cx, b"y");
        assert!(flush(&mut io, &mut cx));
        assert_eq!(
            io.inner.get_ref().writes,
            vec![[&[b'x'; 20][..], b"y"].concat()]
        );
        // The next batch may be put off again.
        write(&mut io, &mut cx, b"z");
        assert!(!flush(&mut io, &mut cx));
    }

    #[test]
    fn a_write_of_a_whole_batch_should_go_straight_through() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut io = Coalesced::new(Recorded::default());
        let big = vec![4u8; BATCH];
        assert_eq!(write(&mut io, &mut cx, &big), BATCH);
        assert_eq!(io.inner.get_ref().writes, vec![big]);
        assert!(io.inner.buffer().is_empty());
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
        assert_eq!(io.inner.get_ref().writes, vec![b"last words".to_vec()]);
    }
}
