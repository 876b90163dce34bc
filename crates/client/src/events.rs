//! Components' Events (`core/v1`, the ones `kubectl describe` and `kubectl get events` show):
//! the scheduler's `Scheduled` and `FailedScheduling`, the node agent's `Pulled`, `Started`,
//! `BackOff`... Like upstream's event broadcaster they are written off the component's work,
//! from a bounded queue that drops notes when the API cannot keep up (an Event is never worth
//! slowing anything), and repeats of one reason and message about one object (and container)
//! update a single Event's count instead of adding one Event each time; past ten distinct
//! messages of one reason, they are combined into one Event, as upstream's aggregator does.
//! Event names are derived from the object's uid, the container, the reason and the message,
//! so a restarted component continues the same Event.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

/// Notes waiting to be written; more are dropped.
const BACKLOG: usize = 4096;
/// Events written at once.
const CONCURRENCY: usize = 16;
/// Names remembered with their count before the memory is cleared.
const REMEMBERED: usize = 100_000;

/// One Event about an object (a pod, unless `object` says otherwise).
#[derive(Clone, Debug)]
pub struct Note {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The object's uid.
    pub uid: String,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// Upstream's reason (`Scheduled`, `FailedScheduling`, `Pulled`, `BackOff`, ...).
    pub reason: &'static str,
    /// What happened.
    pub message: String,
    /// The part of the object it is about (`spec.containers{web}`), if any.
    pub field_path: Option<String>,
    /// The object's (apiVersion, kind) when it is not a Pod (`("apps/v1", "ReplicaSet")`).
    pub object: Option<(&'static str, &'static str)>,
}

impl Note {
    /// The key of notes that are "similar" (upstream's aggregate key): same object, part,
    /// type and reason, whatever the message.
    fn similar_key(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            self.uid.as_str(),
            self.field_path.as_deref(),
            self.type_,
            self.reason,
        )
            .hash(&mut hasher);
        hasher.finish()
    }

    fn message_key(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.message.hash(&mut hasher);
        hasher.finish()
    }

    /// The Event's name: one per distinct message of similar notes (upstream's event key
    /// includes the message), and one for all of them once they are combined.
    fn event_name(&self, combined: bool) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.similar_key().hash(&mut hasher);
        if !combined {
            self.message.hash(&mut hasher);
        }
        format!("{}.{:016x}", self.name, hasher.finish())
    }
}

/// Upstream's `EventAggregator` (`maxEvents`): from this many distinct messages among similar
/// notes on, a new message is written as one combined Event, prefixed [`COMBINED`].
const DISTINCT_MESSAGES: usize = 10;
/// Upstream's `maxIntervalInSeconds`: similar notes this long apart start counting afresh.
const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);
/// The prefix of a combined Event's message (upstream's words).
const COMBINED: &str = "(combined from similar events): ";

/// The distinct messages seen of each set of similar notes, and when the last came.
#[derive(Default)]
struct Similar(HashMap<u64, (std::collections::HashSet<u64>, Instant)>);

impl Similar {
    /// Whether `note`, at `now`, is to be combined with the notes similar to it: the first
    /// `DISTINCT_MESSAGES - 1` distinct messages keep Events of their own, any other is
    /// combined (upstream pops an arbitrary message to make room; this keeps the first ones, so
    /// the outcome does not depend on chance). A pause of [`AGGREGATION_WINDOW`] starts over.
    fn combine(&mut self, note: &Note, now: Instant) -> bool {
        if self.0.len() >= REMEMBERED {
            self.0.clear();
        }
        let (messages, last) = self
            .0
            .entry(note.similar_key())
            .or_insert_with(|| (std::collections::HashSet::new(), now));
        if now.saturating_duration_since(*last) > AGGREGATION_WINDOW {
            messages.clear();
        }
        *last = now;
        let key = note.message_key();
        if messages.contains(&key) {
            return false;
        }
        if messages.len() + 1 < DISTINCT_MESSAGES {
            messages.insert(key);
            return false;
        }
        true
    }
}

/// Who reports: the component, its instance and the host it runs on.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// The component (`default-scheduler`, `kubelet`).
    pub component: &'static str,
    /// This instance of it.
    pub instance: String,
    /// The node it runs on, if it runs on one.
    pub host: Option<String>,
    /// The Event's `action` for a reason (empty: none).
    pub action: fn(&str) -> &'static str,
}

/// Where a component drops its notes.
#[derive(Clone)]
pub struct Recorder {
    notes: mpsc::Sender<Note>,
}

impl Recorder {
    /// A recorder and the future that writes its Events (run it beside the component).
    pub fn new(client: Client, reporter: Reporter) -> (Recorder, impl Future<Output = ()>) {
        let (notes, queue) = mpsc::channel(BACKLOG);
        (Recorder { notes }, write_all(client, reporter, queue))
    }

    /// Queues a note; dropped when the backlog is full.
    pub fn record(&self, note: Note) {
        if self.notes.try_send(note).is_err() {
            tracing::debug!("event backlog full: an Event was dropped");
        }
    }
}

async fn write_all(client: Client, reporter: Reporter, queue: mpsc::Receiver<Note>) {
    let counts = std::sync::Mutex::new(HashMap::<String, i32>::new());
    let similar = std::sync::Mutex::new(Similar::default());
    tokio_stream_from(queue)
        .for_each_concurrent(CONCURRENCY, |mut note| {
            let client = client.clone();
            let reporter = &reporter;
            let counts = &counts;
            let combined = similar
                .lock()
                .map(|mut s| s.combine(&note, Instant::now()))
                .unwrap_or(false);
            if combined {
                note.message = format!("{COMBINED}{}", note.message);
            }
            async move {
                let name = note.event_name(combined);
                let known = counts.lock().ok().and_then(|c| c.get(&name).copied());
                let count = write(&client, reporter, &note, &name, known).await;
                if let (Some(count), Ok(mut counts)) = (count, counts.lock()) {
                    if counts.len() >= REMEMBERED {
                        counts.clear();
                    }
                    counts.insert(name, count);
                }
            }
        })
        .await;
}

fn tokio_stream_from(mut queue: mpsc::Receiver<Note>) -> impl futures::Stream<Item = Note> {
    futures::stream::poll_fn(move |cx| queue.poll_recv(cx))
}

/// Writes one note: a new Event, or the next count of the existing one. Returns the count
/// written, `None` when the write failed (logged; Events are best effort).
async fn write(
    client: &Client,
    reporter: &Reporter,
    note: &Note,
    name: &str,
    known: Option<i32>,
) -> Option<i32> {
    let events: Api<Event> = Api::namespaced(client.clone(), &note.namespace);
    let now = k8s_openapi::jiff::Timestamp::now();
    let result = match known {
        None => {
            let event = new_event(note, name, reporter, now);
            match events.create(&PostParams::default(), &event).await {
                Ok(_) => Ok(1),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let count = events
                        .get(name)
                        .await
                        .ok()
                        .and_then(|e| e.count)
                        .unwrap_or(1);
                    bump(&events, name, note, count + 1, now).await
                }
                Err(error) => Err(error),
            }
        }
        Some(count) => match bump(&events, name, note, count + 1, now).await {
            // Deleted meanwhile (by its TTL or a person): start it again.
            Err(kube::Error::Api(status)) if status.code == 404 => events
                .create(
                    &PostParams::default(),
                    &new_event(note, name, reporter, now),
                )
                .await
                .map(|_| 1),
            other => other,
        },
    };
    match result {
        Ok(count) => Some(count),
        Err(error) => {
            tracing::debug!(%error, event = name, "writing an Event failed");
            None
        }
    }
}

async fn bump(
    events: &Api<Event>,
    name: &str,
    note: &Note,
    count: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<i32, kube::Error> {
    let patch = json!({"count": count, "lastTimestamp": Time(now), "message": note.message});
    match events
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(count),
        // Deleted meanwhile (by a TTL or a person): start again.
        Err(kube::Error::Api(status)) if status.code == 404 => Err(kube::Error::Api(status)),
        Err(error) => Err(error),
    }
}

fn new_event(
    note: &Note,
    name: &str,
    reporter: &Reporter,
    now: k8s_openapi::jiff::Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(note.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(note.object.map_or("v1", |o| o.0).into()),
            kind: Some(note.object.map_or("Pod", |o| o.1).into()),
            name: Some(note.name.clone()),
            namespace: Some(note.namespace.clone()),
            uid: Some(note.uid.clone()),
            field_path: note.field_path.clone(),
            ..ObjectReference::default()
        },
        reason: Some(note.reason.into()),
        message: Some(note.message.clone()),
        type_: Some(note.type_.into()),
        source: Some(EventSource {
            component: Some(reporter.component.into()),
            host: reporter.host.clone(),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        action: Some((reporter.action)(note.reason))
            .filter(|a| !a.is_empty())
            .map(String::from),
        reporting_component: Some(reporter.component.into()),
        reporting_instance: Some(reporter.instance.clone()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(reason: &'static str, message: &str) -> Note {
        Note {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            type_: "Warning",
            reason,
            message: message.into(),
            field_path: Some("spec.containers{c}".into()),
            object: None,
        }
    }

    #[test]
    fn distinct_messages_should_be_distinct_events_until_upstreams_limit() {
        let liveness = note("Unhealthy", "Liveness probe failed: ");
        let readiness = note("Unhealthy", "Readiness probe failed: ");
        assert_ne!(liveness.event_name(false), readiness.event_name(false));
        assert_eq!(
            liveness.event_name(false),
            note("Unhealthy", "Liveness probe failed: ").event_name(false),
            "a repeat counts on the same Event"
        );
        let mut similar = Similar::default();
        let start = Instant::now();
        for i in 0..DISTINCT_MESSAGES - 1 {
            assert!(!similar.combine(&note("Failed", &format!("error {i}")), start));
        }
        // The tenth distinct message is combined, as upstream's; the first nine go on as
        // they were.
        assert!(similar.combine(&note("Failed", "error 9"), start));
        assert!(!similar.combine(&note("Failed", "error 3"), start));
        assert_eq!(
            note("Failed", "a").event_name(true),
            note("Failed", "b").event_name(true)
        );
        assert!(
            !similar.combine(&note("BackOff", "error 10"), start),
            "another reason"
        );
        // Ten minutes of quiet: counted afresh.
        let later = start + AGGREGATION_WINDOW + Duration::from_secs(1);
        assert!(!similar.combine(&note("Failed", "error 10"), later));
    }
}
