//! What the proxy needs to know of a Service: each of its ports with the addresses it answers
//! on and the endpoints it may send to, read from the Service and its EndpointSlices (pure; no
//! IO).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's (or host's) address.
    pub ip: Ipv4Addr,
    /// The port on it.
    pub port: u16,
    /// Whether it runs on this node (for externalTrafficPolicy Local).
    pub local: bool,
}

/// One port of a Service, as the proxy programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port`: unique, and the stem of its chains' names.
    pub id: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: &'static str,
    /// The ClusterIP (none for headless Services).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress addresses and externalIPs, answered at `port`.
    pub external_ips: Vec<Ipv4Addr>,
    /// externalTrafficPolicy Local: outside traffic only to this node's endpoints.
    pub local_only: bool,
    /// sessionAffinity ClientIP: the affinity's timeout in seconds.
    pub affinity: Option<u32>,
    /// The endpoints traffic goes to: the ready ones, or, when none is, the serving ones that
    /// are terminating.
    pub endpoints: Vec<Endpoint>,
}

fn protocol(name: Option<&str>) -> Option<&'static str> {
    match name.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The key of a Service: `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The ports `service` answers on, with their endpoints from `slices` (the Service's own);
/// `node` is this node's name. Headless and ExternalName Services have none.
pub fn service_ports(service: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<ServicePort> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        external_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    external_ips.sort();
    external_ips.dedup();
    let local_only = spec.external_traffic_policy.as_deref() == Some("Local")
        && matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10_800)
    });
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(proto) = protocol(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        if cluster_ip.is_none() && port.node_port.is_none() && external_ips.is_empty() {
            continue;
        }
        ports.push(ServicePort {
            id: format!("{}/{proto}/{number}", key(namespace, name)),
            protocol: proto,
            cluster_ip,
            port: number,
            node_port: port.node_port.and_then(|p| u16::try_from(p).ok()),
            external_ips: external_ips.clone(),
            local_only,
            affinity,
            endpoints: endpoints(slices, port.name.as_deref(), port.protocol.as_deref(), node),
        });
    }
    ports
}

/// The endpoints of the slices' port named `name` (unnamed: `None`).
fn endpoints(
    slices: &[&EndpointSlice],
    name: Option<&str>,
    protocol: Option<&str>,
    node: &str,
) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let wanted = |p: &&k8s_openapi::api::discovery::v1::EndpointPort| {
            p.name.as_deref().unwrap_or_default() == name.unwrap_or_default()
                && p.protocol.as_deref().unwrap_or("TCP") == protocol.unwrap_or("TCP")
        };
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(wanted)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let local = endpoint.node_name.as_deref() == Some(node);
            for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                let found = Endpoint {
                    ip: address,
                    port,
                    local,
                };
                if conditions.ready != Some(false) {
                    ready.push(found);
                } else if conditions.serving == Some(true) && conditions.terminating == Some(true) {
                    terminating.push(found);
                }
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort_by_key(|e| (e.ip, e.port));
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("a slice")
    }

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}}),
        )
        .expect("a service")
    }

    #[test]
    fn ready_endpoints_should_be_used_and_terminating_ones_only_when_none_is_ready() {
        let svc = service(json!({"type": "LoadBalancer", "clusterIP": "10.43.0.7",
            "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}));
        let both = slice(json!([
            {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "a"},
            {"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "b"},
        ]));
        let ports = service_ports(&svc, &[&both], "a");
        assert_eq!(ports.len(), 1);
        let port = &ports[0];
        assert_eq!(port.id, "default/web/tcp/80");
        assert_eq!(port.node_port, Some(30080));
        assert_eq!(port.external_ips, vec![Ipv4Addr::LOCALHOST]);
        assert!(port.local_only);
        assert_eq!(port.affinity, Some(10_800));
        assert_eq!(
            port.endpoints,
            vec![Endpoint {
                ip: Ipv4Addr::new(10, 42, 0, 5),
                port: 8080,
                local: true
            }]
        );
        let draining = slice(json!([
            {"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "b"},
            {"addresses": ["10.42.0.7"], "conditions": {"ready": false, "serving": false}, "nodeName": "b"},
        ]));
        let ports = service_ports(&svc, &[&draining], "a");
        assert_eq!(ports[0].endpoints.len(), 1);
        assert_eq!(ports[0].endpoints[0].ip, Ipv4Addr::new(10, 42, 0, 6));
        assert!(!ports[0].endpoints[0].local);
    }

    #[test]
    fn headless_and_external_name_services_should_have_no_ports() {
        let headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        assert!(service_ports(&headless, &[], "a").is_empty());
        let external = service(json!({"type": "ExternalName", "externalName": "example.org"}));
        assert!(service_ports(&external, &[], "a").is_empty());
    }
}
