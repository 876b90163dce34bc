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
    /// The OpenAPI documents, built on first use.
    pub openapi: std::sync::OnceLock<crate::openapi::Documents>,
}

impl ApiState {
    /// Wraps the shared parts.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
