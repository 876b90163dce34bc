//! How skiff's components reach the API. Every component (controllers, scheduler, node agent)
//! uses a plain kube-rs [`kube::Client`], exactly as a user's controller would. When the
//! component runs in the same process as the API server, [`in_process`] gives it a client whose
//! transport calls the API router directly instead of going through TCP and TLS; everything
//! above the transport is the same code path. [`leader`] elects one active instance of a
//! component through a Lease, as client-go's leader election does; [`events`] writes a
//! component's Events; [`placement`] says which nodes a pod may run on; [`lean`] decodes only
//! the metadata a component reads.

pub mod events;
pub mod leader;
pub mod lean;
pub mod placement;

use std::convert::Infallible;

use axum::body::Body;
use tower::ServiceExt;

/// A kube-rs client whose requests go straight to `router` (a `tower::Service`, e.g. the API
/// server's router with the component's identity attached), with `namespace` as its default.
pub fn in_process<S>(router: S, namespace: &str) -> kube::Client
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let transport = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let router = router.clone();
        async move { router.oneshot(request.map(Body::new)).await }
    });
    kube::Client::new(transport, namespace.to_string())
}
