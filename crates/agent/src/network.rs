//! The node's pod network and its egress guard. Pods get addresses from the node's pod CIDR
//! through Debian's CNI plugins (bridge + host-local + portmap), configured by a conflist the
//! agent writes. Before any pod runs, the guard makes sure nothing addressed to the cluster's
//! pod or service CIDRs ever leaves through the machine's uplink, even with a rule missing: the
//! service CIDR is routed to the pod bridge (so service traffic is never sent to the default
//! route), and an nftables table drops packets to the cluster CIDRs, and un-masqueraded packets
//! from the pod CIDR, on every interface but loopback and skiff's bridges.

use std::path::PathBuf;

use ring::digest::{SHA256, digest};
use serde_json::json;

/// Running `ip` or `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The command could not run.
    #[error("running {command}")]
    Run {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command said no.
    #[error("{command} failed: {output}")]
    Failed {
        /// The command.
        command: String,
        /// What it said.
        output: String,
    },
    /// nftables refused the guard.
    #[error("installing the guard's nftables rules")]
    Nft(#[from] skiff_proxy::nft::NftError),
    /// The configuration could not be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Every bridge name starts so; the guard lets cluster traffic through all of them.
pub const BRIDGE_PREFIX: &str = "skiff";

/// A node's pod network.
#[derive(Clone, Debug)]
pub struct Network {
    /// The bridge pods attach to.
    pub bridge: String,
    /// The nftables table of the guard.
    pub table: String,
    /// The cluster's pod CIDR (every node's pod CIDR is inside).
    pub cluster_cidr: String,
    /// The cluster's service CIDR.
    pub service_cidr: String,
    /// This node's pod CIDR.
    pub pod_cidr: String,
    /// Where the CNI conflist goes.
    pub conf_dir: PathBuf,
    /// Where host-local keeps its leases.
    pub ipam_dir: PathBuf,
}

/// A short, stable suffix for this node's network objects (interface names have 15 bytes).
pub fn suffix(node: &str) -> String {
    digest(&SHA256, node.as_bytes()).as_ref()[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Network {
    /// The network of `node` with its pod CIDR.
    pub fn new(
        node: &str,
        cluster_cidr: &str,
        service_cidr: &str,
        pod_cidr: &str,
        dir: PathBuf,
    ) -> Self {
        let suffix = suffix(node);
        Network {
            bridge: format!("{BRIDGE_PREFIX}{suffix}"),
            table: format!("skiff-guard-{suffix}"),
            cluster_cidr: cluster_cidr.to_string(),
            service_cidr: service_cidr.to_string(),
            pod_cidr: pod_cidr.to_string(),
            conf_dir: dir.join("net.d"),
            ipam_dir: dir.join("ipam"),
        }
    }

    /// The CNI conflist.
    pub fn conflist(&self) -> String {
        json!({
            "cniVersion": "1.0.0",
            "name": self.table.replace("guard", "pods"),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.ipam_dir.display().to_string(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        })
        .to_string()
    }

    /// The guard's nftables rules (the table is replaced whole).
    pub fn guard_rules(&self) -> String {
        let cluster = format!("{{ {}, {} }}", self.cluster_cidr, self.service_cidr);
        let outside = format!("oifname != \"lo\" oifname != \"{BRIDGE_PREFIX}*\"");
        format!(
            "table inet {table} {{}}\n\
             delete table inet {table}\n\
             table inet {table} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\t{outside} ip daddr {cluster} drop\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\t{outside} ip daddr {cluster} drop\n\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype filter hook postrouting priority srcnat + 10; policy accept;\n\
             \t\t{outside} ip saddr {pods} drop\n\
             \t}}\n\
             }}\n",
            table = self.table,
            pods = self.cluster_cidr,
        )
    }

    /// Installs the guard and the bridge, then writes the CNI configuration: nothing can send
    /// pod traffic before the guard is in place.
    pub async fn install(&self) -> Result<(), NetworkError> {
        run_ignoring(
            "ip",
            &["link", "add", &self.bridge, "type", "bridge"],
            "File exists",
        )
        .await?;
        run("ip", &["link", "set", &self.bridge, "up"]).await?;
        run(
            "ip",
            &["route", "replace", &self.service_cidr, "dev", &self.bridge],
        )
        .await?;
        nft(&self.guard_rules()).await?;
        for (path, value) in [
            ("/proc/sys/net/ipv4/ip_forward", "1"),
            ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
        ] {
            // The bridge module's sysctl exists once the first bridge does.
            if let Err(error) = std::fs::write(path, value) {
                tracing::warn!(path, %error, "setting a network sysctl failed");
            }
        }
        std::fs::create_dir_all(&self.conf_dir).map_err(|source| NetworkError::Write {
            path: self.conf_dir.clone(),
            source,
        })?;
        let path = self.conf_dir.join("10-skiff.conflist");
        std::fs::write(&path, self.conflist())
            .map_err(|source| NetworkError::Write { path, source })?;
        Ok(())
    }

    /// Removes the guard, the route and the bridge (teardown).
    pub async fn remove(&self) {
        let _ = nft(&format!(
            "table inet {0} {{}}\ndelete table inet {0}\n",
            self.table
        ))
        .await;
        let _ = run(
            "ip",
            &["route", "del", &self.service_cidr, "dev", &self.bridge],
        )
        .await;
        let _ = run("ip", &["link", "del", &self.bridge]).await;
        let _ = std::fs::remove_dir_all(&self.ipam_dir);
        self.remove_nat_leftovers().await;
    }

    /// Removes what the CNI plugins left in `ip nat` and `ip6 nat`: the bridge plugin's
    /// masquerading chains of this node's pod CIDR (pods whose teardown never ran), the portmap
    /// plugin's `CNI-HOSTPORT-*` chains once no pod on the machine holds a host port, and each
    /// table once nothing is left in it. The plugins create them; nobody else removes them.
    async fn remove_nat_leftovers(&self) {
        for family in ["ip", "ip6"] {
            let Ok(out) = tokio::process::Command::new("nft")
                .args(["-j", "list", "table", family, "nat"])
                .output()
                .await
            else {
                continue;
            };
            let Ok(listing) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            let script = nat_cleanup(&listing, family, &self.pod_cidr);
            if !script.is_empty() {
                let _ = nft(&script).await;
            }
        }
    }
}

/// The portmap plugin's chains, shared by every pod with a host port on the machine.
const HOSTPORT_CHAINS: &str = "CNI-HOSTPORT-";

/// The chain through which the portmap plugin sends traffic to each pod's host ports: while it
/// has a rule, some pod on the machine holds a host port.
const HOSTPORT_DNAT: &str = "CNI-HOSTPORT-DNAT";

/// The nft script that removes from the `FAMILY nat` table listed as `listing` (`nft -j`) this
/// pod CIDR's CNI chains, the host-port chains when no pod uses them, the rules jumping to
/// either, and the table if nothing else is in it.
fn nat_cleanup(listing: &serde_json::Value, family: &str, pod_cidr: &str) -> String {
    let network = pod_cidr.split('/').next().unwrap_or(pod_cidr);
    let items = listing
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !items.iter().any(|i| i.get("table").is_some()) {
        return String::new();
    }
    let rules: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("rule")).collect();
    let chains: Vec<&serde_json::Value> = items.iter().filter_map(|i| i.get("chain")).collect();
    let name = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let has_rules = |chain: &str| rules.iter().any(|r| name(r, "chain") == chain);
    let ours: Vec<String> = chains
        .iter()
        .map(|c| name(c, "name"))
        .filter(|chain| {
            if chain.starts_with(HOSTPORT_CHAINS) {
                return !has_rules(HOSTPORT_DNAT);
            }
            chain.starts_with("CNI-")
                && rules.iter().any(|r| {
                    name(r, "chain") == *chain
                        && r.to_string().contains(&format!("\"addr\":\"{network}\""))
                })
        })
        .collect();
    let jumps_to_ours = |r: &serde_json::Value| {
        ours.iter()
            .any(|c| r.to_string().contains(&format!("\"target\":\"{c}\"")))
    };
    let mut script = String::new();
    let mut left = 0;
    for rule in &rules {
        if ours.contains(&name(rule, "chain")) {
            continue;
        }
        if jumps_to_ours(rule) {
            let handle = rule
                .get("handle")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            script.push_str(&format!(
                "delete rule {family} nat {} handle {handle}\n",
                name(rule, "chain")
            ));
        } else {
            left += 1;
        }
    }
    // Chains are flushed before any is deleted: one may still jump to another.
    for chain in &ours {
        script.push_str(&format!("flush chain {family} nat {chain}\n"));
    }
    for chain in &ours {
        script.push_str(&format!("delete chain {family} nat {chain}\n"));
    }
    if left == 0 {
        script.push_str(&format!("delete table {family} nat\n"));
    }
    script
}

async fn run(program: &str, args: &[&str]) -> Result<(), NetworkError> {
    run_ignoring(program, args, "\0").await
}

/// Runs a command; an error whose output contains `benign` counts as success.
async fn run_ignoring(program: &str, args: &[&str], benign: &str) -> Result<(), NetworkError> {
    let command = format!("{program} {}", args.join(" "));
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|source| NetworkError::Run {
            command: command.clone(),
            source,
        })?;
    let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.success() || said.contains(benign) {
        return Ok(());
    }
    Err(NetworkError::Failed {
        command,
        output: said,
    })
}

async fn nft(rules: &str) -> Result<(), NetworkError> {
    Ok(skiff_proxy::nft::apply(rules).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_should_drop_cluster_traffic_everywhere_but_loopback_and_skiffs_bridges() {
        let network = Network::new(
            "node-a",
            "10.42.0.0/16",
            "10.43.0.0/16",
            "10.42.3.0/24",
            PathBuf::from("/d"),
        );
        assert!(network.bridge.starts_with("skiff") && network.bridge.len() <= 15);
        let rules = network.guard_rules();
        assert!(rules.contains(
            "oifname != \"lo\" oifname != \"skiff*\" ip daddr { 10.42.0.0/16, 10.43.0.0/16 } drop"
        ));
        assert!(
            rules.contains("oifname != \"lo\" oifname != \"skiff*\" ip saddr 10.42.0.0/16 drop")
        );
        let conflist: serde_json::Value = serde_json::from_str(&network.conflist()).unwrap();
        assert_eq!(
            conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(conflist["plugins"][0]["bridge"], network.bridge.as_str());
    }

    #[test]
    fn nat_leftovers_of_this_cidr_should_go_and_the_table_once_empty() {
        let listing = serde_json::json!({"nftables": [
            {"table": {"family": "ip", "name": "nat"}},
            {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING"}},
            {"chain": {"family": "ip", "table": "nat", "name": "CNI-aaa"}},
            {"rule": {"chain": "POSTROUTING", "handle": 7, "expr": [{"jump": {"target": "CNI-aaa"}}]}},
            {"rule": {"chain": "CNI-aaa", "handle": 8, "expr": [{"match": {"right": {"prefix": {"addr": "10.42.0.0", "len": 24}}}}]}},
        ]});
        let script = nat_cleanup(&listing, "ip", "10.42.0.0/24");
        assert_eq!(
            script,
            "delete rule ip nat POSTROUTING handle 7\nflush chain ip nat CNI-aaa\ndelete chain ip nat CNI-aaa\ndelete table ip nat\n"
        );
        // Another node's chain stays, and so does the table.
        let other = nat_cleanup(&listing, "ip", "10.43.0.0/24");
        assert!(!other.contains("delete table"), "{other}");
        assert!(!other.contains("CNI-aaa"), "{other}");
        // An empty table goes; no table, nothing to do.
        let empty = serde_json::json!({"nftables": [{"table": {"family": "ip6", "name": "nat"}}]});
        assert_eq!(
            nat_cleanup(&empty, "ip6", "10.42.0.0/24"),
            "delete table ip6 nat\n"
        );
        assert_eq!(
            nat_cleanup(&serde_json::json!({}), "ip6", "10.42.0.0/24"),
            ""
        );
    }

    fn hostport_listing(dnat_rules: bool) -> serde_json::Value {
        let mut items = vec![
            serde_json::json!({"table": {"family": "ip", "name": "nat"}}),
            serde_json::json!({"chain": {"name": "POSTROUTING"}}),
            serde_json::json!({"chain": {"name": "OUTPUT"}}),
            serde_json::json!({"chain": {"name": "CNI-HOSTPORT-MASQ"}}),
            serde_json::json!({"chain": {"name": "CNI-HOSTPORT-DNAT"}}),
            serde_json::json!({"rule": {"chain": "POSTROUTING", "handle": 3, "expr": [{"jump": {"target": "CNI-HOSTPORT-MASQ"}}]}}),
            serde_json::json!({"rule": {"chain": "OUTPUT", "handle": 4, "expr": [{"jump": {"target": "CNI-HOSTPORT-DNAT"}}]}}),
            serde_json::json!({"rule": {"chain": "CNI-HOSTPORT-MASQ", "handle": 5, "expr": [{"masquerade": null}]}}),
        ];
        if dnat_rules {
            items.push(serde_json::json!({"chain": {"name": "CNI-DN-1"}}));
            items.push(serde_json::json!({"rule": {"chain": "CNI-HOSTPORT-DNAT", "handle": 6, "expr": [{"jump": {"target": "CNI-DN-1"}}]}}));
        }
        serde_json::json!({ "nftables": items })
    }

    #[test]
    fn host_port_chains_should_go_only_when_no_pod_holds_a_host_port() {
        let script = nat_cleanup(&hostport_listing(false), "ip", "10.42.0.0/24");
        assert_eq!(
            script,
            "delete rule ip nat POSTROUTING handle 3\n\
             delete rule ip nat OUTPUT handle 4\n\
             flush chain ip nat CNI-HOSTPORT-MASQ\n\
             flush chain ip nat CNI-HOSTPORT-DNAT\n\
             delete chain ip nat CNI-HOSTPORT-MASQ\n\
             delete chain ip nat CNI-HOSTPORT-DNAT\n\
             delete table ip nat\n"
        );
        // Some pod (of another agent) still holds a host port: all of it stays.
        assert_eq!(
            nat_cleanup(&hostport_listing(true), "ip", "10.42.0.0/24"),
            ""
        );
    }
}
