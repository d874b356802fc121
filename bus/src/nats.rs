//! [`NatsBus`]: the bus on NATS, for the cluster mode.
//!
//! Core subjects map one to one onto NATS core pub/sub. The work queue is a JetStream stream
//! with work-queue retention (a message stays until a consumer acknowledges it) and a durable
//! pull consumer that all persister replicas share. Key-value buckets are JetStream KV.
//!
//! The stream and buckets are created or updated at start-up, idempotently, by every role that
//! uses them, so no role depends on another having started first.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, message::PublishMessage, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::{Acker, Bus, BusError, ConnectionEvent, Headers, Job, KeyValue, Message, Subscription, WorkQueue};

/// Reconnections of this process's NATS clients, for the dashboards.
pub const RECONNECTS_METRIC: &str = "chat_nats_reconnects_total";

fn to_nats_headers(headers: &Headers) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers.iter() {
        map.insert(name, value);
    }
    map
}

fn from_nats_headers(headers: Option<&async_nats::HeaderMap>) -> Headers {
    let mut out = Headers::new();
    for (name, values) in headers.into_iter().flat_map(|map| map.iter()) {
        if let Some(value) = values.first() {
            out.insert(name.as_ref() as &str, value.as_str());
        }
    }
    out
}

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

    fn stream_config(&self) -> stream::Config {
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
            ..Default::default()
        }
    }
}

/// The bus on a NATS server with JetStream.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    work_queue: Arc<WorkQueueSettings>,
    connection_events: tokio::sync::broadcast::Sender<ConnectionEvent>,
}

impl NatsBus {
    /// Connects once (no retry here: the caller decides how long to keep trying) and makes
    /// sure the work queue's stream exists with `settings`.
    pub async fn connect(url: &str, client_name: &str, settings: WorkQueueSettings) -> Result<Self, BusError> {
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
            .connect(url)
            .await
            .map_err(|e| BusError::Connection(format!("cannot connect to NATS at {url}: {e}")))?;
        let jetstream = jetstream::new(client.clone());
        jetstream
            .create_or_update_stream(settings.stream_config())
            .await
            .map_err(|e| BusError::Connection(format!("cannot create or update stream {}: {e}", settings.stream)))?;
        Ok(Self { client, jetstream, work_queue: Arc::new(settings), connection_events })
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
            headers: from_nats_headers(m.headers.as_ref()),
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
    async fn publish_with_headers(&self, subject: &str, headers: Headers, payload: Bytes) -> Result<(), BusError> {
        let published = if headers.is_empty() {
            self.client.publish(subject.to_owned(), payload).await
        } else {
            self.client.publish_with_headers(subject.to_owned(), to_nats_headers(&headers), payload).await
        };
        published.map_err(|e| BusError::Connection(format!("publish on {subject}: {e}")))
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

    async fn request_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let mut request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        if !headers.is_empty() {
            request = request.headers(to_nats_headers(&headers));
        }
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(answer) => Ok(answer.payload),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => BusError::NoResponders { subject: subject.to_owned() },
                async_nats::RequestErrorKind::TimedOut => BusError::Timeout { subject: subject.to_owned(), timeout },
                _ => BusError::Connection(format!("request on {subject}: {e}")),
            }),
        }
    }

    async fn enqueue_with_headers(
        &self,
        subject: &str,
        dedup_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        // The message id travels as a header too (`Nats-Msg-Id`): set after ours.
        let publish = PublishMessage::build().headers(to_nats_headers(&headers)).payload(payload).message_id(dedup_id);
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
        let mut partitions = Vec::with_capacity(settings.partitions.len());
        for (index, subject) in settings.partitions.iter().enumerate() {
            let name = format!("{consumer}-{index}");
            let config = pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("persisters: store send commands of {subject}")),
                filter_subject: subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                // One message of the partition out at a time: the next is handed out only when
                // this one is acknowledged, which keeps a conversation's messages in order.
                max_ack_pending: 1,
                ..Default::default()
            };
            let consumer = stream
                .get_or_create_consumer(&name, config)
                .await
                .map_err(|e| BusError::Connection(format!("consumer {name}: {e}")))?;
            let messages =
                consumer.messages().await.map_err(|e| BusError::Connection(format!("consuming {subject}: {e}")))?;
            partitions.push(messages);
        }
        let jobs = futures::stream::select_all(partitions).filter_map(|next| async move {
            match next {
                Ok(message) => {
                    let subject = message.subject.to_string();
                    let headers = from_nats_headers(message.headers.as_ref());
                    let payload = message.payload.clone();
                    Some(Job::new(subject, headers, payload, Box::new(JetStreamAcker(message))))
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

    async fn key_value(&self, bucket: &str) -> Result<Arc<dyn KeyValue>, BusError> {
        // The bucket's stream is created here, in the layout JetStream KV uses, rather than by
        // `create_key_value`: that one first queries the account, whose reply does not parse
        // on NATS 2.9 servers.
        let stream = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("chat presence: open sockets".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        };
        let failed = |e: &dyn std::fmt::Display| BusError::Connection(format!("key-value bucket {bucket}: {e}"));
        self.jetstream.create_or_update_stream(stream).await.map_err(|e| failed(&e))?;
        let store = self.jetstream.get_key_value(bucket).await.map_err(|e| failed(&e))?;
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
}
