//! The `kube-system/kube-dns` Service (at the cluster DNS address, without a selector) and the
//! EndpointSlice and Endpoints that name where this server listens, applied server-side on
//! start and again whenever they are found changed or gone.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The field manager of what it publishes.
const MANAGER: &str = "skiff-dns";
/// The Service's namespace and name (upstream's).
const NAMESPACE: &str = "kube-system";
const NAME: &str = "kube-dns";
/// How often the publication is checked.
const PERIOD: Duration = Duration::from_secs(30);

/// Publishes the Service and this server's endpoints until the future is dropped.
pub async fn keep(client: Client, service_ip: Ipv4Addr, address: SocketAddr) {
    loop {
        if let Err(error) = publish(&client, service_ip, address).await {
            tracing::warn!(%error, "publishing the kube-dns Service failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tokio::time::sleep(PERIOD).await;
    }
}

async fn publish(
    client: &Client,
    service_ip: Ipv4Addr,
    address: SocketAddr,
) -> Result<(), kube::Error> {
    let labels = json!({"k8s-app": "kube-dns", "kubernetes.io/name": "skiff-dns", "kubernetes.io/cluster-service": "true"});
    let port = address.port();
    apply::<Service>(
        client,
        NAME,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {"clusterIP": service_ip.to_string(), "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
            ]},
        }),
    )
    .await?;
    let ip = address.ip().to_string();
    // Where this server listens, as both the slice and the Endpoints name its ports.
    let ports = json!([
        {"name": "dns", "port": port, "protocol": "UDP"},
        {"name": "dns-tcp", "port": port, "protocol": "TCP"},
    ]);
    let slice_name = format!("{NAME}-{}", ip.replace(['.', ':'], "-"));
    apply::<EndpointSlice>(
        client,
        &slice_name,
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": NAMESPACE, "labels": {
                "kubernetes.io/service-name": NAME,
                "endpointslice.kubernetes.io/managed-by": MANAGER,
            }},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
            "ports": ports,
        }),
    )
    .await?;
    apply::<Endpoints>(
        client,
        NAME,
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": ports}],
        }),
    )
    .await
}

/// Applies `object` as `name` in kube-system (server-side, forced: this server owns it).
async fn apply<K>(client: &Client, name: &str, object: serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), NAMESPACE)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map(|_| ())
}
