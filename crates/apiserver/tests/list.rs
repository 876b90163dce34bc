//! Lists: served from the watch cache when any recent state answers them, from the store at an
//! exact revision otherwise, with the same bytes either way; streamed in chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_apiserver::auth::{Caller, User};
use skiff_apiserver::clock::FixedClock;
use skiff_store::Store;
use skiff_store::memory::MemoryStore;
use tower::ServiceExt;

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const METADATA: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

struct Api {
    router: Router,
    store: Arc<MemoryStore>,
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    frames: usize,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn names(&self) -> Vec<String> {
        self.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }
}

async fn api() -> Api {
    // A fixed clock: a Table's ages must not move between the two reads a test compares.
    let now = jiff::Timestamp::now();
    let cluster = skiff_cluster::InProcess::with(1024, Arc::new(FixedClock(now)))
        .await
        .unwrap();
    Api {
        router: cluster.router,
        store: cluster.store,
    }
}

impl Api {
    async fn call(&self, method: &str, uri: &str, accept: &str, body: Option<Value>) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("accept", accept);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let mut request = builder.body(body).unwrap();
        request.extensions_mut().insert(Caller(Some(User {
            name: "test-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        })));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                frames += 1;
                bytes.extend_from_slice(&data);
            }
        }
        Reply {
            status,
            body: bytes,
            frames,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri, "application/json", None).await
    }

    async fn create(&self, uri: &str, object: Value) -> Value {
        let reply = self
            .call("POST", uri, "application/json", Some(object))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
    })
}

#[tokio::test]
async fn lists_from_the_cache_should_equal_lists_from_the_store_byte_for_byte() {
    let api = api().await;
    for i in 0..12 {
        let tier = if i % 3 == 0 { "web" } else { "db" };
        api.create(CMS, cm(&format!("c{i:02}"), json!({"tier": tier})))
            .await;
        api.create(
            PODS,
            pod(
                &format!("p{i:02}"),
                &format!("n{}", i % 2),
                json!({"tier": tier}),
            ),
        )
        .await;
    }
    api.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
    )
    .await;
    api.create(
        "/api/v1/namespaces/other/configmaps",
        cm("elsewhere", json!({})),
    )
    .await;
    let revision = api.get(CMS).await.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let queries = [
        "",
        "labelSelector=tier%3Dweb",
        "labelSelector=tier%21%3Dweb,tier",
        "fieldSelector=metadata.name%3Dc03",
        "fieldSelector=spec.nodeName%3Dn1",
        "limit=5",
        "limit=4&labelSelector=tier%3Ddb",
        "limit=4&labelSelector=tier%3Dweb",
        "limit=12",
        "limit=100",
    ];
    for base in [CMS, PODS, "/api/v1/configmaps", "/api/v1/pods"] {
        for query in queries {
            if query.contains("spec.nodeName") && base.ends_with("configmaps") {
                continue;
            }
            for accept in ["application/json", TABLE, METADATA, "application/yaml"] {
                let cached = api
                    .call("GET", &format!("{base}?{query}"), accept, None)
                    .await;
                let stored = api
                    .call(
                        "GET",
                        &format!(
                            "{base}?{query}&resourceVersion={revision}&resourceVersionMatch=Exact"
                        ),
                        accept,
                        None,
                    )
                    .await;
                assert_eq!(cached.status, StatusCode::OK, "{base}?{query} {accept}");
                assert_eq!(
                    String::from_utf8_lossy(&cached.body),
                    String::from_utf8_lossy(&stored.body),
                    "{base}?{query} as {accept}"
                );
            }
        }
    }
}

#[tokio::test]
async fn watches_from_the_cache_should_send_the_lines_a_store_watch_sends() {
    let api = api().await;
    let start =
        api.create(CMS, cm("w", json!({"tier": "web"}))).await["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
    let mut changed = api.get(&format!("{CMS}/w")).await.json();
    changed["data"]["k"] = json!("2");
    api.call(
        "PUT",
        &format!("{CMS}/w"),
        "application/json",
        Some(changed),
    )
    .await;
    api.create(CMS, cm("x", json!({}))).await;
    api.call("DELETE", &format!("{CMS}/w"), "application/json", None)
        .await;
    let formats = [
        "application/json",
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    ];
    let watch = |accept: &'static str| {
        let uri = format!("{CMS}?watch=1&resourceVersion={start}&timeoutSeconds=1");
        let api = &api;
        async move { api.call("GET", &uri, accept, None).await }
    };
    let mut cached = Vec::new();
    for accept in formats {
        let reply = watch(accept).await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        cached.push(String::from_utf8(reply.body).unwrap());
    }
    let types: Vec<Value> = cached[0]
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].clone())
        .collect();
    assert_eq!(types, ["MODIFIED", "ADDED", "DELETED"], "{}", cached[0]);
    // Push the changes out of the cache's ring (1,024 events): the same watch now reads the store.
    api.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
    )
    .await;
    for i in 0..1100 {
        api.create(
            "/api/v1/namespaces/other/configmaps",
            cm(&format!("o{i}"), json!({})),
        )
        .await;
    }
    // A consistent list waits for the cache to catch up with the store, so by now the ring
    // has dropped the watched changes.
    assert_eq!(api.get(CMS).await.status, StatusCode::OK);
    for (accept, cached) in formats.into_iter().zip(cached) {
        let stored = String::from_utf8(watch(accept).await.body).unwrap();
        assert_eq!(cached, stored, "{accept}");
    }
}

#[tokio::test]
async fn lists_should_keep_upstreams_shape_for_each_format() {
    let api = api().await;
    api.create(PODS, pod("web-0", "n1", json!({"app": "web"})))
        .await;
    let list = api.get(PODS).await.json();
    assert_eq!(
        (list["kind"].clone(), list["apiVersion"].clone()),
        (json!("PodList"), json!("v1"))
    );
    let keys: Vec<&String> = list.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["kind", "apiVersion", "metadata", "items"]);
    let item = &list["items"][0];
    assert!(item.get("kind").is_none() && item.get("apiVersion").is_none());
    let fields: Vec<&String> = item.as_object().unwrap().keys().collect();
    assert_eq!(fields.first().map(|f| f.as_str()), Some("metadata"));
    assert_eq!(fields.last().map(|f| f.as_str()), Some("status"));
    assert_eq!(
        item["metadata"]["resourceVersion"],
        api.get(&format!("{PODS}/web-0")).await.json()["metadata"]["resourceVersion"]
    );

    let table = api.call("GET", PODS, TABLE, None).await.json();
    let keys: Vec<&String> = table.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "kind",
            "apiVersion",
            "metadata",
            "columnDefinitions",
            "rows"
        ]
    );
    let row = &table["rows"][0];
    assert_eq!(row["cells"][0], "web-0");
    assert_eq!(row["cells"][1], "0/1");
    assert_eq!(row["cells"][2], "Pending");
    assert_eq!(row["cells"][6], "n1");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"], item["metadata"]);

    let partial = api.call("GET", PODS, METADATA, None).await.json();
    assert_eq!(partial["kind"], "PartialObjectMetadataList");
    assert_eq!(partial["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(partial["items"][0]["metadata"], item["metadata"]);
    assert!(partial["items"][0].get("spec").is_none());

    let empty = api.get("/api/v1/namespaces/none/pods").await.json();
    assert_eq!(empty["items"], json!([]));
    let empty_table = api
        .call("GET", "/api/v1/namespaces/none/pods", TABLE, None)
        .await
        .json();
    assert_eq!(empty_table["rows"], json!([]));
}

#[tokio::test]
async fn a_consistent_list_should_show_every_write_acknowledged_before_it() {
    let api = api().await;
    for i in 0..40 {
        let created = api.create(CMS, cm(&format!("c{i}"), json!({}))).await;
        let list = api.get(CMS).await;
        assert_eq!(list.names().len(), i + 1);
        let rv: i64 = list.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let written: i64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv >= written);
    }
}

#[tokio::test]
async fn a_limit_with_a_resource_version_should_list_exactly_that_revision() {
    let api = api().await;
    let first = api.create(CMS, cm("a", json!({}))).await;
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap();
    api.create(CMS, cm("b", json!({}))).await;
    // Upstream's legacy rule: a limit with a resourceVersion other than "0" is exact.
    let exact = api
        .get(&format!("{CMS}?limit=10&resourceVersion={rv}"))
        .await;
    assert_eq!(exact.names(), ["a"]);
    assert_eq!(exact.json()["metadata"]["resourceVersion"], rv);
    // Without a limit it is a minimum.
    let newer = api.get(&format!("{CMS}?resourceVersion={rv}")).await;
    assert_eq!(newer.names(), ["a", "b"]);
    let not_older = api
        .get(&format!(
            "{CMS}?limit=10&resourceVersion={rv}&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert_eq!(not_older.names(), ["a", "b"]);
    let any = api.get(&format!("{CMS}?limit=10&resourceVersion=0")).await;
    assert_eq!(any.names(), ["a", "b"]);
}

#[tokio::test]
async fn pages_of_a_cached_list_should_all_show_its_revision() {
    let api = api().await;
    for i in 0..7 {
        api.create(CMS, cm(&format!("c{i}"), json!({"n": i.to_string()})))
            .await;
    }
    let first = api.get(&format!("{CMS}?limit=3")).await;
    let revision = first.json()["metadata"]["resourceVersion"].clone();
    let mut names = first.names();
    let mut token = first.json()["metadata"]["continue"]
        .as_str()
        .map(str::to_string);
    api.create(CMS, cm("c10", json!({}))).await;
    api.call("DELETE", &format!("{CMS}/c5"), "application/json", None)
        .await;
    while let Some(t) = token {
        let page = api.get(&format!("{CMS}?limit=3&continue={t}")).await;
        assert_eq!(page.json()["metadata"]["resourceVersion"], revision);
        names.extend(page.names());
        token = page.json()["metadata"]["continue"]
            .as_str()
            .map(str::to_string);
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    // A page that ends on the last object has no continue token.
    let exact = api.get(&format!("{CMS}?limit=7&labelSelector=n")).await;
    assert_eq!(exact.names().len(), 6, "c5 is gone");
    assert!(exact.json()["metadata"].get("continue").is_none());
}

#[tokio::test]
async fn a_continue_token_older_than_the_compacted_history_should_answer_410() {
    let api = api().await;
    for i in 0..4 {
        api.create(CMS, cm(&format!("c{i}"), json!({}))).await;
    }
    let first = api.get(&format!("{CMS}?limit=2")).await.json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    api.create(CMS, cm("later", json!({}))).await;
    let now = api.store.current_revision().await.unwrap();
    api.store.compact(now).await.unwrap();
    let expired = api.get(&format!("{CMS}?limit=2&continue={token}")).await;
    assert_eq!(expired.status, StatusCode::GONE);
    assert_eq!(expired.json()["reason"], "Expired");
    assert!(
        expired.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The provided continue parameter is too old")
    );
    // The cache still serves the current state.
    assert_eq!(api.get(CMS).await.names().len(), 5);
}

#[tokio::test]
async fn a_resource_version_in_the_future_should_answer_504_after_waiting() {
    let api = api().await;
    api.create(CMS, cm("a", json!({}))).await;
    let start = Instant::now();
    let reply = api.get(&format!("{CMS}?resourceVersion=999999")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Too large resource version: 999999, current: ")
    );
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn a_large_list_should_be_streamed_in_chunks() {
    let api = api().await;
    let payload = "x".repeat(4000);
    for i in 0..100 {
        let mut object = cm(&format!("big-{i:03}"), json!({}));
        object["data"] = json!({"payload": payload});
        api.create(CMS, object).await;
    }
    for accept in ["application/json", TABLE, METADATA] {
        let reply = api.call("GET", CMS, accept, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        let list = reply.json();
        let items = list.get("items").or_else(|| list.get("rows")).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 100, "{accept}");
        if accept == "application/json" {
            assert!(reply.frames > 3, "{} frames", reply.frames);
        }
    }
}

#[tokio::test]
async fn an_undecodable_stored_object_should_fail_the_list_from_cache_and_store_alike() {
    let api = api().await;
    api.create(CMS, cm("good", json!({}))).await;
    api.store
        .create(
            "/registry/core/configmaps/default/bad",
            Bytes::from_static(b"{not json"),
        )
        .await
        .unwrap();
    let cached = api.get(CMS).await;
    let revision = api.store.current_revision().await.unwrap();
    let stored = api
        .get(&format!(
            "{CMS}?resourceVersion={revision}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(cached.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(cached.body, stored.body);
    // Other namespaces are unaffected.
    assert_eq!(
        api.get("/api/v1/namespaces/other/configmaps").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn custom_resource_tables_should_print_their_columns_from_the_cache() {
    let api = api().await;
    api.create(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Kind", "type": "string", "jsonPath": ".kind"},
                        {"name": "Manager", "type": "string", "jsonPath": ".metadata.managedFields[0].manager"},
                    ],
                }],
            },
        }),
    )
    .await;
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    api.create(
        widgets,
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1"}, "spec": {"size": 3}}),
    )
    .await;
    let cached = api.call("GET", widgets, TABLE, None).await;
    let table = cached.json();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Size", "Kind", "Manager"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "w1");
    assert_eq!(cells[1], 3);
    assert_eq!(cells[2], "Widget");
    assert!(cells[3].is_string(), "managedFields are read: {cells}");
    let revision = table["metadata"]["resourceVersion"].as_str().unwrap();
    let stored = api
        .call(
            "GET",
            &format!("{widgets}?resourceVersion={revision}&resourceVersionMatch=Exact"),
            TABLE,
            None,
        )
        .await;
    assert_eq!(cached.body, stored.body);
}
