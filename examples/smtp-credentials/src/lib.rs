//! An operator written with kube-rs exactly as a user would write one, run against skiff in
//! skiff's own tests: each `SMTPCredentials` (`example.skiff.dev/v1`, namespaced) gets a Secret
//! of the same name holding `host`, `port`, `username` and a generated `password`, owned by the
//! `SMTPCredentials` so that deleting it deletes the Secret (garbage collection).
//!
//! - `crd.rs`: the custom resource (kube-derive) and the installation of its CRD.
//! - `controller.rs`: reconcile (server-side apply of the Secret), the per-object back-off of
//!   failures, Events and the `Ready` condition.
//! - `error.rs`: the error type.

mod controller;
mod crd;
mod error;

pub use controller::{
    BACKOFF_BASE, BACKOFF_MAX, MANAGED_BY_LABEL, RECONCILE_FAILED, backoff_delay,
};
pub use crd::{SMTPCredentials, SMTPCredentialsSpec, SMTPCredentialsStatus, crd_yaml, install_crd};
pub use error::Error;

/// The field manager of every write, and the reporting controller of its Events.
pub const FIELD_MANAGER: &str = "smtp-credentials-controller";

/// Installs (server-side applies) the CRD, then runs the controller until its watches end.
pub async fn run(client: kube::Client) -> Result<(), Error> {
    install_crd(&client).await?;
    controller::run(client).await;
    Ok(())
}
