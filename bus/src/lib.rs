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

mod memory;
mod nats;
mod subject;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use memory::MemoryBus;
pub use nats::{NatsBus, WorkQueueSettings};
pub use subject::subject_matches;

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
    acker: Box<dyn Acker>,
}

impl Job {
    pub fn new(subject: String, payload: Bytes, acker: Box<dyn Acker>) -> Self {
        Self { subject, payload, acker }
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
}

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

    /// Joins the consumers of the work queue under the durable name `consumer`: consumers
    /// with the same name share the jobs.
    async fn work_queue(&self, consumer: &str) -> Result<WorkQueue, BusError>;

    /// The connection's losses and restorations, in order: core messages published while
    /// disconnected are lost, so subscribers that cannot afford a gap resynchronise.
    fn connection_events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent>;

    /// Opens (creating if needed) the key-value bucket `bucket`.
    async fn key_value(&self, bucket: &str) -> Result<Arc<dyn KeyValue>, BusError>;
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
}
