//! The etcd backend: skiff's store contract mapped onto a real etcd v3 cluster, using etcd's own
//! revisions, transactions (for compare-and-swap) and watches.
//!
//! Selected with `--datastore-endpoint http://HOST:PORT[,...]`. etcd must accept requests of at
//! least 2 MiB (`--max-request-bytes=2097152`) to hold skiff's largest values.

mod snapshot;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KvClient,
    Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::keys::prefix_end;
use crate::watch_hub::DEFAULT_RING_CAPACITY;
use crate::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Revision, Store, StoreError,
    StoreResult, WatchStream, check_write,
};

/// Largest gRPC message accepted from etcd (a range of many large values).
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

pub use snapshot::RestoreInfo;

/// A store backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    client: Client,
    watch_capacity: usize,
}

impl EtcdStore {
    /// Connects to the comma-separated `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &str) -> StoreResult<Self> {
        Self::connect_with(endpoints, DEFAULT_RING_CAPACITY).await
    }

    /// Connects with watchers that may fall at most `watch_capacity` events behind.
    pub async fn connect_with(endpoints: &str, watch_capacity: usize) -> StoreResult<Self> {
        let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(5),
            );
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(etcd_error)?;
        Ok(Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            client,
            watch_capacity: watch_capacity.max(1),
        })
    }
}

/// Maps etcd's errors onto the store's.
fn etcd_error(source: etcd_client::Error) -> StoreError {
    StoreError::Etcd {
        context: "request failed",
        source,
    }
}

fn read_error(error: etcd_client::Error, requested: Revision, current: Revision) -> StoreError {
    let message = error.to_string();
    if message.contains("required revision has been compacted") {
        StoreError::Compacted { requested }
    } else if message.contains("required revision is a future revision") {
        StoreError::FutureRevision { requested, current }
    } else {
        StoreError::Etcd {
            context: "read failed",
            source: error,
        }
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| StoreError::Corrupt("a key in etcd is not UTF-8".into()))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision())
}

/// The `(start, end)` key range covering `prefix` in etcd's convention (`\0` = to the end).
fn etcd_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    (
        start,
        prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]),
    )
}

impl EtcdStore {
    /// After a failed compare, tells a missing key from a modified one.
    fn failed_compare(key: &str, expected: Revision, responses: Vec<TxnOpResponse>) -> StoreError {
        let current = responses.into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match current {
            None => StoreError::NotFound {
                key: key.to_string(),
            },
            Some(actual) => StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual,
            },
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> StoreResult<(Option<KeyValue>, Revision)> {
        let mut options = GetOptions::new();
        let requested = revision.filter(|r| *r > 0);
        if let Some(requested) = requested {
            options = options.with_revision(requested);
        }
        let response = match self.kv.clone().get(key, Some(options)).await {
            Ok(response) => response,
            Err(error) => {
                let current = self.current_revision().await.unwrap_or(0);
                return Err(read_error(error, requested.unwrap_or(0), current));
            }
        };
        let kv = response.kvs().first().map(to_kv).transpose()?;
        Ok((
            kv,
            requested.unwrap_or_else(|| header_revision(response.header())),
        ))
    }

    async fn range(&self, request: RangeRequest) -> StoreResult<RangeResponse> {
        let (mut start, end) = etcd_range(&request.prefix);
        if let Some(after) = &request.start_after
            && after.as_bytes() >= start.as_slice()
        {
            start = after.as_bytes().to_vec();
            start.push(0);
        }
        let mut options = GetOptions::new().with_range(end);
        let requested = request.revision.filter(|r| *r > 0);
        if let Some(requested) = requested {
            options = options.with_revision(requested);
        }
        if let Some(limit) = request.limit {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let response = match self.kv.clone().get(start, Some(options)).await {
            Ok(response) => response,
            Err(error) => {
                let current = self.current_revision().await.unwrap_or(0);
                return Err(read_error(error, requested.unwrap_or(0), current));
            }
        };
        Ok(RangeResponse {
            kvs: response
                .kvs()
                .iter()
                .map(to_kv)
                .collect::<StoreResult<_>>()?,
            more: response.more(),
            revision: requested.unwrap_or_else(|| header_revision(response.header())),
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> StoreResult<Revision> {
        check_write(key, &value)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let response = self.kv.clone().txn(txn).await.map_err(etcd_error)?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        Ok(header_revision(response.header()))
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> StoreResult<Revision> {
        check_write(key, &value)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.kv.clone().txn(txn).await.map_err(etcd_error)?;
        if !response.succeeded() {
            return Err(Self::failed_compare(key, expected, response.op_responses()));
        }
        Ok(header_revision(response.header()))
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> StoreResult<(Revision, KeyValue)> {
        let compare = match expected {
            Some(expected) => Compare::mod_revision(key, CompareOp::Equal, expected),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.kv.clone().txn(txn).await.map_err(etcd_error)?;
        if !response.succeeded() {
            return Err(Self::failed_compare(
                key,
                expected.unwrap_or_default(),
                response.op_responses(),
            ));
        }
        let revision = header_revision(response.header());
        let prev = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(to_kv),
            _ => None,
        });
        match prev {
            Some(prev) => Ok((revision, prev?)),
            None => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
        }
    }

    async fn current_revision(&self) -> StoreResult<Revision> {
        let response = self
            .kv
            .clone()
            .get(vec![0], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd_error)?;
        Ok(header_revision(response.header()))
    }

    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        let result = self
            .kv
            .clone()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.to_string().contains("has been compacted") => Ok(()),
            Err(error) => {
                let current = self.current_revision().await.unwrap_or(0);
                Err(read_error(error, revision, current))
            }
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> StoreResult<WatchStream> {
        let (start, end) = etcd_range(prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key();
        let mut stream = self
            .watch
            .clone()
            .watch(start, Some(options))
            .await
            .map_err(etcd_error)?;
        // The first response confirms creation, or cancels a watch on a compacted revision.
        match stream.next().await {
            Some(Ok(response)) if response.compact_revision() > 0 || response.canceled() => {
                return Err(StoreError::Compacted { requested: after });
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(etcd_error(error)),
            None => {
                return Err(StoreError::EtcdUnavailable(
                    "watch stream closed at start".into(),
                ));
            }
        }
        let (sender, receiver) = mpsc::channel(self.watch_capacity);
        tokio::spawn(pump_watch(stream, sender, after));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// Drains one etcd watch into a bounded queue. The etcd stream is always read promptly (HTTP/2
/// limits how much unread data a connection may buffer, and all watches share one connection);
/// when the consumer falls `watch_capacity` events behind, the etcd watch is cancelled and the
/// consumer gets [`StoreError::WatchLagged`] after the events already queued.
async fn pump_watch(
    mut stream: etcd_client::WatchStream,
    sender: mpsc::Sender<StoreResult<Event>>,
    after: Revision,
) {
    let mut last = after;
    let ending = loop {
        let response = tokio::select! {
            () = sender.closed() => return,
            response = stream.next() => response,
        };
        let response = match response {
            Some(Ok(response)) => response,
            Some(Err(error)) => {
                tracing::warn!(%error, resume_after = last, "etcd watch failed");
                break StoreError::Etcd {
                    context: "watch failed",
                    source: error,
                };
            }
            None => break StoreError::WatchLagged { resume_after: last },
        };
        if response.compact_revision() > 0 || response.canceled() {
            break StoreError::WatchLagged { resume_after: last };
        }
        let mut overflow = false;
        for event in response.events() {
            let item = convert_event(event);
            let revision = item.as_ref().map(Event::revision).ok();
            match sender.try_send(item) {
                Ok(()) => last = revision.unwrap_or(last),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    overflow = true;
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if overflow {
            break StoreError::WatchLagged { resume_after: last };
        }
    };
    drop(stream);
    let _ = sender.send(Err(ending)).await;
}

fn convert_event(event: &etcd_client::Event) -> StoreResult<Event> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::Corrupt("etcd watch event without a key".into()))?;
    let prev = event.prev_kv().map(to_kv).transpose()?;
    let kind = match event.event_type() {
        EventType::Put => EventKind::Put,
        EventType::Delete => EventKind::Delete,
    };
    let mut kv = to_kv(kv)?;
    if kind == EventKind::Delete {
        kv.create_revision = 0;
        kv.value = Bytes::new();
    }
    Ok(Event { kind, kv, prev })
}
