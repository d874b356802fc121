//! `mark-delivered` and `mark-read`: validated, checked against the socket's limits, then
//! handed to the outbox synchronously, in the conversation's lane with its sends, so that the
//! persister stores a conversation's messages and receipts in one order. The acknowledgement
//! waits in the outbox until the persister's outcome comes back through `delivery`, which also
//! announces the positions that moved (`message-delivered`, `message-read`).
//!
//! A receipt this gateway can tell would move nothing (a message its room delivered, at or
//! below the member's known position: see `room_state`) is answered here at once with that
//! position, as the persister would answer it, without a trip through the bus and the
//! database. Most receipts of an active conversation are of this kind: a member's own reply
//! already counts as read.
//!
//! A receipt for a message the room delivered, sent while the socket's own newer send in the
//! conversation is still on its way, waits in the outbox for that send's outcome instead
//! ([`HeldReceipt`], answered by [`answer_held`]): once the send is stored with a larger id,
//! the receipt moved nothing either. It would have reached the persister behind that send
//! anyway, so waiting costs it no time.

use std::sync::Arc;

use chat_proto::{MarkReceipt, ReceiptKind};
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};

use super::socket_state::SocketState;
use crate::emit::refuse_receipt;
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::outbox::{HeldReceipt, Outgoing, PendingSlot, Queued};
use crate::payload::{PayloadFields, PayloadObject};
use crate::wire::ReceiptAck;
use crate::{metrics, rooms, validate};

pub(super) fn on_mark(
    gw: &Arc<Gateway>,
    state: &SocketState,
    socket: &SocketRef,
    ack: AckSender,
    payload: PayloadObject,
    kind: ReceiptKind,
) {
    let name = match kind {
        ReceiptKind::Delivered => "mark-delivered",
        ReceiptKind::Read => "mark-read",
    };
    let span = tracing::info_span!(
        parent: None,
        "receipt",
        otel.name = name,
        otel.kind = "server",
        user_id = state.user_id,
        conversation_id = tracing::field::Empty,
    );
    let _entered = span.enter();
    let (conversation_id, message_id) = match validate::receipt(&payload) {
        Ok(ids) => ids,
        Err(problem) => return refuse(socket, ack, &payload, &ClientError::Invalid(problem)),
    };
    span.record("conversation_id", conversation_id);
    // The conversation's room on this gateway, if open: it answers both checks below.
    let room = gw.rooms.get(conversation_id);
    let superseded_at = room.as_ref().and_then(|room| rooms::superseded(room, state.user_id, kind, message_id));
    if let Some(position) = superseded_at {
        metrics::receipt_answered_locally();
        let answer = ReceiptAck {
            success: true,
            conversation_id: conversation_id.into(),
            message_id: position.into(),
            error: None,
        };
        if let Err(e) = ack.send(&answer) {
            tracing::debug!(error = %e, "acknowledgement failed");
        }
        return;
    }
    // Receipts share the socket's bound on commands not yet on the bus with its sends.
    if !state.reserve_pending(gw.config.max_pending_sends) {
        return refuse(socket, ack, &payload, &ClientError::TooManyPendingSends);
    }
    let receipt = HeldReceipt {
        conversation_id,
        message_id,
        kind,
        user_id: state.user_id,
        socket_id: socket.id.to_string(),
        ack,
        span: span.clone(),
        slot: PendingSlot::taken(state.pending_sends.clone()),
    };
    let delivered_here = || room.as_ref().is_some_and(|room| rooms::delivered(room, message_id));
    let receipt = match state.last_send_in(conversation_id) {
        Some(send) if delivered_here() => match gw.outbox.hold_behind_send(&send, receipt) {
            None => return, // held
            Some(receipt) => receipt,
        },
        _ => receipt,
    };
    to_persister(gw, receipt);
}

/// The receipts that waited for the send `stored_id` answers (`None`: it was not stored):
/// those it supersedes are acknowledged with it, the others go to the persister.
pub(crate) fn answer_held(gw: &Gateway, held: Vec<HeldReceipt>, stored_id: Option<i64>) {
    for receipt in held {
        match stored_id {
            Some(position) if position > receipt.message_id => {
                let _entered = receipt.span.enter();
                metrics::receipt_held();
                let answer = ReceiptAck {
                    success: true,
                    conversation_id: receipt.conversation_id.into(),
                    message_id: position.into(),
                    error: None,
                };
                if let Err(e) = receipt.ack.send(&answer) {
                    tracing::debug!(error = %e, "acknowledgement failed");
                }
            }
            _ => to_persister(gw, receipt),
        }
    }
}

/// Puts a receipt in its conversation's lane; its acknowledgement waits for the persister.
fn to_persister(gw: &Gateway, held: HeldReceipt) {
    let HeldReceipt { conversation_id, message_id, kind, user_id, socket_id, ack, span, slot } = held;
    let receipt = MarkReceipt {
        request_id: uuid::Uuid::now_v7().to_string(),
        gateway_id: gw.config.gateway_id.clone(),
        socket_id,
        user_id,
        conversation_id,
        message_id,
        kind: kind as i32,
        trace: Default::default(), // set when it leaves the outbox
    };
    gw.outbox.push(Queued { command: Outgoing::Receipt(receipt), ack: Some(ack), span, pending: slot.hand_on() });
}

/// The `error` event and a failed acknowledgement, echoing the ids sent.
fn refuse(socket: &SocketRef, ack: AckSender, payload: &PayloadObject, error: &ClientError) {
    let echo = |field: &str| payload.field(field).cloned().unwrap_or(Value::Null);
    refuse_receipt(Some(socket), Some(ack), (echo("conversationId"), echo("messageId")), error);
}
