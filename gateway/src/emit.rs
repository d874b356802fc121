//! Events on their way out to sockets: the Socket.IO rooms the gateway puts sockets in, sending
//! to one socket or to rooms, errors rendered from [`ClientError`], and the disconnection of a
//! socket that reads too slowly. Everything that writes to a client goes through here, so each
//! write is counted (`metrics`) and a full buffer is handled in one way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, SocketIo};

use crate::errors::ClientError;
use crate::metrics;
use crate::wire::{event, ErrorEvent, MemberAck, MessageChangeAck, MessageErrorEvent, ReceiptAck, NAMESPACE};

/// The Socket.IO room of a user's sockets on this gateway (presence changes go there).
pub fn room_of_user(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// The Socket.IO room of a conversation's members on this gateway.
pub fn room_of_conversation(conversation_id: i64) -> String {
    format!("conversation:{conversation_id}")
}

/// A socket of the chat namespace open on this gateway, by id.
pub fn chat_socket(io: &SocketIo, socket_id: Sid) -> Option<SocketRef> {
    io.of(NAMESPACE)?.get_socket(socket_id)
}

/// Sends an event to one socket. A socket whose outgoing buffer is full reads too slowly: it
/// is disconnected rather than allowed to grow server memory or silently miss events; its
/// client reconnects and recovers what it missed (`lastMessageId`).
pub fn emit<T: Serialize + ?Sized>(socket: &SocketRef, event: &str, payload: &T) {
    match socket.emit(event, payload) {
        Ok(()) => metrics::events_out(event, 1),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => disconnect_slow_reader(socket, event),
        Err(e) => tracing::debug!(socket = %socket.id, event, error = %e, "emit failed"),
    }
}

/// Sends an event to every socket here in any of `rooms` (once to a socket in several),
/// serialized once.
pub fn emit_to_rooms<T: Serialize + ?Sized>(io: &SocketIo, rooms: Vec<String>, event: &str, payload: &T) {
    let Some(namespace) = io.of(NAMESPACE) else { return };
    let members = namespace.to(rooms).sockets();
    if members.is_empty() {
        return;
    }
    let json = match serde_json::value::to_raw_value(payload) {
        Ok(json) => json,
        Err(e) => return tracing::error!(event, error = %e, "cannot serialize an event"),
    };
    for socket in members {
        emit(&socket, event, &json);
    }
}

/// `error {message}` to a socket, counted by the error's kind.
pub fn emit_error(socket: &SocketRef, error: &ClientError) {
    metrics::error(error.kind());
    emit(socket, event::ERROR, &ErrorEvent { message: error.to_string() });
}

/// `message-error {error}` to the sender of a message, counted by the error's kind.
pub fn emit_message_error(socket: &SocketRef, error: &ClientError) {
    metrics::error(error.kind());
    emit(socket, event::MESSAGE_ERROR, &MessageErrorEvent { error: error.to_string() });
}

/// A refused `mark-delivered` or `mark-read`: `error` to its socket (if still here) and a
/// failed acknowledgement, whose ids `echo` (conversation, message) what the client sent.
pub fn refuse_receipt(socket: Option<&SocketRef>, ack: Option<AckSender>, echo: (Value, Value), error: &ClientError) {
    let (conversation_id, message_id) = echo;
    refuse_with_ack(socket, ack, error, |error| ReceiptAck { success: false, conversation_id, message_id, error });
}

/// A refused membership change: `error` to its socket (if still here) and a failed
/// acknowledgement, whose ids `echo` (group, member) what the client sent.
pub fn refuse_member_change(
    socket: Option<&SocketRef>,
    ack: Option<AckSender>,
    echo: (Value, Value),
    error: &ClientError,
) {
    let (conversation_id, user_id) = echo;
    refuse_with_ack(socket, ack, error, |error| MemberAck {
        success: false,
        conversation_id,
        user_id,
        role: None,
        error,
    });
}

/// A refused edit, delete or reaction: `error` to its socket (if still here) and a failed
/// acknowledgement, whose ids `echo` (conversation, message) what the client sent.
pub fn refuse_message_change(
    socket: Option<&SocketRef>,
    ack: Option<AckSender>,
    echo: (Value, Value),
    error: &ClientError,
) {
    let (conversation_id, message_id) = echo;
    refuse_with_ack(socket, ack, error, |error| MessageChangeAck {
        success: false,
        conversation_id,
        message_id,
        error,
        ..Default::default()
    });
}

/// `error` to the socket of a refused request (if still here), and its acknowledgement built
/// by `answer` from the error's text.
fn refuse_with_ack<A: Serialize>(
    socket: Option<&SocketRef>,
    ack: Option<AckSender>,
    error: &ClientError,
    answer: impl FnOnce(Option<String>) -> A,
) {
    if let Some(socket) = socket {
        emit_error(socket, error);
    }
    if let Some(ack) = ack {
        if let Err(e) = ack.send(&answer(Some(error.to_string()))) {
            tracing::debug!(error = %e, "acknowledgement failed");
        }
    }
}

/// Marks a socket whose buffer overflowed; set once per socket when it is admitted.
#[derive(Clone, Default)]
pub struct Overflowed(Arc<AtomicBool>);

/// Disconnects a socket whose outgoing buffer is full. socketioxide refuses to disconnect while
/// the buffer is full (the disconnect packet would not fit), so this keeps trying as the buffer
/// drains; a peer that does not read at all is cut by the listener's write-stall guard.
fn disconnect_slow_reader(socket: &SocketRef, event: &str) {
    let Some(Overflowed(flag)) = socket.extensions.get::<Overflowed>() else { return };
    if flag.swap(true, Ordering::SeqCst) {
        return; // already on its way out
    }
    tracing::warn!(socket = %socket.id, event, "slow reader: outgoing buffer full, disconnecting");
    let socket = socket.clone();
    tokio::spawn(async move {
        while socket.connected() {
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                _ => return,
            }
        }
    });
}
