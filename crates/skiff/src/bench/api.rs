//! The API benchmark: a real `skiff server` child process (embedded SQLite store, or a private
//! etcd with `--etcd`) measured through HTTPS with kube-rs clients, beside the store's own rate
//! measured in the same run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use skiff_store::Store;
use skiff_store::etcd::EtcdStore;
use skiff_store::etcd_process::EtcdProcess;
use skiff_store::sqlite::SqliteStore;

/// Benchmark settings.
pub struct Options {
    pub seconds: u64,
    pub watchers: usize,
    pub pods: usize,
    pub objects: usize,
    pub dependents: usize,
    pub etcd: bool,
}

pub(super) struct ServerProcess {
    pub(super) child: Child,
    /// The admin kubeconfig the server wrote.
    pub(super) kubeconfig: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's resident memory: (all, anonymous) in MiB. File-backed pages (SQLite's
/// memory-mapped database) are the difference: the kernel reclaims them under pressure.
pub(super) fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
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

/// The server's peak resident memory (MiB) since [`reset_peak`].
fn peak_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

/// Resets the server's peak resident memory to its current one (`clear_refs` 5).
fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    Ok(())
}

/// A LIST as raw bytes (nothing decoded on the client): its duration and size.
async fn list_raw(
    client: &kube::Client,
    path: &str,
    accept: &str,
) -> anyhow::Result<(Duration, u64)> {
    let mut request = kube::core::Request::new(path).list(&ListParams::default())?;
    request.headers_mut().insert("accept", accept.parse()?);
    let start = Instant::now();
    let body = client.request_stream(request).await?;
    let bytes = futures::io::copy(body, &mut futures::io::sink()).await?;
    Ok((start.elapsed(), bytes))
}

/// Five raw LISTs: (median, slowest, size in bytes).
async fn list_raw_five(
    client: &kube::Client,
    path: &str,
    accept: &str,
) -> anyhow::Result<(Duration, Duration, u64)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let (took, bytes) = list_raw(client, path, accept).await?;
        times.push(took);
        size = bytes;
    }
    times.sort();
    Ok((times[2], times[4], size))
}

/// Starts `skiff server` without a node of its own, with `extra` arguments over `dir` (or the
/// etcd at `etcd`).
pub(super) fn start_server(
    dir: &Path,
    etcd: Option<&str>,
    extra: &[&str],
) -> anyhow::Result<(ServerProcess, kube::Client)> {
    let mut args = vec!["--no-agent"];
    args.extend_from_slice(extra);
    start_server_with(dir, etcd, &args)
}

/// Starts `skiff server` with `args` over `dir` (or the etcd at `etcd`).
pub(super) fn start_server_with(
    dir: &Path,
    etcd: Option<&str>,
    args: &[&str],
) -> anyhow::Result<(ServerProcess, kube::Client)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["server", "--https-port", &port.to_string()])
        // The cluster DNS on any free port, asking no resolver (nothing leaves the machine).
        .args(["--dns-port", "0", "--dns-upstream", "none", "--data-dir"])
        .arg(dir)
        .args(args);
    if let Some(endpoint) = etcd {
        command.args(["--datastore-endpoint", endpoint]);
    }
    let mut child = command
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
    let kubeconfig = PathBuf::from(kubeconfig);
    let client = futures::executor::block_on(crate::kubeconfig::client(&kubeconfig))?;
    let process = ServerProcess { child, kubeconfig };
    Ok((process, client))
}

fn config_map(name: String) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}, "data": {"payload": "x".repeat(700)},
    }))?)
}

/// Creates through the API: their rate, and CPU per create (µs), the server's and the clients'.
struct CreateFigures {
    rate: f64,
    server_us: f64,
    client_us: f64,
}

async fn create_rate(
    api: &Api<ConfigMap>,
    server: u32,
    clients: usize,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<CreateFigures> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu = CpuMeter::start(server)?;
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
    let created = count.load(Ordering::Relaxed) as f64;
    let (server_us, client_us) = cpu.per(created)?;
    Ok(CreateFigures {
        rate: created / start.elapsed().as_secs_f64(),
        server_us,
        client_us,
    })
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

/// CPU seconds (user + system) a process has used: `/proc/PID/stat` fields 14 and 15, in the
/// kernel's USER_HZ ticks (100 per second on Linux).
pub(super) fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').context("no command name")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU used by the server and by this process since the meter started.
pub(super) struct CpuMeter {
    server: String,
    before: (f64, f64),
}

impl CpuMeter {
    pub(super) fn start(server: u32) -> anyhow::Result<Self> {
        let server = server.to_string();
        let before = (cpu_seconds(&server)?, cpu_seconds("self")?);
        Ok(Self { server, before })
    }

    /// CPU (µs) per unit of work since the start: (the server's, this process's).
    pub(super) fn per(&self, units: f64) -> anyhow::Result<(f64, f64)> {
        let per = |seconds: f64, before: f64| (seconds - before) * 1e6 / units.max(1.0);
        Ok((
            per(cpu_seconds(&self.server)?, self.before.0),
            per(cpu_seconds("self")?, self.before.1),
        ))
    }
}

/// What the watch phase measured.
struct WatchFigures {
    p50: Duration,
    p99: Duration,
    /// p99 over events of the fastest watcher's latency, and p50 of the slowest one's.
    first_p99: Duration,
    last_p50: Duration,
    /// CPU per delivered event (one event to one watcher), in µs: the server's, the clients'.
    server_us: f64,
    client_us: f64,
    /// The server's CPU per change (however many watchers receive it), in µs.
    server_per_change_us: f64,
}

impl WatchFigures {
    /// The figures on standard error, as the run goes.
    fn print(&self, watchers: usize, how: &str) {
        eprintln!(
            "watch with {watchers} watchers {how}: p50 {:?}, p99 {:?}; per event: fastest watcher p99 {:?}, slowest p50 {:?}; CPU per delivery: server {:.1} µs, clients {:.1} µs",
            self.p50, self.p99, self.first_p99, self.last_p50, self.server_us, self.client_us
        );
    }

    /// The figures as rows of the result table.
    fn row(&self, watchers: usize, how: &str) {
        println!(
            "| watch latency, {watchers} watchers on {how}, p50 / p99 | {} / {} | p99 is {:.4} of the 1 s SLO |",
            ms(self.p50),
            ms(self.p99),
            self.p99.as_secs_f64()
        );
        println!(
            "| per event ({how}): fastest watcher's p99 / slowest watcher's p50 | {} / {} | the spread is fan-out |",
            ms(self.first_p99),
            ms(self.last_p50)
        );
        println!(
            "| CPU per delivered watch event ({how}), server / clients | {:.1} µs / {:.1} µs | server is {:.2} of the clients |",
            self.server_us,
            self.client_us,
            self.server_us / self.client_us.max(f64::EPSILON)
        );
    }
}

/// Creates from one client while `watchers` watches of another resource (Secrets, through
/// `watching`) stay open and receive nothing: a change should wake only its own resource's
/// watchers, so the server's CPU per create should stay where it is without them.
async fn creates_beside_other_watchers(
    api: &Api<ConfigMap>,
    watching: &Api<Secret>,
    server: u32,
    watchers: usize,
    duration: Duration,
) -> anyhow::Result<CreateFigures> {
    let version = watching
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("a list without resourceVersion")?;
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let stream = watching
            .watch(&WatchParams::default().timeout(290), &version)
            .await?;
        tasks.push(tokio::spawn(stream.boxed().for_each(|_| async {})));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let figures = create_rate(api, server, 1, duration, "beside").await;
    for task in &tasks {
        task.abort();
    }
    figures
}

/// Which changes each watcher of [`watch_latency`] selects.
#[derive(Clone, Copy, PartialEq)]
enum Selecting {
    /// Every change, by their common label.
    All,
    /// One object, by a field selector on its name (watcher `i` the `i % events`-th): each
    /// change reaches a few watchers and is checked by all, as each node agent selects its own
    /// pods by `spec.nodeName`.
    OneByName,
}

/// `events` labelled creates through `api`, 5 ms apart, awaited by `watchers` watches opened
/// through `watching` (another client, or the same), each selecting as `selecting` says. `tag`
/// keeps runs apart.
async fn watch_latency(
    api: &Api<ConfigMap>,
    watching: &Api<ConfigMap>,
    server: u32,
    (watchers, selecting): (usize, Selecting),
    events: usize,
    tag: &str,
) -> anyhow::Result<WatchFigures> {
    let label = format!("bench=watch-{tag}");
    let marker = api
        .create(
            &PostParams::default(),
            &config_map(format!("{tag}-watch-start"))?,
        )
        .await?;
    let rv = marker
        .metadata
        .resource_version
        .context("no resourceVersion")?;
    let mut tasks = Vec::new();
    for i in 0..watchers {
        let (params, awaited) = match selecting {
            Selecting::All => (WatchParams::default().labels(&label), events),
            Selecting::OneByName => (
                WatchParams::default()
                    .fields(&format!("metadata.name={tag}-watched-{}", i % events)),
                1,
            ),
        };
        let stream = watching.watch(&params.timeout(290), &rv).await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = Vec::with_capacity(awaited);
            while seen.len() < awaited {
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
    let cpu = CpuMeter::start(server)?;
    let mut acked = HashMap::new();
    for i in 0..events {
        let name = format!("{tag}-watched-{i}");
        let mut cm = config_map(name.clone())?;
        cm.metadata.labels = Some([("bench".to_string(), format!("watch-{tag}"))].into());
        api.create(&PostParams::default(), &cm).await?;
        acked.insert(name, Instant::now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = Vec::new();
    let mut spread: HashMap<String, (Duration, Duration)> = HashMap::new();
    for task in tasks {
        for (name, at) in task.await?? {
            let latency = at.saturating_duration_since(acked[&name]);
            samples.push(latency);
            let range = spread.entry(name).or_insert((latency, latency));
            range.0 = range.0.min(latency);
            range.1 = range.1.max(latency);
        }
    }
    let (server_us, client_us) = cpu.per(samples.len() as f64)?;
    let server_per_change_us = server_us * samples.len() as f64 / events.max(1) as f64;
    let mut firsts: Vec<Duration> = spread.values().map(|r| r.0).collect();
    let mut lasts: Vec<Duration> = spread.values().map(|r| r.1).collect();
    firsts.sort();
    lasts.sort();
    samples.sort();
    Ok(WatchFigures {
        p50: quantile(&samples, 0.5),
        p99: quantile(&samples, 0.99),
        first_p99: quantile(&firsts, 0.99),
        last_p50: quantile(&lasts, 0.5),
        server_us,
        client_us,
        server_per_change_us,
    })
}

/// The `q` quantile of sorted durations (zero when there are none).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * q) as usize]
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

pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-bench-api-")
        .tempdir_in("/var/tmp")?;
    let duration = Duration::from_secs(options.seconds);

    // With etcd, the baseline writes under its own prefix of the same etcd the server uses.
    let etcd = if options.etcd {
        let data = scratch.path().join("etcd");
        Some(tokio::task::spawn_blocking(move || EtcdProcess::start_in(&data)).await??)
    } else {
        None
    };
    let store: Arc<dyn Store> = match &etcd {
        Some(process) => Arc::new(EtcdStore::connect(process.endpoint()).await?),
        None => Arc::new(SqliteStore::open(&scratch.path().join("baseline"))?),
    };
    let store_one = super::store::write_rate(&store, 1, duration, "one").await?;
    let store_many = super::store::write_rate(&store, 64, duration, "many").await?;
    drop(store);
    eprintln!(
        "store ({}): {store_one:.0}/s (1 writer), {store_many:.0}/s (64)",
        if etcd.is_some() { "etcd" } else { "sqlite" }
    );

    // Without a scheduler: the pods listed here are never meant to be placed.
    let (server, client) = start_server(
        &scratch.path().join("server"),
        etcd.as_ref().map(EtcdProcess::endpoint),
        &["--no-scheduler"],
    )?;
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
    let one = create_rate(&cms, pid, 1, duration, "one").await?;
    let creates = create_rate(&cms, pid, 64, duration, "many").await?;
    // Each kube-rs request in flight is a TLS connection of its own; client-go's share one
    // HTTP/2 connection.
    let multiplexed: Api<ConfigMap> = Api::namespaced(
        super::multiplexed::client(&crate::kubeconfig::config(&server.kubeconfig).await?).await?,
        "bench",
    );
    let creates_h2 = create_rate(&multiplexed, pid, 64, duration, "h2").await?;
    let (api_one, api_many) = (one.rate, creates.rate);
    eprintln!(
        "api: {api_one:.0} creates/s (1 client), {api_many:.0}/s (64); CPU per create with 64 clients: server {:.0} µs, clients {:.0} µs; 64 on one HTTP/2 connection {:.0}/s",
        creates.server_us, creates.client_us, creates_h2.rate
    );

    let all = (options.watchers, Selecting::All);
    let watch = watch_latency(&cms, &cms, pid, all, 100, "own").await?;
    watch.print(options.watchers, "on a connection each (kube-rs)");
    let watch_h2 = watch_latency(&cms, &multiplexed, pid, all, 100, "h2").await?;
    watch_h2.print(options.watchers, "on one HTTP/2 connection (as client-go)");
    let by_name = (options.watchers, Selecting::OneByName);
    let watch_named = watch_latency(&cms, &multiplexed, pid, by_name, 100, "named").await?;
    watch_named.print(
        options.watchers,
        "on one HTTP/2 connection, each selecting one object by name",
    );
    eprintln!(
        "  server CPU per change, checked by all {} watchers: {:.0} µs",
        options.watchers, watch_named.server_per_change_us
    );
    let secrets: Api<Secret> = Api::namespaced(multiplexed.clone().into_client(), "bench");
    let beside =
        creates_beside_other_watchers(&cms, &secrets, pid, options.watchers, duration).await?;
    eprintln!(
        "api: 1 client beside {} watchers of Secrets: {:.0} creates/s, server CPU per create {:.0} µs (none open: {:.0} µs)",
        options.watchers, beside.rate, beside.server_us, one.server_us
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench-pods");
    create_many(&pods, options.pods, |i| {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
        }))?)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_lists = rss_mib(pid)?;
    let pods_path = "/api/v1/namespaces/bench-pods/pods";
    reset_peak(pid)?;
    let (_, one_list_bytes) = list_raw(&client, pods_path, "application/json").await?;
    let list_peak = peak_mib(pid)? - rss_before_lists.0;
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
    let raw_json = list_raw_five(&client, pods_path, "application/json").await?;
    let raw_table = list_raw_five(
        &client,
        pods_path,
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .await?;
    let raw_metadata = list_raw_five(
        &client,
        pods_path,
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_lists = rss_mib(pid)?;
    eprintln!(
        "LIST raw: JSON {:?}, Table {:?}, metadata {:?}; RSS {:.0} -> {:.0} MiB after 21 LISTs",
        raw_json.0, raw_table.0, raw_metadata.0, rss_before_lists.0, rss_after_lists.0
    );

    let gc_rate = collection_rate(
        &Api::namespaced(client.clone(), "bench-gc"),
        options.dependents,
    )
    .await?;
    eprintln!("garbage collector: {gc_rate:.0} dependents deleted/s");

    let stored_before = stored_objects(&client).await?;
    let rss_before_many = rss_mib(pid)?;
    let many: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-many");
    create_many(&many, options.objects, |i| config_map(format!("cm-{i}"))).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = rss_mib(pid)?;
    let stored_after = stored_objects(&client).await?;
    let kib_per = |mib: f64, objects: usize| mib * 1024.0 / objects.max(1) as f64;
    let marginal = kib_per(rss_loaded.1 - rss_before_many.1, options.objects);
    let overall = kib_per(rss_loaded.1 - rss_idle.1, stored_after);
    eprintln!(
        "memory: {stored_before} -> {stored_after} objects, anonymous {:.0} -> {:.0} MiB: {marginal:.2} KiB per added ConfigMap, {overall:.2} KiB per stored object",
        rss_before_many.1, rss_loaded.1
    );
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
        "| CPU per create with 64 clients, server / kube-rs clients | {:.0} µs / {:.0} µs | server is {:.2} of the clients |",
        creates.server_us,
        creates.client_us,
        creates.server_us / creates.client_us.max(f64::EPSILON)
    );
    println!(
        "| API creates/s, 64 clients on one HTTP/2 connection (client-go's way) | {:.0} | {:.2} of the store |",
        creates_h2.rate,
        creates_h2.rate / store_many
    );
    println!(
        "| CPU per create, 64 clients on one HTTP/2 connection, server / clients | {:.0} µs / {:.0} µs | server is {:.2} of the clients |",
        creates_h2.server_us,
        creates_h2.client_us,
        creates_h2.server_us / creates_h2.client_us.max(f64::EPSILON)
    );
    watch.row(options.watchers, "a TLS connection each (kube-rs)");
    watch_h2.row(options.watchers, "one HTTP/2 connection (client-go's way)");
    watch_named.row(
        options.watchers,
        "one HTTP/2 connection, each selecting one object by name",
    );
    println!(
        "| server CPU per change, checked by {} watchers that each select one object by name | {:.0} µs | |",
        options.watchers, watch_named.server_per_change_us
    );
    println!(
        "| server CPU per create, 1 client, with {} watchers of another resource (Secrets) open / with none | {:.0} µs / {:.0} µs | {:.2} of the cost with none |",
        options.watchers,
        beside.server_us,
        one.server_us,
        beside.server_us / one.server_us.max(f64::EPSILON)
    );
    println!(
        "| LIST {} pods (kube-rs, decoded into Pods), median / slowest of 5 | {} / {} | slowest is {:.4} of the 30 s SLO |",
        options.pods,
        ms(list_times[2]),
        ms(list_times[4]),
        list_times[4].as_secs_f64() / 30.0
    );
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    for (what, (median, slowest, size)) in [
        ("JSON", raw_json),
        ("Table", raw_table),
        ("PartialObjectMetadataList", raw_metadata),
    ] {
        println!(
            "| LIST {} pods as {what}, bytes only, median / slowest of 5 ({:.1} MiB) | {} / {} | median is {:.2} of the 250 ms goal |",
            options.pods,
            mib(size),
            ms(median),
            ms(slowest),
            median.as_secs_f64() / 0.25
        );
    }
    println!(
        "| server RSS growth at the peak of one LIST ({:.1} MiB answer) | {list_peak:.0} MiB | {:.2} of the answer's size |",
        mib(one_list_bytes),
        list_peak / mib(one_list_bytes).max(f64::EPSILON)
    );
    println!(
        "| server RSS before / after 21 LISTs of {} pods (anonymous) | {:.0} MiB ({:.0} MiB) / {:.0} MiB ({:.0} MiB) | +{:.0} MiB |",
        options.pods,
        rss_before_lists.0,
        rss_before_lists.1,
        rss_after_lists.0,
        rss_after_lists.1,
        rss_after_lists.0 - rss_before_lists.0
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
        "| server RSS with {stored_after} stored objects, the last {} of them ConfigMaps (anonymous) | {:.0} MiB ({:.0} MiB) | {overall:.2} KiB anonymous per stored object over idle |",
        options.objects, rss_loaded.0, rss_loaded.1
    );
    println!(
        "| anonymous memory per ConfigMap, over the last {} created ({stored_before} stored before) | {marginal:.2} KiB | {:.2} of the 1.5 KiB goal |",
        options.objects,
        marginal / 1.5
    );
    Ok(())
}

/// Objects in the store: the ConfigMaps and Pods the benchmark made, and what the server keeps
/// of its own (namespaces, leases, service accounts, events…), counted by their lists.
async fn stored_objects(client: &kube::Client) -> anyhow::Result<usize> {
    let mut total = 0;
    for path in [
        "/api/v1/configmaps",
        "/api/v1/pods",
        "/api/v1/namespaces",
        "/api/v1/serviceaccounts",
        "/api/v1/secrets",
        "/api/v1/events",
        "/apis/coordination.k8s.io/v1/leases",
    ] {
        let mut request = kube::core::Request::new(path).list(&ListParams::default())?;
        request.headers_mut().insert(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1".parse()?,
        );
        let list: serde_json::Value = client.request(request).await?;
        total += list["items"].as_array().map_or(0, Vec::len);
    }
    Ok(total)
}
