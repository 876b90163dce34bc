//! skiff's API server: the Kubernetes REST API (v1.34) over HTTPS, so that unmodified kubectl,
//! client libraries and operators work against skiff. All state is in a `skiff_store::Store`;
//! this crate never keeps state of its own that a restart could lose.

mod age;
pub mod allocation;
mod apply;
pub mod auth;
mod body;
pub mod bootstrap;
pub mod certs;
pub mod clock;
mod coalesced;
mod crd;
mod duplicates;
mod guaranteed;
mod handlers;
pub mod kubelet;
mod objects;
mod openapi;
mod openapi_proto;
mod patch;
mod printers;
mod priority;
mod recent_deletions;
mod recent_writes;
mod registry;
mod request;
mod respond;
mod schemas;
mod service_accounts;
mod shapes;
pub mod state;
mod storage;
mod strategy;
mod table;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod tokens;
mod types;
mod validation;
pub mod watch_cache;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use skiff_store::Store;

use crate::clock::Clock;
use crate::registry::Registry;
use crate::state::{ApiState, Inner};

/// The Kubernetes version skiff speaks.
pub const KUBERNETES_VERSION: &str = "v1.34.0";

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where certificates and the admin kubeconfig live.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub bind_address: IpAddr,
    /// The HTTPS port.
    pub https_port: u16,
    /// The network ClusterIPs come from (the `kubernetes` Service takes its first address).
    pub service_network: allocation::ServiceNetwork,
}

/// Where the join token lives in the data directory.
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Certificates could not be created or loaded.
    #[error(transparent)]
    Pki(#[from] certs::PkiError),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The port could not be bound.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The service-account key could not be created or loaded.
    #[error(transparent)]
    Tokens(#[from] tokens::TokenError),
    /// The store could not be read.
    #[error("the datastore: {0}")]
    Store(#[from] skiff_store::StoreError),
    /// Bootstrap objects could not be created.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// The client of node agents could not be configured.
    #[error("configuring the client of node agents")]
    Kubelet(#[source] kubelet::KubeletError),
}

/// A running API server.
pub struct Server {
    /// The admin kubeconfig written on start.
    pub kubeconfig: PathBuf,
    /// The address it listens on.
    pub address: SocketAddr,
    /// The API router, for in-process clients.
    pub router: Router,
    /// The cluster CA's certificate (PEM), which pods are given to trust the API.
    pub ca_cert: String,
    /// The file holding the join token (`skiff agent --token`).
    pub join_token: PathBuf,
    serving: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting connections.
    pub fn stop(self) {
        self.serving.abort();
    }
}

async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "major": "1",
        "minor": "34",
        "gitVersion": format!("{KUBERNETES_VERSION}+skiff-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    }))
}

/// The cluster CA's certificate, for nodes joining with a token (which holds its hash, so the
/// answer needs no trust in this unverified connection).
async fn ca_certificates(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &state.ca_cert {
        Some(pem) => pem.clone().into_response(),
        None => crate::respond::error(&skiff_apimachinery::ApiError::NotFound(
            skiff_apimachinery::status::Target::new("", "", "cacerts"),
        )),
    }
}

/// How long a health check waits for the store to answer a read.
const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `/readyz` and `/healthz`: ready while the store answers a read (upstream's `etcd` check), so
/// a server whose reads hang says so instead of "ok". `/livez` stays a plain "ok".
async fn store_check(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> (axum::http::StatusCode, String) {
    let reason =
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.current_revision()).await {
            Ok(Ok(_)) => return (axum::http::StatusCode::OK, "ok".into()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer from the store in {STORE_CHECK_TIMEOUT:?}"),
        };
    tracing::warn!(%reason, "health check: the store did not answer a read");
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("[-]store failed: {reason}\nhealth check failed\n"),
    )
}

/// The HTTP routes, without TLS: health, version and the API.
pub fn router(state: ApiState) -> Router {
    // Open to anonymous callers, but a bearer token that fails authentication is a 401 here too.
    let open = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(store_check))
        .route("/healthz", get(store_check))
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/cacerts", get(ca_certificates))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::reject_bad_bearer,
        ));
    Router::new()
        .merge(open)
        .fallback(handlers::api)
        // A wrong method on an open path (`POST /version`) is a 405 with a Status, too.
        .method_not_allowed_fallback(|| async {
            crate::respond::error(&skiff_apimachinery::ApiError::MethodNotAllowed)
        })
        .with_state(state)
}

/// The API router over `store`, bootstrapped, without TLS: for in-process clients and tests.
/// Requests must carry an [`auth::Caller`] extension. `watch_cache_capacity` is the number of
/// recent events kept for watchers ([`watch_cache::DEFAULT_CAPACITY`] in a server).
pub async fn in_process(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    watch_cache_capacity: usize,
) -> Result<Router, ServerError> {
    let watch_cache =
        watch_cache::WatchCache::start(Arc::clone(&store), watch_cache_capacity).await?;
    let state = ApiState::new(Inner {
        store,
        registry: Registry::builtin(),
        clock,
        tokens: Arc::new(tokens::Tokens::ephemeral()?),
        watch_cache,
        advertise: "127.0.0.1:6443".into(),
        recent_deletions: recent_deletions::RecentDeletions::default(),
        recent_writes: recent_writes::RecentWrites::default(),
        kubelet: None,
        join_secret: None,
        ca_cert: None,
        openapi: std::sync::RwLock::new(None),
        service_network: allocation::ServiceNetwork::default(),
    });
    serve_custom_resources(&state).await;
    let router = router(state);
    bootstrap::run(
        &router,
        "127.0.0.1",
        6443,
        allocation::ServiceNetwork::default().kubernetes_ip(),
    )
    .await?;
    Ok(router)
}

/// Serves the stored CRDs' resources now, and follows CRD changes from then on.
async fn serve_custom_resources(state: &ApiState) {
    if let Err(error) = crd::refresh(state).await {
        tracing::warn!(%error, "loading CRDs failed; the CRD watch retries");
    }
    tokio::spawn(crd::follow(state.clone()));
}

/// The router as an in-process component named `component` calls it: every request carries
/// the identity `system:skiff:{component}`.
pub fn for_component(router: Router, component: &str) -> Router {
    let caller = auth::Caller(Some(auth::User {
        name: format!("system:skiff:{component}"),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }));
    router.layer(axum::Extension(caller))
}

/// Creates certificates and the admin kubeconfig if needed, binds the port, creates the
/// bootstrap objects and serves.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Server, ServerError> {
    let address = SocketAddr::new(config.bind_address, config.https_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { address, source })?;
    let reachable = if config.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let pki = certs::load_or_create(
        &config.data_dir.join("tls"),
        &[
            reachable.to_string(),
            config.service_network.kubernetes_ip().to_string(),
        ],
    )?;
    let kubeconfig = config.data_dir.join("admin.kubeconfig");
    let server_url = format!("https://{}", SocketAddr::new(reachable, address.port()));
    certs::write_admin_kubeconfig(&kubeconfig, &server_url, &pki)?;
    let watch_cache =
        watch_cache::WatchCache::start(Arc::clone(&store), watch_cache::DEFAULT_CAPACITY).await?;
    let tokens = tokens::Tokens::load_or_create(&config.data_dir.join("tls").join("sa.key"))?;
    let (kubelet_cert, kubelet_key) = certs::kubelet_client(&config.data_dir.join("tls"))?;
    let kubelet =
        kubelet::KubeletClient::new(&kubelet_cert, &kubelet_key).map_err(ServerError::Kubelet)?;
    let join_path = config.data_dir.join(JOIN_TOKEN_FILE);
    let join = certs::join_token(&join_path, &pki.ca_cert)?;
    let repair_store = Arc::clone(&store);
    let state = ApiState::new(Inner {
        store,
        registry: Registry::builtin(),
        clock,
        tokens: Arc::new(tokens),
        watch_cache,
        advertise: SocketAddr::new(reachable, address.port()).to_string(),
        recent_deletions: recent_deletions::RecentDeletions::default(),
        recent_writes: recent_writes::RecentWrites::default(),
        kubelet: Some(Arc::new(kubelet)),
        join_secret: Some(join.secret),
        ca_cert: Some(pki.ca_cert.clone()),
        openapi: std::sync::RwLock::new(None),
        service_network: config.service_network,
    });
    serve_custom_resources(&state).await;
    let router = router(state);
    bootstrap::run(
        &router,
        &reachable.to_string(),
        address.port(),
        config.service_network.kubernetes_ip(),
    )
    .await?;
    let tls = tls::server_config(&pki)?;
    let serving = tokio::spawn(tls::serve(listener, tls, router.clone()));
    tokio::spawn(allocation::repair(Arc::clone(&repair_store)));
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "API server ready");
    Ok(Server {
        kubeconfig,
        address,
        router,
        ca_cert: pki.ca_cert.clone(),
        join_token: join_path,
        serving,
    })
}
