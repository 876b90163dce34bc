//! The SMTPCredentials example operator (`examples/smtp-credentials`, written with kube-rs as any
//! user would write an operator) against a real `skiff server` process over HTTPS: its CRD, its
//! owned Secret kept in line by server-side apply, garbage collection of the Secret when the
//! owner goes, and failed reconciles retried, seen from outside the controller through the
//! Events it publishes (the retry delays are checked on a paused clock by the example's own
//! `tests/backoff.rs`). Each test starts its own server and runs the controller in-process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use smtp_credentials::{SMTPCredentials, SMTPCredentialsSpec};
use support::{Server, start_server};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NAMESPACE: &str = "default";

/// A `skiff server` with the CRD installed and the controller running in this process.
struct Cluster {
    client: Client,
    controller: JoinHandle<Result<(), smtp_credentials::Error>>,
    _server: Server,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        // The controller's logs (its back-off warnings name each delay) appear with a failure.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("smtp_credentials=info")
                }),
            )
            .with_test_writer()
            .try_init();
        let server = tokio::task::spawn_blocking(start_server).await.unwrap();
        let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        smtp_credentials::install_crd(&client)
            .await
            .expect("the CRD is installed and established");
        let controller = tokio::spawn(smtp_credentials::run(client.clone()));
        Cluster {
            client,
            controller,
            _server: server,
        }
    }

    fn credentials(&self) -> Api<SMTPCredentials> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn create(&self, name: &str, username: &str) -> SMTPCredentials {
        let object = SMTPCredentials::new(
            name,
            SMTPCredentialsSpec {
                host: "smtp.example.com".into(),
                port: 2525,
                username: username.into(),
            },
        );
        self.credentials()
            .create(&PostParams::default(), &object)
            .await
            .unwrap()
    }

    /// The Secret `name`, once it exists and is owned by `owner`.
    async fn owned_secret(&self, name: &str, owner: &SMTPCredentials, within: Duration) -> Secret {
        let uid = owner.uid().unwrap();
        let secrets = self.secrets();
        eventually(&format!("Secret {name} owned by {uid}"), within, || {
            let secrets = secrets.clone();
            let uid = uid.clone();
            async move {
                let secret = secrets.get_opt(name).await.unwrap()?;
                secret
                    .owner_references()
                    .iter()
                    .any(|owner| owner.uid == uid)
                    .then_some(secret)
            }
        })
        .await
    }
}

/// Polls `check` every 100 ms until it answers, failing the test after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits up to 20 s until `api` has no object `name`.
async fn gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, Duration::from_secs(20), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Waits up to 20 s until Secret `name` holds `username`; returns its data.
async fn secret_with_username(
    secrets: &Api<Secret>,
    name: &str,
    username: &str,
    what: &str,
) -> BTreeMap<String, String> {
    eventually(what, Duration::from_secs(20), || async {
        let after = data(&secrets.get(name).await.unwrap());
        (after["username"] == username).then_some(after)
    })
    .await
}

fn data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, String::from_utf8(value.0).unwrap()))
        .collect()
}

fn ready_condition(object: &SMTPCredentials) -> Option<(String, String, String)> {
    let condition = object
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        condition.status.clone(),
        condition.reason.clone(),
        condition.message.clone(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_should_get_an_owned_secret_with_host_port_username_and_password() {
    let cluster = Cluster::start().await;
    let owner = cluster.create("mail", "alice").await;

    let secret = cluster
        .owned_secret("mail", &owner, Duration::from_secs(20))
        .await;
    let data = data(&secret);
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["host", "password", "port", "username"]
    );
    assert_eq!(data["host"], "smtp.example.com");
    assert_eq!(data["port"], "2525");
    assert_eq!(data["username"], "alice");
    assert!(data["password"].len() >= 16, "{:?}", data["password"]);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    let references = secret.owner_references();
    assert_eq!(references.len(), 1, "{references:?}");
    let reference = &references[0];
    assert_eq!(reference.api_version, "example.skiff.dev/v1");
    assert_eq!(reference.kind, "SMTPCredentials");
    assert_eq!(reference.name, "mail");
    assert_eq!(reference.uid, owner.uid().unwrap());
    assert_eq!(reference.controller, Some(true));
    assert_eq!(reference.block_owner_deletion, Some(true));

    // The Secret's fields are the controller's, by server-side apply.
    let managers: Vec<_> = secret
        .managed_fields()
        .iter()
        .map(|entry| (entry.manager.clone(), entry.operation.clone()))
        .collect();
    assert!(
        managers.contains(&(
            Some(smtp_credentials::FIELD_MANAGER.to_owned()),
            Some("Apply".to_owned())
        )),
        "{managers:?}"
    );

    // The object reports it through its Ready condition.
    let credentials = cluster.credentials();
    eventually("Ready=True on mail", Duration::from_secs(20), || {
        let credentials = credentials.clone();
        async move {
            let object = credentials.get("mail").await.unwrap();
            ready_condition(&object).filter(|(status, _, _)| status == "True")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_controller_should_settle_once_reconciled() {
    let cluster = Cluster::start().await;
    let owner = cluster.create("mail", "alice").await;
    cluster
        .owned_secret("mail", &owner, Duration::from_secs(20))
        .await;
    let credentials = cluster.credentials();
    eventually("Ready=True on mail", Duration::from_secs(20), || {
        let credentials = credentials.clone();
        async move {
            let object = credentials.get("mail").await.unwrap();
            ready_condition(&object).filter(|(status, _, _)| status == "True")
        }
    })
    .await;

    // Then it settles: applying the same Secret and condition again writes nothing, so the
    // controller does not wake itself up through its own watches.
    let versions = || async {
        (
            cluster
                .secrets()
                .get("mail")
                .await
                .unwrap()
                .resource_version(),
            cluster
                .credentials()
                .get("mail")
                .await
                .unwrap()
                .resource_version(),
        )
    };
    let settled = versions().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions().await,
        settled,
        "nothing changes once reconciled (a server-side apply that changes nothing must not \
         write a new resourceVersion, or the controller's watch of its Secret wakes it forever)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_secret_should_be_restored_after_hand_edit() {
    let cluster = Cluster::start().await;
    let owner = cluster.create("mail", "alice").await;
    let before = data(
        &cluster
            .owned_secret("mail", &owner, Duration::from_secs(20))
            .await,
    );

    // A hand edit of the data, as `kubectl patch --type merge` would send it.
    let edited = cluster
        .secrets()
        .patch(
            "mail",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "data": { "username": ByteString(b"mallory".to_vec()) }
            })),
        )
        .await
        .unwrap();
    assert_eq!(data(&edited)["username"], "mallory");

    let after = secret_with_username(
        &cluster.secrets(),
        "mail",
        "alice",
        "the controller to put username back",
    )
    .await;
    assert_eq!(after, before, "the password is kept, nothing else changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_secret_should_follow_spec_changes_and_keep_its_password() {
    let cluster = Cluster::start().await;
    let owner = cluster.create("mail", "alice").await;
    let before = data(
        &cluster
            .owned_secret("mail", &owner, Duration::from_secs(20))
            .await,
    );

    cluster
        .credentials()
        .patch(
            "mail",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": { "username": "bob", "host": "relay.example.com" }
            })),
        )
        .await
        .unwrap();

    let after = secret_with_username(
        &cluster.secrets(),
        "mail",
        "bob",
        "the Secret to follow the spec",
    )
    .await;
    assert_eq!(after["host"], "relay.example.com");
    assert_eq!(after["port"], "2525");
    assert_eq!(after["password"], before["password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_secret_should_be_garbage_collected_with_its_owner() {
    let cluster = Cluster::start().await;
    let owner = cluster.create("mail", "alice").await;
    cluster
        .owned_secret("mail", &owner, Duration::from_secs(20))
        .await;

    cluster
        .credentials()
        .delete("mail", &DeleteParams::default())
        .await
        .unwrap();

    gone(
        &cluster.credentials(),
        "mail",
        "the SMTPCredentials to be gone",
    )
    .await;
    gone(
        &cluster.secrets(),
        "mail",
        "the garbage collector to delete Secret mail (owned by the deleted SMTPCredentials)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_reconcile_should_be_retried_and_never_take_over_a_secret() {
    let cluster = Cluster::start().await;

    // A Secret nobody owns, with the name the SMTPCredentials will want.
    let unowned = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..ObjectMeta::default()
        },
        string_data: None,
        data: Some(BTreeMap::from([(
            "note".to_owned(),
            ByteString(b"made by hand".to_vec()),
        )])),
        ..Secret::default()
    };
    cluster
        .secrets()
        .create(&PostParams::default(), &unowned)
        .await
        .unwrap();

    // Every failed attempt publishes (or, as a series, updates) a Warning Event about the object:
    // record when each new count of it shows up.
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let (attempts_tx, mut attempts) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(async move {
        let mut seen = 0;
        let mut stream = watcher(events, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(event) = stream.try_next().await.unwrap() {
            let about_taken = event.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("SMTPCredentials") && r.name.as_deref() == Some("taken")
            });
            if !about_taken || event.reason.as_deref() != Some(smtp_credentials::RECONCILE_FAILED) {
                continue;
            }
            assert_eq!(event.type_.as_deref(), Some("Warning"));
            let count = event.series.as_ref().map_or(1, |series| series.count);
            if count > seen {
                seen = count;
                let note = event.note.clone().unwrap_or_default();
                if attempts_tx.send((Instant::now(), count, note)).is_err() {
                    return;
                }
            }
        }
    });

    let owner = cluster.create("taken", "alice").await;

    let mut seen: Vec<(Instant, i32, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 4 {
        let attempt = tokio::time::timeout_at(deadline, attempts.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} failed attempts seen in 30 s", seen.len()))
            .expect("the Event watch runs");
        seen.push(attempt);
    }
    watch.abort();

    let counts: Vec<_> = seen.iter().map(|(_, count, _)| *count).collect();
    assert_eq!(counts, [1, 2, 3, 4], "one Event count per attempt");
    for (_, _, note) in &seen {
        assert_eq!(
            note, "Secret taken exists and is not managed by SMTPCredentials taken",
            "the Event says why"
        );
    }
    // The delays themselves are checked on a paused clock, in-process:
    // examples/smtp-credentials/tests/backoff.rs. Here they only have to be there.
    assert!(
        seen.windows(2).all(|w| w[1].0 > w[0].0),
        "attempts follow each other"
    );

    // The Secret was never taken over, and the object says why it is not ready.
    let secret = cluster.secrets().get("taken").await.unwrap();
    assert!(secret.owner_references().is_empty());
    assert_eq!(
        data(&secret),
        BTreeMap::from([("note".to_owned(), "made by hand".to_owned())])
    );
    let object = cluster.credentials().get("taken").await.unwrap();
    let (status, reason, message) = ready_condition(&object).expect("a Ready condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ReconcileFailed")
    );
    assert!(message.contains("is not managed by"), "{message}");

    // Once the unowned Secret is gone, a retry creates the controller's own.
    cluster
        .secrets()
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    let secret = cluster
        .owned_secret("taken", &owner, Duration::from_secs(40))
        .await;
    let data = data(&secret);
    assert_eq!(data["username"], "alice");
    assert!(!data.contains_key("note"), "{data:?}");
    let credentials = cluster.credentials();
    eventually("Ready=True on taken", Duration::from_secs(20), || {
        let credentials = credentials.clone();
        async move {
            let object = credentials.get("taken").await.unwrap();
            ready_condition(&object).filter(|(status, _, _)| status == "True")
        }
    })
    .await;
}
