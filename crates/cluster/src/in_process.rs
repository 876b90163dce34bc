//! The in-process cluster the tests share: the API router over the memory store (no TLS, no
//! port), kube-rs clients for components, and the controllers and schedulers when a test wants
//! them.

use std::sync::Arc;

use skiff_apiserver::clock::{Clock, SystemClock};
use skiff_store::memory::MemoryStore;
use tokio_util::sync::CancellationToken;

use crate::control_plane::{component_client, until_cancelled};

/// What the root-CA publisher puts in every namespace of an in-process cluster: its API is
/// reached without TLS, so there is no CA to trust, and pods get this text in its place.
pub const IN_PROCESS_CA: &str = "in-process cluster: no TLS, no CA\n";

/// An API over a fresh memory store.
pub struct InProcess {
    /// The API router; requests must carry an `auth::Caller` extension.
    pub router: axum::Router,
    /// The store under it, for tests that look beneath the API.
    pub store: Arc<MemoryStore>,
}

impl InProcess {
    /// A fresh cluster with the default watch cache and the system clock.
    pub async fn start() -> Result<Self, skiff_apiserver::ServerError> {
        Self::with(
            skiff_apiserver::watch_cache::DEFAULT_CAPACITY,
            Arc::new(SystemClock),
        )
        .await
    }

    /// A fresh cluster keeping `watch_cache_capacity` events for watchers, on `clock`.
    pub async fn with(
        watch_cache_capacity: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, skiff_apiserver::ServerError> {
        let store = Arc::new(MemoryStore::new());
        let router =
            skiff_apiserver::in_process(store.clone(), clock, watch_cache_capacity).await?;
        Ok(Self { router, store })
    }

    /// A kube-rs client with the identity `system:skiff:{component}`.
    pub fn client(&self, component: &str) -> kube::Client {
        component_client(&self.router, component)
    }

    /// Starts the controllers; they run until the returned handle is stopped (or the test's
    /// runtime ends).
    pub fn start_controllers(&self) -> Controllers {
        let client = self.client("controllers");
        let options = skiff_controllers::Options {
            root_ca: Some(IN_PROCESS_CA.into()),
            ..skiff_controllers::Options::default()
        };
        Controllers::spawn("controllers", skiff_controllers::run(client, options))
    }

    /// Starts a scheduler with `options`; it runs until the returned handle is stopped (or the
    /// test's runtime ends). Several may run at once: one leads.
    pub fn start_scheduler(&self, options: skiff_scheduler::Options) -> Controllers {
        let client = self.client("scheduler");
        Controllers::spawn("scheduler", skiff_scheduler::run(client, options))
    }
}

/// Running components (the controllers, a scheduler) of an [`InProcess`] cluster.
pub struct Controllers {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<&'static str>,
}

impl Controllers {
    fn spawn(name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(until_cancelled(name, stop.clone(), work));
        Controllers { stop, task }
    }

    /// Stops them and waits until they have.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the controllers failed while stopping");
        }
    }
}
