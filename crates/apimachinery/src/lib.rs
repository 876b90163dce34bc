//! Kubernetes API machinery for skiff, with no I/O: the `Status` error type and its wire format,
//! the table of built-in resources (group, version, kind, plural, scope, verbs, short names), and
//! label and field selectors, and the join token's format.

pub mod join_token;
pub mod lists;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod status;
pub mod validation;

pub use resources::{ResourceInfo, Scope};
pub use status::ApiError;
