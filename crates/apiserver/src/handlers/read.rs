//! get and list: one object, or a consistent, filtered, paginated list at one revision.
//!
//! Lists follow upstream's semantics for `resourceVersion`, `resourceVersionMatch`, `limit` and
//! `continue`. Those that any recent enough state answers (no resourceVersion: a consistent
//! read; "0"; or a revision not to be older than) are served from the watch cache once it has
//! caught up (KEP-2340), the others (an exact revision, the next page of a list) from the store
//! at that revision, which answers 410 Expired once it is compacted. Bodies are streamed item by
//! item (see [`stream`]).

mod prune;
pub(super) mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use skiff_apimachinery::selector::{FieldSelector, LabelSelector};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{RangeRequest, Revision, StoreError};

use super::fields;
use super::params::Params;
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;
use crate::table;
use crate::watch_cache::CacheError;
use crate::watch_cache::CachedObject;
use stream::{ListBody, Selection, Shape};

/// How long a list waits for the watch cache to catch up with the revision it must reflect
/// before it is served from the store instead (upstream's 3 s).
const FRESH_TIMEOUT: Duration = Duration::from_secs(3);

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
    if !matches!(format, Format::Table | Format::Metadata) {
        // Written in upstream's order as it goes, not copied into it.
        return respond::value(status, &storage::in_order(object), format);
    }
    let reordered;
    let object = if storage::is_canonical(object) {
        object
    } else {
        let mut copy = object.clone();
        storage::canonical_order(&mut copy);
        reordered = copy;
        &reordered
    };
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
        _ => respond::value(status, &table::partial_metadata(object), Format::Json),
    }
}

/// Renders an object just written as [`render_one`] does; as JSON, from the bytes the write
/// stored with the resource version written in where the encoding noted its place (the bytes
/// the watch cache renders for them) instead of encoding it again.
pub fn render_written(
    state: &ApiState,
    info: &ResourceInfo,
    object: &Value,
    stored: Option<&storage::Stored>,
    format: Format,
    status: StatusCode,
) -> Response {
    if let Some(stored) = stored.filter(|_| format == Format::Json) {
        let body = match stored.whole() {
            Some(body) => Ok(body),
            None => CachedObject::whole_from_stored(&stored.encoded.bytes, stored.revision),
        };
        if let Ok(body) = body {
            return respond::json(status, body);
        }
    }
    render_one(state, info, object, format, status)
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

/// Which state of the store a list shows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReadAt {
    /// The page after `start` of the list at `revision` (a continue token).
    Continue { revision: Revision, start: String },
    /// Exactly this revision: `resourceVersionMatch=Exact`, or (upstream's legacy rule) a
    /// `limit` with a resourceVersion other than "0" and no match.
    Exact(Revision),
    /// Any state at least this new ("0": any state at all).
    NotOlderThan(Revision),
    /// The current state (no resourceVersion).
    Consistent,
}

/// A list request's parameters, checked.
struct Query {
    prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
    limit: Option<usize>,
    read: ReadAt,
}

impl Query {
    fn parse(
        info: &ResourceInfo,
        namespace: Option<&str>,
        params: &Params,
    ) -> Result<Self, ApiError> {
        let labels = params.labels()?;
        let fields = params.fields()?;
        fields::check(&info.kind, &fields)?;
        let prefix = storage::prefix(info, namespace);
        let limit = params
            .number("limit")?
            .filter(|l| *l > 0)
            .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let read = match params.get("continue") {
            Some(token) => {
                let (revision, start) = decode_continue(token, &prefix)?;
                ReadAt::Continue { revision, start }
            }
            None => match params.get("resourceVersion") {
                None => ReadAt::Consistent,
                Some(rv) => {
                    let revision = storage::parse_revision(rv)?;
                    let exact = match params.get("resourceVersionMatch") {
                        Some(m) => m == "Exact",
                        None => limit.is_some() && rv != "0",
                    };
                    if exact {
                        ReadAt::Exact(revision)
                    } else {
                        ReadAt::NotOlderThan(revision)
                    }
                }
            },
        };
        Ok(Self {
            prefix,
            labels,
            fields,
            limit,
            read,
        })
    }

    /// The revision to read the store at (`None`: the current one) and the key to start after.
    fn store_position(&self) -> (Option<Revision>, Option<String>) {
        match &self.read {
            ReadAt::Continue { revision, start } => (Some(*revision), Some(start.clone())),
            ReadAt::Exact(revision) => (Some(*revision), None),
            ReadAt::NotOlderThan(_) | ReadAt::Consistent => (None, None),
        }
    }

    fn store_error(&self, error: StoreError, info: &ResourceInfo) -> ApiError {
        match error {
            StoreError::Compacted { .. } if matches!(self.read, ReadAt::Continue { .. }) => {
                ApiError::Expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into())
            }
            other => storage::api_error(other, &Target::new(&info.group, &info.plural, "")),
        }
    }
}

/// Lists objects under `namespace` (all namespaces when `None`) from the store, filtered by
/// the selectors in `params`, one page of at most `limit` objects, at one consistent revision.
pub async fn list_objects(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    params: &Params,
) -> Result<Listed, ApiError> {
    let query = Query::parse(info, namespace, params)?;
    store_decoded(state, info, &query).await
}

/// Reads and decodes a page from the store, page by page until `limit` objects are selected.
async fn store_decoded(
    state: &ApiState,
    info: &ResourceInfo,
    query: &Query,
) -> Result<Listed, ApiError> {
    let (mut revision, mut start_after) = query.store_position();
    let limit = query.limit;
    let mut items = Vec::new();
    loop {
        let page_size = limit.map(|l| (l - items.len()).max(50));
        let page = state
            .store
            .range(RangeRequest {
                prefix: query.prefix.clone(),
                start_after: start_after.clone(),
                limit: page_size,
                revision,
            })
            .await
            .map_err(|e| query.store_error(e, info))?;
        revision = Some(page.revision);
        let fetched = page.kvs.len();
        for (i, kv) in page.kvs.iter().enumerate() {
            let object = storage::decode(kv)?;
            if fields::selected(&object, &query.labels, &query.fields) {
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

/// What a list response carries, before it is encoded.
struct Page {
    revision: Revision,
    items: Vec<Arc<CachedObject>>,
    continue_token: Option<String>,
    /// Whether the selectors are still to be applied to `items` (as they are written).
    unfiltered: bool,
}

/// A page from the store, its objects rendered as the cache holds them. A whole list is read
/// at once and each value is rendered and dropped in turn, so that memory peaks at about the
/// list's size.
async fn store_page(
    state: &ApiState,
    info: &ResourceInfo,
    query: &Query,
) -> Result<Page, ApiError> {
    if query.limit.is_some() {
        let listed = store_decoded(state, info, query).await?;
        return Ok(Page {
            revision: listed.revision,
            items: listed
                .items
                .iter()
                .map(|o| Arc::new(CachedObject::new("", o)))
                .collect(),
            continue_token: listed.continue_token,
            unfiltered: false,
        });
    }
    let (revision, start_after) = query.store_position();
    let page = state
        .store
        .range(RangeRequest {
            prefix: query.prefix.clone(),
            start_after,
            limit: None,
            revision,
        })
        .await
        .map_err(|e| query.store_error(e, info))?;
    let mut items = Vec::new();
    for kv in page.kvs {
        let object = storage::decode(&kv)?;
        if fields::selected(&object, &query.labels, &query.fields) {
            items.push(Arc::new(CachedObject::new(&kv.key, &object)));
        }
    }
    Ok(Page {
        revision: page.revision,
        items,
        continue_token: None,
        unfiltered: false,
    })
}

/// A page from the watch cache, or `None` when the store must answer (an exact revision, a
/// continuation, or a cache that is not loaded or has not caught up in time).
async fn cached_page(state: &ApiState, query: &Query) -> Result<Option<Page>, ApiError> {
    let cache = &state.watch_cache;
    match query.read {
        ReadAt::Continue { .. } | ReadAt::Exact(_) => return Ok(None),
        ReadAt::NotOlderThan(0) => {}
        ReadAt::NotOlderThan(wanted) => {
            if !cache.wait_fresh(wanted, FRESH_TIMEOUT).await {
                let current = state
                    .store
                    .current_revision()
                    .await
                    .map_err(|e| storage::api_error(e, &Target::default()))?;
                if wanted > current {
                    return Err(ApiError::Timeout(format!(
                        "Too large resource version: {wanted}, current: {current}"
                    )));
                }
                tracing::debug!(
                    wanted,
                    current,
                    "watch cache behind; listing from the store"
                );
                return Ok(None);
            }
        }
        ReadAt::Consistent => {
            let current = state
                .store
                .current_revision()
                .await
                .map_err(|e| storage::api_error(e, &Target::default()))?;
            if !cache.wait_fresh(current, FRESH_TIMEOUT).await {
                tracing::debug!(current, "watch cache behind; listing from the store");
                return Ok(None);
            }
        }
    }
    let selection = Selection::new(&query.labels, &query.fields);
    // Without selectors a page needs no more objects than its limit.
    let take = query.limit.filter(|_| selection.is_none());
    let list = match cache.list(&query.prefix, None, take) {
        Ok(list) => list,
        Err(CacheError::NotReady) => return Ok(None),
        Err(CacheError::Undecodable { error, .. }) => return Err(*error),
    };
    let Some(limit) = query.limit else {
        return Ok(Some(Page {
            revision: list.revision,
            items: list.objects,
            continue_token: None,
            unfiltered: selection.is_some(),
        }));
    };
    let Some(selection) = selection else {
        let token = list
            .objects
            .last()
            .filter(|_| list.more)
            .map(|last| encode_continue(list.revision, last.key()));
        return Ok(Some(Page {
            revision: list.revision,
            items: list.objects,
            continue_token: token,
            unfiltered: false,
        }));
    };
    let mut selected = Vec::new();
    let mut token = None;
    let total = list.objects.len();
    for (i, object) in list.objects.into_iter().enumerate() {
        let matches = selection
            .matches_cached(&object)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !matches {
            continue;
        }
        if selected.len() + 1 >= limit {
            // The page is full: it continues if any object follows this one.
            token = (i + 1 < total).then(|| encode_continue(list.revision, object.key()));
            selected.push(object);
            break;
        }
        selected.push(object);
    }
    Ok(Some(Page {
        revision: list.revision,
        items: selected,
        continue_token: token,
        unfiltered: false,
    }))
}

/// The list response, in the requested format.
pub async fn list(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    params: &Params,
    format: Format,
) -> Result<Response, ApiError> {
    let query = Query::parse(info, namespace, params)?;
    let page = match cached_page(state, &query).await? {
        Some(page) => page,
        None => store_page(state, info, &query).await?,
    };
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(token) = &page.continue_token {
        meta["continue"] = json!(token);
    }
    let filter = if page.unfiltered {
        Selection::new(&query.labels, &query.fields)
    } else {
        None
    };
    if format == Format::Yaml {
        let items = yaml_items(&page.items, filter.as_ref())?;
        let body = json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": meta,
            "items": items,
        });
        return Ok(respond::value(StatusCode::OK, &body, Format::Yaml));
    }
    let (envelope, shape) = match format {
        Format::Table => {
            let printer = state.printer_columns(info);
            let columns = table::column_definitions(info, printer.as_deref());
            let envelope = json!({
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "columnDefinitions": columns,
                "rows": [],
            });
            (envelope, Shape::table(info, printer, state.clock.now()))
        }
        Format::Metadata => (
            json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": [],
            }),
            Shape::Metadata,
        ),
        _ => (
            json!({
                "kind": format!("{}List", info.kind),
                "apiVersion": info.api_version(),
                "metadata": meta,
                "items": [],
            }),
            Shape::Object,
        ),
    };
    let body = ListBody::new(&envelope, page.items, shape, filter);
    let mut response = Response::new(Body::from_stream(futures::stream::iter(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A YAML list's items as values (typed list items carry no kind or apiVersion).
fn yaml_items(
    items: &[Arc<CachedObject>],
    filter: Option<&Selection>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for object in items {
        let value: Value = serde_json::from_slice(object.item())
            .map_err(|e| ApiError::Internal(format!("decoding a rendered object: {e}")))?;
        if filter.is_none_or(|f| f.matches(&value)) {
            out.push(value);
        }
    }
    Ok(out)
}
