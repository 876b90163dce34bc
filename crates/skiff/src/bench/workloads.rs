//! The workload controllers' benchmark: a real `skiff server` without controllers (its scheduler
//! inside), `skiff controllers` as a child process of its own (so its CPU and memory are its
//! own), and simulated nodes run by this process, all over HTTPS.
//!
//! 1. A Deployment of `replicas` pods becomes Available, then a rolling update of it finishes;
//!    each is timed beside the pure API cost of the same pod writes made directly by 64 clients
//!    (create, bind, Running status; for the update also the graceful delete and the final one
//!    of every old pod). The ratio is direct time ÷ controller time (1 would mean the
//!    controllers cost nothing on top of the writes they cause).
//! 2. The controllers' idle CPU and RSS with no Deployment, then with `deployments` one-replica
//!    Deployments settled: periodic work that grows with the objects would show as idle CPU
//!    growing with them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::api::{cpu_seconds, rss_mib, start_server};

/// Benchmark settings.
pub struct Options {
    /// Simulated nodes.
    pub nodes: usize,
    /// Replicas of the measured Deployment.
    pub replicas: usize,
    /// One-replica Deployments held for the idle figures.
    pub deployments: usize,
    /// Seconds each idle measurement lasts.
    pub idle_seconds: u64,
}

/// `skiff controllers` as a child process, killed when dropped.
struct Controllers(Child);

impl Drop for Controllers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-bench-workloads-")
        .tempdir_in("/var/tmp")?;
    let data = scratch.path().join("server");
    let (server, client) = start_server(&data, None, &["--no-controllers"])?;
    let controllers = Controllers(
        Command::new(std::env::current_exe()?)
            .arg("controllers")
            .arg("--kubeconfig")
            .arg(data.join("admin.kubeconfig"))
            .stdout(Stdio::null())
            .spawn()?,
    );
    let pid = controllers.0.id();
    let (stop_nodes, nodes_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim = tokio::spawn(skiff_sim_nodes::run(
        client.clone(),
        skiff_sim_nodes::Options {
            count: options.nodes,
            prefix: "sim-".into(),
            shape: skiff_sim_nodes::Shape::default(),
        },
        async {
            let _ = nodes_stopped.await;
        },
    ));
    wait_for_nodes(&client, options.nodes).await?;
    for namespace in ["bench", "direct"] {
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await?;
    }
    // The controllers settle (service accounts, root CA in the new namespaces).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_empty = idle(pid, options.idle_seconds).await?;

    // 1. A Deployment rolled out and updated, beside the same pod writes made directly.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bench");
    let start = Instant::now();
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", options.replicas, "busybox:1"),
        )
        .await?;
    settled(&deployments, "web", options.replicas).await?;
    let rollout = start.elapsed();
    let start = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:2"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    settled(&deployments, "web", options.replicas).await?;
    let update = start.elapsed();
    let direct = Direct {
        pods: Api::namespaced(client.clone(), "direct"),
        nodes: options.nodes,
    };
    let (direct_create, direct_replace) = direct.measure(options.replicas).await?;
    println!(
        "workloads: {} nodes; a {}-replica Deployment Available in {:.2} s, the same pod writes direct {:.2} s: ratio {:.2}",
        options.nodes,
        options.replicas,
        rollout.as_secs_f64(),
        direct_create.as_secs_f64(),
        direct_create.as_secs_f64() / rollout.as_secs_f64(),
    );
    println!(
        "  its rolling update (25% surge, 25% unavailable) done in {:.2} s, the same pod writes direct {:.2} s: ratio {:.2}",
        update.as_secs_f64(),
        direct_replace.as_secs_f64(),
        direct_replace.as_secs_f64() / update.as_secs_f64(),
    );
    // Nothing of part 1 may still be going on during part 2's idle measurement: the measured
    // Deployment gone with its pods, the direct pods (on nodes nobody runs) deleted at once.
    deployments
        .delete("web", &DeleteParams::foreground())
        .await?;
    direct
        .pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await?;
    let pods: Api<Pod> = Api::all(client.clone());
    let start = Instant::now();
    while !pods
        .list_metadata(&ListParams::default())
        .await?
        .items
        .is_empty()
    {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the measured Deployment's pods were not gone in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. Idle with many Deployments.
    let start = Instant::now();
    futures::stream::iter(0..options.deployments)
        .map(|i| {
            let deployments = deployments.clone();
            async move {
                deployments
                    .create(
                        &PostParams::default(),
                        &deployment(&format!("d{i}"), 1, "busybox:1"),
                    )
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()?;
    let wanted = options.deployments;
    loop {
        let available = deployments
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    == 1
            })
            .count();
        if available == wanted {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "{available} of {wanted} Deployments available after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_full = idle(pid, options.idle_seconds).await?;
    println!(
        "  {wanted} one-replica Deployments available in {:.1} s; the controllers idle: {:.2} % of a core and {:.0} MiB RSS with none, {:.2} % and {:.0} MiB with them",
        settled_in.as_secs_f64(),
        idle_empty.0,
        idle_empty.1,
        idle_full.0,
        idle_full.1,
    );
    let _ = stop_nodes.send(());
    sim.await??;
    drop(controllers);
    drop(server);
    Ok(())
}

/// The controllers' CPU (% of a core) and RSS (MiB) over `seconds` of nothing happening.
async fn idle(pid: u32, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let pid_text = pid.to_string();
    let before = cpu_seconds(&pid_text)?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = cpu_seconds(&pid_text)? - before;
    Ok((used * 100.0 / seconds as f64, rss_mib(pid)?.0))
}

async fn wait_for_nodes(client: &Client, count: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    while nodes
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len()
        < count
    {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the simulated nodes did not register"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Their status writes land after their creates.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

fn deployment(name: &str, replicas: usize, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}},
        },
    }))
    .unwrap_or_default()
}

/// Whether the Deployment has rolled out: every replica updated and available, none else.
async fn settled(api: &Api<Deployment>, name: &str, replicas: usize) -> anyhow::Result<()> {
    let replicas = i32::try_from(replicas)?;
    let start = Instant::now();
    loop {
        let deployment = api.get(name).await?;
        let status = deployment.status.clone().unwrap_or_default();
        if status.observed_generation >= deployment.metadata.generation
            && status.updated_replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.replicas == Some(replicas)
        {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "{name} did not roll out in 10 minutes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same pod writes as a rollout causes, made directly by 64 clients.
struct Direct {
    pods: Api<Pod>,
    nodes: usize,
}

impl Direct {
    /// (create + bind + Running status of `count` pods; the same for `count` new pods plus the
    /// graceful and the final delete of the old ones).
    async fn measure(&self, count: usize) -> anyhow::Result<(Duration, Duration)> {
        let start = Instant::now();
        self.each(count, |this, i| async move {
            this.start_pod(&format!("old-{i}"), i).await
        })
        .await?;
        let create = start.elapsed();
        let start = Instant::now();
        self.each(count, |this, i| async move {
            this.start_pod(&format!("new-{i}"), i).await?;
            this.delete_pod(&format!("old-{i}")).await
        })
        .await?;
        let replace = start.elapsed();
        Ok((create, replace))
    }

    async fn each<'a, F, Fut>(&'a self, count: usize, work: F) -> anyhow::Result<()>
    where
        F: Fn(&'a Self, usize) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        futures::stream::iter(0..count)
            .map(|i| work(self, i))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()
            .map(drop)
    }

    async fn start_pod(&self, name: &str, i: usize) -> anyhow::Result<()> {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "direct"}},
            "spec": {"schedulerName": "none", "containers": [{"name": "web", "image": "busybox:1"}]},
        }))?;
        self.pods.create(&PostParams::default(), &pod).await?;
        // A node nobody runs: the simulated nodes would write the status themselves.
        let node = format!("direct-{}", i % self.nodes.max(1));
        let binding: Binding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }))?;
        let _: serde_json::Value = self
            .pods
            .create_subresource("binding", name, &PostParams::default(), &binding)
            .await
            .or_else(|e| match e {
                // The bind answers a Status, which this typed call cannot always decode.
                kube::Error::SerdeError(_) => Ok(json!({})),
                other => Err(other),
            })?;
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}]}});
        self.pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .context("the Running status")?;
        Ok(())
    }

    async fn delete_pod(&self, name: &str) -> anyhow::Result<()> {
        match self.pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        match self
            .pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}
