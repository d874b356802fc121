//! [`MemoryBus`]: the bus inside one process, for the all-in-one mode.
//!
//! Core subjects behave as on NATS: a message reaches the subscriptions that exist when it is
//! published, a queue group hands it to one member, and a subscriber that falls too far behind
//! loses messages (with a warning) instead of growing memory without bound. The work queue is a
//! bounded channel: `enqueue` waits while it is full, which slows senders down rather than
//! dropping their messages.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::subject::{has_wildcard, subject_matches};
use crate::{Acker, Bus, BusError, ConnectionEvent, Job, KeyValue, Message, Subscription, WorkQueue};

/// A job waiting in the in-process work queue: subject, payload, when it was queued.
type QueuedJob = (String, Bytes, SystemTime);

/// How many messages a subscription may hold before new ones are dropped.
const SUBSCRIPTION_CAPACITY: usize = 65_536;
/// How many jobs the work queue holds before `enqueue` waits.
const WORK_QUEUE_CAPACITY: usize = 65_536;

/// The in-process bus. Cloning it gives another handle to the same bus.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    jobs_tx: mpsc::Sender<QueuedJob>,
    jobs_rx: Mutex<Option<mpsc::Receiver<QueuedJob>>>,
    buckets: Mutex<HashMap<String, Arc<MemoryKeyValue>>>,
    /// Never sends: the in-process bus cannot disconnect.
    connection_events: tokio::sync::broadcast::Sender<ConnectionEvent>,
}

#[derive(Default)]
struct Registry {
    /// Subscriptions to literal subjects, found by one lookup.
    literal: HashMap<String, Vec<Subscriber>>,
    /// Subscriptions with wildcards, matched one by one (there are few: one per service).
    wildcard: Vec<(String, Subscriber)>,
}

#[derive(Clone)]
struct Subscriber {
    id: u64,
    group: Option<String>,
    tx: mpsc::Sender<Message>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        let (jobs_tx, jobs_rx) = mpsc::channel(WORK_QUEUE_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::default()),
                next_id: AtomicU64::new(1),
                jobs_tx,
                jobs_rx: Mutex::new(Some(jobs_rx)),
                buckets: Mutex::new(HashMap::new()),
                connection_events: tokio::sync::broadcast::Sender::new(1),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the registry half-updated (every
        // update is a single push or retain), so a poisoned lock is still safe to use.
        self.inner.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add_subscriber(&self, pattern: &str, group: Option<&str>) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Subscriber { id, group: group.map(str::to_owned), tx };
        let mut registry = self.registry();
        if has_wildcard(pattern) {
            registry.wildcard.push((pattern.to_owned(), subscriber));
        } else {
            registry.literal.entry(pattern.to_owned()).or_default().push(subscriber);
        }
        Box::pin(MemorySubscription { rx, guard: Unsubscribe { bus: self.clone(), pattern: pattern.to_owned(), id } })
    }

    fn remove_subscriber(&self, pattern: &str, id: u64) {
        let mut registry = self.registry();
        if has_wildcard(pattern) {
            registry.wildcard.retain(|(_, s)| s.id != id);
        } else if let Some(list) = registry.literal.get_mut(pattern) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                registry.literal.remove(pattern);
            }
        }
    }

    /// Delivers to every plain subscriber and to one member of each queue group; returns how
    /// many subscribers were handed the message.
    fn deliver(&self, message: Message) -> usize {
        let targets: Vec<Subscriber> = {
            let registry = self.registry();
            let mut plain = Vec::new();
            let mut groups: HashMap<&str, Vec<&Subscriber>> = HashMap::new();
            let literal = registry.literal.get(&message.subject).into_iter().flatten();
            let wildcard = registry
                .wildcard
                .iter()
                .filter(|(pattern, _)| subject_matches(pattern, &message.subject))
                .map(|(_, s)| s);
            for subscriber in literal.chain(wildcard) {
                match &subscriber.group {
                    None => plain.push(subscriber.clone()),
                    Some(group) => groups.entry(group).or_default().push(subscriber),
                }
            }
            let turn = self.inner.next_id.fetch_add(1, Ordering::Relaxed) as usize;
            plain.extend(groups.into_values().map(|members| members[turn % members.len()].clone()));
            plain
        };
        let mut delivered = 0;
        for subscriber in targets {
            match subscriber.tx.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(subject = %message.subject, "slow subscriber: message dropped");
                }
                // The subscription is being dropped; its guard unregisters it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        delivered
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.deliver(Message { subject: subject.to_owned(), reply: None, payload });
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        Ok(self.add_subscriber(subject, None))
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        Ok(self.add_subscriber(subject, Some(group)))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes, BusError> {
        let inbox = format!("_INBOX.{}", uuid::Uuid::new_v4().simple());
        let mut answers = self.add_subscriber(&inbox, None);
        let request = Message { subject: subject.to_owned(), reply: Some(inbox), payload };
        if self.deliver(request) == 0 {
            return Err(BusError::NoResponders { subject: subject.to_owned() });
        }
        match tokio::time::timeout(timeout, answers.next()).await {
            Ok(Some(answer)) => Ok(answer.payload),
            Ok(None) | Err(_) => Err(BusError::Timeout { subject: subject.to_owned(), timeout }),
        }
    }

    async fn enqueue(&self, subject: &str, _dedup_id: &str, payload: Bytes) -> Result<(), BusError> {
        self.inner
            .jobs_tx
            .send((subject.to_owned(), payload, SystemTime::now()))
            .await
            .map_err(|_| BusError::Rejected("the in-process work queue has no consumer any more".into()))
    }

    async fn work_queue(&self, _consumer: &str) -> Result<WorkQueue, BusError> {
        let rx = self
            .inner
            .jobs_rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| BusError::Rejected("the in-process work queue has only one consumer".into()))?;
        let jobs = tokio_stream_from(rx)
            .map(|(subject, payload, queued_at)| Job::new(subject, payload, Some(queued_at), Box::new(NothingToAck)));
        Ok(Box::pin(jobs))
    }

    async fn work_queue_pending(&self, _consumer: &str) -> Result<u64, BusError> {
        // Jobs taken from the channel are being worked on; those still in it wait.
        Ok((WORK_QUEUE_CAPACITY - self.inner.jobs_tx.capacity()) as u64)
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn connection_events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.inner.connection_events.subscribe()
    }

    async fn key_value(
        &self,
        bucket: &str,
        _purpose: &str,
        expire_after: Option<Duration>,
    ) -> Result<Arc<dyn KeyValue>, BusError> {
        let mut buckets = self.inner.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket: Arc<dyn KeyValue> =
            buckets.entry(bucket.to_owned()).or_insert_with(|| Arc::new(MemoryKeyValue::new(expire_after))).clone();
        Ok(bucket)
    }
}

/// A key-value bucket in memory: it lives as long as the process, like everything else here.
/// Revisions count writes across the bucket, as JetStream's do.
#[derive(Default)]
struct MemoryKeyValue {
    expire_after: Option<Duration>,
    entries: Mutex<MemoryEntries>,
}

#[derive(Default)]
struct MemoryEntries {
    last_revision: u64,
    /// Value, revision, and when it was written.
    by_key: HashMap<String, (Bytes, u64, tokio::time::Instant)>,
}

impl MemoryKeyValue {
    fn new(expire_after: Option<Duration>) -> Self {
        Self { expire_after, entries: Mutex::default() }
    }

    /// The entries, with those older than the bucket's expiry gone.
    fn lock(&self) -> MutexGuard<'_, MemoryEntries> {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(expire_after) = self.expire_after {
            entries.by_key.retain(|_, (_, _, written)| written.elapsed() < expire_after);
        }
        entries
    }
}

impl MemoryEntries {
    fn write(&mut self, key: &str, value: Bytes) -> u64 {
        self.last_revision += 1;
        self.by_key.insert(key.to_owned(), (value, self.last_revision, tokio::time::Instant::now()));
        self.last_revision
    }
}

#[async_trait]
impl KeyValue for MemoryKeyValue {
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        self.lock().write(key, value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.lock().by_key.remove(key);
        Ok(())
    }

    async fn entries(&self) -> Result<Vec<(String, Bytes)>, BusError> {
        Ok(self.lock().by_key.iter().map(|(k, (v, _, _))| (k.clone(), v.clone())).collect())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Option<u64>, BusError> {
        let mut entries = self.lock();
        if entries.by_key.contains_key(key) {
            return Ok(None);
        }
        Ok(Some(entries.write(key, value)))
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<Option<u64>, BusError> {
        let mut entries = self.lock();
        match entries.by_key.get(key) {
            Some((_, current, _)) if *current == revision => Ok(Some(entries.write(key, value))),
            _ => Ok(None),
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// In one process a job lives exactly as long as the process: there is nothing to acknowledge.
struct NothingToAck;

#[async_trait]
impl Acker for NothingToAck {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        Ok(())
    }
}

struct MemorySubscription {
    rx: mpsc::Receiver<Message>,
    #[allow(dead_code)] // held for its Drop
    guard: Unsubscribe,
}

impl Stream for MemorySubscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

struct Unsubscribe {
    bus: MemoryBus,
    pattern: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.bus.remove_subscriber(&self.pattern, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(sub: &mut Subscription) -> Message {
        tokio::time::timeout(Duration::from_secs(1), sub.next()).await.expect("message in time").expect("open")
    }

    #[tokio::test]
    async fn publish_reaches_literal_and_wildcard_subscribers() {
        let bus = MemoryBus::new();
        let mut literal = bus.subscribe("chat.msg.1").await.unwrap();
        let mut wildcard = bus.subscribe("chat.msg.*").await.unwrap();
        let mut other = bus.subscribe("chat.msg.2").await.unwrap();
        bus.publish("chat.msg.1", Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(next(&mut literal).await.payload, "hi");
        assert_eq!(next(&mut wildcard).await.subject, "chat.msg.1");
        assert!(tokio::time::timeout(Duration::from_millis(50), other.next()).await.is_err());
    }

    #[tokio::test]
    async fn queue_group_hands_each_message_to_one_member() {
        let bus = MemoryBus::new();
        let mut a = bus.queue_subscribe("rpc", "workers").await.unwrap();
        let mut b = bus.queue_subscribe("rpc", "workers").await.unwrap();
        for _ in 0..10 {
            bus.publish("rpc", Bytes::new()).await.unwrap();
        }
        let mut received = 0;
        for sub in [&mut a, &mut b] {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), sub.next()).await {
                received += 1;
            }
        }
        assert_eq!(received, 10);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = MemoryBus::new();
        let sub = bus.subscribe("chat.user.1").await.unwrap();
        assert_eq!(bus.registry().literal.len(), 1);
        drop(sub);
        assert!(bus.registry().literal.is_empty());
    }

    #[tokio::test]
    async fn request_gets_the_answer_or_says_why_not() {
        let bus = MemoryBus::new();
        let err = bus.request("rpc.echo", Bytes::new(), Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, BusError::NoResponders { .. }), "{err}");

        let mut server = bus.subscribe("rpc.echo").await.unwrap();
        let responder = bus.clone();
        tokio::spawn(async move {
            let request = next(&mut server).await;
            let reply = request.reply.expect("reply subject");
            responder.publish(&reply, request.payload).await.unwrap();
        });
        let answer = bus.request("rpc.echo", Bytes::from_static(b"ping"), Duration::from_secs(1)).await.unwrap();
        assert_eq!(answer, "ping");
    }

    #[tokio::test]
    async fn jobs_not_yet_taken_are_pending() {
        let bus = MemoryBus::new();
        let mut jobs = bus.work_queue("persister").await.unwrap();
        assert_eq!(bus.work_queue_pending("persister").await.unwrap(), 0);
        bus.enqueue("chat.in.1", "a", Bytes::from_static(b"j")).await.unwrap();
        bus.enqueue("chat.in.1", "b", Bytes::from_static(b"k")).await.unwrap();
        assert_eq!(bus.work_queue_pending("persister").await.unwrap(), 2);
        assert_eq!(jobs.next().await.unwrap().payload, "j");
        assert_eq!(jobs.next().await.unwrap().payload, "k");
        assert_eq!(bus.work_queue_pending("persister").await.unwrap(), 0);
        assert!(bus.is_connected());
    }

    #[tokio::test]
    async fn work_queue_keeps_order_and_has_one_consumer() {
        let bus = MemoryBus::new();
        let mut jobs = bus.work_queue("persister").await.unwrap();
        assert!(bus.work_queue("persister").await.is_err());
        for i in 0..5u8 {
            bus.enqueue("chat.in.1", &i.to_string(), Bytes::from(vec![i])).await.unwrap();
        }
        for i in 0..5u8 {
            let job = jobs.next().await.unwrap();
            assert_eq!(job.payload.as_ref(), &[i]);
            assert!(job.enqueued_at.is_some_and(|at| at <= std::time::SystemTime::now()), "when it was queued");
            job.ack().await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_created_once_updated_by_revision_and_expires() {
        let bus = MemoryBus::new();
        let kv = bus.key_value("lease", "a lease", Some(Duration::from_secs(5))).await.unwrap();
        let first = kv.create("leader", Bytes::from_static(b"a")).await.unwrap().expect("free key");
        assert_eq!(kv.create("leader", Bytes::from_static(b"b")).await.unwrap(), None, "held");
        let second = kv.update("leader", Bytes::from_static(b"a"), first).await.unwrap().expect("same revision");
        assert_eq!(kv.update("leader", Bytes::from_static(b"b"), first).await.unwrap(), None, "stale revision");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(kv.update("leader", Bytes::from_static(b"a"), second).await.unwrap().is_some(), "renewed in time");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(kv.entries().await.unwrap().is_empty(), "expired");
        assert!(kv.create("leader", Bytes::from_static(b"b")).await.unwrap().is_some(), "free again");
    }
}
