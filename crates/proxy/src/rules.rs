//! The nftables rules of the proxy, as nft commands (pure; no IO). One table per node holds
//! fixed chains and four verdict maps; each Service contributes a [`Fragment`]: its chains,
//! its affinity sets and its map elements. A change is applied as the difference between a
//! Service's old and new fragments, in one atomic `nft -f` transaction, so one changed Service
//! never rewrites another's rules. The layout follows upstream kube-proxy's nftables mode:
//! `service-ips` and `service-nodeports` send a new connection to the Service port's chain,
//! which picks an endpoint at random (or the one a client's affinity names) and DNATs to it;
//! Service ports without endpoints are rejected through `no-endpoint-*` maps instead.

use crate::model::{Endpoint, ServicePort};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The packet mark asking for masquerading (upstream's 0x4000).
const MASQUERADE_MARK: &str = "0x4000";

/// One map element: map name, key, verdict.
pub type Element = (&'static str, String, String);

/// The rules one Service contributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Chains by name, with their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// ClientIP-affinity sets by name, with their timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Map elements (map name, key) with their verdicts.
    pub elements: BTreeMap<(&'static str, String), String>,
}

/// What the table is built around.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The table's name (family `ip`).
    pub table: String,
    /// The cluster's pod CIDR: traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidr: String,
}

impl Layout {
    /// The fixed part of the table: maps, hooks and helper chains. Replaces any table of the
    /// name whole.
    pub fn base(&self) -> String {
        let table = &self.table;
        format!(
            "table ip {table} {{}}\n\
             delete table ip {table}\n\
             table ip {table} {{\n\
             \tmap service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
             \tmap service-nodeports {{ type inet_proto . inet_service : verdict; }}\n\
             \tmap no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
             \tmap no-endpoint-nodeports {{ type inet_proto . inet_service : verdict; }}\n\
             \tchain mark-for-masquerade {{ meta mark set meta mark | {MASQUERADE_MARK}; }}\n\
             \tchain masquerading {{\n\
             \t\tmeta mark & {MASQUERADE_MARK} == 0 return\n\
             \t\tmeta mark set meta mark ^ {MASQUERADE_MARK}\n\
             \t\tmasquerade fully-random\n\
             \t}}\n\
             \tchain services {{\n\
             \t\tip daddr . meta l4proto . th dport vmap @service-ips\n\
             \t\tfib daddr type local meta l4proto . th dport vmap @service-nodeports\n\
             \t}}\n\
             \tchain reject-chain {{ reject; }}\n\
             \tchain endpoints-check {{\n\
             \t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\
             \t\tfib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports\n\
             \t}}\n\
             \tchain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}\n\
             \tchain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}\n\
             \tchain nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; jump masquerading; }}\n\
             \tchain filter-input {{ type filter hook input priority filter - 5; policy accept; ct state new jump endpoints-check; }}\n\
             \tchain filter-forward {{ type filter hook forward priority filter - 5; policy accept; ct state new jump endpoints-check; }}\n\
             \tchain filter-output {{ type filter hook output priority filter - 5; policy accept; ct state new jump endpoints-check; }}\n\
             }}\n"
        )
    }

    /// The rules of one Service's ports.
    pub fn fragment(&self, ports: &[ServicePort]) -> Fragment {
        let mut fragment = Fragment::default();
        for port in ports {
            self.add_port(&mut fragment, port);
        }
        fragment
    }

    fn add_port(&self, fragment: &mut Fragment, port: &ServicePort) {
        let proto = port.protocol;
        let reject = "goto reject-chain".to_string();
        let cluster_chain = format!("svc-{}", port.id);
        let external_chain = format!("ext-{}", port.id);
        let external_wanted = port.node_port.is_some() || !port.external_ips.is_empty();
        if port.endpoints.is_empty() {
            if let Some(ip) = port.cluster_ip {
                fragment.elements.insert(
                    (
                        "no-endpoint-services",
                        format!("{ip} . {proto} . {}", port.port),
                    ),
                    reject.clone(),
                );
            }
            for ip in &port.external_ips {
                fragment.elements.insert(
                    (
                        "no-endpoint-services",
                        format!("{ip} . {proto} . {}", port.port),
                    ),
                    reject.clone(),
                );
            }
            if let Some(node_port) = port.node_port {
                fragment.elements.insert(
                    ("no-endpoint-nodeports", format!("{proto} . {node_port}")),
                    reject,
                );
            }
            return;
        }
        // With ClientIP affinity, one chain per endpoint records the client and DNATs; without,
        // the Service's chain DNATs through a map, so a table holds a chain or two per Service
        // port rather than one per endpoint (nft reads every chain name on each change).
        let mut endpoint_chains = Vec::new();
        for endpoint in &port.endpoints {
            let chain = endpoint_chain(&port.id, endpoint);
            if let Some(timeout) = port.affinity {
                let set = affinity_set(&port.id, endpoint);
                let mut rules = hairpin(&[endpoint]);
                rules.push(format!("update @{set} {{ ip saddr }}"));
                rules.push(format!(
                    "meta l4proto {proto} dnat to {}:{}",
                    endpoint.ip, endpoint.port
                ));
                fragment.sets.insert(set, timeout);
                fragment.chains.insert(chain.clone(), rules);
            }
            endpoint_chains.push((chain, endpoint));
        }
        let balance = |chosen: &[&(String, &Endpoint)]| -> Vec<String> {
            if chosen.is_empty() {
                return vec!["drop".into()];
            }
            let mut rules = Vec::new();
            if port.affinity.is_some() {
                for (chain, endpoint) in chosen {
                    let set = affinity_set(&port.id, endpoint);
                    rules.push(format!("ip saddr @{set} goto {chain}"));
                }
                let arms: Vec<String> = chosen
                    .iter()
                    .enumerate()
                    .map(|(i, (chain, _))| format!("{i} : goto {chain}"))
                    .collect();
                rules.push(format!(
                    "numgen random mod {} vmap {{ {} }}",
                    chosen.len(),
                    arms.join(", ")
                ));
                return rules;
            }
            let endpoints: Vec<&Endpoint> = chosen.iter().map(|(_, e)| *e).collect();
            rules.extend(hairpin(&endpoints));
            rules.push(match endpoints.as_slice() {
                [one] => format!("meta l4proto {proto} dnat to {}:{}", one.ip, one.port),
                many => {
                    let arms: Vec<String> = many
                        .iter()
                        .enumerate()
                        .map(|(i, e)| format!("{i} : {} . {}", e.ip, e.port))
                        .collect();
                    format!(
                        "meta l4proto {proto} dnat ip addr . port to numgen random mod {} map {{ {} }}",
                        many.len(),
                        arms.join(", ")
                    )
                }
            });
            rules
        };
        let all: Vec<&(String, &Endpoint)> = endpoint_chains.iter().collect();
        let mut cluster_rules = vec![format!(
            "ip saddr != {} jump mark-for-masquerade",
            self.cluster_cidr
        )];
        cluster_rules.extend(balance(&all));
        fragment.chains.insert(cluster_chain.clone(), cluster_rules);
        if let Some(ip) = port.cluster_ip {
            fragment.elements.insert(
                ("service-ips", format!("{ip} . {proto} . {}", port.port)),
                format!("goto {cluster_chain}"),
            );
        }
        if !external_wanted {
            return;
        }
        let external_rules = if port.local_only {
            // Pods and this host reach every endpoint; outside traffic only local ones, with
            // its source kept.
            let local: Vec<&(String, &Endpoint)> =
                endpoint_chains.iter().filter(|(_, e)| e.local).collect();
            let mut rules = vec![
                format!("ip saddr {} goto {cluster_chain}", self.cluster_cidr),
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local goto {cluster_chain}"),
            ];
            rules.extend(balance(&local));
            rules
        } else {
            vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {cluster_chain}"),
            ]
        };
        fragment
            .chains
            .insert(external_chain.clone(), external_rules);
        for ip in &port.external_ips {
            fragment.elements.insert(
                ("service-ips", format!("{ip} . {proto} . {}", port.port)),
                format!("goto {external_chain}"),
            );
        }
        if let Some(node_port) = port.node_port {
            fragment.elements.insert(
                ("service-nodeports", format!("{proto} . {node_port}")),
                format!("goto {external_chain}"),
            );
        }
    }

    /// Every Service's fragment written into a fresh table.
    pub fn full(&self, fragments: &[&Fragment]) -> String {
        let mut script = self.base();
        let empty = Fragment::default();
        let changes: Vec<(&Fragment, &Fragment)> = fragments.iter().map(|f| (&empty, *f)).collect();
        let elements = merged(fragments.iter().copied());
        script.push_str(&self.changes(&changes, &BTreeMap::new(), &elements));
        script
    }

    /// The commands that turn each `(old, new)` fragment pair into the new one, with the map
    /// elements going from `old_elements` to `new_elements` (all Services', merged).
    pub fn changes(
        &self,
        changed: &[(&Fragment, &Fragment)],
        old_elements: &BTreeMap<(&'static str, String), String>,
        new_elements: &BTreeMap<(&'static str, String), String>,
    ) -> String {
        let table = &self.table;
        let mut script = String::new();
        // 1. New chains and sets exist before anything refers to them.
        for (old, new) in changed {
            for chain in new.chains.keys().filter(|c| !old.chains.contains_key(*c)) {
                let _ = writeln!(script, "add chain ip {table} {chain}");
            }
            for (set, timeout) in new.sets.iter().filter(|(s, _)| !old.sets.contains_key(*s)) {
                let _ = writeln!(
                    script,
                    "add set ip {table} {set} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}"
                );
            }
        }
        // 2. Chains whose rules changed are rewritten (new ones filled).
        for (old, new) in changed {
            for (chain, rules) in &new.chains {
                match old.chains.get(chain) {
                    Some(before) if before == rules => continue,
                    Some(_) => {
                        let _ = writeln!(script, "flush chain ip {table} {chain}");
                    }
                    None => {}
                }
                for rule in rules {
                    let _ = writeln!(script, "add rule ip {table} {chain} {rule}");
                }
            }
        }
        // 3. Map elements: the gone and changed ones out, the new and changed ones in.
        for ((map, key), verdict) in old_elements {
            if new_elements.get(&(*map, key.clone())) != Some(verdict) {
                let _ = writeln!(script, "delete element ip {table} {map} {{ {key} }}");
            }
        }
        for ((map, key), verdict) in new_elements {
            if old_elements.get(&(*map, key.clone())) != Some(verdict) {
                let _ = writeln!(
                    script,
                    "add element ip {table} {map} {{ {key} : {verdict} }}"
                );
            }
        }
        // 4. What nothing refers to any more goes: chains first emptied (they may jump to
        // each other), then deleted, then their sets.
        for (old, new) in changed {
            for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
                let _ = writeln!(script, "flush chain ip {table} {chain}");
            }
        }
        for (old, new) in changed {
            for chain in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
                let _ = writeln!(script, "delete chain ip {table} {chain}");
            }
            for set in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
                let _ = writeln!(script, "delete set ip {table} {set}");
            }
        }
        script
    }
}

/// Every fragment's elements in one map; where two Services claim the same key (two
/// LoadBalancers on one port of one address), the first keeps it.
pub fn merged<'a>(
    fragments: impl Iterator<Item = &'a Fragment>,
) -> BTreeMap<(&'static str, String), String> {
    let mut all = BTreeMap::new();
    for fragment in fragments {
        for (key, verdict) in &fragment.elements {
            all.entry(key.clone()).or_insert_with(|| verdict.clone());
        }
    }
    all
}

/// Masquerading of hairpin traffic: an endpoint reaching its own Service (it may land on
/// itself). Loopback endpoints (the host's own API or DNS) need none.
fn hairpin(endpoints: &[&Endpoint]) -> Vec<String> {
    let addresses: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.ip.is_loopback())
        .map(|e| e.ip.to_string())
        .collect();
    match addresses.as_slice() {
        [] => Vec::new(),
        [one] => vec![format!("ip saddr {one} jump mark-for-masquerade")],
        many => vec![format!(
            "ip saddr {{ {} }} jump mark-for-masquerade",
            many.join(", ")
        )],
    }
}

fn endpoint_chain(id: &str, endpoint: &Endpoint) -> String {
    format!("sep-{id}__{}/{}", endpoint.ip, endpoint.port)
}

fn affinity_set(id: &str, endpoint: &Endpoint) -> String {
    format!("aff-{id}__{}/{}", endpoint.ip, endpoint.port)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn layout() -> Layout {
        Layout {
            table: "skiff-proxy-test".into(),
            cluster_cidr: "10.42.0.0/16".into(),
        }
    }

    fn port(endpoints: &[u8], affinity: bool, local_only: bool) -> ServicePort {
        ServicePort {
            id: "default/web/tcp/80".into(),
            protocol: "tcp",
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 7)),
            port: 80,
            node_port: Some(30080),
            external_ips: vec![Ipv4Addr::LOCALHOST],
            local_only,
            affinity: affinity.then_some(60),
            endpoints: endpoints
                .iter()
                .map(|last| Endpoint {
                    ip: Ipv4Addr::new(10, 42, 0, *last),
                    port: 8080,
                    local: *last % 2 == 0,
                })
                .collect(),
        }
    }

    /// `nft --check`: parses and validates against the kernel without changing anything.
    fn nft_accepts(script: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("nft")
            .args(["--check", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nft runs (the tests need it and root)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("written");
        let out = child.wait_with_output().expect("nft finishes");
        assert!(
            out.status.success(),
            "nft refused:\n{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_service_should_balance_at_random_over_its_endpoints_on_every_address() {
        let fragment = layout().fragment(&[port(&[5, 6, 7], false, false)]);
        let svc = &fragment.chains["svc-default/web/tcp/80"];
        assert_eq!(
            svc,
            &vec![
                "ip saddr != 10.42.0.0/16 jump mark-for-masquerade".to_string(),
                "ip saddr { 10.42.0.5, 10.42.0.6, 10.42.0.7 } jump mark-for-masquerade".into(),
                "meta l4proto tcp dnat ip addr . port to numgen random mod 3 map { 0 : 10.42.0.5 . 8080, 1 : 10.42.0.6 . 8080, 2 : 10.42.0.7 . 8080 }".into(),
            ]
        );
        assert_eq!(
            fragment.chains.len(),
            2,
            "no chain per endpoint without affinity"
        );
        let verdict = |map, key: &str| fragment.elements.get(&(map, key.to_string())).cloned();
        assert_eq!(
            verdict("service-ips", "10.43.0.7 . tcp . 80").as_deref(),
            Some("goto svc-default/web/tcp/80")
        );
        assert_eq!(
            verdict("service-ips", "127.0.0.1 . tcp . 80").as_deref(),
            Some("goto ext-default/web/tcp/80")
        );
        assert_eq!(
            verdict("service-nodeports", "tcp . 30080").as_deref(),
            Some("goto ext-default/web/tcp/80")
        );
        nft_accepts(&layout().full(&[&fragment]));
    }

    #[test]
    fn a_service_without_endpoints_should_be_rejected_not_translated() {
        let fragment = layout().fragment(&[port(&[], false, false)]);
        assert!(fragment.chains.is_empty());
        assert_eq!(
            fragment
                .elements
                .keys()
                .map(|(m, k)| format!("{m} {k}"))
                .collect::<Vec<_>>(),
            vec![
                "no-endpoint-nodeports tcp . 30080",
                "no-endpoint-services 10.43.0.7 . tcp . 80",
                "no-endpoint-services 127.0.0.1 . tcp . 80"
            ]
        );
        nft_accepts(&layout().full(&[&fragment]));
    }

    #[test]
    fn affinity_and_local_traffic_policy_should_be_programmed() {
        let fragment = layout().fragment(&[port(&[5, 6], true, true)]);
        let svc = &fragment.chains["svc-default/web/tcp/80"];
        assert!(svc.contains(&"ip saddr @aff-default/web/tcp/80__10.42.0.5/8080 goto sep-default/web/tcp/80__10.42.0.5/8080".to_string()));
        let ext = &fragment.chains["ext-default/web/tcp/80"];
        assert_eq!(
            ext.last().map(String::as_str),
            Some("numgen random mod 1 vmap { 0 : goto sep-default/web/tcp/80__10.42.0.6/8080 }")
        );
        assert_eq!(fragment.sets.len(), 2);
        nft_accepts(&layout().full(&[&fragment]));
        let local = layout().fragment(&[port(&[5, 6], false, true)]);
        let ext = &local.chains["ext-default/web/tcp/80"];
        assert_eq!(ext[0], "ip saddr 10.42.0.0/16 goto svc-default/web/tcp/80");
        assert_eq!(
            ext.last().map(String::as_str),
            Some("meta l4proto tcp dnat to 10.42.0.6:8080"),
            "outside traffic only to the local endpoint"
        );
        let none_local = layout().fragment(&[port(&[5], false, true)]);
        assert_eq!(
            none_local.chains["ext-default/web/tcp/80"]
                .last()
                .map(String::as_str),
            Some("drop")
        );
        nft_accepts(&layout().full(&[&local, &none_local]));
    }

    #[test]
    fn a_change_should_touch_only_what_changed_and_apply_in_one_valid_transaction() {
        let layout = layout();
        let before = layout.fragment(&[port(&[5, 6, 7], false, false)]);
        let mut other = port(&[9], false, false);
        other.id = "default/other/tcp/80".into();
        other.cluster_ip = Some(Ipv4Addr::new(10, 43, 0, 8));
        other.node_port = None;
        other.external_ips.clear();
        let untouched = layout.fragment(&[other]);
        let after = layout.fragment(&[port(&[5, 7, 8], false, false)]);
        let old = merged([&before, &untouched].into_iter());
        let new = merged([&after, &untouched].into_iter());
        let script = layout.changes(&[(&before, &after)], &old, &new);
        assert!(!script.contains("other"), "{script}");
        assert!(script.contains("10.42.0.8 . 8080"), "{script}");
        assert!(
            !script.contains("ext-default"),
            "the external chain is unchanged: {script}"
        );
        assert!(script.contains("flush chain ip skiff-proxy-test svc-default/web/tcp/80"));
        assert!(!script.contains("element"), "no element changed: {script}");
        let gone = layout.changes(
            &[(&after, &Fragment::default())],
            &new,
            &merged([&untouched].into_iter()),
        );
        assert!(
            gone.contains(
                "delete element ip skiff-proxy-test service-ips { 10.43.0.7 . tcp . 80 }"
            )
        );
        nft_accepts(&format!(
            "{}{script}{gone}",
            layout.full(&[&before, &untouched])
        ));
    }
}
