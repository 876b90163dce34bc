//! One change as watchers read it, with what every watcher of it would otherwise compute again:
//! the objects' labels (decoded on first use, for label selectors), the fields that field
//! selectors read (decoded once for every watcher of the kind, as upstream's `GetAttrs`), and
//! the JSON lines of the watch event (rendered on first send, then shared by every watcher that
//! sends the same line, as upstream's watch cache caches an event's serialization).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use skiff_store::{EventKind, Revision};

use super::CachedObject;

/// Which object of a change a watcher's event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The object before the change.
    Old,
    /// The object after it.
    New,
}

/// What a watcher sees of a change: the event type it sends, and which object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The object now passes the watcher's selectors and did not before.
    Added,
    /// It passed them before and still does.
    Modified,
    /// A put after which it no longer passes them: DELETED with the new object.
    Left,
    /// A delete of an object that passed them: DELETED with the old object.
    Deleted,
}

impl Seen {
    /// What a watcher sees of a change, given whether the object passed its selectors before
    /// the change (`was`) and after it (`is`): objects that start or stop matching become
    /// ADDED or DELETED, as upstream's watch cache does.
    pub fn of(kind: EventKind, was: bool, is: bool) -> Option<Self> {
        match (kind, is, was) {
            (EventKind::Delete, _, true) => Some(Self::Deleted),
            (EventKind::Delete, _, false) | (EventKind::Put, false, false) => None,
            (EventKind::Put, true, true) => Some(Self::Modified),
            (EventKind::Put, true, false) => Some(Self::Added),
            (EventKind::Put, false, true) => Some(Self::Left),
        }
    }

    /// The event's `type`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Left | Self::Deleted => "DELETED",
        }
    }

    /// The object the event carries.
    pub fn side(self) -> Side {
        match self {
            Self::Deleted => Side::Old,
            _ => Side::New,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// The labels of an object's metadata (everything else in it skipped).
#[derive(Deserialize)]
struct Labels {
    #[serde(default)]
    labels: Option<Map<String, Value>>,
}

/// What field selectors read of both sides of a change, decoded for watchers of one kind.
#[derive(Debug)]
struct Attrs {
    kind: Box<str>,
    sides: [Option<Value>; 2],
}

/// One change, as watchers read it.
#[derive(Debug)]
pub struct CachedEvent {
    /// The store revision of the change.
    pub revision: Revision,
    /// The object's key.
    pub key: Box<str>,
    /// Put or delete.
    pub kind: EventKind,
    /// After a put: the object (with its resource version), the snapshot's own copy.
    pub object: Option<Arc<CachedObject>>,
    /// The object before the change. After a put, the snapshot's previous copy (watchers only
    /// ask whether it passed their selectors); after a delete, stamped with the deletion's
    /// revision, as upstream sends a deleted object.
    pub prev: Option<Arc<CachedObject>>,
    /// The labels of `prev` and `object`, decoded on first use.
    labels: OnceLock<[Option<Map<String, Value>>; 2]>,
    /// What field selectors read of `prev` and `object`, decoded on first use.
    attrs: OnceLock<Attrs>,
    /// The JSON line for each way a watcher sees the change, rendered on first use.
    lines: [OnceLock<Bytes>; 4],
}

impl CachedEvent {
    /// A change of `key` at `revision`.
    pub fn new(
        revision: Revision,
        key: &str,
        kind: EventKind,
        object: Option<Arc<CachedObject>>,
        prev: Option<Arc<CachedObject>>,
    ) -> Self {
        Self {
            revision,
            key: key.into(),
            kind,
            object,
            prev,
            labels: OnceLock::new(),
            attrs: OnceLock::new(),
            lines: Default::default(),
        }
    }

    /// The object before (`Old`) or after (`New`) the change.
    pub fn on(&self, side: Side) -> Option<&CachedObject> {
        match side {
            Side::Old => self.prev.as_deref(),
            Side::New => self.object.as_deref(),
        }
    }

    /// The labels of the object on `side` (`None`: it has none, or there is no object).
    pub fn labels(&self, side: Side) -> Option<&Map<String, Value>> {
        let decode = |object: Option<&CachedObject>| {
            let metadata = object?.metadata()?;
            match serde_json::from_slice::<Labels>(metadata) {
                Ok(labels) => labels.labels,
                Err(error) => {
                    tracing::warn!(%error, key = %self.key, "cached metadata does not decode");
                    None
                }
            }
        };
        let labels = self
            .labels
            .get_or_init(|| [decode(self.on(Side::Old)), decode(self.on(Side::New))]);
        labels[usize::from(side == Side::New)].as_ref()
    }

    /// What a watcher of `kind` with a field selector reads of the object on `side`, decoded
    /// by `decode` once for all watchers of the kind: `decode` must keep every field the kind
    /// can be selected on (a watch's `Selection::for_watch` does), whichever watcher comes
    /// first. `None` when there is no such object or it does not decode.
    pub fn attrs(
        &self,
        side: Side,
        kind: &str,
        decode: impl Fn(&CachedObject) -> Option<Value>,
    ) -> Option<Cow<'_, Value>> {
        let attrs = self.attrs.get_or_init(|| Attrs {
            kind: kind.into(),
            sides: [Side::Old, Side::New].map(|side| self.on(side).and_then(&decode)),
        });
        if &*attrs.kind != kind {
            // Two kinds under one key (a custom resource whose kind was renamed in place, while
            // watchers of the old name remain): decode for this one alone.
            return self.on(side).and_then(decode).map(Cow::Owned);
        }
        attrs.sides[usize::from(side == Side::New)]
            .as_ref()
            .map(Cow::Borrowed)
    }

    /// The JSON line of the watch event a watcher that sees the change as `seen` sends:
    /// `{"type":…,"object":…}` and a newline. `None` when there is no such object.
    pub fn line(&self, seen: Seen) -> Option<Bytes> {
        let slot = &self.lines[seen.slot()];
        if let Some(line) = slot.get() {
            return Some(line.clone());
        }
        let object = self.on(seen.side())?;
        let line = event_line(seen, object.size(), |out| object.write_whole(out));
        Some(slot.get_or_init(|| line).clone())
    }
}

/// `{"type":…,"object":…}` and a newline, the object written by `write` (about `size` bytes).
pub fn event_line(seen: Seen, size: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut bytes = Vec::with_capacity(size + 40);
    bytes.extend_from_slice(b"{\"type\":\"");
    bytes.extend_from_slice(seen.event_type().as_bytes());
    bytes.extend_from_slice(b"\",\"object\":");
    write(&mut bytes);
    bytes.extend_from_slice(b"}\n");
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(labels: Value) -> Arc<CachedObject> {
        let value = json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "a", "labels": labels, "resourceVersion": "3"}});
        Arc::new(CachedObject::new("/registry/configmaps/default/a", &value))
    }

    #[test]
    fn seen_should_follow_selector_transitions() {
        assert_eq!(Seen::of(EventKind::Put, false, true), Some(Seen::Added));
        assert_eq!(Seen::of(EventKind::Put, true, true), Some(Seen::Modified));
        assert_eq!(Seen::of(EventKind::Put, true, false), Some(Seen::Left));
        assert_eq!(Seen::of(EventKind::Put, false, false), None);
        assert_eq!(
            Seen::of(EventKind::Delete, true, false),
            Some(Seen::Deleted)
        );
        assert_eq!(Seen::of(EventKind::Delete, false, false), None);
        assert_eq!(Seen::Left.side(), Side::New);
        assert_eq!(Seen::Deleted.side(), Side::Old);
    }

    #[test]
    fn event_should_decode_labels_of_both_sides() {
        let event = CachedEvent::new(
            3,
            "/registry/configmaps/default/a",
            EventKind::Put,
            Some(object(json!({"app": "web"}))),
            Some(object(json!({"app": "db"}))),
        );
        assert_eq!(event.labels(Side::New).unwrap()["app"], "web");
        assert_eq!(event.labels(Side::Old).unwrap()["app"], "db");
        let bare = CachedEvent::new(3, "k", EventKind::Delete, None, None);
        assert!(bare.labels(Side::New).is_none());
    }

    #[test]
    fn attrs_should_be_decoded_once_for_every_watcher_of_a_kind() {
        let event = CachedEvent::new(
            3,
            "/registry/configmaps/default/a",
            EventKind::Put,
            Some(object(json!({"app": "web"}))),
            None,
        );
        let decoded = std::cell::Cell::new(0);
        let decode = |object: &CachedObject| {
            decoded.set(decoded.get() + 1);
            object.to_value().ok()
        };
        for _ in 0..3 {
            let attrs = event.attrs(Side::New, "ConfigMap", decode).unwrap();
            assert_eq!(attrs["metadata"]["name"], "a");
            assert!(event.attrs(Side::Old, "ConfigMap", decode).is_none());
        }
        assert_eq!(decoded.get(), 1, "only the new side exists");
        // Another kind under the same key decodes for itself, every time.
        assert!(event.attrs(Side::New, "Other", decode).is_some());
        assert!(event.attrs(Side::New, "Other", decode).is_some());
        assert_eq!(decoded.get(), 3);
    }

    #[test]
    fn line_should_be_rendered_once_and_shared() {
        let event = CachedEvent::new(
            3,
            "/registry/configmaps/default/a",
            EventKind::Put,
            Some(object(json!({"app": "web"}))),
            None,
        );
        let first = event.line(Seen::Added).unwrap();
        let again = event.line(Seen::Added).unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr());
        let line: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(line["type"], "ADDED");
        assert_eq!(line["object"]["kind"], "ConfigMap");
        assert_eq!(line["object"]["metadata"]["labels"]["app"], "web");
        assert!(first.ends_with(b"}\n"));
        assert!(event.line(Seen::Deleted).is_none());
    }
}
