//! The pod benchmark, on a real node (root, containerd): a `skiff server` child process with
//! its agent, and in the same run the same work done by hand through CRI. Pods use skiff's own
//! sandbox image as their container image, so nothing is pulled. Figures:
//! - start latency, one pod at a time: create → Running seen by a watch, p50/p99, beside the
//!   raw CRI sequence (RunPodSandbox + CreateContainer + StartContainer) for the same configs;
//! - the idle cost with no pods and with N running: CPU (% of one core) and resident memory of
//!   the server process (API, controllers, scheduler and agent) beside containerd's and its
//!   shims'.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_agent::runtime::Runtime;

use super::api::{cpu_seconds, ms, rss_mib, start_server_with};

/// Benchmark settings.
pub struct Options {
    /// Pods started one after the other (and then left running for the idle figure).
    pub pods: usize,
    /// Seconds each idle measurement lasts.
    pub idle_seconds: u64,
}

pub(super) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "uid": format!("bench-raw-{name}"), "namespace": "bench-raw"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": skiff_agent::images::PAUSE_IMAGE,
                            "imagePullPolicy": "IfNotPresent"}],
        },
    }))?)
}

/// Processes whose command line mentions `needle`: (pid, first word of the command line).
pub(super) fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            let program = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            found.push((pid, program));
        }
    }
    found
}

/// CPU (% of one core) and RSS (MiB) of each group of processes over `seconds`.
async fn idle(groups: &[(&str, Vec<u32>)], seconds: u64) -> anyhow::Result<Vec<String>> {
    let cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|p| cpu_seconds(&p.to_string()).ok())
            .sum()
    };
    let before: Vec<f64> = groups.iter().map(|(_, pids)| cpu(pids)).collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let mut lines = Vec::new();
    for ((name, pids), before) in groups.iter().zip(before) {
        let used = cpu(pids) - before;
        let rss = pids
            .iter()
            .filter_map(|p| rss_mib(*p).ok())
            .fold(0.0, |sum, r| sum + r.0);
        lines.push(format!(
            "{name}: {:.2} % of a core, {rss:.1} MiB resident ({} process{})",
            used * 100.0 / seconds as f64,
            pids.len(),
            if pids.len() == 1 { "" } else { "es" }
        ));
    }
    Ok(lines)
}

/// The processes measured: the server, containerd, and the shims of this node's containerd.
fn process_groups(server: u32, socket: &Path) -> Vec<(&'static str, Vec<u32>)> {
    let address = socket.display().to_string();
    let ours = processes_with(&address);
    let pick = |program: &str| -> Vec<u32> {
        ours.iter()
            .filter(|(_, p)| p.ends_with(program))
            .map(|(pid, _)| *pid)
            .collect()
    };
    let containerd = processes_with(
        &socket
            .parent()
            .map(|d| d.join("config.toml"))
            .unwrap_or_default()
            .display()
            .to_string(),
    )
    .into_iter()
    .filter(|(_, p)| p.ends_with("containerd"))
    .map(|(pid, _)| pid)
    .collect();
    vec![
        (
            "skiff server (API, controllers, scheduler, agent)",
            vec![server],
        ),
        ("containerd", containerd),
        ("containerd shims", pick("containerd-shim-runc-v2")),
    ]
}

/// One raw CRI start of `pod`: sandbox, container, start; returns its duration and sandbox id.
async fn raw_start(
    runtime: &skiff_agent::runtime::cri::Cri,
    pod: &Pod,
    logs: &Path,
    slice: &str,
) -> anyhow::Result<(Duration, String)> {
    use skiff_agent::pods::config;
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("no container")?
        .clone();
    let no_dns = skiff_agent::pods::dns::ClusterDns {
        server: None,
        domain: String::new(),
    };
    let start = Instant::now();
    let sandbox_config = config::sandbox("bench-raw", pod, 0, logs, slice, &no_dns);
    let sandbox = runtime.run_sandbox(sandbox_config.clone()).await?;
    let container_config =
        config::container("bench-raw", pod, &container, 0, Vec::new(), Vec::new());
    let id = runtime
        .create_container(&sandbox, container_config, sandbox_config)
        .await?;
    runtime.start_container(&id).await?;
    Ok((start.elapsed(), sandbox))
}

/// Runs the benchmark.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let data: PathBuf = scratch.path().join("server");
    let node_name = format!("bench-{}", std::process::id());
    let result = measure(&options, &data, &node_name).await;
    reset_node(&data, "pods");
    result
}

/// Whatever happened: the benchmark's node's pods, network and containerd go.
pub(super) fn reset_node(data: &Path, bench: &str) {
    let reset = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(["reset", "--data-dir"])
            .arg(data)
            .status()
    });
    if !reset.is_ok_and(|s| s.success()) {
        eprintln!(
            "bench {bench}: `skiff reset --data-dir {}` failed",
            data.display()
        );
    }
}

async fn measure(options: &Options, data: &Path, node_name: &str) -> anyhow::Result<()> {
    let (server, client) = start_server_with(
        data,
        None,
        &[
            "--node-name",
            node_name,
            "--agent-port",
            "0",
            "--cluster-cidr",
            "10.238.0.0/16",
            "--service-cidr",
            "10.239.0.0/16",
        ],
    )?;
    let pid = server.child.id();
    wait_ready(&client, node_name).await?;
    let socket = data.join("agent/containerd/containerd.sock");
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("idle, no pods ({} s):", options.idle_seconds);
    for line in idle(&process_groups(pid, &socket), options.idle_seconds).await? {
        println!("  {line}");
    }

    // Raw CRI, one pod at a time, the agent's own configs (under another node's labels, so
    // the agent leaves them alone).
    let runtime = skiff_agent::runtime::cri::Cri::new(&socket)?;
    let logs = data.join("agent/logs");
    let slice = format!("skiff-{}", skiff_agent::network::suffix(node_name));
    let mut raw = Vec::new();
    let mut sandboxes = Vec::new();
    for i in 0..options.pods {
        let (took, sandbox) =
            raw_start(&runtime, &pod(&format!("raw-{i}"))?, &logs, &slice).await?;
        raw.push(took);
        sandboxes.push(sandbox);
    }
    for sandbox in &sandboxes {
        runtime.stop_sandbox(sandbox).await?;
        runtime.remove_sandbox(sandbox).await?;
    }
    raw.sort();

    // Through the API: create → Running seen by a watch, one pod at a time.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut through_api = Vec::new();
    for i in 0..options.pods {
        let name = format!("bench-{i}");
        let mut spec = pod(&name)?;
        spec.metadata.uid = None;
        spec.metadata.namespace = None;
        let watch = pods
            .watch(
                &WatchParams::default().fields(&format!("metadata.name={name}")),
                "0",
            )
            .await?;
        let start = Instant::now();
        pods.create(&PostParams::default(), &spec).await?;
        let mut watch = watch.boxed();
        let deadline = Duration::from_secs(60);
        let running = tokio::time::timeout(deadline, async {
            while let Some(event) = watch.next().await {
                if let Ok(WatchEvent::Modified(pod)) = event
                    && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(running, Ok(true)) {
            anyhow::bail!("pod {name} did not run within {deadline:?}");
        }
        through_api.push(start.elapsed());
    }
    through_api.sort();
    let (raw50, raw99) = (quantile(&raw, 0.5), quantile(&raw, 0.99));
    let (api50, api99) = (quantile(&through_api, 0.5), quantile(&through_api, 0.99));
    println!(
        "pod start, one at a time ({} pods): raw CRI p50 {} p99 {}; through skiff (create → Running seen by a watch) p50 {} p99 {}; p99 ratio {:.2}",
        options.pods,
        ms(raw50),
        ms(raw99),
        ms(api50),
        ms(api99),
        api99.as_secs_f64() / raw99.as_secs_f64().max(1e-9)
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "idle, {} pods running ({} s):",
        options.pods, options.idle_seconds
    );
    for line in idle(&process_groups(pid, &socket), options.idle_seconds).await? {
        println!("  {line}");
    }
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await?;
    drop(server);
    Ok(())
}

/// Waits until the node is Ready (its agent registered and its network is up).
pub(super) async fn wait_ready(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..300 {
        if let Ok(node) = nodes.get(name).await {
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready && node.spec.and_then(|s| s.pod_cidr).is_some() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the node {name} did not become Ready")
}
