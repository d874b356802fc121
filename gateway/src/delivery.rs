//! What comes back from the bus, and its way to local sockets.
//!
//! Every gateway listens to the same three subjects, from start to end, whatever its sockets
//! do: [`Subjects::deliveries`](chat_proto::Subjects::deliveries) (what persisters confirmed:
//! stored messages and the outcomes of sends), [`Subjects::typing`](chat_proto::Subjects::typing)
//! and [`Subjects::presence_changes`](chat_proto::Subjects::presence_changes). It keeps what
//! concerns its own rooms and sockets and drops the rest. Joining a room therefore needs no
//! subscription (no round trip to the bus), and a gateway holds three subscriptions whatever
//! its number of sockets and rooms; the price is that every gateway receives the whole
//! cluster's stored messages, in batches (see ARCHITECTURE.md, "Choices and alternatives").
//!
//! Each subject is handled by one task, in order of arrival: a conversation's messages reach
//! its room in the order the persisters published them, which is id order.

use std::sync::Arc;

use chat_bus::{Headers, Message, Subscription};
use chat_proto::{send_outcome, Delivery, PresenceChange, SendOutcome, Typing};
use futures::StreamExt;
use serde_json::json;

use crate::metrics::{self, Failure};
use crate::rooms;
use crate::sockets::{emit, emit_message_error, room_of_conversation, room_of_user, SEND_FAILED};
use crate::wire::MessageJson;
use crate::Gateway;

/// Subscribes to the three subjects and starts handling them. Returns once the subscriptions
/// are in place, so nothing published after `start` returns is missed.
pub(crate) async fn listen(gw: &Arc<Gateway>) -> Result<(), chat_bus::BusError> {
    let deliveries = gw.bus.subscribe(&gw.subjects.deliveries()).await?;
    let typing = gw.bus.subscribe(&gw.subjects.typing()).await?;
    let presence = gw.bus.subscribe(&gw.subjects.presence_changes()).await?;
    spawn_handler(gw, deliveries, "deliveries", on_delivery);
    spawn_handler(gw, typing, "typing", on_typing);
    spawn_handler(gw, presence, "presence changes", on_presence_change);
    Ok(())
}

/// Hands each message of `subscription` to `handle`, one at a time, in order.
fn spawn_handler(gw: &Arc<Gateway>, mut subscription: Subscription, name: &'static str, handle: fn(&Gateway, Message)) {
    let gw = gw.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            handle(&gw, message);
        }
        tracing::error!(subscription = name, "subscription ended");
    });
}

/// What a persister batch confirmed: the messages of rooms open here go to their members, the
/// outcomes of this gateway's sends to their senders.
fn on_delivery(gw: &Gateway, message: Message) {
    let delivery: Delivery = match chat_proto::decode(&message.payload) {
        Ok(delivery) => delivery,
        Err(e) => return tracing::warn!(error = %e, "ignoring an undecodable delivery"),
    };
    for entry in delivery.messages {
        let Some(stored) = entry.message else { continue };
        let Some(room) = gw.rooms.get(stored.conversation_id) else { continue };
        // A child of the persister's publication of this message.
        let span =
            tracing::info_span!("receive-message", otel.kind = "consumer", conversation_id = stored.conversation_id);
        chat_telemetry::set_remote_parent(&span, &Headers::from_iter(entry.trace));
        let _entered = span.enter();
        rooms::deliver_live(gw, &room, stored);
    }
    for outcome in delivery.outcomes {
        if outcome.gateway_id == gw.config.gateway_id {
            answer_send(gw, outcome);
        }
    }
}

/// `message-sent` or `message-error` to the socket that sent, if it is still here.
fn answer_send(gw: &Gateway, outcome: SendOutcome) {
    let started = gw.sends_in_flight.remove(&outcome.request_id).map(|(_, at)| at);
    let Some(socket) = outcome.socket_id.parse().ok().and_then(|sid| gw.chat_socket(sid)) else {
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
            emit(&socket, "message-sent", &MessageJson::from(stored));
            if let Some(started) = started {
                metrics::send_acknowledged(started.elapsed());
            }
        }
        Some(send_outcome::Result::Error(error)) => emit_message_error(&socket, Failure::of_message(&error), &error),
        None => emit_message_error(&socket, Failure::Storage, SEND_FAILED),
    }
}

/// Typing relayed by another gateway, to the room's members here.
fn on_typing(gw: &Gateway, message: Message) {
    let typing: Typing = match chat_proto::decode(&message.payload) {
        Ok(typing) => typing,
        Err(e) => return tracing::warn!(error = %e, "ignoring undecodable typing"),
    };
    if typing.origin_gateway_id == gw.config.gateway_id || gw.rooms.get(typing.conversation_id).is_none() {
        return; // delivered locally when it was sent, or no member here
    }
    let event =
        json!({ "conversationId": typing.conversation_id, "userId": typing.user_id, "isTyping": typing.is_typing });
    gw.emit_to_rooms(vec![room_of_conversation(typing.conversation_id)], "user-typing", &event);
}

/// A user came online or went offline: to the sockets here of the users it names.
fn on_presence_change(gw: &Gateway, message: Message) {
    let change: PresenceChange = match chat_proto::decode(&message.payload) {
        Ok(change) => change,
        Err(e) => return tracing::warn!(error = %e, "ignoring undecodable presence change"),
    };
    let event = if change.online { "user:online" } else { "user:offline" };
    let rooms = change.notify.iter().map(|&user_id| room_of_user(user_id)).collect();
    gw.emit_to_rooms(rooms, event, &json!({ "userId": change.user_id }));
}
