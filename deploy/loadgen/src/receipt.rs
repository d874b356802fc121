//! `--mark-read`: every receiver marks each message of its partner read as it arrives, as a
//! client showing the conversation would, with an acknowledgement; what the server answers and
//! announces is checked against the inbox contract (issue 16):
//!
//! - the ack is `{success: true, conversationId, messageId}` with `messageId` the member's
//!   position after the call: the marked message (the position moved, and both members'
//!   sockets hear `message-read` once) or a newer one (the position was past it already: the
//!   member's own newer message, which counts as read when stored, or a later receipt stored
//!   first; nothing is announced for this one);
//! - a `message-read` names this conversation and one of its two members, and a member's
//!   announced position only moves forward.
//!
//! Each user sends receipts on its own socket, so the ack ids are per user.

use std::collections::HashMap;

use serde::Deserialize;

use crate::metrics::Metrics;
use crate::sio;

/// `sio::join` takes ack id 0 before the session starts; receipts take the ids after it.
const FIRST_ACK_ID: u64 = 1;

/// A user's receipts: those awaiting their ack, and the read positions announced so far.
pub struct Marker {
    conversation: u64,
    /// The two members, the user first, its partner second.
    members: [u64; 2],
    next_ack: u64,
    /// Ack id → (emission time in ns of the metrics' epoch, marked message id).
    pending: HashMap<u64, (u64, i64)>,
    /// The newest read position announced to this socket, per member (as `members`).
    announced: [i64; 2],
}

/// The acknowledgement of `mark-read`. Refusals echo what was sent, which was well formed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ack {
    success: bool,
    conversation_id: Option<u64>,
    message_id: Option<i64>,
    error: Option<String>,
}

/// A `message-read` announcement (its `readAt` is not checked here).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadEvent {
    conversation_id: u64,
    user_id: u64,
    message_id: i64,
}

impl Marker {
    pub fn new(conversation: u64, user_id: u64, partner_id: u64) -> Self {
        Self {
            conversation,
            members: [user_id, partner_id],
            next_ack: FIRST_ACK_ID,
            pending: HashMap::new(),
            announced: [0; 2],
        }
    }

    /// The `mark-read` packet for `message_id`, emitted now (`now_ns`), with an ack id.
    pub fn mark(&mut self, message_id: i64, now_ns: u64, metrics: &Metrics) -> String {
        let id = self.next_ack;
        self.next_ack += 1;
        self.pending.insert(id, (now_ns, message_id));
        metrics.receipts.sent.add(1);
        let payload = format!("{{\"conversationId\":{},\"messageId\":{message_id}}}", self.conversation);
        sio::event("mark-read", &payload, Some(id))
    }

    /// An acknowledgement (`args`: the JSON array of its arguments) with ack id `id`.
    pub fn answer(&mut self, id: u64, args: &str, now_ns: u64, metrics: &Metrics) {
        let user = self.members[0];
        let Some((sent_ns, marked)) = self.pending.remove(&id) else {
            metrics.error(format!("user {user}: an ack with id {id}, which no pending receipt has"));
            return;
        };
        let ack = match serde_json::from_str::<(Ack,)>(args) {
            Ok((ack,)) => ack,
            Err(e) => {
                metrics.receipt_error(format!("user {user}: mark-read {marked}: unreadable ack {args}: {e}"));
                return;
            }
        };
        if !ack.success {
            let why = ack.error.as_deref().unwrap_or("no error text");
            metrics.receipt_error(format!("user {user}: mark-read {marked} refused: {why}"));
            return;
        }
        if ack.conversation_id != Some(self.conversation) {
            metrics.receipt_error(format!(
                "user {user}: mark-read {marked}: ack of conversation {:?}",
                ack.conversation_id
            ));
            return;
        }
        match ack.message_id {
            Some(position) if position == marked => metrics.receipts.moved.add(1),
            Some(position) if position > marked => metrics.receipts.superseded.add(1),
            // Positions never move back: an ack below the marked message breaks the contract.
            other => {
                metrics.receipt_error(format!("user {user}: mark-read {marked}: ack position {other:?}"));
                return;
            }
        }
        metrics.record_receipt_ack(sent_ns, now_ns);
    }

    /// A `message-read` event's payload.
    pub fn announcement(&mut self, payload: &str, metrics: &Metrics) {
        metrics.receipts.read_events.add(1);
        let user = self.members[0];
        let event = match serde_json::from_str::<ReadEvent>(payload) {
            Ok(event) => event,
            Err(e) => {
                metrics.announcement_error(format!("user {user}: unreadable message-read {payload}: {e}"));
                return;
            }
        };
        if event.conversation_id != self.conversation {
            metrics.announcement_error(format!("user {user}: message-read of another conversation: {payload}"));
            return;
        }
        let Some(member) = self.members.iter().position(|&m| m == event.user_id) else {
            metrics.announcement_error(format!("user {user}: message-read of a non-member: {payload}"));
            return;
        };
        // Only moves are announced, in the order they were stored.
        if event.message_id <= self.announced[member] {
            let before = self.announced[member];
            metrics.announcement_error(format!("user {user}: message-read not forward (after {before}): {payload}"));
            return;
        }
        self.announced[member] = event.message_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ack id of a `mark-read` packet (`42/chat,<id>[...]`).
    fn ack_id(packet: &str) -> u64 {
        let rest = packet.strip_prefix("42/chat,").unwrap();
        rest[..rest.find('[').unwrap()].parse().unwrap()
    }

    #[test]
    fn acks_count_as_moved_superseded_or_errors() {
        let metrics = Metrics::new();
        let mut marker = Marker::new(7, 100, 101);
        let first = marker.mark(40, 0, &metrics);
        assert_eq!(first, r#"42/chat,1["mark-read",{"conversationId":7,"messageId":40}]"#);
        let second = marker.mark(41, 0, &metrics);
        let third = marker.mark(42, 0, &metrics);
        let fourth = marker.mark(43, 0, &metrics);
        marker.answer(ack_id(&first), r#"[{"success":true,"conversationId":7,"messageId":40}]"#, 1, &metrics);
        marker.answer(ack_id(&second), r#"[{"success":true,"conversationId":7,"messageId":42}]"#, 1, &metrics);
        marker.answer(ack_id(&third), r#"[{"success":true,"conversationId":7,"messageId":41}]"#, 1, &metrics);
        marker.answer(
            ack_id(&fourth),
            r#"[{"success":false,"conversationId":7,"messageId":43,"error":"Failed to update the receipt"}]"#,
            1,
            &metrics,
        );
        let r = &metrics.receipts;
        assert_eq!((r.sent.get(), r.acked.get(), r.moved.get(), r.superseded.get()), (4, 2, 1, 1));
        assert_eq!(r.errors.get(), 2, "a position below the marked message, a refusal");
        // An ack for nothing pending is an error of the run, not of a receipt.
        marker.answer(99, r#"[{"success":true}]"#, 1, &metrics);
        assert_eq!((r.errors.get(), metrics.errors.get()), (2, 1));
    }

    #[test]
    fn announcements_must_name_the_conversation_a_member_and_move_forward() {
        let metrics = Metrics::new();
        let mut marker = Marker::new(7, 100, 101);
        let read = |user, id| format!(r#"{{"conversationId":7,"userId":{user},"messageId":{id},"readAt":"x"}}"#);
        marker.announcement(&read(100, 5), &metrics);
        marker.announcement(&read(101, 3), &metrics);
        marker.announcement(&read(100, 6), &metrics);
        assert_eq!(metrics.receipts.announcement_errors.get(), 0);
        marker.announcement(&read(100, 6), &metrics); // again: not a move
        marker.announcement(&read(102, 9), &metrics); // not a member
        marker.announcement(r#"{"conversationId":8,"userId":100,"messageId":9}"#, &metrics);
        marker.announcement("[]", &metrics);
        assert_eq!((metrics.receipts.read_events.get(), metrics.receipts.announcement_errors.get()), (7, 4));
    }
}
