//! The JSON shapes the clients see, built from the bus's protobuf messages.

use chat_proto::{Conversation, StoredMessage};
use serde::Serialize;

/// A message as `message-sent`, `receive-message` and the history API show it.
#[derive(Debug, Serialize)]
pub struct MessageJson {
    pub id: i64,
    pub sender_id: i64,
    pub conversation_id: i64,
    pub timestamp: String,
    pub message_type: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
}

/// The conversation attached to a message event.
#[derive(Debug, Serialize)]
pub struct ConversationRef {
    pub id: i64,
    pub sender_id: i64,
    pub receiver_id: i64,
}

/// A conversation as the REST API shows it.
#[derive(Debug, Serialize)]
pub struct ConversationJson {
    pub id: i64,
    pub sender_id: i64,
    pub receiver_id: i64,
    pub created_at: String,
}

impl From<StoredMessage> for MessageJson {
    fn from(m: StoredMessage) -> Self {
        Self {
            id: m.id,
            sender_id: m.sender_id,
            conversation_id: m.conversation_id,
            timestamp: iso_timestamp(m.timestamp_ms),
            message_type: m.message_type,
            content: m.content,
            conversation: m.conversation.map(|c| ConversationRef {
                id: c.id,
                sender_id: c.sender_id,
                receiver_id: c.receiver_id,
            }),
        }
    }
}

impl From<Conversation> for ConversationJson {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id,
            sender_id: c.sender_id,
            receiver_id: c.receiver_id,
            created_at: iso_timestamp(c.created_at_ms),
        }
    }
}

/// Milliseconds since the epoch as JavaScript's `Date.toJSON()` writes them:
/// `2026-11-25T19:33:40.123Z`.
pub fn iso_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_javascript_dates() {
        assert_eq!(iso_timestamp(1_764_099_220_123), "2025-11-25T19:33:40.123Z");
        assert_eq!(iso_timestamp(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn message_events_carry_their_conversation() {
        let json = serde_json::to_value(MessageJson::from(StoredMessage {
            id: 5,
            sender_id: 1,
            conversation_id: 2,
            timestamp_ms: 0,
            message_type: "text".into(),
            content: "hi".into(),
            conversation: Some(Conversation { id: 2, sender_id: 1, receiver_id: 9, created_at_ms: 0 }),
        }))
        .unwrap();
        assert_eq!(json["conversation"], serde_json::json!({"id": 2, "sender_id": 1, "receiver_id": 9}));
        assert_eq!(json["timestamp"], "1970-01-01T00:00:00.000Z");
    }
}
