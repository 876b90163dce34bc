//! Discovery: `/api`, `/apis`, `/apis/{group}` and the per-group-version resource lists, with
//! verbs, short names, categories and subresources.

use serde_json::{Value, json};
use skiff_apimachinery::{ApiError, ResourceInfo};

use crate::state::ApiState;

fn aggregated_resource(info: &ResourceInfo) -> Value {
    let scope = if info.namespaced() {
        "Namespaced"
    } else {
        "Cluster"
    };
    let subresources: Vec<Value> = info
        .subresources
        .iter()
        .map(|sub| {
            let (kind, verbs) = subresource(sub);
            let (kind, group, version) = kind.unwrap_or((
                info.kind.as_str(),
                info.group.as_str(),
                info.version.as_str(),
            ));
            json!({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": verbs,
            })
        })
        .collect();
    let mut value = json!({
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": scope,
        "singularResource": info.singular,
        "verbs": info.verbs,
    });
    if !info.short_names.is_empty() {
        value["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        value["categories"] = json!(info.categories);
    }
    if !subresources.is_empty() {
        value["subresources"] = json!(subresources);
    }
    value
}

fn aggregated_group(state: &ApiState, name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = state
                .registry
                .in_group_version(name, version)
                .iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (`core`) or `/apis`.
pub fn aggregated(state: &ApiState, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(state, "", &["v1".to_string()])]
    } else {
        state
            .registry
            .groups()
            .iter()
            .map(|(name, versions)| aggregated_group(state, name, versions))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `/api`.
pub fn core_versions(state: &ApiState) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise}],
    })
}

fn group_value(name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn groups(state: &ApiState) -> Value {
    let groups: Vec<Value> = state
        .registry
        .groups()
        .iter()
        .map(|(name, versions)| group_value(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub fn group(state: &ApiState, name: &str) -> Result<Value, ApiError> {
    let groups = state.registry.groups();
    let (name, versions) = groups
        .iter()
        .find(|(g, _)| g == name)
        .ok_or(ApiError::NoSuchResource)?;
    let mut value = group_value(name, versions);
    value["kind"] = json!("APIGroup");
    value["apiVersion"] = json!("v1");
    Ok(value)
}

/// The kind, group and version a subresource is served as, and its verbs.
fn subresource(
    name: &str,
) -> (
    Option<(&'static str, &'static str, &'static str)>,
    &'static [&'static str],
) {
    match name {
        "status" => (None, &["get", "patch", "update"]),
        "scale" => (
            Some(("Scale", "autoscaling", "v1")),
            &["get", "patch", "update"],
        ),
        "binding" => (Some(("Binding", "", "v1")), &["create"]),
        "eviction" => (Some(("Eviction", "policy", "v1")), &["create"]),
        "token" => (
            Some(("TokenRequest", "authentication.k8s.io", "v1")),
            &["create"],
        ),
        "finalize" => (None, &["update"]),
        "approval" | "ephemeralcontainers" => (None, &["get", "patch", "update"]),
        "log" => (None, &["get"]),
        "exec" => (Some(("PodExecOptions", "", "v1")), &["create", "get"]),
        "attach" => (Some(("PodAttachOptions", "", "v1")), &["create", "get"]),
        "portforward" => (
            Some(("PodPortForwardOptions", "", "v1")),
            &["create", "get"],
        ),
        "proxy" => (
            Some(("NodeProxyOptions", "", "v1")),
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => (None, &[]),
    }
}

fn resource_values(info: &ResourceInfo) -> Vec<Value> {
    let mut main = json!({
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced(),
        "kind": info.kind,
        "verbs": info.verbs,
    });
    if !info.short_names.is_empty() {
        main["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        main["categories"] = json!(info.categories);
    }
    let mut values = vec![main];
    for sub in &info.subresources {
        let (kind, verbs) = subresource(sub);
        let mut value = json!({
            "name": format!("{}/{sub}", info.plural),
            "singularName": "",
            "namespaced": info.namespaced(),
            "kind": kind.map_or(info.kind.as_str(), |k| k.0),
            "verbs": verbs,
        });
        if let Some((_, group, version)) = kind {
            value["group"] = json!(group);
            value["version"] = json!(version);
        }
        values.push(value);
    }
    values
}

/// `/api/v1`, `/apis/{group}/{version}`.
pub fn resources(state: &ApiState, group: &str, version: &str) -> Result<Value, ApiError> {
    let resources: Vec<Value> = state
        .registry
        .in_group_version(group, version)
        .iter()
        .flat_map(resource_values)
        .collect();
    if resources.is_empty() {
        return Err(ApiError::NoSuchResource);
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
