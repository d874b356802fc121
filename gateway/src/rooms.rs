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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_bus::Message;
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

#[derive(Default)]
pub struct RoomDelivery {
    /// Sockets replaying missed messages, with the live messages that arrived meanwhile.
    recovering: HashMap<Sid, Vec<StoredMessage>>,
}

fn lock(room: &SharedRoom) -> MutexGuard<'_, RoomDelivery> {
    // Every update under this lock is a single insert, push or remove: a panic cannot leave
    // it half-done, so a poisoned lock is still safe to use.
    room.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Live delivery of one stored message to the room's sockets on this gateway.
pub(crate) async fn deliver_message(gw: Arc<Gateway>, conversation_id: i64, room: SharedRoom, message: Message) {
    let stored: StoredMessage = match chat_proto::decode(&message.payload) {
        Ok(stored) => stored,
        Err(e) => return tracing::warn!(error = %e, "ignoring undecodable stored message"),
    };
    let Some(namespace) = gw.io.of(NAMESPACE) else { return };
    let mut delivery = lock(&room);
    // The members are read under the lock too: a socket ending its replay joins under it.
    let members = namespace.to(room_of_conversation(conversation_id)).sockets();
    for kept in delivery.recovering.values_mut() {
        kept.push(stored.clone());
    }
    // Sent one socket at a time, synchronously, under the lock: see the module doc.
    let json = MessageJson::from(stored);
    for socket in members {
        emit(&socket, "receive-message", &json);
    }
    drop(delivery);
}

/// Joins `socket` to the room, first replaying what it missed after `last_seen` when given.
pub(crate) async fn join_room(
    gw: &Gateway,
    socket: &SocketRef,
    conversation_id: i64,
    room: &SharedRoom,
    last_seen: Option<i64>,
) {
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

/// Sends the socket the conversation's messages after `last_seen`, oldest first; the last id
/// sent (or `last_seen`).
async fn replay(gw: &Gateway, socket: &SocketRef, conversation_id: i64, last_seen: i64) -> i64 {
    let mut cursor = last_seen;
    let mut sent = 0;
    loop {
        let query =
            ListMessages { conversation_id, page: 1, limit: REPLAY_PAGE, after_id: Some(cursor), before_id: None };
        let page: MessagePage = match gw.query(RPC_LIST_MESSAGES, &query).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(conversation_id, error = %e, "replaying missed messages failed");
                let message = format!(
                    "Could not replay missed messages; fetch them with GET /api/chats/conversations/{conversation_id}/messages?after={cursor}"
                );
                emit(socket, "error", &json!({ "message": message }));
                return cursor;
            }
        };
        let count = page.messages.len();
        for stored in page.messages {
            cursor = stored.id;
            emit(socket, "receive-message", &MessageJson::from(stored));
        }
        sent += count;
        if count < REPLAY_PAGE as usize {
            return cursor;
        }
        if sent >= MAX_REPLAY {
            let message = format!(
                "Too many missed messages to replay; fetch the rest with GET /api/chats/conversations/{conversation_id}/messages?after={cursor}"
            );
            emit(socket, "error", &json!({ "message": message }));
            return cursor;
        }
    }
}
