//! The message bus that connects gateways, persisters and presence.
//!
//! [`Bus`] is the one interface the services are written against. It offers the two kinds of
//! traffic the design needs:
//!
//! - **core pub/sub** ([`Bus::publish`], [`Bus::subscribe`], [`Bus::request`]): fire-and-forget,
//!   at-most-once, with NATS subject semantics (`*` matches one token, `>` the rest) and queue
//!   groups that hand each message to one member;
//! - a **durable work queue** ([`Bus::enqueue`], [`Bus::work_queue`]): a message accepted by
//!   `enqueue` stays until a consumer acknowledges it.
//!
//! It also offers small **key-value buckets** ([`Bus::key_value`]) for state that must outlive
//! a process.
//!
//! [`MemoryBus`] implements it inside one process for the all-in-one mode; [`NatsBus`]
//! implements it on NATS and JetStream for the cluster mode. The services cannot tell which one
//! they run on.
//!
//! [`Backoff`] retries an operation that fails for a while (a dependency that is not up yet):
//! here because every role and the bus itself need it.

mod backoff;
mod memory;
mod nats;
mod servers;
mod subject;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use backoff::{Backoff, Retryable};
pub use memory::MemoryBus;
pub use nats::{NatsBus, WorkQueueSettings, RECONNECTS_METRIC};
pub use servers::{NatsServers, NatsUrlError};
pub use subject::subject_matches;

/// Name/value pairs such as the W3C trace context (`traceparent`, `tracestate`) that
/// `chat-telemetry` writes and reads. They travel inside payloads (the `trace` maps of the
/// protobuf messages), since a batch carries many messages of many traces. Names are compared
/// without regard to case, as in HTTP; a name holds one value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing a value it had.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Headers carried inside a payload (a map in a protobuf message, say) rather than beside it.
impl FromIterator<(String, String)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut headers = Self::new();
        for (name, value) in pairs {
            headers.insert(name, value);
        }
        headers
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Describes the bus's metrics to the installed recorder and shows them at zero before any
/// event (a dashboard then finds the series even when nothing happened yet).
pub fn describe_metrics() {
    metrics::describe_counter!(RECONNECTS_METRIC, "Reconnections to NATS after a lost connection");
    metrics::counter!(RECONNECTS_METRIC).absolute(0);
}

/// A message on a core subject.
#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    /// Where the publisher waits for an answer (request-reply), if it does.
    pub reply: Option<String>,
    pub payload: Bytes,
}

/// The messages of one subscription; dropping it unsubscribes.
pub type Subscription = Pin<Box<dyn Stream<Item = Message> + Send>>;

/// A message taken from the durable work queue. Until [`Job::ack`] is called the queue may hand
/// it out again (after a restart of the consumer, say), so consumers must be idempotent.
pub struct Job {
    pub subject: String,
    pub payload: Bytes,
    /// When the queue stored the job, by the queue's clock (JetStream's timestamp: the NATS
    /// server's), if it says: how long a job waited to be handed out.
    pub enqueued_at: Option<SystemTime>,
    acker: Box<dyn Acker>,
}

impl Job {
    pub fn new(subject: String, payload: Bytes, enqueued_at: Option<SystemTime>, acker: Box<dyn Acker>) -> Self {
        Self { subject, payload, enqueued_at, acker }
    }

    /// Marks the job done: the queue will not hand it out again.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Tells the queue the job is still being worked on, so it is not handed out again yet.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acker.in_progress().await
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("subject", &self.subject).field("len", &self.payload.len()).finish()
    }
}

/// How a [`Job`] is acknowledged to the queue that handed it out.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    async fn in_progress(&self) -> Result<(), BusError>;
}

/// The jobs handed to one consumer.
pub type WorkQueue = Pin<Box<dyn Stream<Item = Job> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("no answer on {subject} within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("nobody is listening on {subject}")]
    NoResponders { subject: String },
    #[error("the work queue refused the message: {0}")]
    Rejected(String),
    #[error("bus connection failed: {0}")]
    Connection(String),
    /// JetStream cannot keep a stream, consumer or bucket in the number of replicas asked
    /// for: fewer servers than replicas, or a server that is not part of a cluster.
    #[error("{what} cannot have {replicas} replicas on this NATS: {reason}")]
    Replicas { what: String, replicas: usize, reason: String },
}

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes on a core subject; subscribers that are not listening now never see it.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Receives every message published on subjects matching `subject` from now on.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError>;

    /// Like [`Bus::subscribe`], but each message goes to only one member of `group`.
    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError>;

    /// Publishes with a reply subject and waits for the first answer.
    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes, BusError>;

    /// Puts a message on the durable work queue; returns once the queue holds it. `dedup_id`
    /// identifies the message: the queue may drop a second message with the same id.
    async fn enqueue(&self, subject: &str, dedup_id: &str, payload: Bytes) -> Result<(), BusError>;

    /// How many jobs wait in the work queue for the consumers named `consumer` (handed out
    /// but not yet acknowledged included): the consumers' lag.
    async fn work_queue_pending(&self, consumer: &str) -> Result<u64, BusError>;

    /// Whether the bus connection is up now (always, in process).
    fn is_connected(&self) -> bool;

    /// Joins the consumers of the work queue under the durable name `consumer`: consumers
    /// with the same name share the jobs.
    async fn work_queue(&self, consumer: &str) -> Result<WorkQueue, BusError>;

    /// The connection's losses and restorations, in order: core messages published while
    /// disconnected are lost, so subscribers that cannot afford a gap resynchronise.
    fn connection_events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent>;

    /// Opens (creating if needed) the key-value bucket `bucket`, described by `purpose`. With
    /// `expire_after`, an entry not written again for that long disappears by itself: what a
    /// lease needs. Every opener of a bucket passes the same expiry.
    async fn key_value(
        &self,
        bucket: &str,
        purpose: &str,
        expire_after: Option<Duration>,
    ) -> Result<Arc<dyn KeyValue>, BusError>;
}

/// A change of the bus connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    Lost,
    Restored,
}

/// A small durable map: what survives a restart of the process that writes it.
#[async_trait]
pub trait KeyValue: Send + Sync {
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError>;
    async fn delete(&self, key: &str) -> Result<(), BusError>;
    /// Every key and its value.
    async fn entries(&self) -> Result<Vec<(String, Bytes)>, BusError>;
    /// Writes `value` under `key` if the key holds nothing (never written, deleted or
    /// expired): the entry's revision, or `None` when the key holds a value.
    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BusError>;
    /// Writes `value` under `key` if the key's revision is still `revision`: the new revision,
    /// or `None` when the key was written, deleted or expired meanwhile.
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<Option<u64>, BusError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_compared_without_regard_to_case() {
        let mut headers = Headers::new();
        headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        headers.insert("TraceParent", "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01");
        assert_eq!(headers.get("TRACEPARENT"), Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"));
        assert_eq!(headers.names().count(), 1, "a second insert replaces the value");
        assert!(Headers::new().is_empty());
    }
}
