//! The answers of the cluster domain, from the Services and EndpointSlices the watches keep
//! (pure; no IO). Names follow upstream's DNS specification for Kubernetes, as CoreDNS answers
//! them:
//! - `<svc>.<ns>.svc.<domain>`: A of the ClusterIP; a headless Service's ready endpoints; an
//!   ExternalName Service's CNAME.
//! - `<host>.<svc>.<ns>.svc.<domain>`: an endpoint of a headless Service by its hostname (a
//!   StatefulSet pod's name) or its dashed address.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV of a named port.
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A of that address.
//! - PTR of ClusterIPs and of named endpoints.
//!
//! Anything else in the domain is NXDOMAIN; names outside it are not ours (forwarded).

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};

/// The TTL of every answer (CoreDNS's default for the cluster domain).
pub const TTL: u32 = 5;
/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a query gets.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// These records.
    Records(Vec<Record>),
    /// The name exists but has no record of the type asked.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The name is not in the cluster's domain: forward it.
    NotOurs,
}

/// What the answers are read from.
#[derive(Clone)]
pub struct Directory {
    /// Every Service.
    pub services: Store<Service>,
    /// Every EndpointSlice.
    pub slices: Store<EndpointSlice>,
    /// The cluster domain, lower case, without the final dot (`cluster.local`).
    pub domain: String,
    /// The cluster's networks (pod and service CIDRs): reverse names in them are ours.
    pub networks: Vec<(Ipv4Addr, u8)>,
}

/// Parses `a.b.c.d/n`.
pub fn network(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, bits) = cidr.split_once('/')?;
    let bits: u8 = bits.parse().ok().filter(|b| *b <= 32)?;
    Some((address.parse().ok()?, bits))
}

fn contains((network, bits): (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    u32::from(network) & mask == u32::from(ip) & mask
}

/// One endpoint of a headless Service.
struct Member {
    ip: Ipv4Addr,
    hostname: Option<String>,
}

impl Directory {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// The ready endpoints of a Service (all of them if it publishes not-ready addresses).
    fn members(&self, service: &Service, namespace: &str, name: &str) -> Vec<Member> {
        let everyone = service
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let mut members = Vec::new();
        for slice in self.slices.state() {
            if slice.metadata.namespace.as_deref() != Some(namespace)
                || slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    != Some(name)
                || slice.address_type != "IPv4"
            {
                continue;
            }
            for endpoint in &slice.endpoints {
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !(ready || everyone) {
                    continue;
                }
                for ip in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                    members.push(Member {
                        ip,
                        hostname: endpoint.hostname.clone(),
                    });
                }
            }
        }
        members.sort_by_key(|m| m.ip);
        members.dedup_by_key(|m| m.ip);
        members
    }

    /// The answer to `name` (lower case, without the final dot) of type `kind`.
    pub fn answer(&self, name: &str, kind: RecordType) -> Answer {
        if let Some(reverse) = name.strip_suffix(".in-addr.arpa") {
            return self.reverse(name, reverse, kind);
        }
        let Some(inside) = strip_domain(name, &self.domain) else {
            return Answer::NotOurs;
        };
        let labels: Vec<&str> = if inside.is_empty() {
            Vec::new()
        } else {
            inside.split('.').collect()
        };
        match labels.as_slice() {
            [] | ["svc"] | ["pod"] => Answer::NoData,
            [address, _namespace, "pod"] => match dashed(address) {
                Some(ip) => only(kind, RecordType::A, || vec![a(name, ip)]),
                None => Answer::NxDomain,
            },
            [namespace, "svc" | "pod"] => {
                let any = self
                    .services
                    .state()
                    .iter()
                    .any(|s| s.metadata.namespace.as_deref() == Some(*namespace));
                if any {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [service, namespace, "svc"] => self.service_answer(name, namespace, service, kind),
            [port, proto, service, namespace, "svc"]
                if port.starts_with('_') && proto.starts_with('_') =>
            {
                self.srv(name, namespace, service, &port[1..], &proto[1..], kind)
            }
            [host, service, namespace, "svc"] => {
                let Some(svc) = self.service(namespace, service) else {
                    return Answer::NxDomain;
                };
                let found: Vec<Record> = self
                    .members(&svc, namespace, service)
                    .into_iter()
                    .filter(|m| member_label(m) == *host || dashed(host) == Some(m.ip))
                    .map(|m| a(name, m.ip))
                    .collect();
                if found.is_empty() {
                    Answer::NxDomain
                } else {
                    only(kind, RecordType::A, || found)
                }
            }
            _ => Answer::NxDomain,
        }
    }

    fn service_answer(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        kind: RecordType,
    ) -> Answer {
        let Some(svc) = self.service(namespace, service) else {
            return Answer::NxDomain;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            let Some(target) = spec.external_name.as_deref().and_then(fqdn) else {
                return Answer::NxDomain;
            };
            return Answer::Records(vec![record(name, RData::CNAME(CNAME(target)))]);
        }
        if kind == RecordType::SRV {
            let mut records = Vec::new();
            for port in spec.ports.iter().flatten() {
                if let Some(port_name) = &port.name {
                    let proto = port.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                    if let Answer::Records(found) =
                        self.srv(name, namespace, service, port_name, &proto, kind)
                    {
                        records.extend(found);
                    }
                }
            }
            return if records.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(records)
            };
        }
        match spec.cluster_ip.as_deref().map(Ipv4Addr::from_str) {
            Some(Ok(ip)) => only(kind, RecordType::A, || vec![a(name, ip)]),
            _ => {
                let members = self.members(&svc, namespace, service);
                if members.is_empty() {
                    return Answer::NoData;
                }
                only(kind, RecordType::A, || {
                    members.iter().map(|m| a(name, m.ip)).collect()
                })
            }
        }
    }

    fn srv(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        port_name: &str,
        proto: &str,
        kind: RecordType,
    ) -> Answer {
        let Some(svc) = self.service(namespace, service) else {
            return Answer::NxDomain;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let Some(port) = spec.ports.iter().flatten().find(|p| {
            p.name.as_deref() == Some(port_name)
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(proto)
        }) else {
            return Answer::NxDomain;
        };
        if kind != RecordType::SRV && kind != RecordType::ANY {
            return Answer::NoData;
        }
        let base = format!("{service}.{namespace}.svc.{}", self.domain);
        let targets: Vec<(String, u16)> =
            if spec.cluster_ip.as_deref().is_some_and(|ip| ip != "None") {
                vec![(base, u16::try_from(port.port).unwrap_or_default())]
            } else {
                // A headless Service: each endpoint at the port its slice names.
                let target_port = match &port.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => *p,
                    _ => port.port,
                };
                self.members(&svc, namespace, service)
                    .iter()
                    .map(|m| {
                        (
                            format!("{}.{base}", member_label(m)),
                            u16::try_from(target_port).unwrap_or_default(),
                        )
                    })
                    .collect()
            };
        if targets.is_empty() {
            return Answer::NoData;
        }
        let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
        Answer::Records(
            targets
                .into_iter()
                .filter_map(|(target, port)| {
                    Some(record(
                        name,
                        RData::SRV(SRV::new(0, weight, port, fqdn(&target)?)),
                    ))
                })
                .collect(),
        )
    }

    fn reverse(&self, name: &str, reverse: &str, kind: RecordType) -> Answer {
        let octets: Vec<u8> = reverse
            .split('.')
            .rev()
            .filter_map(|o| o.parse().ok())
            .collect();
        let [a1, a2, a3, a4] = octets.as_slice() else {
            return Answer::NotOurs;
        };
        let ip = Ipv4Addr::new(*a1, *a2, *a3, *a4);
        let text = ip.to_string();
        for svc in self.services.state() {
            let spec = svc.spec.as_ref();
            if spec.and_then(|s| s.cluster_ip.as_deref()) == Some(text.as_str()) {
                let target = format!(
                    "{}.{}.svc.{}",
                    svc.metadata.name.as_deref().unwrap_or_default(),
                    svc.metadata.namespace.as_deref().unwrap_or_default(),
                    self.domain
                );
                return ptr(name, &target, kind);
            }
        }
        for slice in self.slices.state() {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if let Some(host) = &endpoint.hostname
                    && endpoint.addresses.contains(&text)
                {
                    let target = format!(
                        "{host}.{service}.{}.svc.{}",
                        slice.metadata.namespace.as_deref().unwrap_or_default(),
                        self.domain
                    );
                    return ptr(name, &target, kind);
                }
            }
        }
        if self.networks.iter().any(|n| contains(*n, ip)) {
            Answer::NxDomain
        } else {
            Answer::NotOurs
        }
    }
}

/// The part of `name` before `.domain` (empty for the domain itself); `None` outside it.
fn strip_domain<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

/// `10-42-0-5` as an address.
fn dashed(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

fn member_label(member: &Member) -> String {
    member
        .hostname
        .clone()
        .unwrap_or_else(|| member.ip.to_string().replace('.', "-"))
}

fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn record(name: &str, data: RData) -> Record {
    Record::from_rdata(fqdn(name).unwrap_or_else(Name::root), TTL, data)
}

fn a(name: &str, ip: Ipv4Addr) -> Record {
    record(name, RData::A(A(ip)))
}

fn ptr(name: &str, target: &str, kind: RecordType) -> Answer {
    match fqdn(target) {
        Some(target) => only(kind, RecordType::PTR, || {
            vec![record(name, RData::PTR(PTR(target)))]
        }),
        None => Answer::NxDomain,
    }
}

/// `records` when the query asks for `offered` (or ANY); else the name exists without data.
fn only(kind: RecordType, offered: RecordType, records: impl FnOnce() -> Vec<Record>) -> Answer {
    if kind == offered || kind == RecordType::ANY {
        Answer::Records(records())
    } else {
        Answer::NoData
    }
}

/// The zone's SOA record, sent with NXDOMAIN and empty answers.
pub fn soa(domain: &str) -> Record {
    let mname = fqdn(&format!("ns.dns.{domain}")).unwrap_or_else(Name::root);
    let rname = fqdn(&format!("hostmaster.{domain}")).unwrap_or_else(Name::root);
    Record::from_rdata(
        fqdn(domain).unwrap_or_else(Name::root),
        TTL,
        RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL)),
    )
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;

    fn directory() -> Directory {
        let (services, mut service_writer) = reflector::store::<Service>();
        let (slices, mut slice_writer) = reflector::store::<EndpointSlice>();
        let service = |value: serde_json::Value| -> Service {
            serde_json::from_value(value).expect("a service")
        };
        for svc in [
            service(
                json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.7",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            ),
            service(
                json!({"metadata": {"name": "db", "namespace": "data"}, "spec": {"clusterIP": "None",
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
            ),
            service(
                json!({"metadata": {"name": "out", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "example.org"}}),
            ),
        ] {
            service_writer.apply_watcher_event(&Event::Apply(svc));
        }
        let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-x", "namespace": "data", "labels": {SERVICE_NAME_LABEL: "db"}},
        "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "hostname": "db-1", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.9"], "hostname": "db-2", "conditions": {"ready": false}},
        ]}))
        .expect("a slice");
        slice_writer.apply_watcher_event(&Event::Apply(slice));
        Directory {
            services,
            slices,
            domain: "cluster.local".into(),
            networks: vec![network("10.42.0.0/16").expect("a cidr")],
        }
    }

    fn addresses(answer: Answer) -> Vec<String> {
        match answer {
            Answer::Records(records) => records.iter().map(|r| r.data.to_string()).collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn a_service_should_resolve_to_its_cluster_ip_and_headless_to_ready_pods() {
        let dir = directory();
        assert_eq!(
            addresses(dir.answer("web.default.svc.cluster.local", RecordType::A)),
            vec!["10.43.0.7"]
        );
        assert_eq!(
            dir.answer("web.default.svc.cluster.local", RecordType::AAAA),
            Answer::NoData
        );
        assert_eq!(
            addresses(dir.answer("db.data.svc.cluster.local", RecordType::A)),
            vec!["10.42.0.5", "10.42.0.6"]
        );
        assert_eq!(
            addresses(dir.answer("db-1.db.data.svc.cluster.local", RecordType::A)),
            vec!["10.42.0.6"]
        );
        assert_eq!(
            addresses(dir.answer("10-42-0-5.db.data.svc.cluster.local", RecordType::A)),
            vec!["10.42.0.5"]
        );
        assert_eq!(
            addresses(dir.answer("10-1-2-3.default.pod.cluster.local", RecordType::A)),
            vec!["10.1.2.3"]
        );
        assert_eq!(
            addresses(dir.answer("out.default.svc.cluster.local", RecordType::A)),
            vec!["example.org."]
        );
    }

    #[test]
    fn unknown_names_in_the_domain_should_be_nxdomain_and_others_forwarded() {
        let dir = directory();
        assert_eq!(
            dir.answer("nope.default.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            dir.answer(
                "web.default.svc.cluster.local.default.svc.cluster.local",
                RecordType::A
            ),
            Answer::NxDomain
        );
        assert_eq!(
            dir.answer("db-2.db.data.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(dir.answer("example.org", RecordType::A), Answer::NotOurs);
        assert_eq!(dir.answer("cluster.local", RecordType::A), Answer::NoData);
    }

    #[test]
    fn srv_and_ptr_should_name_ports_and_addresses() {
        let dir = directory();
        assert_eq!(
            addresses(dir.answer("_http._tcp.web.default.svc.cluster.local", RecordType::SRV)),
            vec!["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            addresses(dir.answer("_pg._tcp.db.data.svc.cluster.local", RecordType::SRV)),
            vec![
                "0 50 5432 db-0.db.data.svc.cluster.local.",
                "0 50 5432 db-1.db.data.svc.cluster.local."
            ]
        );
        assert_eq!(
            addresses(dir.answer("7.0.43.10.in-addr.arpa", RecordType::PTR)),
            vec!["web.default.svc.cluster.local."]
        );
        assert_eq!(
            addresses(dir.answer("6.0.42.10.in-addr.arpa", RecordType::PTR)),
            vec!["db-1.db.data.svc.cluster.local."]
        );
        assert_eq!(
            dir.answer("99.0.42.10.in-addr.arpa", RecordType::PTR),
            Answer::NxDomain
        );
        assert_eq!(
            dir.answer("1.1.168.192.in-addr.arpa", RecordType::PTR),
            Answer::NotOurs
        );
    }
}
