//! The Services benchmark, on a real node (root, containerd): a `skiff server` child process
//! with its agent (proxy inside) and its cluster DNS, one web pod behind a ClusterIP Service and
//! one client pod. Figures, all from one run:
//! - from the client pod's network namespace (`nsenter`, running `skiff debug net-probe`):
//!   HTTP GET latency through the ClusterIP beside the same GET straight to the pod IP (ratio),
//!   and cluster DNS queries per second with their p50/p99;
//! - time from an EndpointSlice change (the API write) to the rules in place (`nft` done), with
//!   `small` then `services` selectorless Services of `endpoints` endpoints each, measured on a
//!   proxy run by this process (the agent's runs too): proportional to the change means the
//!   same p99 with ten times the Services;
//! - CPU and memory of `skiff proxy` and `skiff dns` run as processes of their own while
//!   nothing changes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

use super::api::{cpu_seconds, ms, rss_mib, start_server_with};
use super::pods::{processes_with, quantile, reset_node, wait_ready};

/// Benchmark settings.
pub struct Options {
    /// Services held for the large measurement.
    pub services: usize,
    /// Services held for the small one.
    pub small: usize,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// Endpoint changes measured per size.
    pub changes: usize,
    /// Seconds of DNS queries, and of each idle measurement.
    pub seconds: u64,
}

const CLUSTER_CIDR: &str = "10.236.0.0/16";
const SERVICE_CIDR: &str = "10.237.0.0/16";
const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 237, 0, 10);
/// The client pod's sleep, unique enough to find its process by.
const CLIENT_SLEEP: &str = "987654321";

/// A child process stopped with SIGTERM (so a proxy removes its rules) when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let data: PathBuf = scratch.path().join("server");
    let node_name = format!("bench-svc-{}", std::process::id());
    let table = format!("skiff-proxy-bench{}", std::process::id());
    let result = measure(&options, scratch.path(), &data, &node_name, &table).await;
    skiff_proxy::remove(&table).await;
    reset_node(&data, "services");
    result
}

/// Packs busybox (from the host's busybox-static) as `skiff-bench/busybox:1` and side-loads it.
fn image(scratch: &Path, data: &Path) -> anyhow::Result<()> {
    let root = scratch.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("this benchmark needs /bin/busybox (Debian's busybox-static)")?;
    for applet in ["sh", "httpd", "sleep", "hostname", "mkdir"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let archive = scratch.join("busybox.tar");
    let exe = std::env::current_exe()?;
    let packed = Command::new(&exe)
        .args(["images", "pack", "--rootfs"])
        .arg(&root)
        .args(["--name", "docker.io/skiff-bench/busybox:1", "--output"])
        .arg(&archive)
        .args(["--entrypoint", "/bin/sh"])
        .status()?;
    anyhow::ensure!(packed.success(), "packing the busybox image failed");
    let imported = Command::new(&exe)
        .args(["images", "import", "--data-dir"])
        .arg(data)
        .arg(&archive)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(imported.success(), "importing the busybox image failed");
    Ok(())
}

async fn measure(
    options: &Options,
    scratch: &Path,
    data: &Path,
    node_name: &str,
    table: &str,
) -> anyhow::Result<()> {
    let (_server, client) = start_server_with(
        data,
        None,
        &[
            "--node-name",
            node_name,
            "--agent-port",
            "0",
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--service-cidr",
            SERVICE_CIDR,
        ],
    )?;
    wait_ready(&client, node_name).await?;
    image(scratch, data)?;
    from_a_pod(&client).await?;

    // The proxy under measurement, fed like the agent's.
    let (synced, mut syncs) = mpsc::unbounded_channel::<Instant>();
    let proxy = tokio::spawn(skiff_proxy::run_reporting(
        client.clone(),
        skiff_proxy::Options {
            node_name: "bench-proxy".into(),
            table: table.to_string(),
            cluster_cidr: CLUSTER_CIDR.into(),
            bridge: None,
        },
        move |_| {
            let _ = synced.send(Instant::now());
        },
    ));
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let mut held = 0;
    for size in [options.small, options.services] {
        create_services(&client, held, size, options.endpoints).await?;
        held = size;
        settle(&mut syncs).await;
        let mut latencies = Vec::new();
        for change in 0..options.changes {
            let which = change % size;
            while syncs.try_recv().is_ok() {}
            let start = Instant::now();
            // Each pass over the Services moves their first endpoint there and back.
            move_endpoint(&client, which, change / size, options.endpoints).await?;
            let applied = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(at) = syncs.recv().await {
                    if at > start {
                        return Some(at);
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
            .context("the proxy did not apply a change within 10 s")?;
            latencies.push(applied - start);
        }
        latencies.sort();
        println!(
            "endpoint change → rules in place, {size} Services × {} endpoints ({} changes): p50 {} p99 {}",
            options.endpoints,
            options.changes,
            ms(quantile(&latencies, 0.5)),
            ms(quantile(&latencies, 0.99))
        );
    }
    proxy.abort();

    // Idle: the proxy and the DNS as processes of their own, nothing changing.
    let kubeconfig = data.join("admin.kubeconfig");
    let exe = std::env::current_exe()?;
    let proxy_node = format!("bench-idle-{}", std::process::id());
    let alone = Stopped(
        Command::new(&exe)
            .arg("proxy")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node-name", &proxy_node, "--cluster-cidr", CLUSTER_CIDR])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let dns = Stopped(
        Command::new(&exe)
            .arg("dns")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--listen",
                "127.0.0.2:0",
                "--cluster-dns",
                &DNS_IP.to_string(),
            ])
            .args(["--networks", &format!("{CLUSTER_CIDR},{SERVICE_CIDR}")])
            .args(["--dns-upstream", "none"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pids = [("skiff proxy", alone.0.id()), ("skiff dns", dns.0.id())];
    let before: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| cpu_seconds(&pid.to_string()).unwrap_or_default())
        .collect();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    println!(
        "idle with {} Services × {} endpoints ({} s):",
        options.services, options.endpoints, options.seconds
    );
    for ((name, pid), before) in pids.iter().zip(before) {
        let used = cpu_seconds(&pid.to_string()).unwrap_or_default() - before;
        let rss = rss_mib(*pid).map(|r| r.0).unwrap_or_default();
        println!(
            "  {name}: {:.2} % of a core, {rss:.1} MiB resident",
            used * 100.0 / options.seconds as f64
        );
    }
    drop(alone);
    drop(dns);
    Ok(())
}

/// Creates Services `from..to` in `bench`, selectorless, each with one EndpointSlice.
async fn create_services(
    client: &Client,
    from: usize,
    to: usize,
    endpoints: usize,
) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), "bench");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "bench");
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(from..to)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                let service: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                }))?;
                services.create(&PostParams::default(), &service).await?;
                slices
                    .create(&PostParams::default(), &slice(i, 0, endpoints)?)
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Service `i`'s slice, version `version` (its first endpoint moves with each version).
fn slice(i: usize, version: usize, endpoints: usize) -> anyhow::Result<EndpointSlice> {
    let address = |j: usize| {
        let base = u32::from(Ipv4Addr::new(10, 250, 0, 0));
        let offset = if j == 0 { (version % 2) * 50_000 } else { 0 };
        Ipv4Addr::from(base + (i * endpoints + j + offset) as u32).to_string()
    };
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "labels": {
            "kubernetes.io/service-name": format!("svc-{i}"),
            "endpointslice.kubernetes.io/managed-by": "skiff-bench",
        }},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": (0..endpoints)
            .map(|j| json!({"addresses": [address(j)], "conditions": {"ready": true}}))
            .collect::<Vec<_>>(),
    }))?)
}

async fn move_endpoint(
    client: &Client,
    i: usize,
    version: usize,
    endpoints: usize,
) -> anyhow::Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "bench");
    let wanted = slice(i, version + 1, endpoints)?;
    slices
        .patch(
            &format!("svc-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": wanted.endpoints})),
        )
        .await?;
    Ok(())
}

/// Waits until the proxy has been quiet for a second.
async fn settle(syncs: &mut mpsc::UnboundedReceiver<Instant>) {
    while tokio::time::timeout(Duration::from_secs(1), syncs.recv())
        .await
        .is_ok_and(|s| s.is_some())
    {}
}

/// The client pod's figures: ClusterIP versus pod IP latency, and DNS.
async fn from_a_pod(client: &Client) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "skiff-bench/busybox:1", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]},
    }))?;
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": "client"},
        "spec": {"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "skiff-bench/busybox:1", "imagePullPolicy": "Never",
                "command": ["sleep", CLIENT_SLEEP]}]},
    }))?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    pods.create(&PostParams::default(), &web).await?;
    pods.create(&PostParams::default(), &probe).await?;
    let created = services.create(&PostParams::default(), &service).await?;
    let cluster_ip = created
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;
    let mut pod_ip = None;
    for _ in 0..300 {
        let web = pods.get("web").await?;
        let ready = web
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let running =
            pods.get("client").await?.status.and_then(|s| s.phase) == Some("Running".into());
        if ready && running {
            pod_ip = web.status.and_then(|s| s.pod_ip);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pod_ip = pod_ip.context("the web and client pods did not become ready")?;
    // The rules follow readiness within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = processes_with(&format!("sleep {CLIENT_SLEEP}"))
        .first()
        .map(|(pid, _)| *pid)
        .context("the client pod's process is not found")?;
    let output = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(std::env::current_exe()?)
        .args(["debug", "net-probe", "--dns", &format!("{DNS_IP}:53")])
        .args(["--name", "web.default.svc.cluster.local", "--seconds", "5"])
        .args([
            "--http",
            &format!("{pod_ip}:8080,{cluster_ip}:80"),
            "--requests",
            "500",
        ])
        .output()
        .context("running nsenter (util-linux)")?;
    anyhow::ensure!(
        output.status.success(),
        "the probe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let dns = &report["dns"];
    println!(
        "cluster DNS from a pod (8 clients, 5 s): {:.0} queries/s, p50 {} µs, p99 {} µs, {} failed",
        dns["qps"].as_f64().unwrap_or_default(),
        dns["p50_us"],
        dns["p99_us"],
        dns["failures"]
    );
    let http = report["http"].as_array().cloned().unwrap_or_default();
    if let [direct, through] = http.as_slice() {
        let ratio = |key: &str| {
            through[key].as_f64().unwrap_or_default() / direct[key].as_f64().unwrap_or(1.0).max(1.0)
        };
        println!(
            "HTTP GET from a pod (500 each, interleaved): pod IP p50 {} µs p99 {} µs; ClusterIP p50 {} µs p99 {} µs; ratio p50 {:.2}, p99 {:.2} ({} + {} failed)",
            direct["p50_us"],
            direct["p99_us"],
            through["p50_us"],
            through["p99_us"],
            ratio("p50_us"),
            ratio("p99_us"),
            direct["failures"],
            through["failures"]
        );
    }
    Ok(())
}
