//! Query parameters of API requests.

use std::collections::BTreeMap;

use skiff_apimachinery::ApiError;
use skiff_apimachinery::selector::{FieldSelector, LabelSelector};

/// The query of one request.
#[derive(Clone, Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses the query string.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let uri: http::Uri = format!("/?{}", query.unwrap_or_default())
            .parse()
            .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
        let map = axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(&uri)
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Self(map.0))
    }

    /// A parameter's value (empty values count as absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`true` or `1`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    /// A non-negative integer parameter.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid {name}: \"{v}\"")))
            })
            .transpose()
    }

    /// `labelSelector`.
    pub fn labels(&self) -> Result<LabelSelector, ApiError> {
        LabelSelector::parse(self.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// `fieldSelector`.
    pub fn fields(&self) -> Result<FieldSelector, ApiError> {
        FieldSelector::parse(self.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// The parameters of the list that starts a watch: its selectors, nothing that pages.
    pub fn strip_for_initial_list(&mut self) {
        self.0
            .retain(|k, _| matches!(k.as_str(), "labelSelector" | "fieldSelector"));
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "Invalid dryRun value \"{other}\": supported values: \"All\""
            ))),
        }
    }
}
