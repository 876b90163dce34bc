//! The store benchmark: durable write throughput and watch latency per backend.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::Store;
use skiff_store::etcd::EtcdStore;
use skiff_store::etcd_process::{EtcdProcess, etcd_available};
use skiff_store::sqlite::SqliteStore;

/// Benchmark settings.
pub struct Options {
    pub seconds: u64,
    pub dir: Option<PathBuf>,
    pub etcd: bool,
    pub watch_events: usize,
}

/// Size of each written value: a small Kubernetes object.
const VALUE_BYTES: usize = 1024;

struct Throughput {
    one: f64,
    many: f64,
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-bench-")
        .tempdir_in(options.dir.as_deref().unwrap_or(Path::new("/var/tmp")))?;
    let duration = Duration::from_secs(options.seconds);
    eprintln!("measuring in {}", scratch.path().display());

    let disk = tokio::task::spawn_blocking({
        let path = scratch.path().join("fsync-probe");
        move || fsync_rate(&path, duration)
    })
    .await??;
    eprintln!("disk: {disk:.0} write+fdatasync/s");

    let mut rows = Vec::new();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(&scratch.path().join("sqlite"))?);
    rows.push((
        "sqlite",
        measure(sqlite, duration, options.watch_events).await?,
    ));

    let _etcd_process;
    if options.etcd && etcd_available() {
        let data = scratch.path().join("etcd");
        let process = tokio::task::spawn_blocking(move || EtcdProcess::start_in(&data)).await??;
        let etcd: Arc<dyn Store> = Arc::new(EtcdStore::connect(process.endpoint()).await?);
        _etcd_process = process;
        rows.push(("etcd", measure(etcd, duration, options.watch_events).await?));
    } else {
        eprintln!("etcd: skipped");
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| backend | writes/s, 1 writer | writes/s, 64 writers | 64 ÷ 1 | 1 writer ÷ disk fsync/s | 64 writers ÷ disk fsync/s | watch p50 / p99, 1 watcher | watch p50 / p99, 1,000 watchers |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| disk (write+fdatasync loop) | {disk:.0} | | | 1.00 | | | |"
    )?;
    for (name, (throughput, one, thousand)) in &rows {
        writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {:.1}× | {:.2} | {:.2} | {} / {} | {} / {} |",
            throughput.one,
            throughput.many,
            throughput.many / throughput.one,
            throughput.one / disk,
            throughput.many / disk,
            ms(one.p50),
            ms(one.p99),
            ms(thousand.p50),
            ms(thousand.p99),
        )?;
    }
    if let [(_, (sqlite, ..)), (_, (etcd, ..))] = rows.as_slice() {
        writeln!(
            out,
            "\nsqlite ÷ etcd: {:.2}× with 1 writer, {:.2}× with 64 writers",
            sqlite.one / etcd.one,
            sqlite.many / etcd.many
        )?;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(
    store: Arc<dyn Store>,
    duration: Duration,
    watch_events: usize,
) -> anyhow::Result<(Throughput, Latency, Latency)> {
    let name = store.backend();
    let one = write_rate(&store, 1, duration, "one").await?;
    let many = write_rate(&store, 64, duration, "many").await?;
    eprintln!("{name}: {one:.0} writes/s with 1 writer, {many:.0} with 64");
    let single = watch_latency(&store, 1, watch_events, "w1").await?;
    let thousand = watch_latency(&store, 1000, watch_events, "w1000").await?;
    eprintln!(
        "{name}: watch p99 {:?} (1 watcher), {:?} (1,000 watchers)",
        single.p99, thousand.p99
    );
    Ok((Throughput { one, many }, single, thousand))
}

/// The physical limit: small appends, each followed by fdatasync, in the measured directory.
fn fsync_rate(path: &Path, duration: Duration) -> anyhow::Result<f64> {
    let mut file = std::fs::File::create(path)?;
    let block = [0u8; 256];
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < duration {
        file.write_all(&block)?;
        file.sync_data()?;
        count += 1;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Creates of fresh 1 KiB values from `writers` concurrent tasks for `duration`.
pub(super) async fn write_rate(
    store: &Arc<dyn Store>,
    writers: usize,
    duration: Duration,
    tag: &str,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, count, value) =
            (store.clone(), stop.clone(), count.clone(), value.clone());
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store
                    .create(&format!("/bench/{tag}/{w}/{i}"), value.clone())
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

/// Latency from a write's acknowledgement to its arrival at each of `watchers` watchers.
async fn watch_latency(
    store: &Arc<dyn Store>,
    watchers: usize,
    events: usize,
    tag: &str,
) -> anyhow::Result<Latency> {
    let prefix = format!("/watchbench/{tag}/");
    let start_revision = store.current_revision().await?;
    let mut receivers = Vec::new();
    for _ in 0..watchers {
        let mut stream = store.watch(&prefix, start_revision).await?;
        receivers.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(events);
            while seen.len() < events {
                match stream.next().await {
                    Some(Ok(event)) => seen.push((event.revision(), Instant::now())),
                    Some(Err(error)) => return Err(anyhow::anyhow!("watch ended: {error}")),
                    None => return Err(anyhow::anyhow!("watch closed")),
                }
            }
            Ok(seen)
        }));
    }
    let value = Bytes::from(vec![b'w'; VALUE_BYTES]);
    let mut acked = std::collections::HashMap::with_capacity(events);
    for i in 0..events {
        let revision = store.create(&format!("{prefix}{i}"), value.clone()).await?;
        acked.insert(revision, Instant::now());
        // Paced writes: measure delivery, not queueing behind a burst.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut samples = Vec::with_capacity(events * watchers);
    for receiver in receivers {
        for (revision, seen) in receiver.await?? {
            let at = acked
                .get(&revision)
                .ok_or_else(|| anyhow::anyhow!("unexpected revision {revision}"))?;
            samples.push(seen.saturating_duration_since(*at));
        }
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Ok(Latency {
        p50: pick(0.50),
        p99: pick(0.99),
    })
}
