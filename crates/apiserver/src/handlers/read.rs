//! get and list: one object, or a consistent, filtered, paginated list at one revision.

use axum::response::Response;
use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{RangeRequest, Revision};

use super::fields;
use super::params::Params;
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;
use crate::table;

/// One object, in the requested format.
pub async fn get(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    format: Format,
) -> Result<Response, ApiError> {
    let target = Target::new(&info.group, &info.plural, name);
    let key = storage::key(info, namespace, name);
    let (kv, _) = state
        .store
        .get(&key, None)
        .await
        .map_err(|e| storage::api_error(e, &target))?;
    let object = storage::decode(&kv.ok_or(ApiError::NotFound(target))?)?;
    Ok(render_one(state, info, &object, format, StatusCode::OK))
}

/// Renders one object as JSON, YAML, a one-row Table or PartialObjectMetadata.
pub fn render_one(
    state: &ApiState,
    info: &ResourceInfo,
    object: &Value,
    format: Format,
    status: StatusCode,
) -> Response {
    let mut object = object.clone();
    storage::canonical_order(&mut object);
    let object = &object;
    match format {
        Format::Table => {
            let meta = json!({"resourceVersion": object.pointer("/metadata/resourceVersion")});
            let t = table::table(
                info,
                state.printer_columns(info).as_deref(),
                std::slice::from_ref(object),
                meta,
                state.clock.now(),
                true,
            );
            respond::value(status, &t, Format::Json)
        }
        Format::Metadata => respond::value(status, &table::partial_metadata(object), Format::Json),
        other => respond::value(status, object, other),
    }
}

/// A page of a list.
pub struct Listed {
    /// The selected objects.
    pub items: Vec<Value>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Where the next page starts, if there is one.
    pub continue_token: Option<String>,
}

fn encode_continue(revision: Revision, key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, String), ApiError> {
    let bad = || ApiError::BadRequest("continue key is not valid: malformed token".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let revision = value["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = value["start"].as_str().ok_or_else(bad)?;
    if !start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((revision, start.to_string()))
}

/// Lists objects under `namespace` (all namespaces when `None`), filtered by the selectors in
/// `params`, one page of at most `limit` objects, at one consistent revision.
pub async fn list_objects(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    params: &Params,
) -> Result<Listed, ApiError> {
    let labels = params.labels()?;
    let field_selector = params.fields()?;
    fields::check(&info.kind, &field_selector)?;
    let prefix = storage::prefix(info, namespace);
    let limit = params
        .number("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let target = Target::new(&info.group, &info.plural, "");
    let (mut revision, mut start_after) = match params.get("continue") {
        Some(token) => {
            let (revision, start) = decode_continue(token, &prefix)?;
            (Some(revision), Some(start))
        }
        None => {
            let exact = params.get("resourceVersionMatch") == Some("Exact");
            let at = match params.get("resourceVersion") {
                Some(rv) if exact => Some(storage::parse_revision(rv)?),
                Some(rv) => {
                    storage::parse_revision(rv)?;
                    None
                }
                None => None,
            };
            (at, None)
        }
    };
    let mut items = Vec::new();
    loop {
        let page_size = limit.map(|l| (l - items.len()).max(50));
        let page = state
            .store
            .range(RangeRequest {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: page_size,
                revision,
            })
            .await
            .map_err(|e| match e {
                skiff_store::StoreError::Compacted { .. } if params.get("continue").is_some() => {
                    ApiError::Expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into())
                }
                other => storage::api_error(other, &target),
            })?;
        revision = Some(page.revision);
        let fetched = page.kvs.len();
        for (i, kv) in page.kvs.iter().enumerate() {
            let object = storage::decode(kv)?;
            if fields::selected(&object, &labels, &field_selector) {
                items.push(object);
            }
            start_after = Some(kv.key.clone());
            if limit.is_some_and(|l| items.len() >= l) {
                let more = page.more || i + 1 < fetched;
                let token = more.then(|| encode_continue(page.revision, &kv.key));
                return Ok(Listed {
                    items,
                    revision: page.revision,
                    continue_token: token,
                });
            }
        }
        if !page.more {
            return Ok(Listed {
                items,
                revision: page.revision,
                continue_token: None,
            });
        }
    }
}

/// The list response, in the requested format.
pub async fn list(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    params: &Params,
    format: Format,
) -> Result<Response, ApiError> {
    let listed = list_objects(state, info, namespace, params).await?;
    let mut meta = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(token) = &listed.continue_token {
        meta["continue"] = json!(token);
    }
    let body = match format {
        Format::Table => table::table(
            info,
            state.printer_columns(info).as_deref(),
            &listed.items,
            meta,
            state.clock.now(),
            true,
        ),
        Format::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": listed.items.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        }),
        _ => {
            let items: Vec<Value> = listed
                .items
                .into_iter()
                .map(|mut item| {
                    // Upstream's typed lists carry kind and apiVersion once, on the list.
                    if let Some(map) = item.as_object_mut() {
                        map.remove("kind");
                        map.remove("apiVersion");
                    }
                    item
                })
                .collect();
            json!({
                "kind": format!("{}List", info.kind),
                "apiVersion": info.api_version(),
                "metadata": meta,
                "items": items,
            })
        }
    };
    let out = if format == Format::Yaml {
        Format::Yaml
    } else {
        Format::Json
    };
    Ok(respond::value(StatusCode::OK, &body, out))
}
