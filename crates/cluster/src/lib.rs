//! skiff's composition root. [`control_plane`] wires what `skiff server` runs — the store's
//! compactor, the API server and the controllers (kube-rs clients of that API over the
//! in-process transport) — and stops them in order, cancelling and joining every task.
//! [`in_process`] is the one in-memory cluster the workspace's tests start: the API router over
//! the memory store, clients for components, and the controllers on demand.
//!
//! This crate holds wiring only: no component logic, no API semantics.

pub mod control_plane;
pub mod in_process;

pub use control_plane::{ControlPlane, ControlPlaneError, Options};
pub use in_process::InProcess;
