//! How a pod and its containers are named in the runtime: the labels and annotations kubelet
//! puts on CRI sandboxes and containers, which is all the agent needs to find a pod's runtime
//! objects again after a restart (nothing else is kept on disk).

use std::collections::HashMap;

/// The pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The pod's uid.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The container's name.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// How many times the container was restarted (annotation).
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// The hash of the container's spec it was created from (annotation).
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
/// Where the container writes its termination message (annotation).
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// `File` or `FallbackToLogsOnError` (annotation).
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
/// The node agent that made the object: agents sharing a runtime leave each other's alone.
pub const AGENT: &str = "skiff.dev/node";

/// The labels of a pod's sandbox.
pub fn sandbox(node: &str, name: &str, namespace: &str, uid: &str) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.to_string(), name.to_string()),
        (POD_NAMESPACE.to_string(), namespace.to_string()),
        (POD_UID.to_string(), uid.to_string()),
        (AGENT.to_string(), node.to_string()),
    ])
}

/// The labels of one of its containers.
pub fn container(
    node: &str,
    name: &str,
    namespace: &str,
    uid: &str,
    container: &str,
) -> HashMap<String, String> {
    let mut labels = sandbox(node, name, namespace, uid);
    labels.insert(CONTAINER_NAME.to_string(), container.to_string());
    labels
}
