use sea_orm::entity::prelude::*;

/// A stored change of a group's membership (see `chat_proto::MemberEvent`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "member_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    /// The group's newest message when the change was made.
    pub after_message_id: i64,
    /// `added`, `removed` or `role_changed`.
    pub kind: String,
    pub user_id: i64,
    /// The member's role after the change (for `removed`, the role it had).
    pub role: String,
    pub by_user_id: i64,
    /// The command's request id: a redelivered command finds what it stored.
    pub request_id: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub const ADDED: &str = "added";
pub const REMOVED: &str = "removed";
pub const ROLE_CHANGED: &str = "role_changed";

impl From<Model> for chat_proto::MemberEvent {
    fn from(model: Model) -> Self {
        let kind = match model.kind.as_str() {
            ADDED => chat_proto::MemberEventKind::Added,
            REMOVED => chat_proto::MemberEventKind::Removed,
            _ => chat_proto::MemberEventKind::RoleChanged,
        };
        Self {
            id: model.id,
            conversation_id: model.conversation_id,
            kind: kind as i32,
            user_id: model.user_id,
            role: chat_proto::MemberRole::parse(&model.role).unwrap_or(chat_proto::MemberRole::Member) as i32,
            by: model.by_user_id,
            after_message_id: model.after_message_id,
            at_ms: model.created_at.timestamp_millis(),
        }
    }
}
