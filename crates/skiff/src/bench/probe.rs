//! The load `skiff bench services` generates from inside a pod's network namespace (it runs as
//! `nsenter --net=... skiff debug net-probe`): DNS queries at a fixed concurrency for a while,
//! and HTTP GETs to several targets, interleaved so each sees the same conditions. Prints one
//! JSON object with the figures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to probe.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The DNS server to query.
    #[arg(long)]
    dns: Option<SocketAddr>,
    /// The name to ask for (type A).
    #[arg(long, default_value = "kubernetes.default.svc.cluster.local")]
    name: String,
    /// Seconds of DNS queries.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent DNS clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// HTTP targets (`ip:port`), GET / on each in turn.
    #[arg(long, value_delimiter = ',')]
    http: Vec<SocketAddr>,
    /// GETs per HTTP target.
    #[arg(long, default_value_t = 500)]
    requests: usize,
}

/// A DNS query for `name`, type A, class IN, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(u8::try_from(label.len()).unwrap_or(63));
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// Whether `answer` answers query `id` with NOERROR and at least one record.
fn answered(answer: &[u8], id: u16) -> bool {
    answer.len() >= 12
        && answer[..2] == id.to_be_bytes()
        && answer[3] & 0x0f == 0
        && u16::from_be_bytes([answer[6], answer[7]]) > 0
}

fn micros(sorted: &[Duration], q: f64) -> u128 {
    super::pods::quantile(sorted, q).as_micros()
}

async fn dns_client(server: SocketAddr, name: String, until: Instant) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    let Ok(socket) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
        return (latencies, 1);
    };
    let mut buffer = [0u8; 1500];
    let mut id: u16 = rand::random();
    while Instant::now() < until {
        id = id.wrapping_add(1);
        let start = Instant::now();
        if socket.send_to(&query(id, &name), server).await.is_err() {
            failures += 1;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer)).await {
            Ok(Ok(size)) if answered(&buffer[..size], id) => latencies.push(start.elapsed()),
            _ => failures += 1,
        }
    }
    (latencies, failures)
}

async fn get(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("not a 200"))
    }
}

/// Runs the probe and prints its figures.
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let mut report = serde_json::Map::new();
    if let Some(server) = args.dns {
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let clients: Vec<_> = (0..args.concurrency.max(1))
            .map(|_| tokio::spawn(dns_client(server, args.name.clone(), until)))
            .collect();
        let mut latencies = Vec::new();
        let mut failures = 0;
        for client in clients {
            let (mine, failed) = client.await?;
            latencies.extend(mine);
            failures += failed;
        }
        latencies.sort();
        report.insert(
            "dns".into(),
            json!({
                "queries": latencies.len(),
                "qps": latencies.len() as f64 / args.seconds.max(1) as f64,
                "p50_us": micros(&latencies, 0.5),
                "p99_us": micros(&latencies, 0.99),
                "failures": failures,
            }),
        );
    }
    if !args.http.is_empty() {
        let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); args.http.len()];
        let mut failures = vec![0usize; args.http.len()];
        for _ in 0..args.requests {
            for (i, target) in args.http.iter().enumerate() {
                let start = Instant::now();
                match get(*target).await {
                    Ok(()) => latencies[i].push(start.elapsed()),
                    Err(_) => failures[i] += 1,
                }
            }
        }
        let mut targets = Vec::new();
        for (i, target) in args.http.iter().enumerate() {
            latencies[i].sort();
            targets.push(json!({
                "target": target.to_string(),
                "p50_us": micros(&latencies[i], 0.5),
                "p99_us": micros(&latencies[i], 0.99),
                "failures": failures[i],
            }));
        }
        report.insert("http".into(), json!(targets));
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_should_be_a_well_formed_dns_message() {
        let packet = query(0x1234, "web.default.svc.cluster.local.");
        assert_eq!(&packet[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(packet[12], 3);
        assert_eq!(&packet[13..16], b"web");
        assert_eq!(&packet[packet.len() - 5..], &[0, 0, 1, 0, 1]);
        let mut reply = packet.clone();
        reply[2] = 0x81;
        reply[3] = 0x80;
        reply[7] = 1;
        assert!(answered(&reply, 0x1234));
        reply[3] = 0x83;
        assert!(!answered(&reply, 0x1234), "NXDOMAIN is no answer");
    }
}
