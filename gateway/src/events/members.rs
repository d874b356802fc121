//! `add-member`, `remove-member`, `leave-group` and `set-role`: validated, then handed to the
//! outbox synchronously, in the group's lane with its sends, so that the persister orders a
//! group's membership changes with its messages. The persister checks who may do what (it
//! holds the members); the acknowledgement waits in the outbox until its outcome comes back
//! through `delivery`, which also tells the group's members (`member-added`, `member-removed`,
//! `role-changed`) and takes a removed member's sockets out of the room.

use std::sync::Arc;

use chat_proto::{ChangeMember, MemberChangeKind};
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef};

use super::socket_state::SocketState;
use crate::emit::refuse_member_change;
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::outbox::{Outgoing, Queued};
use crate::validate::{self, RoleField};
use crate::wire::event;

pub(super) fn on_change(
    gw: &Arc<Gateway>,
    state: &SocketState,
    socket: &SocketRef,
    ack: AckSender,
    payload: Value,
    kind: MemberChangeKind,
) {
    let name = event_name(kind);
    let span = tracing::info_span!(
        parent: None,
        "member-change",
        otel.name = name,
        otel.kind = "server",
        user_id = state.user_id,
        conversation_id = tracing::field::Empty,
    );
    let _entered = span.enter();
    let valid = match kind {
        MemberChangeKind::Add => validate::member_change(&payload, RoleField::Optional),
        MemberChangeKind::Remove => validate::member_change(&payload, RoleField::None),
        MemberChangeKind::SetRole => validate::member_change(&payload, RoleField::Required),
        // Leaving names only the group; the member is the socket's user.
        MemberChangeKind::Leave => validate::conversation_id(&payload)
            .map(|conversation_id| (conversation_id, state.user_id, chat_proto::MemberRole::Member)),
    };
    let (conversation_id, user_id, role) = match valid {
        Ok(change) => change,
        Err(problem) => return refuse(socket, ack, &payload, &ClientError::Invalid(problem)),
    };
    span.record("conversation_id", conversation_id);
    // Changes share the socket's bound on commands not yet on the bus with its sends.
    if !state.reserve_pending(gw.config.max_pending_sends) {
        return refuse(socket, ack, &payload, &ClientError::TooManyPendingSends);
    }
    let change = ChangeMember {
        request_id: uuid::Uuid::now_v7().to_string(),
        gateway_id: gw.config.gateway_id.clone(),
        socket_id: socket.id.to_string(),
        actor_id: state.user_id,
        conversation_id,
        kind: kind as i32,
        user_id,
        role: role as i32,
        max_members: u32::try_from(gw.config.max_group_members).unwrap_or(u32::MAX),
        trace: Default::default(), // set when it leaves the outbox
    };
    gw.outbox.push(Queued {
        command: Outgoing::Member(change),
        ack: Some(ack),
        span: span.clone(),
        pending: state.pending_sends.clone(),
    });
}

pub(super) fn event_name(kind: MemberChangeKind) -> &'static str {
    match kind {
        MemberChangeKind::Add => event::ADD_MEMBER,
        MemberChangeKind::Remove => event::REMOVE_MEMBER,
        MemberChangeKind::Leave => event::LEAVE_GROUP,
        MemberChangeKind::SetRole => event::SET_ROLE,
    }
}

/// The `error` event and a failed acknowledgement, echoing the ids sent.
fn refuse(socket: &SocketRef, ack: AckSender, payload: &Value, error: &ClientError) {
    let echo = |field: &str| payload.get(field).cloned().unwrap_or(Value::Null);
    refuse_member_change(Some(socket), Some(ack), (echo("conversationId"), echo("userId")), error);
}
