//! One watch of every node kept as a cache, for the controllers that look at all nodes on a
//! timer (node lifecycle every 5 s, the pod garbage collector every 20 s), as upstream's
//! controller manager shares one node informer. Before, each of their passes listed every node:
//! at 5,000 nodes that was a LIST of thousands of objects every few seconds, idle or not, where
//! a watch carries only what changes. [`cache`] keeps any such watch-fed cache (node lifecycle
//! keeps its Leases with it).

use futures::{Future, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use skiff_client::lean::NodeHealth;

/// The cache of every node (only what [`NodeHealth`] keeps: names, taints, conditions) and the
/// future that keeps it (run it as long as the cache is read; a reader waits for
/// `wait_until_ready` first).
pub fn start(client: &kube::Client) -> (Store<NodeHealth>, impl Future<Output = ()> + use<>) {
    cache(Api::<NodeHealth>::all(client.clone()))
}

/// A cache of every object `api` lists, kept by a watch with back-off, and the future that
/// keeps it.
pub(crate) fn cache<K>(api: Api<K>) -> (Store<K>, impl Future<Output = ()> + use<K>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let feed = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| std::future::ready(()));
    (store, feed)
}
