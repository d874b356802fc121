//! Stored messages into conversation rooms, and the replay of missed ones.
//!
//! A socket that rejoins a conversation may say which message it saw last
//! (`join-conversation {conversationId, lastMessageId}`); it then gets every later message, in
//! id order, before any live one, with no gap. The replay reads history while live messages
//! keep arriving, so the two must be stitched together:
//!
//! 1. the socket is marked *recovering* in the room: from now on the room's live messages are
//!    also kept for it;
//! 2. history after `lastMessageId` is read and sent to the socket; `R` is the last id sent;
//! 3. under the room's lock, the kept live messages above `R` are sent, the socket joins the
//!    room, and the mark is removed.
//!
//! Live delivery takes the same lock per message, so every live message is either kept in
//! step 1–3 or delivered to the socket as a room member after step 3. A message stored before
//! step 1 is in the history read of step 2 (it was committed before it was published). A
//! message can reach the socket twice (read in step 2 and delivered live after step 3); it is
//! recognisable by its id, and ids never go backwards.
//!
//! The room as a whole can miss messages too: core NATS messages published while the gateway
//! was disconnected from NATS are gone. When the connection is lost, every room notes the last
//! id it delivered and starts keeping live messages ([`mark_lost`]); once it is back,
//! [`resync_rooms`] reads what came after the noted id and delivers it, then what was kept.
//! Live delivery skips the ids a room delivered lately, which drops redelivered duplicates and
//! messages read twice, while a message that arrives late (stored before others but published
//! after them, e.g. when a persister gave up on a commit that had in fact succeeded) is still
//! delivered rather than lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_bus::BusError;
use chat_proto::{ListMessages, MessagePage, StoredMessage, RPC_LIST_MESSAGES};
use serde_json::json;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

use crate::sockets::{emit, room_of_conversation, NAMESPACE};
use crate::wire::MessageJson;
use crate::Gateway;

/// Most messages replayed on one join; past that the client is told to page through history.
pub const MAX_REPLAY: usize = 1_000;
const REPLAY_PAGE: u32 = 100;

/// Delivery state of one conversation room on this gateway, shared by its live delivery and
/// the joins that replay into it.
pub type SharedRoom = Arc<Mutex<RoomDelivery>>;

/// How many delivered ids a room remembers to recognise duplicates.
const RECENT_IDS: usize = 4_096;

pub struct RoomDelivery {
    conversation_id: i64,
    /// The ids delivered lately, oldest first, and the same as a set.
    recent: VecDeque<i64>,
    recent_set: HashSet<i64>,
    /// Where the room stood when the bus connection was lost: the resync reads from here.
    resync_since: Option<i64>,
    /// Sockets replaying missed messages, with the live messages that arrived meanwhile.
    recovering: HashMap<Sid, Vec<StoredMessage>>,
    /// The highest message id delivered to the room (0: none yet).
    last_delivered: i64,
    /// While the room itself resynchronises: the live messages that arrived meanwhile.
    resyncing: Option<Vec<StoredMessage>>,
}

impl RoomDelivery {
    pub fn shared(conversation_id: i64) -> SharedRoom {
        Arc::new(Mutex::new(Self {
            conversation_id,
            recovering: HashMap::new(),
            last_delivered: 0,
            resyncing: None,
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            resync_since: None,
        }))
    }

    /// Delivers one message to the room's members here (read under the lock: a socket ending
    /// its replay joins under it), and keeps it for the sockets still replaying.
    fn deliver(&mut self, gw: &Gateway, stored: StoredMessage) {
        if !self.recent_set.insert(stored.id) {
            return; // delivered already: a redelivery, or read again by a resync
        }
        self.recent.push_back(stored.id);
        if self.recent.len() > RECENT_IDS {
            if let Some(oldest) = self.recent.pop_front() {
                self.recent_set.remove(&oldest);
            }
        }
        self.last_delivered = self.last_delivered.max(stored.id);
        for kept in self.recovering.values_mut() {
            kept.push(stored.clone());
        }
        let Some(namespace) = gw.io.of(NAMESPACE) else { return };
        let members = namespace.to(room_of_conversation(self.conversation_id)).sockets();
        // Serialized once for all the members, then sent one socket at a time, synchronously,
        // under the lock: see the module doc.
        let json = match serde_json::value::to_raw_value(&MessageJson::from(stored)) {
            Ok(json) => json,
            Err(e) => return tracing::error!(error = %e, "cannot serialize a stored message"),
        };
        for socket in members {
            emit(&socket, "receive-message", &json);
        }
    }
}

fn lock(room: &SharedRoom) -> MutexGuard<'_, RoomDelivery> {
    // Every update under this lock is a single insert, push or remove: a panic cannot leave
    // it half-done, so a poisoned lock is still safe to use.
    room.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Live delivery of one stored message to the room's sockets on this gateway (or to the
/// room's keeping while it resynchronises).
pub(crate) fn deliver_live(gw: &Gateway, room: &SharedRoom, stored: StoredMessage) {
    let mut delivery = lock(room);
    match &mut delivery.resyncing {
        Some(kept) => kept.push(stored),
        None => delivery.deliver(gw, stored),
    }
}

/// The conversation rooms open on this gateway (those with a local member): each with its
/// delivery state, how many sockets hold it, and the subscription to its room subject.
#[derive(Default)]
pub(crate) struct LocalRooms(Mutex<HashMap<i64, LocalRoom>>);

struct LocalRoom {
    holders: usize,
    room: SharedRoom,
    /// Set once the room subject is subscribed. Its holders wait for the one subscription
    /// together; dropped with the room, it unsubscribes.
    listening: Arc<tokio::sync::OnceCell<Listening>>,
}

/// The task that hands a room subject's messages to its room; dropping this stops the task,
/// which drops the subscription.
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

impl LocalRooms {
    /// Adds a holder of the conversation's room, opening it if needed; its delivery state.
    /// The first holder subscribes with `listen` (the others wait for it), so that when this
    /// returns every message stored from now on reaches the room. On failure the holder is
    /// not added.
    pub(crate) async fn open<F, Fut>(&self, conversation_id: i64, listen: F) -> Result<SharedRoom, BusError>
    where
        F: FnOnce(SharedRoom) -> Fut,
        Fut: std::future::Future<Output = Result<Listening, BusError>>,
    {
        // The map is never locked across the subscription (a round trip to the bus): joins of
        // other rooms must not queue behind it.
        let (room, listening) = {
            let mut rooms = self.lock();
            let local = rooms.entry(conversation_id).or_insert_with(|| LocalRoom {
                holders: 0,
                room: RoomDelivery::shared(conversation_id),
                listening: Arc::default(),
            });
            local.holders += 1;
            (local.room.clone(), local.listening.clone())
        };
        match listening.get_or_try_init(|| listen(room.clone())).await {
            Ok(_) => Ok(room),
            Err(e) => {
                // A holder still waiting tries to subscribe itself.
                self.close(conversation_id);
                Err(e)
            }
        }
    }

    /// Removes a holder; the last one closes the room and unsubscribes from its subject.
    pub(crate) fn close(&self, conversation_id: i64) {
        let closed = {
            let mut rooms = self.lock();
            match rooms.get_mut(&conversation_id) {
                Some(local) if local.holders > 1 => {
                    local.holders -= 1;
                    None
                }
                Some(_) => rooms.remove(&conversation_id),
                None => None,
            }
        };
        drop(closed); // unsubscribes, outside the lock
    }

    pub(crate) fn all(&self) -> Vec<SharedRoom> {
        self.lock().values().map(|local| local.room.clone()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, LocalRoom>> {
        // Every update under this lock is one counter change, insert or remove.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Joins `socket` to the room, first replaying what it missed after `last_seen` when given.
pub(crate) async fn join_room(
    gw: &Gateway,
    socket: &SocketRef,
    conversation_id: i64,
    room: &SharedRoom,
    last_seen: Option<i64>,
) {
    if lock(room).last_delivered == 0 {
        set_baseline(gw, conversation_id, room).await;
    }
    let Some(last_seen) = last_seen else {
        socket.join(room_of_conversation(conversation_id));
        return;
    };
    lock(room).recovering.insert(socket.id, Vec::new());
    let replayed_up_to = replay(gw, socket, conversation_id, last_seen).await;
    let mut delivery = lock(room);
    let kept = delivery.recovering.remove(&socket.id).unwrap_or_default();
    for stored in kept.into_iter().filter(|m| m.id > replayed_up_to) {
        emit(socket, "receive-message", &MessageJson::from(stored));
    }
    socket.join(room_of_conversation(conversation_id));
    drop(delivery);
}

/// A room new on this gateway starts from the conversation's newest message, so that a
/// resync after a reconnection knows where the room stood.
async fn set_baseline(gw: &Gateway, conversation_id: i64, room: &SharedRoom) {
    let newest = ListMessages { conversation_id, page: 1, limit: 1, after_id: None, before_id: Some(i64::MAX) };
    match gw.query::<_, MessagePage>(RPC_LIST_MESSAGES, &newest).await {
        Ok(page) => {
            let newest_id = page.messages.last().map_or(0, |m| m.id);
            let mut delivery = lock(room);
            delivery.last_delivered = delivery.last_delivered.max(newest_id);
        }
        Err(e) => tracing::warn!(conversation_id, error = %e, "reading the room's newest message failed"),
    }
}

/// The bus connection is lost: every room notes where it stands and keeps live messages.
pub(crate) fn mark_lost(rooms: &[SharedRoom]) {
    for room in rooms {
        let mut delivery = lock(room);
        if delivery.resyncing.is_none() {
            delivery.resyncing = Some(Vec::new());
            delivery.resync_since = Some(delivery.last_delivered);
        }
    }
}

/// How long a room keeps trying to read what it missed (the persister may reconnect later
/// than this gateway) before it gives up and says so in the logs.
const RESYNC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// After a reconnection to the bus: every room here reads what it missed since the loss.
pub(crate) async fn resync_rooms(gw: &Gateway, rooms: Vec<SharedRoom>) {
    mark_lost(&rooms); // rooms opened while disconnected
    for room in rooms {
        let (conversation_id, since) = {
            let delivery = lock(&room);
            (delivery.conversation_id, delivery.resync_since.unwrap_or(delivery.last_delivered))
        };
        let deadline = tokio::time::Instant::now() + RESYNC_PATIENCE;
        let mut delay = std::time::Duration::from_millis(250);
        let missed = loop {
            match read_after(gw, conversation_id, since, MAX_REPLAY).await {
                Ok(found) => break Some(found),
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(conversation_id, error = %e, "room resync: history not available yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::warn!(conversation_id, error = %e, "room resync failed; messages may be missing");
                    break None;
                }
            }
        };
        let mut delivery = lock(&room);
        let kept = delivery.resyncing.take().unwrap_or_default();
        delivery.resync_since = None;
        let (missed, complete) = missed.unwrap_or((Vec::new(), true));
        if !complete {
            tracing::warn!(conversation_id, "room resync stopped at {MAX_REPLAY} messages");
        }
        tracing::info!(conversation_id, since, missed = missed.len(), "room resynchronised");
        for stored in missed.into_iter().chain(kept) {
            delivery.deliver(gw, stored);
        }
    }
}

/// The conversation's messages after `after`, oldest first, at most `max`; and whether that
/// was all of them.
async fn read_after(
    gw: &Gateway,
    conversation_id: i64,
    after: i64,
    max: usize,
) -> Result<(Vec<StoredMessage>, bool), crate::queries::QueryFailure> {
    let mut found: Vec<StoredMessage> = Vec::new();
    let mut cursor = after;
    loop {
        let query =
            ListMessages { conversation_id, page: 1, limit: REPLAY_PAGE, after_id: Some(cursor), before_id: None };
        let page: MessagePage = gw.query(RPC_LIST_MESSAGES, &query).await?;
        let count = page.messages.len();
        cursor = page.messages.last().map_or(cursor, |m| m.id);
        found.extend(page.messages);
        if count < REPLAY_PAGE as usize {
            return Ok((found, true));
        }
        if found.len() >= max {
            return Ok((found, false));
        }
    }
}

/// Sends the socket the conversation's messages after `last_seen`, oldest first; the last id
/// sent (or `last_seen`).
async fn replay(gw: &Gateway, socket: &SocketRef, conversation_id: i64, last_seen: i64) -> i64 {
    let (missed, complete) = match read_after(gw, conversation_id, last_seen, MAX_REPLAY).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(conversation_id, error = %e, "replaying missed messages failed");
            let message = format!(
                "Could not replay missed messages; fetch them with GET /api/chats/conversations/{conversation_id}/messages?after={last_seen}"
            );
            emit(socket, "error", &json!({ "message": message }));
            return last_seen;
        }
    };
    let replayed_up_to = missed.last().map_or(last_seen, |m| m.id);
    for stored in missed {
        emit(socket, "receive-message", &MessageJson::from(stored));
    }
    if !complete {
        let message = format!(
            "Too many missed messages to replay; fetch the rest with GET /api/chats/conversations/{conversation_id}/messages?after={replayed_up_to}"
        );
        emit(socket, "error", &json!({ "message": message }));
    }
    replayed_up_to
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
    async fn a_room_listens_once_while_held_and_stops_with_its_last_holder() {
        let bus = MemoryBus::new();
        let (tx, mut heard) = mpsc::unbounded_channel();
        let probe = Arc::new(Probe { bus: bus.clone(), subscriptions: AtomicUsize::new(0), heard: tx });
        let rooms = LocalRooms::default();

        let first = rooms.open(7, |_| probe.clone().listen("chat.room.7")).await.expect("opens");
        let second = rooms.open(7, |_| probe.clone().listen("chat.room.7")).await.expect("holds");
        assert!(Arc::ptr_eq(&first, &second), "one delivery state per room");
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

        rooms.open(7, |_| probe.clone().listen("chat.room.7")).await.expect("reopens");
        assert_eq!(probe.subscriptions.load(Ordering::SeqCst), 2, "a reopened room subscribes again");
    }

    #[tokio::test]
    async fn a_room_whose_subscription_fails_is_not_held() {
        let rooms = LocalRooms::default();
        let failed = rooms.open(9, |_| async { Err(BusError::Connection("down".into())) }).await;
        assert!(failed.is_err());
        assert_eq!(rooms.len(), 0, "no holder left behind");
    }
}
