//! The built-in load balancer (as k3s's ServiceLB): every Service of type LoadBalancer without a
//! `loadBalancerClass` is published at its nodes' own addresses, in
//! `status.loadBalancer.ingress`; each node agent's proxy answers on those addresses at the
//! Service's ports. A single machine so gets a working LoadBalancer. A Service that stops being
//! a LoadBalancer loses its ingress.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_client::lean::WatchedNode;

/// The field manager of the status it writes.
const MANAGER: &str = "service-lb-controller";

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ServiceLbError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
    /// Every address a Ready node publishes: read by the passes of LoadBalancer Services alone.
    published: Arc<Mutex<Published>>,
}

/// Publishes LoadBalancer Services at their nodes' addresses until the task is dropped.
pub async fn run(client: Client) {
    // Every Service is looked at again only when the addresses the nodes publish change (a
    // node's Ready flips, one joins or goes), not on every node status write. Each node event
    // costs the node's own addresses, not a pass over every node: at 5,000 nodes joining, a
    // sort of every node's addresses per event took half the server's CPU and, since every
    // controller then shared one task, held the others' watches unread for seconds. The list of
    // every address is built by passes of LoadBalancer Services only, not on each change (one
    // per joining node). Nodes are not kept, only their addresses: a whole Node each cost ~20 KiB.
    let published = Arc::new(Mutex::new(Published::default()));
    let applied = Arc::clone(&published);
    let node_changes = watcher(
        Api::<WatchedNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(move |event| {
        let changed = event.is_ok_and(|event| lock(&applied).apply(&event));
        async move { changed.then_some(()) }
    });
    let services: Api<Service> = Api::all(client.clone());
    let context = Arc::new(Context { client, published });
    Controller::new(services, watcher::Config::default())
        .reconcile_all_on(node_changes)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "service load balancer");
            }
        })
        .await;
}

fn error_policy(service: Arc<Service>, error: &ServiceLbError, _: Arc<Context>) -> Action {
    tracing::warn!(service = %service.name_any(), %error, "publishing a load balancer failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The addresses a Ready node is reached at from outside: its ExternalIPs, else its
/// InternalIPs.
fn node_addresses(node: &Node) -> Vec<String> {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return Vec::new();
    }
    let addresses = status.and_then(|s| s.addresses.clone()).unwrap_or_default();
    let of = |kind: &str| -> Vec<String> {
        addresses
            .iter()
            .filter(|a| a.type_ == kind)
            .map(|a| a.address.clone())
            .collect()
    };
    let external = of("ExternalIP");
    if external.is_empty() {
        of("InternalIP")
    } else {
        external
    }
}

/// The addresses every node publishes, kept up to date from the node watch's events.
#[derive(Default)]
struct Published {
    current: Addresses,
    /// Filled by a (re)list until it is done, then it replaces `current`.
    relist: Option<Addresses>,
}

impl Published {
    /// Applies a node watch event; returns whether the set of published addresses changed.
    fn apply(&mut self, event: &watcher::Event<WatchedNode>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(Addresses::default());
                false
            }
            watcher::Event::InitApply(node) => {
                if let Some(relist) = self.relist.as_mut() {
                    relist.set(&node.name_any(), node_addresses(&node.node));
                }
                false
            }
            watcher::Event::InitDone => match self.relist.take() {
                Some(listed) => {
                    let changed = !listed.count.keys().eq(self.current.count.keys());
                    self.current = listed;
                    changed
                }
                None => false,
            },
            watcher::Event::Apply(node) => self
                .current
                .set(&node.name_any(), node_addresses(&node.node)),
            watcher::Event::Delete(node) => self.current.set(&node.name_any(), Vec::new()),
        }
    }
}

impl Published {
    /// Every published address, sorted, once each.
    fn addresses(&self) -> Vec<String> {
        self.current.count.keys().cloned().collect()
    }
}

/// Each node's published addresses, and how many nodes publish each address.
#[derive(Default)]
struct Addresses {
    by_node: HashMap<String, Vec<String>>,
    count: BTreeMap<String, usize>,
}

impl Addresses {
    /// Records what the node `name` publishes now; returns whether an address appeared or
    /// disappeared from the whole set.
    fn set(&mut self, name: &str, mut addresses: Vec<String>) -> bool {
        addresses.sort();
        addresses.dedup();
        if self.by_node.get(name).map_or(&[][..], Vec::as_slice) == addresses.as_slice() {
            return false;
        }
        let mut changed = false;
        for address in self.by_node.remove(name).unwrap_or_default() {
            if let Some(count) = self.count.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    self.count.remove(&address);
                    changed = true;
                }
            }
        }
        for address in &addresses {
            let count = self.count.entry(address.clone()).or_insert(0);
            *count += 1;
            changed |= *count == 1;
        }
        if !addresses.is_empty() {
            self.by_node.insert(name.to_string(), addresses);
        }
        changed
    }
}

/// The published addresses under their lock; a poisoned lock is read as it is (`apply` does
/// not panic, and at worst an address would stay published until the next relist).
fn lock(published: &Mutex<Published>) -> std::sync::MutexGuard<'_, Published> {
    published
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The ingress `service` should publish, given the addresses the cluster's Ready nodes publish
/// (sorted, once each; asked for only for a LoadBalancer, as building them is a pass over every
/// address); `None` when the Service is not this controller's to publish.
fn desired_ingress(service: &Service, addresses: impl FnOnce() -> Vec<String>) -> Option<Value> {
    let spec = service.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Some(json!([]));
    }
    Some(Value::Array(
        addresses()
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect(),
    ))
}

async fn reconcile(service: Arc<Service>, context: Arc<Context>) -> Result<Action, ServiceLbError> {
    let addresses = || lock(&context.published).addresses();
    let Some(wanted) = desired_ingress(&service, addresses) else {
        return Ok(Action::await_change());
    };
    let current = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| serde_json::to_value(i).unwrap_or_default())
        .unwrap_or(json!([]));
    if current == wanted {
        return Ok(Action::await_change());
    }
    let ingress = if wanted == json!([]) {
        Value::Null
    } else {
        wanted
    };
    let services: Api<Service> = Api::namespaced(
        context.client.clone(),
        &service.namespace().unwrap_or_default(),
    );
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    match services
        .patch_status(
            &service.name_any(),
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => tracing::info!(service = %service.name_any(), "load balancer ingress written"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_named(name: &str, ip: &str, ready: &str) -> WatchedNode {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}]}}))
            .expect("a node")
    }

    #[test]
    fn published_addresses_should_change_only_when_a_node_adds_or_removes_one() {
        let mut published = Published::default();
        assert!(!published.apply(&watcher::Event::Init));
        assert!(!published.apply(&watcher::Event::InitApply(node_named(
            "a", "10.0.0.1", "True"
        ))));
        assert!(published.apply(&watcher::Event::InitDone));
        // The same addresses again (a status write): nothing to do.
        assert!(!published.apply(&watcher::Event::Apply(node_named("a", "10.0.0.1", "True"))));
        // A second node at the same address adds nothing; a new address does.
        assert!(!published.apply(&watcher::Event::Apply(node_named("b", "10.0.0.1", "True"))));
        assert!(published.apply(&watcher::Event::Apply(node_named("c", "10.0.0.3", "True"))));
        // The address stays while another Ready node still publishes it.
        assert!(!published.apply(&watcher::Event::Apply(node_named("a", "10.0.0.1", "False"))));
        assert!(published.apply(&watcher::Event::Delete(node_named("b", "10.0.0.1", "True"))));
        assert!(published.apply(&watcher::Event::Apply(node_named("a", "10.0.0.1", "True"))));
        // A relist that finds the same addresses changes nothing; one that misses a node does.
        assert!(!published.apply(&watcher::Event::Init));
        assert!(!published.apply(&watcher::Event::InitApply(node_named(
            "a", "10.0.0.1", "True"
        ))));
        assert!(!published.apply(&watcher::Event::InitApply(node_named(
            "c", "10.0.0.3", "True"
        ))));
        assert!(!published.apply(&watcher::Event::InitDone));
        assert!(!published.apply(&watcher::Event::Init));
        assert!(!published.apply(&watcher::Event::InitApply(node_named(
            "c", "10.0.0.3", "True"
        ))));
        assert!(published.apply(&watcher::Event::InitDone));
        let addresses: Vec<&String> = published.current.count.keys().collect();
        assert_eq!(addresses, ["10.0.0.3"]);
    }

    #[test]
    fn a_load_balancer_should_be_published_at_every_ready_nodes_address() {
        let lb: Service = serde_json::from_value(
            json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"}}),
        )
        .expect("a service");
        let mut published = Published::default();
        for (ip, ready) in [
            ("10.0.0.2", "True"),
            ("10.0.0.1", "True"),
            ("10.0.0.3", "False"),
        ] {
            published.apply(&watcher::Event::Apply(node_named(ip, ip, ready)));
        }
        let nodes = published.addresses();
        assert_eq!(
            desired_ingress(&lb, || nodes.clone()),
            Some(json!([{"ip": "10.0.0.1", "ipMode": "VIP"}, {"ip": "10.0.0.2", "ipMode": "VIP"}]))
        );
        let cluster: Service =
            serde_json::from_value(json!({"spec": {"type": "ClusterIP"}})).expect("a service");
        // Only a LoadBalancer's pass builds the list of every address.
        let unread = || -> Vec<String> { panic!("addresses built for a Service that needs none") };
        assert_eq!(desired_ingress(&cluster, unread), Some(json!([])));
        let other: Service = serde_json::from_value(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "x/y"}}),
        )
        .expect("a service");
        assert_eq!(desired_ingress(&other, unread), None);
    }
}
