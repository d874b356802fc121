use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    pub sender_id: i64,
    pub message_type: String,
    pub content: String,
    pub created_at: DateTimeUtc,
    /// What the send was deduplicated by; unique per sender (see migration 2).
    pub dedup_key: Option<String>,
    /// When it was last edited (migration 5).
    pub edited_at: Option<DateTimeUtc>,
    /// When it was deleted: its content is then empty, a tombstone (migration 5).
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::conversation::Entity",
        from = "Column::ConversationId",
        to = "super::conversation::Column::Id"
    )]
    Conversation,
}

impl Related<super::conversation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Conversation.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The message as it travels on the bus, with its conversation attached.
    pub fn into_stored(self, conversation: Option<chat_proto::Conversation>) -> chat_proto::StoredMessage {
        chat_proto::StoredMessage {
            id: self.id,
            sender_id: self.sender_id,
            conversation_id: self.conversation_id,
            timestamp_ms: self.created_at.timestamp_millis(),
            message_type: self.message_type,
            content: self.content,
            conversation,
            edited_at_ms: self.edited_at.map_or(0, |at| at.timestamp_millis()),
            deleted_at_ms: self.deleted_at.map_or(0, |at| at.timestamp_millis()),
            reactions: Default::default(),
            my_reactions: Vec::new(),
        }
    }
}
