use sea_orm::entity::prelude::*;

/// A stored edit, delete or reaction (see `chat_proto::MessageEvent`; migration 5).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    pub message_id: i64,
    /// The conversation's newest message when the change was made.
    pub after_message_id: i64,
    /// `edited`, `deleted` or `reaction`.
    pub kind: String,
    /// Who made the change.
    pub user_id: i64,
    /// An edit's new content.
    pub content: Option<String>,
    /// A reaction's emoji, whether it was added, and the message's counts after it (JSON).
    pub emoji: Option<String>,
    pub on: bool,
    pub counts: Option<String>,
    /// Unique per user: the client's `changeId`, else the attempt's request id.
    pub dedup_key: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub const EDITED: &str = "edited";
pub const DELETED: &str = "deleted";
pub const REACTION: &str = "reaction";

impl Model {
    /// The change as it travels; `message` is the edited message (for an edit).
    pub fn into_event(self, message: Option<chat_proto::StoredMessage>) -> chat_proto::MessageEvent {
        let kind = match self.kind.as_str() {
            EDITED => chat_proto::MessageEventKind::Edited,
            DELETED => chat_proto::MessageEventKind::Deleted,
            _ => chat_proto::MessageEventKind::Reaction,
        };
        let counts = self.counts.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default();
        chat_proto::MessageEvent {
            id: self.id,
            conversation_id: self.conversation_id,
            message_id: self.message_id,
            kind: kind as i32,
            user_id: self.user_id,
            message,
            at_ms: self.created_at.timestamp_millis(),
            emoji: self.emoji.unwrap_or_default(),
            on: self.on,
            counts,
            after_message_id: self.after_message_id,
        }
    }
}
