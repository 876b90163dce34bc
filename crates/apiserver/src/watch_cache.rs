//! The watch cache: one store watch on everything under `/registry/` feeds a bounded ring of
//! decoded events, and every API watcher reads that ring at its own pace. Objects are decoded
//! once, however many watchers there are; a slow watcher holds no queue of its own (it only
//! keeps a position), so it can neither stall the others nor grow memory. A watcher that falls
//! behind the ring's oldest event, or starts before it, is served by a direct store watch instead
//! (which answers 410 Gone once that history is compacted).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use skiff_store::{Event, EventKind, Revision, Store, StoreError};
use tokio::sync::watch;

use crate::storage;

/// Events kept by default (upstream keeps a similar window per resource).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// One change, decoded.
#[derive(Debug)]
pub struct CachedEvent {
    /// The store revision of the change.
    pub revision: Revision,
    /// The object's key.
    pub key: String,
    /// Put or delete.
    pub kind: EventKind,
    /// After a put: the object (with its resource version).
    pub object: Option<Value>,
    /// The object before the change, stamped with this change's revision (as upstream sends a
    /// deleted object).
    pub prev: Option<Value>,
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every event after this revision is in `events` (or has not happened yet).
    since: Revision,
}

/// The shared cache of recent events.
pub struct WatchCache {
    ring: RwLock<Ring>,
    latest: watch::Sender<Revision>,
    capacity: usize,
}

impl WatchCache {
    /// Starts following the store from its current revision.
    pub async fn start(store: Arc<dyn Store>, capacity: usize) -> Result<Arc<Self>, StoreError> {
        let now = store.current_revision().await?;
        let cache = Arc::new(Self {
            ring: RwLock::new(Ring {
                events: VecDeque::new(),
                since: now,
            }),
            latest: watch::channel(now).0,
            capacity: capacity.max(1),
        });
        tokio::spawn(feed(Arc::downgrade(&cache), store, now));
        Ok(cache)
    }

    /// Notified (with the newest revision) whenever events arrive.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.latest.subscribe()
    }

    /// Up to `max` events under `prefix` after `after`, or `None` if the ring no longer (or
    /// not yet) holds everything after `after`.
    pub fn read_after(
        &self,
        after: Revision,
        prefix: &str,
        max: usize,
    ) -> Option<Vec<Arc<CachedEvent>>> {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        if after < ring.since {
            return None;
        }
        let start = ring.events.partition_point(|e| e.revision <= after);
        Some(
            ring.events
                .range(start..)
                .filter(|e| e.key.starts_with(prefix))
                .take(max)
                .cloned()
                .collect(),
        )
    }

    fn push(&self, event: CachedEvent) {
        let revision = event.revision;
        {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            ring.events.push_back(Arc::new(event));
            while ring.events.len() > self.capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.since = old.revision;
                }
            }
        }
        self.latest.send_replace(revision);
    }

    /// Forgets everything: history was lost (compacted under us), so watchers behind `now` must
    /// go to the store, which will tell them to relist.
    fn reset(&self, now: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
        ring.events.clear();
        ring.since = now;
        drop(ring);
        self.latest.send_replace(now);
    }
}

fn decode(event: &Event) -> CachedEvent {
    let revision = event.revision();
    CachedEvent {
        revision,
        key: event.kv.key.clone(),
        kind: event.kind,
        object: match event.kind {
            EventKind::Put => storage::decode(&event.kv).ok(),
            EventKind::Delete => None,
        },
        prev: event
            .prev
            .as_ref()
            .and_then(|p| storage::decode_at(&p.value, revision).ok()),
    }
}

async fn feed(cache: Weak<WatchCache>, store: Arc<dyn Store>, mut after: Revision) {
    loop {
        let mut stream = match store.watch(storage::ROOT, after).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "watch cache: cannot watch the store; retrying");
                if !recover(&cache, &store, &mut after, &error).await {
                    return;
                }
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            let Some(cache) = cache.upgrade() else {
                return;
            };
            match item {
                Ok(event) => {
                    after = event.revision();
                    cache.push(decode(&event));
                }
                Err(StoreError::WatchLagged { resume_after }) => {
                    after = resume_after;
                    break;
                }
                Err(error) => {
                    let weak = Arc::downgrade(&cache);
                    drop(cache);
                    if !recover(&weak, &store, &mut after, &error).await {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// After a failed store watch: resets on lost history, waits a moment otherwise. Returns false
/// when the cache is gone.
async fn recover(
    cache: &Weak<WatchCache>,
    store: &Arc<dyn Store>,
    after: &mut Revision,
    error: &StoreError,
) -> bool {
    if matches!(error, StoreError::Compacted { .. })
        && let Ok(now) = store.current_revision().await
    {
        let Some(cache) = cache.upgrade() else {
            return false;
        };
        tracing::warn!(
            lost_after = *after,
            now,
            "watch cache lost history; watchers will relist"
        );
        cache.reset(now);
        *after = now;
        return true;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cache.strong_count() > 0
}
