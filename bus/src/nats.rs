//! [`NatsBus`]: the bus on NATS, for the cluster mode.
//!
//! Core subjects map one to one onto NATS core pub/sub. The work queue is a JetStream stream
//! with work-queue retention (a message stays until a consumer acknowledges it) and a durable
//! pull consumer that all persister replicas share. Key-value buckets are JetStream KV.
//!
//! The stream and buckets are created or updated at start-up, idempotently, by every role that
//! uses them, so no role depends on another having started first. Each is kept in the number of
//! replicas the bus was given (one per server of a NATS cluster, up to 5): with 3, the loss of
//! one server loses nothing in flight.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, kv, message::PublishMessage, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{
    Acker, Backoff, Bus, BusError, ConnectionEvent, Job, KeyValue, Message, NatsServers, Retryable, Subscription,
    WorkQueue,
};

/// Reconnections of this process's NATS clients, for the dashboards.
pub const RECONNECTS_METRIC: &str = "chat_nats_reconnects_total";

/// The durable work queue's stream: its name, what it holds, and its limits.
#[derive(Clone, Debug)]
pub struct WorkQueueSettings {
    /// JetStream stream name (letters, digits, `-`, `_`).
    pub stream: String,
    /// Subjects the stream captures, e.g. `chat.in.*`.
    pub subjects: String,
    /// One subject per partition, each consumed by a consumer of its own that hands out one
    /// message at a time: a partition's messages are processed strictly in order, by one
    /// persister replica at a time, while different partitions proceed in parallel.
    pub partitions: Vec<String>,
    /// Window in which a second message with the same id is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// Oldest message kept if nobody consumes it.
    pub max_age: Duration,
    /// Most bytes held; past that, new messages are refused (never old ones dropped).
    pub max_bytes: i64,
    /// How long a consumer may hold a message without acknowledging it before it is redelivered.
    pub ack_wait: Duration,
}

impl WorkQueueSettings {
    pub fn new(stream: impl Into<String>, subjects: impl Into<String>, partitions: Vec<String>) -> Self {
        Self {
            stream: stream.into(),
            subjects: subjects.into(),
            partitions,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            ack_wait: Duration::from_secs(10),
        }
    }

    fn stream_config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            description: Some("chat send commands, from gateways to persisters".into()),
            subjects: vec![self.subjects.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            num_replicas: replicas,
            ..Default::default()
        }
    }
}

/// Whether JetStream refused `replicas` because it cannot keep that many copies: a server
/// outside any cluster, fewer servers than replicas, or no room on enough of them. Only then
/// is the replica count the thing to fix (with one replica these answers mean something else).
fn refuses_replicas(error: &jetstream::Error, replicas: usize) -> bool {
    use jetstream::ErrorCode;
    replicas > 1
        && matches!(
            error.error_code(),
            ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
                | ErrorCode::CLUSTER_NO_PEERS
                | ErrorCode::INSUFFICIENT_RESOURCES
                | ErrorCode::STREAM_REPLICAS_NOT_UPDATABLE
                | ErrorCode::CONSUMER_REPLICAS_EXCEEDS_STREAM
                | ErrorCode::CONSUMER_REPLICAS_SHOULD_MATCH_STREAM
        )
}

/// Creates the stream, or brings the existing one to `config`. Creation comes first, and an
/// update only when a stream of that name has another configuration: on NATS 2.9 clusters an
/// update that races another role's creation of the same stream leaves both requests
/// unanswered until they time out (10 s, measured when a persister and presence start
/// together), whereas creations of one stream with the same configuration all succeed.
async fn create_or_update_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<(), jetstream::context::CreateStreamError> {
    match jetstream.create_stream(config.clone()).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            jetstream::context::CreateStreamErrorKind::JetStream(api)
                if api.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST =>
            {
                jetstream.update_stream(&config).await.map(|_| ())
            }
            _ => Err(e),
        },
    }
}

/// How long a request about a consumer is repeated while JetStream says its stream is settling.
const SETTLING_PATIENCE: Duration = Duration::from_secs(30);

/// The wait between two such requests, the same each time: settling lasts a few seconds, and a
/// short wait notices its end soon.
const SETTLING_RETRY: Duration = Duration::from_millis(500);

/// Runs `request` until it succeeds, fails for good, or [`SETTLING_PATIENCE`] has passed. For a
/// few seconds after a stream is created or changes its replica count (while it elects its
/// leader), JetStream answers requests about its consumers with "stream not found",
/// "temporarily unavailable" or not at all (`settling` tells those answers), although the stream
/// is there (measured on NATS 2.9, updating the consumers right after a change of replicas).
async fn while_settling<T, E, F, Fut>(what: &str, settling: impl Fn(&E) -> bool, request: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let backoff = Backoff::new(SETTLING_RETRY, SETTLING_RETRY, tokio::time::Instant::now() + SETTLING_PATIENCE);
    let retryable = |e: &E| if settling(e) { Retryable::BeforeDeadline } else { Retryable::No };
    backoff.retry(&format!("a JetStream request about {what}"), retryable, request).await
}

/// The error of a failed stream creation or update: [`BusError::Replicas`] when the replica
/// count is what JetStream refused.
fn stream_error(what: String, replicas: usize, error: jetstream::context::CreateStreamError) -> BusError {
    match error.kind() {
        jetstream::context::CreateStreamErrorKind::JetStream(api) if refuses_replicas(&api, replicas) => {
            BusError::Replicas { what, replicas, reason: api.to_string() }
        }
        _ => BusError::Connection(format!("cannot create or update {what}: {error}")),
    }
}

/// The bus on a NATS server with JetStream.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    work_queue: Arc<WorkQueueSettings>,
    /// Replicas of the stream, its consumers and the key-value buckets.
    replicas: usize,
    connection_events: tokio::sync::broadcast::Sender<ConnectionEvent>,
}

impl NatsBus {
    /// Connects once to one of `servers` (no retry here: the caller decides how long to keep
    /// trying) and makes sure the work queue's stream exists with `settings`, in `replicas`
    /// copies (updated when it has another count). Later the client reconnects to any of
    /// `servers`, or of the servers the cluster tells it about, whichever answers.
    ///
    /// More than one replica needs a NATS cluster with at least that many JetStream servers:
    /// otherwise [`BusError::Replicas`], before anything is changed when the server is not
    /// part of a cluster at all.
    pub async fn connect(
        servers: &NatsServers,
        client_name: &str,
        replicas: usize,
        settings: WorkQueueSettings,
    ) -> Result<Self, BusError> {
        // Losses and restorations after the first connection, for subscribers that resync.
        let connection_events = tokio::sync::broadcast::Sender::new(64);
        let events = connection_events.clone();
        let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let (events, first) = (events.clone(), first.clone());
                async move {
                    match event {
                        async_nats::Event::Connected if first.swap(false, std::sync::atomic::Ordering::SeqCst) => {}
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connection re-established");
                            metrics::counter!(RECONNECTS_METRIC).increment(1);
                            let _ = events.send(ConnectionEvent::Restored); // no subscriber: nothing to do
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting");
                            let _ = events.send(ConnectionEvent::Lost);
                        }
                        other => tracing::warn!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(servers.addrs().to_vec())
            .await
            .map_err(|e| BusError::Connection(format!("cannot connect to NATS at {servers}: {e}")))?;
        let what = format!("stream {}", settings.stream);
        // A server outside any cluster would accept an update to more replicas and only refuse
        // the consumers: better to refuse here, before the stream is touched.
        let server = client.server_info();
        if replicas > 1 && server.cluster.is_none() {
            let reason = format!(
                "the server {} ({}:{}) is not part of a NATS cluster; {replicas} replicas need a cluster of at \
                 least {replicas} JetStream servers",
                server.server_name, server.host, server.port
            );
            return Err(BusError::Replicas { what, replicas, reason });
        }
        let jetstream = jetstream::new(client.clone());
        create_or_update_stream(&jetstream, settings.stream_config(replicas))
            .await
            .map_err(|e| stream_error(what, replicas, e))?;
        Ok(Self { client, jetstream, work_queue: Arc::new(settings), replicas, connection_events })
    }

    /// The durable consumers `<consumer>-<partition>` of the work queue, in partition order:
    /// created when missing, else updated to this configuration (a new replica count, say).
    ///
    /// Missing ones are created all at once: on a NATS cluster each is a consensus group of its
    /// own, about half a second to set up (one after the other, a persister's first start on
    /// three servers took 16 s for 32 partitions). Existing ones are updated one at a time:
    /// concurrent updates while JetStream changes the stream's replica count went unanswered on
    /// NATS 2.9, and once left the stream unusable.
    async fn partition_consumers(
        &self,
        stream: &stream::Stream,
        consumer: &str,
    ) -> Result<Vec<jetstream::consumer::PullConsumer>, BusError> {
        use jetstream::context::ConsumerInfoErrorKind;
        let partitions = &self.work_queue.partitions;
        let names: Vec<String> = (0..partitions.len()).map(|index| format!("{consumer}-{index}")).collect();
        let exists = futures::future::try_join_all(names.iter().map(|name| async move {
            // While a stream changes its replica count, JetStream may answer "temporarily
            // unavailable" (10008) for a few seconds: seen on NATS 2.9 after 3 → 1 → 3.
            let settling = |e: &jetstream::context::ConsumerInfoError| match e.kind() {
                ConsumerInfoErrorKind::TimedOut
                | ConsumerInfoErrorKind::StreamNotFound
                | ConsumerInfoErrorKind::Offline => true,
                ConsumerInfoErrorKind::JetStream(api) => {
                    api.error_code() == jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
                }
                _ => false,
            };
            match while_settling(&format!("consumer {name}"), settling, || stream.consumer_info(name)).await {
                Ok(_) => Ok(true),
                Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => Ok(false),
                Err(e) => Err(BusError::Connection(format!("consumer {name}: {e}"))),
            }
        }))
        .await?;
        let ensure = |index: usize| {
            let name = &names[index];
            let config = self.partition_consumer_config(name, &partitions[index]);
            let settling = |e: &stream::ConsumerError| match e.kind() {
                stream::ConsumerErrorKind::TimedOut => true,
                stream::ConsumerErrorKind::JetStream(api) => matches!(
                    api.error_code(),
                    jetstream::ErrorCode::STREAM_NOT_FOUND | jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE
                ),
                _ => false,
            };
            async move {
                while_settling(&format!("consumer {name}"), settling, || stream.create_consumer(config.clone()))
                    .await
                    .map(|c| (index, c))
                    .map_err(|e| self.consumer_error(name, e))
            }
        };
        let missing = (0..names.len()).filter(|&index| !exists[index]);
        let mut consumers = futures::future::try_join_all(missing.map(ensure)).await?;
        for index in (0..names.len()).filter(|&index| exists[index]) {
            consumers.push(ensure(index).await?);
        }
        consumers.sort_by_key(|(index, _)| *index);
        Ok(consumers.into_iter().map(|(_, consumer)| consumer).collect())
    }

    /// The pull consumer `name` of one partition's `subject`.
    fn partition_consumer_config(&self, name: &str, subject: &str) -> pull::Config {
        pull::Config {
            durable_name: Some(name.to_owned()),
            description: Some(format!("persisters: store send commands of {subject}")),
            filter_subject: subject.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.work_queue.ack_wait,
            // One message of the partition out at a time: the next is handed out only when
            // this one is acknowledged, which keeps a conversation's messages in order.
            max_ack_pending: 1,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// A failed consumer creation or update: [`BusError::Replicas`] when the replica count is
    /// what JetStream refused.
    fn consumer_error(&self, name: &str, error: stream::ConsumerError) -> BusError {
        match error.kind() {
            stream::ConsumerErrorKind::JetStream(api) if refuses_replicas(&api, self.replicas) => BusError::Replicas {
                what: format!("consumer {name}"),
                replicas: self.replicas,
                reason: api.to_string(),
            },
            _ => BusError::Connection(format!("consumer {name}: {error}")),
        }
    }

    /// Deletes a JetStream stream (a work queue, or `KV_<bucket>` for a bucket) with all it
    /// holds: for tearing down a cluster's state, and for tests cleaning up after themselves.
    pub async fn delete_stream(&self, name: &str) -> Result<(), BusError> {
        self.jetstream
            .delete_stream(name)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Connection(format!("deleting stream {name}: {e}")))
    }

    fn into_subscription(subscriber: async_nats::Subscriber) -> Subscription {
        Box::pin(subscriber.map(|m| Message {
            subject: m.subject.to_string(),
            reply: m.reply.map(|r| r.to_string()),
            payload: m.payload,
        }))
    }

    /// Waits until the server has seen everything sent so far (subscriptions included), so a
    /// subscriber knows it will receive what is published after this returns.
    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| BusError::Connection(format!("flush: {e}")))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| BusError::Connection(format!("publish on {subject}: {e}")))
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| BusError::Connection(format!("subscribe to {subject}: {e}")))?;
        self.flush().await?;
        Ok(Self::into_subscription(subscriber))
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        let subscriber = self
            .client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map_err(|e| BusError::Connection(format!("subscribe to {subject}: {e}")))?;
        self.flush().await?;
        Ok(Self::into_subscription(subscriber))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes, BusError> {
        let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(answer) => Ok(answer.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => BusError::NoResponders { subject: subject.to_owned() },
                async_nats::RequestErrorKind::TimedOut => BusError::Timeout { subject: subject.to_owned(), timeout },
                _ => BusError::Connection(format!("request on {subject}: {e}")),
            }),
        }
    }

    async fn enqueue(&self, subject: &str, dedup_id: &str, payload: Bytes) -> Result<(), BusError> {
        // The id goes in the `Nats-Msg-Id` header, by which the stream drops duplicates.
        let publish = PublishMessage::build().payload(payload).message_id(dedup_id);
        let ack = self
            .jetstream
            .send_publish(subject.to_owned(), publish)
            .await
            .map_err(|e| BusError::Rejected(format!("publish to {subject}: {e}")))?;
        ack.await.map_err(|e| BusError::Rejected(format!("no acknowledgement from stream for {subject}: {e}")))?;
        Ok(())
    }

    async fn work_queue(&self, consumer: &str) -> Result<WorkQueue, BusError> {
        let settings = &self.work_queue;
        let stream = self
            .jetstream
            .get_stream(&settings.stream)
            .await
            .map_err(|e| BusError::Connection(format!("stream {}: {e}", settings.stream)))?;
        let consumers = self.partition_consumers(&stream, consumer).await?;
        let mut partitions = Vec::with_capacity(consumers.len());
        for (consumer, subject) in consumers.iter().zip(&settings.partitions) {
            partitions.push(
                consumer.messages().await.map_err(|e| BusError::Connection(format!("consuming {subject}: {e}")))?,
            );
        }
        let jobs = futures::stream::select_all(partitions).filter_map(|next| async move {
            match next {
                Ok(message) => {
                    let subject = message.subject.to_string();
                    let payload = message.payload.clone();
                    // The stream's timestamp travels in the reply subject of every message.
                    let stored_at = message.info().ok().map(|info| SystemTime::from(info.published));
                    Some(Job::new(subject, payload, stored_at, Box::new(JetStreamAcker(message))))
                }
                Err(e) => {
                    // Missed heartbeats and reconnects surface here; the stream resumes by itself.
                    tracing::warn!(error = %e, "work queue interrupted");
                    None
                }
            }
        });
        Ok(Box::pin(jobs))
    }

    async fn work_queue_pending(&self, _consumer: &str) -> Result<u64, BusError> {
        // Work-queue retention deletes a message once acknowledged, so what the stream holds
        // is exactly what its partition consumers have still to hand out or see acknowledged
        // (one stream query rather than one per partition consumer).
        let stream = &self.work_queue.stream;
        let info = self
            .jetstream
            .get_stream(stream)
            .await
            .map_err(|e| BusError::Connection(format!("stream {stream}: {e}")))?;
        Ok(info.cached_info().state.messages)
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn connection_events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.connection_events.subscribe()
    }

    async fn key_value(
        &self,
        bucket: &str,
        purpose: &str,
        expire_after: Option<Duration>,
    ) -> Result<Arc<dyn KeyValue>, BusError> {
        // The bucket's stream is created here, in the layout JetStream KV uses, rather than by
        // `create_key_value`: that one first queries the account, whose reply does not parse
        // on NATS 2.9 servers.
        let max_age = expire_after.unwrap_or_default();
        let stream = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(purpose.to_owned()),
            max_age,
            // JetStream refuses a duplicate window longer than the entries live (zero: its
            // default, for entries that do not expire).
            duplicate_window: max_age,
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let what = format!("key-value bucket {bucket}");
        create_or_update_stream(&self.jetstream, stream)
            .await
            .map_err(|e| stream_error(what.clone(), self.replicas, e))?;
        // Just created on a cluster, the bucket's stream may answer "not found" for a moment
        // while it elects its leader (seen with two presence replicas starting together).
        let settling = |e: &async_nats::jetstream::context::KeyValueError| {
            e.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket
        };
        let store = while_settling(&what, settling, || self.jetstream.get_key_value(bucket))
            .await
            .map_err(|e| BusError::Connection(format!("{what}: {e}")))?;
        Ok(Arc::new(NatsKeyValue(store)))
    }
}

struct JetStreamAcker(jetstream::Message);

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.0.ack().await.map_err(|e| BusError::Connection(format!("ack: {e}")))
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.0.ack_with(jetstream::AckKind::Progress).await.map_err(|e| BusError::Connection(format!("progress: {e}")))
    }
}

struct NatsKeyValue(kv::Store);

#[async_trait]
impl KeyValue for NatsKeyValue {
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        self.0.put(key, value).await.map(|_| ()).map_err(|e| BusError::Connection(format!("kv put {key}: {e}")))
    }

    async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.0.delete(key).await.map_err(|e| BusError::Connection(format!("kv delete {key}: {e}")))
    }

    async fn entries(&self) -> Result<Vec<(String, Bytes)>, BusError> {
        let keys: Vec<String> = match self.0.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(|e| BusError::Connection(format!("kv keys: {e}")))?,
            Err(e) => return Err(BusError::Connection(format!("kv keys: {e}"))),
        };
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) =
                self.0.get(&key).await.map_err(|e| BusError::Connection(format!("kv get {key}: {e}")))?
            {
                entries.push((key, value));
            }
        }
        Ok(entries)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BusError> {
        match self.0.create(key, value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(BusError::Connection(format!("kv create {key}: {e}"))),
        }
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<Option<u64>, BusError> {
        match self.0.update(key, value, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(BusError::Connection(format!("kv update {key}: {e}"))),
        }
    }
}
