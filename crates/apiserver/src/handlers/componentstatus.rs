//! The deprecated `componentstatuses` API (core v1 `ComponentStatus`, cluster-scoped, get and
//! list only): a read-only view computed by the server on each request, never stored, as
//! upstream's. Upstream probes etcd, the scheduler and the controller manager; here the store's
//! health is a real read of its current revision, the controllers' is the freshness of the
//! Lease they renew (`kube-system/kube-controller-manager`, wherever they run), and the
//! scheduler, which skiff does not have yet, says so.
//! Every answer carries upstream's deprecation warning.

use std::time::Duration;

use axum::response::Response;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::Target;

use super::fields;
use super::params::Params;
use crate::guaranteed::current;
use crate::respond::{self, Format};
use crate::state::ApiState;
use crate::storage;
use crate::table;

/// Upstream's warning for the deprecated API.
const DEPRECATED: &str = "299 - \"v1 ComponentStatus is deprecated in v1.19+\"";

/// How long the store may take to answer its health check.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers a get (`name`) or a list, with the deprecation warning.
pub async fn serve(
    state: &ApiState,
    name: Option<&str>,
    params: &Params,
    format: Format,
) -> Response {
    let mut response = answer(state, name, params, format)
        .await
        .unwrap_or_else(|e| respond::error(&e));
    response
        .headers_mut()
        .insert("warning", HeaderValue::from_static(DEPRECATED));
    response
}

async fn answer(
    state: &ApiState,
    name: Option<&str>,
    params: &Params,
    format: Format,
) -> Result<Response, ApiError> {
    let mut statuses = statuses(state).await;
    let out = if format == Format::Yaml {
        Format::Yaml
    } else {
        Format::Json
    };
    if let Some(name) = name {
        let status = statuses
            .into_iter()
            .find(|s| s["metadata"]["name"] == name)
            // Upstream names the singular resource in this NotFound.
            .ok_or_else(|| ApiError::NotFound(Target::new("", "componentstatus", name)))?;
        let body = match format {
            Format::Table => status_table(std::slice::from_ref(&status)),
            Format::Metadata => table::partial_metadata(&status),
            _ => status,
        };
        return Ok(respond::value(StatusCode::OK, &body, out));
    }
    let labels = params.labels()?;
    let selector = params.fields()?;
    fields::check("ComponentStatus", &selector)?;
    statuses.retain(|s| fields::selected(s, &labels, &selector));
    let body = match format {
        Format::Table => status_table(&statuses),
        Format::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {},
            "items": statuses.iter().map(table::partial_metadata).collect::<Vec<_>>(),
        }),
        _ => {
            for status in &mut statuses {
                if let Some(map) = status.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
            }
            json!({
                "kind": "ComponentStatusList",
                "apiVersion": "v1",
                "metadata": {},
                "items": statuses,
            })
        }
    };
    Ok(respond::value(StatusCode::OK, &body, out))
}

/// Every component's status, sorted by name as upstream lists them.
async fn statuses(state: &ApiState) -> Vec<Value> {
    let store = match tokio::time::timeout(STORE_TIMEOUT, state.store.current_revision()).await {
        Ok(Ok(revision)) => Ok(format!(
            "ok: {} store at revision {revision}",
            state.store.backend()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the {} store did not answer within {}s",
            state.store.backend(),
            STORE_TIMEOUT.as_secs()
        )),
    };
    vec![
        component("controller-manager", controllers(state).await),
        // Upstream's name for its first storage server, which clients look for.
        component("etcd-0", store),
        component(
            "scheduler",
            Err("skiff has no scheduler yet: pods stay unscheduled".into()),
        ),
    ]
}

/// The Lease the leading controllers renew (see `skiff_controllers::run`).
const CONTROLLERS_LEASE: (&str, &str) = ("kube-system", "kube-controller-manager");

/// The controllers are healthy while their Lease is renewed: `renewTime` plus
/// `leaseDurationSeconds` is not past.
async fn controllers(state: &ApiState) -> Result<String, String> {
    let (namespace, name) = CONTROLLERS_LEASE;
    let info = state
        .registry
        .find("coordination.k8s.io", "v1", "leases")
        .ok_or_else(|| "leases are not served".to_string())?;
    let target = Target::new("coordination.k8s.io", "leases", name);
    let lease = match current(state, &storage::key(&info, Some(namespace), name), &target).await {
        Ok((_, lease)) => lease,
        Err(ApiError::NotFound(_)) => {
            return Err(format!(
                "no controller manager is running: the lease {namespace}/{name} does not exist"
            ));
        }
        Err(error) => return Err(format!("reading the lease {namespace}/{name}: {error}")),
    };
    lease_health(&lease, state.clock.now())
}

/// Whether a Lease was renewed within its duration at `now`.
fn lease_health(lease: &Value, now: jiff::Timestamp) -> Result<String, String> {
    let renewed = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let seconds = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let holder = lease
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        .unwrap_or("nobody");
    let Some(renewed) = renewed else {
        return Err(format!(
            "the controllers' lease held by {holder} was never renewed"
        ));
    };
    let age = now.duration_since(renewed).as_secs();
    if age <= seconds {
        Ok(format!("ok: lease renewed {age}s ago by {holder}"))
    } else {
        Err(format!(
            "the controllers' lease expired: last renewed {age}s ago by {holder} (it lasts {seconds}s)"
        ))
    }
}

/// One `ComponentStatus` with its `Healthy` condition (upstream's shape: no uid, no
/// resourceVersion, no creation time).
fn component(name: &str, health: Result<String, String>) -> Value {
    let condition = match health {
        Ok(message) => json!({"type": "Healthy", "status": "True", "message": message}),
        Err(error) => json!({"type": "Healthy", "status": "False", "error": error}),
    };
    json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "conditions": [condition],
    })
}

/// Upstream's Table for component statuses: Name, Status, Message, Error (no Age).
fn status_table(statuses: &[Value]) -> Value {
    let column = |name: &str, description: &str| {
        let format = if name == "Name" { "name" } else { "" };
        json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0})
    };
    let rows: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let healthy = &s["conditions"][0];
            let status = match healthy["status"].as_str() {
                Some("True") => "Healthy",
                Some(_) => "Unhealthy",
                None => "Unknown",
            };
            let text = |field: &str| healthy[field].as_str().unwrap_or_default().to_string();
            json!({
                "cells": [s["metadata"]["name"], status, text("message"), text("error")],
                "object": table::partial_metadata(s),
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            column("Name", "Name must be unique within a namespace."),
            column("Status", "Status of the component conditions"),
            column("Message", "Message of the component conditions"),
            column("Error", "Error of the component conditions"),
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn controllers_should_be_healthy_only_while_their_lease_is_fresh() {
        let lease = json!({"spec": {"holderIdentity": "host_7", "leaseDurationSeconds": 15,
            "renewTime": "2026-12-02T10:00:00.000000Z"}});
        assert_eq!(
            lease_health(&lease, at("2026-12-02T10:00:10Z")),
            Ok("ok: lease renewed 10s ago by host_7".into())
        );
        let expired = lease_health(&lease, at("2026-12-02T10:01:00Z")).unwrap_err();
        assert!(
            expired.contains("expired: last renewed 60s ago by host_7"),
            "{expired}"
        );
        assert!(lease_health(&json!({"spec": {}}), at("2026-12-02T10:00:00Z")).is_err());
    }
}
