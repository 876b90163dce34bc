//! The objects this server wrote last, kept decoded. An object with a status is most often
//! written again soon after a write (a pod is created, bound to a node, then marked running; a
//! Deployment's controller writes its status after its spec changes), and every write of an
//! existing object starts from the object decoded: [`crate::guaranteed`] takes it from here
//! instead of parsing the watch cache's bytes again.
//!
//! An entry is taken by the write that uses it, so it serves one write; that write puts its own
//! result back. A copy can be stale only when the object was written elsewhere (another server
//! on the same etcd, a direct store write): the guaranteed update's compare-and-swap on the
//! revision read catches that, and the write is decided again on the store's state.
//!
//! Memory is bounded in count and in time: two generations, each of at most [`GENERATION`]
//! entries and [`AGE`] old; when the current one is full or old, the previous one is dropped,
//! and both once the current one is twice that old. So a burst of writes holds at most
//! 2 × [`GENERATION`] objects, given back within 2 × [`AGE`] of the burst's end by the next
//! write or read here.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use skiff_store::Revision;

use crate::storage;

/// Most entries in a generation.
pub const GENERATION: usize = 1024;

/// Oldest a generation gets before it is retired.
pub const AGE: SignedDuration = SignedDuration::from_secs(1);

type Entries = HashMap<Box<str>, (Revision, Value)>;

/// Objects as written, with their revisions, by store key.
#[derive(Debug, Default)]
pub struct RecentWrites {
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: Entries,
    previous: Entries,
    /// When the current generation got its first entry.
    started: Option<Timestamp>,
}

impl Generations {
    /// Retires what is full or old at `now`; returns it, to be dropped outside the lock.
    fn retire(&mut self, now: Timestamp) -> Option<(Entries, Entries)> {
        let age = self.started.map(|at| now.duration_since(at))?;
        if age >= 2 * AGE {
            self.started = None;
            return Some((
                std::mem::take(&mut self.current),
                std::mem::take(&mut self.previous),
            ));
        }
        if age < AGE && self.current.len() < GENERATION {
            return None;
        }
        self.started = Some(now);
        let current = std::mem::take(&mut self.current);
        Some((
            std::mem::replace(&mut self.previous, current),
            Entries::new(),
        ))
    }
}

impl RecentWrites {
    /// Keeps `object`, just stored at `key` with `revision` stamped in it, in the order
    /// [`storage::decode_at`] gives.
    pub fn remember(&self, key: &str, revision: Revision, mut object: Value, now: Timestamp) {
        storage::canonical_order(&mut object);
        let mut generations = self.lock();
        let retired = generations.retire(now);
        generations.started.get_or_insert(now);
        let stale = generations.previous.remove(key);
        let replaced = generations
            .current
            .insert(key.into(), (revision, object))
            .or(stale);
        drop(generations);
        drop((replaced, retired));
    }

    /// Takes the object last written at `key`, with its revision.
    pub fn take(&self, key: &str, now: Timestamp) -> Option<(Revision, Value)> {
        let mut generations = self.lock();
        let retired = generations.retire(now);
        let taken = generations
            .current
            .remove(key)
            .or_else(|| generations.previous.remove(key));
        drop(generations);
        drop(retired);
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_written_object_should_be_taken_once_in_decoded_order() {
        let recent = RecentWrites::default();
        let written = json!({"status": {}, "data": {"a": "1"},
            "metadata": {"resourceVersion": "7", "name": "x"}, "kind": "Pod", "apiVersion": "v1"});
        recent.remember("/k", 7, written.clone(), at(0));
        let (revision, object) = recent.take("/k", at(0)).unwrap();
        assert_eq!(revision, 7);
        let bytes = storage::encode(&written).unwrap().bytes;
        let decoded = storage::decode_at(&bytes, 7).unwrap();
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            serde_json::to_string(&decoded).unwrap(),
            "the same object, its fields in the same order"
        );
        assert!(
            recent.take("/k", at(0)).is_none(),
            "an entry serves one write"
        );
    }

    #[test]
    fn a_full_generation_should_retire_the_one_before_it() {
        let recent = RecentWrites::default();
        for i in 0..=2 * GENERATION {
            recent.remember(&format!("/k{i}"), i as Revision, json!({}), at(0));
        }
        assert!(recent.take("/k0", at(0)).is_none());
        assert!(recent.take(&format!("/k{}", GENERATION), at(0)).is_some());
        assert!(
            recent
                .take(&format!("/k{}", 2 * GENERATION), at(0))
                .is_some()
        );
        recent.remember("/a", 1, json!({"name": "a"}), at(0));
        recent.remember("/a", 2, json!({"name": "b"}), at(0));
        assert_eq!(
            recent.take("/a", at(0)).map(|(r, _)| r),
            Some(2),
            "the last write wins"
        );
    }

    #[test]
    fn old_generations_should_be_given_back() {
        let recent = RecentWrites::default();
        recent.remember("/old", 1, json!({}), at(0));
        recent.remember("/newer", 2, json!({}), at(1));
        assert!(
            recent.take("/old", at(1)).is_some(),
            "one age on: the previous generation"
        );
        recent.remember("/old", 3, json!({}), at(1));
        assert!(recent.take("/old", at(3)).is_none(), "two ages on: gone");
        assert!(recent.take("/newer", at(3)).is_none());
    }
}
