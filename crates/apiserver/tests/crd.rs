//! CustomResourceDefinitions in one process: a CRD is served when its create returns, its
//! objects are defaulted, pruned and validated by the schema, and deleting it removes them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use skiff_apiserver::auth::{Caller, User};
use skiff_apiserver::clock::SystemClock;
use tower::ServiceExt;

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    request.extensions_mut().insert(Caller(Some(User {
        name: "test-admin".into(),
        groups: vec!["system:masters".into()],
    })));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "smtpcredentials.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "smtpcredentials", "kind": "SMTPCredentials", "shortNames": ["smtp"], "categories": ["all"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["host"], "properties": {
                        "host": {"type": "string"},
                        "port": {"type": "integer", "default": 587, "maximum": 65535},
                    }},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                }}},
            }],
        },
    })
}

const OBJECTS: &str = "/apis/example.com/v1/namespaces/default/smtpcredentials";

#[tokio::test]
async fn crd_should_be_served_at_once_and_its_schema_enforced() {
    let router = skiff_cluster::InProcess::with(1024, Arc::new(SystemClock))
        .await
        .unwrap()
        .router;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (status, created) = call(&router, "POST", crds, Some(crd())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let conditions = created["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );
    assert_eq!(
        created["status"]["acceptedNames"]["singular"],
        "smtpcredentials"
    );
    assert_eq!(created["status"]["storedVersions"], json!(["v1"]));

    // Discovery lists it with its names.
    let (_, resources) = call(&router, "GET", "/apis/example.com/v1", None).await;
    let resource = &resources["resources"][0];
    assert_eq!(resource["kind"], "SMTPCredentials");
    assert_eq!(resource["shortNames"], json!(["smtp"]));

    // Defaults fill, unknown fields go, violations are listed per field.
    let object = json!({"apiVersion": "example.com/v1", "kind": "SMTPCredentials",
        "metadata": {"name": "mail"}, "spec": {"host": "smtp.example", "bogus": true}});
    let (status, stored) = call(&router, "POST", OBJECTS, Some(object)).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["spec"], json!({"host": "smtp.example", "port": 587}));
    let bad = json!({"apiVersion": "example.com/v1", "kind": "SMTPCredentials",
        "metadata": {"name": "bad"}, "spec": {"port": 70000}});
    let (status, error) = call(&router, "POST", OBJECTS, Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let fields: Vec<&str> = error["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["spec.port", "spec.host"]);

    // The status subresource writes status only.
    let mut with_status = stored.clone();
    with_status["status"] = json!({"ready": true});
    with_status["spec"]["host"] = json!("changed");
    let (status, after) = call(
        &router,
        "PUT",
        &format!("{OBJECTS}/mail/status"),
        Some(with_status),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(
        (
            after["status"]["ready"].clone(),
            after["spec"]["host"].clone()
        ),
        (json!(true), json!("smtp.example"))
    );

    // Deleting the CRD deletes its objects and stops serving it.
    let (status, _) = call(
        &router,
        "DELETE",
        &format!("{crds}/smtpcredentials.example.com"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&router, "GET", OBJECTS, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&router, "POST", crds, Some(crd())).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = call(&router, "GET", OBJECTS, None).await;
    assert_eq!(list["items"], json!([]), "the old objects are gone");
}

#[tokio::test]
async fn crd_names_should_be_checked() {
    let router = skiff_cluster::InProcess::with(1024, Arc::new(SystemClock))
        .await
        .unwrap()
        .router;
    let mut wrong = crd();
    wrong["metadata"]["name"] = json!("wrong.example.com");
    let (status, error) = call(
        &router,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(wrong),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["details"]["causes"][0]["field"], "metadata.name");
}

fn scalable_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "pools.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "pools", "kind": "Pool"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.size",
                    "statusReplicasPath": ".status.ready",
                    "labelSelectorPath": ".status.selector"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {
                        "type": "object",
                        "x-kubernetes-validations": [
                            {"rule": "self.size <= self.maxSize", "message": "size must not exceed maxSize"},
                            {"rule": "self.tier == oldSelf.tier", "message": "tier is immutable"}],
                        "properties": {
                            "size": {"type": "integer"},
                            "maxSize": {"type": "integer"},
                            "tier": {"type": "string"}}},
                    "status": {"type": "object", "properties": {
                        "ready": {"type": "integer"}, "selector": {"type": "string"}}},
                }}},
            }],
        },
    })
}

const POOLS: &str = "/apis/example.com/v1/namespaces/default/pools";

#[tokio::test]
async fn custom_resources_should_enforce_cel_rules_and_serve_scale() {
    let router = skiff_cluster::InProcess::with(1024, Arc::new(SystemClock))
        .await
        .unwrap()
        .router;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (status, body) = call(&router, "POST", crds, Some(scalable_crd())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let pool = |size: i64, tier: &str| {
        json!({"apiVersion": "example.com/v1", "kind": "Pool", "metadata": {"name": "p"},
               "spec": {"size": size, "maxSize": 5, "tier": tier}})
    };
    // A rule on create.
    let (status, body) = call(&router, "POST", POOLS, Some(pool(9, "gold"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec");
    assert_eq!(
        body["message"],
        "Pool.example.com \"p\" is invalid: spec: Invalid value: \"object\": size must not exceed maxSize"
    );
    let (status, body) = call(&router, "POST", POOLS, Some(pool(2, "gold"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A transition rule on update.
    let (status, body) = call(
        &router,
        "PUT",
        &format!("{POOLS}/p"),
        Some(pool(2, "silver")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("tier is immutable")
    );

    // Scale reads and writes the CRD's paths.
    let status_patch = json!({"status": {"ready": 2, "selector": "app=pool"}});
    let request = Request::builder()
        .method("PATCH")
        .uri(format!("{POOLS}/p/status"))
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(status_patch.to_string()))
        .unwrap();
    let mut request = request;
    request.extensions_mut().insert(Caller(Some(User {
        name: "test-admin".into(),
        groups: vec!["system:masters".into()],
    })));
    assert_eq!(
        router.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let (status, scale) = call(&router, "GET", &format!("{POOLS}/p/scale"), None).await;
    assert_eq!(status, StatusCode::OK, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=pool");
    let mut update = scale.clone();
    update["spec"]["replicas"] = json!(4);
    let (status, body) = call(&router, "PUT", &format!("{POOLS}/p/scale"), Some(update)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, stored) = call(&router, "GET", &format!("{POOLS}/p"), None).await;
    assert_eq!(stored["spec"]["size"], 4);
}

#[tokio::test]
async fn crd_with_a_rule_that_does_not_compile_should_be_rejected() {
    let router = skiff_cluster::InProcess::with(1024, Arc::new(SystemClock))
        .await
        .unwrap()
        .router;
    let mut crd = scalable_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
        [0]["rule"] = json!("self.size <=");
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (status, body) = call(&router, "POST", crds, Some(crd)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("x-kubernetes-validations[0].rule"),
        "{body}"
    );
}
