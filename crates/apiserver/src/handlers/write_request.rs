//! What every write handler (create, update, patch, delete, subresources, tokens) is given about
//! its request. Kept apart from the handlers so they depend on it and not on each other.

use http::HeaderMap;
use serde_json::Value;
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};

use super::params::Params;
use crate::guaranteed::Site;
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

impl WriteRequest<'_> {
    /// Where a guaranteed update of the object at `key` writes, honouring `dryRun`.
    pub fn site<'s>(&'s self, key: &'s str, target: &'s Target) -> Result<Site<'s>, ApiError> {
        Ok(Site {
            info: self.info,
            key,
            target,
            dry_run: self.params.dry_run()?,
        })
    }

    /// Checks an object's `apiVersion`, `kind` and namespace against the request's resource and
    /// path, filling in what it leaves out.
    pub fn check_object(&self, object: &mut Value) -> Result<(), ApiError> {
        crate::objects::check_type(self.info, object)?;
        crate::objects::check_namespace(self.info, object, self.namespace)
    }
}
