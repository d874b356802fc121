//! The conversation rooms open on this gateway, and the I/O of their delivery: live messages
//! to the members, the replay of missed messages to a socket that rejoins, and the resync of
//! every room after a bus disconnection. The rules (what to send, when) are the state machine
//! in `room_state`; this module reads history for it and sends what it returns, under the
//! room's lock, so that a socket ending its replay joins the room between two live messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_bus::{Backoff, BusError, Retryable};
use chat_proto::{ListMessages, MessagePage, StoredMessage, RPC_LIST_MESSAGES};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::SocketIo;

use crate::emit::{emit, emit_error, room_of_conversation};
use crate::errors::ClientError;
use crate::queries::{Queries, QueryFailure};
use crate::room_state::RoomState;
use crate::wire::{event, MessageJson, NAMESPACE};

/// Most messages replayed on one join; past that the client is told to page through history.
pub const MAX_REPLAY: usize = 1_000;
const REPLAY_PAGE: u32 = 100;

/// One conversation room on this gateway: its delivery state, shared by its live delivery and
/// the joins that replay into it.
pub struct Room {
    conversation_id: i64,
    state: Mutex<RoomState<Sid>>,
}

pub type SharedRoom = Arc<Room>;

impl Room {
    pub fn shared(conversation_id: i64) -> SharedRoom {
        Arc::new(Room { conversation_id, state: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, RoomState<Sid>> {
        // Every update under this lock is a few inserts, pushes or removes that cannot panic
        // half-way: a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends messages to the room's members here, each serialized once. Called under the
    /// room's lock (see the module doc).
    fn send_to_members(&self, io: &SocketIo, messages: impl IntoIterator<Item = StoredMessage>) {
        let mut messages = messages.into_iter().peekable();
        if messages.peek().is_none() {
            return; // the common case of a duplicate: no member lookup
        }
        let Some(namespace) = io.of(NAMESPACE) else { return };
        let members = namespace.to(room_of_conversation(self.conversation_id)).sockets();
        for message in messages {
            let json = match serde_json::value::to_raw_value(&MessageJson::from(message)) {
                Ok(json) => json,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialize a stored message");
                    continue;
                }
            };
            for socket in &members {
                emit(socket, event::RECEIVE_MESSAGE, &json);
            }
        }
    }
}

/// Live delivery of one stored message to the room's sockets on this gateway.
pub fn deliver_live(io: &SocketIo, room: &Room, message: StoredMessage) {
    let mut state = room.lock();
    room.send_to_members(io, state.live(message));
    drop(state);
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
                room: Room::shared(conversation_id),
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
pub async fn join_room(queries: &Queries, socket: &SocketRef, room: &Room, last_seen: Option<i64>) {
    if !room.lock().has_baseline() {
        set_baseline(queries, room).await;
    }
    let Some(last_seen) = last_seen else {
        socket.join(room_of_conversation(room.conversation_id));
        return;
    };
    room.lock().begin_replay(socket.id);
    let replayed_up_to = replay(queries, socket, room.conversation_id, last_seen).await;
    let mut state = room.lock();
    for message in state.end_replay(&socket.id, replayed_up_to) {
        emit(socket, event::RECEIVE_MESSAGE, &MessageJson::from(message));
    }
    socket.join(room_of_conversation(room.conversation_id));
    drop(state);
}

/// Reads the conversation's newest message id, where a room new here starts from.
async fn set_baseline(queries: &Queries, room: &Room) {
    let conversation_id = room.conversation_id;
    let newest = ListMessages { conversation_id, page: 1, limit: 1, after_id: None, before_id: Some(i64::MAX) };
    match queries.query::<_, MessagePage>(RPC_LIST_MESSAGES, &newest).await {
        Ok(page) => room.lock().set_baseline(page.messages.last().map_or(0, |m| m.id)),
        Err(e) => tracing::warn!(conversation_id, error = %e, "reading the room's newest message failed"),
    }
}

/// The bus connection is lost: every room notes where it stands and holds live messages.
pub fn mark_lost(rooms: &[SharedRoom]) {
    for room in rooms {
        room.lock().connection_lost();
    }
}

/// How long a room keeps trying to read what it missed (the persister may reconnect later
/// than this gateway) before it gives up and says so in the logs.
const RESYNC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// After a reconnection to the bus: every room here reads what it missed since the loss.
pub async fn resync_rooms(queries: &Queries, io: &SocketIo, rooms: Vec<SharedRoom>) {
    mark_lost(&rooms); // rooms opened while disconnected
    for room in rooms {
        let conversation_id = room.conversation_id;
        let since = room.lock().resync_from();
        let backoff = Backoff::new(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(2),
            tokio::time::Instant::now() + RESYNC_PATIENCE,
        )
        .log_level(tracing::Level::DEBUG);
        let reading = || read_after(queries, conversation_id, since, MAX_REPLAY);
        let missed = match backoff.retry("room resync", |_| Retryable::BeforeDeadline, reading).await {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::warn!(conversation_id, error = %e, "room resync failed; messages may be missing");
                None
            }
        };
        let (missed, complete) = missed.unwrap_or((Vec::new(), true));
        if !complete {
            tracing::warn!(conversation_id, "room resync stopped at {MAX_REPLAY} messages");
        }
        tracing::info!(conversation_id, since, missed = missed.len(), "room resynchronised");
        let mut state = room.lock();
        let delivered = state.end_resync(missed);
        room.send_to_members(io, delivered);
        drop(state);
    }
}

/// The conversation's messages after `after`, oldest first, at most `max`; and whether that
/// was all of them.
async fn read_after(
    queries: &Queries,
    conversation_id: i64,
    after: i64,
    max: usize,
) -> Result<(Vec<StoredMessage>, bool), QueryFailure> {
    let mut found: Vec<StoredMessage> = Vec::new();
    let mut cursor = after;
    loop {
        let query =
            ListMessages { conversation_id, page: 1, limit: REPLAY_PAGE, after_id: Some(cursor), before_id: None };
        let page: MessagePage = queries.query(RPC_LIST_MESSAGES, &query).await?;
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
async fn replay(queries: &Queries, socket: &SocketRef, conversation_id: i64, last_seen: i64) -> i64 {
    let (missed, complete) = match read_after(queries, conversation_id, last_seen, MAX_REPLAY).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(conversation_id, error = %e, "replaying missed messages failed");
            emit_error(socket, &ClientError::ReplayFailed { conversation_id, after: last_seen });
            return last_seen;
        }
    };
    let replayed_up_to = missed.last().map_or(last_seen, |m| m.id);
    for message in missed {
        emit(socket, event::RECEIVE_MESSAGE, &MessageJson::from(message));
    }
    if !complete {
        emit_error(socket, &ClientError::ReplayTruncated { conversation_id, after: replayed_up_to });
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
