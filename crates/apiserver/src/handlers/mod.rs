//! The API's entry point: authenticates the caller, parses the path, negotiates the format and
//! dispatches to discovery, read, write or watch.

mod componentstatus;
mod delete;
mod discovery;
mod fields;
mod logs;
mod node_agent;
mod node_proxy;
mod params;
mod read;
mod scale;
mod streams;
mod subresources;
mod tokens;
mod watch;
mod write;
mod write_request;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{Method, StatusCode};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::resources::Verb;

use crate::auth::Caller;
use crate::body;
use crate::request::{self, ApiPath, ResourceRequest};
use crate::respond::{self, Answer, Format};
use crate::state::ApiState;
use crate::strategy::{self, Serving};
use params::Params;
use write_request::WriteRequest;

/// The longest path and query the API takes (hyper itself refuses a URI over 64 KiB with a bare
/// 414).
pub(crate) const MAX_URI_BYTES: usize = 32 * 1024;

/// For the paths anonymous callers may use: a request that presents a bearer token which fails
/// authentication (and no client certificate) gets 401, as upstream answers.
pub async fn reject_bad_bearer(
    State(state): State<ApiState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let certified = request
        .extensions()
        .get::<Caller>()
        .is_some_and(|c| c.0.is_some());
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if bearer
        && !certified
        && tokens::caller_from_bearer(&state, request.headers())
            .await
            .0
            .is_none()
    {
        return respond::error(&ApiError::Unauthorized);
    }
    next.run(request).await
}

/// Serves every API path (`/api...`, `/apis...`).
pub async fn api(State(state): State<ApiState>, request: Request) -> Answer {
    Answer(handle(&state, request).await)
}

async fn handle(state: &ApiState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let mut caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    if caller.0.is_none() {
        caller = tokens::caller_from_bearer(state, &parts.headers).await;
    }
    if caller.0.is_none() {
        return Err(ApiError::Unauthorized);
    }
    if let Some(response) = crate::openapi::protobuf_response(|| state.openapi(), &parts) {
        return Ok(response);
    }
    let format = respond::negotiate(&parts.headers)?;
    let params = Params::parse(parts.uri.query())?;
    let json = |value: serde_json::Value| {
        let out = if format == Format::Yaml {
            Format::Yaml
        } else {
            Format::Json
        };
        Ok(respond::value(StatusCode::OK, &value, out))
    };
    if parts.uri.path().len() + parts.uri.query().map_or(0, str::len) > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong {
            limit: MAX_URI_BYTES,
        });
    }
    let read = matches!(parts.method, Method::GET | Method::HEAD);
    if let Some(rest) = parts.uri.path().strip_prefix("/openapi/") {
        if !read {
            return Err(ApiError::MethodNotAllowed);
        }
        let docs = state.openapi();
        return match rest.trim_end_matches('/') {
            "v2" => json(docs.v2.clone()),
            "v3" => json(crate::openapi::index(&docs)),
            other => match other.strip_prefix("v3/").and_then(|key| docs.v3.get(key)) {
                Some((doc, _)) => json(doc.clone()),
                None => Err(ApiError::NoSuchResource),
            },
        };
    }
    let path = request::parse(parts.uri.path())?;
    // Discovery documents are read-only (`DELETE /api/v1` is not a read).
    if !read && !matches!(path, ApiPath::Resource(_)) {
        return Err(ApiError::MethodNotAllowed);
    }
    match path {
        ApiPath::CoreVersions if format == Format::Discovery => Ok(respond::value(
            StatusCode::OK,
            &discovery::aggregated(state, true),
            Format::Discovery,
        )),
        ApiPath::Groups if format == Format::Discovery => Ok(respond::value(
            StatusCode::OK,
            &discovery::aggregated(state, false),
            Format::Discovery,
        )),
        ApiPath::CoreVersions => json(discovery::core_versions(state)),
        ApiPath::Groups => json(discovery::groups(state)),
        ApiPath::Group(group) => json(discovery::group(state, &group)?),
        ApiPath::Resources { group, version } => {
            json(discovery::resources(state, &group, &version)?)
        }
        ApiPath::Resource(target) => {
            // Aggregated discovery is only a representation of /api and /apis.
            let format = if format == Format::Discovery {
                Format::Json
            } else {
                format
            };
            resource(state, &target, &parts, &params, format, &caller, body).await
        }
    }
}

/// A resource request resolved once, as upstream's RequestInfo: the resource, where, and what.
struct RequestInfo<'a> {
    info: std::sync::Arc<ResourceInfo>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
    verb: Verb,
}

impl<'a> RequestInfo<'a> {
    /// Finds the resource and checks that the path and the method fit it: 404 for what is not
    /// served (a namespace on a cluster-scoped resource, a named namespaced object without one,
    /// an unknown subresource), 405 for a verb it does not allow.
    fn resolve(
        state: &ApiState,
        target: &'a ResourceRequest,
        method: &Method,
        params: &Params,
    ) -> Result<Self, ApiError> {
        let info = state
            .registry
            .find(&target.group, &target.version, &target.resource)
            .ok_or(ApiError::NoSuchResource)?;
        if !info.namespaced() && target.namespace.is_some() {
            return Err(ApiError::NoSuchResource);
        }
        if info.namespaced() && target.name.is_some() && target.namespace.is_none() {
            return Err(ApiError::NoSuchResource);
        }
        let subresource = target.subresource.as_deref();
        if let Some(sub) = subresource
            && !info.has_subresource(sub)
        {
            return Err(ApiError::NoSuchResource);
        }
        let verb = request::verb(method, target.name.is_some(), params.flag("watch"))
            .ok_or(ApiError::MethodNotAllowed)?;
        if subresource.is_none() && !info.allows(verb.as_str()) {
            return Err(ApiError::MethodNotAllowed);
        }
        Ok(Self {
            info,
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
            subresource,
            verb,
        })
    }
}

async fn resource(
    state: &ApiState,
    target: &ResourceRequest,
    parts: &http::request::Parts,
    params: &Params,
    format: Format,
    caller: &Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let request = RequestInfo::resolve(state, target, &parts.method, params)?;
    let RequestInfo {
        ref info,
        namespace,
        name,
        subresource,
        verb,
    } = request;
    let headers = &parts.headers;
    if strategy::of(info).serving == Serving::ComponentStatuses {
        return Ok(componentstatus::serve(state, name, params, format).await);
    }
    if let (Some(sub @ ("exec" | "attach" | "portforward")), Some(name)) = (subresource, name) {
        if !matches!(verb, Verb::Get | Verb::Create) {
            return Err(ApiError::MethodNotAllowed);
        }
        let namespace = namespace.ok_or(ApiError::NoSuchResource)?;
        return streams::serve(state, namespace, name, sub, parts, params).await;
    }
    if let (Some("proxy"), Some(name), Some(path)) = (subresource, name, &target.proxy_path)
        && info.group.is_empty()
        && info.plural == "nodes"
    {
        return node_proxy::serve(state, name, path, parts).await;
    }
    let bytes = body::read(body).await?;
    params.validate(verb, headers, !bytes.is_empty())?;
    let write = WriteRequest {
        info,
        namespace,
        params,
        headers,
        format,
    };
    match (subresource, name, verb) {
        (Some("scale"), Some(name), Verb::Get) => return scale::get(state, &write, name).await,
        (Some("scale"), Some(name), Verb::Update) => {
            return scale::write(state, &write, name, &bytes, false).await;
        }
        (Some("scale"), Some(name), Verb::Patch) => {
            return scale::write(state, &write, name, &bytes, true).await;
        }
        (Some("binding"), Some(name), Verb::Create) => {
            return subresources::bind(state, &write, name, &bytes).await;
        }
        (Some("eviction"), Some(name), Verb::Create) => {
            return subresources::evict(state, &write, name, &bytes).await;
        }
        (Some("token"), Some(name), Verb::Create) => {
            return tokens::request(state, &write, name, &bytes).await;
        }
        (Some("finalize"), Some(name), Verb::Update) => {
            return subresources::finalize(state, &write, name, &bytes).await;
        }
        (Some("log"), Some(name), Verb::Get) => {
            let namespace = namespace.ok_or(ApiError::NoSuchResource)?;
            return logs::pod_log(state, namespace, name, params).await;
        }
        (
            Some("status" | "approval" | "ephemeralcontainers"),
            Some(_),
            Verb::Get | Verb::Update | Verb::Patch,
        )
        | (None, _, _) => {}
        _ => return Err(ApiError::MethodNotAllowed),
    }
    match (verb, name) {
        (Verb::Get, Some(name)) => read::get(state, info, namespace, name, format).await,
        (Verb::List, _) => read::list(state, info, namespace, params, format).await,
        (Verb::Watch, name) => watch::watch(state, info, namespace, name, params, format).await,
        (Verb::Create, None) => write::create(state, &write, caller, &bytes).await,
        (Verb::Update, Some(name)) => write::update(state, &write, name, subresource, &bytes).await,
        (Verb::Patch, Some(name)) => write::patch(state, &write, name, subresource, &bytes).await,
        (Verb::Delete, Some(name)) => delete::delete(state, &write, name, &bytes).await,
        (Verb::DeleteCollection, None) => delete::delete_collection(state, &write, &bytes).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}
