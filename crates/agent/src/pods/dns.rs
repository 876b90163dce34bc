//! A pod's resolv.conf, as kubelet builds it from `dnsPolicy` and `dnsConfig` (pure):
//! ClusterFirst points at the cluster DNS with the search path
//! `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`; Default (and ClusterFirst on the
//! host network) takes the node's own; None takes `dnsConfig` alone, which the others merge in.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::runtime::api;

/// The cluster DNS pods are pointed at.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// Its address (none: pods use the node's resolvers).
    pub server: Option<String>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// The DNS configuration of `pod`'s sandbox; `None` leaves the runtime to copy the node's.
pub fn config(pod: &Pod, cluster: &ClusterDns) -> Option<api::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let mut config = match (policy, cluster.server.as_deref()) {
        ("None", _) => api::DnsConfig::default(),
        ("ClusterFirst", Some(server)) if !host_network => in_cluster(pod, server, cluster),
        ("ClusterFirstWithHostNet", Some(server)) => in_cluster(pod, server, cluster),
        _ => return None,
    };
    if let Some(extra) = &spec.dns_config {
        for server in extra.nameservers.iter().flatten() {
            if !config.servers.contains(server) {
                config.servers.push(server.clone());
            }
        }
        for search in extra.searches.iter().flatten() {
            if !config.searches.contains(search) {
                config.searches.push(search.clone());
            }
        }
        for option in extra.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            config.options.retain(|o| o.split(':').next() != Some(name));
            config.options.push(match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            });
        }
    }
    Some(config)
}

fn in_cluster(pod: &Pod, server: &str, cluster: &ClusterDns) -> api::DnsConfig {
    let domain = &cluster.domain;
    let namespace = pod.namespace().unwrap_or_else(|| "default".into());
    api::DnsConfig {
        servers: vec![server.to_string()],
        searches: vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ],
        options: vec!["ndots:5".into()],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .expect("a pod")
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            server: Some("10.43.0.10".into()),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_should_search_the_namespace_first_with_ndots_5() {
        let config = config(&pod(json!({"containers": []})), &cluster()).expect("a config");
        assert_eq!(config.servers, vec!["10.43.0.10"]);
        assert_eq!(
            config.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(config.options, vec!["ndots:5"]);
    }

    #[test]
    fn policies_should_follow_kubelet() {
        assert!(config(&pod(json!({"dnsPolicy": "Default"})), &cluster()).is_none());
        assert!(config(&pod(json!({"hostNetwork": true})), &cluster()).is_none());
        let with_host = config(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &cluster(),
        )
        .expect("a config");
        assert_eq!(with_host.servers, vec!["10.43.0.10"]);
        let none = config(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.1"],
                "searches": ["example.test"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
            &cluster(),
        )
        .expect("a config");
        assert_eq!(none.servers, vec!["192.0.2.1"]);
        assert_eq!(none.searches, vec!["example.test"]);
        assert_eq!(none.options, vec!["ndots:2", "edns0"]);
        let merged = config(
            &pod(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})),
            &cluster(),
        )
        .expect("a config");
        assert_eq!(merged.options, vec!["ndots:1"]);
    }
}
