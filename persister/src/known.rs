//! Where members stand at least, from what this persister has committed: a receipt that these
//! show would move nothing is answered without a statement.
//!
//! Most receipts in a conversation with replies are of that kind: the reader's own newer
//! message already moved their read position when it was stored (often in the very batch that
//! carries the receipt, since a batch stores its messages first). The database would answer
//! them with four statements that change nothing.
//!
//! What is kept are lower bounds, and stay so: a committed position only ever moves forward,
//! and a message never changes conversation. So the cache needs no invalidation, even with
//! several persister replicas writing (each one's positions are older than the stored ones,
//! never wrong), and the answer it gives is a position the member has reached, perhaps not the
//! newest: the same answer a receipt overtaken by a newer one would get. Both maps are bounded;
//! what falls out of them goes to the database again.

use chat_proto::ReceiptKind;
use quick_cache::sync::Cache;

use crate::entity::{member, message};

/// Messages whose conversation is remembered: a few seconds of a busy cluster's messages,
/// which is when receipts for them arrive.
const MESSAGES: usize = 200_000;
/// Members whose positions are remembered.
const MEMBERS: usize = 100_000;

pub(crate) struct KnownPositions {
    /// The conversation of each message stored (or found stored) recently.
    conversation_of: Cache<i64, i64>,
    /// (conversation, user) → the positions the member had reached at least.
    positions: Cache<(i64, i64), Position>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    read: i64,
    delivered: i64,
}

impl Default for KnownPositions {
    fn default() -> Self {
        Self::with_capacity(MESSAGES, MEMBERS)
    }
}

impl KnownPositions {
    fn with_capacity(messages: usize, members: usize) -> Self {
        Self { conversation_of: Cache::new(messages), positions: Cache::new(members) }
    }

    /// Committed messages: each one's conversation, and its sender's positions, which their
    /// own message moved to it (it counts as read and delivered by them).
    pub(crate) fn messages_stored(&self, stored: &[message::Model]) {
        for message in stored {
            self.conversation_of.insert(message.id, message.conversation_id);
            self.reached(
                message.conversation_id,
                message.sender_id,
                Position { read: message.id, delivered: message.id },
            );
        }
    }

    /// A member's row as committed.
    pub(crate) fn row_stored(&self, row: &member::Model) {
        let position = Position { read: row.last_read_message_id, delivered: row.last_delivered_message_id };
        self.reached(row.conversation_id, row.user_id, position);
    }

    /// If `user_id`'s receipt of `kind` for `message_id` in `conversation_id` would move
    /// nothing, the position that answers it: the message is known to be of that conversation,
    /// and the member's known position of that kind is at or past it. `None`: only the
    /// database can tell (it also refuses a message of another conversation).
    pub(crate) fn superseded(
        &self,
        conversation_id: i64,
        user_id: i64,
        kind: ReceiptKind,
        message_id: i64,
    ) -> Option<i64> {
        if self.conversation_of.get(&message_id)? != conversation_id {
            return None;
        }
        let known = self.positions.get(&(conversation_id, user_id))?;
        let position = match kind {
            ReceiptKind::Read => known.read,
            ReceiptKind::Delivered => known.delivered,
        };
        (position >= message_id).then_some(position)
    }

    /// Moves the member's known positions forward to `reached` (never back: two batches of
    /// different conversations may record at once, but a member's are one conversation's,
    /// which one partition's batches carry one after another).
    fn reached(&self, conversation_id: i64, user_id: i64, reached: Position) {
        let key = (conversation_id, user_id);
        let known = self.positions.get(&key).unwrap_or_default();
        let read = known.read.max(reached.read);
        // Reading implies delivered.
        let delivered = known.delivered.max(reached.delivered).max(read);
        let moved = Position { read, delivered };
        if moved != known {
            self.positions.insert(key, moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: i64, conversation_id: i64, sender_id: i64) -> message::Model {
        message::Model {
            id,
            conversation_id,
            sender_id,
            message_type: "text".into(),
            content: format!("m{id}"),
            created_at: chrono::Utc::now(),
            dedup_key: None,
            edited_at: None,
            deleted_at: None,
        }
    }

    fn row(conversation_id: i64, user_id: i64, read: i64, delivered: i64) -> member::Model {
        member::Model {
            conversation_id,
            user_id,
            last_read_message_id: read,
            read_at: None,
            last_delivered_message_id: delivered,
            delivered_at: None,
            unread_count: 0,
            last_message_id: read.max(delivered),
            last_activity_at: chrono::Utc::now(),
            role: "member".into(),
            joined_at: None,
        }
    }

    #[test]
    fn a_receipt_behind_what_the_member_reached_is_superseded() {
        let known = KnownPositions::default();
        known.messages_stored(&[stored(10, 1, 7), stored(11, 1, 8), stored(12, 1, 7)]);
        // User 7 sent 12: read and delivered up to 12 at least.
        assert_eq!(known.superseded(1, 7, ReceiptKind::Read, 11), Some(12));
        assert_eq!(known.superseded(1, 7, ReceiptKind::Delivered, 12), Some(12));
        // User 8 sent only 11: marking 12 may move it; only the database knows.
        assert_eq!(known.superseded(1, 8, ReceiptKind::Read, 12), None);
        assert_eq!(known.superseded(1, 8, ReceiptKind::Read, 10), Some(11));
    }

    #[test]
    fn an_unknown_message_or_one_of_another_conversation_goes_to_the_database() {
        let known = KnownPositions::default();
        known.messages_stored(&[stored(10, 1, 7), stored(20, 2, 7), stored(21, 1, 7)]);
        // 20 is below user 7's position in conversation 1, but of conversation 2: refused there.
        assert_eq!(known.superseded(1, 7, ReceiptKind::Read, 20), None);
        // 5 was never seen here.
        assert_eq!(known.superseded(1, 7, ReceiptKind::Read, 5), None);
        // A member nothing is known of.
        assert_eq!(known.superseded(1, 9, ReceiptKind::Read, 10), None);
    }

    #[test]
    fn positions_only_move_forward_and_read_implies_delivered() {
        let known = KnownPositions::default();
        known.messages_stored(&[stored(10, 1, 7), stored(11, 1, 7), stored(12, 1, 7)]);
        known.row_stored(&row(1, 8, 0, 11));
        assert_eq!(known.superseded(1, 8, ReceiptKind::Delivered, 11), Some(11));
        assert_eq!(known.superseded(1, 8, ReceiptKind::Read, 10), None, "delivered is not read");
        known.row_stored(&row(1, 8, 12, 12));
        assert_eq!(known.superseded(1, 8, ReceiptKind::Read, 10), Some(12));
        // An older row (another replica's, recorded late) does not move it back.
        known.row_stored(&row(1, 8, 10, 10));
        assert_eq!(known.superseded(1, 8, ReceiptKind::Read, 12), Some(12));
        // A read position carries the delivered one with it.
        known.row_stored(&row(1, 9, 12, 0));
        assert_eq!(known.superseded(1, 9, ReceiptKind::Delivered, 12), Some(12));
    }

    #[test]
    fn the_memory_is_bounded_and_what_falls_out_goes_to_the_database_again() {
        let known = KnownPositions::with_capacity(100, 100);
        let messages: Vec<message::Model> = (1..=10_000).map(|id| stored(id, 1, 7)).collect();
        known.messages_stored(&messages);
        let remembered = (1..=10_000).filter(|&id| known.superseded(1, 7, ReceiptKind::Read, id).is_some()).count();
        assert!(remembered > 0, "the newest are remembered");
        assert!(remembered < 1_000, "{remembered} of 10,000 messages remembered with room for 100");
    }
}
