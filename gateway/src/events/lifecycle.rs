//! `edit-message`, `delete-message` and `react`: validated, checked against the sending rate,
//! then handed to the outbox synchronously, in the conversation's lane with its sends, so the
//! persister orders a message's changes with the conversation's messages. The persister
//! checks who may do what (it holds the messages and the members); the acknowledgement waits
//! in the outbox until its outcome comes back through `delivery`, and the room hears the
//! change on its subject (`message-updated`, `message-deleted`, `reaction-updated`).

use std::sync::Arc;

use chat_proto::{ChangeMessage, MessageChangeKind};
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};

use super::socket_state::SocketState;
use crate::emit::refuse_message_change;
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::limits::Action;
use crate::outbox::{Outgoing, Queued};
use crate::validate;
use crate::wire::event;

pub(super) fn on_change(
    gw: &Arc<Gateway>,
    state: &SocketState,
    socket: &SocketRef,
    ack: AckSender,
    payload: Value,
    kind: MessageChangeKind,
) {
    let span = tracing::info_span!(
        parent: None,
        "message-change",
        otel.name = event_name(kind),
        otel.kind = "server",
        user_id = state.user_id,
        conversation_id = tracing::field::Empty,
        message_id = tracing::field::Empty,
    );
    let _entered = span.enter();
    let change = match validate::message_change(&payload, kind, gw.config.max_content_chars) {
        Ok(change) => change,
        Err(problem) => return refuse(socket, ack, &payload, &ClientError::Invalid(problem)),
    };
    span.record("conversation_id", change.conversation_id);
    span.record("message_id", change.message_id);
    // A change is a write like a send: it counts against the same rate and pending bound.
    if !gw.limits.allow(state.user_id, Action::Send) {
        return refuse(socket, ack, &payload, &ClientError::RateLimited(Action::Send));
    }
    if !state.reserve_pending(gw.config.max_pending_sends) {
        return refuse(socket, ack, &payload, &ClientError::TooManyPendingSends);
    }
    let command = ChangeMessage {
        request_id: uuid::Uuid::now_v7().to_string(),
        gateway_id: gw.config.gateway_id.clone(),
        socket_id: socket.id.to_string(),
        user_id: state.user_id,
        conversation_id: change.conversation_id,
        message_id: change.message_id,
        kind: kind as i32,
        content: change.content,
        emoji: change.emoji,
        on: change.on,
        change_id: change.change_id.unwrap_or_default(),
        trace: Default::default(), // set when it leaves the outbox
    };
    gw.outbox.push(Queued {
        command: Outgoing::Message(command),
        ack: Some(ack),
        span: span.clone(),
        pending: state.pending_sends.clone(),
    });
}

pub(super) fn event_name(kind: MessageChangeKind) -> &'static str {
    match kind {
        MessageChangeKind::Edit => event::EDIT_MESSAGE,
        MessageChangeKind::Delete => event::DELETE_MESSAGE,
        MessageChangeKind::React => event::REACT,
    }
}

/// The `error` event and a failed acknowledgement, echoing the ids sent.
fn refuse(socket: &SocketRef, ack: AckSender, payload: &Value, error: &ClientError) {
    let echo = |field: &str| payload.get(field).cloned().unwrap_or(Value::Null);
    refuse_message_change(Some(socket), Some(ack), (echo("conversationId"), echo("messageId")), error);
}
