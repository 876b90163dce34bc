//! Objects this server deleted recently, so that the lookups that admission and authentication
//! make on every request can trust the watch cache otherwise: a create's namespace
//! (NamespaceLifecycle) and a bearer token's service account. As upstream's namespace admission
//! does (`forceLiveLookupCache`), an object deleted here is looked up in the store, not the
//! cache, for [`LIVE_LOOKUP_FOR`] after its deletion: a request right after it must be refused
//! even though the cache has not yet seen the deletion.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::watch_cache::WatchCache;

/// How long after its deletion an object is looked up in the store (upstream: 30 s).
pub const LIVE_LOOKUP_FOR: SignedDuration = SignedDuration::from_secs(30);

/// Store keys of objects deleted by this server, with when.
#[derive(Debug, Default)]
pub struct RecentDeletions {
    deleted: Mutex<HashMap<String, Timestamp>>,
}

impl RecentDeletions {
    /// Notes that the object at `key` is being deleted at `now`.
    pub fn note(&self, key: &str, now: Timestamp) {
        let mut deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        deleted.retain(|_, at| now.duration_since(*at) < LIVE_LOOKUP_FOR);
        deleted.insert(key.to_string(), now);
    }

    /// Whether the object at `key` was deleted within [`LIVE_LOOKUP_FOR`] before `now`.
    pub fn recent(&self, key: &str, now: Timestamp) -> bool {
        let deleted = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        deleted
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < LIVE_LOOKUP_FOR)
    }

    /// What the lookups read of the object at `key` as the watch cache holds it, when that can
    /// be trusted: `None` when the cache lacks it (it may have just been created), cannot decode
    /// it, or this server deleted it recently. The caller then reads the store. Only the two
    /// fields are decoded; the rest of the metadata is skipped.
    pub fn cached(&self, cache: &WatchCache, key: &str, now: Timestamp) -> Option<Looked> {
        if self.recent(key, now) {
            return None;
        }
        serde_json::from_slice(cache.get(key)?.metadata()?).ok()
    }
}

/// The fields of an object's metadata that per-request lookups read.
#[derive(Debug, Deserialize)]
pub struct Looked {
    /// `metadata.uid`.
    #[serde(default)]
    pub uid: Option<String>,
    /// Whether `metadata.deletionTimestamp` is set.
    #[serde(default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<IgnoredAny>,
}

impl Looked {
    /// Whether the object is being deleted.
    pub fn deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_should_force_live_lookups_for_thirty_seconds() {
        let deletions = RecentDeletions::default();
        let at = Timestamp::from_second(1_000_000).unwrap();
        let key = "/registry/namespaces/team";
        assert!(!deletions.recent(key, at));
        deletions.note(key, at);
        assert!(deletions.recent(key, at + SignedDuration::from_secs(29)));
        assert!(!deletions.recent(key, at + SignedDuration::from_secs(30)));
        assert!(!deletions.recent("/registry/namespaces/other", at));
    }

    #[test]
    fn looked_should_read_the_uid_and_whether_the_object_is_deleting() {
        let looked: Looked = serde_json::from_str(
            r#"{"name":"a","uid":"u1","labels":{"x":"y"},"managedFields":[{"manager":"m"}]}"#,
        )
        .unwrap();
        assert_eq!(
            (looked.uid.as_deref(), looked.deleting()),
            (Some("u1"), false)
        );
        let looked: Looked =
            serde_json::from_str(r#"{"deletionTimestamp":"2026-12-03T10:00:00Z"}"#).unwrap();
        assert_eq!((looked.deleting(), looked.uid), (true, None));
    }
}
