//! `ApiError`: every error the API returns, with upstream's HTTP code, `reason` and message, and
//! its `Status` body. Field order follows Go's struct order, because some clients compare bodies
//! byte for byte.

use serde::Serialize;

/// Which object an error is about (the `details` of a `Status`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The API group (empty for the core group).
    pub group: String,
    /// The resource's plural name, e.g. `configmaps` (upstream puts it in `details.kind`).
    pub resource: String,
    /// The object's name.
    pub name: String,
}

impl Target {
    /// A target in `group` (empty for core) of `resource` named `name`.
    pub fn new(group: &str, resource: &str, name: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
            name: name.to_string(),
        }
    }

    /// `configmaps` or `deployments.apps`, as upstream writes it in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// One field-level problem in an `Invalid` error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// Upstream's cause type, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: String,
    /// What is wrong.
    pub message: String,
    /// The field path, e.g. `metadata.name`.
    pub field: String,
}

/// An error answered as a Kubernetes `Status`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// 404: the object does not exist.
    #[error("{} \"{}\" not found", .0.qualified(), .0.name)]
    NotFound(Target),
    /// 404: no such path or resource.
    #[error("the server could not find the requested resource")]
    NoSuchResource,
    /// 409: create found the object present.
    #[error("{} \"{}\" already exists", .0.qualified(), .0.name)]
    AlreadyExists(Target),
    /// 409: an update carried a stale resourceVersion.
    #[error(
        "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
        .0.qualified(), .0.name
    )]
    Conflict(Target),
    /// 409: some other conflict, with its own message.
    #[error("{message}")]
    ConflictMessage {
        /// The object.
        target: Target,
        /// What conflicts.
        message: String,
    },
    /// 409: server-side apply would take fields other managers own.
    #[error("Apply failed with {} conflict{}: {}", .causes.len(), if .causes.len() == 1 { "" } else { "s" }, apply_conflicts_text(.causes))]
    ApplyConflict {
        /// The object.
        target: Target,
        /// One `FieldManagerConflict` per field.
        causes: Vec<Cause>,
    },
    /// 422: the object failed validation.
    #[error("{kind} \"{}\" is invalid: {}", .target.name, causes_text(.causes))]
    Invalid {
        /// The object's kind, e.g. `ConfigMap`.
        kind: String,
        /// The object.
        target: Target,
        /// What is wrong, per field.
        causes: Vec<Cause>,
    },
    /// 400: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 405: the verb is not supported on this resource.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406: no acceptable representation.
    #[error("{0}")]
    NotAcceptable(String),
    /// 410: the requested resourceVersion is too old.
    #[error("{0}")]
    Expired(String),
    /// 413: the body is too large.
    #[error("the request body is too large (limit {limit} bytes)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 414: the URI is longer than the server takes.
    #[error("the request URI is too long (limit {limit} bytes)")]
    UriTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// 413: the request is too large in some other way (e.g. a JSON patch's operations).
    #[error("Request entity too large: {0}")]
    RequestEntityTooLarge(String),
    /// 415: the Content-Type is not one this endpoint takes.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// 403: not allowed (e.g. creating in a terminating namespace).
    #[error("{message}")]
    Forbidden {
        /// The object.
        target: Target,
        /// Why.
        message: String,
    },
    /// 401: no valid credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// 500: a failure inside the server.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// 503: the server is not ready or the store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 504: the store did not answer in time.
    #[error("{0}")]
    Timeout(String),
}

fn apply_conflicts_text(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.message, c.field))
        .collect();
    parts.join("\n")
}

fn causes_text(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

#[derive(Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: serde_json::Map<String, serde_json::Value>,
    status: &'static str,
    message: String,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    code: u16,
}

#[derive(Serialize)]
struct Details<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    group: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    causes: &'a [Cause],
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Self::NotFound(_) | Self::NoSuchResource => 404,
            Self::AlreadyExists(_)
            | Self::Conflict(_)
            | Self::ConflictMessage { .. }
            | Self::ApplyConflict { .. } => 409,
            Self::Invalid { .. } => 422,
            Self::BadRequest(_) => 400,
            Self::Unauthorized => 401,
            Self::Forbidden { .. } => 403,
            Self::MethodNotAllowed => 405,
            Self::NotAcceptable(_) => 406,
            Self::Expired(_) => 410,
            Self::TooLarge { .. } | Self::RequestEntityTooLarge(_) => 413,
            Self::UriTooLong { .. } => 414,
            Self::UnsupportedMediaType(_) => 415,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
            Self::Timeout(_) => 504,
        }
    }

    /// Upstream's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::NoSuchResource => "NotFound",
            Self::AlreadyExists(_) => "AlreadyExists",
            Self::Conflict(_) | Self::ConflictMessage { .. } | Self::ApplyConflict { .. } => {
                "Conflict"
            }
            Self::Invalid { .. } => "Invalid",
            Self::BadRequest(_) => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotAcceptable(_) => "NotAcceptable",
            Self::Expired(_) => "Expired",
            Self::TooLarge { .. } | Self::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            Self::UriTooLong { .. } => "RequestURITooLong",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::Internal(_) => "InternalError",
            Self::Unavailable(_) => "ServiceUnavailable",
            Self::Timeout(_) => "Timeout",
        }
    }

    fn target(&self) -> Option<&Target> {
        match self {
            Self::NotFound(t) | Self::AlreadyExists(t) | Self::Conflict(t) => Some(t),
            Self::ConflictMessage { target, .. }
            | Self::ApplyConflict { target, .. }
            | Self::Invalid { target, .. }
            | Self::Forbidden { target, .. } => Some(target),
            _ => None,
        }
    }

    /// The `Status` object, as a JSON value.
    pub fn to_status(&self) -> serde_json::Value {
        let empty: &[Cause] = &[];
        let causes = match self {
            Self::Invalid { causes, .. } | Self::ApplyConflict { causes, .. } => causes.as_slice(),
            _ => empty,
        };
        let kind = match self {
            Self::Invalid { kind, .. } => kind.as_str(),
            _ => self.target().map_or("", |t| t.resource.as_str()),
        };
        let details = self.target().map(|t| Details {
            name: &t.name,
            group: &t.group,
            kind,
            causes,
        });
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: serde_json::Map::new(),
            status: "Failure",
            message: self.to_string(),
            reason: self.reason(),
            details,
            code: self.code(),
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }

    /// The `Status` body as Go's encoder writes it (compact, with a trailing newline).
    pub fn to_body(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        body.push(b'\n');
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_exists_should_match_upstream_bytes() {
        let error = ApiError::AlreadyExists(Target::new("", "services", "x"));
        let expected = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"services \\\"x\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"x\",\"kind\":\"services\"},\"code\":409}\n";
        assert_eq!(String::from_utf8(error.to_body()).unwrap(), expected);
    }

    #[test]
    fn group_should_sit_between_name_and_kind() {
        let error = ApiError::NotFound(Target::new("apps", "deployments", "web"));
        let body = String::from_utf8(error.to_body()).unwrap();
        assert!(body.contains(
            "\"message\":\"deployments.apps \\\"web\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"web\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404"
        ));
    }

    #[test]
    fn invalid_should_list_causes() {
        let error = ApiError::Invalid {
            kind: "ConfigMap".into(),
            target: Target::new("", "configmaps", "Bad"),
            causes: vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: \"Bad\": must be lowercase".into(),
                field: "metadata.name".into(),
            }],
        };
        assert_eq!(error.code(), 422);
        assert_eq!(
            error.to_string(),
            "ConfigMap \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\": must be lowercase"
        );
        assert_eq!(error.to_status()["details"]["kind"], "ConfigMap");
    }
}
