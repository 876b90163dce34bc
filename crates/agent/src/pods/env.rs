//! A container's environment as kubelet makes it (`makeEnvironmentVariables`): `envFrom`
//! sources first, then `env` in order, each `$(NAME)` expanded from what came before;
//! values from ConfigMaps and Secrets (read by the worker beforehand), from the pod's own fields
//! and from the container's resources. A missing source that is not optional is an error whose
//! text becomes the container's `CreateContainerConfigError` message, in upstream's words.
//! Service variables come first (upstream's `envvars.FromServices`): the `kubernetes` Service's
//! (`KUBERNETES_SERVICE_HOST`, ...), so that an in-cluster client finds the API, and with
//! `enableServiceLinks` (the default) those of every Service in the pod's namespace with a
//! cluster IP (`{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT[_{PORT}]` and Docker's link variables).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::ResourceExt;

/// A service-account token fetched for the pod.
#[derive(Clone, Debug)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// When to ask for a fresh one (80 % of its lifetime, as kubelet does).
    pub refresh_at: Instant,
}

/// Which token a projection asks for: (audience, "" for the API's own; lifetime in seconds).
pub type TokenKey = (String, i64);

/// What a pod's environment and volumes are made from, read by the worker beforehand.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// ConfigMaps by name (`None`: not found).
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    /// Secrets by name (`None`: not found).
    pub secrets: HashMap<String, Option<Secret>>,
    /// Service-account tokens, or why one could not be had.
    pub tokens: HashMap<TokenKey, Result<Token, String>>,
    /// The `kubernetes` Service (in `default`), once read.
    pub api_service: Option<Service>,
    /// The Services of the pod's namespace, once read (only with `enableServiceLinks`).
    pub services: Option<Vec<Service>>,
}

/// A Service name as variables spell it.
fn variable_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// The variables of one Service, as upstream's `envvars.FromServices` makes them; none for a
/// Service without a cluster IP (headless, ExternalName) or ports.
fn service_variables(service: &Service) -> Vec<(String, String)> {
    let spec = service.spec.as_ref();
    let ip = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None");
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let (Some(ip), Some(first)) = (ip, ports.first()) else {
        return Vec::new();
    };
    let prefix = variable_name(&service.name_any());
    let host_port = |port: i32| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let mut vars = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for port in ports {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            vars.push((
                format!("{prefix}_SERVICE_PORT_{}", variable_name(name)),
                port.port.to_string(),
            ));
        }
    }
    for (index, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let url = format!("{}://{}", protocol.to_lowercase(), host_port(port.port));
        if index == 0 {
            vars.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        vars.push((port_prefix.clone(), url));
        vars.push((format!("{port_prefix}_PROTO"), protocol.to_lowercase()));
        vars.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        vars.push((format!("{port_prefix}_ADDR"), ip.to_string()));
    }
    vars
}

/// The Service variables of a pod: those of the pod's namespace (`sources.services`, empty
/// without service links), and the `kubernetes` Service's unless the namespace has a Service
/// of that name itself (as kubelet's `getServiceEnvVarMap`).
fn service_environment(sources: &Sources) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    sources
        .services
        .iter()
        .flatten()
        .chain(&sources.api_service)
        .filter(|service| seen.insert(variable_name(&service.name_any())))
        .flat_map(service_variables)
        .collect()
}

/// The names of the ConfigMaps and Secrets the pod's containers take values from (environment
/// and volumes).
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (config_maps, secrets);
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for from in container.env_from.iter().flatten() {
            if let Some(c) = &from.config_map_ref {
                config_maps.push(c.name.clone());
            }
            if let Some(s) = &from.secret_ref {
                secrets.push(s.name.clone());
            }
        }
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(c) = &from.config_map_key_ref {
                config_maps.push(c.name.clone());
            }
            if let Some(s) = &from.secret_key_ref {
                secrets.push(s.name.clone());
            }
        }
    }
    secrets.extend(
        spec.image_pull_secrets
            .iter()
            .flatten()
            .filter(|s| !s.name.is_empty())
            .map(|s| s.name.clone()),
    );
    for volume in spec.volumes.iter().flatten() {
        if let Some(c) = &volume.config_map {
            config_maps.push(c.name.clone());
        }
        if let Some(s) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        let projections = volume
            .projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .into_iter()
            .flatten();
        for projection in projections {
            if let Some(c) = &projection.config_map {
                config_maps.push(c.name.clone());
            }
            if let Some(s) = &projection.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// The tokens the pod's projected volumes ask for.
pub fn tokens_wanted(pod: &Pod) -> Vec<TokenKey> {
    let mut keys: Vec<TokenKey> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref()?.sources.as_ref())
        .flatten()
        .filter_map(|p| p.service_account_token.as_ref())
        .map(|t| {
            (
                t.audience.clone().unwrap_or_default(),
                t.expiration_seconds.unwrap_or(3600),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The string data of a ConfigMap or the decoded data of a Secret.
fn config_map_data(map: &ConfigMap) -> BTreeMap<String, String> {
    map.data.clone().unwrap_or_default()
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Expands `$(NAME)` from `vars`; `$$` is a literal `$`; unknown references stay as written.
pub fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A pod field as `fieldRef` reads it.
pub(super) fn field(pod: &Pod, path: &str, host_ip: &str, pod_ip: &str) -> Result<String, String> {
    let bracketed = |prefix: &str| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(key.to_string())
    };
    if let Some(key) = bracketed("metadata.labels") {
        return Ok(pod.labels().get(&key).cloned().unwrap_or_default());
    }
    if let Some(key) = bracketed("metadata.annotations") {
        return Ok(pod.annotations().get(&key).cloned().unwrap_or_default());
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// A container resource as `resourceFieldRef` reads it, in units of its divisor (CPU rounded
/// up to whole units, as upstream does).
pub(super) fn resource(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource: {resource}"))?;
    let resources = container.resources.as_ref();
    let list = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource: {resource}")),
    };
    let milli = match list.and_then(|l| l.get(name)) {
        Some(quantity) => {
            skiff_apimachinery::quantity::milli(&quantity.0).map_err(|e| e.to_string())?
        }
        // No limit: the node's allocatable, as upstream's; a request not made is 0.
        None => match (kind, name) {
            ("limits", "cpu") => i128::from(crate::node::allocatable().cpu_milli),
            ("limits", "memory") => i128::from(crate::node::allocatable().memory_kib) * 1024 * 1000,
            _ => 0,
        },
    };
    let divisor = match divisor {
        Some(d) => skiff_apimachinery::quantity::milli(d).map_err(|e| e.to_string())?,
        None => 1000,
    };
    if divisor <= 0 {
        return Err(format!("invalid divisor for {resource}"));
    }
    Ok(((milli + divisor - 1) / divisor).to_string())
}

/// The environment of `container`, or why it cannot be made.
pub fn environment(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    host_ip: &str,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut vars = service_environment(sources);
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        vars.retain(|(k, _)| *k != name);
        vars.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(reference) = &from.config_map_ref {
            match sources.config_maps.get(&reference.name).cloned().flatten() {
                Some(map) => config_map_data(&map),
                None if reference.optional == Some(true) => continue,
                None => return Err(format!("configmap \"{}\" not found", reference.name)),
            }
        } else if let Some(reference) = &from.secret_ref {
            match sources.secrets.get(&reference.name).cloned().flatten() {
                Some(secret) => secret_data(&secret),
                None if reference.optional == Some(true) => continue,
                None => return Err(format!("secret \"{}\" not found", reference.name)),
            }
        } else {
            continue;
        };
        for (key, value) in data {
            set(&mut vars, format!("{prefix}{key}"), value);
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &vars),
            Some(from) => {
                if let Some(r) = &from.config_map_key_ref {
                    match sources.config_maps.get(&r.name).cloned().flatten() {
                        Some(map) => match config_map_data(&map).get(&r.key) {
                            Some(value) => value.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {namespace}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match sources.secrets.get(&r.name).cloned().flatten() {
                        Some(secret) => match secret_data(&secret).get(&r.key) {
                            Some(value) => value.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {namespace}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &from.field_ref {
                    field(pod, &r.field_path, host_ip, pod_ip)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource(
                        container,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                    )?
                } else {
                    continue;
                }
            }
        };
        set(&mut vars, var.name.clone(), value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "w"}},
            "spec": {"nodeName": "n1", "containers": [container]},
        }))
        .unwrap()
    }

    #[test]
    fn services_should_become_variables_as_upstream_names_them() {
        let service = |name: &str, ip: &str, ports: serde_json::Value| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"clusterIP": ip, "ports": ports}}))
            .unwrap()
        };
        let sources = Sources {
            api_service: Some(service(
                "kubernetes",
                "10.43.0.1",
                json!([{"name": "https", "port": 443}]),
            )),
            services: Some(vec![
                service(
                    "web-db",
                    "10.43.0.7",
                    json!([{"name": "sql", "port": 5432}, {"name": "metrics", "port": 9187, "protocol": "UDP"}]),
                ),
                service("headless", "None", json!([{"port": 80}])),
            ]),
            ..Sources::default()
        };
        let vars: BTreeMap<String, String> = service_environment(&sources).into_iter().collect();
        let expected = [
            ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
            ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", "443"),
            ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
            ("WEB_DB_SERVICE_HOST", "10.43.0.7"),
            ("WEB_DB_SERVICE_PORT", "5432"),
            ("WEB_DB_SERVICE_PORT_SQL", "5432"),
            ("WEB_DB_SERVICE_PORT_METRICS", "9187"),
            ("WEB_DB_PORT", "tcp://10.43.0.7:5432"),
            ("WEB_DB_PORT_5432_TCP", "tcp://10.43.0.7:5432"),
            ("WEB_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("WEB_DB_PORT_5432_TCP_PORT", "5432"),
            ("WEB_DB_PORT_5432_TCP_ADDR", "10.43.0.7"),
            ("WEB_DB_PORT_9187_UDP", "udp://10.43.0.7:9187"),
            ("WEB_DB_PORT_9187_UDP_PROTO", "udp"),
            ("WEB_DB_PORT_9187_UDP_PORT", "9187"),
            ("WEB_DB_PORT_9187_UDP_ADDR", "10.43.0.7"),
        ];
        assert_eq!(
            vars,
            expected
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect::<BTreeMap<_, _>>()
        );
    }

    #[test]
    fn values_should_come_from_sources_fields_and_earlier_variables() {
        let pod = pod(json!({"name": "c", "image": "i",
        "resources": {"limits": {"memory": "64Mi", "cpu": "1500m"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "A", "value": "x"},
            {"name": "B", "value": "$(A)-$(CFG_k)-$$-$(NOPE)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "p"}}},
        ]}));
        let mut sources = Sources::default();
        let cfg: ConfigMap = serde_json::from_value(json!({"data": {"k": "v"}})).unwrap();
        sources.config_maps.insert("cfg".into(), Some(cfg));
        let secret: Secret =
            serde_json::from_value(json!({"data": {"p": "aHVudGVyMg=="}})).unwrap();
        sources.secrets.insert("s".into(), Some(secret));
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let env = environment(&pod, container, &sources, "192.0.2.1", "10.42.0.5").unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_k"), Some("v"));
        assert_eq!(get("B"), Some("x-v-$-$(NOPE)"));
        assert_eq!(get("POD"), Some("web"));
        assert_eq!(get("APP"), Some("w"));
        assert_eq!(get("IP"), Some("10.42.0.5"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("CPU"), Some("2"));
        assert_eq!(get("PASS"), Some("hunter2"));
        // Without a limit: the node's allocatable.
        let bare: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        let node = crate::node::allocatable();
        assert_eq!(
            resource(&bare, "limits.cpu", Some("1m")),
            Ok(node.cpu_milli.to_string())
        );
        assert_eq!(
            resource(&bare, "limits.memory", Some("1Ki")),
            Ok(node.memory_kib.to_string())
        );
        assert_eq!(resource(&bare, "requests.cpu", None), Ok("0".into()));
    }

    #[test]
    fn missing_sources_should_be_named_as_upstream_names_them() {
        let pod = pod(json!({"name": "c", "image": "i", "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}}]}));
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mut sources = Sources::default();
        sources.config_maps.insert("x".into(), None);
        assert_eq!(
            environment(&pod, container, &sources, "", ""),
            Err("configmap \"x\" not found".into())
        );
        let empty: ConfigMap = serde_json::from_value(json!({"data": {}})).unwrap();
        sources.config_maps.insert("x".into(), Some(empty));
        assert_eq!(
            environment(&pod, container, &sources, "", ""),
            Err("couldn't find key k in ConfigMap shop/x".into())
        );
    }
}
