//! A list's JSON body, encoded item by item as the client reads it (upstream streams list
//! encoding since 1.33): the envelope first (kind, apiVersion, metadata, Table columns), then
//! the items in chunks of about [`CHUNK`] bytes, then the closing brackets. Items are rendered
//! objects (from the watch cache, or rendered from the store's values when read), copied out as
//! they are sent, so memory stays at a chunk or two beyond the items themselves. The
//! [`Selection`] that filters them also serves watches, with what a watch shares across its
//! watchers (every field a kind can be selected on, decoded once; names read from keys).

use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::selector::{FieldSelector, LabelSelector};

use super::prune::Keep;
use crate::handlers::fields;
use crate::table;
use crate::watch_cache::CachedObject;

/// Bytes gathered before a chunk is handed to the connection.
pub const CHUNK: usize = 64 * 1024;

/// Encoding a list item failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A rendered object did not parse back (we rendered it, so this is a bug).
    #[error("decoding a rendered object: {0}")]
    Rendered(#[source] serde_json::Error),
}

/// A label and field selector, with what of an object they read.
pub struct Selection {
    labels: LabelSelector,
    fields: FieldSelector,
    keep: Keep,
    /// The field selector reads only the name and namespace, which an object's key holds.
    fields_in_key: bool,
}

impl Selection {
    /// `None` when both selectors select everything.
    pub fn new(labels: &LabelSelector, fields: &FieldSelector) -> Option<Self> {
        if labels.is_empty() && fields.0.is_empty() {
            return None;
        }
        let mut keep = Keep::nothing();
        keep.add(&["metadata", "labels"]);
        for field in fields.fields() {
            keep.add(&field_path(field));
        }
        Some(Self {
            labels: labels.clone(),
            fields: fields.clone(),
            keep,
            fields_in_key: fields
                .fields()
                .all(|field| matches!(field, "metadata.name" | "metadata.namespace")),
        })
    }

    /// Whether a decoded object (whole, or as [`Selection::decode`] decodes it) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        fields::selected(object, &self.labels, &self.fields)
    }

    /// The label selector, when there is no field selector: then an object's labels alone
    /// decide.
    pub fn labels_only(&self) -> Option<&LabelSelector> {
        self.fields.0.is_empty().then_some(&self.labels)
    }

    /// Whether an object in `namespace` ("" for cluster-scoped ones) and named `name` is
    /// selected, its labels (asked for only when there is a label selector) given by `labels`:
    /// what an object's key tells, with nothing else decoded. `None` when the field selector
    /// reads more than the name and namespace.
    pub fn matches_named<'a>(
        &self,
        labels: impl FnOnce() -> Option<&'a Map<String, Value>>,
        namespace: &str,
        name: &str,
    ) -> Option<bool> {
        self.fields_in_key.then(|| {
            (self.labels.is_empty() || self.labels.matches(labels()))
                && self.fields.matches(|field| match field {
                    "metadata.name" => name,
                    _ => namespace,
                })
        })
    }

    /// The selection of a watch of `kind`: [`Selection::new`], with what
    /// [`Selection::decode`] keeps of an object widened to every field the kind can be
    /// selected on, so that one decoding serves every watcher of the kind, whatever its
    /// selectors (upstream's `GetAttrs`; shared through `CachedEvent::attrs`).
    pub fn for_watch(labels: &LabelSelector, fields: &FieldSelector, kind: &str) -> Option<Self> {
        let mut selection = Self::new(labels, fields)?;
        for field in fields::selectable(kind) {
            selection.keep.add(&field_path(field));
        }
        Some(selection)
    }

    /// What the selectors read of a cached object, decoded.
    pub fn decode(&self, object: &CachedObject) -> Result<Value, StreamError> {
        self.keep
            .decode(object.item())
            .map_err(StreamError::Rendered)
    }

    /// Whether a cached object is selected.
    pub fn matches_cached(&self, object: &CachedObject) -> Result<bool, StreamError> {
        Ok(self.matches(&self.decode(object)?))
    }
}

/// Where in an object a selectable field is: `fields::value` reads `source` as
/// `source.component`, the others as written.
fn field_path(field: &str) -> Vec<&str> {
    match field {
        "source" => vec!["source", "component"],
        other => other.split('.').collect(),
    }
}

/// How each item is written.
pub enum Shape {
    /// The object itself (a typed list's item: no kind or apiVersion).
    Object,
    /// `PartialObjectMetadata`.
    Metadata,
    /// A Table row.
    Table(Box<TableShape>),
}

/// What a Table row needs.
pub struct TableShape {
    /// The listed resource.
    info: ResourceInfo,
    /// A custom resource's printer columns.
    printer: Option<Vec<Value>>,
    /// The time ages are computed against.
    now: Timestamp,
    /// What of a rendered object the cells need.
    keep: Keep,
}

impl Shape {
    /// A Table shape for `info`.
    pub fn table(info: &ResourceInfo, printer: Option<Vec<Value>>, now: Timestamp) -> Self {
        let keep = match &printer {
            // A built-in kind's cells read a few fields, known in advance.
            None => builtin_keep(&info.kind),
            // Printer columns are JSONPaths: decode everything they might reach.
            Some(defs) => {
                let mut keep = Keep::All;
                if table::cells_skip_managed_fields(Some(defs)) {
                    keep.skip(&["metadata", "managedFields"]);
                }
                keep
            }
        };
        Self::Table(Box::new(TableShape {
            info: info.clone(),
            printer,
            now,
            keep,
        }))
    }
}

/// What of a built-in kind's objects its Table cells read.
fn builtin_keep(kind: &str) -> Keep {
    let path = |pointer: &'static str| pointer.split('/').skip(1).collect::<Vec<_>>();
    let (read, counted) = table::fields_read(kind);
    let mut keep = Keep::nothing();
    for pointer in read {
        keep.add(&path(pointer));
    }
    for pointer in counted {
        keep.add_shallow(&path(pointer));
    }
    keep
}

/// The body's parts, as an iterator of chunks.
pub struct ListBody {
    head: Option<Vec<u8>>,
    items: std::vec::IntoIter<Arc<CachedObject>>,
    shape: Shape,
    filter: Option<Selection>,
    first: bool,
    done: bool,
}

impl ListBody {
    /// A list body: `envelope` is the list object with an empty array as its last field (where
    /// the items go); `filter` is applied to the items as they are written.
    pub fn new(
        envelope: &Value,
        items: Vec<Arc<CachedObject>>,
        shape: Shape,
        filter: Option<Selection>,
    ) -> Self {
        let mut head = serde_json::to_vec(envelope).unwrap_or_default();
        // The envelope ends in `[]}`: keep the opening bracket of the items.
        head.truncate(head.len().saturating_sub(2));
        Self {
            head: Some(head),
            items: items.into_iter(),
            shape,
            filter,
            first: true,
            done: false,
        }
    }

    /// Appends the next selected item to `out`; false when there are no more.
    fn write_next(&mut self, out: &mut Vec<u8>) -> Result<bool, StreamError> {
        for object in self.items.by_ref() {
            if write(&self.shape, self.filter.as_ref(), &object, self.first, out)? {
                self.first = false;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Iterator for ListBody {
    type Item = Result<Bytes, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut out = self.head.take().unwrap_or_default();
        out.reserve(CHUNK + CHUNK / 4);
        while out.len() < CHUNK {
            match self.write_next(&mut out) {
                Ok(true) => {}
                Ok(false) => {
                    out.extend_from_slice(b"]}");
                    self.done = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "list encoding failed");
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
        Some(Ok(Bytes::from(out)))
    }
}

fn separator(first: bool, out: &mut Vec<u8>) {
    if !first {
        out.push(b',');
    }
}

fn write_row(cells: &[Value], metadata: Option<&[u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"cells":"#);
    // Writing JSON values into a Vec cannot fail: every map key is a string.
    let _ = serde_json::to_writer(&mut *out, cells);
    out.extend_from_slice(br#","object":"#);
    table::write_partial_metadata(metadata, out);
    out.push(b'}');
}

fn write(
    shape: &Shape,
    filter: Option<&Selection>,
    object: &CachedObject,
    first: bool,
    out: &mut Vec<u8>,
) -> Result<bool, StreamError> {
    match shape {
        Shape::Table(table) => {
            let TableShape {
                info,
                printer,
                now,
                keep,
            } = &**table;
            if let Some(filter) = filter
                && !filter.matches_cached(object)?
            {
                return Ok(false);
            }
            let mut value = keep.decode(object.item()).map_err(StreamError::Rendered)?;
            if let Some(map) = value.as_object_mut() {
                // Rendered items carry no kind or apiVersion; printer columns may read them.
                map.insert("kind".into(), json!(info.kind));
                map.insert("apiVersion".into(), json!(info.api_version()));
            }
            let cells = table::row_cells(info, printer.as_deref(), &value, *now);
            separator(first, out);
            write_row(&cells, object.metadata(), out);
        }
        _ => {
            if let Some(filter) = filter
                && !filter.matches_cached(object)?
            {
                return Ok(false);
            }
            separator(first, out);
            match shape {
                Shape::Metadata => table::write_partial_metadata(object.metadata(), out),
                _ => out.extend_from_slice(object.item()),
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::Registry;

    fn pods() -> Vec<Value> {
        let mut out = Vec::new();
        for (i, phase) in ["Running", "Pending", "Succeeded"].iter().enumerate() {
            let mut pod = json!({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": format!("p{i}"), "namespace": "default", "uid": "u",
                    "resourceVersion": (10 + i).to_string(),
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {"app": if i == 1 { "db" } else { "web" }},
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}],
                },
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i \"quoted\""}]},
                "status": {"phase": phase, "podIP": "10.0.0.1",
                    "containerStatuses": [{"ready": true, "restartCount": 2}]},
            });
            crate::storage::canonical_order(&mut pod);
            out.push(pod);
        }
        out
    }

    fn body(items: &[Value], shape: Shape, envelope: &Value, filter: Option<Selection>) -> Vec<u8> {
        let rendered = items
            .iter()
            .map(|o| Arc::new(CachedObject::new("", o)))
            .collect();
        let mut out = Vec::new();
        for chunk in ListBody::new(envelope, rendered, shape, filter) {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn strip(mut object: Value) -> Value {
        let map = object.as_object_mut().unwrap();
        map.shift_remove("kind");
        map.shift_remove("apiVersion");
        object
    }

    #[test]
    fn streamed_lists_should_equal_whole_value_encoding_byte_for_byte() {
        let items = pods();
        let meta = json!({"resourceVersion": "12", "continue": "abc"});
        let envelope = |items: Vec<Value>| json!({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items});
        assert_eq!(
            body(&items, Shape::Object, &envelope(vec![]), None),
            serde_json::to_vec(&envelope(items.iter().cloned().map(strip).collect())).unwrap()
        );

        let partial = |items: Vec<Value>| json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
        assert_eq!(
            body(&items, Shape::Metadata, &partial(vec![]), None),
            serde_json::to_vec(&partial(
                items.iter().map(table::partial_metadata).collect()
            ))
            .unwrap()
        );

        let info = Registry::builtin().find("", "v1", "pods").unwrap();
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let whole = table::table(&info, None, &items, meta.clone(), now, true);
        let mut envelope = whole.clone();
        envelope["rows"] = json!([]);
        assert_eq!(
            body(&items, Shape::table(&info, None, now), &envelope, None),
            serde_json::to_vec(&whole).unwrap()
        );
    }

    #[test]
    fn streamed_lists_should_apply_selectors_as_they_write() {
        let items = pods();
        let labels = LabelSelector::parse("app=web").unwrap();
        let fields = FieldSelector::parse("status.phase!=Running").unwrap();
        let selection = || Selection::new(&labels, &fields);
        let info = Registry::builtin().find("", "v1", "pods").unwrap();
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let envelope = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []});
        let listed: Value =
            serde_json::from_slice(&body(&items, Shape::Object, &envelope, selection())).unwrap();
        assert_eq!(listed["items"], json!([strip(items[2].clone())]));
        let table_envelope = json!({"kind": "Table", "metadata": {}, "rows": []});
        let rows: Value = serde_json::from_slice(&body(
            &items,
            Shape::table(&info, None, now),
            &table_envelope,
            selection(),
        ))
        .unwrap();
        assert_eq!(rows["rows"].as_array().unwrap().len(), 1);
        assert_eq!(rows["rows"][0]["cells"][0], "p2");
        assert!(Selection::new(&LabelSelector::default(), &FieldSelector::default()).is_none());
    }

    #[test]
    fn selections_on_name_and_namespace_should_match_without_the_object() {
        let selection = |labels: &str, fields: &str| {
            Selection::new(
                &LabelSelector::parse(labels).unwrap(),
                &FieldSelector::parse(fields).unwrap(),
            )
            .unwrap()
        };
        let web = json!({"app": "web"});
        let db = json!({"app": "db"});
        let labels = || web.as_object();
        let named = selection("", "metadata.name=a,metadata.namespace!=kube-system");
        let unread = || -> Option<&Map<String, Value>> { panic!("no label selector") };
        assert_eq!(named.matches_named(unread, "default", "a"), Some(true));
        assert_eq!(named.matches_named(unread, "default", "b"), Some(false));
        assert_eq!(named.matches_named(unread, "kube-system", "a"), Some(false));
        let with_labels = selection("app=db", "metadata.name=a");
        assert_eq!(
            with_labels.matches_named(labels, "default", "a"),
            Some(false)
        );
        assert_eq!(
            with_labels.matches_named(|| db.as_object(), "", "a"),
            Some(true)
        );
        // Any other field needs the object.
        let on_node = selection("", "metadata.name=a,spec.nodeName=n1");
        assert_eq!(on_node.matches_named(labels, "default", "a"), None);
    }

    /// One object of each kind with columns, every field a cell reads set, plus fields no cell
    /// reads.
    fn samples() -> Vec<(&'static str, Value)> {
        let meta = json!({"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-01T00:00:01Z", "labels": {"a": "b"},
            "managedFields": [{"manager": "m"}]});
        let template = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
        let workload = |status: Value| {
            json!({"metadata": meta, "spec": {"replicas": 3, "template": template,
                "selector": {"matchLabels": {"app": "a"}}, "paused": true}, "status": status})
        };
        vec![
            (
                "Pod",
                json!({"metadata": meta,
                "spec": {"nodeName": "n", "containers": [{"name": "a"}, {"name": "b"}], "restartPolicy": "Always"},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "h",
                    "containerStatuses": [{"ready": true, "restartCount": 3}, {"ready": false, "restartCount": 1}]}}),
            ),
            (
                "Deployment",
                workload(json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 1})),
            ),
            (
                "ReplicaSet",
                workload(json!({"replicas": 3, "readyReplicas": 2})),
            ),
            ("StatefulSet", workload(json!({"replicas": 3}))),
            ("DaemonSet", workload(json!({}))),
            (
                "ReplicationController",
                json!({"metadata": meta,
                "spec": {"template": template, "selector": {"app": "a"}}}),
            ),
            (
                "Service",
                json!({"metadata": meta, "spec": {"type": "NodePort", "clusterIP": "10.96.0.1",
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}],
                "selector": {"app": "a"}, "sessionAffinity": "None"}}),
            ),
            (
                "Service",
                json!({"metadata": meta, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.2",
                "ports": [{"port": 80, "nodePort": 30081}], "externalIPs": ["192.0.2.1"]},
                "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}}}),
            ),
            (
                "EndpointSlice",
                json!({"metadata": meta, "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n"},
                              {"addresses": ["10.42.0.6"], "conditions": {"ready": false}}]}),
            ),
            (
                "Endpoints",
                json!({"metadata": meta, "subsets": [{"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}],
                "notReadyAddresses": [{"ip": "10.42.0.7"}], "ports": [{"name": "http", "port": 8080}]}]}),
            ),
            (
                "ConfigMap",
                json!({"metadata": meta, "data": {"a": "1"}, "binaryData": {"b": "AA=="}}),
            ),
            (
                "Secret",
                json!({"metadata": meta, "type": "Opaque", "data": {"a": "MQ=="}}),
            ),
            (
                "Namespace",
                json!({"metadata": meta, "status": {"phase": "Active"}, "spec": {"finalizers": ["kubernetes"]}}),
            ),
            (
                "Node",
                json!({"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {}}}),
            ),
            (
                "ServiceAccount",
                json!({"metadata": meta, "secrets": [{"name": "s"}]}),
            ),
            (
                "Lease",
                json!({"metadata": meta, "spec": {"holderIdentity": "h"}}),
            ),
        ]
    }

    #[test]
    fn table_cells_should_need_only_the_fields_each_kind_declares() {
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        for (kind, object) in samples() {
            let bytes = serde_json::to_vec(&object).unwrap();
            let pruned = builtin_keep(kind).decode(&bytes).unwrap();
            assert!(pruned.pointer("/metadata/managedFields").is_none());
            assert_eq!(
                table::cells(kind, &pruned, now),
                table::cells(kind, &object, now),
                "{kind}"
            );
            assert_eq!(
                table::cells(kind, &object, now).len(),
                table::columns(kind).len(),
                "{kind}"
            );
        }
    }

    #[test]
    fn a_big_list_should_come_in_chunks_of_about_chunk_bytes() {
        let item = pods().remove(0);
        let items = vec![item; 2000];
        let rendered: Vec<_> = items
            .iter()
            .map(|o| Arc::new(CachedObject::new("", o)))
            .collect();
        let envelope = json!({"items": []});
        let chunks: Vec<Bytes> = ListBody::new(&envelope, rendered, Shape::Object, None)
            .map(Result::unwrap)
            .collect();
        assert!(chunks.len() > 3);
        for chunk in &chunks[..chunks.len() - 1] {
            assert!(chunk.len() >= CHUNK && chunk.len() < CHUNK + 4096);
        }
    }
}
