//! The EndpointSlice controller (upstream's `endpointslice-controller`, and its `endpoints`
//! controller's legacy Endpoints object alongside): for every Service with a selector, the pods
//! it selects that have an IP and have not finished become endpoints — `ready` (Ready and not
//! terminating; always with `publishNotReadyAddresses`), `serving` (Ready), `terminating`
//! (being deleted) — with their node, hostname and a reference to the pod. Each Service port's
//! `targetPort` is resolved per pod (a name is looked up among the pod's container ports; a pod
//! without it is left out of that port), pods with the same resolved ports share slices, and a
//! slice holds at most 100 endpoints. Slices are named `<service>-<ports hash>-<n>`, labelled
//! `kubernetes.io/service-name` and owned by the Service, so a pass replaces exactly what it
//! made; Services without a selector are left to their user. Pod events reach the Services
//! that select the pod and, through a cache of the slices, those whose slices list it (a pod
//! relabelled away). Each pass reads the selected pods
//! live, writes only what changed and deletes slices it no longer wants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::owned;
use crate::pods::{is_finished, ready_since};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Upstream's value of [`MANAGED_BY_LABEL`] for its controller.
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice at most (upstream's `--max-endpoints-per-slice`).
const MAX_PER_SLICE: usize = 100;

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

/// Runs the controller until the task is dropped.
pub async fn run(
    client: Client,
    pods: impl futures::Stream<Item = std::sync::Arc<crate::shared_pods::PodSummary>> + Send + 'static,
) {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    // The slices, cached: a pod whose labels no longer match is found through the slice that
    // lists it.
    let (listed, writer) = reflector::store::<EndpointSlice>();
    let feed = watcher(slices.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| std::future::ready(()));
    let controller = Controller::new(services, watcher::Config::default())
        .with_config(owned::controller_config());
    let store = controller.store();
    let work = controller
        .owns(slices, watcher::Config::default())
        // A pod concerns every Service in its namespace that selects it, and those whose
        // slices list it.
        .watches_shared_stream(pods, move |pod| {
            let namespace = pod.namespace().unwrap_or_default();
            let uid = pod.uid();
            let mut refs: std::collections::HashSet<ObjectRef<Service>> = store
                .state()
                .iter()
                .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|s| selector(s).is_some_and(|sel| sel.matches(pod.labels())))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect();
            for slice in listed.state() {
                let lists_it = slice
                    .endpoints
                    .iter()
                    .any(|e| e.target_ref.as_ref().and_then(|t| t.uid.as_ref()) == uid.as_ref());
                if lists_it && let Some(name) = slice.labels().get(SERVICE_NAME_LABEL) {
                    refs.insert(ObjectRef::new(name).within(&namespace));
                }
            }
            refs
        })
        .run(reconcile, owned::retry, Arc::new(client));
    owned::drive(work, feed, "endpointslice").await;
}

/// The Service's selector, if it has one (a Service without is its user's to fill).
fn selector(service: &Service) -> Option<Selector> {
    let labels = service.spec.as_ref()?.selector.clone()?;
    crate::pods::selector(&LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    })
}

/// The port `target` names in `pod`, if it has it.
fn resolve(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(number) => Some(number),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    }
}

/// The endpoint a pod makes, if it makes one: it has an IP and has not finished.
fn endpoint(pod: &Pod, publish_not_ready: bool) -> Option<Endpoint> {
    if is_finished(pod) {
        return None;
    }
    let ip = pod
        .status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())?;
    let spec = pod.spec.as_ref();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = ready_since(pod).is_some();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|_| spec.and_then(|s| s.subdomain.as_ref()).is_some());
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(serving || publish_not_ready),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: spec.and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// The Service's ports as `pod` resolves them (a port it cannot resolve is left out).
fn ports_for(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = resolve(p.target_port.as_ref(), p.port, pod)?;
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// A short stable hash of a port set (FNV-1a), for slice names.
fn ports_hash(ports: &[EndpointPort]) -> String {
    let text = serde_json::to_string(ports).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// The slices the Service should have, by name.
fn desired(service: &Service, pods: &[Pod]) -> BTreeMap<String, EndpointSlice> {
    let name = service.name_any();
    let publish = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    // Endpoints grouped by their resolved ports (serialized, for ordering).
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods {
        let Some(endpoint) = endpoint(pod, publish) else {
            continue;
        };
        let ports = ports_for(service, pod);
        let key = serde_json::to_string(&ports).unwrap_or_default();
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    let mut slices = BTreeMap::new();
    for (ports, mut endpoints) in groups.into_values() {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let hash = ports_hash(&ports);
        for (index, chunk) in endpoints.chunks(MAX_PER_SLICE).enumerate() {
            let slice_name = format!("{name}-{hash}-{index}");
            let slice = EndpointSlice {
                address_type: "IPv4".into(),
                endpoints: chunk.to_vec(),
                ports: Some(ports.clone()),
                metadata: ObjectMeta {
                    name: Some(slice_name.clone()),
                    namespace: service.namespace(),
                    labels: Some(BTreeMap::from([
                        (SERVICE_NAME_LABEL.to_string(), name.clone()),
                        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                    ])),
                    owner_references: Some(vec![owned::controller_reference(service)]),
                    ..ObjectMeta::default()
                },
            };
            slices.insert(slice_name, slice);
        }
    }
    slices
}

/// The legacy Endpoints object of the same endpoints: ready addresses and not-ready ones
/// (terminating pods are in neither), grouped by ports.
fn legacy(service: &Service, slices: &BTreeMap<String, EndpointSlice>) -> Endpoints {
    let mut subsets: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for slice in slices.values() {
        let ports: Vec<CorePort> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| CorePort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port: p.port.unwrap_or_default(),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let subset = subsets.entry(key).or_insert_with(|| EndpointSubset {
            ports: (!ports.is_empty()).then_some(ports),
            ..EndpointSubset::default()
        });
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            if conditions.terminating == Some(true) && conditions.ready != Some(true) {
                continue;
            }
            let address = EndpointAddress {
                ip: endpoint.addresses.first().cloned().unwrap_or_default(),
                hostname: endpoint.hostname.clone(),
                node_name: endpoint.node_name.clone(),
                target_ref: endpoint.target_ref.clone(),
            };
            let list = if conditions.ready == Some(true) {
                subset.addresses.get_or_insert_with(Vec::new)
            } else {
                subset.not_ready_addresses.get_or_insert_with(Vec::new)
            };
            list.push(address);
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_values()
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: Some(service.name_any()),
            namespace: service.namespace(),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                service.name_any(),
            )])),
            owner_references: Some(vec![owned::controller_reference(service)]),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

async fn reconcile(
    service: Arc<Service>,
    client: Arc<Client>,
) -> Result<Action, EndpointSliceError> {
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(selector) = selector(&service) else {
        return Ok(Action::await_change());
    };
    let namespace = service.namespace().unwrap_or_default();
    let client = client.as_ref().clone();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = crate::pods::selected(&pods_api, &selector).await?;
    let wanted = desired(&service, &pods);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let ours = format!(
        "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        service.name_any()
    );
    let existing: BTreeMap<String, EndpointSlice> = slices
        .list(&ListParams::default().labels(&ours))
        .await?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    for (name, slice) in &wanted {
        match existing.get(name) {
            Some(old) if old.endpoints == slice.endpoints && old.ports == slice.ports => {}
            Some(old) => {
                let mut replacement = slice.clone();
                replacement.metadata.resource_version = old.resource_version();
                slices
                    .replace(name, &PostParams::default(), &replacement)
                    .await?;
            }
            None => {
                slices.create(&PostParams::default(), slice).await?;
            }
        }
    }
    let gone: BTreeSet<&String> = existing
        .keys()
        .filter(|n| !wanted.contains_key(*n))
        .collect();
    for name in gone {
        if let Some(slice) = existing.get(name) {
            owned::delete_read(&slices, slice).await?;
        }
    }
    write_legacy(&client, &service, &wanted).await?;
    Ok(Action::await_change())
}

/// Creates or replaces the Service's Endpoints object unless it already says the same.
async fn write_legacy(
    client: &Client,
    service: &Service,
    slices: &BTreeMap<String, EndpointSlice>,
) -> Result<(), kube::Error> {
    let endpoints: Api<Endpoints> =
        Api::namespaced(client.clone(), &service.namespace().unwrap_or_default());
    let mut wanted = legacy(service, slices);
    match endpoints.get_opt(&service.name_any()).await? {
        Some(old) if old.subsets == wanted.subsets => Ok(()),
        Some(old) => {
            wanted.metadata.resource_version = old.resource_version();
            endpoints
                .replace(&service.name_any(), &PostParams::default(), &wanted)
                .await
                .map(drop)
        }
        None => endpoints
            .create(&PostParams::default(), &wanted)
            .await
            .map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ports: serde_json::Value, publish: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "n", "uid": "s"},
            "spec": {"selector": {"app": "web"}, "ports": ports, "publishNotReadyAddresses": publish}
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, extra: serde_json::Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "n", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": port_name, "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        });
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                value["metadata"][k] = v.clone();
            }
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn endpoints_should_carry_readiness_and_named_ports_resolved_per_pod() {
        let svc = service(
            json!([{"name": "http", "port": 80, "targetPort": "web"}]),
            false,
        );
        let pods = [
            pod("a", "10.42.0.2", true, "web", json!({})),
            pod("b", "10.42.0.3", false, "web", json!({})),
            pod(
                "c",
                "10.42.0.4",
                true,
                "web",
                json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
            ),
            pod("d", "10.42.0.5", true, "other", json!({})),
        ];
        let slices = desired(&svc, &pods);
        assert_eq!(slices.len(), 2, "d resolves no port: a slice of its own");
        let full = slices
            .values()
            .find(|s| s.ports.as_ref().is_some_and(|p| !p.is_empty()))
            .unwrap();
        assert_eq!(full.ports.as_ref().unwrap()[0].port, Some(8080));
        let conditions: Vec<(String, bool, bool, bool)> = full
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                (
                    e.addresses[0].clone(),
                    c.ready.unwrap(),
                    c.serving.unwrap(),
                    c.terminating.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            conditions,
            [
                ("10.42.0.2".into(), true, true, false),
                ("10.42.0.3".into(), false, false, false),
                ("10.42.0.4".into(), false, true, true),
            ]
        );
        let legacy = legacy(&svc, &slices);
        let subset = legacy
            .subsets
            .unwrap()
            .into_iter()
            .find(|s| s.ports.is_some())
            .unwrap();
        assert_eq!(subset.addresses.unwrap().len(), 1);
        assert_eq!(
            subset.not_ready_addresses.unwrap().len(),
            1,
            "terminating pods are in neither list"
        );
    }

    #[test]
    fn publish_not_ready_addresses_should_make_every_endpoint_ready_and_slices_hold_100() {
        let svc = service(json!([{"port": 80}]), true);
        let pods: Vec<Pod> = (0..150)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.42.{}.{}", i / 200, i % 200 + 2),
                    false,
                    "x",
                    json!({}),
                )
            })
            .collect();
        let slices = desired(&svc, &pods);
        let sizes: Vec<usize> = slices.values().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 50]);
        assert!(
            slices
                .values()
                .flat_map(|s| &s.endpoints)
                .all(|e| { e.conditions.as_ref().and_then(|c| c.ready) == Some(true) })
        );
    }
}
