//! `join-conversation` and `leave-conversation`. A join checks the socket may enter the
//! conversation, opens the conversation's room here (subscribed to its room subject before the
//! join is answered, so nothing stored afterwards is missed), and replays what the socket
//! missed when it says what it saw last.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use tracing::Instrument;

use super::socket_state::SocketState;
use crate::emit::{emit, emit_error, room_of_conversation};
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::limits::Action;
use crate::rooms::{self, SharedRoom};
use crate::wire::{event, JoinedEvent, RoomAck};
use crate::{delivery, metrics, validate};
use chat_proto::ErrorKind;

/// Its `join-conversation` span covers the checks, the room's subscription and the replay.
pub(super) async fn on_join(
    gw: &Arc<Gateway>,
    state: &SocketState,
    socket: &SocketRef,
    ack: AckSender,
    payload: Value,
) {
    let span = tracing::info_span!(
        parent: None,
        "join-conversation",
        otel.kind = "server",
        user_id = state.user_id,
        conversation_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let joined = join(gw, state, socket, &payload).instrument(span.clone()).await;
    let _entered = span.enter();
    match joined {
        Ok(conversation_id) => {
            span.record("outcome", "joined");
            emit(socket, event::JOINED_CONVERSATION, &JoinedEvent { conversation_id, success: true });
            send_ack(ack, RoomAck { success: true, conversation_id: conversation_id.into(), error: None });
        }
        Err(error) => {
            span.record("outcome", error.kind().label());
            refuse(socket, ack, &payload, &error)
        }
    }
}

pub(super) async fn on_leave(gw: &Gateway, state: &SocketState, socket: &SocketRef, ack: AckSender, payload: Value) {
    match validate::conversation_id(&payload) {
        Ok(conversation_id) => {
            let mut membership = state.membership.lock().await;
            if membership.conversations.remove(&conversation_id) {
                socket.leave(room_of_conversation(conversation_id));
                release_room(gw, conversation_id);
            }
            drop(membership);
            send_ack(ack, RoomAck { success: true, conversation_id: conversation_id.into(), error: None });
        }
        Err(problem) => refuse(socket, ack, &payload, &ClientError::Invalid(problem)),
    }
}

/// The `error` event and a failed acknowledgement, echoing the `conversationId` sent.
fn refuse(socket: &SocketRef, ack: AckSender, payload: &Value, error: &ClientError) {
    emit_error(socket, error);
    let conversation_id = payload.get("conversationId").cloned().unwrap_or(Value::Null);
    send_ack(ack, RoomAck { success: false, conversation_id, error: Some(error.to_string()) });
}

fn send_ack(ack: AckSender, payload: RoomAck) {
    if let Err(e) = ack.send(&payload) {
        tracing::debug!(error = %e, "acknowledgement failed");
    }
}

/// The joined conversation's id.
async fn join(gw: &Arc<Gateway>, state: &SocketState, socket: &SocketRef, payload: &Value) -> Result<i64, ClientError> {
    let conversation_id = validate::conversation_id(payload).map_err(ClientError::Invalid)?;
    tracing::Span::current().record("conversation_id", conversation_id);
    let last_seen = validate::last_message_id(payload).map_err(ClientError::Invalid)?;
    if !gw.limits.allow(state.user_id, Action::Join) {
        return Err(ClientError::RateLimited(Action::Join));
    }
    if !validate::claimed_user_matches(payload, state.user_id) {
        return Err(ClientError::NotAllowedToJoin);
    }
    let conversation = gw.queries.conversation(conversation_id).await.map_err(|failure| match failure.kind() {
        Some(ErrorKind::NotFound) => ClientError::ConversationNotFound,
        _ => {
            tracing::error!(conversation_id, error = %failure, "conversation lookup failed");
            ClientError::JoinFailed
        }
    })?;
    if !conversation.has_participant(state.user_id) {
        return Err(ClientError::NotAllowedToJoin);
    }
    let mut membership = state.membership.lock().await;
    if membership.closed || membership.conversations.contains(&conversation_id) {
        return Ok(conversation_id);
    }
    if membership.conversations.len() >= gw.config.max_rooms_per_socket {
        return Err(ClientError::TooManyRooms(gw.config.max_rooms_per_socket));
    }
    let room = hold_room(gw, conversation_id, conversation.is_group()).await.map_err(|e| {
        tracing::error!(conversation_id, error = %e, "subscribing to the conversation's room failed");
        ClientError::JoinFailed
    })?;
    membership.conversations.insert(conversation_id);
    if !rooms::join_room(&gw.queries, socket, state.user_id, &room, last_seen).await {
        // Removed from the group while its replay was read.
        membership.conversations.remove(&conversation_id);
        release_room(gw, conversation_id);
        return Err(ClientError::NotAllowedToJoin);
    }
    drop(membership);
    Ok(conversation_id)
}

/// Holds the conversation's room here, opening it (subscribed to its room subject) for its
/// first holder.
async fn hold_room(gw: &Arc<Gateway>, conversation_id: i64, group: bool) -> Result<SharedRoom, chat_bus::BusError> {
    let room = gw
        .rooms
        .open(
            conversation_id,
            || rooms::Room::shared(conversation_id, group),
            |room| delivery::listen_to_room(gw, conversation_id, room),
        )
        .await;
    metrics::set_rooms(gw.rooms.len());
    room
}

/// Releases one hold on the conversation's room; the last closes it.
pub(super) fn release_room(gw: &Gateway, conversation_id: i64) {
    rooms::release(&gw.rooms, conversation_id);
}
