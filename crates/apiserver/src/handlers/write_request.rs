//! What every write handler (create, update, patch, delete, subresources, tokens) is given about
//! its request. Kept apart from the handlers so they depend on it and not on each other.

use http::HeaderMap;
use skiff_apimachinery::ResourceInfo;

use super::params::Params;
use crate::respond::Format;

/// What a write handler needs about its request.
pub struct WriteRequest<'a> {
    /// The resource.
    pub info: &'a ResourceInfo,
    /// The namespace in the path.
    pub namespace: Option<&'a str>,
    /// The query parameters.
    pub params: &'a Params,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The response format.
    pub format: Format,
}
