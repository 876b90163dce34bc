//! The collector's work queue: tasks deduplicated while they wait, failed tasks retried after
//! an exponential back-off per task (reset when the task succeeds).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::graph::Task;

/// The first retry delay.
const BASE_DELAY: Duration = Duration::from_millis(50);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Tasks waiting to run.
#[derive(Debug, Default)]
pub struct Queue {
    ready: VecDeque<Task>,
    queued: HashSet<Task>,
    delayed: BTreeMap<(Instant, u64), Task>,
    failures: HashMap<Task, u32>,
    sequence: u64,
}

impl Queue {
    /// Queues a task to run now, unless it already waits to.
    pub fn push(&mut self, task: Task) {
        if self.queued.insert(task.clone()) {
            self.ready.push_back(task);
        }
    }

    /// Queues a task that failed, to run again after its back-off; returns the delay.
    pub fn retry(&mut self, task: Task, now: Instant) -> Duration {
        let failures = self.failures.entry(task.clone()).or_insert(0);
        *failures = failures.saturating_add(1);
        let delay = BASE_DELAY
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)))
            .min(MAX_DELAY);
        self.sequence += 1;
        self.delayed.insert((now + delay, self.sequence), task);
        delay
    }

    /// Forgets a task's failures.
    pub fn succeeded(&mut self, task: &Task) {
        self.failures.remove(task);
    }

    /// When the next task is due, if any.
    pub fn wake(&self, now: Instant) -> Option<Instant> {
        if self.ready.is_empty() {
            self.delayed.keys().next().map(|(at, _)| *at)
        } else {
            Some(now)
        }
    }

    /// The next due task.
    pub fn pop(&mut self, now: Instant) -> Option<Task> {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let task = entry.remove();
            self.push(task);
        }
        let task = self.ready.pop_front()?;
        self.queued.remove(&task);
        Some(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_should_deduplicate_waiting_tasks() {
        let mut queue = Queue::default();
        let now = Instant::now();
        queue.push(Task::AttemptDelete("a".into()));
        queue.push(Task::AttemptDelete("a".into()));
        queue.push(Task::Orphan("a".into()));
        assert_eq!(queue.pop(now), Some(Task::AttemptDelete("a".into())));
        assert_eq!(queue.pop(now), Some(Task::Orphan("a".into())));
        assert_eq!(queue.pop(now), None);
    }

    #[test]
    fn failed_tasks_should_back_off_exponentially_until_success() {
        let mut queue = Queue::default();
        let now = Instant::now();
        let task = Task::AttemptDelete("a".into());
        let first = queue.retry(task.clone(), now);
        assert_eq!(queue.pop(now), None, "not due yet");
        assert_eq!(queue.wake(now), Some(now + first));
        assert_eq!(queue.pop(now + first), Some(task.clone()));
        let second = queue.retry(task.clone(), now);
        assert_eq!(second, first * 2);
        queue.pop(now + second);
        queue.succeeded(&task);
        assert_eq!(queue.retry(task, now), first);
    }
}
