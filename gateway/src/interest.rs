//! This gateway's interest in bus subjects that come and go with its sockets: a conversation's
//! room subject while a local socket is joined to it, a user's subject while the user has a
//! socket here. Each key is held by a count of holders; the first subscribes (the others wait
//! for that one subscription), the last unsubscribes. So a gateway hears only what its own
//! sockets need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_bus::BusError;

/// Held keys (a conversation or user id), each with its value (a room's delivery state, or
/// nothing) and its subscription.
pub(crate) struct Interests<V>(Mutex<HashMap<i64, Held<V>>>);

impl<V> Default for Interests<V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

struct Held<V> {
    holders: usize,
    value: V,
    /// Set once the subject is subscribed. The holders wait for the one subscription
    /// together; dropped with the key, it unsubscribes.
    listening: Arc<tokio::sync::OnceCell<Listening>>,
}

/// The task that hands a subject's messages on; dropping this stops the task, which drops the
/// subscription.
pub(crate) struct Listening(tokio::task::AbortHandle);

impl Listening {
    pub(crate) fn new(task: tokio::task::AbortHandle) -> Self {
        Self(task)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<V: Clone> Interests<V> {
    /// Adds a holder of `key`, making its value with `make` when it is new; the value. The
    /// first holder subscribes with `listen` (the others wait for it), so that when this
    /// returns everything published on the subject from now on is heard. On failure the
    /// holder is not added.
    pub(crate) async fn open<F, Fut>(&self, key: i64, make: impl FnOnce() -> V, listen: F) -> Result<V, BusError>
    where
        F: FnOnce(V) -> Fut,
        Fut: std::future::Future<Output = Result<Listening, BusError>>,
    {
        // The map is never locked across the subscription (a round trip to the bus): other
        // keys must not queue behind it.
        let (value, listening) = {
            let mut held = self.lock();
            let entry =
                held.entry(key).or_insert_with(|| Held { holders: 0, value: make(), listening: Arc::default() });
            entry.holders += 1;
            (entry.value.clone(), entry.listening.clone())
        };
        match listening.get_or_try_init(|| listen(value.clone())).await {
            Ok(_) => Ok(value),
            Err(e) => {
                // A holder still waiting tries to subscribe itself.
                self.close(key);
                Err(e)
            }
        }
    }

    /// Removes a holder; the last one unsubscribes.
    pub(crate) fn close(&self, key: i64) {
        let closed = {
            let mut held = self.lock();
            match held.get_mut(&key) {
                Some(entry) if entry.holders > 1 => {
                    entry.holders -= 1;
                    None
                }
                Some(_) => held.remove(&key),
                None => None,
            }
        };
        drop(closed); // unsubscribes, outside the lock
    }

    /// The value of `key`, if it is held.
    pub(crate) fn get(&self, key: i64) -> Option<V> {
        self.lock().get(&key).map(|entry| entry.value.clone())
    }

    pub(crate) fn all(&self) -> Vec<V> {
        self.lock().values().map(|entry| entry.value.clone()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Held<V>>> {
        // Every update under this lock is one counter change, insert or remove.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chat_bus::{Bus, MemoryBus};
    use futures::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// What a room's listener would do with its subject: here, count the subscriptions made
    /// and forward every payload heard.
    struct Probe {
        bus: MemoryBus,
        subscriptions: AtomicUsize,
        heard: mpsc::UnboundedSender<Bytes>,
    }

    impl Probe {
        async fn listen(self: Arc<Self>, subject: &'static str) -> Result<Listening, BusError> {
            self.subscriptions.fetch_add(1, Ordering::SeqCst);
            let mut messages = self.bus.subscribe(subject).await?;
            let heard = self.heard.clone();
            let task = tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    let _ = heard.send(message.payload);
                }
            });
            Ok(Listening::new(task.abort_handle()))
        }
    }

    async fn heard_within(heard: &mut mpsc::UnboundedReceiver<Bytes>, wait: Duration) -> Vec<Bytes> {
        let mut got = Vec::new();
        while let Ok(Some(payload)) = tokio::time::timeout(wait, heard.recv()).await {
            got.push(payload);
        }
        got
    }

    #[tokio::test]
    async fn a_subject_is_subscribed_once_while_held_and_dropped_with_its_last_holder() {
        let bus = MemoryBus::new();
        let (tx, mut heard) = mpsc::unbounded_channel();
        let probe = Arc::new(Probe { bus: bus.clone(), subscriptions: AtomicUsize::new(0), heard: tx });
        let rooms = Interests::<()>::default();

        rooms.open(7, || (), |_| probe.clone().listen("chat.room.7")).await.expect("opens");
        rooms.open(7, || (), |_| probe.clone().listen("chat.room.7")).await.expect("holds");
        assert_eq!(probe.subscriptions.load(Ordering::SeqCst), 1, "one subscription for both holders");
        assert_eq!(rooms.len(), 1);

        bus.publish("chat.room.7", Bytes::from_static(b"m1")).await.expect("published");
        assert_eq!(heard_within(&mut heard, Duration::from_millis(100)).await, vec![Bytes::from_static(b"m1")]);

        rooms.close(7);
        bus.publish("chat.room.7", Bytes::from_static(b"m2")).await.expect("published");
        assert_eq!(heard_within(&mut heard, Duration::from_millis(100)).await.len(), 1, "still held by one");

        rooms.close(7);
        assert_eq!(rooms.len(), 0);
        tokio::task::yield_now().await; // the aborted listener drops its subscription
        bus.publish("chat.room.7", Bytes::from_static(b"m3")).await.expect("published");
        assert!(heard_within(&mut heard, Duration::from_millis(100)).await.is_empty(), "closed: nothing heard");

        rooms.open(7, || (), |_| probe.clone().listen("chat.room.7")).await.expect("reopens");
        assert_eq!(probe.subscriptions.load(Ordering::SeqCst), 2, "a reopened room subscribes again");
    }

    #[tokio::test]
    async fn a_key_whose_subscription_fails_is_not_held() {
        let rooms = Interests::<()>::default();
        let failed = rooms.open(9, || (), |_| async { Err(BusError::Connection("down".into())) }).await;
        assert!(failed.is_err());
        assert_eq!(rooms.len(), 0, "no holder left behind");
    }
}
