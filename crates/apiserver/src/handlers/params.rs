//! Query parameters of API requests, decoded and checked as upstream decodes them into its
//! option types: a value that does not decode (`gracePeriodSeconds=abc`, a bad selector) is a
//! 400 with Go's message, and what `ValidateListOptions`, `ValidateDeleteOptions` and the
//! create, update and patch option checks refuse is a 422 on `ListOptions.meta.k8s.io` (and so
//! on), before the request does anything.

use std::collections::BTreeMap;
use std::num::IntErrorKind;

use http::HeaderMap;
use skiff_apimachinery::ApiError;
use skiff_apimachinery::resources::Verb;
use skiff_apimachinery::selector::{FieldSelector, LabelSelector};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::validation::{BadValue, FieldError, field_manager, go_quote, invalid};

/// The query of one request.
#[derive(Clone, Debug, Default)]
pub struct Params(BTreeMap<String, String>);

/// Go's `strconv.ParseInt(value, 10, 64)`, with its error as the 400's message.
fn parse_int(value: &str) -> Result<i64, ApiError> {
    value.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        ApiError::BadRequest(format!(
            "strconv.ParseInt: parsing {}: {why}",
            go_quote(value)
        ))
    })
}

/// A 422 on the option type `kind` (`ListOptions`, ...), as upstream words it.
fn invalid_options(kind: &str, errors: &[FieldError]) -> ApiError {
    invalid(
        &format!("{kind}.meta.k8s.io"),
        Target::new("meta.k8s.io", &kind.to_lowercase(), ""),
        errors,
    )
}

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

    /// A parameter as given, even empty.
    fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean parameter as upstream reads one: given, and neither `0` nor `false` (in any
    /// case) — `watch=yes` and `watch=` are true.
    pub fn flag(&self, name: &str) -> bool {
        self.raw(name)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }

    /// An integer parameter (a negative one counts as 0); a value that is not a decimal
    /// integer is a 400 with Go's message.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.raw(name)
            .map(|v| parse_int(v).map(|n| u64::try_from(n).unwrap_or(0)))
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

    /// `dryRun=All` (other values are refused earlier, by `validate`).
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "Invalid dryRun value \"{other}\": supported values: \"All\""
            ))),
        }
    }

    /// Decodes and checks the options of a request with `verb` (`list`, `delete`, ...) as
    /// upstream's handler does before it acts: `ListOptions` for lists, watches and
    /// deletecollection; `DeleteOptions` from the query when the body is empty; the options
    /// of create, update and patch (`headers` give the patch type).
    pub fn validate(
        &self,
        verb: Verb,
        headers: &HeaderMap,
        has_body: bool,
    ) -> Result<(), ApiError> {
        match verb {
            Verb::List | Verb::Watch => self.list_options(verb == Verb::Watch),
            Verb::DeleteCollection => {
                self.list_options(false)?;
                if has_body {
                    return Ok(());
                }
                self.delete_options()
            }
            Verb::Delete if !has_body => self.delete_options(),
            Verb::Create => self.write_options("CreateOptions", Vec::new()),
            Verb::Update => self.write_options("UpdateOptions", Vec::new()),
            Verb::Patch => {
                let media = headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let media = media.split(';').next().unwrap_or_default().trim();
                let apply = matches!(
                    media,
                    "application/apply-patch+yaml" | "application/apply-patch+cbor"
                );
                let mut errors = Vec::new();
                if apply && self.get("fieldManager").is_none() {
                    errors.push(FieldError::required(
                        "fieldManager",
                        "is required for apply patch",
                    ));
                } else if !apply && self.raw("force").is_some() {
                    errors.push(FieldError::forbidden(
                        "force",
                        "may not be specified for non-apply patch",
                    ));
                }
                self.write_options("PatchOptions", errors)
            }
            _ => Ok(()),
        }
    }

    /// `ValidateCreateOptions`, `ValidateUpdateOptions`, `ValidatePatchOptions` (after the
    /// patch type's own `errors`).
    fn write_options(&self, kind: &str, mut errors: Vec<FieldError>) -> Result<(), ApiError> {
        if let Some(manager) = self.get("fieldManager") {
            errors.extend(field_manager(manager, "fieldManager"));
        }
        if let Some(value) = self.get("dryRun").filter(|v| *v != "All") {
            errors.push(dry_run_error(value));
        }
        if let Some(value) = self
            .raw("fieldValidation")
            .filter(|v| !matches!(*v, "" | "Ignore" | "Strict" | "Warn"))
        {
            errors.push(FieldError::not_supported(
                "fieldValidation",
                value,
                &["", "Ignore", "Strict", "Warn"],
            ));
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(invalid_options(kind, &errors))
    }

    /// Decodes `ListOptions` (numbers, then selectors, as upstream's conversion does) and
    /// applies `ValidateListOptions` with the WatchList defaults of 1.34.
    fn list_options(&self, watch: bool) -> Result<(), ApiError> {
        for name in ["timeoutSeconds", "limit"] {
            if let Some(value) = self.raw(name) {
                parse_int(value)?;
            }
        }
        self.labels()?;
        self.fields()?;
        let resource_version = self.get("resourceVersion");
        let continued = self.get("continue").is_some();
        let mut matching = self.get("resourceVersionMatch");
        let mut initial_events = self
            .raw("sendInitialEvents")
            .map(|_| self.flag("sendInitialEvents"));
        let field = "resourceVersionMatch";
        let mut errors = Vec::new();
        if watch {
            // A plain watch from "now" (or from 0) streams the initial state: WatchList's
            // defaults, before validation.
            if initial_events.is_none()
                && matching.is_none()
                && resource_version.is_none_or(|rv| rv == "0")
            {
                initial_events = Some(true);
                matching = Some("NotOlderThan");
            }
            if initial_events.is_some() && matching != Some("NotOlderThan") {
                errors.push(FieldError::forbidden(
                    field,
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if let Some(value) = matching {
                if initial_events.is_none() {
                    errors.push(FieldError::forbidden(
                        field,
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if value != "NotOlderThan" {
                    errors.push(FieldError::not_supported(field, value, &["NotOlderThan"]));
                }
                if continued {
                    errors.push(FieldError::forbidden(
                        field,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if let Some(value) = matching {
                if resource_version.is_none() {
                    errors.push(FieldError::forbidden(
                        field,
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if continued {
                    errors.push(FieldError::forbidden(
                        field,
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                if !matches!(value, "Exact" | "NotOlderThan") {
                    errors.push(FieldError::not_supported(
                        field,
                        value,
                        &["Exact", "NotOlderThan", ""],
                    ));
                }
                if value == "Exact" && resource_version == Some("0") {
                    errors.push(FieldError::forbidden(
                        field,
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            if initial_events.is_some() {
                errors.push(FieldError::forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden for list",
                ));
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(invalid_options("ListOptions", &errors))
    }

    /// Decodes `DeleteOptions` from the query and applies `ValidateDeleteOptions`.
    fn delete_options(&self) -> Result<(), ApiError> {
        if let Some(value) = self.raw("gracePeriodSeconds") {
            parse_int(value)?;
        }
        let mut errors = Vec::new();
        let propagation = self.raw("propagationPolicy");
        if let Some(policy) = propagation {
            if self.raw("orphanDependents").is_some() {
                errors.push(FieldError::invalid(
                    "propagationPolicy",
                    policy,
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            if !matches!(policy, "Foreground" | "Background" | "Orphan") {
                errors.push(FieldError::not_supported(
                    "propagationPolicy",
                    policy,
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
            }
        }
        if let Some(value) = self.get("dryRun").filter(|v| *v != "All") {
            errors.push(dry_run_error(value));
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(invalid_options("DeleteOptions", &errors))
    }
}

/// `ValidateDryRun`: the values are a list, shown as JSON.
fn dry_run_error(value: &str) -> FieldError {
    FieldError::not_supported(
        "dryRun",
        BadValue::Json(serde_json::json!([value]).to_string()),
        &["All"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::parse(Some(query)).unwrap()
    }

    fn check(query: &str, verb: Verb) -> Result<(), ApiError> {
        params(query).validate(verb, &HeaderMap::new(), false)
    }

    #[test]
    fn grace_period_that_is_not_a_number_should_be_a_400() {
        let error = check("gracePeriodSeconds=abc", Verb::Delete).unwrap_err();
        assert_eq!(error.code(), 400);
        assert_eq!(
            error.to_string(),
            "strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert!(check("gracePeriodSeconds=0", Verb::Delete).is_ok());
        assert!(
            params("gracePeriodSeconds=abc")
                .validate(Verb::Delete, &HeaderMap::new(), true)
                .is_ok(),
            "a body's DeleteOptions win over the query"
        );
        assert_eq!(
            check("limit=99999999999999999999", Verb::List)
                .unwrap_err()
                .to_string(),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
    }

    #[test]
    fn resource_version_match_without_resource_version_should_be_a_422() {
        let error = check("resourceVersionMatch=Exact", Verb::List).unwrap_err();
        assert_eq!(error.code(), 422);
        assert_eq!(
            error.to_string(),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
        assert_eq!(
            check("resourceVersion=5&resourceVersionMatch=Bogus", Verb::List)
                .unwrap_err()
                .to_string(),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Unsupported value: \"Bogus\": supported values: \"Exact\", \"NotOlderThan\", \"\""
        );
        assert!(
            check(
                "resourceVersion=5&resourceVersionMatch=NotOlderThan",
                Verb::List
            )
            .is_ok()
        );
        assert!(check("resourceVersion=0&resourceVersionMatch=Exact", Verb::List).is_err());
        assert!(check("sendInitialEvents=true", Verb::List).is_err());
    }

    #[test]
    fn watch_options_should_follow_watch_list_rules() {
        assert!(check("watch=1", Verb::Watch).is_ok());
        assert!(check("watch=1&resourceVersion=7", Verb::Watch).is_ok());
        assert!(
            check(
                "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
                Verb::Watch
            )
            .is_ok()
        );
        assert_eq!(
            check("sendInitialEvents=true", Verb::Watch)
                .unwrap_err()
                .to_string(),
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
        assert!(
            check(
                "resourceVersion=7&resourceVersionMatch=NotOlderThan",
                Verb::Watch
            )
            .is_err()
        );
    }

    #[test]
    fn field_manager_over_128_characters_should_be_a_422() {
        let long = "m".repeat(129);
        let error = check(&format!("fieldManager={long}"), Verb::Create).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes"
        );
        let error = check("fieldManager=a%07b", Verb::Update).unwrap_err();
        assert_eq!(
            error.to_string(),
            "UpdateOptions.meta.k8s.io \"\" is invalid: fieldManager: Invalid value: \"a\\ab\": invalid character U+0007 (at position 1)"
        );
        assert!(check(&format!("fieldManager={}", "m".repeat(128)), Verb::Create).is_ok());
    }

    #[test]
    fn write_options_should_refuse_bad_dry_run_field_validation_and_force() {
        assert_eq!(
            check("dryRun=x", Verb::Create).unwrap_err().to_string(),
            "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: [\"x\"]: supported values: \"All\""
        );
        assert_eq!(
            check("fieldValidation=Loose", Verb::Update)
                .unwrap_err()
                .to_string(),
            "UpdateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"Loose\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        let error = params("force=true")
            .validate(Verb::Patch, &headers, true)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/apply-patch+yaml".parse().unwrap(),
        );
        assert!(
            params("force=true")
                .validate(Verb::Patch, &headers, true)
                .is_err()
        );
        assert!(
            params("force=true&fieldManager=me")
                .validate(Verb::Patch, &headers, true)
                .is_ok()
        );
    }

    #[test]
    fn invalid_label_selector_keys_should_be_a_400() {
        let error = check("labelSelector=-bad%3Dx", Verb::List).unwrap_err();
        assert_eq!(error.code(), 400);
        assert!(
            error
                .to_string()
                .starts_with("unable to parse requirement: <nil>: Invalid value: \"-bad\""),
            "{error}"
        );
        assert_eq!(
            check("fieldSelector=nonsense", Verb::Watch)
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn flags_should_read_as_upstream_reads_booleans() {
        let p = params("a=yes&b=0&c=False&d=");
        assert!(p.flag("a") && !p.flag("b") && !p.flag("c") && p.flag("d"));
        assert!(!p.flag("missing"));
        assert_eq!(params("limit=-5").number("limit").unwrap(), Some(0));
    }
}
