use sea_orm::entity::prelude::*;

/// A member of a conversation: its read and delivered positions, its unread count, and the
/// conversation's newest message and activity (see migration 3).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    pub last_read_message_id: i64,
    pub read_at: Option<DateTimeUtc>,
    pub last_delivered_message_id: i64,
    pub delivered_at: Option<DateTimeUtc>,
    pub unread_count: i64,
    pub last_message_id: i64,
    pub last_activity_at: DateTimeUtc,
    /// `owner`, `moderator` or `member` (a group's roles; `member` in a direct conversation).
    pub role: String,
    /// When the user joined a group (`None`: when the conversation was created).
    pub joined_at: Option<DateTimeUtc>,
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

impl From<Model> for chat_proto::MemberPositions {
    fn from(model: Model) -> Self {
        Self {
            user_id: model.user_id,
            last_read_message_id: model.last_read_message_id,
            last_delivered_message_id: model.last_delivered_message_id,
            read_at_ms: model.read_at.map_or(0, |at| at.timestamp_millis()),
            delivered_at_ms: model.delivered_at.map_or(0, |at| at.timestamp_millis()),
        }
    }
}

/// A group's members as the wire shows them, oldest first; a join time not recorded is the
/// group's creation, `created_at_ms`.
pub fn as_group_members<'a>(
    rows: impl IntoIterator<Item = &'a Model>,
    created_at_ms: i64,
) -> Vec<chat_proto::GroupMember> {
    let mut members: Vec<chat_proto::GroupMember> = rows
        .into_iter()
        .map(|row| chat_proto::GroupMember {
            user_id: row.user_id,
            role: chat_proto::MemberRole::parse(&row.role).unwrap_or(chat_proto::MemberRole::Member) as i32,
            joined_at_ms: row.joined_at.map_or(created_at_ms, |at| at.timestamp_millis()),
        })
        .collect();
    members.sort_by_key(|m| (m.joined_at_ms, m.user_id));
    members
}
