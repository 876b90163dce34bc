//! The Node this agent runs: registered under its name with the machine's capacity (minus a
//! reserve), addresses and versions; its Lease in `kube-node-lease` renewed every 10 s; its
//! status written when it changes and otherwise every five minutes (upstream's rhythm), so an
//! idle node writes nothing but its Lease. Its conditions are `health`'s, each with the time it
//! last changed.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::health;
use crate::runtime::Runtime;

/// How often the Lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The Lease's duration.
const LEASE_SECONDS: i32 = 40;
/// How often the status is computed.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How often an unchanged status is written anyway.
const REPORT_EVERY: Duration = Duration::from_secs(300);
/// The version nodes report (the API version skiff serves).
pub const VERSION: &str = "v1.34.0";
/// Pods a node takes (upstream's `maxPods`).
const MAX_PODS: i64 = 110;

/// What the node reports about itself.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Its name.
    pub name: String,
    /// Its address.
    pub ip: String,
    /// The runtime (`containerd://1.6.20`).
    pub runtime_version: String,
    /// The port of the agent's own endpoint (logs, exec).
    pub port: u16,
    /// Extra labels (roles).
    pub labels: Vec<(String, String)>,
    /// The size of the filesystem holding the node's data (its `ephemeral-storage`), bytes.
    pub storage_bytes: Option<u64>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// What the node offers pods of its CPU and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU, millicores.
    pub cpu_milli: u64,
    /// Memory, KiB.
    pub memory_kib: u64,
}

/// The machine less a reserve for the system and the agent itself, as kubelet's
/// system-reserved would be.
pub fn allocatable() -> Allocatable {
    const RESERVED_CPU_MILLI: u64 = 100;
    const RESERVED_MEMORY_KIB: u64 = 256 * 1024;
    Allocatable {
        cpu_milli: (cpus() as u64 * 1000).saturating_sub(RESERVED_CPU_MILLI),
        memory_kib: memory_kib().saturating_sub(RESERVED_MEMORY_KIB),
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn memory_kib() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node object registered at start (its status follows in a second write).
pub fn object(facts: &Facts) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(facts.name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(architecture()));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("beta.kubernetes.io/arch".into(), json!(architecture()));
    for (key, value) in &facts.labels {
        labels.insert(key.clone(), json!(value));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": facts.name, "labels": labels},
        "spec": {},
    })
}

/// When each condition last changed its status: (type, status, since).
#[derive(Debug, Default)]
pub struct Transitions(Vec<(&'static str, &'static str, String)>);

impl Transitions {
    /// When `condition` took its present status, recording `now` if it just did.
    fn since(&mut self, condition: &health::Condition, now: &str) -> String {
        match self.0.iter_mut().find(|(t, _, _)| *t == condition.type_) {
            Some((_, status, since)) => {
                if *status != condition.status {
                    *status = condition.status;
                    *since = now.to_string();
                }
                since.clone()
            }
            None => {
                self.0
                    .push((condition.type_, condition.status, now.to_string()));
                now.to_string()
            }
        }
    }
}

/// The node's status at `now` with `conditions`.
pub fn status(
    facts: &Facts,
    conditions: &[health::Condition],
    transitions: &mut Transitions,
    now: &str,
) -> Value {
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|c| {
            json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message,
                "lastHeartbeatTime": now, "lastTransitionTime": transitions.since(c, now)})
        })
        .collect();
    let cpus = cpus();
    let memory = memory_kib();
    let Allocatable {
        cpu_milli: allocatable_cpu,
        memory_kib: allocatable_memory,
    } = allocatable();
    let mut capacity = json!({"cpu": cpus.to_string(), "memory": format!("{memory}Ki"),
        "pods": MAX_PODS.to_string()});
    let mut allocatable = json!({"cpu": format!("{allocatable_cpu}m"),
        "memory": format!("{allocatable_memory}Ki"), "pods": MAX_PODS.to_string()});
    if let Some(bytes) = facts.storage_bytes {
        // Less kubelet's `nodefs.available<10%` eviction threshold, as its allocatable is.
        capacity["ephemeral-storage"] = json!(bytes.to_string());
        allocatable["ephemeral-storage"] = json!((bytes / 10 * 9).to_string());
    }
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": facts.ip}, {"type": "Hostname", "address": facts.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.port}},
        "nodeInfo": {
            "machineID": read("/etc/machine-id"),
            "systemUUID": read("/sys/class/dmi/id/product_uuid"),
            "bootID": read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": facts.runtime_version,
            "kubeletVersion": VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": architecture(),
        },
    })
}

/// A status as compared between writes: without the heartbeat times.
/// Each condition's type and status.
fn condition_statuses(status: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let text = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (text("type"), text("status"))
        })
        .collect();
    pairs.sort();
    pairs
}

fn without_heartbeats(status: &Value) -> Value {
    let mut status = status.clone();
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions.iter_mut().filter_map(Value::as_object_mut) {
            condition.remove("lastHeartbeatTime");
        }
    }
    status
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Registers the Node (or takes over the one of the same name); returns it.
pub async fn register(client: &Client, facts: &Facts) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(object(facts)).map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(node) => Ok(node),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Registered before (an agent restart): keep the Node, refresh its labels.
            let labels = json!({"metadata": {"labels": object(facts)["metadata"]["labels"]}});
            nodes
                .patch(&facts.name, &PatchParams::default(), &Patch::Merge(&labels))
                .await
        }
        Err(error) => Err(error),
    }
}

/// Waits until the control plane gives the node a pod CIDR; returns it.
pub async fn pod_cidr(client: &Client, name: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        match nodes.get(name).await {
            Ok(node) => {
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    return cidr;
                }
                if !logged {
                    tracing::info!(
                        node = name,
                        "waiting for the control plane to give the node a pod CIDR"
                    );
                    logged = true;
                }
            }
            Err(error) => tracing::debug!(%error, "reading the Node failed"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps the Node's status current and its Lease renewed, until the future is dropped. The
/// conditions come from the machine (the filesystem of `data_dir`) and `runtime`.
pub async fn keep_alive(client: Client, facts: Facts, data_dir: &Path, runtime: &dyn Runtime) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut transitions = Transitions::default();
    let mut settled = health::Settled::default();
    let mut written: Option<(Value, tokio::time::Instant)> = None;
    let mut renew = tokio::time::interval(RENEW_EVERY);
    let mut report = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = renew.tick() => renew_lease(&nodes, &leases, &facts.name).await,
            _ = report.tick() => {
                let measured = health::conditions(&health::sample(data_dir, runtime).await);
                let conditions = settled.settle(measured, std::time::Instant::now());
                let status = status(&facts, &conditions, &mut transitions, &now());
                // Also when the stored conditions say otherwise (the node-lifecycle controller
                // marks a silent node Unknown): as kubelet compares with the Node it reads.
                let stored_differs = match nodes.get_status(&facts.name).await {
                    Ok(node) => condition_statuses(&serde_json::to_value(node.status).unwrap_or_default())
                        != condition_statuses(&status),
                    Err(_) => false,
                };
                let due = stored_differs || written.as_ref().is_none_or(|(last, at)| {
                    without_heartbeats(last) != without_heartbeats(&status) || at.elapsed() >= REPORT_EVERY
                });
                if !due {
                    continue;
                }
                let patch = json!({"status": status});
                match nodes.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => written = Some((status, tokio::time::Instant::now())),
                    Err(error) => tracing::debug!(%error, "writing the node's status failed; retrying"),
                }
            }
        }
    }
}

/// Renews (or creates) the node's Lease, owned by the Node.
async fn renew_lease(nodes: &Api<Node>, leases: &Api<Lease>, name: &str) {
    let renewal = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&renewal))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let Ok(node) = nodes.get(name).await else {
                return;
            };
            let mut lease = renewal;
            lease["metadata"] = json!({"name": name, "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                    "uid": node.uid().unwrap_or_default()}]});
            let Ok(lease) = serde_json::from_value::<Lease>(lease) else {
                return;
            };
            if let Err(error) = leases.create(&PostParams::default(), &lease).await {
                tracing::debug!(%error, "creating the node's Lease failed");
            }
        }
        Err(error) => tracing::debug!(%error, "renewing the node's Lease failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            name: "n1".into(),
            ip: "192.0.2.1".into(),
            runtime_version: "fake://1.0".into(),
            port: 10250,
            labels: Vec::new(),
            storage_bytes: Some(100 << 30),
        }
    }

    fn ready_since(status: &Value) -> (String, String) {
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        (
            ready["status"].as_str().unwrap().to_string(),
            ready["lastTransitionTime"].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn a_condition_should_keep_its_transition_time_until_its_status_changes() {
        let mut healthy = health::Sample::default();
        let mut transitions = Transitions::default();
        let conditions = health::conditions(&healthy);
        let first = status(&facts(), &conditions, &mut transitions, "t1");
        assert_eq!(ready_since(&first), ("True".into(), "t1".into()));
        let again = status(&facts(), &conditions, &mut transitions, "t2");
        assert_eq!(ready_since(&again), ("True".into(), "t1".into()));
        assert_eq!(
            without_heartbeats(&first),
            without_heartbeats(&again),
            "an unchanged status is not written again"
        );
        healthy.runtime_problem = Some("container runtime is down".into());
        let down = health::conditions(&healthy);
        let not_ready = status(&facts(), &down, &mut transitions, "t3");
        assert_eq!(ready_since(&not_ready), ("False".into(), "t3".into()));
    }
}
