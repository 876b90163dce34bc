//! Kubelet's back-off for restarting crashed containers and for pulling images: 10 s, doubling
//! after each restart up to 300 s, and forgotten once the thing ran (or the last attempt was) ten
//! minutes ago. Keyed by pod uid and container name; on tokio's clock, so tests advance it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
struct Entry {
    delay: Duration,
    last: Instant,
}

/// Delays by key.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// Whether an entry has not been touched for twice the longest delay (upstream's
    /// `hasExpired`: ten minutes of running reset the back-off).
    fn expired(entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last) > MAX * 2
    }

    /// How much longer `key` must wait after its last failure at `failed`; `None` if it may
    /// go now.
    pub fn remaining(&self, key: &str, failed: Instant, now: Instant) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if Self::expired(entry, failed) {
            return None;
        }
        let since = now.saturating_duration_since(failed);
        (since < entry.delay).then(|| entry.delay - since)
    }

    /// Whether `key` must still wait since its last attempt (upstream's
    /// `IsInBackOffSinceUpdate`, for image pulls and sandboxes).
    pub fn waiting(&self, key: &str, now: Instant) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| now.saturating_duration_since(e.last) < e.delay)
    }

    /// The current delay of `key` (for messages), if it has one.
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Records an attempt of `key` at `now`: the next failure waits twice as long.
    pub fn next(&mut self, key: &str, now: Instant) {
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            delay: Duration::ZERO,
            last: now,
        });
        entry.delay = if entry.delay.is_zero() || Self::expired(entry, now) {
            INITIAL
        } else {
            (entry.delay * 2).min(MAX)
        };
        entry.last = now;
    }

    /// Forgets every key starting with `prefix` (a pod that is gone).
    pub fn forget(&mut self, prefix: &str) {
        self.entries.retain(|k, _| !k.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_should_double_up_to_five_minutes_and_reset_after_ten_minutes_of_running() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        assert_eq!(backoff.remaining("p/c", start, start), None);
        backoff.next("p/c", start);
        assert_eq!(
            backoff.remaining("p/c", start, start + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            backoff.remaining("p/c", start, start + Duration::from_secs(10)),
            None
        );
        let mut at = start;
        let mut delays = Vec::new();
        for _ in 0..7 {
            at += Duration::from_secs(1);
            backoff.next("p/c", at);
            delays.push(backoff.delay("p/c").unwrap().as_secs());
        }
        assert_eq!(delays, [20, 40, 80, 160, 300, 300, 300]);
        // The container then ran for eleven minutes before failing again.
        let failed = at + Duration::from_secs(660);
        assert_eq!(backoff.remaining("p/c", failed, failed), None);
        backoff.next("p/c", failed);
        assert_eq!(backoff.delay("p/c"), Some(INITIAL));
    }
}
