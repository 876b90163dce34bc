//! What a pod requests and what a node offers, in milli-units (see [`crate::quantity`]). A pod's
//! requests follow upstream's `PodRequests`: the larger of its app containers' sum and each
//! init container's peak (restartable "sidecar" init containers keep running, so they add to
//! both), plus the pod's overhead; pod-level `spec.resources.requests` replace the containers'
//! figures for the resources they name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// CPU a container without a CPU request counts as when scoring (upstream's
/// `DefaultMilliCPURequest`), in milli-CPU.
pub const DEFAULT_MILLI_CPU: i128 = 100;
/// Memory a container without a memory request counts as when scoring (200 MiB), in
/// milli-bytes.
pub const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024 * 1000;

/// An amount of every resource, in milli-units; resources not named are zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources(pub BTreeMap<String, i128>);

impl Resources {
    /// The amount of `name` (zero when absent).
    pub fn get(&self, name: &str) -> i128 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Resources) {
        for (name, amount) in &other.0 {
            *self.0.entry(name.clone()).or_insert(0) += amount;
        }
    }

    /// Subtracts `other` from these.
    pub fn subtract(&mut self, other: &Resources) {
        for (name, amount) in &other.0 {
            *self.0.entry(name.clone()).or_insert(0) -= amount;
        }
    }

    /// Raises each resource to at least `other`'s amount.
    fn max_with(&mut self, other: &Resources) {
        for (name, amount) in &other.0 {
            let entry = self.0.entry(name.clone()).or_insert(0);
            *entry = (*entry).max(*amount);
        }
    }

    /// Reads a Kubernetes resource list; unparsable and negative quantities count as zero (the
    /// API server refuses them on write, so they only come from a server that does not).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        Resources(
            list.into_iter()
                .flatten()
                .map(|(name, q)| (name.clone(), quantity::milli(&q.0).unwrap_or(0).max(0)))
                .collect(),
        )
    }
}

/// One container's requests; `defaults` fills in upstream's non-zero CPU and memory for
/// scoring.
fn container_requests(container: &Container, defaults: bool) -> Resources {
    let mut requests = Resources::from_list(
        container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()),
    );
    if defaults {
        requests.0.entry("cpu".into()).or_insert(DEFAULT_MILLI_CPU);
        requests.0.entry("memory".into()).or_insert(DEFAULT_MEMORY);
    }
    requests
}

/// What `pod` requests; with `defaults`, containers without CPU or memory requests count as
/// upstream's defaults (for scoring, never for fitting).
pub fn pod_requests(pod: &Pod, defaults: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = Resources::default();
    for container in &spec.containers {
        total.add(&container_requests(container, defaults));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for container in spec.init_containers.iter().flatten() {
        let requests = container_requests(container, defaults);
        let running = if container.restart_policy.as_deref() == Some("Always") {
            total.add(&requests);
            sidecars.add(&requests);
            sidecars.clone()
        } else {
            let mut running = requests;
            running.add(&sidecars);
            running
        };
        init_peak.max_with(&running);
    }
    total.max_with(&init_peak);
    let pod_level = Resources::from_list(spec.resources.as_ref().and_then(|r| r.requests.as_ref()));
    for (name, amount) in pod_level.0 {
        if name == "cpu" || name == "memory" {
            total.0.insert(name, amount);
        }
    }
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total
}

/// What `node` offers pods: `status.allocatable`, or its capacity when it reports none.
pub fn allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    Resources::from_list(list)
}

/// A resource amount as a person reads it: CPUs as cores, byte resources in binary units,
/// counts plainly.
pub fn describe(name: &str, milli: i128) -> String {
    match name {
        "cpu" => {
            let cores = milli as f64 / 1000.0;
            let unit = if (cores - 1.0).abs() < f64::EPSILON {
                "CPU"
            } else {
                "CPUs"
            };
            format!("{} {unit}", trim(cores))
        }
        "memory" | "ephemeral-storage" => bytes(milli / 1000),
        _ if name.starts_with("hugepages-") => bytes(milli / 1000),
        _ => trim(milli as f64 / 1000.0),
    }
}

/// `bytes` in the largest binary unit that keeps it at least 1.
fn bytes(bytes: i128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", trim(value), units[unit])
}

/// A number with at most two decimals and no trailing zeros.
fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn pod_requests_should_take_the_larger_of_containers_and_init_containers_plus_overhead() {
        let pod = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m"}}},
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "2", "memory": "100Mi"}}},
            ],
            "overhead": {"cpu": "100m"},
        }));
        let requests = pod_requests(&pod, false);
        assert_eq!(requests.get("cpu"), 2100);
        assert_eq!(requests.get("memory"), 1024 * 1024 * 1024 * 1000);
    }

    #[test]
    fn sidecar_init_containers_should_add_to_the_running_sum() {
        let pod = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
                {"name": "i", "resources": {"requests": {"cpu": "1500m"}}},
            ],
        }));
        // Running: 1 + 1 (sidecar); while `i` runs: 1.5 + 1 (sidecar) = 2.5.
        assert_eq!(pod_requests(&pod, false).get("cpu"), 2500);
    }

    #[test]
    fn scoring_should_count_containers_without_requests_as_upstreams_defaults() {
        let pod = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
        assert_eq!(pod_requests(&pod, false).get("cpu"), 0);
        assert_eq!(pod_requests(&pod, true).get("cpu"), 200);
        assert_eq!(pod_requests(&pod, true).get("memory"), 2 * DEFAULT_MEMORY);
    }

    #[test]
    fn amounts_should_read_as_a_person_writes_them() {
        assert_eq!(describe("cpu", 4000), "4 CPUs");
        assert_eq!(describe("cpu", 1500), "1.5 CPUs");
        assert_eq!(describe("cpu", 1000), "1 CPU");
        assert_eq!(describe("memory", 2560 * 1024 * 1024 * 1000), "2.5 GiB");
        assert_eq!(describe("example.com/gpu", 2000), "2");
    }
}
