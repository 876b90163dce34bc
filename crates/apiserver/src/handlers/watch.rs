//! watch: a chunked stream of `{"type": ..., "object": ...}` lines. Without a resourceVersion
//! (or with "0") it starts with ADDED events for every object at one revision and continues from
//! there; with one, it continues after it, or sends a 410 `Expired` ERROR event when that
//! revision is compacted. Selectors turn objects that start or stop matching into ADDED and
//! DELETED events, as upstream's watch cache does. `timeoutSeconds` ends the stream on time;
//! `allowWatchBookmarks` adds periodic BOOKMARK events.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use skiff_apimachinery::selector::{FieldSelector, LabelSelector};
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{Event, EventKind, Revision};

use crate::watch_cache::{CachedEvent, Seen, Side, event_line};

mod follow;

use super::fields;
use super::params::Params;
use super::read;
use super::read::stream::Selection;
use crate::respond::Format;
use crate::state::ApiState;
use crate::storage;
use crate::table;

/// Upstream's default for watches without `timeoutSeconds` (`--min-request-timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a quiet watch gets a bookmark.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Watch {
    state: ApiState,
    info: ResourceInfo,
    prefix: String,
    /// The resource's key prefix, in every namespace.
    resource_prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
    /// The selectors as cached objects are matched against (`None`: everything passes).
    selection: Option<Selection>,
    format: Format,
    bookmarks: bool,
    columns_sent: bool,
}

/// Starts a watch.
pub async fn watch(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    params: &Params,
    format: Format,
) -> Result<Response, ApiError> {
    let labels = params.labels()?;
    let mut field_selector = params.fields()?;
    fields::check(&info.kind, &field_selector)?;
    if let Some(name) = name {
        field_selector
            .0
            .push(("metadata.name".into(), true, name.to_string()));
    }
    let timeout = params
        .number("timeoutSeconds")?
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let start = params.get("resourceVersion").filter(|rv| *rv != "0");
    let send_initial = params.flag("sendInitialEvents");
    let mut watch = Watch {
        state: state.clone(),
        info: info.clone(),
        prefix: storage::prefix(info, namespace),
        resource_prefix: storage::prefix(info, None),
        selection: Selection::for_watch(&labels, &field_selector, &info.kind),
        labels,
        fields: field_selector,
        format,
        bookmarks: params.flag("allowWatchBookmarks"),
        columns_sent: false,
    };
    let mut initial = Vec::new();
    let after = match start {
        Some(rv) if !send_initial => storage::parse_revision(rv)?,
        _ => {
            // Start with the state at one revision, as ADDED events.
            let mut list_params = params.clone();
            list_params.strip_for_initial_list();
            let listed = read::list_objects(state, info, namespace, &list_params).await?;
            initial = listed.items;
            listed.revision
        }
    };
    let selected: Vec<&Value> = initial.iter().filter(|o| watch.selected(o)).collect();
    let mut initial_events: Vec<Bytes> = selected
        .into_iter()
        .map(|object| watch.line("ADDED", object))
        .collect();
    let end_bookmark = (send_initial && watch.bookmarks).then(|| watch.bookmark(after, true));
    initial_events.extend(end_bookmark);
    let stream = follow::body(watch, initial_events, after, timeout).map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

impl Watch {
    fn render(&mut self, object: &Value) -> Value {
        match self.format {
            Format::Table => {
                let with_columns = !self.columns_sent;
                self.columns_sent = true;
                let meta = json!({"resourceVersion": object.pointer("/metadata/resourceVersion")});
                table::table(
                    &self.info,
                    self.state.printer_columns(&self.info).as_deref(),
                    std::slice::from_ref(object),
                    meta,
                    self.state.clock.now(),
                    with_columns,
                )
            }
            Format::Metadata => table::partial_metadata(object),
            _ => object.clone(),
        }
    }

    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let event = json!({"type": kind, "object": self.render(object)});
        let mut bytes = serde_json::to_vec(&event).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// The event line for a change from the watch cache: the event's shared line, unless this
    /// watch asked for a Table or metadata (whose line copies the rendered `metadata`).
    fn cached_line(&mut self, event: &CachedEvent, seen: Seen) -> Option<Bytes> {
        match self.format {
            Format::Table => {}
            Format::Metadata => {
                let metadata = event.on(seen.side())?.metadata();
                let size = metadata.map_or(0, <[u8]>::len) + 80;
                return Some(event_line(seen, size, |out| {
                    table::write_partial_metadata(metadata, out)
                }));
            }
            _ => return event.line(seen),
        }
        let object = event.on(seen.side())?;
        match object.to_value() {
            Ok(value) => Some(self.line(seen.event_type(), &value)),
            Err(error) => {
                tracing::warn!(%error, key = object.key(), "a cached object does not decode");
                None
            }
        }
    }

    fn bookmark(&self, revision: Revision, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": metadata});
        let mut bytes =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn error_line(error: &ApiError) -> Bytes {
        let mut bytes = serde_json::to_vec(&json!({"type": "ERROR", "object": error.to_status()}))
            .unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn selected(&self, object: &Value) -> bool {
        fields::selected(object, &self.labels, &self.fields)
    }

    /// The namespace ("" for a cluster-scoped resource) and name in an object's key.
    fn namespace_and_name<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.resource_prefix)?;
        if self.info.namespaced() {
            rest.split_once('/')
        } else {
            Some(("", rest))
        }
    }

    /// Whether the object on `side` of a cached change passes this watch's selectors.
    fn selects_cached(&self, event: &CachedEvent, side: Side) -> bool {
        if event.on(side).is_none() {
            return false;
        }
        let Some(selection) = &self.selection else {
            return true;
        };
        if let Some(labels) = selection.labels_only() {
            // The event's labels are decoded once for all watchers.
            return labels.matches(event.labels(side));
        }
        if let Some((namespace, name)) = self.namespace_and_name(&event.key)
            && let Some(selected) = selection.matches_named(|| event.labels(side), namespace, name)
        {
            // A selector on the name or namespace reads them from the key.
            return selected;
        }
        // The fields selectors read are decoded once for all watchers of the kind.
        let attrs = event.attrs(side, &self.info.kind, |object| {
            selection
                .decode(object)
                .inspect_err(|error| {
                    tracing::warn!(%error, key = object.key(), "a cached object does not decode");
                })
                .ok()
        });
        attrs.is_some_and(|attrs| selection.matches(&attrs))
    }

    /// The watch event for a change (`new` after a put, `old` before it), if this watcher sees
    /// it.
    fn translate(
        &mut self,
        kind: EventKind,
        new: Option<&Value>,
        old: Option<&Value>,
    ) -> Option<Bytes> {
        let was = old.is_some_and(|o| self.selected(o));
        let is = new.is_some_and(|o| self.selected(o));
        let seen = Seen::of(kind, was, is)?;
        let object = match seen.side() {
            Side::Old => old?,
            Side::New => new?,
        };
        Some(self.line(seen.event_type(), object))
    }

    /// The one object name this watch's field selector requires, if any: its follower is
    /// woken by the changes of objects of that name only.
    fn pinned_name(&self) -> Option<&str> {
        self.fields.required("metadata.name")
    }

    /// Whether a cached change is seen by this watch (passes its selectors before or after).
    fn concerns(&self, event: &CachedEvent) -> bool {
        self.selects_cached(event, Side::Old) || self.selects_cached(event, Side::New)
    }

    /// [`Watch::translate`] for an event from the watch cache.
    fn translate_cached(&mut self, event: &CachedEvent) -> Option<Bytes> {
        let was = self.selects_cached(event, Side::Old);
        let is = self.selects_cached(event, Side::New);
        let seen = Seen::of(event.kind, was, is)?;
        self.cached_line(event, seen)
    }

    fn translate_store(&mut self, event: &Event) -> Option<Bytes> {
        let revision = event.revision();
        let old = event
            .prev
            .as_ref()
            .and_then(|p| storage::decode_at(&p.value, revision).ok());
        let new = match event.kind {
            EventKind::Put => storage::decode(&event.kv).ok(),
            EventKind::Delete => None,
        };
        self.translate(event.kind, new.as_ref(), old.as_ref())
    }
}
