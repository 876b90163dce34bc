//! Who is woken by a change: the watchers of the changed resource, not every watcher of every
//! resource. Each resource's watchers share one channel of the newest revision they need to
//! read up to; a change sends on its own resource's channel (and its name's, below) only. A watcher reads nothing while
//! other resources change, so its position falls behind them; every [`Wakers::sweep_every`]
//! changes, every channel is sent the newest revision, so that a quiet watcher moves its
//! position on long before the ring drops the events it has not read.
//!
//! A watcher whose field selector requires one object name (`metadata.name=X`, as `kubectl
//! wait`, `kubectl rollout status` and a kubelet's watch of one Secret or ConfigMap send) waits
//! on a channel of that name alone, upstream's name trigger: a change of any other object of
//! the resource does not wake it, and the sweeps keep its position as they keep a quiet
//! resource's.
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
    /// The channels of watchers of one name, by resource key prefix and name.
    by_name: HashMap<Box<str>, HashMap<Box<str>, watch::Sender<Revision>>>,
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

/// The object name of a key: its last segment.
fn name_of(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// The channel in `channels` under `key`, made (starting at `now`) if there is none.
fn receiver(
    channels: &mut HashMap<Box<str>, watch::Sender<Revision>>,
    key: &str,
    now: Revision,
) -> watch::Receiver<Revision> {
    match channels.get(key) {
        Some(sender) => sender.subscribe(),
        None => {
            let (sender, receiver) = watch::channel(now);
            channels.insert(key.into(), sender);
            receiver
        }
    }
}

impl Wakers {
    /// Wakers that sweep every `sweep_every` changes (at least 1).
    pub(super) fn new(sweep_every: usize) -> Self {
        Self {
            channels: Mutex::new(Channels {
                by_resource: HashMap::new(),
                by_name: HashMap::new(),
                unswept: 0,
            }),
            sweep_every: sweep_every.max(1),
        }
    }

    /// A channel woken by the changes under `resource` (a resource key prefix), or by those of
    /// the objects called `name` only, starting at `now` (a revision whose events are all in
    /// the ring) if it is the first.
    pub(super) fn subscribe(
        &self,
        resource: &str,
        name: Option<&str>,
        now: Revision,
    ) -> watch::Receiver<Revision> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match name {
            None => receiver(&mut channels.by_resource, resource, now),
            Some(name) => {
                let names = match channels.by_name.get_mut(resource) {
                    Some(names) => names,
                    None => channels.by_name.entry(resource.into()).or_default(),
                };
                receiver(names, name, now)
            }
        }
    }

    /// After the change of `key` at `revision` is in the ring: wakes its resource's watchers
    /// and those of its name, or everyone's when a sweep is due.
    pub(super) fn changed(&self, key: &str, revision: Revision) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.unswept += 1;
        if channels.unswept >= self.sweep_every {
            channels.sweep(revision);
            return;
        }
        let resource = resource_of(key);
        if let Some(sender) = channels.by_resource.get(resource) {
            sender.send_replace(revision);
        }
        if let Some(sender) = channels
            .by_name
            .get(resource)
            .and_then(|names| names.get(name_of(key)))
        {
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
        let listened = |sender: &watch::Sender<Revision>| sender.receiver_count() > 0;
        self.by_resource.retain(|_, sender| listened(sender));
        self.by_name.retain(|_, names| {
            names.retain(|_, sender| listened(sender));
            !names.is_empty()
        });
        let named = self.by_name.values().flat_map(HashMap::values);
        for sender in self.by_resource.values().chain(named) {
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
        let mut pods = wakers.subscribe("/registry/core/pods/", None, 1);
        let mut maps = wakers.subscribe("/registry/core/configmaps/", None, 1);
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
    fn a_change_should_wake_the_watchers_of_its_name_and_not_of_others() {
        let wakers = Wakers::new(100);
        let resource = "/registry/core/configmaps/";
        let mut web = wakers.subscribe(resource, Some("web"), 1);
        let mut db = wakers.subscribe(resource, Some("db"), 1);
        let mut all = wakers.subscribe(resource, None, 1);
        wakers.changed("/registry/core/configmaps/default/web", 2);
        assert_eq!(*web.borrow_and_update(), 2);
        assert!(!db.has_changed().unwrap());
        assert_eq!(*all.borrow_and_update(), 2);
        // The same name in another resource is another object.
        wakers.changed("/registry/core/secrets/default/db", 3);
        assert!(!db.has_changed().unwrap());
        wakers.changed("/registry/core/configmaps/other/db", 4);
        assert_eq!(*db.borrow_and_update(), 4);
        assert!(!web.has_changed().unwrap());
        wakers.wake_all(9);
        assert_eq!(*web.borrow_and_update(), 9);
        assert_eq!(*db.borrow_and_update(), 9);
    }

    #[test]
    fn a_sweep_should_forget_channels_nobody_listens_to() {
        let wakers = Wakers::new(1);
        drop(wakers.subscribe("/registry/core/pods/", None, 1));
        let kept = wakers.subscribe("/registry/core/nodes/", None, 1);
        drop(wakers.subscribe("/registry/core/nodes/", Some("gone"), 1));
        let named = wakers.subscribe("/registry/core/nodes/", Some("n"), 1);
        wakers.changed("/registry/core/nodes/n", 2);
        let channels = wakers.channels.lock().unwrap();
        assert_eq!(channels.by_resource.len(), 1);
        assert_eq!(channels.by_name["/registry/core/nodes/"].len(), 1);
        assert_eq!(*named.borrow(), 2);
        assert_eq!(*kept.borrow(), 2);
    }
}
