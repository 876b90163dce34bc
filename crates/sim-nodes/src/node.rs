//! The objects of one simulated node, pure: its Node (labels as a kubelet sets them, plus
//! [`SIMULATED`]), its status (Ready, capacity = allocatable), its Lease, and its addresses.
//! Node `i` gets the pod CIDR `10.64.0.0/10`'s `i`-th /24 and the InternalIP `198.18.0.0/15`'s
//! `i`-th address (RFC 2544's benchmarking range): addresses that are written into objects and
//! never used for traffic.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// The label every simulated node carries (value `"true"`); nodes without it are never touched.
pub const SIMULATED: &str = "skiff.dev/simulated";
/// The most nodes one run can simulate (the pod CIDR range holds 16,384 /24s).
pub const MAX_NODES: usize = 16_384;

/// How big each simulated node is.
#[derive(Clone, Debug)]
pub struct Shape {
    /// CPU capacity (a quantity).
    pub cpu: String,
    /// Memory capacity (a quantity).
    pub memory: String,
    /// How many pods it may run.
    pub pods: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
        }
    }
}

/// Node `index`'s pod CIDR.
pub fn pod_cidr(index: usize) -> String {
    format!("10.{}.{}.0/24", 64 + index / 256, index % 256)
}

/// Pod `slot` (0-based) of node `index`: an address of its pod CIDR, .2 to .254, reused in
/// turn.
pub fn pod_ip(index: usize, slot: usize) -> String {
    format!("10.{}.{}.{}", 64 + index / 256, index % 256, 2 + slot % 253)
}

/// Node `index`'s InternalIP.
pub fn node_ip(index: usize) -> String {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let offset = u32::try_from(index).unwrap_or(0);
    Ipv4Addr::from(base + offset + 1).to_string()
}

/// The Node object as registered (without status).
pub fn node(name: &str, index: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "simulated",
                SIMULATED: "true",
            },
        },
        "spec": {"podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)]},
    })
}

/// The Node's status: Ready, with its capacity all allocatable.
pub fn status(name: &str, index: usize, shape: &Shape, now: &str) -> Value {
    let resources = json!({
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": shape.pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "simulated by skiff sim-nodes"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node_ip(index)},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "", "osImage": "skiff simulated node",
            "containerRuntimeVersion": "sim://0", "kubeletVersion": "v1.34.0",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    }})
}

/// The node's Lease in `kube-node-lease`, owned by the Node (so it goes with it), as a kubelet
/// writes it.
pub fn lease(name: &str, node_uid: &str, now: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_should_be_distinct_per_node_and_inside_their_ranges() {
        assert_eq!(pod_cidr(0), "10.64.0.0/24");
        assert_eq!(pod_cidr(300), "10.65.44.0/24");
        assert_eq!(pod_cidr(MAX_NODES - 1), "10.127.255.0/24");
        assert_eq!(pod_ip(300, 0), "10.65.44.2");
        assert_eq!(pod_ip(300, 253), "10.65.44.2");
        assert_eq!(node_ip(0), "198.18.0.1");
        assert_eq!(node_ip(300), "198.18.1.45");
    }

    #[test]
    fn a_simulated_node_should_be_ready_with_its_shape_allocatable() {
        let status = status("sim-1", 1, &Shape::default(), "2026-12-03T00:00:00Z");
        assert_eq!(status["status"]["allocatable"]["pods"], "110");
        assert_eq!(status["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(status["status"]["conditions"][3]["status"], "True");
        assert_eq!(node("sim-1", 1)["metadata"]["labels"][SIMULATED], "true");
    }
}
