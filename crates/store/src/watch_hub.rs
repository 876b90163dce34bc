//! In-process watch fan-out for the embedded backends (memory and SQLite).
//!
//! The single writer publishes every committed event, in revision order, into one bounded
//! broadcast ring shared by all watchers, so memory does not grow with the number of watchers or
//! with a slow one. A new watcher subscribes to the ring *first*, then reads history from the
//! backend in pages, then follows the ring, skipping anything it already delivered: nothing can
//! fall between the two. A watcher that falls more than the ring's capacity behind is ended with
//! [`StoreError::WatchLagged`], naming the revision to resume after.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{Event, Revision, StoreError, StoreResult, WatchStream};

/// How many history events a catching-up watcher reads at once.
const HISTORY_PAGE: usize = 512;

/// Default capacity of the broadcast ring, in events.
pub(crate) const DEFAULT_RING_CAPACITY: usize = 8192;

/// A backend's log of past events, read by watchers that start behind the present.
#[async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Up to `limit` events under `prefix` with revision greater than `after`, in revision order;
    /// [`StoreError::Compacted`] if `after` is older than the compacted revision.
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;
}

/// The publishing side: one per store.
pub(crate) struct WatchHub {
    ring: broadcast::Sender<Arc<Event>>,
}

impl WatchHub {
    pub(crate) fn new(capacity: usize) -> Self {
        let (ring, _) = broadcast::channel(capacity.max(1));
        Self { ring }
    }

    /// Publishes committed events; must be called in revision order by the single writer.
    pub(crate) fn publish(&self, event: Event) {
        // No receivers is not an error: nobody is watching.
        let _ = self.ring.send(Arc::new(event));
    }

    /// How many watchers are open (the ring's subscribers).
    pub(crate) fn watchers(&self) -> usize {
        self.ring.receiver_count()
    }

    /// Starts a watcher. Subscribes before any history is read (see the module doc).
    pub(crate) fn watch<H: History>(
        &self,
        history: Arc<H>,
        prefix: &str,
        after: Revision,
    ) -> WatchStream {
        let state = WatcherState {
            history,
            ring: self.ring.subscribe(),
            prefix: prefix.to_string(),
            last: after,
            pending: VecDeque::new(),
            catching_up: true,
            done: false,
        };
        Box::pin(futures::stream::unfold(state, WatcherState::next))
    }
}

struct WatcherState<H> {
    history: Arc<H>,
    ring: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// Revision of the last event delivered (or the start point).
    last: Revision,
    pending: VecDeque<Event>,
    catching_up: bool,
    done: bool,
}

impl<H: History> WatcherState<H> {
    async fn next(mut self) -> Option<(StoreResult<Event>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                self.last = event.revision();
                return Some((Ok(event), self));
            }
            if self.catching_up {
                match self
                    .history
                    .events_after(&self.prefix, self.last, HISTORY_PAGE)
                    .await
                {
                    Ok(events) => {
                        self.catching_up = events.len() == HISTORY_PAGE;
                        self.pending.extend(events);
                        continue;
                    }
                    Err(error) => return self.fail(error),
                }
            }
            match self.ring.recv().await {
                Ok(event) => {
                    if event.revision() > self.last && event.kv.key.starts_with(&self.prefix) {
                        self.last = event.revision();
                        return Some((Ok(Event::clone(&event)), self));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let resume_after = self.last;
                    return self.fail(StoreError::WatchLagged { resume_after });
                }
                Err(broadcast::error::RecvError::Closed) => return self.fail(StoreError::Closed),
            }
        }
    }

    fn fail(mut self, error: StoreError) -> Option<(StoreResult<Event>, Self)> {
        self.done = true;
        Some((Err(error), self))
    }
}
