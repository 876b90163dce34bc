//! Objects every cluster starts with: the namespaces `default`, `kube-system`, `kube-public` and
//! `kube-node-lease`, the PriorityClasses `system-node-critical` and `system-cluster-critical`,
//! the default ClusterRoles (`cluster-admin`, `admin`, `edit`, `view`) with
//! `cluster-admin` bound to `system:masters`, and the `kubernetes` Service (and Endpoints) in
//! `default`. They are created
//! through the API router, like any client's objects; existing ones are left alone.

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::auth::{Caller, User};

/// Bootstrapping failed.
#[derive(Debug, thiserror::Error)]
#[error("creating {what}: {message}")]
pub struct BootstrapError {
    what: String,
    message: String,
}

/// Applies `object` at `path` (server-side apply as `kube-apiserver`, forced).
async fn apply(router: &Router, path: &str, object: Value) -> Result<(), BootstrapError> {
    let path = format!("{path}?fieldManager=kube-apiserver&force=true");
    send(
        router,
        Method::PATCH,
        &path,
        "application/apply-patch+yaml",
        object,
    )
    .await
}

async fn create(router: &Router, path: &str, object: Value) -> Result<(), BootstrapError> {
    send(router, Method::POST, path, "application/json", object).await
}

async fn send(
    router: &Router,
    method: Method,
    path: &str,
    content_type: &str,
    object: Value,
) -> Result<(), BootstrapError> {
    let what = format!("{path} {}", object["metadata"]["name"]);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(object.to_string()))
        .map_err(|e| BootstrapError {
            what: what.clone(),
            message: e.to_string(),
        })?;
    request.extensions_mut().insert(Caller(Some(User {
        name: "system:apiserver".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    })));
    let response = router
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| BootstrapError {
            what: what.clone(),
            message: e.to_string(),
        })?;
    match response.status() {
        StatusCode::OK | StatusCode::CREATED | StatusCode::CONFLICT => Ok(()),
        status => {
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            Err(BootstrapError {
                what,
                message: format!("{status}: {}", String::from_utf8_lossy(&body)),
            })
        }
    }
}

/// Creates the bootstrap objects that are missing. `endpoint` is the API server's address as
/// pods reach it.
pub async fn run(
    router: &Router,
    endpoint_ip: &str,
    port: u16,
    service_ip: std::net::Ipv4Addr,
) -> Result<(), BootstrapError> {
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create(
            router,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await?;
    }
    for (name, value, description) in crate::priority::SYSTEM_CLASSES {
        create(
            router,
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description,
            }),
        )
        .await?;
    }
    let roles = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        ),
        (
            "edit",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}]),
        ),
        (
            "view",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]),
        ),
    ];
    for (name, rules) in roles {
        create(
            router,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                "rules": rules,
            }),
        )
        .await?;
    }
    create(
        router,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}],
        }),
    )
    .await?;
    // One APIService per built-in group version, served locally (no service), as upstream
    // registers them.
    let mut group_versions: Vec<(String, String)> = Vec::new();
    for info in skiff_apimachinery::resources::builtin() {
        let gv = (info.group.clone(), info.version.clone());
        if !group_versions.contains(&gv) {
            group_versions.push(gv);
        }
    }
    for (group, version) in group_versions {
        create(
            router,
            "/apis/apiregistration.k8s.io/v1/apiservices",
            json!({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": format!("{version}.{group}"), "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": if group.is_empty() { 18000 } else { 17000 }, "versionPriority": 15},
                "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local", "message": "Local APIServices are always available"}]},
            }),
        )
        .await?;
    }
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    create(
        router,
        "/api/v1/namespaces/default/services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": labels},
            "spec": {
                "clusterIP": service_ip.to_string(),
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            },
        }),
    )
    .await?;
    // The API's own endpoints follow its address: applied again on every start.
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    apply(
        router,
        "/api/v1/namespaces/default/endpoints/kubernetes",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": endpoint_ip}], "ports": ports}],
        }),
    )
    .await?;
    apply(
        router,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [endpoint_ip], "conditions": {"ready": true}}],
            "ports": ports,
        }),
    )
    .await
}
