//! Who is woken by a change: the watchers of the changed resource, not every watcher of every
//! resource. Each resource's watchers share one channel of the newest revision they need to
//! read up to; a change sends on its own resource's channel only. A watcher reads nothing while
//! other resources change, so its position falls behind them; every [`Wakers::sweep_every`]
//! changes, every channel is sent the newest revision, so that a quiet watcher moves its
//! position on long before the ring drops the events it has not read.
//!
//! The order that keeps this sound: a change is in the ring before its channel is sent, so a
//! watcher woken with a revision finds every event up to it in the ring.

use std::collections::HashMap;
use std::sync::Mutex;

use skiff_store::Revision;
use tokio::sync::watch;

/// The channels, by resource key prefix (`/registry/{group}/{plural}/`).
pub(super) struct Wakers {
    channels: Mutex<Channels>,
    sweep_every: usize,
}

struct Channels {
    by_resource: HashMap<Box<str>, watch::Sender<Revision>>,
    /// Changes since the last sweep.
    unswept: usize,
}

/// The resource prefix of an object's key: `/registry/{group}/{plural}/` (the whole key when
/// it has no such prefix).
fn resource_of(key: &str) -> &str {
    let ends = key.match_indices('/').map(|(i, _)| i);
    match ends.clone().nth(3) {
        Some(end) => &key[..=end],
        None => key,
    }
}

impl Wakers {
    /// Wakers that sweep every `sweep_every` changes (at least 1).
    pub(super) fn new(sweep_every: usize) -> Self {
        Self {
            channels: Mutex::new(Channels {
                by_resource: HashMap::new(),
                unswept: 0,
            }),
            sweep_every: sweep_every.max(1),
        }
    }

    /// A channel woken by the changes under `resource` (a resource key prefix), starting at
    /// `now` (a revision whose events are all in the ring) if it is the first.
    pub(super) fn subscribe(&self, resource: &str, now: Revision) -> watch::Receiver<Revision> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channels.by_resource.get(resource) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(now);
                channels.by_resource.insert(resource.into(), sender);
                receiver
            }
        }
    }

    /// After the change of `key` at `revision` is in the ring: wakes its resource's watchers,
    /// or everyone's when a sweep is due.
    pub(super) fn changed(&self, key: &str, revision: Revision) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.unswept += 1;
        if channels.unswept >= self.sweep_every {
            channels.sweep(revision);
        } else if let Some(sender) = channels.by_resource.get(resource_of(key)) {
            sender.send_replace(revision);
        }
    }

    /// Wakes every watcher with `revision` (after the ring was reset to it).
    pub(super) fn wake_all(&self, revision: Revision) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sweep(revision);
    }
}

impl Channels {
    /// Sends `revision` on every channel, and forgets those nobody listens to.
    fn sweep(&mut self, revision: Revision) {
        self.unswept = 0;
        self.by_resource
            .retain(|_, sender| sender.receiver_count() > 0);
        for sender in self.by_resource.values() {
            sender.send_replace(revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_of_should_be_the_group_and_plural_prefix() {
        assert_eq!(
            resource_of("/registry/core/pods/default/a"),
            "/registry/core/pods/"
        );
        assert_eq!(
            resource_of("/registry/core/namespaces/a"),
            "/registry/core/namespaces/"
        );
        assert_eq!(resource_of("/registry/odd"), "/registry/odd");
    }

    #[test]
    fn a_change_should_wake_only_its_resources_watchers_until_a_sweep() {
        let wakers = Wakers::new(3);
        let mut pods = wakers.subscribe("/registry/core/pods/", 1);
        let mut maps = wakers.subscribe("/registry/core/configmaps/", 1);
        wakers.changed("/registry/core/pods/default/a", 2);
        assert!(pods.has_changed().unwrap());
        assert!(!maps.has_changed().unwrap());
        assert_eq!(*pods.borrow_and_update(), 2);
        wakers.changed("/registry/core/pods/default/b", 3);
        // The third change sweeps: everyone learns the newest revision.
        wakers.changed("/registry/core/secrets/default/s", 4);
        assert_eq!(*pods.borrow_and_update(), 4);
        assert_eq!(*maps.borrow_and_update(), 4);
        wakers.wake_all(9);
        assert_eq!(*maps.borrow_and_update(), 9);
    }

    #[test]
    fn a_sweep_should_forget_channels_nobody_listens_to() {
        let wakers = Wakers::new(1);
        drop(wakers.subscribe("/registry/core/pods/", 1));
        let kept = wakers.subscribe("/registry/core/nodes/", 1);
        wakers.changed("/registry/core/nodes/n", 2);
        let channels = wakers.channels.lock().unwrap();
        assert_eq!(channels.by_resource.len(), 1);
        assert_eq!(*kept.borrow(), 2);
    }
}
