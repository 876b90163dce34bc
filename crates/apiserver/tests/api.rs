//! The API's semantics, in one process: the router over the in-memory store, called exactly as
//! a client would over HTTP (minus TLS).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use skiff_apiserver::auth::{Caller, User};
use skiff_apiserver::clock::{FixedClock, SystemClock};
use skiff_store::Store;
use skiff_store::memory::MemoryStore;
use tower::ServiceExt;

struct Api {
    router: Router,
    store: Arc<MemoryStore>,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn api() -> Api {
    api_with_cache(skiff_apiserver::watch_cache::DEFAULT_CAPACITY).await
}

async fn api_with_cache(capacity: usize) -> Api {
    api_with(capacity, Arc::new(SystemClock)).await
}

async fn api_with(capacity: usize, clock: Arc<dyn skiff_apiserver::clock::Clock>) -> Api {
    let cluster = skiff_cluster::InProcess::with(capacity, clock)
        .await
        .unwrap();
    Api {
        router: cluster.router,
        store: cluster.store,
    }
}

fn admin() -> Caller {
    Caller(Some(User {
        name: "test-admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }))
}

/// The names of a Table's columns.
fn column_names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

impl Api {
    /// GET `uri` as a Table (with `accept` as the Accept header).
    async fn table(&self, uri: &str, accept: &str) -> Value {
        let mut request = Request::builder()
            .uri(uri)
            .header("accept", accept)
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(admin());
        let response = self.router.clone().oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let mut request = builder.body(Body::from(body)).unwrap();
        request.extensions_mut().insert(admin());
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    async fn json(&self, method: &str, uri: &str, body: Value) -> Reply {
        self.call(
            method,
            uri,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri, None, Vec::new()).await
    }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn create_should_return_201_with_server_fields() {
    let api = api().await;
    let reply = api.json("POST", CMS, cm("a", json!({}))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let object = reply.json();
    let meta = &object["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert!(meta["uid"].as_str().unwrap().len() == 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    let rv: i64 = meta["resourceVersion"].as_str().unwrap().parse().unwrap();
    let got = api.get(&format!("{CMS}/a")).await.json();
    assert_eq!(got["metadata"]["resourceVersion"], rv.to_string());
}

#[tokio::test]
async fn duplicate_create_should_answer_upstreams_exact_409_body() {
    let api = api().await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}});
    assert_eq!(
        api.json("POST", "/api/v1/namespaces/default/services", svc.clone())
            .await
            .status,
        201
    );
    let reply = api
        .json("POST", "/api/v1/namespaces/default/services", svc)
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        String::from_utf8(reply.body).unwrap(),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"services \\\"x\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"x\",\"kind\":\"services\"},\"code\":409}\n"
    );
}

#[tokio::test]
async fn stale_update_should_conflict_with_upstreams_message() {
    let api = api().await;
    let created = api.json("POST", CMS, cm("a", json!({}))).await.json();
    let mut first = created.clone();
    first["data"]["k"] = json!("1");
    assert_eq!(
        api.json("PUT", &format!("{CMS}/a"), first).await.status,
        200
    );
    let mut stale = created;
    stale["data"]["k"] = json!("2");
    let reply = api.json("PUT", &format!("{CMS}/a"), stale).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.json()["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn an_update_decided_on_a_stale_copy_should_be_decided_again_on_the_stored_object() {
    // A fixed clock: the server's copy of its last write does not age out, so the first
    // attempt is certain to decide on it.
    let api = api_with(
        skiff_apiserver::watch_cache::DEFAULT_CAPACITY,
        Arc::new(FixedClock(jiff::Timestamp::now())),
    )
    .await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let created = api.json("POST", pods, pod).await.json();
    // Another writer changes the pod behind this server's copy of its last write.
    let key = "/registry/core/pods/default/p";
    let (kv, _) = api.store.get(key, None).await.unwrap();
    let kv = kv.unwrap();
    let mut changed: Value = serde_json::from_slice(&kv.value).unwrap();
    changed["metadata"]["labels"] = json!({"by": "other"});
    api.store
        .update(
            key,
            serde_json::to_vec(&changed).unwrap().into(),
            kv.mod_revision,
        )
        .await
        .unwrap();
    // A status write without a resourceVersion is first decided on the stale copy, conflicts,
    // and is decided again from its body on the stored object.
    let mut status = created;
    status["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    status["status"]["phase"] = json!("Running");
    let reply = api.json("PUT", &format!("{pods}/p/status"), status).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    let stored = api.get(&format!("{pods}/p")).await.json();
    assert_eq!(stored["status"]["phase"], "Running");
    assert_eq!(stored["metadata"]["labels"]["by"], "other");
}

#[tokio::test]
async fn generation_should_bump_on_spec_changes_and_status_should_be_separate() {
    let api = api().await;
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let created = api.json("POST", deployments, deploy).await.json();
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["spec"]["replicas"], 1, "defaulted");
    assert_eq!(
        created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    let merge = Some("application/merge-patch+json");
    let labels = api
        .call(
            "PATCH",
            &format!("{deployments}/d"),
            merge,
            br#"{"metadata":{"labels":{"x":"y"}}}"#.to_vec(),
        )
        .await
        .json();
    assert_eq!(labels["metadata"]["generation"], 1);
    let scaled = api
        .call(
            "PATCH",
            &format!("{deployments}/d"),
            merge,
            br#"{"spec":{"replicas":3},"status":{"replicas":9}}"#.to_vec(),
        )
        .await
        .json();
    assert_eq!(scaled["metadata"]["generation"], 2);
    assert!(
        scaled
            .get("status")
            .is_none_or(|s| s.get("replicas").is_none()),
        "main resource ignores status"
    );
    let status = api
        .call(
            "PATCH",
            &format!("{deployments}/d/status"),
            merge,
            br#"{"spec":{"replicas":7},"status":{"replicas":3}}"#.to_vec(),
        )
        .await
        .json();
    assert_eq!(
        (
            status["spec"]["replicas"].clone(),
            status["status"]["replicas"].clone()
        ),
        (json!(3), json!(3))
    );
    let scale = api.get(&format!("{deployments}/d/scale")).await.json();
    assert_eq!(
        (
            scale["kind"].clone(),
            scale["spec"]["replicas"].clone(),
            scale["status"]["selector"].clone()
        ),
        (json!("Scale"), json!(3), json!("a=b"))
    );
}

#[tokio::test]
async fn list_should_filter_by_selectors_and_paginate_at_one_revision() {
    let api = api().await;
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.json("POST", CMS, cm(&format!("c{i}"), json!({"tier": tier})))
            .await;
    }
    let even = api
        .get(&format!("{CMS}?labelSelector=tier%3Deven"))
        .await
        .json();
    assert_eq!(even["items"].as_array().unwrap().len(), 4);
    let notin = api
        .get(&format!("{CMS}?labelSelector=tier%20notin%20(even)"))
        .await
        .json();
    assert_eq!(notin["items"].as_array().unwrap().len(), 3);
    let by_name = api
        .get(&format!("{CMS}?fieldSelector=metadata.name%3Dc3"))
        .await
        .json();
    assert_eq!(by_name["items"][0]["metadata"]["name"], "c3");
    assert!(
        by_name["items"][0].get("kind").is_none(),
        "typed list items carry no kind"
    );
    let bad = api.get(&format!("{CMS}?fieldSelector=spec.nope%3Dx")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let first = api.get(&format!("{CMS}?limit=3")).await.json();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // A write between pages does not show up in later pages.
    api.json("POST", CMS, cm("c99", json!({}))).await;
    let mut names: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut next = Some(token);
    while let Some(token) = next {
        let page = api
            .get(&format!("{CMS}?limit=3&continue={token}"))
            .await
            .json();
        assert_eq!(
            page["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        next = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
}

async fn watch_lines(api: &Api, uri: &str) -> Vec<Value> {
    let reply = tokio::time::timeout(Duration::from_secs(10), api.get(uri))
        .await
        .expect("watch ends");
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8(reply.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each watch event as "TYPE name".
fn type_and_name(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn watch_should_resume_from_a_resource_version_and_end_on_time() {
    let api = api().await;
    let a = api.json("POST", CMS, cm("a", json!({}))).await.json();
    let rv = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut changed = a.clone();
    changed["data"]["k"] = json!("2");
    api.json("PUT", &format!("{CMS}/a"), changed).await;
    api.call("DELETE", &format!("{CMS}/a"), None, vec![]).await;
    let events = watch_lines(
        &api,
        &format!("{CMS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);
    assert_eq!(events[0]["object"]["data"]["k"], "2");
}

#[tokio::test(start_paused = true)]
async fn a_quiet_watch_should_get_a_bookmark_every_thirty_seconds_until_its_timeout() {
    let api = api().await;
    let a = api.json("POST", CMS, cm("a", json!({}))).await.json();
    let rv = a["metadata"]["resourceVersion"].as_str().unwrap();
    let started = tokio::time::Instant::now();
    // Time is paused: it jumps ahead whenever everything waits, so this takes no real time.
    let reply = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=75"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let events: Vec<Value> = String::from_utf8(reply.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["BOOKMARK", "BOOKMARK"]);
    assert_eq!(events[0]["object"]["metadata"]["resourceVersion"], rv);
    assert_eq!(started.elapsed().as_secs(), 75);
}

#[tokio::test]
async fn watch_without_resource_version_should_start_with_the_current_state() {
    let api = api().await;
    api.json("POST", CMS, cm("a", json!({"x": "1"}))).await;
    api.json("POST", CMS, cm("b", json!({"x": "2"}))).await;
    let events = watch_lines(
        &api,
        &format!("{CMS}?watch=1&labelSelector=x%3D2&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0]["type"].clone(),
            events[0]["object"]["metadata"]["name"].clone()
        ),
        (json!("ADDED"), json!("b"))
    );
}

#[tokio::test]
async fn a_watch_behind_the_cache_should_follow_it_again_once_caught_up() {
    // A ring of 4 events: a watch from revision 1 starts on a store watch of its own.
    let api = api_with_cache(4).await;
    for i in 0..10 {
        api.json("POST", CMS, cm(&format!("a{i}"), json!({}))).await;
    }
    // (A consistent list waits for the cache, whose own store watch is then open.)
    assert_eq!(api.get(CMS).await.status, StatusCode::OK);
    let idle = api.store.open_watches();
    let uri = format!("{CMS}?watch=1&resourceVersion=1&timeoutSeconds=3");
    let watch = {
        let api = Api {
            router: api.router.clone(),
            store: api.store.clone(),
        };
        tokio::spawn(async move { watch_lines(&api, &uri).await })
    };
    // Once past the history, it reads the ring again and its store watch is closed.
    let mut open = Vec::new();
    for _ in 0..40 {
        open.push(api.store.open_watches());
        if open.len() > 2 && *open.last().unwrap() == idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        open.last(),
        Some(&idle),
        "the store watch is closed: {open:?}"
    );
    for i in 0..3 {
        api.json("POST", CMS, cm(&format!("b{i}"), json!({}))).await;
    }
    let names = type_and_name(&watch.await.unwrap());
    let wanted: Vec<String> = (0..10)
        .map(|i| format!("ADDED a{i}"))
        .chain((0..3).map(|i| format!("ADDED b{i}")))
        .collect();
    assert_eq!(names, wanted, "every change once, in order");
}

/// Creates a ConfigMap, waits for the cache to hold it, and runs `watch` on a copy of `api`
/// with `uri` and the ConfigMap's `resourceVersion` appended.
async fn watch_from_a_new_revision<T, F>(
    api: &Api,
    uri: &str,
    watch: impl FnOnce(Api, String) -> F,
) -> tokio::task::JoinHandle<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let start = api.json("POST", CMS, cm("start", json!({}))).await.json();
    let rv = start["metadata"]["resourceVersion"].as_str().unwrap();
    assert_eq!(api.get(CMS).await.status, StatusCode::OK);
    let copy = Api {
        router: api.router.clone(),
        store: api.store.clone(),
    };
    tokio::spawn(watch(copy, format!("{uri}&resourceVersion={rv}")))
}

/// Opens a watch at `uri` (its `resourceVersion` appended) from a new ConfigMap's revision,
/// then creates 40 other ConfigMaps, with time between them for the cache's feed and the
/// watch to run (as they do beside a server's requests), and compacts the store: a watch that
/// fell behind the ring would now read compacted history and end with 410 Gone. The watch
/// gives its events as "TYPE name".
async fn watch_through_other_changes(api: &Api, uri: &str) -> tokio::task::JoinHandle<Vec<String>> {
    let watch = watch_from_a_new_revision(api, uri, |api, uri| async move {
        type_and_name(&watch_lines(&api, &uri).await)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..40 {
        api.json("POST", CMS, cm(&format!("other{i}"), json!({})))
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now = api.store.current_revision().await.unwrap();
    api.store.compact(now).await.unwrap();
    watch
}

#[tokio::test]
async fn a_watch_of_a_quiet_resource_should_see_its_change_after_many_of_others() {
    // A ring of 8: a secrets watch is not woken by the ConfigMaps' changes, only swept along.
    let api = api_with_cache(8).await;
    let secrets = "/api/v1/namespaces/default/secrets";
    let watch =
        watch_through_other_changes(&api, &format!("{secrets}?watch=1&timeoutSeconds=2")).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    assert_eq!(
        api.json("POST", secrets, secret).await.status,
        StatusCode::CREATED
    );
    assert_eq!(watch.await.unwrap(), ["ADDED s"]);
}

#[tokio::test]
async fn a_watch_of_one_name_should_see_its_changes_after_many_of_other_names() {
    // A ring of 8: a watch of one ConfigMap's name is not woken by the others' changes, only
    // swept along.
    let api = api_with_cache(8).await;
    let uri = format!("{CMS}?watch=1&fieldSelector=metadata.name%3Dtarget&timeoutSeconds=2");
    let watch = watch_through_other_changes(&api, &uri).await;
    assert_eq!(
        api.json("POST", CMS, cm("target", json!({}))).await.status,
        StatusCode::CREATED
    );
    api.json("POST", CMS, cm("after", json!({}))).await;
    let target = format!("{CMS}/target");
    assert_eq!(
        api.json("PUT", &target, cm("target", json!({"v": "2"})))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(watch.await.unwrap(), ["ADDED target", "MODIFIED target"]);
}

/// The events of a watch at `uri` (its `resourceVersion` appended; with bookmarks, ending
/// after 45 s of paused time) from a new ConfigMap's revision, when another ConfigMap,
/// also returned, is created a second in.
async fn events_beside_another_change(api: &Api, uri: &str) -> (Vec<Value>, Value) {
    // (`watch_lines` gives up after 10 s.)
    let watch =
        watch_from_a_new_revision(api, uri, |api, uri| async move { api.get(&uri).await }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = api.json("POST", CMS, cm("later", json!({}))).await.json();
    let events = String::from_utf8(watch.await.unwrap().body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (events, later)
}

#[tokio::test(start_paused = true)]
async fn a_quiet_resources_bookmark_should_carry_the_newest_revision() {
    let api = api().await;
    // A change of another resource does not wake the secrets watch; its bookmark still
    // carries the newest revision.
    let (events, later) = events_beside_another_change(
        &api,
        "/api/v1/namespaces/default/secrets?watch=1&allowWatchBookmarks=true&timeoutSeconds=45",
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(
        events[0]["object"]["metadata"]["resourceVersion"],
        later["metadata"]["resourceVersion"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_bookmark_of_a_watch_of_one_name_should_carry_the_newest_revision() {
    let api = api().await;
    // Another ConfigMap's change does not wake the watch and stays unread; the bookmark still
    // carries the newest revision.
    let uri = format!(
        "{CMS}?watch=1&fieldSelector=metadata.name%3Dtarget&allowWatchBookmarks=true&timeoutSeconds=45"
    );
    let (events, later) = events_beside_another_change(&api, &uri).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(
        events[0]["object"]["metadata"]["resourceVersion"],
        later["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn watch_on_a_compacted_revision_should_answer_410_gone() {
    // A ring of 2 events: revision 1 is soon out of the cache, then compacted in the store.
    let api = api_with_cache(2).await;
    for i in 0..5 {
        api.json("POST", CMS, cm(&format!("a{i}"), json!({}))).await;
    }
    let now = api.store.current_revision().await.unwrap();
    api.store.compact(now).await.unwrap();
    let events = watch_lines(
        &api,
        &format!("{CMS}?watch=1&resourceVersion=1&timeoutSeconds=1"),
    )
    .await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(
        (
            events[0]["object"]["code"].clone(),
            events[0]["object"]["reason"].clone()
        ),
        (json!(410), json!("Expired"))
    );
}

#[tokio::test]
async fn bodies_should_be_json_by_default_yaml_when_labelled_and_limited_to_3_mib() {
    let api = api().await;
    let no_type = api
        .call(
            "POST",
            CMS,
            None,
            cm("plain", json!({})).to_string().into_bytes(),
        )
        .await;
    assert_eq!(no_type.status, StatusCode::CREATED);
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yml\ndata:\n  k: v\n";
    let as_yaml = api
        .call(
            "POST",
            CMS,
            Some("application/yaml"),
            yaml.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(as_yaml.status, StatusCode::CREATED);
    let huge = vec![b' '; 3 * 1024 * 1024 + 10];
    let too_big = api.call("POST", CMS, None, huge).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.json()["reason"], "RequestEntityTooLarge");
}

#[tokio::test]
async fn field_validation_and_dry_run_should_behave_as_upstream() {
    let api = api().await;
    let mut object = cm("v", json!({}));
    object["bogus"] = json!(1);
    let strict = api
        .json(
            "POST",
            &format!("{CMS}?fieldValidation=Strict"),
            object.clone(),
        )
        .await;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        strict.json()["message"],
        "strict decoding error: unknown field \"bogus\""
    );
    let warned = api.json("POST", &format!("{CMS}?dryRun=All"), object).await;
    assert_eq!(warned.status, StatusCode::CREATED);
    assert!(
        warned
            .headers
            .get("warning")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("unknown field")
    );
    assert_eq!(
        api.get(&format!("{CMS}/v")).await.status,
        StatusCode::NOT_FOUND,
        "dry run stored nothing"
    );
}

#[tokio::test]
async fn anonymous_callers_should_get_401() {
    let api = api().await;
    let request = Request::builder().uri(CMS).body(Body::empty()).unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tables_should_have_kubectls_columns() {
    let api = api().await;
    api.json("POST", CMS, cm("t", json!({}))).await;
    let table = api
        .table(
            CMS,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .await;
    let columns = column_names(&table);
    assert_eq!(columns, ["Name", "Data", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[tokio::test]
async fn finalizers_should_hold_an_object_until_removed() {
    let api = api().await;
    let mut object = cm("f", json!({}));
    object["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.json("POST", CMS, object).await;
    let deleting = api
        .call("DELETE", &format!("{CMS}/f"), None, vec![])
        .await
        .json();
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(api.get(&format!("{CMS}/f")).await.status, StatusCode::OK);
    let add = api
        .call(
            "PATCH",
            &format!("{CMS}/f"),
            Some("application/merge-patch+json"),
            // (A finalizer of a core kind without a `/` must be a standard one: upstream's rule.)
            br#"{"metadata":{"finalizers":["example.com/hold","example.com/new"]}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        add.status,
        StatusCode::FORBIDDEN,
        "no new finalizers while deleting"
    );
    let release = api
        .call(
            "PATCH",
            &format!("{CMS}/f"),
            Some("application/merge-patch+json"),
            br#"{"metadata":{"finalizers":null}}"#.to_vec(),
        )
        .await;
    assert_eq!(release.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{CMS}/f")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn services_should_get_unique_cluster_ips_and_defaults() {
    let api = api().await;
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..20 {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
        let created = api
            .json("POST", "/api/v1/namespaces/default/services", svc)
            .await
            .json();
        assert_eq!(created["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(created["spec"]["type"], "ClusterIP");
        assert!(ips.insert(created["spec"]["clusterIP"].as_str().unwrap().to_string()));
    }
    assert!(
        !ips.contains("10.43.0.1"),
        "the kubernetes service keeps its IP"
    );
    let taken = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dup"}, "spec": {"clusterIP": "10.43.0.1", "ports": [{"port": 1}]}});
    assert_eq!(
        api.json("POST", "/api/v1/namespaces/default/services", taken)
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn node_ports_should_be_allocated_kept_and_given_back() {
    let api = api().await;
    const SVCS: &str = "/api/v1/namespaces/default/services";
    let svc = |name: &str, kind: &str, node_port: Option<u16>| {
        let mut port = json!({"name": "http", "port": 80});
        if let Some(n) = node_port {
            port["nodePort"] = json!(n);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": name}, "ports": [port]}})
    };
    let created = api.json("POST", SVCS, svc("np", "NodePort", None)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.json();
    let port = created["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");
    assert_eq!(created["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(created["spec"]["ipFamilyPolicy"], "SingleStack");
    // A second Service asking for it by number is refused with upstream's message.
    let taken = api
        .json("POST", SVCS, svc("other", "NodePort", Some(port as u16)))
        .await;
    assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = taken.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains(&format!(
            "spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"
        )),
        "{message}"
    );
    let outside = api
        .json("POST", SVCS, svc("far", "NodePort", Some(40000)))
        .await;
    assert_eq!(outside.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        outside.json()["message"]
            .as_str()
            .unwrap()
            .contains("The range of valid ports is 30000-32767")
    );
    // A replacement that leaves the port out keeps it.
    let mut replaced = svc("np", "NodePort", None);
    replaced["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let put = api.json("PUT", &format!("{SVCS}/np"), replaced).await;
    assert_eq!(put.status, StatusCode::OK);
    let put = put.json();
    assert_eq!(put["spec"]["ports"][0]["nodePort"].as_u64(), Some(port));
    assert_eq!(put["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    // Turned ClusterIP, it gives the port back: another Service may take it.
    let patch = api
        .call(
            "PATCH",
            &format!("{SVCS}/np"),
            Some("application/merge-patch+json"),
            br#"{"spec":{"type":"ClusterIP"}}"#.to_vec(),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK);
    assert!(patch.json()["spec"]["ports"][0].get("nodePort").is_none());
    let reuse = api
        .json("POST", SVCS, svc("other", "NodePort", Some(port as u16)))
        .await;
    assert_eq!(reuse.status, StatusCode::CREATED);
    // Deleted, it gives it back again; a LoadBalancer takes one too.
    assert_eq!(
        api.call("DELETE", &format!("{SVCS}/other"), None, Vec::new())
            .await
            .status,
        StatusCode::OK
    );
    let lb = api
        .json("POST", SVCS, svc("lb", "LoadBalancer", Some(port as u16)))
        .await;
    assert_eq!(lb.status, StatusCode::CREATED);
    assert_eq!(lb.json()["status"], json!({"loadBalancer": {}}));
}

/// Malformed input at every verb: always a 4xx with a Status body, never a panic or a 5xx.
#[tokio::test]
async fn malformed_requests_should_always_get_a_4xx_status() {
    use rand::{Rng, SeedableRng};
    let api = api().await;
    api.json("POST", CMS, cm("target", json!({}))).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let samples: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        b"\"s\"".to_vec(),
        br#"{"metadata": 5}"#.to_vec(),
        br#"{"metadata": {"name": 5}}"#.to_vec(),
        br#"{"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "x"}}"#.to_vec(),
        br#"{"kind": "Pod", "metadata": {"name": "x"}}"#.to_vec(),
        br#"{"metadata": {"name": "UPPER"}}"#.to_vec(),
        br#"{"metadata": {"name": "x"}, "data": {"k": 1}}"#.to_vec(),
        br#"{"metadata": {"name": "x", "labels": "nope"}}"#.to_vec(),
        br#"[{"op": "explode"}]"#.to_vec(),
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000)).into_bytes(),
        vec![0xff, 0xfe, 0x00],
    ];
    let mut bodies = samples;
    for _ in 0..150 {
        let len = rng.random_range(0..64);
        let alphabet = b"{}[]\":,0123456789abcdefnulltrue -\\";
        bodies.push(
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        );
    }
    let targets = [
        ("POST", CMS.to_string(), Some("application/json")),
        ("POST", CMS.to_string(), Some("application/yaml")),
        ("PUT", format!("{CMS}/target"), Some("application/json")),
        (
            "PATCH",
            format!("{CMS}/target"),
            Some("application/json-patch+json"),
        ),
        (
            "PATCH",
            format!("{CMS}/target"),
            Some("application/merge-patch+json"),
        ),
        (
            "PATCH",
            format!("{CMS}/target"),
            Some("application/strategic-merge-patch+json"),
        ),
        ("PATCH", format!("{CMS}/target"), Some("text/plain")),
        (
            "DELETE",
            format!("{CMS}/target-missing"),
            Some("application/json"),
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/default/deployments".to_string(),
            Some("application/json"),
        ),
        ("GET", format!("{CMS}?limit=x&labelSelector=%3D%3D"), None),
        ("GET", format!("{CMS}?continue=garbage"), None),
        ("GET", format!("{CMS}?watch=1&resourceVersion=abc"), None),
    ];
    for body in &bodies {
        for (method, uri, content_type) in &targets {
            let reply = api.call(method, uri, *content_type, body.clone()).await;
            let code = reply.status.as_u16();
            if (200..300).contains(&code) {
                continue; // some random bodies are valid patches
            }
            assert!(
                (400..500).contains(&code),
                "{method} {uri} {:?} gave {code}: {}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&reply.body)
            );
            assert_eq!(reply.json()["kind"], "Status");
        }
    }
}

#[tokio::test]
async fn aggregated_discovery_should_list_every_group_with_its_resources() {
    let api = api().await;
    let mut request = Request::builder()
        .uri("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(admin());
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let list: Value = serde_json::from_slice(&body).unwrap();
    let apps = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .unwrap();
    let deployments = apps["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "deployments")
        .unwrap();
    assert_eq!(deployments["responseKind"]["kind"], "Deployment");
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    let scale = deployments["subresources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subresource"] == "scale")
        .unwrap();
    assert_eq!(scale["responseKind"]["kind"], "Scale");
    // Plain clients still get the legacy form.
    assert_eq!(api.get("/api").await.json()["kind"], "APIVersions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_should_share_the_watch_cache() {
    let api = api().await;
    let start = api.json("POST", CMS, cm("start", json!({}))).await.json();
    let rv = start["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let router = api.router.clone();
        let uri = format!("{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=2");
        watchers.push(tokio::spawn(async move {
            let mut request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            request.extensions_mut().insert(admin());
            let response = router.oneshot(request).await.unwrap();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            String::from_utf8(body.to_vec()).unwrap().lines().count()
        }));
    }
    for i in 0..20 {
        api.json("POST", CMS, cm(&format!("w{i}"), json!({}))).await;
    }
    for watcher in watchers {
        assert_eq!(watcher.await.unwrap(), 20, "every watcher saw every event");
    }
}

#[tokio::test]
async fn field_selected_watches_should_each_see_their_own_pods_from_shared_events() {
    let api = api().await;
    let pods = "/api/v1/namespaces/default/pods";
    let start = api.json("POST", CMS, cm("start", json!({}))).await.json();
    let rv = start["metadata"]["resourceVersion"].as_str().unwrap();
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
    };
    for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1")] {
        assert_eq!(
            api.json("POST", pods, pod(name, node)).await.status,
            StatusCode::CREATED
        );
    }
    for phase in ["Running", "Succeeded"] {
        let mut pod = api.get(&format!("{pods}/a")).await.json();
        pod["status"]["phase"] = json!(phase);
        api.json("PUT", &format!("{pods}/a/status"), pod).await;
    }
    // Bound to a node, a pod is deleted at once only without a grace period.
    api.call(
        "DELETE",
        &format!("{pods}/c?gracePeriodSeconds=0"),
        None,
        vec![],
    )
    .await;
    // Each watch reads the same cached events; what the selectors read of each is decoded
    // once, whichever watch asks first.
    let seen = |query: &'static str| {
        let uri = format!("{pods}?watch=1&resourceVersion={rv}&timeoutSeconds=1&{query}");
        let api = &api;
        async move { type_and_name(&watch_lines(api, &uri).await) }
    };
    assert_eq!(
        seen("fieldSelector=spec.nodeName%3Dn1").await,
        [
            "ADDED a",
            "ADDED c",
            "MODIFIED a",
            "MODIFIED a",
            "DELETED c"
        ]
    );
    assert_eq!(seen("fieldSelector=spec.nodeName%3Dn2").await, ["ADDED b"]);
    // A pod that starts passing a selector is ADDED, one that stops is DELETED; labels and
    // fields together.
    assert_eq!(
        seen("fieldSelector=status.phase%3DRunning").await,
        ["ADDED a", "DELETED a"]
    );
    assert_eq!(
        seen("fieldSelector=spec.nodeName%3Dn1&labelSelector=app%3Dc").await,
        ["ADDED c", "DELETED c"]
    );
    // The name and namespace are read from the key.
    assert_eq!(
        seen("fieldSelector=metadata.name%3Da").await,
        ["ADDED a", "MODIFIED a", "MODIFIED a"]
    );
    assert_eq!(
        seen(
            "fieldSelector=metadata.namespace%3Ddefault,metadata.name!%3Da&labelSelector=app!%3Dc"
        )
        .await,
        ["ADDED b"]
    );
    assert_eq!(
        seen("fieldSelector=metadata.namespace%3Dother").await,
        Vec::<String>::new()
    );
    // A cluster-scoped object's key has no namespace: it selects as "".
    let namespaces = "/api/v1/namespaces";
    for name in ["x", "y"] {
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.json("POST", namespaces, namespace).await;
    }
    let uri =
        |query: &str| format!("{namespaces}?watch=1&resourceVersion={rv}&timeoutSeconds=1&{query}");
    assert_eq!(
        type_and_name(&watch_lines(&api, &uri("fieldSelector=metadata.name%3Dy")).await),
        ["ADDED y"]
    );
    assert_eq!(
        type_and_name(&watch_lines(&api, &uri("fieldSelector=metadata.namespace%3D")).await),
        ["ADDED x", "ADDED y"]
    );
}

#[tokio::test]
async fn pods_should_bind_once_and_be_evictable() {
    let api = api().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let created = api.json("POST", pods, pod).await.json();
    // Nothing to exec into before the pod has a node.
    let exec = api
        .json(
            "POST",
            &format!("{pods}/p/exec?command=true&stdout=true"),
            json!({}),
        )
        .await;
    assert_eq!(exec.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        exec.json()["message"],
        "pod p does not have a host assigned"
    );
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    // A Binding for another pod of the same name (an earlier one, deleted and recreated) is
    // refused.
    let stale = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "uid": "not-this-pod"}, "target": {"kind": "Node", "name": "node-1"}});
    let refused = api.json("POST", &format!("{pods}/p/binding"), stale).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("the UID in the precondition (not-this-pod) does not match"),
        "{}",
        refused.json()
    );
    let uid = created["metadata"]["uid"].as_str().unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "uid": uid}, "target": {"kind": "Node", "name": "node-1"}});
    assert_eq!(
        api.json("POST", &format!("{pods}/p/binding"), binding.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.get(&format!("{pods}/p")).await.json()["spec"]["nodeName"],
        "node-1"
    );
    assert_eq!(
        api.json("POST", &format!("{pods}/p/binding"), binding)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let eviction =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}});
    assert_eq!(
        api.json("POST", &format!("{pods}/p/eviction"), eviction)
            .await
            .status,
        StatusCode::CREATED
    );
    // Evicted as a deletion is: gracefully, so the bound pod stays until its node is done.
    let evicted = api.get(&format!("{pods}/p")).await.json();
    assert_eq!(evicted["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(evicted["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        api.call(
            "DELETE",
            &format!("{pods}/p?gracePeriodSeconds=0"),
            None,
            Vec::new()
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&format!("{pods}/p")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.json("POST", &format!("{pods}/p/exec"), json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn binding_should_mark_the_pod_scheduled_and_copy_its_annotations() {
    let api = api().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s", "annotations": {"own": "kept"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    api.json("POST", pods, pod).await;
    // What the scheduler writes while nothing fits.
    let unschedulable = api
        .call(
            "PATCH",
            &format!("{pods}/s/status"),
            Some("application/strategic-merge-patch+json"),
            br#"{"status":{"conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"0/1 nodes are available"}]}}"#.to_vec(),
        )
        .await;
    assert_eq!(unschedulable.status, StatusCode::OK);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "s", "annotations": {"from-binding": "yes"}}, "target": {"kind": "Node", "name": "node-1"}});
    assert_eq!(
        api.json("POST", &format!("{pods}/s/binding"), binding)
            .await
            .status,
        StatusCode::CREATED
    );
    let bound = api.get(&format!("{pods}/s")).await.json();
    let conditions = bound["status"]["conditions"].as_array().unwrap();
    let scheduled: Vec<&Value> = conditions
        .iter()
        .filter(|c| c["type"] == "PodScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1, "{conditions:?}");
    assert_eq!(scheduled[0]["status"], "True");
    assert!(scheduled[0].get("reason").is_none(), "{:?}", scheduled[0]);
    assert!(scheduled[0]["lastTransitionTime"].is_string());
    assert_eq!(bound["metadata"]["annotations"]["own"], "kept");
    assert_eq!(bound["metadata"]["annotations"]["from-binding"], "yes");
}

#[tokio::test]
async fn writes_naming_another_uid_should_be_refused() {
    let api = api().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "u"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let created = api.json("POST", pods, pod).await.json();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    // A node agent still working for an earlier pod of this name.
    let stale = api
        .call(
            "PATCH",
            &format!("{pods}/u/status"),
            Some("application/strategic-merge-patch+json"),
            br#"{"metadata":{"uid":"an-earlier-pod"},"status":{"phase":"Running"}}"#.to_vec(),
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        stale.json()["message"],
        "Pod \"u\" is invalid: metadata.uid: Invalid value: \"an-earlier-pod\": field is immutable"
    );
    assert_eq!(
        api.get(&format!("{pods}/u")).await.json()["status"]["phase"],
        "Pending"
    );
    // A PUT's uid is a precondition, as upstream's: 409. The pod's own uid, or none, is fine.
    let mut replaced = api.get(&format!("{pods}/u")).await.json();
    replaced["metadata"]["uid"] = json!("another");
    let refused = api
        .json("PUT", &format!("{pods}/u"), replaced.clone())
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(
        refused.json()["message"],
        format!(
            "Operation cannot be fulfilled on pods \"u\": Precondition failed: UID in precondition: another, UID in object meta: {uid}"
        )
    );
    replaced["metadata"]["uid"] = json!(uid);
    replaced["metadata"]["labels"] = json!({"a": "b"});
    assert_eq!(
        api.json("PUT", &format!("{pods}/u"), replaced).await.status,
        StatusCode::OK
    );
    let own = format!(r#"{{"metadata":{{"uid":"{uid}"}},"status":{{"phase":"Running"}}}}"#);
    let patched = api
        .call(
            "PATCH",
            &format!("{pods}/u/status"),
            Some("application/strategic-merge-patch+json"),
            own.into_bytes(),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.json()["status"]["phase"], "Running");
}

#[tokio::test]
async fn service_account_tokens_should_authenticate_until_the_account_is_gone() {
    let api = api().await;
    let accounts = "/api/v1/namespaces/default/serviceaccounts";
    api.json(
        "POST",
        accounts,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}),
    )
    .await;
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["api"]}});
    let issued = api
        .json("POST", &format!("{accounts}/robot/token"), request)
        .await;
    assert_eq!(issued.status, StatusCode::CREATED);
    let token = issued.json()["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let review = |audiences: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": audiences}});
    let reviewed = api
        .json(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            review(json!(["api"])),
        )
        .await
        .json();
    assert_eq!(reviewed["status"]["authenticated"], true);
    assert_eq!(
        reviewed["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    let wrong = api
        .json(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            review(json!(["other"])),
        )
        .await
        .json();
    assert_eq!(wrong["status"]["authenticated"], false);

    // The token is a bearer credential...
    let bearer = |token: &str| {
        let mut request = Request::builder()
            .uri(CMS)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(Caller(None));
        request
    };
    assert_eq!(
        api.router
            .clone()
            .oneshot(bearer(&token))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        api.router
            .clone()
            .oneshot(bearer("garbage"))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // ...until its service account is deleted.
    api.call("DELETE", &format!("{accounts}/robot"), None, vec![])
        .await;
    assert_eq!(
        api.router
            .clone()
            .oneshot(bearer(&token))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn built_in_objects_should_be_validated_pruned_and_defaulted_as_upstream() {
    let api = api().await;
    let pods = "/api/v1/namespaces/default/pods";
    let nameless = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {"containers": [{"image": "busybox", "name1": "x"}]}});
    let rejected = api.json("POST", pods, nameless).await;
    assert_eq!(rejected.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        rejected.json()["details"]["causes"][0]["field"],
        "spec.containers[0].name"
    );
    let unknown = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"}, "spec": {"containers": [{"name": "c", "image": "busybox", "name1": "x"}]}});
    let created = api.json("POST", pods, unknown).await;
    assert!(created.headers.get("warning").is_some());
    let pod = created.json();
    assert!(
        pod["spec"]["containers"][0].get("name1").is_none(),
        "unknown fields are not stored"
    );
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["tolerationSeconds"] == 300)
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "aGVs\nbG8="}});
    let stored = api
        .json("POST", "/api/v1/namespaces/default/secrets", secret)
        .await
        .json();
    assert_eq!(stored["data"]["k"], "aGVsbG8=");
    let trailing = api
        .get("/api/v1/namespaces/default/services?fieldSelector=metadata.name%3Dkubernetes%2C")
        .await
        .json();
    assert_eq!(trailing["items"].as_array().unwrap().len(), 1);
    let version = api.get("/version/").await;
    assert_eq!(version.status, StatusCode::OK);
}

#[tokio::test]
async fn a_bad_bearer_token_should_get_401_even_on_open_paths() {
    let api = api().await;
    let send = |auth: Option<&'static str>| {
        let router = api.router.clone();
        async move {
            let mut builder = Request::builder().uri("/version");
            if let Some(auth) = auth {
                builder = builder.header("authorization", auth);
            }
            router
                .oneshot(builder.body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(send(None).await, StatusCode::OK);
    assert_eq!(send(Some("Bearer abc123")).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn component_statuses_should_be_a_read_only_deprecated_view() {
    let api = api().await;
    const CS: &str = "/api/v1/componentstatuses";
    let reply = api.get(CS).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["warning"],
        "299 - \"v1 ComponentStatus is deprecated in v1.19+\""
    );
    let list = reply.json();
    assert_eq!(list["kind"], "ComponentStatusList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["controller-manager", "etcd-0", "scheduler"]);
    // The store's health is a real read of its revision.
    let revision = api.store.current_revision().await.unwrap();
    let etcd = &list["items"][1]["conditions"][0];
    assert_eq!(
        (&etcd["type"], &etcd["status"]),
        (&json!("Healthy"), &json!("True"))
    );
    assert_eq!(
        etcd["message"],
        format!("ok: memory store at revision {revision}")
    );

    let scheduler = api.get(&format!("{CS}/scheduler")).await.json();
    assert_eq!(scheduler["kind"], "ComponentStatus");
    assert_eq!(scheduler["conditions"][0]["status"], "False");
    let missing = api.get(&format!("{CS}/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json()["message"],
        "componentstatus \"nope\" not found"
    );
    let selected = api
        .get(&format!("{CS}?fieldSelector=metadata.name%3Detcd-0"))
        .await;
    assert_eq!(selected.json()["items"].as_array().unwrap().len(), 1);

    // get and list only.
    let create = api
        .json(
            "POST",
            CS,
            json!({"apiVersion": "v1", "kind": "ComponentStatus", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(create.status, StatusCode::METHOD_NOT_ALLOWED);
    let watch = api.get(&format!("{CS}?watch=true")).await;
    assert_eq!(watch.status, StatusCode::METHOD_NOT_ALLOWED);
    let delete = api
        .call("DELETE", &format!("{CS}/scheduler"), None, Vec::new())
        .await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);

    // kubectl's columns.
    let table = api
        .table(CS, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await;
    let columns = column_names(&table);
    assert_eq!(columns, ["Name", "Status", "Message", "Error"]);
    // No controllers run in this test: nothing renews their lease.
    assert_eq!(
        table["rows"][0]["cells"],
        json!([
            "controller-manager",
            "Unhealthy",
            "",
            "no controller manager is running: the lease kube-system/kube-controller-manager does not exist"
        ])
    );

    // Discovery tells clients what they may do.
    let resources = api.get("/api/v1").await.json();
    let cs = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "componentstatuses")
        .unwrap();
    assert_eq!(
        (&cs["verbs"], &cs["shortNames"], &cs["namespaced"]),
        (&json!(["get", "list"]), &json!(["cs"]), &json!(false))
    );
}

#[tokio::test]
async fn secret_string_data_should_be_merged_into_data_on_every_write() {
    const SECRETS: &str = "/api/v1/namespaces/default/secrets";
    let api = api().await;
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let created = api
        .json(
            "POST",
            SECRETS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"kept": b64("old"), "a": b64("overwritten")}, "stringData": {"a": "x"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let stored = api.get(&format!("{SECRETS}/s")).await.json();
    assert_eq!(stored["data"], json!({"kept": b64("old"), "a": b64("x")}));
    assert!(stored.get("stringData").is_none(), "{stored}");
    // Update, merge patch and server-side apply merge it too.
    let mut replaced = stored.clone();
    replaced["stringData"] = json!({"b": "y"});
    let updated = api.json("PUT", &format!("{SECRETS}/s"), replaced).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.json()["data"]["b"], b64("y"));
    assert!(updated.json().get("stringData").is_none());
    let patched = api
        .call(
            "PATCH",
            &format!("{SECRETS}/s"),
            Some("application/merge-patch+json"),
            br#"{"stringData": {"c": "z"}}"#.to_vec(),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.json()["data"]["c"], b64("z"));
    assert!(patched.json().get("stringData").is_none());
    let applied = api
        .call(
            "PATCH",
            &format!("{SECRETS}/applied?fieldManager=helm"),
            Some("application/apply-patch+yaml"),
            b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\nstringData:\n  password: hunter2\n"
                .to_vec(),
        )
        .await;
    assert_eq!(applied.status, StatusCode::CREATED);
    let applied = api.get(&format!("{SECRETS}/applied")).await.json();
    assert_eq!(applied["data"], json!({"password": b64("hunter2")}));
    assert!(applied.get("stringData").is_none());
    // The Table counts the keys.
    let table = api
        .table(
            &format!("{SECRETS}/s"),
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .await;
    assert_eq!(table["rows"][0]["cells"][2], 4, "{table}");
}

#[tokio::test]
async fn apply_of_an_empty_map_then_of_keys_should_keep_the_map() {
    let api = api().await;
    let apply = |body: &'static str| {
        let api = &api;
        async move {
            let reply = api
                .call(
                    "PATCH",
                    &format!("{CMS}/applied?fieldManager=me"),
                    Some("application/apply-patch+yaml"),
                    body.as_bytes().to_vec(),
                )
                .await;
            assert!(reply.status.is_success(), "{}", reply.json());
            reply.json()
        }
    };
    apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  labels: {}\ndata: {}\n")
        .await;
    let second = apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  labels: {a: b}\ndata: {key1: v}\n",
    )
    .await;
    assert_eq!(second["data"], json!({"key1": "v"}), "{second}");
    assert_eq!(second["metadata"]["labels"], json!({"a": "b"}), "{second}");
    let fields = &second["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(fields["f:data"], json!({".": {}, "f:key1": {}}));
    // Dropping a key from the applied map removes only that key.
    let third = apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  labels: {}\ndata: {}\n",
    )
    .await;
    assert_eq!(third["data"], json!({}), "{third}");
}

/// The first cause of a 422 (its field and message), and that it is a 422 at all.
fn first_cause(reply: &Reply) -> (String, String) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let status = reply.json();
    assert_eq!(status["reason"], "Invalid", "{status}");
    let cause = &status["details"]["causes"][0];
    (
        cause["field"].as_str().unwrap_or_default().to_string(),
        cause["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn bad_metadata_should_be_refused_on_create_update_and_patch() {
    let api = api().await;
    let created = api
        .json("POST", CMS, cm("meta", json!({"-bad": "x"})))
        .await;
    let (field, message) = first_cause(&created);
    assert_eq!(field, "metadata.labels");
    assert_eq!(
        message,
        "Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    assert!(
        created.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap \"meta\" is invalid: metadata.labels: Invalid value: \"-bad\"")
    );
    assert_eq!(
        api.get(&format!("{CMS}/meta")).await.status,
        StatusCode::NOT_FOUND,
        "nothing stored"
    );
    assert_eq!(
        api.json("POST", CMS, cm("meta", json!({"ok": "fine"})))
            .await
            .status,
        StatusCode::CREATED
    );
    // A label value over 63 characters, by PUT.
    let replaced = api
        .json(
            "PUT",
            &format!("{CMS}/meta"),
            cm("meta", json!({"k": "v".repeat(64)})),
        )
        .await;
    assert_eq!(
        first_cause(&replaced),
        (
            "metadata.labels".to_string(),
            format!(
                "Invalid value: \"{}\": must be no more than 63 characters",
                "v".repeat(64)
            )
        )
    );
    // Annotations over 256 KiB, by merge patch; a bad generateName, by create.
    let big = json!({"metadata": {"annotations": {"a": "x".repeat(256 * 1024)}}});
    let patched = api
        .call(
            "PATCH",
            &format!("{CMS}/meta"),
            Some("application/merge-patch+json"),
            big.to_string().into_bytes(),
        )
        .await;
    assert_eq!(
        first_cause(&patched),
        (
            "metadata.annotations".to_string(),
            "Too long: may not be more than 262144 bytes".to_string()
        )
    );
    let generated = api
        .json(
            "POST",
            CMS,
            json!({"metadata": {"generateName": "Web-"}, "data": {}}),
        )
        .await;
    // (Upstream lists metadata.generateName first, then the generated metadata.name.)
    assert!(first_cause(&generated).1.contains("\"Web-"));
    let stored = api.get(&format!("{CMS}/meta")).await.json();
    assert_eq!(stored["metadata"]["labels"], json!({"ok": "fine"}));
}

#[tokio::test]
async fn config_map_and_secret_data_should_have_valid_keys_and_at_most_1_mib() {
    let api = api().await;
    let key = api
        .json(
            "POST",
            CMS,
            json!({"metadata": {"name": "k"}, "data": {"a/b": "x"}}),
        )
        .await;
    assert_eq!(first_cause(&key).0, "data[a/b]");
    let big = api
        .json(
            "POST",
            CMS,
            json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(1024 * 1024 + 1)}}),
        )
        .await;
    assert_eq!(
        first_cause(&big),
        (
            "[]".to_string(),
            "Too long: may not be more than 1048576 bytes".to_string()
        )
    );
    let secrets = "/api/v1/namespaces/default/secrets";
    let secret = api
        .json(
            "POST",
            secrets,
            json!({"metadata": {"name": "s"}, "stringData": {"k": "x".repeat(1024 * 1024 + 1)}}),
        )
        .await;
    assert_eq!(
        first_cause(&secret),
        (
            "data".to_string(),
            "Too long: may not be more than 1048576 bytes".to_string()
        )
    );
    let exact = api
        .json(
            "POST",
            CMS,
            json!({"metadata": {"name": "exact"}, "data": {"k": "x".repeat(1024 * 1024)}}),
        )
        .await;
    assert_eq!(exact.status, StatusCode::CREATED, "1 MiB itself is allowed");
}

#[tokio::test]
async fn negative_replicas_should_be_refused_on_every_write_path() {
    let api = api().await;
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = |replicas: i64| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    };
    let (field, message) = first_cause(&api.json("POST", deployments, deployment(-1)).await);
    assert_eq!(
        (field.as_str(), message.as_str()),
        (
            "spec.replicas",
            "Invalid value: -1: must be greater than or equal to 0"
        )
    );
    assert_eq!(
        api.json("POST", deployments, deployment(1)).await.status,
        StatusCode::CREATED
    );
    let patched = api
        .call(
            "PATCH",
            &format!("{deployments}/d"),
            Some("application/merge-patch+json"),
            br#"{"spec":{"replicas":-3}}"#.to_vec(),
        )
        .await;
    assert_eq!(first_cause(&patched).0, "spec.replicas");
    let mismatch = api
        .call(
            "PATCH",
            &format!("{deployments}/d"),
            Some("application/merge-patch+json"),
            br#"{"spec":{"template":{"metadata":{"labels":{"a":"c"}}}}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        first_cause(&mismatch),
        (
            "spec.template.metadata.labels".to_string(),
            "Invalid value: {\"a\":\"c\"}: `selector` does not match template `labels`".to_string()
        )
    );
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": -1, "selector": {"a": "b"},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert_eq!(
        first_cause(&api.json("POST", rcs, rc).await).0,
        "spec.replicas"
    );
}

#[tokio::test]
async fn bad_query_parameters_should_be_refused_before_anything_happens() {
    let api = api().await;
    api.json("POST", CMS, cm("kept", json!({}))).await;
    let delete = api
        .call(
            "DELETE",
            &format!("{CMS}/kept?gracePeriodSeconds=abc"),
            None,
            vec![],
        )
        .await;
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        delete.json()["message"],
        "strconv.ParseInt: parsing \"abc\": invalid syntax"
    );
    assert_eq!(
        api.get(&format!("{CMS}/kept")).await.status,
        StatusCode::OK,
        "not deleted"
    );
    let unmatched = api.get(&format!("{CMS}?resourceVersionMatch=Exact")).await;
    assert_eq!(unmatched.status, StatusCode::UNPROCESSABLE_ENTITY);
    let status = unmatched.json();
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
    );
    assert_eq!(status["details"]["group"], "meta.k8s.io");
    let bogus = api
        .get(&format!(
            "{CMS}?resourceVersion=1&resourceVersionMatch=Bogus"
        ))
        .await;
    assert_eq!(
        bogus.json()["details"]["causes"][0]["message"],
        "Unsupported value: \"Bogus\": supported values: \"Exact\", \"NotOlderThan\", \"\""
    );
    let manager = api
        .json(
            "POST",
            &format!("{CMS}?fieldManager={}", "m".repeat(129)),
            cm("managed", json!({})),
        )
        .await;
    assert_eq!(
        first_cause(&manager),
        (
            "fieldManager".to_string(),
            "Too long: may not be more than 128 bytes".to_string()
        )
    );
    let control = api
        .json(
            "POST",
            &format!("{CMS}?fieldManager=a%01b"),
            cm("managed", json!({})),
        )
        .await;
    assert_eq!(
        first_cause(&control).1,
        "Invalid value: \"a\\x01b\": invalid character U+0001 (at position 1)"
    );
    assert_eq!(
        api.get(&format!("{CMS}/managed")).await.status,
        StatusCode::NOT_FOUND
    );
    let selector = api.get(&format!("{CMS}?labelSelector=-bad%3Dx")).await;
    assert_eq!(selector.status, StatusCode::BAD_REQUEST);
    assert!(
        selector.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("unable to parse requirement: <nil>: Invalid value: \"-bad\": name part")
    );
}

#[tokio::test]
async fn json_patch_of_more_than_10000_operations_should_be_a_413() {
    let api = api().await;
    api.json("POST", CMS, cm("ops", json!({}))).await;
    let ops: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/kind", "value": "ConfigMap"}))
        .collect();
    let reply = api
        .call(
            "PATCH",
            &format!("{CMS}/ops"),
            Some("application/json-patch+json"),
            Value::Array(ops).to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let status = reply.json();
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    assert_eq!(
        status["message"],
        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
    );
}

#[tokio::test]
async fn strategic_merge_patch_on_a_custom_resource_should_be_a_415() {
    let api = api().await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let created = api
        .json(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1}});
    assert_eq!(
        api.json("POST", widgets, widget).await.status,
        StatusCode::CREATED
    );
    let smp = api
        .call(
            "PATCH",
            &format!("{widgets}/w"),
            Some("application/strategic-merge-patch+json"),
            br#"{"spec":{"size":2}}"#.to_vec(),
        )
        .await;
    assert_eq!(smp.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status = smp.json();
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert_eq!(
        status["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    let merge = api
        .call(
            "PATCH",
            &format!("{widgets}/w"),
            Some("application/merge-patch+json"),
            br#"{"spec":{"size":2}}"#.to_vec(),
        )
        .await;
    assert_eq!(merge.status, StatusCode::OK);
    let bad_label = api
        .call(
            "PATCH",
            &format!("{widgets}/w"),
            Some("application/merge-patch+json"),
            br#"{"metadata":{"labels":{"a b":"c"}}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        first_cause(&bad_label).0,
        "metadata.labels",
        "custom resources follow the metadata rules too"
    );
}

#[tokio::test]
async fn put_without_a_name_should_be_a_400_as_upstream() {
    let api = api().await;
    api.json("POST", CMS, cm("named", json!({}))).await;
    let reply = api
        .json(
            "PUT",
            &format!("{CMS}/named"),
            json!({"metadata": {}, "data": {}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["message"],
        "the name of the object (named based on URL) was undeterminable: name must be provided"
    );
}

#[tokio::test]
async fn an_immutable_config_map_should_refuse_new_data() {
    let api = api().await;
    let mut object = cm("frozen", json!({}));
    object["immutable"] = json!(true);
    api.json("POST", CMS, object).await;
    let reply = api
        .call(
            "PATCH",
            &format!("{CMS}/frozen"),
            Some("application/merge-patch+json"),
            br#"{"data":{"k":"changed"}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        first_cause(&reply),
        (
            "data".to_string(),
            "Forbidden: field is immutable when `immutable` is set".to_string()
        )
    );
}

#[tokio::test]
async fn creates_should_be_refused_in_missing_and_terminating_namespaces() {
    let api = api().await;
    let missing = api
        .json(
            "POST",
            "/api/v1/namespaces/nowhere/configmaps",
            cm("a", json!({})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.json());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}});
    assert_eq!(
        api.json("POST", "/api/v1/namespaces", ns).await.status,
        StatusCode::CREATED
    );
    let inside = api
        .json(
            "POST",
            "/api/v1/namespaces/doomed/configmaps",
            cm("a", json!({})),
        )
        .await;
    assert_eq!(inside.status, StatusCode::CREATED, "{}", inside.json());
    // No namespace controller runs here: the namespace stays Terminating, and a create right
    // after the deletion is refused.
    let deleted = api
        .call("DELETE", "/api/v1/namespaces/doomed", None, Vec::new())
        .await;
    assert!(deleted.status.is_success());
    let refused = api
        .json(
            "POST",
            "/api/v1/namespaces/doomed/configmaps",
            cm("late", json!({})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = refused.json();
    assert_eq!(
        refused["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated",
        "{refused}"
    );
    assert_eq!(refused["details"]["kind"], "configmaps");
}

#[tokio::test]
async fn health_checks_should_answer_ok_while_the_store_reads() {
    let api = api().await;
    for path in ["/readyz", "/healthz", "/livez"] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.body.as_slice(), b"ok", "{path}");
    }
}

#[tokio::test]
async fn http_layer_errors_should_carry_a_status_body() {
    let api = api().await;
    for (method, uri) in [
        ("DELETE", "/api/v1"),
        ("POST", "/apis"),
        ("PUT", "/openapi/v2"),
        ("POST", "/version"),
        ("PUT", "/healthz"),
    ] {
        let reply = api.call(method, uri, None, Vec::new()).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        let status = reply.json();
        assert_eq!(
            (&status["kind"], &status["reason"], &status["code"]),
            (&json!("Status"), &json!("MethodNotAllowed"), &json!(405)),
            "{method} {uri}: {status}"
        );
    }
    let long = api.get(&format!("{CMS}/{}", "a".repeat(40 * 1024))).await;
    assert_eq!(long.status, StatusCode::URI_TOO_LONG);
    assert_eq!(long.json()["code"], 414);
    // A body that breaks off is a bad request, not a large one.
    let broken = futures::stream::iter([
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"apiVersion\":")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let mut request = Request::builder()
        .method("POST")
        .uri(CMS)
        .header("content-type", "application/json")
        .body(Body::from_stream(broken))
        .unwrap();
    request.extensions_mut().insert(admin());
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// The status, `kind`, `reason` and `code` of an error answer: every 4xx carries a `Status`.
fn status_of(reply: &Reply) -> (StatusCode, Value, Value, Value) {
    let status = reply.json();
    assert_eq!(status["kind"], "Status", "{status}");
    (
        reply.status,
        status["reason"].clone(),
        status["code"].clone(),
        status["message"].clone(),
    )
}

#[tokio::test]
async fn http_layer_4xx_should_all_carry_a_status_with_their_reason() {
    let api = api().await;
    // Unknown paths, inside and outside the API.
    for uri in [
        "/nope",
        "/",
        "/api/v1/nope",
        "/apis/nope.example/v1/things",
        "/openapi/v9",
    ] {
        let (code, reason, number, _) = status_of(&api.get(uri).await);
        assert_eq!(
            (code, reason, number),
            (StatusCode::NOT_FOUND, json!("NotFound"), json!(404)),
            "{uri}"
        );
    }
    // A write method on a discovery document is not a read of it.
    for (method, uri) in [
        ("DELETE", "/api/v1"),
        ("PUT", "/apis/apps/v1"),
        ("PATCH", "/api"),
    ] {
        let reply = api.call(method, uri, None, Vec::new()).await;
        let (code, reason, _, _) = status_of(&reply);
        assert_eq!(
            (code, reason),
            (StatusCode::METHOD_NOT_ALLOWED, json!("MethodNotAllowed")),
            "{method} {uri}"
        );
    }
    let long = api.get(&format!("{CMS}/{}", "a".repeat(40 * 1024))).await;
    let (code, reason, _, _) = status_of(&long);
    assert_eq!(
        (code, reason),
        (StatusCode::URI_TOO_LONG, json!("RequestURITooLong"))
    );
    // Over the limit is a 413; a body that breaks off is a 400, both with a Status.
    let huge = api
        .call("POST", CMS, None, vec![b' '; 3 * 1024 * 1024 + 1])
        .await;
    let (code, reason, _, _) = status_of(&huge);
    assert_eq!(
        (code, reason),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!("RequestEntityTooLarge")
        )
    );
    let broken = futures::stream::iter([
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"apiVersion\":")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let mut request = Request::builder()
        .method("PUT")
        .uri(format!("{CMS}/broken"))
        .header("content-type", "application/json")
        .body(Body::from_stream(broken))
        .unwrap();
    request.extensions_mut().insert(admin());
    let response = api.router.clone().oneshot(request).await.unwrap();
    let code = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let status: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (code, &status["kind"], &status["reason"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("Status"),
            &json!("BadRequest")
        )
    );
}

/// "Billion laughs" in a ConfigMap: nine levels of nine aliases, 9^9 strings from 421 bytes.
fn yaml_alias_bomb(name: &str) -> Vec<u8> {
    let mut yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\nlol:\n");
    yaml.push_str(
        "  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (previous, level) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        let aliases = vec![format!("*{previous}"); 9].join(",");
        yaml.push_str(&format!("  {level}: &{level} [{aliases}]\n"));
    }
    yaml.into_bytes()
}

#[tokio::test]
async fn yaml_alias_bomb_should_be_refused_with_a_400_on_every_yaml_write() {
    let api = api().await;
    api.json("POST", CMS, cm("target", json!({}))).await;
    for (method, uri, content_type) in [
        ("POST", CMS.to_string(), "application/yaml"),
        ("PUT", format!("{CMS}/target"), "application/yaml"),
        (
            "PATCH",
            format!("{CMS}/target?fieldManager=bomb"),
            "application/apply-patch+yaml",
        ),
    ] {
        let started = std::time::Instant::now();
        let reply = api
            .call(method, &uri, Some(content_type), yaml_alias_bomb("target"))
            .await;
        let (code, reason, _, message) = status_of(&reply);
        assert_eq!(
            (code, reason),
            (StatusCode::BAD_REQUEST, json!("BadRequest")),
            "{method} {content_type}"
        );
        assert!(
            message
                .as_str()
                .unwrap()
                .contains("document contains excessive aliasing"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{method}");
    }
    // Aliases within the limit still work.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchored\n  labels: &l {app: web}\n  annotations: *l\ndata: *l\n";
    let created = api
        .call(
            "POST",
            CMS,
            Some("application/yaml"),
            yaml.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["data"], json!({"app": "web"}));
}

#[tokio::test]
async fn pod_creates_should_mount_their_accounts_token_unless_the_account_opts_out() {
    let api = api().await;
    let accounts = "/api/v1/namespaces/default/serviceaccounts";
    for (name, automount) in [("quiet", Some(false)), ("robot", None)] {
        let mut account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name}, "secrets": [{"name": "s"}]});
        if let Some(automount) = automount {
            account["automountServiceAccountToken"] = json!(automount);
        }
        let created = api
            .call(
                "POST",
                accounts,
                Some("application/json"),
                serde_json::to_vec(&account).unwrap(),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let create = |name: &str, account: &str| {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"serviceAccountName": account,
                "containers": [{"name": "c", "image": "busybox"}]}});
        api.call(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some("application/json"),
            serde_json::to_vec(&pod).unwrap(),
        )
    };
    let mounts = |pod: &Value| {
        pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let quiet = create("quiet", "quiet").await;
    assert_eq!(quiet.status, StatusCode::CREATED);
    assert_eq!(mounts(&quiet.json()), 0, "{}", quiet.json());
    let robot = create("robot", "robot").await;
    assert_eq!(robot.status, StatusCode::CREATED);
    assert_eq!(mounts(&robot.json()), 1, "{}", robot.json());
    assert!(
        robot.json()["spec"]["volumes"][0]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    );
    let missing = create("missing", "nobody").await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pod_creates_should_resolve_their_priority_class_as_upstreams_admission_does() {
    let api = api().await;
    let pod = |name: &str, extra: Value| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
        )
        .unwrap()
    };
    let uri = "/api/v1/namespaces/default/pods";
    let plain = api
        .call(
            "POST",
            uri,
            Some("application/json"),
            pod("plain", json!({})),
        )
        .await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert_eq!(plain.json()["spec"]["priority"], 0);
    assert_eq!(
        plain.json()["spec"]["preemptionPolicy"],
        "PreemptLowerPriority"
    );
    let critical = api
        .call(
            "POST",
            uri,
            Some("application/json"),
            pod(
                "critical",
                json!({"priorityClassName": "system-node-critical"}),
            ),
        )
        .await;
    assert_eq!(critical.status, StatusCode::CREATED);
    assert_eq!(critical.json()["spec"]["priority"], 2_000_001_000);
    let unknown = api
        .call(
            "POST",
            uri,
            Some("application/json"),
            pod("unknown", json!({"priorityClassName": "nope"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    assert_eq!(
        unknown.json()["message"],
        "pods \"unknown\" is forbidden: no PriorityClass with name nope was found"
    );
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000, "globalDefault": true, "preemptionPolicy": "Never"});
    let created = api
        .call(
            "POST",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            Some("application/json"),
            serde_json::to_vec(&class).unwrap(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    // The cache may lag the class's create by an event or two.
    let mut defaulted = Value::Null;
    for i in 0..50 {
        let reply = api
            .call(
                "POST",
                uri,
                Some("application/json"),
                pod(&format!("d{i}"), json!({})),
            )
            .await;
        defaulted = reply.json();
        if defaulted["spec"]["priority"] == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(defaulted["spec"]["priorityClassName"], "high");
    assert_eq!(defaulted["spec"]["preemptionPolicy"], "Never");
    let mismatch = api
        .call(
            "POST",
            uri,
            Some("application/json"),
            pod(
                "mismatch",
                json!({"priorityClassName": "high", "priority": 5}),
            ),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::FORBIDDEN);
}

/// As upstream strips the fields a write resets from its ownership: a pod's creator does not
/// own the `status` its defaults set, and a status write does not touch the creator's entry.
#[tokio::test]
async fn a_pods_creator_should_own_no_status_fields() {
    let api = api().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let created = api
        .json("POST", &format!("{pods}?fieldManager=creator"), pod)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let created = created.json();
    assert_eq!(created["status"]["phase"], "Pending", "{created}");
    let entries = created["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{created}");
    assert!(
        entries[0]["fieldsV1"].get("f:status").is_none(),
        "{created}"
    );
    assert!(entries[0]["fieldsV1"].get("f:spec").is_some(), "{created}");
    let patched = api
        .call(
            "PATCH",
            &format!("{pods}/p/status?fieldManager=node"),
            Some("application/merge-patch+json"),
            json!({"status": {"phase": "Running"}})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.json());
    let patched = patched.json();
    let entries = patched["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{patched}");
    assert_eq!(
        entries[0], created["metadata"]["managedFields"][0],
        "{patched}"
    );
    assert_eq!(entries[1]["manager"], "node", "{patched}");
    assert_eq!(entries[1]["subresource"], "status", "{patched}");
    assert_eq!(
        entries[1]["fieldsV1"]["f:status"]["f:phase"],
        json!({}),
        "{patched}"
    );
}
