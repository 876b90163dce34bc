//! The DNS server over real sockets: cluster names answered from the watch-fed cache (an
//! in-process cluster), other names forwarded to an upstream resolver (a fake one on loopback,
//! never a real resolver), and refused when no upstream is configured.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use tokio::net::UdpSocket;

/// Asks `server` for `name` (type A) over UDP.
async fn ask(server: SocketAddr, name: &str) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let size = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    Message::from_vec(&buffer[..size]).unwrap()
}

/// A resolver that answers every query with 192.0.2.7.
async fn fake_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((size, from)) = socket.recv_from(&mut buffer).await {
            let query = Message::from_vec(&buffer[..size]).unwrap();
            let mut answer = query.clone();
            answer.metadata.message_type = MessageType::Response;
            let name = query.queries[0].name().clone();
            answer.add_answer(Record::from_rdata(
                name,
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            ));
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    address
}

async fn serve(client: kube::Client, upstreams: Vec<SocketAddr>) -> SocketAddr {
    let options = skiff_dns::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        domain: "cluster.local".into(),
        upstreams,
        service_ip: Ipv4Addr::new(10, 43, 0, 10),
        networks: vec!["10.42.0.0/16".into(), "10.43.0.0/16".into()],
    };
    let bound = skiff_dns::bind(options.listen).await.unwrap();
    let address = bound.address;
    tokio::spawn(bound.serve(client, options));
    address
}

#[tokio::test]
async fn cluster_names_should_come_from_the_cache_and_others_from_the_upstream() {
    let cluster = skiff_cluster::in_process::InProcess::start().await.unwrap();
    let client = cluster.client("dns");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    let created = Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = created.spec.unwrap().cluster_ip.unwrap();
    let dns = serve(client.clone(), vec![fake_upstream().await]).await;
    // The cache fills from the watch: the name resolves once it has seen the Service.
    let mut answered = None;
    for _ in 0..100 {
        let answer = ask(dns, "web.default.svc.cluster.local.").await;
        if answer.metadata.response_code == ResponseCode::NoError && !answer.answers.is_empty() {
            answered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = answered.expect("web resolved");
    assert_eq!(answer.answers[0].data.to_string(), cluster_ip);
    assert!(answer.metadata.authoritative);
    // The server publishes itself as kube-dns.
    let mut published = false;
    for _ in 0..100 {
        if let Ok(Some(svc)) = Api::<Service>::namespaced(client.clone(), "kube-system")
            .get_opt("kube-dns")
            .await
        {
            assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.43.0.10"));
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published, "kube-dns published");
    let missing = ask(dns, "nope.default.svc.cluster.local.").await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let outside = ask(dns, "example.org.").await;
    assert_eq!(outside.metadata.response_code, ResponseCode::NoError);
    assert_eq!(outside.answers[0].data.to_string(), "192.0.2.7");
    // Without an upstream, other names are refused.
    let alone = serve(client, Vec::new()).await;
    assert_eq!(
        ask(alone, "example.org.").await.metadata.response_code,
        ResponseCode::Refused
    );
}
