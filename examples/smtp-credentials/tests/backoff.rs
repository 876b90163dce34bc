//! The controller's retry timing on tokio's paused clock: the API runs in this process over the
//! memory store (`skiff_cluster::InProcess`), so the runtime's clock only moves when every task
//! waits, and the delays between failed attempts are exactly the back-off's, whatever the
//! machine's load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use smtp_credentials::{BACKOFF_BASE, SMTPCredentials, SMTPCredentialsSpec, backoff_delay};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn failed_reconciles_should_be_retried_after_exactly_the_growing_back_off() {
    let cluster = skiff_cluster::InProcess::start().await.unwrap();
    let client = cluster.client("example");
    smtp_credentials::install_crd(&client).await.unwrap();
    // A Secret nobody owns, with the name the SMTPCredentials will want: every reconcile fails.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let unowned = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "note".to_owned(),
            ByteString(b"made by hand".to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &unowned)
        .await
        .unwrap();

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut failures = watcher(events, watcher::Config::default())
        .applied_objects()
        .try_filter(|event| {
            futures::future::ready(
                event.reason.as_deref() == Some(smtp_credentials::RECONCILE_FAILED),
            )
        })
        .boxed();
    let controller = tokio::spawn(smtp_credentials::run(client.clone()));
    let credentials: Api<SMTPCredentials> = Api::namespaced(client, "default");
    let object = SMTPCredentials::new(
        "taken",
        SMTPCredentialsSpec {
            host: "smtp.example.com".into(),
            port: 2525,
            username: "alice".into(),
        },
    );
    credentials
        .create(&PostParams::default(), &object)
        .await
        .unwrap();

    // One Event per attempt (a series after the first): note when each new count appears.
    let mut seen: Vec<(Instant, i32)> = Vec::new();
    while seen.len() < 4 {
        let event = failures.try_next().await.unwrap().expect("the watch runs");
        let count = event.series.as_ref().map_or(1, |series| series.count);
        if seen.last().is_none_or(|(_, last)| count > *last) {
            seen.push((Instant::now(), count));
        }
    }
    controller.abort();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // The n-th retry waits backoff_delay(n) (plus the moment it takes to publish, which on a
    // paused clock is no time at all).
    let expected: Vec<Duration> = (1..=3).map(backoff_delay).collect();
    eprintln!("gaps between failed attempts: {gaps:?}");
    assert_eq!(expected[0], BACKOFF_BASE);
    for (gap, want) in gaps.iter().zip(&expected) {
        assert!(
            *gap >= *want && *gap < *want + Duration::from_millis(100),
            "gaps {gaps:?}, expected {expected:?}"
        );
    }
}
