//! skiff's service proxy (upstream's kube-proxy in nftables mode), run by every node agent: it
//! watches Services and EndpointSlices and programs one nftables table so that a connection to
//! a ClusterIP, a NodePort (on every node address, 127.0.0.1 included) or a LoadBalancer
//! address reaches one of the Service's endpoints, at random or by client affinity. A kube-rs
//! client of the API like every component; it never reads the store.
//!
//! - [`model`]: a Service and its slices as ports with endpoints (pure).
//! - [`rules`]: those ports as nft commands, and the difference between two versions (pure).
//! - [`nft`]: applying a script.
//!
//! Rules change by difference: only the Services a watch event touched are recomputed and only
//! their chains and map elements rewritten. When the API is unreachable the last rules stay;
//! [`remove`] takes the table away on a clean shutdown (a crash leaves it, and the next start
//! replaces it whole).

pub mod model;
pub mod nft;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use model::SERVICE_NAME_LABEL;
use rules::{Fragment, Layout};

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's name (endpoints on it are local).
    pub node_name: String,
    /// The nftables table (family `ip`) the proxy owns.
    pub table: String,
    /// The cluster's pod CIDR.
    pub cluster_cidr: String,
    /// The pod bridge: packets from it may be sent to loopback endpoints (the API server's and
    /// the cluster DNS's addresses on a one-machine cluster), and NodePorts on 127.0.0.1 may be
    /// sent into it (`route_localnet`).
    pub bridge: Option<String>,
}

/// What a sync did, for the log and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Synced {
    /// Services whose rules were recomputed.
    pub services: usize,
    /// How long computing and applying took.
    pub took: Duration,
}

/// Events touching Service keys, or a full relist having finished (`None`).
type Touch = Option<String>;

/// Runs the proxy until the future is dropped.
pub async fn run(client: Client, options: Options) {
    run_reporting(client, options, |_| {}).await;
}

/// Runs the proxy until the future is dropped, calling `report` after each sync.
pub async fn run_reporting(client: Client, options: Options, report: impl Fn(Synced)) {
    if let Some(bridge) = &options.bridge {
        let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
        if let Err(error) = std::fs::write(&path, "1") {
            tracing::warn!(path, %error, "setting route_localnet failed; loopback endpoints and NodePorts on 127.0.0.1 will not answer");
        }
    }
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (touch, mut touched) = mpsc::unbounded_channel::<Touch>();
    let service_feed = {
        let touch = touch.clone();
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(service_writer)
        .for_each(move |event| {
            send(&touch, event, |s: &Service| {
                Some(model::key(
                    &s.namespace().unwrap_or_default(),
                    &s.name_any(),
                ))
            });
            async {}
        })
    };
    let slice_feed = {
        let touch = touch.clone();
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(slice_writer)
        .for_each(move |event| {
            send(&touch, event, |s: &EndpointSlice| {
                let service = s.labels().get(SERVICE_NAME_LABEL)?;
                Some(model::key(&s.namespace().unwrap_or_default(), service))
            });
            async {}
        })
    };
    let apply = async {
        let layout = Layout {
            table: options.table.clone(),
            cluster_cidr: options.cluster_cidr.clone(),
        };
        let mut proxy = Proxy {
            layout,
            node: options.node_name.clone(),
            applied: HashMap::new(),
            elements: BTreeMap::new(),
            installed: false,
        };
        // Both lists first: rules from half a picture would cut live connections.
        let _ = tokio::join!(services.wait_until_ready(), slices.wait_until_ready());
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut everything = true;
        loop {
            if !everything && dirty.is_empty() {
                match touched.recv().await {
                    Some(Some(key)) => {
                        dirty.insert(key);
                    }
                    Some(None) => everything = true,
                    None => return,
                }
            }
            while let Ok(more) = touched.try_recv() {
                match more {
                    Some(key) => {
                        dirty.insert(key);
                    }
                    None => everything = true,
                }
            }
            if everything {
                dirty.extend(proxy.applied.keys().cloned());
                dirty.extend(
                    services
                        .state()
                        .iter()
                        .map(|s| model::key(&s.namespace().unwrap_or_default(), &s.name_any())),
                );
            }
            let started = Instant::now();
            let count = dirty.len();
            match proxy
                .sync(&services, &slices, std::mem::take(&mut dirty))
                .await
            {
                Ok(()) => report(Synced {
                    services: count,
                    took: started.elapsed(),
                }),
                Err(error) => {
                    tracing::warn!(%error, "programming service rules failed; rewriting the table in a second");
                    proxy.installed = false;
                    everything = true;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            everything = false;
        }
    };
    tokio::join!(service_feed, slice_feed, apply);
}

/// Passes a watch event on as the Service key it touches.
fn send<K>(
    touch: &mpsc::UnboundedSender<Touch>,
    event: Result<watcher::Event<K>, watcher::Error>,
    key: impl Fn(&K) -> Option<String>,
) {
    match event {
        Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
            if let Some(key) = key(&object) {
                let _ = touch.send(Some(key));
            }
        }
        Ok(watcher::Event::InitDone) => {
            let _ = touch.send(None);
        }
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
        Err(error) => tracing::debug!(%error, "service proxy watch"),
    }
}

/// The rules in place and how to change them.
struct Proxy {
    layout: Layout,
    node: String,
    /// Each Service's fragment as applied.
    applied: HashMap<String, Fragment>,
    /// Every map element as applied.
    elements: BTreeMap<(&'static str, String), String>,
    /// Whether the table exists as `applied` says (else the next sync rewrites it whole).
    installed: bool,
}

impl Proxy {
    /// Recomputes the Services in `dirty` and applies the difference (or the whole table).
    async fn sync(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        dirty: BTreeSet<String>,
    ) -> Result<(), nft::NftError> {
        let mut fresh: HashMap<String, Fragment> = HashMap::new();
        if !dirty.is_empty() {
            let all_slices = slices.state();
            for key in &dirty {
                let (namespace, name) = key.split_once('/').unwrap_or_default();
                let Some(service) = services.get(&ObjectRef::new(name).within(namespace)) else {
                    fresh.insert(key.clone(), Fragment::default());
                    continue;
                };
                let own: Vec<&EndpointSlice> = all_slices
                    .iter()
                    .filter(|s| {
                        s.namespace().as_deref() == Some(namespace)
                            && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
                    })
                    .map(AsRef::as_ref)
                    .collect();
                let ports = model::service_ports(&service, &own, &self.node);
                fresh.insert(key.clone(), self.layout.fragment(&ports));
            }
        }
        let mut keys: BTreeSet<&String> = self.applied.keys().collect();
        keys.extend(fresh.keys());
        let current = |key: &String| fresh.get(key).or_else(|| self.applied.get(key));
        let elements = rules::merged(keys.iter().filter_map(|k| current(k)));
        let script = if self.installed {
            let empty = Fragment::default();
            let pairs: Vec<(&Fragment, &Fragment)> = fresh
                .iter()
                .map(|(key, new)| (self.applied.get(key).unwrap_or(&empty), new))
                .filter(|(old, new)| old != new)
                .collect();
            self.layout.changes(&pairs, &self.elements, &elements)
        } else {
            let all: Vec<&Fragment> = keys.iter().filter_map(|k| current(k)).collect();
            self.layout.full(&all)
        };
        if !script.is_empty() {
            nft::apply(&script).await?;
            tracing::debug!(services = fresh.len(), "service rules applied");
        }
        self.elements = elements;
        for (key, fragment) in fresh {
            if fragment == Fragment::default() {
                self.applied.remove(&key);
            } else {
                self.applied.insert(key, fragment);
            }
        }
        self.installed = true;
        Ok(())
    }
}

/// The table name of the proxy of a node whose network objects end in `suffix`.
pub fn table_name(suffix: &str) -> String {
    format!("skiff-proxy-{suffix}")
}

/// Removes the proxy's table (clean shutdown, reset).
pub async fn remove(table: &str) {
    let _ = nft::apply(&format!("table ip {table} {{}}\ndelete table ip {table}\n")).await;
}
