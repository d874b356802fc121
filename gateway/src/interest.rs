//! Subscriptions by interest: a gateway listens to a conversation's or a user's subject only
//! while one of its own sockets needs it, so its inbound traffic grows with its sockets, not
//! with the cluster.
//!
//! Each subject has a holder count. The first holder subscribes and starts a task that hands
//! every message to the subject's handler; the last one to let go drops the subscription.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chat_bus::{Bus, BusError, Message};
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// The subscriptions of a gateway. Each held subject may carry an attachment of type `T`,
/// made with its subscription and shared by all its holders (a room's delivery state, say).
pub struct Interest<T = ()> {
    bus: Arc<dyn Bus>,
    subscriptions: Mutex<HashMap<String, Held<T>>>,
}

struct Held<T> {
    holders: usize,
    forwarder: JoinHandle<()>,
    attachment: T,
}

impl<T: Clone> Interest<T> {
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
        let mut subscriptions = self.subscriptions.lock().await;
        if let Some(held) = subscriptions.get_mut(&subject) {
            held.holders += 1;
            return Ok(held.attachment.clone());
        }
        let mut messages = self.bus.subscribe(&subject).await?;
        let (attachment, handler) = make();
        let forwarder = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                handler(message).await;
            }
        });
        subscriptions.insert(subject, Held { holders: 1, forwarder, attachment: attachment.clone() });
        Ok(attachment)
    }

    /// Removes a holder of `subject`; the last one unsubscribes.
    pub async fn release(&self, subject: &str) {
        let mut subscriptions = self.subscriptions.lock().await;
        if let Some(held) = subscriptions.get_mut(subject) {
            held.holders -= 1;
            if held.holders == 0 {
                if let Some(held) = subscriptions.remove(subject) {
                    // Aborting drops the subscription stream, which unsubscribes.
                    held.forwarder.abort();
                }
            }
        }
    }

    /// The attachments of every subject held now.
    pub async fn attachments(&self) -> Vec<T> {
        self.subscriptions.lock().await.values().map(|held| held.attachment.clone()).collect()
    }

    /// How many subjects this gateway listens to now.
    pub async fn subject_count(&self) -> usize {
        self.subscriptions.lock().await.len()
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
}
