//! What a pod requests and what a node offers, in milli-units (see `skiff_apimachinery::quantity`). A pod's
//! requests follow upstream's `PodRequests`: the larger of its app containers' sum and each
//! init container's peak (restartable "sidecar" init containers keep running, so they add to
//! both), plus the pod's overhead; pod-level `spec.resources.requests` replace the containers'
//! figures for the resources they name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use skiff_apimachinery::quantity;

/// CPU a container without a CPU request counts as when scoring (upstream's
/// `DefaultMilliCPURequest`), in milli-CPU.
pub const DEFAULT_MILLI_CPU: i128 = 100;
/// Memory a container without a memory request counts as when scoring (200 MiB), in
/// milli-bytes.
pub const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024 * 1000;

/// An amount of every resource, in milli-units; resources not named are zero. The four every
/// node reports sit in fixed slots (the filters read them for every node of every attempt);
/// extended resources (`example.com/gpu`, hugepages) are kept by name, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    cpu: i128,
    memory: i128,
    ephemeral_storage: i128,
    pods: i128,
    extended: Vec<(String, i128)>,
}

impl Resources {
    /// The fixed slot of `name`, if it has one.
    fn slot(&self, name: &str) -> Option<i128> {
        match name {
            "cpu" => Some(self.cpu),
            "memory" => Some(self.memory),
            "ephemeral-storage" => Some(self.ephemeral_storage),
            "pods" => Some(self.pods),
            _ => None,
        }
    }

    /// The amount of `name` (zero when absent).
    pub fn get(&self, name: &str) -> i128 {
        self.slot(name).unwrap_or_else(|| {
            self.extended
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .map_or(0, |at| self.extended[at].1)
        })
    }

    /// CPU, in milli-CPU.
    pub fn cpu(&self) -> i128 {
        self.cpu
    }

    /// Memory, in milli-bytes.
    pub fn memory(&self) -> i128 {
        self.memory
    }

    /// The pod count, in milli-pods.
    pub fn pods(&self) -> i128 {
        self.pods
    }

    /// The amount of `name`, to change.
    fn entry(&mut self, name: &str) -> &mut i128 {
        if self.slot(name).is_some() {
            return match name {
                "cpu" => &mut self.cpu,
                "memory" => &mut self.memory,
                "ephemeral-storage" => &mut self.ephemeral_storage,
                _ => &mut self.pods,
            };
        }
        let at = match self
            .extended
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
        {
            Ok(at) => at,
            Err(at) => {
                self.extended.insert(at, (name.to_string(), 0));
                at
            }
        };
        &mut self.extended[at].1
    }

    /// Sets the amount of `name`.
    pub fn set(&mut self, name: &str, amount: i128) {
        *self.entry(name) = amount;
    }

    /// Every resource with its amount, in upstream's order of checking them: CPU, memory,
    /// ephemeral storage, pods, then extended resources by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        [
            ("cpu", self.cpu),
            ("memory", self.memory),
            ("ephemeral-storage", self.ephemeral_storage),
            ("pods", self.pods),
        ]
        .into_iter()
        .chain(self.extended.iter().map(|(n, a)| (n.as_str(), *a)))
    }

    /// Combines `other` into these, resource by resource.
    fn combine(&mut self, other: &Resources, f: impl Fn(i128, i128) -> i128) {
        self.cpu = f(self.cpu, other.cpu);
        self.memory = f(self.memory, other.memory);
        self.ephemeral_storage = f(self.ephemeral_storage, other.ephemeral_storage);
        self.pods = f(self.pods, other.pods);
        for (name, amount) in &other.extended {
            let entry = self.entry(name);
            *entry = f(*entry, *amount);
        }
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Resources) {
        self.combine(other, |a, b| a + b);
    }

    /// Subtracts `other` from these.
    pub fn subtract(&mut self, other: &Resources) {
        self.combine(other, |a, b| a - b);
    }

    /// Raises each resource to at least `other`'s amount.
    fn max_with(&mut self, other: &Resources) {
        self.combine(other, i128::max);
    }

    /// Reads a Kubernetes resource list; unparsable and negative quantities count as zero (the
    /// API server refuses them on write, so they only come from a server that does not).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut resources = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            resources.set(name, quantity::milli(&q.0).unwrap_or(0).max(0));
        }
        resources
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
        let named = |name: &str| {
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| r.contains_key(name))
        };
        if !named("cpu") {
            requests.cpu = DEFAULT_MILLI_CPU;
        }
        if !named("memory") {
            requests.memory = DEFAULT_MEMORY;
        }
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
    let pod_level_requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let pod_level = Resources::from_list(pod_level_requests);
    for name in ["cpu", "memory"] {
        if pod_level_requests.is_some_and(|r| r.contains_key(name)) {
            total.set(name, pod_level.get(name));
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
