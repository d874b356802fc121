//! Subscriptions by interest: a gateway listens to a conversation's or a user's subject only
//! while one of its own sockets needs it, so its inbound traffic grows with its sockets, not
//! with the cluster.
//!
//! Each subject has a holder count. The first holder subscribes and starts a task that hands
//! every message to the subject's handler; the last one to let go drops the subscription.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chat_bus::{Bus, BusError, Message};
use futures::StreamExt;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// The subscriptions of a gateway. Each held subject may carry an attachment of type `T`,
/// made with its subscription and shared by all its holders (a room's delivery state, say).
///
/// The map is locked only to count holders, never across a call to the bus: subscribing
/// waits for the server (a round trip), and the joins of other rooms must not queue behind
/// it. Holders of one subject wait for its one subscription together.
pub struct Interest<T = ()> {
    bus: Arc<dyn Bus>,
    subscriptions: Mutex<HashMap<String, Held<T>>>,
}

struct Held<T> {
    holders: usize,
    /// Set once the subscription is in place.
    subscribed: Arc<OnceCell<Subscribed<T>>>,
}

struct Subscribed<T> {
    forwarder: JoinHandle<()>,
    attachment: T,
}

impl<T: Clone + Send + Sync + 'static> Interest<T> {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self { bus, subscriptions: Mutex::new(HashMap::new()) }
    }

    /// Adds a holder of `subject` and returns its attachment. When it is the first holder,
    /// calls `make` for the attachment and the handler, subscribes, and hands each message to
    /// the handler, one at a time, in order. Returns once the subscription is in place.
    pub async fn acquire_with<H, Fut>(&self, subject: String, make: impl FnOnce() -> (T, H)) -> Result<T, BusError>
    where
        H: Fn(Message) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let subscribed = {
            let mut subscriptions = self.lock();
            let held =
                subscriptions.entry(subject.clone()).or_insert_with(|| Held { holders: 0, subscribed: Arc::default() });
            held.holders += 1;
            held.subscribed.clone()
        };
        let result = subscribed
            .get_or_try_init(|| async {
                let mut messages = self.bus.subscribe(&subject).await?;
                let (attachment, handler) = make();
                let forwarder = tokio::spawn(async move {
                    while let Some(message) = messages.next().await {
                        handler(message).await;
                    }
                });
                Ok(Subscribed { forwarder, attachment })
            })
            .await;
        match result {
            Ok(subscribed) => Ok(subscribed.attachment.clone()),
            Err(e) => {
                // Not a holder after all; a holder still waiting tries to subscribe itself.
                self.release(&subject).await;
                Err(e)
            }
        }
    }

    /// Removes a holder of `subject`; the last one unsubscribes.
    pub async fn release(&self, subject: &str) {
        let mut subscriptions = self.lock();
        let Some(held) = subscriptions.get_mut(subject) else { return };
        held.holders -= 1;
        if held.holders == 0 {
            // Every holder has returned from `acquire_with`, so the subscription is in place
            // (or failed, leaving nothing to drop). Aborting the forwarder drops the
            // subscription stream, which unsubscribes.
            if let Some(subscribed) =
                subscriptions.remove(subject).and_then(|held| held.subscribed.get().map(|s| s.forwarder.abort_handle()))
            {
                subscribed.abort();
            }
        }
    }

    /// The attachments of every subject held now.
    pub async fn attachments(&self) -> Vec<T> {
        self.lock().values().filter_map(|held| held.subscribed.get().map(|s| s.attachment.clone())).collect()
    }

    /// How many subjects this gateway listens to now.
    pub async fn subject_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held<T>>> {
        // Every update under this lock is one counter change, insert or remove: a panic
        // cannot leave it half-done.
        self.subscriptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Interest<()> {
    /// [`Interest::acquire_with`] for subjects without an attachment.
    pub async fn acquire<H, Fut>(&self, subject: String, handler: H) -> Result<(), BusError>
    where
        H: Fn(Message) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.acquire_with(subject, || ((), handler)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chat_bus::MemoryBus;
    use std::time::Duration;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn subscribes_once_and_unsubscribes_with_the_last_holder() {
        let bus = Arc::new(MemoryBus::new());
        let interest: Interest = Interest::new(bus.clone());
        let (tx, mut rx) = mpsc::unbounded_channel();
        for _ in 0..2 {
            let tx = tx.clone();
            interest
                .acquire("chat.conv.1.msg".into(), move |m: Message| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(m.payload);
                    }
                })
                .await
                .unwrap();
        }
        assert_eq!(interest.subject_count().await, 1);
        bus.publish("chat.conv.1.msg", Bytes::from_static(b"a")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, "a");
        assert!(rx.try_recv().is_err(), "one subscription, so one delivery");

        interest.release("chat.conv.1.msg").await;
        assert_eq!(interest.subject_count().await, 1, "one holder left");
        interest.release("chat.conv.1.msg").await;
        assert_eq!(interest.subject_count().await, 0);
        tokio::task::yield_now().await;
        bus.publish("chat.conv.1.msg", Bytes::from_static(b"b")).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), rx.recv()).await.is_err());
    }

    #[tokio::test]
    async fn concurrent_holders_share_one_subscription() {
        let bus = Arc::new(MemoryBus::new());
        let interest: Arc<Interest<u32>> = Arc::new(Interest::new(bus.clone()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let makes = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let acquirers = (0..10).map(|_| {
            let (interest, tx, makes) = (interest.clone(), tx.clone(), makes.clone());
            tokio::spawn(async move {
                interest
                    .acquire_with("chat.conv.2.msg".into(), move || {
                        let made = makes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let handler = move |m: Message| {
                            let tx = tx.clone();
                            async move {
                                let _ = tx.send(m.payload);
                            }
                        };
                        (made, handler)
                    })
                    .await
                    .unwrap()
            })
        });
        let attachments = futures::future::join_all(acquirers).await;
        assert!(attachments.iter().all(|a| *a.as_ref().unwrap() == 0), "all holders share the first attachment");
        assert_eq!(makes.load(std::sync::atomic::Ordering::SeqCst), 1, "subscribed once");
        bus.publish("chat.conv.2.msg", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.unwrap().unwrap(), "x");
        assert!(tokio::time::timeout(Duration::from_millis(50), rx.recv()).await.is_err(), "one delivery");
        for _ in 0..10 {
            interest.release("chat.conv.2.msg").await;
        }
        assert_eq!(interest.subject_count().await, 0);
    }
}
