//! Node IPAM (upstream's node-ipam-controller, range allocator): every Node without a pod CIDR
//! gets the lowest free `/24` of the cluster CIDR (10.42.0.0/16 by default), written once with a
//! resourceVersion precondition. What is taken is read from the Nodes themselves, so a restart
//! rebuilds it; CIDRs of Nodes that are gone are free again. Nodes that bring their own CIDR
//! (simulated nodes) keep it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_client::lean::WatchedNode;

/// The default cluster CIDR.
pub const CLUSTER_CIDR: &str = "10.42.0.0/16";

/// A cluster CIDR, cut into `/24`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    base: u32,
    prefix: u8,
}

impl Range {
    /// Reads `a.b.c.d/n` (n at most 24).
    pub fn parse(cidr: &str) -> Option<Range> {
        let (address, prefix) = cidr.split_once('/')?;
        let address: Ipv4Addr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 24)?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Some(Range {
            base: u32::from(address) & mask,
            prefix,
        })
    }

    /// How many `/24`s it holds.
    fn blocks(self) -> u32 {
        1 << (24 - self.prefix)
    }

    /// The `index`-th `/24`.
    fn block(self, index: u32) -> String {
        format!("{}/24", Ipv4Addr::from(self.base + (index << 8)))
    }

    /// The lowest `/24` not in `taken`.
    pub fn first_free(self, taken: &BTreeSet<String>) -> Option<String> {
        (0..self.blocks())
            .map(|i| self.block(i))
            .find(|cidr| !taken.contains(cidr))
    }
}

/// What is kept of a Node: the two fields allocation reads (a whole Node is ~20 KiB).
struct Seen {
    resource_version: Option<String>,
    pod_cidr: Option<String>,
}

impl Seen {
    fn of(node: &Node) -> Self {
        Self {
            resource_version: node.metadata.resource_version.clone(),
            pod_cidr: node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.clone())
                .filter(|c| !c.is_empty()),
        }
    }
}

/// Gives every Node without a pod CIDR one from `range`, until the future is dropped.
pub async fn run(client: Client, range: Range) {
    let api: Api<Node> = Api::all(client.clone());
    let stream = watcher::watcher(Api::<WatchedNode>::all(client), watcher::Config::default())
        .default_backoff();
    tokio::pin!(stream);
    let mut nodes: std::collections::HashMap<String, Seen> = std::collections::HashMap::new();
    let mut synced = false;
    let mut pending: Vec<String> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                nodes.clear();
                synced = false;
            }
            Ok(Event::InitApply(node) | Event::Apply(node)) => {
                let name = node.name_any();
                nodes.insert(name.clone(), Seen::of(&node.node));
                pending.push(name);
            }
            Ok(Event::Delete(node)) => {
                nodes.remove(&node.name_any());
            }
            Ok(Event::InitDone) => synced = true,
            Err(error) => {
                tracing::debug!(%error, "node IPAM watch");
                continue;
            }
        }
        if !synced {
            continue;
        }
        for name in std::mem::take(&mut pending) {
            let Some(node) = nodes.get(&name) else {
                continue;
            };
            if node.pod_cidr.is_some() {
                continue;
            }
            let taken: BTreeSet<String> =
                nodes.values().filter_map(|n| n.pod_cidr.clone()).collect();
            let Some(cidr) = range.first_free(&taken) else {
                tracing::error!(node = %name, "the cluster CIDR has no free /24 left for a node");
                continue;
            };
            let patch = json!({
                "metadata": {"resourceVersion": node.resource_version},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => {
                    tracing::info!(node = %name, %cidr, "pod CIDR allocated");
                    nodes.insert(name, Seen::of(&updated));
                }
                Err(error) => {
                    // A conflict means the Node changed; its event comes and is handled again.
                    tracing::debug!(node = %name, %error, "allocating a pod CIDR failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    pending.push(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_block_should_be_given() {
        let range = Range::parse("10.42.0.0/16").unwrap();
        let mut taken = BTreeSet::new();
        assert_eq!(range.first_free(&taken).as_deref(), Some("10.42.0.0/24"));
        taken.insert("10.42.0.0/24".into());
        taken.insert("10.42.2.0/24".into());
        assert_eq!(range.first_free(&taken).as_deref(), Some("10.42.1.0/24"));
        let tiny = Range::parse("10.42.7.0/24").unwrap();
        taken.insert("10.42.7.0/24".into());
        assert_eq!(tiny.first_free(&taken), None);
        assert!(Range::parse("10.42.0.0/25").is_none());
    }
}
