//! The garbage collector: deletes objects whose owners are gone, orphans dependents when asked
//! to, and carries out foreground deletion. Like upstream's, it watches the metadata of every
//! listable, watchable, deletable resource (custom resources included: discovery is re-run when
//! a CRD changes and periodically), keeps a dependency graph from those watches, and works a
//! deduplicated queue of tasks with per-task back-off. After a restart the graph is rebuilt
//! from the initial lists and every object with owners is checked again.
//!
//! One loop owns the graph and the queue: watch events and tasks are handled in turn, so the
//! graph needs no lock. Tasks start once every watch has listed (or after a grace period, so a
//! resource whose watch keeps failing cannot stop the collector).

mod actions;
mod graph;
mod observed;
mod queue;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use skiff_client::lean::MetadataOnly;

use crate::resources::{Resources, Served};
use actions::Actions;
use graph::{Graph, Node, Task};
use queue::Queue;

/// How long tasks wait for every watch to finish its first list.
const SYNC_GRACE: Duration = Duration::from_secs(20);
/// How often discovery is re-run even without CRD changes.
const REDISCOVERY_PERIOD: Duration = Duration::from_secs(30);
/// How long after a CRD change discovery is re-run (changes often come in bursts).
const REDISCOVERY_DEBOUNCE: Duration = Duration::from_millis(200);
/// The resource whose changes add or remove served resources.
const CRD_RESOURCE: &str = "apiextensions.k8s.io/v1/customresourcedefinitions";

type Change = (String, watcher::Event<MetadataOnly>);

/// One resource's metadata watch.
struct Watch {
    task: JoinHandle<()>,
    synced: bool,
    /// Whether a list completed before (a later one is a relist after a gap).
    listed: bool,
    /// The uids seen since the watch's (re)list began.
    relist: Option<HashSet<String>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The collector's state; see the module docs.
struct Collector {
    client: Client,
    resources: Resources,
    graph: Graph,
    queue: Queue,
    watches: HashMap<String, Watch>,
    changes: mpsc::Sender<Change>,
}

/// Runs the garbage collector until the task is dropped.
pub async fn run(client: Client) {
    let (changes, mut incoming) = mpsc::channel::<Change>(1024);
    let mut collector = Collector {
        client,
        resources: Resources::default(),
        graph: Graph::default(),
        queue: Queue::default(),
        watches: HashMap::new(),
        changes,
    };
    collector.rediscover().await;
    let started = Instant::now();
    let mut next_discovery = Instant::now() + REDISCOVERY_PERIOD;
    loop {
        let now = Instant::now();
        let synced = collector.watches.values().all(|w| w.synced);
        let ready = (synced && !collector.watches.is_empty()) || now >= started + SYNC_GRACE;
        let wake = collector.queue.wake(now).filter(|_| ready);
        tokio::select! {
            change = incoming.recv() => {
                let Some((resource, event)) = change else { return };
                if resource == CRD_RESOURCE {
                    next_discovery = next_discovery.min(Instant::now() + REDISCOVERY_DEBOUNCE);
                }
                collector.apply(&resource, event);
            }
            () = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {
                if let Some(task) = collector.queue.pop(Instant::now()) {
                    collector.process(task).await;
                }
            }
            () = sleep_until(next_discovery) => {
                collector.rediscover().await;
                next_discovery = Instant::now() + REDISCOVERY_PERIOD;
            }
            () = sleep_until(started + SYNC_GRACE), if !ready => {}
        }
    }
}

fn spawn_watch(client: &Client, served: &Served, changes: mpsc::Sender<Change>) -> JoinHandle<()> {
    // Each object's metadata without managedFields; the rest of what the watch sends is
    // skipped unread.
    let api: Api<MetadataOnly> = Api::all_with(client.clone(), &served.resource);
    let key = served.key();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if changes.send((key.clone(), event)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, resource = %key, "garbage collector watch failed; it resumes");
                }
            }
        }
    })
}

impl Collector {
    fn push_all(&mut self, tasks: Vec<Task>) {
        for task in tasks {
            self.queue.push(task);
        }
    }

    /// Re-runs discovery: starts watches for new resources, stops those no longer served.
    async fn rediscover(&mut self) {
        let resources = match Resources::discover(&self.client).await {
            Ok(resources) => resources,
            Err(error) => {
                tracing::warn!(%error, "garbage collector discovery failed; it retries");
                return;
            }
        };
        let wanted: HashMap<String, Served> = resources
            .collectable()
            .map(|s| (s.key(), s.clone()))
            .collect();
        let gone: Vec<String> = self
            .watches
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.watches.remove(&key);
            for uid in self.graph.uids_of(&key) {
                let tasks = self.graph.remove(&uid);
                self.push_all(tasks);
            }
            tracing::info!(resource = %key, "garbage collector stops watching a resource no longer served");
        }
        for (key, served) in &wanted {
            if !self.watches.contains_key(key) {
                let task = spawn_watch(&self.client, served, self.changes.clone());
                self.watches.insert(
                    key.clone(),
                    Watch {
                        task,
                        synced: false,
                        listed: false,
                        relist: None,
                    },
                );
            }
        }
        self.resources = resources;
    }

    /// Applies one watch event to the graph and queues the work it causes.
    fn apply(&mut self, resource: &str, event: watcher::Event<MetadataOnly>) {
        let Some(watch) = self.watches.get_mut(resource) else {
            return; // a watch stopped after rediscovery: its last events are stale
        };
        let tasks = match event {
            watcher::Event::Init => {
                watch.relist = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                let Some(node) = Node::from_meta(resource, object.meta()) else {
                    return;
                };
                if let Some(seen) = watch.relist.as_mut() {
                    seen.insert(node.uid.clone());
                }
                self.graph.upsert(node)
            }
            watcher::Event::InitDone => {
                watch.synced = true;
                let relisted = std::mem::replace(&mut watch.listed, true);
                let seen = watch.relist.take().unwrap_or_default();
                // Objects that vanished while the watch was down.
                let vanished: Vec<String> = self
                    .graph
                    .uids_of(resource)
                    .into_iter()
                    .filter(|uid| !seen.contains(uid))
                    .collect();
                let mut tasks: Vec<Task> = vanished
                    .iter()
                    .flat_map(|uid| self.graph.remove(uid))
                    .collect();
                if relisted {
                    // An owner with a uid the graph does not keep (not a canonical uuid)
                    // that vanished unseen shows only in its dependents' check; the others
                    // were removed above with their dependents' checks.
                    let resources = &self.resources;
                    tasks.extend(self.graph.recheck_owned(|owner| {
                        resources
                            .resolve(&owner.api_version, &owner.kind)
                            .is_some_and(|s| s.key() == resource)
                    }));
                }
                tasks
            }
            watcher::Event::Delete(object) => match object.meta().uid.as_deref() {
                Some(uid) => self.graph.remove(uid),
                None => Vec::new(),
            },
        };
        self.push_all(tasks);
    }

    /// Runs one task; a failure is retried with back-off.
    async fn process(&mut self, task: Task) {
        let uid = match &task {
            Task::AttemptDelete(uid) | Task::Orphan(uid) | Task::DeleteDependents(uid) => uid,
        };
        let Some(node) = self.graph.node(uid).cloned() else {
            self.queue.succeeded(&task);
            return;
        };
        let actions = Actions {
            client: &self.client,
            resources: &self.resources,
        };
        let result = match &task {
            Task::AttemptDelete(_) => actions.attempt_delete(&self.graph, &node).await,
            Task::Orphan(_) => actions.orphan(&self.graph, &node).await,
            Task::DeleteDependents(_) => actions.delete_dependents(&self.graph, &node).await,
        };
        match result {
            Ok(more) => {
                self.queue.succeeded(&task);
                self.push_all(more);
            }
            Err(error) => {
                let delay = self.queue.retry(task, Instant::now());
                tracing::info!(%error, object = %node.name, uid = %node.uid, ?delay, "garbage collector task failed; retrying");
            }
        }
    }
}
