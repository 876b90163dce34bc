//! The scheduling queue, upstream's three parts: *active* pods wait for a scheduling attempt,
//! highest `spec.priority` first, then oldest; *backoff* holds pods whose last attempt failed
//! until their back-off (1 s, doubling per failed attempt, at most 10 s) is over; *parked* pods
//! did not fit anywhere and wait for the cluster to change (a node added or updated, a pod
//! deleted) before they go through backoff again. Nothing is retried in a busy loop.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// The first back-off after a failed attempt.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active(u64),
    Backoff(Instant, u64),
    Parked,
    /// Popped and being scheduled or bound.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    place: Place,
    priority: i32,
    attempts: u32,
    ready_at: Instant,
}

/// The queue of pending pods, by key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Queue {
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BTreeMap<(Instant, u64), String>,
    entries: HashMap<String, Entry>,
    seq: u64,
}

/// How long to wait after `attempts` failed attempts.
fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(10);
    (INITIAL_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

impl Queue {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn activate(&mut self, key: &str) {
        let seq = self.next_seq();
        if let Some(entry) = self.entries.get_mut(key) {
            entry.place = Place::Active(seq);
            self.active
                .push((entry.priority, Reverse(seq), key.to_string()));
        }
    }

    fn send_to_backoff(&mut self, key: &str) {
        let seq = self.next_seq();
        if let Some(entry) = self.entries.get_mut(key) {
            entry.place = Place::Backoff(entry.ready_at, seq);
            self.backoff.insert((entry.ready_at, seq), key.to_string());
        }
    }

    fn unplace(&mut self, key: &str) {
        if let Some(Place::Backoff(at, seq)) = self.entries.get(key).map(|e| e.place) {
            self.backoff.remove(&(at, seq));
        }
    }

    /// A pending pod was added or changed: new pods become active; a parked one goes through
    /// its back-off again, since the change may make it fit; others keep their place.
    pub fn add(&mut self, key: &str, priority: i32) {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        place: Place::Parked,
                        priority,
                        attempts: 0,
                        ready_at: Instant::now(),
                    },
                );
                self.activate(key);
            }
            Some(entry) => {
                entry.priority = priority;
                if entry.place == Place::Parked {
                    self.send_to_backoff(key);
                }
            }
        }
    }

    /// The next pod to schedule, if one is active; it stays known (in flight) until it is
    /// parked, retried or forgotten.
    pub fn pop(&mut self) -> Option<String> {
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.place == Place::Active(seq)
            {
                entry.place = Place::InFlight;
                return Some(key);
            }
        }
        None
    }

    /// The pod fit nowhere: it waits for a cluster change, and then for its back-off.
    pub fn park(&mut self, key: &str, now: Instant) {
        self.unplace(key);
        if let Some(entry) = self.entries.get_mut(key) {
            entry.attempts += 1;
            entry.ready_at = now + backoff(entry.attempts);
            entry.place = Place::Parked;
        }
    }

    /// The attempt failed for a passing reason (a bind error): retry after the back-off. A pod
    /// the queue no longer knows (it was reset by a relist meanwhile) is taken in again.
    pub fn retry(&mut self, key: &str, priority: i32, now: Instant) {
        self.unplace(key);
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            place: Place::Parked,
            priority,
            attempts: 0,
            ready_at: now,
        });
        entry.attempts += 1;
        entry.ready_at = now + backoff(entry.attempts);
        self.send_to_backoff(key);
    }

    /// Something changed that may let parked pods fit: they go through their back-off again.
    pub fn cluster_changed(&mut self) {
        let parked: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.place == Place::Parked)
            .map(|(k, _)| k.clone())
            .collect();
        for key in parked {
            self.send_to_backoff(&key);
        }
    }

    /// Moves the pods whose back-off is over to active.
    pub fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.backoff.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.activate(&key);
        }
    }

    /// When the next back-off ends, if any pod waits in one.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.keys().next().map(|(at, _)| *at)
    }

    /// The pod was bound or deleted: it leaves the queue.
    pub fn forget(&mut self, key: &str) {
        self.unplace(key);
        self.entries.remove(key);
    }

    /// Whether any pod is active.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// How many pods the queue knows, in any part.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue knows no pod.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_pods_should_be_scheduled_first_then_older_ones() {
        let mut queue = Queue::default();
        queue.add("ns/low", 0);
        queue.add("ns/high", 100);
        queue.add("ns/low2", 0);
        assert_eq!(queue.pop().as_deref(), Some("ns/high"));
        assert_eq!(queue.pop().as_deref(), Some("ns/low"));
        assert_eq!(queue.pop().as_deref(), Some("ns/low2"));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn parked_pods_should_wait_for_a_cluster_change_and_their_back_off() {
        let mut queue = Queue::default();
        let now = Instant::now();
        queue.add("ns/p", 0);
        assert_eq!(queue.pop().as_deref(), Some("ns/p"));
        queue.park("ns/p", now);
        queue.promote(now + Duration::from_secs(60));
        assert_eq!(queue.pop(), None, "parked pods need a cluster change");
        queue.cluster_changed();
        queue.promote(now + Duration::from_millis(500));
        assert_eq!(queue.pop(), None, "still backing off");
        assert_eq!(queue.next_wakeup(), Some(now + Duration::from_secs(1)));
        queue.promote(now + Duration::from_secs(1));
        assert_eq!(queue.pop().as_deref(), Some("ns/p"));
    }

    #[test]
    fn back_off_should_double_per_failure_up_to_ten_seconds() {
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_failed_bind_of_a_pod_the_queue_forgot_should_still_be_retried() {
        let mut queue = Queue::default();
        let now = Instant::now();
        queue.retry("ns/p", 0, now);
        queue.promote(now + MAX_BACKOFF);
        assert_eq!(queue.pop().as_deref(), Some("ns/p"));
    }

    #[test]
    fn forgotten_pods_should_never_come_back() {
        let mut queue = Queue::default();
        queue.add("ns/p", 0);
        queue.forget("ns/p");
        assert_eq!(queue.pop(), None);
        queue.add("ns/q", 0);
        let _ = queue.pop();
        queue.retry("ns/q", 0, Instant::now());
        queue.forget("ns/q");
        queue.promote(Instant::now() + MAX_BACKOFF);
        assert_eq!(queue.pop(), None);
        assert!(queue.is_empty());
    }
}
