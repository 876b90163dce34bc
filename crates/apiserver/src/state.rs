//! What every handler shares: the store, the served resources, the clock.

use std::sync::Arc;

use skiff_store::Store;

use crate::clock::Clock;
use crate::registry::Registry;

/// Shared server state (cheap to clone).
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

/// The contents of [`ApiState`].
pub struct Inner {
    /// All cluster state.
    pub store: Arc<dyn Store>,
    /// The served resources.
    pub registry: Registry,
    /// Where object timestamps come from.
    pub clock: Arc<dyn Clock>,
    /// `host:port` clients reach this server at (for discovery's serverAddressByClientCIDRs).
    pub advertise: String,
    /// Signs and checks service-account tokens.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// Recent events, decoded once, for every watcher.
    pub watch_cache: Arc<crate::watch_cache::WatchCache>,
    /// Namespaces this server deleted recently (their lookups go to the store).
    pub recent_deletions: crate::recent_deletions::RecentDeletions,
    /// The objects this server wrote last, decoded, for their next write.
    pub recent_writes: crate::recent_writes::RecentWrites,
    /// The client of node agents (`pods/log`), when this server has a certificate for them.
    pub kubelet: Option<Arc<crate::kubelet::KubeletClient>>,
    /// The join token's secret: a bearer token naming a joining node (`None`: nodes cannot
    /// join this server).
    pub join_secret: Option<String>,
    /// The cluster CA's certificate (PEM), served at `/cacerts` for joining nodes.
    pub ca_cert: Option<String>,
    /// The network ClusterIPs come from.
    pub service_network: crate::allocation::ServiceNetwork,
    /// The OpenAPI documents, built on first use and again after CRDs change.
    pub openapi: std::sync::RwLock<Option<Arc<crate::openapi::Documents>>>,
}

impl ApiState {
    /// Wraps the shared parts.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Inner {
    /// The OpenAPI documents of what is served now.
    pub fn openapi(&self) -> Arc<crate::openapi::Documents> {
        if let Ok(guard) = self.openapi.read()
            && let Some(docs) = guard.as_ref()
        {
            return docs.clone();
        }
        let docs = Arc::new(crate::openapi::documents(&self.registry));
        if let Ok(mut guard) = self.openapi.write() {
            *guard = Some(docs.clone());
        }
        docs
    }

    /// A custom resource's printer columns; `None` for built-in kinds.
    pub fn printer_columns(
        &self,
        info: &skiff_apimachinery::ResourceInfo,
    ) -> Option<Vec<serde_json::Value>> {
        self.registry
            .find_custom(&info.group, &info.version, &info.plural)
            .map(|c| c.columns)
    }

    /// Forgets the OpenAPI documents (the served resources changed).
    pub fn openapi_changed(&self) {
        if let Ok(mut guard) = self.openapi.write() {
            *guard = None;
        }
    }
}

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
