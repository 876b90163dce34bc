//! The pods of this node: a watch of the pods bound to it and a relist of the runtime every
//! second (kubelet's PLEG) feed one worker per pod (`worker.rs`), which is told only what
//! changed, so a steady node costs two runtime calls a second and no API writes.
//!
//! - `admission.rs`: kubelet's admission of a new pod (host ports taken: rejected).
//! - `labels.rs`: how runtime objects name their pod; `observed.rs`: what the runtime holds.
//! - `plan.rs`: what to do for a pod, pure; `status.rs`: its status, pure; `backoff.rs`.
//! - `config.rs`: CRI configs; `env.rs`: environments; `volumes.rs`: volumes on the node;
//!   `probes.rs`: startup, liveness and readiness probes (`grpc_probe.rs`: gRPC's health check); `hooks.rs`: postStart and preStop;
//!   `termination.rs`: termination messages; `tmpfs.rs`: memory-backed emptyDirs.

pub mod admission;
pub mod backoff;
pub mod config;
pub mod dns;
pub mod ending;
pub mod env;
mod grpc_probe;
pub mod hooks;
pub mod labels;
pub mod observed;
pub mod plan;
pub mod probes;
pub mod pull_secrets;
pub mod status;
pub mod termination;
pub mod tmpfs;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use observed::{PodRuntime, StatusCache};
use worker::{Message, Shared, Worker};

/// How often the runtime is read back.
const RELIST: Duration = Duration::from_secs(1);

struct Manager {
    shared: Arc<Shared>,
    workers: HashMap<String, mpsc::UnboundedSender<Message>>,
    tasks: JoinSet<String>,
    /// What each pod worker was last told of the runtime.
    told: HashMap<String, PodRuntime>,
    /// The pods the API holds for this node, by uid.
    desired: HashMap<String, Pod>,
    /// Whether the pod watch has delivered its initial list (before, nothing is torn down).
    synced: bool,
    /// Pods seen by the current relist of the watch.
    relisting: Option<Vec<String>>,
    /// Whether the runtime has been read once (before, workers wait: a pod whose containers
    /// run must not look like one that has none).
    relisted: bool,
    /// Workers that have not been told the runtime yet.
    fresh: Vec<String>,
}

impl Manager {
    fn send(&mut self, uid: &str, message: Message) {
        if !self.workers.contains_key(uid) {
            let (inbox, receiver) = mpsc::unbounded_channel();
            let pod = match &message {
                Message::Pod(pod) => Some((**pod).clone()),
                _ => self.desired.get(uid).cloned(),
            };
            let runtime = if self.relisted {
                Some(self.told.get(uid).cloned().unwrap_or_default())
            } else {
                self.fresh.push(uid.to_string());
                None
            };
            let worker = Worker::new(Arc::clone(&self.shared), uid.to_string(), pod, runtime);
            let key = uid.to_string();
            self.tasks.spawn(async move {
                worker.run(receiver).await;
                key
            });
            self.workers.insert(uid.to_string(), inbox);
        }
        if let Some(inbox) = self.workers.get(uid) {
            // A worker that ended has nothing left to do with its pod.
            let _ = inbox.send(message);
        }
    }

    fn on_pod(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relisting = Some(Vec::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(seen) = self.relisting.as_mut() {
                    seen.push(uid.clone());
                }
                // A pod being deleted or finished gives its host ports back now, before any
                // later pod is admitted (kubelet's admission counts active pods only).
                if status::finished_in_api(&pod) || pod.metadata.deletion_timestamp.is_some() {
                    self.shared.host_ports.release(&uid);
                }
                self.desired.insert(uid.clone(), pod.clone());
                self.send(&uid, Message::Pod(Box::new(pod)));
            }
            Event::Delete(pod) => {
                let uid = pod.uid().unwrap_or_default();
                self.shared.host_ports.release(&uid);
                self.desired.remove(&uid);
                if self.workers.contains_key(&uid) {
                    self.send(&uid, Message::Gone);
                }
            }
            Event::InitDone => {
                let seen = self.relisting.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .desired
                    .keys()
                    .filter(|uid| !seen.contains(uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.shared.host_ports.release(&uid);
                    self.desired.remove(&uid);
                    if self.workers.contains_key(&uid) {
                        self.send(&uid, Message::Gone);
                    }
                }
                self.synced = true;
            }
        }
    }

    /// A relist that began at `taken`.
    fn on_relist(&mut self, mut pods: HashMap<String, PodRuntime>, taken: Instant) {
        self.relisted = true;
        for uid in std::mem::take(&mut self.fresh) {
            let runtime = pods.get(&uid).cloned().unwrap_or_default();
            self.send(&uid, Message::Runtime(runtime, taken));
        }
        let known: Vec<String> = self.told.keys().cloned().collect();
        for uid in known {
            pods.entry(uid).or_default();
        }
        for (uid, runtime) in pods {
            if self.told.get(&uid) == Some(&runtime) {
                continue;
            }
            let orphan = !self.desired.contains_key(&uid);
            let empty = runtime == PodRuntime::default();
            if orphan && (!self.synced || empty) && !self.workers.contains_key(&uid) {
                // Not known to be removed yet (the pod list is not in): look again later.
                self.told.remove(&uid);
                continue;
            }
            if empty {
                self.told.remove(&uid);
            } else {
                self.told.insert(uid.clone(), runtime.clone());
            }
            self.send(&uid, Message::Runtime(runtime, taken));
        }
    }
}

/// Runs the pods bound to this node until the future is dropped.
pub async fn run(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node));
    let pods = watcher::watcher(api, config).default_backoff();
    tokio::pin!(pods);
    let mut manager = Manager {
        shared: Arc::clone(&shared),
        workers: HashMap::new(),
        tasks: JoinSet::new(),
        told: HashMap::new(),
        desired: HashMap::new(),
        synced: false,
        relisting: None,
        relisted: false,
        fresh: Vec::new(),
    };
    let mut statuses = StatusCache::default();
    let mut relist = tokio::time::interval(RELIST);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(event) = pods.next() => match event {
                Ok(event) => manager.on_pod(event),
                Err(error) => tracing::debug!(%error, "pod watch"),
            },
            _ = relist.tick() => {
                let taken = Instant::now();
                match observed::observe(shared.runtime.as_ref(), &shared.node, None, &mut statuses).await {
                    Ok(pods) => manager.on_relist(pods, taken),
                    Err(error) => tracing::warn!(%error, "reading the container runtime failed"),
                }
            }
            Some(done) = manager.tasks.join_next(), if !manager.tasks.is_empty() => {
                if let Ok(uid) = done {
                    manager.workers.remove(&uid);
                    manager.told.remove(&uid);
                }
            }
        }
    }
}
