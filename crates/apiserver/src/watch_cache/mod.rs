//! The watch cache: one store watch on everything under `/registry/` feeds a bounded ring of
//! rendered events, and every API watcher reads that ring at its own pace. Objects are decoded
//! and rendered once, however many watchers there are (a watcher copies the bytes out); a slow
//! watcher holds no queue of its own (it only keeps a position), so it can neither stall the
//! others nor grow memory. The ring's objects are the snapshot's own copies, so the ring costs
//! memory only for versions the snapshot no longer holds. A watcher that falls
//! behind the ring's oldest event, or starts before it, is served by a direct store watch instead
//! (which answers 410 Gone once that history is compacted).
//!
//! The same feed keeps a snapshot of every live object, rendered once as the JSON a list sends
//! for it, so that lists are served from memory instead of the store (upstream's consistent reads
//! from cache, KEP-2340): a list waits until the snapshot has caught up with the store's current
//! revision, then copies the objects' bytes out. The snapshot is loaded from the store when the
//! cache starts and again whenever the feed loses history; until then lists go to the store.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use skiff_apimachinery::ApiError;
use skiff_store::{Event, EventKind, RangeRequest, Revision, Store, StoreError};
use tokio::sync::watch;

use crate::storage;

/// Events kept by default (upstream keeps a similar window per resource).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Keys read per store request while the snapshot loads.
const LOAD_PAGE: usize = 256;

mod event;
mod object;
mod stored;
mod wakers;

pub use event::{CachedEvent, Seen, Side, event_line};
pub use object::CachedObject;

/// A snapshot entry, ordered (and found) by its key.
#[derive(Debug)]
struct Entry(Arc<CachedObject>);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key().cmp(other.0.key())
    }
}

/// Every live object at one revision.
#[derive(Default)]
struct Snapshot {
    objects: BTreeSet<Entry>,
    /// Keys whose stored value does not decode, with the error a store read reports for them.
    broken: BTreeMap<String, ApiError>,
    /// The objects are the store's as of this revision.
    revision: Revision,
    /// False until loaded (and while reloading after lost history).
    ready: bool,
}

impl Snapshot {
    /// Applies a change; returns the object it replaced or removed.
    fn apply(&mut self, key: &str, change: Change) -> Option<Arc<CachedObject>> {
        let old = match change {
            Change::Put(object) => {
                self.broken.remove(key);
                self.objects.replace(Entry(object))
            }
            Change::Undecodable(error) => {
                self.broken.insert(key.to_string(), error);
                self.objects.take(key)
            }
            Change::Delete => {
                self.broken.remove(key);
                self.objects.take(key)
            }
        };
        old.map(|entry| entry.0)
    }
}

/// Objects under a prefix, read from the snapshot at one revision.
#[derive(Debug)]
pub struct CachedList {
    /// The revision the objects are the store's state at.
    pub revision: Revision,
    /// The objects, in key order.
    pub objects: Vec<Arc<CachedObject>>,
    /// Whether objects beyond those taken exist under the prefix.
    pub more: bool,
}

/// Why the snapshot cannot serve a list.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The snapshot is not loaded (the cache is starting, or reloading after lost history).
    #[error("the watch cache is not ready")]
    NotReady,
    /// A stored object under the prefix does not decode.
    #[error("{key} does not decode")]
    Undecodable {
        /// The object's key.
        key: String,
        /// What decoding it reported (what a read from the store reports).
        #[source]
        error: Box<ApiError>,
    },
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every event after this revision is in `events` (or has not happened yet).
    since: Revision,
}

/// Events looked at from the newest back before a binary search (see [`first_after`]).
const NEWEST: usize = 16;

/// The position of the first of `items` (in order of revision) after `after`. A watch reads
/// again as soon as there is news, so what it has not seen is nearly always the last few
/// events: they are looked at from the back first, without a binary search over the whole ring.
fn first_after<T>(
    items: &VecDeque<T>,
    after: Revision,
    revision: impl Fn(&T) -> Revision,
) -> usize {
    let newer = items
        .iter()
        .rev()
        .take(NEWEST)
        .take_while(|item| revision(item) > after)
        .count();
    if newer < NEWEST {
        items.len() - newer
    } else {
        items.partition_point(|item| revision(item) <= after)
    }
}

/// The shared cache of recent events and of every live object.
pub struct WatchCache {
    ring: RwLock<Ring>,
    snapshot: RwLock<Snapshot>,
    latest: watch::Sender<Revision>,
    /// Each resource's watchers (and each watched name's), woken by their changes.
    wakers: wakers::Wakers,
    capacity: usize,
}

impl WatchCache {
    /// Starts following the store from its current revision; the snapshot of live objects
    /// loads in the background.
    pub async fn start(store: Arc<dyn Store>, capacity: usize) -> Result<Arc<Self>, StoreError> {
        let now = store.current_revision().await?;
        let cache = Arc::new(Self {
            ring: RwLock::new(Ring {
                events: VecDeque::new(),
                since: now,
            }),
            snapshot: RwLock::new(Snapshot::default()),
            latest: watch::channel(now).0,
            // A quarter of the ring: a watcher of a quiet resource moves on at least four
            // times before the ring drops what it has not read.
            wakers: wakers::Wakers::new(capacity / 4),
            capacity: capacity.max(1),
        });
        tokio::spawn(feed(Arc::downgrade(&cache), store, now));
        Ok(cache)
    }

    /// Notified when events of the resource whose keys start with `resource`
    /// (`/registry/{group}/{plural}/`) arrive, only those of the objects called `name` when
    /// one is given, and by every change once a quarter of the ring's capacity: with a
    /// revision up to which the ring has held every event.
    pub fn subscribe_resource(
        &self,
        resource: &str,
        name: Option<&str>,
    ) -> watch::Receiver<Revision> {
        self.wakers
            .subscribe(resource, name, self.newest_revision())
    }

    /// The newest revision in the ring (every event up to it has been pushed).
    pub fn newest_revision(&self) -> Revision {
        *self.latest.borrow()
    }

    /// Whether the ring holds every event after `after` (so [`WatchCache::read_after`] can
    /// answer from it).
    pub fn holds_after(&self, after: Revision) -> bool {
        after >= self.ring.read().unwrap_or_else(|p| p.into_inner()).since
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
        let start = first_after(&ring.events, after, |e| e.revision);
        Some(
            ring.events
                .range(start..)
                .filter(|e| e.key.starts_with(prefix))
                .take(max)
                .cloned()
                .collect(),
        )
    }

    /// The snapshot's revision, if it is loaded.
    pub fn snapshot_revision(&self) -> Option<Revision> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        snapshot.ready.then_some(snapshot.revision)
    }

    /// Waits until the snapshot holds the store's state at `revision` or later, for at most
    /// `timeout`. Returns whether it does.
    pub async fn wait_fresh(&self, revision: Revision, timeout: Duration) -> bool {
        let mut latest = self.latest.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.snapshot_revision().is_some_and(|r| r >= revision) {
                return true;
            }
            match tokio::time::timeout_at(deadline, latest.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return self.snapshot_revision().is_some_and(|r| r >= revision);
                }
            }
        }
    }

    /// The object at `key` in the snapshot: `None` when it is absent or the snapshot is not
    /// loaded. The snapshot may lag the store by a few events.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        if !snapshot.ready {
            return None;
        }
        snapshot.objects.get(key).map(|entry| Arc::clone(&entry.0))
    }

    /// The objects under `prefix` after `start_after` (at most `take`), all at the snapshot's
    /// revision.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        take: Option<usize>,
    ) -> Result<CachedList, CacheError> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        if !snapshot.ready {
            return Err(CacheError::NotReady);
        }
        let lower = match start_after {
            Some(key) if key >= prefix => Bound::Excluded(key),
            _ => Bound::Included(prefix),
        };
        if let Some((key, error)) = snapshot
            .broken
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .next()
        {
            return Err(CacheError::Undecodable {
                key: key.clone(),
                error: Box::new(error.clone()),
            });
        }
        let mut range = snapshot
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|e| e.0.key().starts_with(prefix));
        let objects: Vec<Arc<CachedObject>> = match take {
            Some(n) => range.by_ref().take(n).map(|e| Arc::clone(&e.0)).collect(),
            None => range.by_ref().map(|e| Arc::clone(&e.0)).collect(),
        };
        Ok(CachedList {
            revision: snapshot.revision,
            objects,
            more: range.next().is_some(),
        })
    }

    /// Applies a change from the store to the snapshot and appends it to the ring.
    fn push(&self, event: &Event) {
        let revision = event.revision();
        let change = match event.kind {
            EventKind::Put => {
                match CachedObject::from_stored(&event.kv.key, &event.kv.value, revision) {
                    Ok(object) => Change::Put(Arc::new(object)),
                    Err(error) => Change::Undecodable(error),
                }
            }
            EventKind::Delete => Change::Delete,
        };
        let object = match &change {
            Change::Put(object) => Some(Arc::clone(object)),
            _ => None,
        };
        let replaced = {
            let mut snapshot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
            let replaced = snapshot.apply(&event.kv.key, change);
            snapshot.revision = revision;
            replaced
        };
        // The store's copy of the previous object, stamped with this change's revision.
        let stamped = || {
            let prev = event.prev.as_ref()?;
            let object = CachedObject::from_stored(&event.kv.key, &prev.value, revision).ok()?;
            Some(Arc::new(object))
        };
        let prev = match event.kind {
            EventKind::Put => replaced.or_else(stamped),
            EventKind::Delete => stamped().or(replaced),
        };
        let cached = CachedEvent::new(revision, &event.kv.key, event.kind, object, prev);
        {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            ring.events.push_back(Arc::new(cached));
            while ring.events.len() > self.capacity {
                if let Some(old) = ring.events.pop_front() {
                    ring.since = old.revision;
                }
            }
        }
        self.wakers.changed(&event.kv.key, revision);
        self.latest.send_replace(revision);
    }

    /// Starts over at `now` with `snapshot`: history was lost (compacted under us), so watchers
    /// behind `now` must go to the store, which will tell them to relist.
    fn reset(&self, now: Revision, snapshot: Snapshot) {
        {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            ring.events.clear();
            ring.since = now;
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        self.latest.send_replace(now);
        self.wakers.wake_all(now);
    }

    /// Marks the snapshot as unusable until it is loaded again.
    fn invalidate(&self) {
        self.snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .ready = false;
    }
}

/// What one event does to the snapshot.
enum Change {
    Put(Arc<CachedObject>),
    Undecodable(ApiError),
    Delete,
}

/// Reads every object under the root at `revision`, page by page.
async fn load(store: &Arc<dyn Store>, revision: Revision) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot {
        revision,
        ready: true,
        ..Snapshot::default()
    };
    if revision == 0 {
        // Nothing existed before the first write. (A read at revision 0 would read the
        // current state, so objects created since would be in the snapshot before their own
        // events: creates would be sent as MODIFIED.)
        return Ok(snapshot);
    }
    let mut start_after = None;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: storage::ROOT.into(),
                start_after: start_after.take(),
                limit: Some(LOAD_PAGE),
                revision: Some(revision),
            })
            .await?;
        for kv in &page.kvs {
            let change = match CachedObject::from_stored(&kv.key, &kv.value, kv.mod_revision) {
                Ok(object) => Change::Put(Arc::new(object)),
                Err(error) => Change::Undecodable(error),
            };
            snapshot.apply(&kv.key, change);
        }
        match page.kvs.last() {
            Some(last) if page.more => start_after = Some(last.key.clone()),
            _ => return Ok(snapshot),
        }
    }
}

/// Loads the snapshot at the store's current revision (at `first` the first time) and resets
/// the cache to it. Returns the revision to follow from, or `None` when the cache is gone.
async fn reload(
    cache: &Weak<WatchCache>,
    store: &Arc<dyn Store>,
    first: &mut Option<Revision>,
) -> Option<Revision> {
    loop {
        let now = match first.take() {
            Some(now) => Ok(now),
            None => store.current_revision().await,
        };
        let loaded = match now {
            Ok(now) => load(store, now).await.map(|snapshot| (now, snapshot)),
            Err(error) => Err(error),
        };
        let cache = cache.upgrade()?;
        match loaded {
            Ok((now, snapshot)) => {
                tracing::debug!(
                    revision = now,
                    objects = snapshot.objects.len(),
                    "watch cache loaded"
                );
                cache.reset(now, snapshot);
                return Some(now);
            }
            Err(StoreError::Compacted { .. }) => continue,
            Err(error) => {
                tracing::warn!(%error, "watch cache: cannot load the store; retrying");
                drop(cache);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn feed(cache: Weak<WatchCache>, store: Arc<dyn Store>, now: Revision) {
    let mut first = Some(now);
    'load: loop {
        let Some(mut after) = reload(&cache, &store, &mut first).await else {
            return;
        };
        loop {
            let mut stream = match store.watch(storage::ROOT, after).await {
                Ok(stream) => stream,
                Err(error) => match recover(&cache, &error).await {
                    Recovery::Gone => return,
                    Recovery::Reload => continue 'load,
                    Recovery::Retry => continue,
                },
            };
            while let Some(item) = stream.next().await {
                let Some(strong) = cache.upgrade() else {
                    return;
                };
                match item {
                    Ok(event) => {
                        after = event.revision();
                        strong.push(&event);
                    }
                    Err(StoreError::WatchLagged { resume_after }) => {
                        after = resume_after;
                        break;
                    }
                    Err(error) => {
                        drop(strong);
                        match recover(&cache, &error).await {
                            Recovery::Gone => return,
                            Recovery::Reload => continue 'load,
                            Recovery::Retry => break,
                        }
                    }
                }
            }
        }
    }
}

/// What the feed does after a failed store watch.
enum Recovery {
    /// The cache is gone: stop.
    Gone,
    /// History was lost: load the snapshot again and follow from there.
    Reload,
    /// Watch again from the same revision.
    Retry,
}

/// After a failed store watch: reloads on lost history, waits a moment otherwise.
async fn recover(cache: &Weak<WatchCache>, error: &StoreError) -> Recovery {
    if let StoreError::Compacted { requested } = error {
        let Some(cache) = cache.upgrade() else {
            return Recovery::Gone;
        };
        tracing::warn!(
            lost_after = *requested,
            "watch cache lost history; watchers will relist"
        );
        cache.invalidate();
        return Recovery::Reload;
    }
    tracing::warn!(%error, "watch cache: the store watch failed; retrying");
    tokio::time::sleep(Duration::from_secs(1)).await;
    if cache.strong_count() > 0 {
        Recovery::Retry
    } else {
        Recovery::Gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_after_should_find_the_first_newer_event_near_the_head_or_far_behind_it() {
        let ring: VecDeque<Revision> = (0..100).map(|i| 10 + 2 * i).collect();
        let first = |after| first_after(&ring, after, |r| *r);
        let expected = |after| ring.iter().position(|r| *r > after).unwrap_or(ring.len());
        for after in [
            0, 9, 10, 11, 100, 150, 170, 175, 176, 200, 207, 208, 209, 500,
        ] {
            assert_eq!(first(after), expected(after), "after {after}");
        }
        assert_eq!(first_after(&VecDeque::new(), 5, |r: &Revision| *r), 0);
        // A ring shorter than the scan, all of it newer; exactly one fewer newer than the scan.
        let short: VecDeque<Revision> = (1..=5).collect();
        assert_eq!(first_after(&short, 0, |r| *r), 0);
        assert_eq!(first_after(&short, 3, |r| *r), 3);
        let boundary = 208 - 2 * (NEWEST as Revision - 1);
        assert_eq!(first(boundary - 1), expected(boundary - 1));
        assert_eq!(ring.len() - first(boundary - 1), NEWEST);
        assert_eq!(ring.len() - first(boundary), NEWEST - 1);
    }
}
