//! The live part of a watch: the changes after a revision, read from the watch cache's ring
//! while it holds them, and from a store watch otherwise until the watch has caught up with
//! what the ring holds; yielded as chunks of event lines for the response body to send. The
//! body itself drives it: no task or channel of its own sits between the ring and the
//! connection, so a change reaches each watcher with one wake-up, and a watcher that goes away
//! is dropped with its connection. One timer serves both the watch's end (`timeoutSeconds`) and
//! its bookmarks: each wake-up of each of a thousand watchers polls it.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use skiff_apimachinery::ApiError;
use skiff_store::{Revision, StoreError, WatchStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::{BOOKMARK_EVERY, Watch};

/// Events read from the ring at a time.
const BATCH: usize = 500;

/// Where the changes come from.
enum Source {
    /// The watch cache's ring; the receiver wakes us when the watched resource changes (only
    /// its object of one name, for a watch of one name), and now and then when others do, so
    /// that our position keeps up with the ring.
    Cache(watch::Receiver<Revision>),
    /// A direct store watch (opened on first use), for history the ring no longer holds.
    Store(Option<WatchStream>),
    /// Nothing more: the stream ends.
    Done,
}

/// A watch following the changes after `after`.
pub(super) struct Follower {
    watch: Watch,
    after: Revision,
    source: Source,
    /// Lines sent before following: the initial ADDED events and the bookmark closing them.
    initial: std::vec::IntoIter<Bytes>,
    /// When the watch ends.
    deadline: Instant,
    /// Fires at the next bookmark (with `allowWatchBookmarks`) or at the end, whichever comes
    /// first.
    timer: Pin<Box<Sleep>>,
    /// When the watch began following, and when it last read the ring (for the log).
    opened: Instant,
    last_read: Instant,
}

/// The response body: the initial lines, then the changes after `after`, until `timeout`.
pub(super) fn body(
    watch: Watch,
    initial: Vec<Bytes>,
    after: Revision,
    timeout: Duration,
) -> impl futures::Stream<Item = Bytes> {
    // Boxed, so that each chunk moves a pointer rather than the whole follower.
    let follower = Box::new(Follower::new(watch, initial, after, timeout));
    futures::stream::unfold(follower, |mut follower| async move {
        let chunk = follower.next_chunk().await?;
        Some((chunk, follower))
    })
}

impl Follower {
    fn new(watch: Watch, initial: Vec<Bytes>, after: Revision, timeout: Duration) -> Self {
        let latest = watch
            .state
            .watch_cache
            .subscribe_resource(&watch.resource_prefix, watch.pinned_name());
        let now = Instant::now();
        // `timeoutSeconds` of any size: beyond thirty years is forever (as tokio's own sleep).
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
        let first = if watch.bookmarks {
            (now + BOOKMARK_EVERY).min(deadline)
        } else {
            deadline
        };
        Self {
            watch,
            after,
            source: Source::Cache(latest),
            initial: initial.into_iter(),
            deadline,
            timer: Box::pin(tokio::time::sleep_until(first)),
            opened: now,
            last_read: now,
        }
    }

    /// After the timer fired: the bookmark due (the timer is set for the next one), or `None`
    /// when the watch is over. A timer never fires early: without bookmarks it is set for the
    /// end.
    fn on_timer(&mut self) -> Option<Bytes> {
        let now = Instant::now();
        if now >= self.deadline || !self.watch.bookmarks {
            self.source = Source::Done;
            return None;
        }
        let next = (now + BOOKMARK_EVERY).min(self.deadline);
        self.timer.as_mut().reset(next);
        self.catch_up_quietly();
        Some(self.watch.bookmark(self.after, false))
    }

    /// Moves the position up to the watch cache's newest revision when nothing for this watch
    /// is unread: a quiet resource's watcher, or a watcher of one name, is woken by other
    /// changes only now and then, and its bookmarks should carry a revision as recent as the
    /// server's.
    fn catch_up_quietly(&mut self) {
        if !matches!(self.source, Source::Cache(_)) {
            return;
        }
        let cache = &self.watch.state.watch_cache;
        // First the newest revision: every event up to it is in the ring by then.
        let newest = cache.newest_revision();
        let caught_up = match self.watch.pinned_name() {
            // The other names' changes stay unread (they do not wake it): none may be its own.
            Some(_) => cache
                .read_after(self.after, &self.watch.prefix, usize::MAX)
                .is_some_and(|events| !events.iter().any(|event| self.watch.concerns(event))),
            None => cache
                .read_after(self.after, &self.watch.prefix, 1)
                .is_some_and(|events| events.is_empty()),
        };
        if caught_up {
            self.after = self.after.max(newest);
        }
    }

    /// The next lines to send (`None`: the watch is over).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(line) = self.initial.next() {
            if self.initial.len() == 0 {
                // The list's own buffer goes now, not with the watch half an hour later.
                self.initial = Vec::new().into_iter();
            }
            return Some(line);
        }
        // A watch whose changes never pause reaches neither `select!` below.
        if self.timer.is_elapsed() {
            return self.on_timer();
        }
        loop {
            match &mut self.source {
                Source::Done => return None,
                Source::Cache(latest) => {
                    let seen = *latest.borrow_and_update();
                    let Some(events) = self.watch.state.watch_cache.read_after(
                        self.after,
                        &self.watch.prefix,
                        BATCH,
                    ) else {
                        // The ring no longer holds everything after `after`: go to the store.
                        tracing::info!(
                            prefix = %self.watch.prefix,
                            after = self.after,
                            woken_at = seen,
                            opened_ms = self.opened.elapsed().as_millis(),
                            unread_ms = self.last_read.elapsed().as_millis(),
                            "a watch is behind the watch cache's window: it reads the store until it catches up"
                        );
                        self.source = Source::Store(None);
                        continue;
                    };
                    self.last_read = Instant::now();
                    let mut lines = Lines::default();
                    for event in &events {
                        self.after = event.revision;
                        if let Some(line) = self.watch.translate_cached(event) {
                            lines.push(line);
                        }
                    }
                    let more = events.len() == BATCH;
                    if !more {
                        // Everything up to `seen` has been read: bookmarks may say so.
                        self.after = self.after.max(seen);
                    }
                    if let Some(chunk) = lines.into_chunk() {
                        return Some(chunk);
                    }
                    if more {
                        continue;
                    }
                    let closed = tokio::select! {
                        biased;
                        changed = latest.changed() => changed.is_err(),
                        () = &mut self.timer => return self.on_timer(),
                    };
                    if closed {
                        self.source = Source::Done;
                    }
                }
                Source::Store(None) => {
                    match self
                        .watch
                        .state
                        .store
                        .watch(&self.watch.prefix, self.after)
                        .await
                    {
                        Ok(stream) => self.source = Source::Store(Some(stream)),
                        Err(error) => return Some(self.end_with(error)),
                    }
                }
                Source::Store(Some(stream)) => {
                    let item = tokio::select! {
                        biased;
                        item = stream.next() => item,
                        () = &mut self.timer => return self.on_timer(),
                    };
                    match item {
                        Some(Ok(event)) => {
                            self.after = event.revision();
                            let line = self.watch.translate_store(&event);
                            let cache = &self.watch.state.watch_cache;
                            if cache.holds_after(self.after) {
                                // Caught up with the ring: follow it again (the store watch
                                // decodes every event for this watcher alone).
                                tracing::info!(
                                    prefix = %self.watch.prefix,
                                    after = self.after,
                                    "a watch caught up with the watch cache's window"
                                );
                                self.source = Source::Cache(cache.subscribe_resource(
                                    &self.watch.resource_prefix,
                                    self.watch.pinned_name(),
                                ));
                            }
                            if let Some(line) = line {
                                return Some(line);
                            }
                        }
                        Some(Err(StoreError::WatchLagged { resume_after })) => {
                            self.after = resume_after;
                            self.source = Source::Store(None);
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "store watch failed");
                            return Some(self.end_with(error));
                        }
                        None => self.source = Source::Done,
                    }
                }
            }
        }
    }

    /// The ERROR event that ends the watch after a store error: 410 `Expired` for compacted
    /// history, as upstream sends it.
    fn end_with(&mut self, error: StoreError) -> Bytes {
        self.source = Source::Done;
        let error = match error {
            StoreError::Compacted { requested } => {
                ApiError::Expired(format!("too old resource version: {requested}"))
            }
            other => ApiError::Internal(other.to_string()),
        };
        Watch::error_line(&error)
    }
}

/// Lines gathered from one read of the ring, sent as one chunk.
#[derive(Default)]
struct Lines(Vec<Bytes>);

impl Lines {
    fn push(&mut self, line: Bytes) {
        self.0.push(line);
    }

    /// One line as it is (it may be shared with other watchers); several joined.
    fn into_chunk(mut self) -> Option<Bytes> {
        match self.0.len() {
            0 => None,
            1 => self.0.pop(),
            _ => {
                let size = self.0.iter().map(Bytes::len).sum();
                let mut chunk = BytesMut::with_capacity(size);
                for line in &self.0 {
                    chunk.extend_from_slice(line);
                }
                Some(chunk.freeze())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_should_pass_one_line_through_and_join_several() {
        assert!(Lines::default().into_chunk().is_none());
        let line = Bytes::from_static(b"{\"type\":\"ADDED\"}\n");
        let mut one = Lines::default();
        one.push(line.clone());
        assert_eq!(one.into_chunk().unwrap().as_ptr(), line.as_ptr());
        let mut two = Lines::default();
        two.push(line.clone());
        two.push(Bytes::from_static(b"{\"type\":\"DELETED\"}\n"));
        assert_eq!(
            two.into_chunk().unwrap(),
            Bytes::from_static(b"{\"type\":\"ADDED\"}\n{\"type\":\"DELETED\"}\n")
        );
    }
}
