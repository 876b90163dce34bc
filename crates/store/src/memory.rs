//! The in-memory backend: full MVCC semantics with no durability, for fast hermetic tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::watch_hub::{DEFAULT_RING_CAPACITY, History, WatchHub};
use crate::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError,
    StoreResult, WatchStream, check_write,
};

/// One version of a key; `value: None` is a tombstone.
#[derive(Clone, Debug)]
struct Version {
    revision: Revision,
    create_revision: Revision,
    value: Option<Bytes>,
}

#[derive(Default)]
struct State {
    keys: BTreeMap<String, Vec<Version>>,
    log: VecDeque<Event>,
    current: Revision,
    compacted: Revision,
}

struct Shared {
    state: Mutex<State>,
    hub: WatchHub,
}

/// A store that keeps everything in memory.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_watch_capacity(DEFAULT_RING_CAPACITY)
    }

    /// An empty store whose watchers may fall at most `capacity` events behind.
    pub fn with_watch_capacity(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                hub: WatchHub::new(capacity),
            }),
        }
    }

    /// How many watch streams are open on this store, for tests that look beneath the API.
    pub fn open_watches(&self) -> usize {
        self.shared.hub.watchers()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-write; the state is still
        // consistent because every write mutates it only after all checks pass.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn check_revision(&self, revision: Option<Revision>) -> StoreResult<Revision> {
        let Some(requested) = revision.filter(|r| *r > 0) else {
            return Ok(self.current);
        };
        if requested < self.compacted {
            return Err(StoreError::Compacted { requested });
        }
        if requested > self.current {
            return Err(StoreError::FutureRevision {
                requested,
                current: self.current,
            });
        }
        Ok(requested)
    }

    fn live(&self, key: &str) -> Option<KeyValue> {
        let version = self.keys.get(key)?.last()?;
        to_kv(key, version)
    }

    /// Records a committed change and returns its event.
    fn commit(&mut self, key: &str, value: Option<Bytes>, prev: Option<KeyValue>) -> Event {
        self.current += 1;
        let revision = self.current;
        let create_revision = match (&value, &prev) {
            (Some(_), Some(prev)) => prev.create_revision,
            (Some(_), None) => revision,
            (None, _) => 0,
        };
        self.keys.entry(key.to_string()).or_default().push(Version {
            revision,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            value: value.clone(),
        });
        let event = Event {
            kind: if value.is_some() {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            kv: KeyValue {
                key: key.to_string(),
                value: value.unwrap_or_default(),
                create_revision,
                mod_revision: revision,
            },
            prev,
        };
        self.log.push_back(event.clone());
        event
    }
}

fn to_kv(key: &str, version: &Version) -> Option<KeyValue> {
    Some(KeyValue {
        key: key.to_string(),
        value: version.value.clone()?,
        create_revision: version.create_revision,
        mod_revision: version.revision,
    })
}

fn at_revision(versions: &[Version], revision: Revision) -> Option<&Version> {
    versions.iter().rev().find(|v| v.revision <= revision)
}

#[async_trait]
impl History for Shared {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if after < state.compacted {
            return Err(StoreError::Compacted { requested: after });
        }
        let start = state.log.partition_point(|e| e.revision() <= after);
        Ok(state
            .log
            .range(start..)
            .filter(|e| e.kv.key.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> StoreResult<(Option<KeyValue>, Revision)> {
        let state = self.lock();
        let at = state.check_revision(revision)?;
        let kv = state
            .keys
            .get(key)
            .and_then(|versions| at_revision(versions, at))
            .and_then(|version| to_kv(key, version));
        Ok((kv, at))
    }

    async fn range(&self, request: RangeRequest) -> StoreResult<RangeResponse> {
        let state = self.lock();
        let at = state.check_revision(request.revision)?;
        let limit = request.limit.unwrap_or(usize::MAX);
        let mut response = RangeResponse {
            revision: at,
            ..RangeResponse::default()
        };
        let lower = match &request.start_after {
            Some(after) if after.as_str() >= request.prefix.as_str() => {
                std::ops::Bound::Excluded(after.clone())
            }
            _ => std::ops::Bound::Included(request.prefix.clone()),
        };
        let candidates = state
            .keys
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&request.prefix));
        for (key, versions) in candidates {
            let Some(kv) = at_revision(versions, at).and_then(|v| to_kv(key, v)) else {
                continue;
            };
            if response.kvs.len() == limit {
                response.more = true;
                break;
            }
            response.kvs.push(kv);
        }
        Ok(response)
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        check_write(key, &value)?;
        let mut state = self.lock();
        if state.live(key).is_some() {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        let event = state.commit(key, Some(value), None);
        let revision = event.revision();
        self.shared.hub.publish(event);
        Ok(revision)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        check_write(key, &value)?;
        let mut state = self.lock();
        let Some(prev) = state.live(key) else {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        };
        if prev.mod_revision != expected {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual: prev.mod_revision,
            });
        }
        let event = state.commit(key, Some(value), Some(prev));
        let revision = event.revision();
        self.shared.hub.publish(event);
        Ok(revision)
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<(Revision, KeyValue)> {
        let mut state = self.lock();
        let Some(prev) = state.live(key) else {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        };
        if let Some(expected) = expected.filter(|e| *e != prev.mod_revision) {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual: prev.mod_revision,
            });
        }
        let event = state.commit(key, None, Some(prev.clone()));
        let revision = event.revision();
        self.shared.hub.publish(event);
        Ok((revision, prev))
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        Ok(self.lock().current)
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let mut state = self.lock();
        if revision > state.current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.current,
            });
        }
        if revision <= state.compacted {
            return Ok(());
        }
        state.keys.retain(|_, versions| {
            // Keep the newest version at or below `revision` (unless it is a tombstone) and
            // everything after it.
            let keep_from = versions
                .iter()
                .rposition(|v| v.revision <= revision)
                .map_or(0, |i| {
                    if versions[i].value.is_some() {
                        i
                    } else {
                        i + 1
                    }
                });
            versions.drain(..keep_from);
            !versions.is_empty()
        });
        while state.log.front().is_some_and(|e| e.revision() <= revision) {
            state.log.pop_front();
        }
        state.compacted = revision;
        Ok(())
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<WatchStream> {
        if after < self.lock().compacted {
            return Err(StoreError::Compacted { requested: after });
        }
        Ok(self
            .shared
            .hub
            .watch(Arc::clone(&self.shared), prefix, after))
    }
}
