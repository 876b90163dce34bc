//! Service ClusterIPs from the service CIDR and NodePorts from 30000–32767. Each allocated value
//! is a key in the store, created with compare-and-swap, so two Services can never get the same
//! one, whichever API server (one etcd) allocates it and across restarts; it is given back when
//! the Service goes or stops using it. (Defaults are each kind's strategy: `crate::strategy`.)

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use serde_json::{Value, json};
use skiff_apimachinery::status::{Cause, Target};
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::StoreError;

use crate::state::ApiState;

/// The service CIDR ClusterIPs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceNetwork {
    base: Ipv4Addr,
    bits: u8,
}

impl Default for ServiceNetwork {
    /// 10.43.0.0/16, as k3s.
    fn default() -> Self {
        ServiceNetwork {
            base: Ipv4Addr::new(10, 43, 0, 0),
            bits: 16,
        }
    }
}

impl ServiceNetwork {
    /// Parses `a.b.c.d/n` (n from 8 to 28).
    pub fn parse(cidr: &str) -> Option<Self> {
        let (address, bits) = cidr.split_once('/')?;
        let bits: u8 = bits.parse().ok().filter(|b| (8..=28).contains(b))?;
        let address: Ipv4Addr = address.parse().ok()?;
        Some(ServiceNetwork {
            base: Ipv4Addr::from(u32::from(address) & Self::mask_of(bits)),
            bits,
        })
    }

    fn mask_of(bits: u8) -> u32 {
        u32::MAX << (32 - u32::from(bits))
    }

    /// Whether `ip` is in it.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.bits) == u32::from(self.base)
    }

    /// The address at `offset` in it.
    pub fn nth(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | (offset & !Self::mask_of(self.bits)))
    }

    /// The `kubernetes` Service's address: the first in the network.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// How many addresses it holds.
    fn size(&self) -> u32 {
        !Self::mask_of(self.bits) + 1
    }
}

impl std::fmt::Display for ServiceNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.bits)
    }
}

/// The NodePort range (upstream's `--service-node-port-range` default).
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

const IP_KEYS: &str = "/registry/skiff/serviceips/";
const PORT_KEYS: &str = "/registry/skiff/servicenodeports/";

/// Pooled values taken for an object being written (given back if the write fails).
#[derive(Default)]
pub struct Allocation(Vec<String>);

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_KEYS}{ip}")
}

fn port_key(port: u16) -> String {
    format!("{PORT_KEYS}{port}")
}

fn is_service(info: &ResourceInfo) -> bool {
    info.kind == "Service" && info.group.is_empty()
}

/// Whether a write of `info` looks at the version it replaces ([`allocate_update`],
/// [`release_replaced`]): a Service's, which keeps or gives back its ClusterIP and NodePorts.
pub fn compares_versions(info: &ResourceInfo) -> bool {
    is_service(info)
}

/// Whether creating `object` takes pooled resources (a Service's ClusterIP or NodePorts).
pub fn allocates(info: &ResourceInfo, object: &Value) -> bool {
    is_service(info) && (wants_cluster_ip(object) || wants_node_ports(object))
}

fn wants_cluster_ip(object: &Value) -> bool {
    let kind = object.pointer("/spec/type").and_then(Value::as_str);
    kind != Some("ExternalName")
        && object.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
}

/// NodePort services, and LoadBalancers unless `allocateLoadBalancerNodePorts` is false.
fn wants_node_ports(object: &Value) -> bool {
    match object.pointer("/spec/type").and_then(Value::as_str) {
        Some("NodePort") => true,
        Some("LoadBalancer") => {
            object.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false))
        }
        _ => false,
    }
}

/// The pool keys `object` holds: its ClusterIP and its NodePorts.
fn keys_of(object: &Value) -> Vec<String> {
    let mut keys: Vec<String> = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .map(ip_key)
        .into_iter()
        .collect();
    for port in ports(object) {
        if let Some(node_port) = port.get("nodePort").and_then(Value::as_u64)
            && let Ok(node_port) = u16::try_from(node_port)
        {
            let key = port_key(node_port);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

fn ports(object: &Value) -> impl Iterator<Item = &Value> {
    object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Reserves one pool key for `owner`; `false` if it is taken.
async fn reserve(state: &ApiState, key: &str, owner: &str) -> Result<bool, StoreError> {
    match state
        .store
        .create(key, owner.as_bytes().to_vec().into())
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// One allocation in progress: what it took so far, given back whole if a step fails.
struct Taking<'a> {
    state: &'a ApiState,
    target: Target,
    owner: String,
    taken: Vec<String>,
}

impl Taking<'_> {
    fn invalid(&self, field: String, message: String) -> ApiError {
        ApiError::Invalid {
            kind: "Service".into(),
            target: self.target.clone(),
            causes: vec![Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field,
            }],
        }
    }

    async fn reserve(&mut self, key: String) -> Result<bool, ApiError> {
        let took = reserve(self.state, &key, &self.owner)
            .await
            .map_err(|e| crate::storage::api_error(e, &self.target))?;
        if took {
            self.taken.push(key);
        }
        Ok(took)
    }

    /// Takes the requested ClusterIP, or a random free one.
    async fn cluster_ip(&mut self, requested: Option<&str>) -> Result<Ipv4Addr, ApiError> {
        let network = self.state.service_network;
        let Some(text) = requested else {
            for _ in 0..256 {
                let bytes = uuid::Uuid::new_v4().into_bytes();
                let offset =
                    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % network.size();
                // Not the network's own address, nor the kubernetes Service's, nor broadcast.
                if offset < 2 || offset == network.size() - 1 {
                    continue;
                }
                let ip = network.nth(offset);
                if self.reserve(ip_key(ip)).await? {
                    return Ok(ip);
                }
            }
            return Err(ApiError::Internal(
                "failed to allocate a service IP: the range is full".into(),
            ));
        };
        let field = "spec.clusterIPs".to_string();
        let value = format!("[]string{{\"{text}\"}}");
        let Ok(ip) = text.parse::<Ipv4Addr>() else {
            return Err(self.invalid(
                field,
                format!("Invalid value: {value}: must be a valid IP address"),
            ));
        };
        if !network.contains(ip) {
            return Err(self.invalid(field, format!(
                "Invalid value: {value}: failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {network}"
            )));
        }
        if !self.reserve(ip_key(ip)).await? {
            return Err(self.invalid(
                field,
                format!(
                    "Invalid value: {value}: failed to allocate IP {text}: provided IP is already allocated"
                ),
            ));
        }
        Ok(ip)
    }

    /// Takes the requested NodePort of port `index`.
    async fn node_port(&mut self, index: usize, port: u64) -> Result<(), ApiError> {
        let field = format!("spec.ports[{index}].nodePort");
        let (start, end) = (NODE_PORTS.start(), NODE_PORTS.end());
        let Some(port) = u16::try_from(port).ok().filter(|p| NODE_PORTS.contains(p)) else {
            return Err(self.invalid(field, format!(
                "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {start}-{end}"
            )));
        };
        if !self.reserve(port_key(port)).await? {
            return Err(self.invalid(
                field,
                format!("Invalid value: {port}: provided port is already allocated"),
            ));
        }
        Ok(())
    }

    /// Takes a random free NodePort.
    async fn any_node_port(&mut self) -> Result<u16, ApiError> {
        let size = NODE_PORTS.end() - NODE_PORTS.start() + 1;
        for _ in 0..512 {
            let bytes = uuid::Uuid::new_v4().into_bytes();
            let port = NODE_PORTS.start() + u16::from_be_bytes([bytes[0], bytes[1]]) % size;
            if self.reserve(port_key(port)).await? {
                return Ok(port);
            }
        }
        Err(ApiError::Internal(
            "failed to allocate a node port: the range is full".into(),
        ))
    }

    async fn give_back(self) {
        release(self.state, Allocation(self.taken)).await;
    }
}

/// Allocates what a new object needs from shared pools: a Service's ClusterIP and NodePorts.
pub async fn allocate(
    state: &ApiState,
    info: &ResourceInfo,
    object: &mut Value,
    name: &str,
) -> Result<Allocation, ApiError> {
    allocate_missing(state, info, object, &Value::Null, name).await
}

/// Allocates what a replacement needs that the object it replaces did not hold (a Service
/// turned NodePort, a port added, a NodePort or ClusterIP asked for by number).
pub async fn allocate_update(
    state: &ApiState,
    info: &ResourceInfo,
    new: &mut Value,
    old: &Value,
) -> Result<Allocation, ApiError> {
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    allocate_missing(state, info, new, old, &name).await
}

async fn allocate_missing(
    state: &ApiState,
    info: &ResourceInfo,
    object: &mut Value,
    old: &Value,
    name: &str,
) -> Result<Allocation, ApiError> {
    if !allocates(info, object) {
        return Ok(Allocation::default());
    }
    let held = keys_of(old);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut taking = Taking {
        state,
        target: Target::new("", "services", name),
        owner: format!("{namespace}/{name}"),
        taken: Vec::new(),
    };
    match fill(&mut taking, object, &held).await {
        Ok(()) => Ok(Allocation(taking.taken)),
        Err(error) => {
            taking.give_back().await;
            Err(error)
        }
    }
}

async fn fill(
    taking: &mut Taking<'_>,
    object: &mut Value,
    held: &[String],
) -> Result<(), ApiError> {
    if wants_cluster_ip(object) {
        let requested = object
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let keep = requested
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .is_some_and(|ip| held.contains(&ip_key(ip)));
        if !keep {
            let ip = taking.cluster_ip(requested.as_deref()).await?;
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("clusterIP".into(), json!(ip.to_string()));
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
            }
        }
    }
    if !wants_node_ports(object) {
        return Ok(());
    }
    let count = object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    // A port number named twice (TCP and UDP of one port) is one NodePort.
    let mut mine: Vec<u64> = Vec::new();
    for index in 0..count {
        let pointer = format!("/spec/ports/{index}/nodePort");
        match object.pointer(&pointer).and_then(Value::as_u64) {
            Some(port) if mine.contains(&port) => {}
            Some(port) => {
                let held_already = u16::try_from(port).is_ok_and(|p| held.contains(&port_key(p)));
                if !held_already {
                    taking.node_port(index, port).await?;
                }
                mine.push(port);
            }
            None => {
                let port = taking.any_node_port().await?;
                if let Some(entry) = object
                    .pointer_mut(&format!("/spec/ports/{index}"))
                    .and_then(Value::as_object_mut)
                {
                    entry.insert("nodePort".into(), json!(port));
                }
                mine.push(u64::from(port));
            }
        }
    }
    Ok(())
}

/// Where Services are stored.
const SERVICES: &str = "/registry/core/services/";
/// How often [`repair`] looks for values no Service holds.
pub const REPAIR_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// Gives back, every [`REPAIR_PERIOD`], the pool values no Service holds (taken by a create
/// that never finished: a server that crashed between taking and storing), as upstream's
/// repair loops do. Runs until the task is dropped; every API server on a store may run one.
pub async fn repair(store: std::sync::Arc<dyn skiff_store::Store>) {
    let mut suspects = std::collections::BTreeMap::new();
    loop {
        tokio::time::sleep(REPAIR_PERIOD).await;
        match sweep(store.as_ref(), &mut suspects).await {
            Ok(0) => {}
            Ok(released) => tracing::warn!(released, "gave back pooled values no Service held"),
            Err(error) => tracing::debug!(%error, "the allocation repair pass failed"),
        }
    }
}

/// One repair pass: a pool key that no Service holds now and held none at the last pass,
/// unchanged since (same revision), is deleted; those unheld for the first time become
/// `suspects`. A create in progress holds its keys for far less than a period. Returns how
/// many were given back.
pub async fn sweep(
    store: &dyn skiff_store::Store,
    suspects: &mut std::collections::BTreeMap<String, skiff_store::Revision>,
) -> Result<usize, StoreError> {
    let range = |prefix: &str| skiff_store::RangeRequest {
        prefix: prefix.to_string(),
        start_after: None,
        limit: None,
        revision: None,
    };
    let services = store.range(range(SERVICES)).await?;
    let held: std::collections::BTreeSet<String> = services
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .flat_map(|service| keys_of(&service))
        .collect();
    let mut unheld = std::collections::BTreeMap::new();
    for prefix in [IP_KEYS, PORT_KEYS] {
        // Read after the Services: a value taken since is held by a create in progress, and
        // at most a suspect.
        for kv in store.range(range(prefix)).await?.kvs {
            if !held.contains(&kv.key) {
                unheld.insert(kv.key, kv.mod_revision);
            }
        }
    }
    let mut released = 0;
    for (key, revision) in &unheld {
        if suspects.get(key) == Some(revision) {
            match store.delete(key, Some(*revision)).await {
                Ok(_) => released += 1,
                Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                Err(other) => return Err(other),
            }
        }
    }
    unheld.retain(|key, revision| suspects.get(key) != Some(revision));
    *suspects = unheld;
    Ok(released)
}

/// Gives back what [`allocate`] took, after a failed write.
pub async fn release(state: &ApiState, allocation: Allocation) {
    for key in allocation.0 {
        if let Err(error) = state.store.delete(&key, None).await {
            tracing::warn!(key, %error, "could not give back a pooled value");
        }
    }
}

fn is_core_service(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Service")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// Gives back the pooled resources of a deleted object.
pub async fn release_for(state: &ApiState, object: &Value) {
    if is_core_service(object) {
        release(state, Allocation(keys_of(object))).await;
    }
}

/// Gives back what `old` held and its replacement `new` no longer does.
pub async fn release_replaced(state: &ApiState, old: &Value, new: &Value) {
    if is_core_service(new) {
        let kept = keys_of(new);
        let dropped = keys_of(old).into_iter().filter(|k| !kept.contains(k));
        release(state, Allocation(dropped.collect())).await;
    }
}

/// Keeps allocated fields across updates that omit them: a Service's ClusterIP, and the
/// NodePort of each port that stays (same port and protocol) while the type still wants one.
/// A Service that stops wanting NodePorts drops them (upstream clears them on a type change).
pub fn keep_allocations(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if !is_service(info) {
        return;
    }
    if wants_cluster_ip(new) {
        for field in ["clusterIP", "clusterIPs"] {
            if let (Some(value), Some(spec)) = (
                old.pointer(&format!("/spec/{field}")).cloned(),
                new.get_mut("spec").and_then(Value::as_object_mut),
            ) {
                spec.insert(field.into(), value);
            }
        }
    }
    let wanted = wants_node_ports(new);
    let old_ports: Vec<Value> = ports(old).cloned().collect();
    let Some(new_ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in new_ports.iter_mut().filter_map(Value::as_object_mut) {
        if !wanted {
            port.remove("nodePort");
            continue;
        }
        if port.contains_key("nodePort") {
            continue;
        }
        let same = |o: &&Value| {
            o.get("port") == port.get("port")
                && o.get("protocol").unwrap_or(&json!("TCP"))
                    == port.get("protocol").unwrap_or(&json!("TCP"))
        };
        if let Some(node_port) = old_ports.iter().find(same).and_then(|o| o.get("nodePort")) {
            port.insert("nodePort".into(), node_port.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_value_no_service_holds_should_be_given_back_on_the_second_pass() {
        use skiff_store::Store;
        let store = skiff_store::memory::MemoryStore::new();
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30080}]}});
        store
            .create(
                &format!("{SERVICES}default/web"),
                service.to_string().into_bytes().into(),
            )
            .await
            .unwrap();
        for key in [
            ip_key(Ipv4Addr::new(10, 43, 0, 9)),
            port_key(30080),
            ip_key(Ipv4Addr::new(10, 43, 0, 66)),
        ] {
            store
                .create(&key, b"default/x".to_vec().into())
                .await
                .unwrap();
        }
        let mut suspects = std::collections::BTreeMap::new();
        assert_eq!(
            sweep(&store, &mut suspects).await.unwrap(),
            0,
            "first seen: a suspect"
        );
        assert_eq!(suspects.len(), 1);
        assert_eq!(
            sweep(&store, &mut suspects).await.unwrap(),
            1,
            "still unheld: given back"
        );
        let left = store
            .range(skiff_store::RangeRequest {
                prefix: IP_KEYS.into(),
                start_after: None,
                limit: None,
                revision: None,
            })
            .await
            .unwrap();
        assert_eq!(left.kvs.len(), 1, "the held ClusterIP stays");
        assert_eq!(sweep(&store, &mut suspects).await.unwrap(), 0);
    }

    fn info() -> ResourceInfo {
        crate::test_support::builtin_info("services")
    }

    #[test]
    fn a_service_network_should_hold_its_addresses() {
        let network = ServiceNetwork::parse("10.245.7.0/16").expect("a network");
        assert_eq!(network.to_string(), "10.245.0.0/16");
        assert_eq!(network.kubernetes_ip(), Ipv4Addr::new(10, 245, 0, 1));
        assert_eq!(network.nth(10), Ipv4Addr::new(10, 245, 0, 10));
        assert!(network.contains(Ipv4Addr::new(10, 245, 255, 1)));
        assert!(!network.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(network.size(), 65536);
        assert!(ServiceNetwork::parse("10.0.0.0/4").is_none());
    }

    #[test]
    fn a_nodeport_should_stay_with_its_port_and_go_with_the_type() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [
            {"port": 80, "protocol": "TCP", "nodePort": 30080},
            {"port": 53, "protocol": "UDP", "nodePort": 30053}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 53, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
        keep_allocations(&info(), &mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30053);
        assert_eq!(new["spec"]["ports"][1]["nodePort"], 30080);
        assert!(new["spec"]["ports"][2].get("nodePort").is_none());
        let mut cluster =
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}});
        keep_allocations(&info(), &mut cluster, &old);
        assert!(cluster["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(
            keys_of(&old),
            vec![
                "/registry/skiff/serviceips/10.43.0.9".to_string(),
                "/registry/skiff/servicenodeports/30080".into(),
                "/registry/skiff/servicenodeports/30053".into()
            ]
        );
    }
}
