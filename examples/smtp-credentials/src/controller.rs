//! The controller: every `SMTPCredentials` gets a Secret of the same name, owned by it.
//!
//! `reconcile` server-side applies the Secret (`host`, `port`, `username` from the spec and a
//! `password` generated once and read back from the Secret ever after), so a hand edit of the
//! Secret is put back the next time it is reconciled — which `.owns(Secret)` makes immediate.
//! A Secret of that name that this object does not own is never taken over: reconcile fails.
//!
//! Failures are retried by `error_policy` with a per-object exponential back-off (500 ms, 1 s,
//! 2 s, ... capped at 5 min) counted in the [`Context`] and reset by the next success. Each
//! failure is published as a `Warning` Event (`ReconcileFailed`) on the object and recorded in
//! its `Ready` condition. Writing that condition changes the object, which triggers a reconcile
//! at once; reconcile therefore waits out a running back-off unless the spec (its generation)
//! changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{Error, FIELD_MANAGER, SMTPCredentials};

/// The label put on every Secret the controller manages; its watch of Secrets selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The Event reason of a failed reconcile.
pub const RECONCILE_FAILED: &str = "ReconcileFailed";
/// The first retry delay after a failure; each further consecutive failure doubles it.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often a healthy object is reconciled again even when nothing changed.
const RESYNC: Duration = Duration::from_secs(300);
/// Length of generated passwords (alphanumeric: ~190 bits).
const PASSWORD_LEN: usize = 32;

/// The retry delay after `failures` consecutive failures (the first failure is 1).
pub fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// Consecutive failures of one object and when it may be tried again.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    retry_at: Instant,
    /// The generation that failed: a new spec is tried at once.
    generation: Option<i64>,
}

/// What reconcile and error_policy share.
pub struct Context {
    client: Client,
    recorder: Recorder,
    failures: Mutex<HashMap<ObjectRef<SMTPCredentials>, Failures>>,
}

impl Context {
    /// A context whose Events are reported as `smtp-credentials-controller`, instance
    /// `$POD_NAME` when set.
    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            failures: Mutex::default(),
        }
    }

    /// How long the object still has to wait out its back-off, if its spec did not change.
    fn backing_off(
        &self,
        key: &ObjectRef<SMTPCredentials>,
        generation: Option<i64>,
    ) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = failures.get(key)?;
        let remaining = entry.retry_at.checked_duration_since(Instant::now())?;
        (entry.generation == generation && !remaining.is_zero()).then_some(remaining)
    }

    /// Counts one more failure and returns the count and the delay before the next attempt.
    fn record_failure(
        &self,
        key: ObjectRef<SMTPCredentials>,
        generation: Option<i64>,
    ) -> (u32, Duration) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = failures.entry(key).or_insert(Failures {
            count: 0,
            retry_at: Instant::now(),
            generation,
        });
        entry.count = entry.count.saturating_add(1);
        let delay = backoff_delay(entry.count);
        entry.retry_at = Instant::now() + delay;
        entry.generation = generation;
        (entry.count, delay)
    }

    fn reset_failures(&self, key: &ObjectRef<SMTPCredentials>) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// Runs the controller until its watches end.
pub async fn run(client: Client) {
    let credentials: Api<SMTPCredentials> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client.clone());
    let owned_secrets =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}"));
    let context = Arc::new(Context::new(client));
    Controller::new(credentials, watcher::Config::default())
        .owns(secrets, owned_secrets)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(%object, "reconciled"),
                // Already logged by error_policy, with the delay.
                Err(controller::Error::ReconcilerFailed(error, object)) => {
                    debug!(%object, %error, "reconcile failed")
                }
                Err(error) => warn!(%error, "controller"),
            }
        })
        .await;
}

/// Makes the Secret match the spec, unless the object is waiting out a back-off.
async fn reconcile(object: Arc<SMTPCredentials>, context: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*object);
    if let Some(remaining) = context.backing_off(&key, object.metadata.generation) {
        debug!(%key, ?remaining, "backing off");
        return Ok(Action::requeue(remaining));
    }
    let created = apply_secret(&object, &context.client).await?;
    context.reset_failures(&key);
    if created {
        info!(%key, "created Secret");
        publish(
            &context,
            &object,
            EventType::Normal,
            "SecretCreated",
            format!("Created Secret {}", object.name_any()),
        )
        .await;
    }
    set_ready(
        &object,
        &context.client,
        "True",
        "SecretApplied",
        format!("Secret {} holds the credentials", object.name_any()),
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

/// Retries with a growing delay, and reports the failure on the object.
fn error_policy(object: Arc<SMTPCredentials>, error: &Error, context: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*object);
    let (failures, delay) = context.record_failure(key.clone(), object.metadata.generation);
    warn!(
        %key,
        %error,
        failures,
        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "reconcile failed; retrying in {delay:?}"
    );
    let message = error.to_string();
    tokio::spawn(async move {
        publish(
            &context,
            &object,
            EventType::Warning,
            RECONCILE_FAILED,
            message.clone(),
        )
        .await;
        if let Err(error) =
            set_ready(&object, &context.client, "False", RECONCILE_FAILED, message).await
        {
            warn!(%key, %error, "could not write the Ready condition");
        }
    });
    Action::requeue(delay)
}

/// Server-side applies the Secret; returns whether it did not exist before.
async fn apply_secret(object: &SMTPCredentials, client: &Client) -> Result<bool, Error> {
    let name = object.name_any();
    let missing = |field| Error::MissingMetadata {
        name: name.clone(),
        field,
    };
    let namespace = object.namespace().ok_or_else(|| missing("namespace"))?;
    let uid = object.uid().ok_or_else(|| missing("uid"))?;
    let owner = object
        .controller_owner_ref(&())
        .map(
            |owner| k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                block_owner_deletion: Some(true),
                ..owner
            },
        )
        .ok_or_else(|| missing("uid"))?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let existing = secrets.get_opt(&name).await?;
    if let Some(secret) = &existing
        && !secret
            .owner_references()
            .iter()
            .any(|owner| owner.uid == uid)
    {
        return Err(Error::SecretNotManaged { name });
    }
    // The password is generated once; afterwards the Secret is its only copy.
    let password = existing
        .as_ref()
        .and_then(|secret| secret.data.as_ref())
        .and_then(|data| data.get("password"))
        .filter(|password| !password.0.is_empty())
        .cloned()
        .unwrap_or_else(|| ByteString(generate_password().into_bytes()));

    let spec = &object.spec;
    let text = |value: &str| ByteString(value.as_bytes().to_vec());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                FIELD_MANAGER.to_owned(),
            )])),
            owner_references: Some(vec![owner]),
            // The ownership check above holds only for the version it read.
            resource_version: existing.and_then(|secret| secret.metadata.resource_version),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            ("host".to_owned(), text(&spec.host)),
            ("port".to_owned(), text(&spec.port.to_string())),
            ("username".to_owned(), text(&spec.username)),
            ("password".to_owned(), password),
        ])),
        ..Secret::default()
    };
    let created = secret.metadata.resource_version.is_none();
    secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(created)
}

/// A random alphanumeric password.
fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// Writes the `Ready` condition through the status subresource, unless it already says so.
async fn set_ready(
    object: &SMTPCredentials,
    client: &Client,
    status: &str,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let current = object
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let generation = object.metadata.generation;
    if let Some(c) = current
        && c.status == status
        && c.reason == reason
        && c.message == message
        && c.observed_generation == generation
    {
        return Ok(());
    }
    let last_transition_time = match current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let condition = Condition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    let patch = serde_json::json!({
        "apiVersion": SMTPCredentials::api_version(&()),
        "kind": SMTPCredentials::kind(&()),
        "status": { "conditions": [condition] },
    });
    let Some(namespace) = object.namespace() else {
        return Err(Error::MissingMetadata {
            name: object.name_any(),
            field: "namespace",
        });
    };
    Api::<SMTPCredentials>::namespaced(client.clone(), &namespace)
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// Publishes an Event about the object; a failure to do so is only logged.
async fn publish(
    context: &Context,
    object: &SMTPCredentials,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = context
        .recorder
        .publish(&event, &object.object_ref(&()))
        .await
    {
        warn!(object = %object.name_any(), %error, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_five_minutes() {
        let delays: Vec<_> = (1..=4).map(backoff_delay).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
        );
        assert_eq!(backoff_delay(10), Duration::from_millis(256_000));
        assert_eq!(backoff_delay(11), BACKOFF_MAX);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
    }
}
