//! The scheduling benchmark: a real `skiff server` child process (its scheduler inside, over
//! the embedded store), simulated nodes run by this process through HTTPS, and pending pods
//! created through HTTPS by 64 clients. A watch sees each pod's create, its binding and its
//! Running status; the figures are pods bound per second end to end (first create to last
//! binding), the same to Running, per-pod latencies, CPU per pod and the server's memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use super::api::{CpuMeter, ms, rss_mib, start_server};

/// Benchmark settings.
pub struct Options {
    /// Cluster sizes to measure, one server each.
    pub nodes: Vec<usize>,
    /// Pending pods created per measurement.
    pub pods: usize,
}

/// When each pod was seen created, bound and running.
#[derive(Default, Clone, Copy)]
struct Seen {
    created: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Runs the benchmark for every cluster size.
pub async fn run(options: Options) -> anyhow::Result<()> {
    for &nodes in &options.nodes {
        decisions(nodes, options.pods)?;
        one(nodes, options.pods).await?;
    }
    Ok(())
}

/// The scheduler's own ceiling: placements per second of `decide::place` in memory (no API),
/// each placement assumed in the cache as the scheduler does.
fn decisions(node_count: usize, pod_count: usize) -> anyhow::Result<()> {
    use rand::SeedableRng;
    let mut cache = skiff_scheduler::cache::Cache::default();
    for i in 0..node_count {
        let node = skiff_sim_nodes::node::node(&format!("sim-{i}"), i);
        let mut node: Node = serde_json::from_value(node)?;
        let status = skiff_sim_nodes::node::status(
            &format!("sim-{i}"),
            i,
            &skiff_sim_nodes::Shape::default(),
            "2026-01-01T00:00:00Z",
        );
        node.status = Some(serde_json::from_value(status["status"].clone())?);
        cache.upsert_node(node);
    }
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut next = 0;
    let start = Instant::now();
    for i in 0..pod_count {
        let mut candidate = skiff_scheduler::filters::Candidate::new(&pod);
        let node = skiff_scheduler::decide::place(&mut candidate, &cache, &mut next, &mut rng)
            .map_err(|e| anyhow::anyhow!("{}", skiff_scheduler::message::upstream(&e)))?;
        cache.assign(&format!("bench/p{i}"), &pod, &node);
    }
    println!(
        "schedule: {node_count} nodes, {pod_count} pods placed in memory (the scheduler's decisions alone, no API): {:.0}/s",
        pod_count as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn one(node_count: usize, pod_count: usize) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-bench-schedule-")
        .tempdir_in("/var/tmp")?;
    let (server, client) = start_server(&scratch.path().join("server"), None, &[])?;
    let pid = server.child.id();
    let (stop_nodes, nodes_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = tokio::spawn(skiff_sim_nodes::run(
        client.clone(),
        skiff_sim_nodes::Options {
            count: node_count,
            prefix: "sim-".into(),
            shape: skiff_sim_nodes::Shape::default(),
        },
        async {
            let _ = nodes_stopped.await;
        },
    ));
    let registering = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let ready = nodes
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        if ready >= node_count {
            break;
        }
        anyhow::ensure!(
            registering.elapsed() < Duration::from_secs(600),
            "{ready} of {node_count} nodes registered in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let registered_in = registering.elapsed();
    // The nodes' status writes land after their creates; give the scheduler's cache a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_nodes = rss_mib(pid)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "bench"}}))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let version = pods
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("a list without resourceVersion")?;
    // The measurement decodes what it reads and no more (the simulated nodes' lean pods).
    let lean: Api<skiff_sim_nodes::lean::Pod> = Api::namespaced(client.clone(), "bench");
    let mut watch = lean
        .watch(&WatchParams::default().timeout(290), &version)
        .await?
        .boxed();
    let watcher = tokio::spawn(async move {
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut running = 0;
        while let Some(event) = watch.next().await {
            let (WatchEvent::Added(pod) | WatchEvent::Modified(pod)) = event? else {
                continue;
            };
            let now = Instant::now();
            let entry = seen.entry(pod.name_any()).or_default();
            entry.created.get_or_insert(now);
            if pod.spec.node_name.is_some() {
                entry.bound.get_or_insert(now);
            }
            let is_running = pod.status.phase.as_deref() == Some("Running");
            if is_running && entry.running.is_none() {
                entry.running = Some(now);
                running += 1;
                if running == pod_count {
                    break;
                }
            }
        }
        anyhow::Ok(seen)
    });
    let meter = CpuMeter::start(pid)?;
    let start = Instant::now();
    futures::stream::iter(0..pod_count)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let created_in = start.elapsed();
    let seen = tokio::time::timeout(Duration::from_secs(300), watcher)
        .await
        .context("not every pod ran within 5 minutes")???;
    let (server_us, client_us) = meter.per(pod_count as f64)?;
    let rss_end = rss_mib(pid)?;
    let last = |pick: fn(&Seen) -> Option<Instant>| {
        seen.values().filter_map(pick).max().map(|t| t - start)
    };
    let bound_in = last(|s| s.bound).context("no pod was bound")?;
    let running_in = last(|s| s.running).context("no pod ran")?;
    let mut to_bound: Vec<Duration> = seen
        .values()
        .filter_map(|s| Some(s.bound? - s.created?))
        .collect();
    to_bound.sort();
    let mut to_running: Vec<Duration> = seen
        .values()
        .filter_map(|s| Some(s.running? - s.created?))
        .collect();
    to_running.sort();
    let per_node: HashMap<String, usize> = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .fold(HashMap::new(), |mut counts, node| {
            *counts.entry(node).or_insert(0) += 1;
            counts
        });
    let busiest = per_node.values().max().copied().unwrap_or(0);
    println!(
        "schedule: {node_count} nodes (registered in {:.1} s), {pod_count} pods: created at {:.0}/s; bound at {:.0}/s end to end, running at {:.0}/s",
        registered_in.as_secs_f64(),
        pod_count as f64 / created_in.as_secs_f64(),
        pod_count as f64 / bound_in.as_secs_f64(),
        pod_count as f64 / running_in.as_secs_f64(),
    );
    println!(
        "  per pod: create→bound p50 {} p99 {}, create→running p50 {} p99 {}; CPU per pod: server {server_us:.0} µs, bench (clients + simulated nodes) {client_us:.0} µs",
        ms(quantile(&to_bound, 0.5)),
        ms(quantile(&to_bound, 0.99)),
        ms(quantile(&to_running, 0.5)),
        ms(quantile(&to_running, 0.99)),
    );
    println!(
        "  nodes used {}, busiest node {busiest} pods; server RSS: {:.0} MiB with the nodes, {:.0} MiB with the pods (anonymous {:.0} MiB)",
        per_node.len(),
        rss_nodes.0,
        rss_end.0,
        rss_end.1,
    );
    let _ = stop_nodes.send(());
    sim.await??;
    drop(server);
    Ok(())
}
