//! Kubernetes API machinery for skiff, with no I/O: the `Status` error type and its wire format,
//! the table of built-in resources (group, version, kind, plural, scope, verbs, short names), and
//! label and field selectors, the join token's format, and the TLS policy of clients that do not
//! verify their server (`unverified_tls`).

pub mod join_token;
pub mod lists;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod status;
pub mod unverified_tls;
pub mod validation;

pub use resources::{ResourceInfo, Scope};
pub use status::ApiError;
