//! The built-in load balancer (as k3s's ServiceLB): every Service of type LoadBalancer without a
//! `loadBalancerClass` is published at its nodes' own addresses, in
//! `status.loadBalancer.ingress`; each node agent's proxy answers on those addresses at the
//! Service's ports. A single machine so gets a working LoadBalancer. A Service that stops being
//! a LoadBalancer loses its ingress.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

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
    nodes: Store<Node>,
}

/// Publishes LoadBalancer Services at their nodes' addresses until the task is dropped.
pub async fn run(client: Client) {
    let (nodes, writer) = reflector::store();
    // Every Service is looked at again only when the addresses the nodes publish change (a
    // node's Ready flips, one joins or goes), not on every node status write.
    let published = nodes.clone();
    let mut last: Vec<String> = Vec::new();
    let node_changes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .filter_map(move |node| {
            let now = node.is_ok().then(|| ingress_addresses(&published.state()));
            let changed = now.filter(|now| *now != last);
            if let Some(now) = &changed {
                last = now.clone();
            }
            async move { changed.map(|_| ()) }
        });
    let services: Api<Service> = Api::all(client.clone());
    let context = Arc::new(Context { client, nodes });
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

/// Every Ready node's published addresses, sorted, once each.
fn ingress_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut addresses: Vec<String> = nodes.iter().flat_map(|n| node_addresses(n)).collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The ingress `service` should publish, given the cluster's nodes; `None` when the Service is
/// not this controller's to publish.
pub fn desired_ingress(service: &Service, nodes: &[Arc<Node>]) -> Option<Value> {
    let spec = service.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Some(json!([]));
    }
    Some(Value::Array(
        ingress_addresses(nodes)
            .into_iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect(),
    ))
}

async fn reconcile(service: Arc<Service>, context: Arc<Context>) -> Result<Action, ServiceLbError> {
    let Some(wanted) = desired_ingress(&service, &context.nodes.state()) else {
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

    fn node(ip: &str, ready: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": ip}, "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}]}}))
            .expect("a node"),
        )
    }

    #[test]
    fn a_load_balancer_should_be_published_at_every_ready_nodes_address() {
        let lb: Service = serde_json::from_value(
            json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"}}),
        )
        .expect("a service");
        let nodes = [
            node("10.0.0.2", "True"),
            node("10.0.0.1", "True"),
            node("10.0.0.3", "False"),
        ];
        assert_eq!(
            desired_ingress(&lb, &nodes),
            Some(json!([{"ip": "10.0.0.1", "ipMode": "VIP"}, {"ip": "10.0.0.2", "ipMode": "VIP"}]))
        );
        let cluster: Service =
            serde_json::from_value(json!({"spec": {"type": "ClusterIP"}})).expect("a service");
        assert_eq!(desired_ingress(&cluster, &nodes), Some(json!([])));
        let other: Service = serde_json::from_value(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "x/y"}}),
        )
        .expect("a service");
        assert_eq!(desired_ingress(&other, &nodes), None);
    }
}
