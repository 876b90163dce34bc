//! A pod's sandbox and containers as CRI asks for them, pure: names, labels, log paths, host
//! ports, the command and environment, mounts, resources as cgroup limits and the security
//! context, as kubelet fills `PodSandboxConfig` and `ContainerConfig`.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use super::labels;
use crate::runtime::api;

/// Where a pod's logs go: `{dir}/{namespace}_{name}_{uid}`, kubelet's layout.
pub fn log_directory(logs: &Path, pod: &Pod) -> String {
    logs.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
    .display()
    .to_string()
}

/// A container's log file, relative to the pod's log directory: `{name}/{restarts}.log`.
pub fn log_path(container: &str, restart_count: u32) -> String {
    format!("{container}/{restart_count}.log")
}

/// The cgroup parent of a pod's sandbox (cgroupfs driver): one per agent, then one per pod.
pub fn cgroup_parent(node_slice: &str, uid: &str) -> String {
    format!("/{node_slice}/pod{uid}")
}

fn protocol(name: Option<&str>) -> i32 {
    match name {
        Some("UDP") => api::Protocol::Udp as i32,
        Some("SCTP") => api::Protocol::Sctp as i32,
        _ => api::Protocol::Tcp as i32,
    }
}

/// The sandbox of `pod`, attempt `attempt`.
pub fn sandbox(
    node: &str,
    pod: &Pod,
    attempt: u32,
    logs: &Path,
    node_slice: &str,
    dns: &super::dns::ClusterDns,
) -> api::PodSandboxConfig {
    let name = pod.name_any();
    let namespace = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| name.chars().take(63).collect());
    let port_mappings = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| api::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let namespaces = api::NamespaceOption {
        network: if host_network {
            api::NamespaceMode::Node as i32
        } else {
            api::NamespaceMode::Pod as i32
        },
        pid: if spec.and_then(|s| s.share_process_namespace) == Some(true) {
            api::NamespaceMode::Pod as i32
        } else {
            api::NamespaceMode::Container as i32
        },
        ipc: api::NamespaceMode::Pod as i32,
        ..api::NamespaceOption::default()
    };
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            hostname
        },
        log_directory: log_directory(logs, pod),
        dns_config: super::dns::config(pod, dns),
        port_mappings,
        labels: labels::sandbox(node, &name, &namespace, &uid),
        annotations: pod.annotations().clone().into_iter().collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(node_slice, &uid),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces),
                // containerd refuses a privileged container in a sandbox that is not.
                privileged: has_privileged_container(pod),
                ..api::LinuxSandboxSecurityContext::default()
            }),
            ..api::LinuxPodSandboxConfig::default()
        }),
        windows: None,
    }
}

/// Whether any of the pod's containers (init, regular or ephemeral) asks to be privileged
/// (kubelet's `HasPrivilegedContainer`).
fn has_privileged_container(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let privileged = |context: Option<&k8s_openapi::api::core::v1::SecurityContext>| {
        context.and_then(|c| c.privileged) == Some(true)
    };
    spec.containers
        .iter()
        .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
}

/// CPU shares for a CPU request in milli-CPUs (kubelet's `MilliCPUToShares`, at least 2).
pub fn cpu_shares(milli: i128) -> i64 {
    i64::try_from((milli * 1024 / 1000).max(2)).unwrap_or(i64::MAX)
}

/// CFS quota for a CPU limit in milli-CPUs over a 100 ms period (at least 1 ms).
pub fn cpu_quota(milli: i128) -> i64 {
    i64::try_from((milli * 100).max(1000)).unwrap_or(i64::MAX)
}

fn quantity(container: &Container, limits: bool, name: &str) -> Option<i128> {
    let resources = container.resources.as_ref()?;
    let list = if limits {
        resources.limits.as_ref()
    } else {
        resources.requests.as_ref()
    }?;
    skiff_apimachinery::quantity::milli(&list.get(name)?.0).ok()
}

/// The cgroup limits of a container's resources.
pub fn resources(container: &Container) -> api::LinuxContainerResources {
    let cpu_request =
        quantity(container, false, "cpu").or_else(|| quantity(container, true, "cpu"));
    let cpu_limit = quantity(container, true, "cpu");
    let memory_limit = quantity(container, true, "memory");
    api::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(2, cpu_shares),
        cpu_period: if cpu_limit.is_some() { 100_000 } else { 0 },
        cpu_quota: cpu_limit.map_or(0, cpu_quota),
        memory_limit_in_bytes: memory_limit
            .map_or(0, |m| i64::try_from(m / 1000).unwrap_or(i64::MAX)),
        ..api::LinuxContainerResources::default()
    }
}

fn security(pod: &Pod, container: &Container) -> api::LinuxContainerSecurityContext {
    let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let context = container.security_context.as_ref();
    let run_as_user = context
        .and_then(|c| c.run_as_user)
        .or_else(|| pod_context.and_then(|c| c.run_as_user));
    let run_as_group = context
        .and_then(|c| c.run_as_group)
        .or_else(|| pod_context.and_then(|c| c.run_as_group));
    let capabilities = context.and_then(|c| c.capabilities.as_ref());
    let names = |list: Option<&Vec<String>>| -> Vec<String> {
        list.into_iter()
            .flatten()
            .map(|c| {
                if c.starts_with("CAP_") {
                    c.clone()
                } else {
                    format!("CAP_{c}")
                }
            })
            .collect()
    };
    api::LinuxContainerSecurityContext {
        capabilities: capabilities.map(|c| api::Capability {
            add_capabilities: names(c.add.as_ref()),
            drop_capabilities: names(c.drop.as_ref()),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: context.and_then(|c| c.privileged).unwrap_or(false),
        run_as_user: run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: run_as_group.map(|value| api::Int64Value { value }),
        readonly_rootfs: context
            .and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
        supplemental_groups: pod_context
            .and_then(|c| c.supplemental_groups.clone())
            .unwrap_or_default(),
        namespace_options: Some(api::NamespaceOption {
            network: api::NamespaceMode::Pod as i32,
            pid: if pod.spec.as_ref().and_then(|s| s.share_process_namespace) == Some(true) {
                api::NamespaceMode::Pod as i32
            } else {
                api::NamespaceMode::Container as i32
            },
            ipc: api::NamespaceMode::Pod as i32,
            ..api::NamespaceOption::default()
        }),
        ..api::LinuxContainerSecurityContext::default()
    }
}

/// One container of the pod, the `restart_count`-th instance.
pub fn container(
    node: &str,
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    environment: Vec<(String, String)>,
    mounts: Vec<api::Mount>,
) -> api::ContainerConfig {
    let name = pod.name_any();
    let namespace = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let annotations = HashMap::from([
        (labels::RESTART_COUNT.to_string(), restart_count.to_string()),
        (
            labels::TERMINATION_MESSAGE_PATH.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (
            labels::TERMINATION_MESSAGE_POLICY.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
    ]);
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: restart_count,
        }),
        image: Some(api::ImageSpec {
            image: container.image.clone().unwrap_or_default(),
            ..api::ImageSpec::default()
        }),
        // `$(NAME)` in the command and its arguments names a variable of the container's
        // environment, as kubelet expands them.
        command: expand_all(container.command.as_deref(), &environment),
        args: expand_all(container.args.as_deref(), &environment),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: environment
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        mounts,
        labels: labels::container(node, &name, &namespace, &uid, &container.name),
        annotations,
        log_path: log_path(&container.name, restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources(container)),
            security_context: Some(security(pod, container)),
        }),
        ..api::ContainerConfig::default()
    }
}

/// `words` with `$(NAME)` references to `environment` expanded.
fn expand_all(words: Option<&[String]>, environment: &[(String, String)]) -> Vec<String> {
    words
        .unwrap_or_default()
        .iter()
        .map(|word| super::env::expand(word, environment))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn resources_should_become_cgroup_limits_as_kubelet_computes_them() {
        let container: Container = serde_json::from_value(json!({"name": "c",
            "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}))
        .unwrap();
        let limits = resources(&container);
        assert_eq!(limits.cpu_shares, 256);
        assert_eq!(limits.cpu_period, 100_000);
        assert_eq!(limits.cpu_quota, 50_000);
        assert_eq!(limits.memory_limit_in_bytes, 64 * 1024 * 1024);
        let bare: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(resources(&bare).cpu_shares, 2);
        assert_eq!(resources(&bare).memory_limit_in_bytes, 0);
    }

    #[test]
    fn the_command_and_args_should_expand_the_containers_variables() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        let c: Container = serde_json::from_value(json!({"name": "c",
            "command": ["$(TOOL)"], "args": ["--ip=$(POD_IP)", "$$(POD_IP)", "$(NOPE)"]}))
        .unwrap();
        let environment = vec![
            ("TOOL".to_string(), "/bin/serve".to_string()),
            ("POD_IP".to_string(), "10.42.0.7".to_string()),
        ];
        let config = container("n", &pod, &c, 0, environment, Vec::new());
        assert_eq!(config.command, ["/bin/serve"]);
        assert_eq!(config.args, ["--ip=10.42.0.7", "$(POD_IP)", "$(NOPE)"]);
    }

    #[test]
    fn sandboxes_should_carry_the_pods_identity_host_ports_and_log_directory() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]},
        }))
        .unwrap();
        let dns = crate::pods::dns::ClusterDns {
            server: Some("10.43.0.10".into()),
            domain: "cluster.local".into(),
        };
        let config = sandbox("n1", &pod, 2, Path::new("/logs"), "skiff-n1", &dns);
        assert_eq!(
            config.dns_config.as_ref().map(|d| d.servers.clone()),
            Some(vec!["10.43.0.10".to_string()])
        );
        let meta = config.metadata.unwrap();
        assert_eq!((meta.name.as_str(), meta.attempt), ("web", 2));
        assert_eq!(config.log_directory, "/logs/shop_web_u-1");
        assert_eq!(config.port_mappings.len(), 1);
        assert_eq!(config.port_mappings[0].host_port, 8080);
        assert_eq!(config.labels[labels::POD_UID], "u-1");
        let linux = config.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/skiff-n1/podu-1");
        assert!(!linux.security_context.unwrap().privileged);
    }

    #[test]
    fn a_privileged_container_should_make_its_sandbox_privileged() {
        let dns = crate::pods::dns::ClusterDns {
            server: None,
            domain: "cluster.local".into(),
        };
        for list in ["containers", "initContainers"] {
            let mut spec = json!({"containers": [{"name": "plain"}]});
            let privileged = json!({"name": "p", "securityContext": {"privileged": true}});
            match list {
                "containers" => spec["containers"].as_array_mut().unwrap().push(privileged),
                _ => spec[list] = json!([privileged]),
            }
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec,
            }))
            .unwrap();
            let config = sandbox("n1", &pod, 0, Path::new("/logs"), "skiff-n1", &dns);
            let context = config.linux.unwrap().security_context.unwrap();
            assert!(context.privileged, "{list}");
        }
    }
}
