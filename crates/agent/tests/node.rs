//! The agent's Node against an in-process API server and the fake runtime: registered, its
//! conditions following what the runtime says, and not written again while nothing changes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use skiff_agent::node::{self, Facts};
use skiff_agent::runtime::fake::FakeRuntime;
use skiff_cluster::InProcess;

fn ready(node: &Node) -> (String, String, String) {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

async fn until_ready_is(nodes: &Api<Node>, wanted: &str) -> (String, String, String) {
    for _ in 0..300 {
        if let Ok(node) = nodes.get("n1").await
            && ready(&node).0 == wanted
        {
            return ready(&node);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the node's Ready never became {wanted}");
}

#[tokio::test]
async fn a_node_should_be_not_ready_while_its_runtime_network_is_not() {
    let cluster = InProcess::start().await.unwrap();
    let client = cluster.client("node");
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::new());
    let facts = Facts {
        name: "n1".into(),
        ip: "192.0.2.1".into(),
        runtime_version: "fake://1.0".into(),
        port: 0,
        labels: Vec::new(),
        storage_bytes: Some(100 << 30),
    };
    node::register(&client, &facts).await.unwrap();
    let keeper = {
        let (client, runtime, path) = (client.clone(), runtime.clone(), dir.path().to_owned());
        tokio::spawn(async move { node::keep_alive(client, facts, &path, runtime.as_ref()).await })
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let (_, reason, _) = until_ready_is(&nodes, "True").await;
    assert_eq!(reason, "KubeletReady");
    // What the Node says of the machine.
    let status = serde_json::to_value(nodes.get("n1").await.unwrap().status.unwrap()).unwrap();
    for resource in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(
            status["capacity"][resource].is_string(),
            "{resource}: {status}"
        );
        assert!(
            status["allocatable"][resource].is_string(),
            "{resource}: {status}"
        );
    }
    assert_eq!(
        status["capacity"]["ephemeral-storage"],
        (100u64 << 30).to_string()
    );
    assert_eq!(
        status["allocatable"]["ephemeral-storage"],
        ((100u64 << 30) / 10 * 9).to_string()
    );
    assert_eq!(
        status["addresses"][0],
        serde_json::json!({"type": "InternalIP", "address": "192.0.2.1"})
    );
    assert_eq!(status["nodeInfo"]["containerRuntimeVersion"], "fake://1.0");
    assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
    assert!(
        status["nodeInfo"]["kubeletVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('v'))
    );
    let renewed = || async {
        let lease = leases.get("n1").await.unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        spec.renew_time.unwrap().0
    };
    let first_renewal = renewed().await;
    // Idle, the node writes nothing but its Lease: its status pass 10 s later changes nothing.
    let written = nodes.get("n1").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        nodes.get("n1").await.unwrap().metadata.resource_version,
        written,
        "an unchanged status is not written again"
    );
    assert!(
        renewed().await > first_renewal,
        "the Lease renewed every 10 s"
    );
    runtime.set_network_down(Some((
        "NetworkPluginNotReady",
        "cni plugin not initialized",
    )));
    let (_, reason, message) = until_ready_is(&nodes, "False").await;
    assert_eq!(reason, "KubeletNotReady");
    assert_eq!(
        message,
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"
    );
    runtime.set_network_down(None);
    until_ready_is(&nodes, "True").await;
    keeper.abort();
}
