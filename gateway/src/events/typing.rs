//! `typing`: to the room's other sockets here at once, and to the other gateways on the
//! conversation's room subject (`delivery` hands it to their sockets).

use chat_proto::{room_event, RoomEvent, Typing};
use serde_json::Value;
use socketioxide::extract::SocketRef;

use super::socket_state::SocketState;
use crate::emit::{emit_error, room_of_conversation};
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::limits::Action;
use crate::wire::{event, TypingEvent};
use crate::{metrics, validate};

pub(super) async fn on_typing(gw: &Gateway, state: &SocketState, socket: &SocketRef, payload: Value) {
    if let Err(error) = typing(gw, state, socket, &payload).await {
        emit_error(socket, &error);
    }
}

async fn typing(gw: &Gateway, state: &SocketState, socket: &SocketRef, payload: &Value) -> Result<(), ClientError> {
    let (conversation_id, is_typing) = validate::typing(payload).map_err(ClientError::Invalid)?;
    if !gw.limits.allow(state.user_id, Action::Typing) {
        return Err(ClientError::RateLimited(Action::Typing));
    }
    if !state.membership.lock().await.conversations.contains(&conversation_id) {
        return Err(ClientError::TypingOutsideRoom);
    }
    let room = room_of_conversation(conversation_id);
    let reached = socket.to(room.clone()).sockets().len() as u64;
    let shown = TypingEvent { conversation_id, user_id: state.user_id, is_typing };
    match socket.to(room).emit(event::USER_TYPING, &shown).await {
        Ok(()) => metrics::events_out(event::USER_TYPING, reached),
        Err(e) => tracing::debug!(error = %e, "local typing broadcast failed"),
    }
    let relayed =
        Typing { conversation_id, user_id: state.user_id, is_typing, origin_gateway_id: gw.config.gateway_id.clone() };
    let event = RoomEvent { event: Some(room_event::Event::Typing(relayed)) };
    if let Err(e) = gw.bus.publish(&gw.subjects.room(conversation_id), chat_proto::encode(&event)).await {
        tracing::warn!(error = %e, "relaying typing failed");
    }
    Ok(())
}
