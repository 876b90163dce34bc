//! The API benchmark: a real `skiff server` child process (embedded SQLite store) measured
//! through HTTPS with kube-rs clients, beside the store's own rate measured in the same run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_store::Store;
use skiff_store::sqlite::SqliteStore;

/// Benchmark settings.
pub struct Options {
    pub seconds: u64,
    pub watchers: usize,
    pub pods: usize,
    pub objects: usize,
    pub dependents: usize,
}

struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's resident memory: (all, anonymous) in MiB. File-backed pages (SQLite's
/// memory-mapped database) are the difference: the kernel reclaims them under pressure.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name}"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

fn start_server(dir: &Path) -> anyhow::Result<(ServerProcess, kube::Client)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["server", "--https-port", &port.to_string(), "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let kubeconfig = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("kubeconfig: ").map(str::to_string))
        .context("the server did not print its kubeconfig")?;
    std::thread::spawn(move || lines.for_each(drop));
    let process = ServerProcess { child };
    let config = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let options = kube::config::KubeConfigOptions::default();
    let config =
        futures::executor::block_on(kube::Config::from_custom_kubeconfig(config, &options))?;
    Ok((process, kube::Client::try_from(config)?))
}

fn config_map(name: String) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "data": {"payload": "x".repeat(700)},
    }))?)
}

async fn create_rate(
    api: &Api<ConfigMap>,
    clients: usize,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (api, stop, count, tag) = (api.clone(), stop.clone(), count.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                api.create(
                    &PostParams::default(),
                    &config_map(format!("{tag}-{c}-{i}"))?,
                )
                .await?;
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

async fn create_many<K, F>(api: &Api<K>, total: usize, make: F) -> anyhow::Result<()>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: Fn(usize) -> anyhow::Result<K> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    futures::stream::iter(0..total)
        .map(|i| {
            let (api, make) = (api.clone(), make.clone());
            async move {
                api.create(&PostParams::default(), &make(i)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn watch_latency(
    api: &Api<ConfigMap>,
    watchers: usize,
    events: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let marker = api
        .create(&PostParams::default(), &config_map("watch-start".into())?)
        .await?;
    let rv = marker
        .metadata
        .resource_version
        .context("no resourceVersion")?;
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let api = api.clone();
        let stream = api
            .watch(
                &WatchParams::default().labels("bench=watch").timeout(290),
                &rv,
            )
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = Vec::with_capacity(events);
            while seen.len() < events {
                match stream.try_next().await? {
                    Some(WatchEvent::Added(cm)) => {
                        seen.push((cm.metadata.name.unwrap_or_default(), Instant::now()))
                    }
                    Some(_) => {}
                    None => anyhow::bail!("watch ended early"),
                }
            }
            anyhow::Ok(seen)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut acked = HashMap::new();
    for i in 0..events {
        let mut cm = config_map(format!("watched-{i}"))?;
        cm.metadata.labels = Some([("bench".to_string(), "watch".to_string())].into());
        api.create(&PostParams::default(), &cm).await?;
        acked.insert(format!("watched-{i}"), Instant::now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = Vec::new();
    for task in tasks {
        for (name, at) in task.await?? {
            samples.push(at.saturating_duration_since(acked[&name]));
        }
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Ok((pick(0.5), pick(0.99)))
}

/// Dependents deleted per second by the garbage collector after their owner's deletion.
async fn collection_rate(api: &Api<ConfigMap>, dependents: usize) -> anyhow::Result<f64> {
    if dependents == 0 {
        return Ok(0.0);
    }
    let owner = api
        .create(&PostParams::default(), &config_map("owner".into())?)
        .await?;
    let uid = owner.metadata.uid.context("no uid")?;
    create_many(api, dependents, move |i| {
        let mut cm = config_map(format!("dependent-{i}"))?;
        cm.metadata.labels = Some([("bench".to_string(), "gc".to_string())].into());
        cm.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: uid.clone(),
            ..OwnerReference::default()
        }]);
        Ok(cm)
    })
    .await?;
    let start = Instant::now();
    api.delete("owner", &DeleteParams::background()).await?;
    let left = ListParams::default().labels("bench=gc");
    while !api.list_metadata(&left).await?.items.is_empty() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "the garbage collector did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(dependents as f64 / start.elapsed().as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-bench-api-")
        .tempdir_in("/var/tmp")?;
    let duration = Duration::from_secs(options.seconds);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&scratch.path().join("baseline"))?);
    let store_one = super::store::write_rate(&store, 1, duration, "one").await?;
    let store_many = super::store::write_rate(&store, 64, duration, "many").await?;
    drop(store);
    eprintln!("store: {store_one:.0}/s (1 writer), {store_many:.0}/s (64)");

    let (server, client) = start_server(&scratch.path().join("server"))?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_mib(pid)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["bench", "bench-pods", "bench-many", "bench-gc"] {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    let api_one = create_rate(&cms, 1, duration, "one").await?;
    let api_many = create_rate(&cms, 64, duration, "many").await?;
    eprintln!("api: {api_one:.0} creates/s (1 client), {api_many:.0}/s (64)");

    let (watch_p50, watch_p99) = watch_latency(&cms, options.watchers, 100).await?;
    eprintln!(
        "watch with {} watchers: p50 {watch_p50:?}, p99 {watch_p99:?}",
        options.watchers
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-pods");
    create_many(&pods, options.pods, |i| {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
        }))?)
    })
    .await?;
    let mut list_times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let listed = pods.list(&ListParams::default()).await?;
        list_times.push(start.elapsed());
        anyhow::ensure!(
            listed.items.len() == options.pods,
            "listed {} pods",
            listed.items.len()
        );
    }
    list_times.sort();
    eprintln!("LIST {} pods: median {:?}", options.pods, list_times[2]);

    let gc_rate = collection_rate(
        &Api::namespaced(client.clone(), "bench-gc"),
        options.dependents,
    )
    .await?;
    eprintln!("garbage collector: {gc_rate:.0} dependents deleted/s");

    let many: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-many");
    create_many(&many, options.objects, |i| config_map(format!("cm-{i}"))).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = rss_mib(pid)?;
    drop(server);

    println!("| measure | value | ratio |");
    println!("|---|---|---|");
    println!("| store creates/s, 1 writer (same disk, same run) | {store_one:.0} | 1.00 |");
    println!(
        "| API creates/s over HTTPS, 1 client | {api_one:.0} | {:.2} of the store |",
        api_one / store_one
    );
    println!("| store creates/s, 64 writers | {store_many:.0} | 1.00 |");
    println!(
        "| API creates/s over HTTPS, 64 clients | {api_many:.0} | {:.2} of the store |",
        api_many / store_many
    );
    println!(
        "| watch latency, {} watchers, p50 / p99 | {} / {} | p99 is {:.4} of the 1 s SLO |",
        options.watchers,
        ms(watch_p50),
        ms(watch_p99),
        watch_p99.as_secs_f64()
    );
    println!(
        "| LIST {} pods, median / slowest of 5 | {} / {} | slowest is {:.4} of the 30 s SLO |",
        options.pods,
        ms(list_times[2]),
        ms(list_times[4]),
        list_times[4].as_secs_f64() / 30.0
    );
    println!(
        "| garbage collector: dependents deleted/s after their owner ({}) | {gc_rate:.0} | {:.2} of API creates/s with 1 client |",
        options.dependents,
        gc_rate / api_one
    );
    println!(
        "| server RSS idle (anonymous) | {:.0} MiB ({:.0} MiB) | |",
        rss_idle.0, rss_idle.1
    );
    println!(
        "| server RSS with {} ConfigMaps (+{} pods) (anonymous) | {:.0} MiB ({:.0} MiB) | |",
        options.objects, options.pods, rss_loaded.0, rss_loaded.1
    );
    Ok(())
}
