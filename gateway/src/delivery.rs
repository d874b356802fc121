//! What comes back from the bus, and its way to local sockets.
//!
//! A gateway hears only what its own sockets need (see ARCHITECTURE.md, "Routing by
//! interest"):
//!
//! - its own subject, [`Subjects::gateway`](chat_proto::Subjects::gateway), subscribed at start:
//!   the outcomes of its sockets' sends, and presence changes for users with sockets here;
//! - the room subject of each conversation with a member here,
//!   [`Subjects::room`](chat_proto::Subjects::room), subscribed when the room opens on this
//!   gateway (before the join that opens it is answered) and dropped when its last member
//!   leaves: the conversation's stored messages and typing.
//!
//! - the subject of each user with a socket here, [`Subjects::user`](chat_proto::Subjects::user),
//!   subscribed when the user's first socket arrives and dropped when the last leaves: the
//!   receipts the user moved, for the user's sockets outside the conversation's room.
//!
//! A gateway with no sockets therefore receives nothing of the cluster's traffic. Each
//! subscription is handled by one task, in order of arrival: a conversation's messages reach
//! its room in the order the persisters published them, which is id order.

use std::sync::Arc;

use chat_bus::{BusError, Headers, Message, Subscription};
use chat_proto::{
    gateway_event, member_outcome, message_change_outcome, receipt_outcome, room_event, send_outcome, user_event,
    GatewayEvent, MemberChangeKind, MemberEvent, MemberOutcome, MessageChangeOutcome, ReceiptOutcome, RoomEvent,
    SendOutcome, Typing, UserEvent,
};
use futures::StreamExt;

use crate::emit::{
    chat_socket, emit, emit_message_error, emit_to_rooms, refuse_member_change, refuse_message_change, refuse_receipt,
    room_of_conversation, room_of_user,
};
use crate::errors::ClientError;
use crate::events::answer_held;
use crate::gateway::Gateway;
use crate::metrics;
use crate::rooms::{self, Listening, SharedRoom, SocketRooms};
use crate::wire::{
    event, MemberAck, MemberEventJson, MessageChangeAck, MessageJson, PresenceEvent, ReceiptAck, ReceiptEvent,
    TypingEvent, NAMESPACE,
};

/// Subscribes to this gateway's own subject and starts handling it. Returns once the
/// subscription is in place, so nothing published after `listen` returns is missed.
pub(crate) async fn listen(gw: &Arc<Gateway>) -> Result<(), BusError> {
    let events = gw.bus.subscribe(&gw.subjects.gateway(&gw.config.gateway_id)).await?;
    let gateway = gw.clone();
    spawn_handler(events, move |message| on_gateway_event(&gateway, message));
    Ok(())
}

/// Subscribes to a conversation's room subject for the room `room`, now open on this gateway.
/// Returns once the subscription is in place (the server has it): every message stored after
/// that is heard. Dropping the returned [`Listening`] unsubscribes.
pub(crate) async fn listen_to_room(
    gw: &Arc<Gateway>,
    conversation_id: i64,
    room: SharedRoom,
) -> Result<Listening, BusError> {
    let events = gw.bus.subscribe(&gw.subjects.room(conversation_id)).await?;
    let gateway = gw.clone();
    let task = spawn_handler(events, move |message| on_room_event(&gateway, &room, message));
    Ok(Listening::new(task))
}

/// Subscribes to a user's subject, now that the user has a socket here. Returns once the
/// subscription is in place; dropping the returned [`Listening`] unsubscribes.
pub(crate) async fn listen_to_user(gw: &Arc<Gateway>, user_id: i64) -> Result<Listening, BusError> {
    let events = gw.bus.subscribe(&gw.subjects.user(user_id)).await?;
    let gateway = gw.clone();
    let task = spawn_handler(events, move |message| on_user_event(&gateway, user_id, message));
    Ok(Listening::new(task))
}

/// Hands each message of `subscription` to `handle`, one at a time, in order.
fn spawn_handler(
    mut subscription: Subscription,
    handle: impl Fn(Message) + Send + 'static,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            handle(message);
        }
        tracing::debug!("subscription ended");
    })
    .abort_handle()
}

/// A conversation's stored messages to its room here, or typing relayed by another gateway.
fn on_room_event(gw: &Arc<Gateway>, room: &SharedRoom, message: Message) {
    let event = match chat_proto::decode::<RoomEvent>(&message.payload) {
        Ok(RoomEvent { event: Some(event) }) => event,
        Ok(RoomEvent { event: None }) => {
            return tracing::warn!(subject = %message.subject, "ignoring an empty room event")
        }
        Err(e) => return tracing::warn!(subject = %message.subject, error = %e, "ignoring an undecodable room event"),
    };
    match event {
        room_event::Event::Messages(delivery) => {
            for entry in delivery.messages {
                let Some(stored) = entry.message else { continue };
                // A child of the persister's publication of this message.
                let span = tracing::info_span!(
                    "receive-message",
                    otel.kind = "consumer",
                    conversation_id = stored.conversation_id
                );
                chat_telemetry::set_remote_parent(&span, &Headers::from_iter(entry.trace));
                let _entered = span.enter();
                rooms::deliver_live(&gw.io, room, stored);
            }
        }
        room_event::Event::Typing(typing) => on_typing(gw, typing),
        room_event::Event::Receipts(receipts) => rooms::deliver_receipts(&gw.io, room, receipts.positions),
        room_event::Event::Members(changes) => {
            rooms::deliver_member_events(&gw.io, room, &changes.events);
            // Before the next event of the room: nothing stored later reaches them.
            for (conversation_id, user_id) in rooms::removals(&changes.events) {
                leave_removed_member(gw, conversation_id, user_id);
            }
        }
        room_event::Event::MessageChanges(changes) => rooms::deliver_message_changes(&gw.io, room, &changes.events),
    }
}

/// A member removed from a group (or who left it): its sockets here leave the group's room at
/// once, so they get nothing stored after the removal; their holds on the room are released
/// asynchronously (under each socket's membership lock).
pub(crate) fn leave_removed_member(gw: &Arc<Gateway>, conversation_id: i64, user_id: i64) {
    let Some(namespace) = gw.io.of(NAMESPACE) else { return };
    let room = room_of_conversation(conversation_id);
    for socket in namespace.to(room.clone()).sockets() {
        let Some(held) = socket.extensions.get::<SocketRooms>() else { continue };
        if held.user_id != user_id {
            continue;
        }
        socket.leave(room.clone());
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut membership = held.membership.lock().await;
            if membership.conversations.remove(&conversation_id) {
                rooms::release(&gw.rooms, conversation_id);
            }
        });
    }
}

/// Receipts a user moved, to the user's sockets here that are not in the conversation's room
/// (those hear them on the room subject): each socket gets each once.
fn on_user_event(gw: &Gateway, user_id: i64, message: Message) {
    let positions = match chat_proto::decode::<UserEvent>(&message.payload) {
        Ok(UserEvent { event: Some(user_event::Event::Receipts(receipts)) }) => receipts.positions,
        Ok(UserEvent { event: Some(user_event::Event::Members(changes)) }) => {
            return on_member_events_for_user(gw, user_id, &changes.events)
        }
        Ok(UserEvent { event: None }) => return tracing::warn!(user_id, "ignoring an empty user event"),
        Err(e) => return tracing::warn!(user_id, error = %e, "ignoring an undecodable user event"),
    };
    for position in positions {
        let Some(namespace) = gw.io.of(NAMESPACE) else { return };
        let outside =
            namespace.to(room_of_user(user_id)).except(room_of_conversation(position.conversation_id)).sockets();
        let receipt = ReceiptEvent::of(&position);
        for socket in &outside {
            emit(socket, receipt.name(), &receipt);
        }
    }
}

/// Membership changes of a group of the user, to the user's sockets here that are not in the
/// group's room (those hear them on the room subject; a removed member's sockets have left it
/// by the time this comes, and get it here).
fn on_member_events_for_user(gw: &Gateway, user_id: i64, changes: &[MemberEvent]) {
    for change in changes {
        let Some(namespace) = gw.io.of(NAMESPACE) else { return };
        let outside =
            namespace.to(room_of_user(user_id)).except(room_of_conversation(change.conversation_id)).sockets();
        let (name, payload) = MemberEventJson::of(change);
        for socket in &outside {
            emit(socket, name, &payload);
        }
    }
}

/// The outcomes of this gateway's sends, or a presence change for users here.
fn on_gateway_event(gw: &Gateway, message: Message) {
    match chat_proto::decode::<GatewayEvent>(&message.payload) {
        Ok(GatewayEvent { event: Some(gateway_event::Event::Outcomes(delivery)) }) => {
            // Two gateway ids could share a subject (see `Subjects::gateway`).
            for outcome in delivery.outcomes {
                if outcome.gateway_id == gw.config.gateway_id {
                    answer_send(gw, outcome);
                }
            }
            for outcome in delivery.receipt_outcomes {
                if outcome.gateway_id == gw.config.gateway_id {
                    answer_receipt(gw, outcome);
                }
            }
            for outcome in delivery.member_outcomes {
                if outcome.gateway_id == gw.config.gateway_id {
                    answer_member_change(gw, outcome);
                }
            }
            for outcome in delivery.message_outcomes {
                if outcome.gateway_id == gw.config.gateway_id {
                    answer_message_change(gw, outcome);
                }
            }
        }
        Ok(GatewayEvent { event: Some(gateway_event::Event::Presence(change)) }) => {
            let span = tracing::info_span!(
                parent: None,
                "presence-update",
                otel.kind = "consumer",
                user_id = change.user_id,
                online = change.online,
                notified = change.notify.len(),
            );
            let _entered = span.enter();
            let name = if change.online { event::USER_ONLINE } else { event::USER_OFFLINE };
            let rooms = change.notify.iter().map(|&user_id| room_of_user(user_id)).collect();
            emit_to_rooms(&gw.io, rooms, name, &PresenceEvent { user_id: change.user_id });
        }
        Ok(GatewayEvent { event: None }) => tracing::warn!("ignoring an empty gateway event"),
        Err(e) => tracing::warn!(error = %e, "ignoring an undecodable gateway event"),
    }
}

/// `message-sent` or `message-error` to the socket that sent, if it is still here.
fn answer_send(gw: &Gateway, outcome: SendOutcome) {
    let answered = gw.outbox.answered(&outcome.request_id);
    let stored_id = match &outcome.result {
        Some(send_outcome::Result::Stored(stored)) => Some(stored.id),
        _ => None,
    };
    let started = answered.map(|answered| {
        answer_held(gw, answered.held, stored_id);
        answered.sent_at
    });
    let Some(socket) = outcome.socket_id.parse().ok().and_then(|sid| chat_socket(&gw.io, sid)) else {
        return; // the sender has gone
    };
    // A child of the persister's publication of this outcome.
    let span = match &outcome.result {
        Some(send_outcome::Result::Stored(stored)) => {
            tracing::info_span!("message-sent", otel.kind = "consumer", message_id = stored.id)
        }
        _ => tracing::info_span!("message-error", otel.kind = "consumer"),
    };
    chat_telemetry::set_remote_parent(&span, &Headers::from_iter(outcome.trace));
    let _entered = span.enter();
    match outcome.result {
        Some(send_outcome::Result::Stored(stored)) => {
            emit(&socket, event::MESSAGE_SENT, &MessageJson::from(stored));
            if let Some(started) = started {
                metrics::send_acknowledged(started.elapsed());
            }
        }
        Some(send_outcome::Result::Refused(refusal)) => {
            emit_message_error(&socket, &ClientError::from_refusal(&refusal))
        }
        Some(send_outcome::Result::Error(text)) => emit_message_error(&socket, &ClientError::from_refusal_text(&text)),
        None => emit_message_error(&socket, &ClientError::SendFailed),
    }
}

/// The acknowledgement of a receipt, with the member's position; or its refusal, also told
/// to the socket as `error`.
fn answer_receipt(gw: &Gateway, outcome: ReceiptOutcome) {
    let Some(answered) = gw.outbox.answered(&outcome.request_id) else { return };
    let socket = outcome.socket_id.parse().ok().and_then(|sid| chat_socket(&gw.io, sid));
    let echo = (outcome.conversation_id.into(), outcome.message_id.into());
    match outcome.result {
        Some(receipt_outcome::Result::Position(position)) => {
            metrics::receipt_acknowledged(answered.sent_at.elapsed());
            // Before the ack: a receipt the client sends next for an older message is then
            // answered here (see `events::receipts`).
            if let Some(room) = gw.rooms.get(position.conversation_id) {
                rooms::note_position(&room, &position);
            }
            let Some(ack) = answered.ack else { return };
            let answer = ReceiptAck {
                success: true,
                conversation_id: position.conversation_id.into(),
                message_id: position.message_id.into(),
                error: None,
            };
            if let Err(e) = ack.send(&answer) {
                tracing::debug!(error = %e, "acknowledgement failed");
            }
        }
        Some(receipt_outcome::Result::Refused(refusal)) => {
            let error = ClientError::from_receipt_refusal(&refusal);
            refuse_receipt(socket.as_ref(), answered.ack, echo, &error);
        }
        None => refuse_receipt(socket.as_ref(), answered.ack, echo, &ClientError::ReceiptFailed),
    }
}

/// The acknowledgement of a membership change, with the member's role after it; or its
/// refusal, also told to the socket as `error`.
fn answer_member_change(gw: &Gateway, outcome: MemberOutcome) {
    let Some(answered) = gw.outbox.answered(&outcome.request_id) else { return };
    let socket = outcome.socket_id.parse().ok().and_then(|sid| chat_socket(&gw.io, sid));
    let echo = (outcome.conversation_id.into(), outcome.user_id.into());
    match outcome.result {
        Some(member_outcome::Result::Done(_)) => {
            let Some(ack) = answered.ack else { return };
            // The member's role after the change (none once removed). A role set to the one
            // the member had stored no event, and is the role all the same.
            let role = match outcome.kind() {
                MemberChangeKind::Add | MemberChangeKind::SetRole => Some(outcome.role().as_str()),
                MemberChangeKind::Remove | MemberChangeKind::Leave => None,
            };
            let answer = MemberAck {
                success: true,
                conversation_id: outcome.conversation_id.into(),
                user_id: outcome.user_id.into(),
                role,
                error: None,
            };
            if let Err(e) = ack.send(&answer) {
                tracing::debug!(error = %e, "acknowledgement failed");
            }
        }
        Some(member_outcome::Result::Refused(refusal)) => {
            let error = ClientError::from_member_refusal(&refusal);
            refuse_member_change(socket.as_ref(), answered.ack, echo, &error);
        }
        None => refuse_member_change(socket.as_ref(), answered.ack, echo, &ClientError::MemberChangeFailed),
    }
}

/// The acknowledgement of an edit, delete or reaction; or its refusal, also told to the
/// socket as `error`.
fn answer_message_change(gw: &Gateway, outcome: MessageChangeOutcome) {
    let Some(answered) = gw.outbox.answered(&outcome.request_id) else { return };
    let socket = outcome.socket_id.parse().ok().and_then(|sid| chat_socket(&gw.io, sid));
    let echo = (outcome.conversation_id.into(), outcome.message_id.into());
    match outcome.result {
        Some(message_change_outcome::Result::Done(change)) => {
            let Some(ack) = answered.ack else { return };
            if let Err(e) = ack.send(&MessageChangeAck::done(&change)) {
                tracing::debug!(error = %e, "acknowledgement failed");
            }
        }
        Some(message_change_outcome::Result::Refused(refusal)) => {
            let error = ClientError::from_message_refusal(&refusal);
            refuse_message_change(socket.as_ref(), answered.ack, echo, &error);
        }
        None => refuse_message_change(socket.as_ref(), answered.ack, echo, &ClientError::MessageChangeFailed),
    }
}

/// Typing relayed by another gateway, to the room's members here.
fn on_typing(gw: &Gateway, typing: Typing) {
    if typing.origin_gateway_id == gw.config.gateway_id {
        return; // delivered locally when it was sent
    }
    let shown =
        TypingEvent { conversation_id: typing.conversation_id, user_id: typing.user_id, is_typing: typing.is_typing };
    emit_to_rooms(&gw.io, vec![room_of_conversation(typing.conversation_id)], event::USER_TYPING, &shown);
}
