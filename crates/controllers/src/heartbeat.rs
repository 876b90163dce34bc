//! The controllers' liveness, as upstream's controller manager shows it: a Lease
//! `kube-system/kube-controller-manager` whose `renewTime` the running controllers renew every
//! few seconds. Whoever wants to know whether controllers run (`componentstatuses`, a person
//! with `kubectl get lease -n kube-system`) reads the Lease; nobody needs to share a process with
//! them. Leader election between several controller managers (the workload-controllers issue)
//! will take over this Lease; until then every instance renews it under its own identity.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The Lease's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The Lease's name (upstream's controller manager uses the same).
pub const NAME: &str = "kube-controller-manager";
/// How long a renewal counts, in seconds.
pub const LEASE_SECONDS: i32 = 15;
/// How often the Lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The field manager of the renewals.
const MANAGER: &str = "skiff-controllers";

/// The Lease as one renewal applies it.
fn renewal(holder: &str, now: k8s_openapi::jiff::Timestamp) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    })
}

/// Renews the Lease until the future is dropped; a failed renewal is logged and retried at the
/// next tick (the Lease then expires on its own, which is the point).
pub async fn run(client: Client) {
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let holder = skiff_client::leader::identity();
    let params = PatchParams::apply(MANAGER).force();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        tick.tick().await;
        let lease = renewal(&holder, k8s_openapi::jiff::Timestamp::now());
        if let Err(error) = leases.patch(NAME, &params, &Patch::Apply(&lease)).await {
            tracing::warn!(%error, lease = NAME, "renewing the controllers' lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_should_carry_a_micro_time_and_the_holder() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-02T10:00:00.5Z".parse().unwrap();
        let lease = renewal("host_1", now);
        assert_eq!(lease["spec"]["renewTime"], "2026-12-02T10:00:00.500000Z");
        assert_eq!(lease["spec"]["holderIdentity"], "host_1");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    }
}
