//! The JSON shapes the clients see, built from the bus's protobuf messages. Their `ToSchema`
//! derives (with examples) make the components of the OpenAPI document (see `openapi`).

use chat_proto::{Conversation, StoredMessage};
use serde::Serialize;
use utoipa::ToSchema;

/// A message as `message-sent`, `receive-message` and the history API show it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 42, "sender_id": 1, "conversation_id": 7, "timestamp": "2026-11-25T19:51:58.530Z",
    "message_type": "text", "content": "Hello!", "conversation": {"id": 7, "sender_id": 1, "receiver_id": 2}
}))]
pub struct MessageJson {
    #[schema(minimum = 1)]
    pub id: i64,
    #[schema(minimum = 1)]
    pub sender_id: i64,
    #[schema(minimum = 1)]
    pub conversation_id: i64,
    /// ISO 8601 in UTC with milliseconds.
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[schema(pattern = "^(text|image|file)$")]
    pub message_type: String,
    /// As sent, not HTML-escaped: escape it when rendering.
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
}

/// The conversation attached to a message event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationRef {
    #[schema(minimum = 1)]
    pub id: i64,
    #[schema(minimum = 1)]
    pub sender_id: i64,
    #[schema(minimum = 1)]
    pub receiver_id: i64,
}

/// A conversation as the REST API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": 7, "sender_id": 1, "receiver_id": 2, "created_at": "2026-11-25T19:51:58.530Z"}))]
pub struct ConversationJson {
    #[schema(minimum = 1)]
    pub id: i64,
    #[schema(minimum = 1)]
    pub sender_id: i64,
    #[schema(minimum = 1)]
    pub receiver_id: i64,
    /// ISO 8601 in UTC with milliseconds.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The body of `POST /api/chats/conversations`: two different users, in either order. (The
/// handler reads the fields itself, to report every problem in the API's words.)
#[derive(Debug, serde::Deserialize, ToSchema)]
#[schema(example = json!({"sender_id": 1, "receiver_id": 2}))]
pub struct OpenConversationJson {
    #[schema(minimum = 1)]
    pub sender_id: i64,
    #[schema(minimum = 1)]
    pub receiver_id: i64,
}

/// A page of a conversation's history, oldest first. `page` is there for page requests,
/// `after` or `before` for cursor requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePageJson {
    pub data: Vec<MessageJson>,
    /// The page size used (the request's, capped at 100).
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    /// Messages in the whole conversation.
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub before: Option<i64>,
}

/// A user's conversations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationListJson {
    pub data: Vec<ConversationJson>,
}

/// Every REST error: the HTTP status, its reason phrase, and what went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"statusCode": 404, "error": "Not Found", "message": "Conversation not found"}))]
pub struct ErrorJson {
    #[schema(minimum = 400, maximum = 599)]
    pub status_code: u16,
    pub error: String,
    pub message: ErrorMessage,
}

/// One reason, or every validation problem of the request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorMessage {
    One(String),
    Problems(Vec<String>),
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
