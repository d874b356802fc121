//! `send-message`: validated, checked against the socket's user and limits, then handed to the
//! outbox synchronously (see the `events` module doc: the socket's order is kept that way).
//! The answer, `message-sent` or `message-error`, comes back from the persister through
//! `delivery`.

use std::sync::Arc;

use chat_proto::SendMessage;
use socketioxide::extract::SocketRef;

use super::socket_state::SocketState;
use crate::emit::emit_message_error;
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::limits::Action;
use crate::outbox::{Outgoing, Queued};
use crate::payload::PayloadObject;
use crate::validate;

/// Its span, the root of the message's trace, lasts until the command is on the work queue.
pub(super) fn on_send(gw: &Arc<Gateway>, state: &SocketState, socket: &SocketRef, payload: PayloadObject) {
    let span = tracing::info_span!(
        parent: None,
        "send-message",
        otel.kind = "server",
        user_id = state.user_id,
        conversation_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    let _entered = span.enter();
    let command = match command(gw, state, socket, &payload) {
        Ok(command) => command,
        Err(error) => return emit_message_error(socket, &error),
    };
    span.record("conversation_id", command.conversation_id);
    span.record("request_id", command.request_id.as_str());
    if !state.reserve_pending(gw.config.max_pending_sends) {
        return emit_message_error(socket, &ClientError::TooManyPendingSends);
    }
    state.note_send(command.conversation_id, &command.request_id);
    gw.outbox.push(Queued {
        command: Outgoing::Send(command),
        ack: None,
        span: span.clone(),
        pending: state.pending_sends.clone(),
    });
}

/// The command for the persister, or why the send is refused here.
fn command(
    gw: &Gateway,
    state: &SocketState,
    socket: &SocketRef,
    payload: &PayloadObject,
) -> Result<SendMessage, ClientError> {
    let send = validate::send_message(payload, gw.config.max_content_chars).map_err(ClientError::Invalid)?;
    if send.sender_id != state.user_id {
        return Err(ClientError::SendAsAnotherUser);
    }
    if !gw.limits.allow(state.user_id, Action::Send) {
        return Err(ClientError::RateLimited(Action::Send));
    }
    Ok(SendMessage {
        request_id: uuid::Uuid::now_v7().to_string(),
        gateway_id: gw.config.gateway_id.clone(),
        socket_id: socket.id.to_string(),
        sender_id: send.sender_id,
        conversation_id: send.conversation_id,
        message_type: send.message_type.to_owned(),
        content: send.content,
        client_msg_id: send.client_msg_id.unwrap_or_default(),
        trace: Default::default(), // set when it leaves the outbox
    })
}
