//! Turns an API path and method into what is being asked: discovery, or a verb on a resource
//! (group, version, plural, namespace, name, subresource), as upstream's RequestInfoFactory does.

use http::Method;
use skiff_apimachinery::ApiError;
use skiff_apimachinery::resources::Verb;

/// A parsed API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiPath {
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: every group.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
    Resources {
        /// The group (empty for core).
        group: String,
        /// The version.
        version: String,
    },
    /// A verb on a resource.
    Resource(ResourceRequest),
}

/// A verb on a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRequest {
    /// The group (empty for core).
    pub group: String,
    /// The version.
    pub version: String,
    /// The plural resource name.
    pub resource: String,
    /// The namespace in the path, if any.
    pub namespace: Option<String>,
    /// The object name, if any.
    pub name: Option<String>,
    /// The subresource, if any (`status`, `scale`, ...).
    pub subresource: Option<String>,
    /// What follows a `proxy` subresource (`nodes/{name}/proxy/{path}`), without its leading `/`.
    pub proxy_path: Option<String>,
}

/// Subresources of a namespace, which `namespaces/{name}/{x}` means instead of a resource.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Parses an API path (without the query).
pub fn parse(path: &str) -> Result<ApiPath, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Ok(ApiPath::CoreVersions),
        ["apis"] => return Ok(ApiPath::Groups),
        ["apis", group] => return Ok(ApiPath::Group((*group).to_string())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::NoSuchResource),
    };
    if rest.is_empty() {
        return Ok(ApiPath::Resources {
            group: group.into(),
            version: version.into(),
        });
    }
    if rest.iter().any(|p| p.is_empty()) {
        return Err(ApiError::NoSuchResource);
    }
    let mut namespace = None;
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
        namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    let request = ResourceRequest {
        group: group.into(),
        version: version.into(),
        resource: rest[0].into(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
        proxy_path: (rest.get(2) == Some(&"proxy")).then(|| rest[3..].join("/")),
    };
    if rest.len() > 3 && request.proxy_path.is_none() {
        return Err(ApiError::NoSuchResource);
    }
    Ok(ApiPath::Resource(request))
}

/// The verb a method means on a resource path.
pub fn verb(method: &Method, has_name: bool, watch: bool) -> Option<Verb> {
    Some(match (method.as_str(), has_name) {
        ("GET" | "HEAD", _) if watch => Verb::Watch,
        ("GET" | "HEAD", true) => Verb::Get,
        ("GET" | "HEAD", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourceRequest {
        match parse(path).unwrap() {
            ApiPath::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_should_split_namespaced_paths() {
        let r = resource("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref()),
            ("pods", Some("web"))
        );
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let d = resource("/apis/apps/v1/namespaces/x/deployments");
        assert_eq!(
            (d.group.as_str(), d.resource.as_str(), d.name),
            ("apps", "deployments", None)
        );
    }

    #[test]
    fn parse_should_treat_namespaces_as_a_resource() {
        let ns = resource("/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_deref(), ns.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let fin = resource("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (fin.name.as_deref(), fin.subresource.as_deref()),
            (Some("x"), Some("finalize"))
        );
        assert_eq!(resource("/api/v1/pods").namespace, None);
    }

    #[test]
    fn parse_should_find_discovery_paths() {
        assert_eq!(parse("/api").unwrap(), ApiPath::CoreVersions);
        assert_eq!(parse("/apis/apps").unwrap(), ApiPath::Group("apps".into()));
        assert_eq!(
            parse("/apis/apps/v1").unwrap(),
            ApiPath::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert!(parse("/nope").is_err());
        assert!(parse("/api/v1/namespaces/a/pods/b/c/d").is_err());
    }
}
