//! The watch cache: one store watch on everything under `/registry/` feeds a bounded ring of
//! decoded events, and every API watcher reads that ring at its own pace. Objects are decoded
//! once, however many watchers there are; a slow watcher holds no queue of its own (it only
//! keeps a position), so it can neither stall the others nor grow memory. A watcher that falls
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
use serde_json::Value;
use skiff_apimachinery::ApiError;
use skiff_store::{Event, EventKind, RangeRequest, Revision, Store, StoreError};
use tokio::sync::watch;

use crate::storage;

/// Events kept by default (upstream keeps a similar window per resource).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Keys read per store request while the snapshot loads.
const LOAD_PAGE: usize = 256;

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

/// A live object as a list sends it, rendered once when its change arrives.
#[derive(Debug)]
pub struct CachedObject {
    key: Box<str>,
    item: Box<[u8]>,
    metadata: Option<(u32, u32)>,
}

impl CachedObject {
    /// Renders a decoded object (fields in upstream's order, resource version stamped, as
    /// [`storage::decode`] returns it).
    pub fn new(key: &str, object: &Value) -> Self {
        let (item, metadata) = render_item(object);
        Self {
            key: key.into(),
            item: item.into_boxed_slice(),
            metadata,
        }
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's JSON without `kind` and `apiVersion`, as typed lists carry their items.
    pub fn item(&self) -> &[u8] {
        &self.item
    }

    /// The JSON of the object's `metadata`, if it has one.
    pub fn metadata(&self) -> Option<&[u8]> {
        let (start, end) = self.metadata?;
        self.item.get(start as usize..end as usize)
    }
}

/// Writes `object` without `kind` and `apiVersion`, noting where `metadata`'s value lies.
fn render_item(object: &Value) -> (Vec<u8>, Option<(u32, u32)>) {
    let mut out = Vec::with_capacity(512);
    let mut metadata = None;
    out.push(b'{');
    if let Some(map) = object.as_object() {
        let mut first = true;
        for (key, value) in map {
            if key == "kind" || key == "apiVersion" {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing JSON values into a Vec cannot fail: every map key is a string.
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            let start = out.len();
            let _ = serde_json::to_writer(&mut out, value);
            if key == "metadata"
                && let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(out.len()))
            {
                metadata = Some((start, end));
            }
        }
    }
    out.push(b'}');
    (out, metadata)
}

/// A snapshot entry, ordered (and found) by its key.
#[derive(Debug)]
struct Entry(Arc<CachedObject>);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.key
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
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
        self.0.key.cmp(&other.0.key)
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
    fn apply(&mut self, key: &str, change: Change) {
        match change {
            Change::Put(object) => {
                self.broken.remove(key);
                self.objects.replace(Entry(Arc::new(object)));
            }
            Change::Undecodable(error) => {
                self.objects.remove(key);
                self.broken.insert(key.to_string(), error);
            }
            Change::Delete => {
                self.objects.remove(key);
                self.broken.remove(key);
            }
        }
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

/// The shared cache of recent events and of every live object.
pub struct WatchCache {
    ring: RwLock<Ring>,
    snapshot: RwLock<Snapshot>,
    latest: watch::Sender<Revision>,
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
            .take_while(|e| e.0.key.starts_with(prefix));
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

    fn push(&self, event: CachedEvent, change: Change) {
        let revision = event.revision;
        {
            let mut snapshot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
            snapshot.apply(&event.key, change);
            snapshot.revision = revision;
        }
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
    Put(CachedObject),
    Undecodable(ApiError),
    Delete,
}

fn decode(event: &Event) -> (CachedEvent, Change) {
    let revision = event.revision();
    let (object, change) = match event.kind {
        EventKind::Put => match storage::decode(&event.kv) {
            Ok(object) => {
                let rendered = CachedObject::new(&event.kv.key, &object);
                (Some(object), Change::Put(rendered))
            }
            Err(error) => (None, Change::Undecodable(error)),
        },
        EventKind::Delete => (None, Change::Delete),
    };
    let decoded = CachedEvent {
        revision,
        key: event.kv.key.clone(),
        kind: event.kind,
        object,
        prev: event
            .prev
            .as_ref()
            .and_then(|p| storage::decode_at(&p.value, revision).ok()),
    };
    (decoded, change)
}

/// Reads every object under the root at `revision`, page by page.
async fn load(store: &Arc<dyn Store>, revision: Revision) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot {
        revision,
        ready: true,
        ..Snapshot::default()
    };
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
            let change = match storage::decode(kv) {
                Ok(object) => Change::Put(CachedObject::new(&kv.key, &object)),
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
                        let (decoded, change) = decode(&event);
                        strong.push(decoded, change);
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
