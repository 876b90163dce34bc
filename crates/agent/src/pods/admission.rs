//! kubelet's admission of a new pod on this node, for what the scheduler cannot see: host ports
//! (a pod given a `nodeName` directly skips the scheduler, and two such pods may ask for one
//! port). A pod whose ports are taken by another pod the node runs is rejected as kubelet's
//! `NodePorts` predicate rejects it: phase Failed, reason `NodePorts`, upstream's message, and a
//! sentence naming the port and the pod that holds it. Pods the runtime already holds (adopted
//! after a restart) are admitted as they are; a finished pod gives its ports back.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use skiff_client::placement::{HostPort, host_ports};

/// kubelet's reason for a pod rejected over host ports (the `NodePorts` predicate).
pub const REASON: &str = "NodePorts";
/// kubelet's message for it (`Predicate NodePorts failed: <the predicate's reason>`).
pub const MESSAGE: &str =
    "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";

/// Why a pod was not admitted: kubelet's reason and message, and the same in plain words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// What holds the port, e.g. `hostPort 8080/TCP is already used by pod default/web`.
    pub detail: String,
}

impl Rejection {
    /// The pod's `status.message`: kubelet's, then the plain sentence.
    pub fn status_message(&self) -> String {
        format!("Pod was rejected: {MESSAGE}: {}", self.detail)
    }

    /// The Event's message.
    pub fn event_message(&self) -> String {
        format!("{MESSAGE}: {}", self.detail)
    }
}

/// The host ports held by the pods this node admitted, by pod uid.
#[derive(Debug, Default)]
pub struct HostPorts(Mutex<HashMap<String, (String, Vec<HostPort>)>>);

impl HostPorts {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Vec<HostPort>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `pod` (uid `uid`) if no other admitted pod holds one of its host ports; it then
    /// holds them.
    pub fn admit(&self, uid: &str, pod: &Pod) -> Result<(), Rejection> {
        let wanted = host_ports(pod);
        let mut held = self.held();
        for (other, (name, ports)) in held.iter() {
            if other == uid {
                continue;
            }
            if let Some(port) = wanted.iter().find(|w| ports.iter().any(|p| p.conflicts(w))) {
                return Err(Rejection {
                    detail: format!(
                        "hostPort {}/{} is already used by pod {name}",
                        port.port, port.protocol
                    ),
                });
            }
        }
        held.insert(uid.to_string(), (described(pod), wanted));
        Ok(())
    }

    /// Records the ports of a pod that runs already (adopted), whatever else holds them.
    pub fn hold(&self, uid: &str, pod: &Pod) {
        self.held()
            .insert(uid.to_string(), (described(pod), host_ports(pod)));
    }

    /// Gives the pod's ports back.
    pub fn release(&self, uid: &str) {
        self.held().remove(uid);
    }
}

fn described(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_taken_host_port_should_reject_the_second_pod_in_kubelets_words() {
        let ports = HostPorts::default();
        let first = pod("web", json!([{"containerPort": 80, "hostPort": 8080}]));
        let second = pod("web-2", json!([{"containerPort": 81, "hostPort": 8080}]));
        assert_eq!(ports.admit("u1", &first), Ok(()));
        let rejection = ports.admit("u2", &second).unwrap_err();
        assert_eq!(
            rejection.status_message(),
            "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports: hostPort 8080/TCP is already used by pod default/web"
        );
        // Admitting a pod again is no conflict with itself; once the first gives its ports
        // back, the second fits.
        assert_eq!(ports.admit("u1", &first), Ok(()));
        ports.release("u1");
        assert_eq!(ports.admit("u2", &second), Ok(()));
    }

    #[test]
    fn ports_should_conflict_only_on_the_same_protocol_and_address() {
        let ports = HostPorts::default();
        let tcp = pod(
            "a",
            json!([{"containerPort": 53, "hostPort": 53, "hostIP": "127.0.0.1"}]),
        );
        let udp = pod(
            "b",
            json!([{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]),
        );
        let other_ip = pod(
            "c",
            json!([{"containerPort": 53, "hostPort": 53, "hostIP": "10.0.0.1"}]),
        );
        let everywhere = pod("d", json!([{"containerPort": 53, "hostPort": 53}]));
        let no_host_port = pod("e", json!([{"containerPort": 53}]));
        assert_eq!(ports.admit("a", &tcp), Ok(()));
        assert_eq!(ports.admit("b", &udp), Ok(()));
        assert_eq!(ports.admit("c", &other_ip), Ok(()));
        assert!(ports.admit("d", &everywhere).is_err());
        assert_eq!(ports.admit("e", &no_host_port), Ok(()));
        // An adopted pod keeps what it holds.
        ports.hold("d", &everywhere);
        assert!(
            ports
                .admit(
                    "f",
                    &pod(
                        "f",
                        json!([{"containerPort": 1, "hostPort": 53, "hostIP": "10.0.0.2"}])
                    )
                )
                .is_err()
        );
    }
}
