//! Service ClusterIP allocation from the service CIDR. An allocated IP is a key in the store,
//! created with compare-and-swap, so two Services can never get the same address; it is given
//! back when the Service goes. (Defaults are each kind's strategy: `crate::strategy`.)

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_apimachinery::status::{Cause, Target};
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::StoreError;

use crate::state::ApiState;

/// The service CIDR: 10.43.0.0/16 (as k3s).
pub const SERVICE_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 0);
/// The `kubernetes` Service's address: the first in the service CIDR.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);

const IP_KEYS: &str = "/registry/skiff/serviceips/";

/// A service IP taken for an object being created (released again if the create fails).
pub struct Allocation(Option<Ipv4Addr>);

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_KEYS}{ip}")
}

/// Whether creating `object` takes pooled resources (a Service's ClusterIP).
pub fn allocates(info: &ResourceInfo, object: &Value) -> bool {
    info.kind == "Service" && info.group.is_empty() && wants_cluster_ip(object)
}

fn wants_cluster_ip(object: &Value) -> bool {
    let kind = object.pointer("/spec/type").and_then(Value::as_str);
    kind != Some("ExternalName")
        && object.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
}

/// Reserves a specific service IP.
pub async fn reserve(state: &ApiState, ip: Ipv4Addr, owner: &str) -> Result<bool, StoreError> {
    match state
        .store
        .create(&ip_key(ip), owner.as_bytes().to_vec().into())
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Allocates what a new object needs from shared pools: a Service's ClusterIP.
pub async fn allocate(
    state: &ApiState,
    info: &ResourceInfo,
    object: &mut Value,
    name: &str,
) -> Result<Allocation, ApiError> {
    if !allocates(info, object) {
        return Ok(Allocation(None));
    }
    let target = Target::new("", "services", name);
    let owner = format!(
        "{}/{name}",
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let requested = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match requested {
        Some(text) => {
            let invalid = |message: String| ApiError::Invalid {
                kind: "Service".into(),
                target: target.clone(),
                causes: vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message,
                    field: "spec.clusterIPs".into(),
                }],
            };
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                invalid(format!(
                    "Invalid value: \"{text}\": must be a valid IP address"
                ))
            })?;
            let [a, b, ..] = ip.octets();
            if [a, b] != [10, 43] {
                return Err(invalid(format!(
                    "Invalid value: \"{text}\": failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {SERVICE_NETWORK}/16"
                )));
            }
            if !reserve(state, ip, &owner)
                .await
                .map_err(|e| crate::storage::api_error(e, &target))?
            {
                return Err(invalid(format!(
                    "Invalid value: \"{text}\": failed to allocate IP {text}: provided IP is already allocated"
                )));
            }
            ip
        }
        None => {
            let mut chosen = None;
            for _ in 0..256 {
                let bytes = uuid::Uuid::new_v4().into_bytes();
                let host = u16::from_be_bytes([bytes[0], bytes[1]]);
                if host < 2 || host == u16::MAX {
                    continue;
                }
                let [c, d] = host.to_be_bytes();
                let ip = Ipv4Addr::new(10, 43, c, d);
                if reserve(state, ip, &owner)
                    .await
                    .map_err(|e| crate::storage::api_error(e, &target))?
                {
                    chosen = Some(ip);
                    break;
                }
            }
            chosen.ok_or_else(|| {
                ApiError::Internal("failed to allocate a service IP: the range is full".into())
            })?
        }
    };
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), json!(ip.to_string()));
        spec.insert("clusterIPs".into(), json!([ip.to_string()]));
    }
    Ok(Allocation(Some(ip)))
}

/// Gives back what [`allocate`] took, after a failed create.
pub async fn release(state: &ApiState, allocation: Allocation) {
    if let Some(ip) = allocation.0
        && let Err(error) = state.store.delete(&ip_key(ip), None).await
    {
        tracing::warn!(%ip, %error, "could not release a service IP");
    }
}

/// Gives back the pooled resources of a deleted object.
pub async fn release_for(state: &ApiState, object: &Value) {
    if object.get("kind").and_then(Value::as_str) != Some("Service")
        || object.get("apiVersion").and_then(Value::as_str) != Some("v1")
    {
        return;
    }
    let ip = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Ipv4Addr>().ok());
    if let Some(ip) = ip {
        release(state, Allocation(Some(ip))).await;
    }
}

/// Keeps allocated fields (a Service's ClusterIP) across updates that omit them.
pub fn keep_allocations(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if info.kind != "Service" || !info.group.is_empty() {
        return;
    }
    for field in ["clusterIP", "clusterIPs"] {
        if let (Some(value), Some(spec)) = (
            old.pointer(&format!("/spec/{field}")).cloned(),
            new.get_mut("spec").and_then(Value::as_object_mut),
        ) {
            spec.insert(field.into(), value);
        }
    }
}
