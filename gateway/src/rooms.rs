//! The conversation rooms open on this gateway, and the I/O of their delivery: live messages
//! to the members, the replay of missed messages to a socket that rejoins, and the resync of
//! every room after a bus disconnection. The rules (what to send, when) are the state machine
//! in `room_state`; this module reads history for it and sends what it returns, under the
//! room's lock, so that a socket ending its replay joins the room between two live messages.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_bus::{Backoff, Retryable};
use chat_proto::{
    GetPositions, ListMemberEvents, ListMessageEvents, ListMessages, MemberEvent, MemberEventKind, MemberEventList,
    MessageEvent, MessageEventList, MessagePage, PositionList, ReceiptKind, ReceiptPosition, StoredMessage,
    RPC_GET_POSITIONS, RPC_LIST_MEMBER_EVENTS, RPC_LIST_MESSAGES, RPC_LIST_MESSAGE_EVENTS,
};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::SocketIo;

use crate::emit::{emit, emit_error, room_of_conversation};
use crate::errors::ClientError;
pub(crate) use crate::interest::{Interests, Listening};
use crate::queries::{Queries, QueryFailure};
use crate::room_state::RoomState;
use crate::wire::{event, MemberEventJson, MessageChangeJson, MessageJson, ReceiptEvent, NAMESPACE};

/// Most messages replayed on one join; past that the client is told to page through history.
pub const MAX_REPLAY: usize = 1_000;
const REPLAY_PAGE: u32 = 100;

/// One conversation room on this gateway: its delivery state, shared by its live delivery and
/// the joins that replay into it.
pub struct Room {
    conversation_id: i64,
    /// A group: its membership changes are replayed and resynchronised too.
    group: bool,
    state: Mutex<RoomState<Sid>>,
}

pub type SharedRoom = Arc<Room>;

impl Room {
    pub fn shared(conversation_id: i64, group: bool) -> SharedRoom {
        Arc::new(Room { conversation_id, group, state: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, RoomState<Sid>> {
        // Every update under this lock is a few inserts, pushes or removes that cannot panic
        // half-way: a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends messages to the room's members here, each serialized once, in the shape `json`
    /// gives them. Called under the room's lock (see the module doc).
    fn send_to_members(
        &self,
        io: &SocketIo,
        messages: impl IntoIterator<Item = StoredMessage>,
        json: fn(StoredMessage) -> MessageJson,
    ) {
        let mut messages = messages.into_iter().peekable();
        if messages.peek().is_none() {
            return; // the common case of a duplicate: no member lookup
        }
        let Some(namespace) = io.of(NAMESPACE) else { return };
        let members = namespace.to(room_of_conversation(self.conversation_id)).sockets();
        for message in messages {
            let json = match serde_json::value::to_raw_value(&json(message)) {
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

    /// Sends membership changes to the room's members here. Called under the room's lock.
    fn send_member_events_to_members(&self, io: &SocketIo, events: &[MemberEvent]) {
        if events.is_empty() {
            return;
        }
        let Some(namespace) = io.of(NAMESPACE) else { return };
        let members = namespace.to(room_of_conversation(self.conversation_id)).sockets();
        for member_event in events {
            let (name, payload) = MemberEventJson::of(member_event);
            for socket in &members {
                emit(socket, name, &payload);
            }
        }
    }

    /// Sends edits, deletes and reactions to the room's members here. Called under the room's
    /// lock.
    fn send_message_changes_to_members(&self, io: &SocketIo, changes: &[MessageEvent]) {
        if changes.is_empty() {
            return;
        }
        let Some(namespace) = io.of(NAMESPACE) else { return };
        let members = namespace.to(room_of_conversation(self.conversation_id)).sockets();
        for (name, payload) in changes.iter().filter_map(MessageChangeJson::of) {
            for socket in &members {
                emit(socket, name, &payload);
            }
        }
    }

    /// Sends receipts to the room's members here. Called under the room's lock.
    fn send_receipts_to_members(&self, io: &SocketIo, receipts: &[ReceiptEvent]) {
        if receipts.is_empty() {
            return;
        }
        let Some(namespace) = io.of(NAMESPACE) else { return };
        let members = namespace.to(room_of_conversation(self.conversation_id)).sockets();
        for receipt in receipts {
            for socket in &members {
                emit(socket, receipt.name(), receipt);
            }
        }
    }
}

/// Live delivery of members' moved positions to the room's sockets on this gateway (and, kept,
/// to those replaying).
pub fn deliver_receipts(io: &SocketIo, room: &Room, positions: Vec<ReceiptPosition>) {
    let mut state = room.lock();
    for position in &positions {
        state.live_receipt(position);
    }
    let receipts: Vec<ReceiptEvent> = positions.iter().map(ReceiptEvent::of).collect();
    room.send_receipts_to_members(io, &receipts);
    drop(state);
}

/// The rooms a socket holds; see the `events` module doc for the locking rule.
#[derive(Default)]
pub(crate) struct Membership {
    /// Conversation rooms joined, each holding the gateway's room of the conversation.
    pub conversations: HashSet<i64>,
    /// Holds this gateway's interest in the user's subject (released at tear-down).
    pub holds_user_subject: bool,
    /// Torn down: nothing may be acquired any more.
    pub closed: bool,
}

/// A socket's user and the rooms it holds, kept in the socket's extensions for those who act
/// on it from outside its handlers (a member removed from a group leaves the group's room).
#[derive(Clone)]
pub(crate) struct SocketRooms {
    pub user_id: i64,
    pub membership: Arc<tokio::sync::Mutex<Membership>>,
}

/// Releases one hold on the conversation's room here; the last closes it.
pub(crate) fn release(rooms: &LocalRooms, conversation_id: i64) {
    rooms.close(conversation_id);
    crate::metrics::set_rooms(rooms.len());
}

/// Live delivery of a group's membership changes to the room's sockets here (and, kept, to
/// those replaying). The caller then takes removed members' sockets out of the room.
pub fn deliver_member_events(io: &SocketIo, room: &Room, events: &[MemberEvent]) {
    let mut state = room.lock();
    state.live_members(events);
    room.send_member_events_to_members(io, events);
    drop(state);
}

/// Live delivery of edits, deletes and reactions to the room's sockets here (and, kept, to
/// those replaying).
pub fn deliver_message_changes(io: &SocketIo, room: &Room, changes: &[MessageEvent]) {
    let mut state = room.lock();
    let new = state.live_message_changes(changes);
    room.send_message_changes_to_members(io, &new);
    drop(state);
}

/// The members a batch of changes removed: `(group, user)`.
pub fn removals(events: &[MemberEvent]) -> Vec<(i64, i64)> {
    events.iter().filter(|e| e.kind() == MemberEventKind::Removed).map(|e| (e.conversation_id, e.user_id)).collect()
}

/// A member's known position that answers their receipt without the persister, if the receipt
/// would move nothing (see [`RoomState::superseded`]).
pub fn superseded(room: &Room, user_id: i64, kind: ReceiptKind, message_id: i64) -> Option<i64> {
    room.lock().superseded(user_id, kind, message_id)
}

/// Whether the room delivered `message_id` lately (see [`RoomState::delivered`]).
pub fn delivered(room: &Room, message_id: i64) -> bool {
    room.lock().delivered(message_id)
}

/// A member's stored position, from the answer to their receipt.
pub fn note_position(room: &Room, position: &ReceiptPosition) {
    room.lock().note_position(position);
}

/// Live delivery of one stored message to the room's sockets on this gateway.
pub fn deliver_live(io: &SocketIo, room: &Room, message: StoredMessage) {
    let mut state = room.lock();
    room.send_to_members(io, state.live(message), MessageJson::from);
    drop(state);
}

/// The conversation rooms open on this gateway (those with a local member): each with its
/// delivery state, held by the sockets joined to it, and subscribed to its room subject while
/// held.
pub(crate) type LocalRooms = Interests<SharedRoom>;

/// Joins `socket` (of `user_id`) to the room, first replaying what it missed after
/// `last_seen` when given: messages, the changes of the messages it holds and, in a group,
/// membership changes, in the conversation's order, then the members' positions. Whether it
/// joined: a member removed meanwhile does not.
pub async fn join_room(
    queries: &Queries,
    socket: &SocketRef,
    user_id: i64,
    room: &Room,
    last_seen: Option<i64>,
) -> bool {
    if !room.lock().has_baseline() {
        set_baseline(queries, room).await;
    }
    let Some(last_seen) = last_seen else {
        socket.join(room_of_conversation(room.conversation_id));
        return true;
    };
    room.lock().begin_replay(socket.id);
    let replayed = replay(queries, socket, user_id, room, last_seen).await;
    let positions = read_positions(queries, room.conversation_id).await;
    let mut state = room.lock();
    for message in state.end_replay(&socket.id, replayed.up_to) {
        emit(socket, event::RECEIVE_MESSAGE, &MessageJson::from(message));
    }
    let kept_changes: Vec<MemberEvent> =
        state.end_replay_members(&socket.id).into_iter().filter(|e| e.id > replayed.last_change).collect();
    for change in &kept_changes {
        let (name, payload) = MemberEventJson::of(change);
        emit(socket, name, &payload);
    }
    let kept_edits = state.end_replay_message_changes(&socket.id).into_iter().filter(|e| e.id > replayed.last_edit);
    for (name, payload) in kept_edits.filter_map(|e| MessageChangeJson::of(&e)) {
        emit(socket, name, &payload);
    }
    // The members' positions as read, then those that moved while they were read: a
    // reconnecting client misses no receipt (it keeps the newest of each).
    for receipt in positions {
        emit(socket, receipt.name(), &receipt);
    }
    for position in state.end_replay_receipts(&socket.id) {
        let receipt = ReceiptEvent::of(&position);
        emit(socket, receipt.name(), &receipt);
    }
    let removed = replayed.removed.contains(&user_id) || removals(&kept_changes).iter().any(|(_, u)| *u == user_id);
    if !removed {
        socket.join(room_of_conversation(room.conversation_id));
    }
    drop(state);
    !removed
}

/// The current positions of the conversation's members, as the events that tell them (none
/// when they cannot be read: the socket still gets every later receipt).
async fn read_positions(queries: &Queries, conversation_id: i64) -> Vec<ReceiptEvent> {
    match queries.query::<_, PositionList>(RPC_GET_POSITIONS, &GetPositions { conversation_id }).await {
        Ok(list) => list.members.iter().flat_map(|member| ReceiptEvent::current(conversation_id, member)).collect(),
        Err(e) => {
            tracing::warn!(conversation_id, error = %e, "reading the members' positions failed");
            Vec::new()
        }
    }
}

/// Reads the conversation's newest message id, where a room new here starts from.
async fn set_baseline(queries: &Queries, room: &Room) {
    let conversation_id = room.conversation_id;
    let newest =
        ListMessages { conversation_id, page: 1, limit: 1, after_id: None, before_id: Some(i64::MAX), viewer_id: 0 };
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

/// After a reconnection to the bus: every room here reads what it missed since the loss. The
/// members that groups removed meanwhile, `(group, user)`, for the caller to take out of
/// their rooms.
pub async fn resync_rooms(queries: &Queries, io: &SocketIo, rooms: Vec<SharedRoom>) -> Vec<(i64, i64)> {
    let mut removed = Vec::new();
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
        let reading = || read_after(queries, conversation_id, since, 0, MAX_REPLAY);
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
        // Receipts published meanwhile are gone too: the members get the current positions.
        let positions = read_positions(queries, conversation_id).await;
        // Membership changes too: a member removed meanwhile must leave the room.
        let changes = if room.group { read_member_events(queries, conversation_id, since).await } else { Vec::new() };
        // And the changes of the messages the room had: the missed ones come as they are now.
        let edits = read_message_changes(queries, conversation_id, since, since).await;
        let mut state = room.lock();
        let delivered = state.end_resync(missed);
        room.send_to_members(io, delivered, MessageJson::with_state);
        state.live_members(&changes);
        room.send_member_events_to_members(io, &changes);
        let edits = state.live_message_changes(&edits);
        room.send_message_changes_to_members(io, &edits);
        room.send_receipts_to_members(io, &positions);
        drop(state);
        removed.extend(removals(&changes));
    }
    removed
}

/// The conversation's messages after `after`, oldest first, at most `max` (with `viewer`'s
/// own reactions; 0: nobody's); and whether that was all of them.
async fn read_after(
    queries: &Queries,
    conversation_id: i64,
    after: i64,
    viewer_id: i64,
    max: usize,
) -> Result<(Vec<StoredMessage>, bool), QueryFailure> {
    let mut found: Vec<StoredMessage> = Vec::new();
    let mut cursor = after;
    loop {
        let query = ListMessages {
            conversation_id,
            page: 1,
            limit: REPLAY_PAGE,
            after_id: Some(cursor),
            before_id: None,
            viewer_id,
        };
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

/// What a replay sent: the last message id (or `last_seen`), the last membership change's and
/// message change's ids (0: none), and the users it said were removed.
struct Replayed {
    up_to: i64,
    last_change: i64,
    last_edit: i64,
    removed: Vec<i64>,
}

/// Sends the socket the conversation's messages after `last_seen`, oldest first, as they are
/// now (with `user_id`'s own reactions); the changes made since to the messages it holds
/// (edits, deletes, reactions); and in a group the membership changes made since: each change
/// in its place among the messages.
async fn replay(queries: &Queries, socket: &SocketRef, user_id: i64, room: &Room, last_seen: i64) -> Replayed {
    let conversation_id = room.conversation_id;
    let (missed, complete) = match read_after(queries, conversation_id, last_seen, user_id, MAX_REPLAY).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(conversation_id, error = %e, "replaying missed messages failed");
            emit_error(socket, &ClientError::ReplayFailed { conversation_id, after: last_seen });
            return Replayed { up_to: last_seen, last_change: 0, last_edit: 0, removed: Vec::new() };
        }
    };
    let up_to = missed.last().map_or(last_seen, |m| m.id);
    let changes = if room.group { read_member_events(queries, conversation_id, last_seen).await } else { Vec::new() };
    let edits = read_message_changes(queries, conversation_id, last_seen, last_seen).await;
    // A change made after message M comes before every message after M; those made after the
    // last replayed message come after it (past a truncated replay, the client pages on and
    // rejoins from there).
    let replayed_span = |after_message_id: i64| complete || after_message_id < up_to;
    let changes: Vec<MemberEvent> = changes.into_iter().filter(|e| replayed_span(e.after_message_id)).collect();
    let edits: Vec<MessageEvent> = edits.into_iter().filter(|e| replayed_span(e.after_message_id)).collect();
    let replayed = Replayed {
        up_to,
        last_change: changes.last().map_or(0, |e| e.id),
        last_edit: edits.last().map_or(0, |e| e.id),
        removed: removals(&changes).into_iter().map(|(_, user_id)| user_id).collect(),
    };
    let mut changes = changes.into_iter().peekable();
    let mut edits = edits.into_iter().peekable();
    let mut emit_changes_before = |next_message: i64| {
        while let Some(change) = changes.next_if(|e| e.after_message_id < next_message) {
            let (name, payload) = MemberEventJson::of(&change);
            emit(socket, name, &payload);
        }
        while let Some(edit) = edits.next_if(|e| e.after_message_id < next_message) {
            if let Some((name, payload)) = MessageChangeJson::of(&edit) {
                emit(socket, name, &payload);
            }
        }
    };
    for message in missed {
        emit_changes_before(message.id);
        emit(socket, event::RECEIVE_MESSAGE, &MessageJson::for_viewer(message));
    }
    emit_changes_before(i64::MAX);
    if !complete {
        emit_error(socket, &ClientError::ReplayTruncated { conversation_id, after: up_to });
    }
    replayed
}

/// The conversation's message changes made after message `after` to messages up to `up_to`,
/// oldest first (none when they cannot be read: said in the logs).
async fn read_message_changes(queries: &Queries, conversation_id: i64, after: i64, up_to: i64) -> Vec<MessageEvent> {
    let query = ListMessageEvents { conversation_id, after_message_id: after, up_to_message_id: up_to };
    match queries.query::<_, MessageEventList>(RPC_LIST_MESSAGE_EVENTS, &query).await {
        Ok(list) => list.events,
        Err(e) => {
            tracing::warn!(conversation_id, error = %e, "reading the messages' changes failed");
            Vec::new()
        }
    }
}

/// A group's membership changes made after message `after`, oldest first (none when they
/// cannot be read: said in the logs).
async fn read_member_events(queries: &Queries, conversation_id: i64, after: i64) -> Vec<MemberEvent> {
    let query = ListMemberEvents { conversation_id, after_message_id: after };
    match queries.query::<_, MemberEventList>(RPC_LIST_MEMBER_EVENTS, &query).await {
        Ok(list) => list.events,
        Err(e) => {
            tracing::warn!(conversation_id, error = %e, "reading the group's membership changes failed");
            Vec::new()
        }
    }
}
