use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub sender_id: i64,
    pub receiver_id: i64,
    /// min(sender_id, receiver_id): with `user_high`, the unique key of the pair.
    pub user_low: i64,
    pub user_high: i64,
    pub created_at: DateTimeUtc,
    /// `direct` or `group`.
    pub kind: String,
    /// A group's name.
    pub name: Option<String>,
}

/// The stored names of a conversation's kinds.
pub const DIRECT: &str = "direct";
pub const GROUP: &str = "group";

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::message::Entity")]
    Message,
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// The conversation without a group's members (see [`Model::with_members`]).
impl From<Model> for chat_proto::Conversation {
    fn from(model: Model) -> Self {
        let group = model.kind == GROUP;
        Self {
            id: model.id,
            sender_id: model.sender_id,
            receiver_id: if group { 0 } else { model.receiver_id },
            created_at_ms: model.created_at.timestamp_millis(),
            kind: if group { chat_proto::ConversationKind::Group } else { chat_proto::ConversationKind::Direct } as i32,
            name: model.name.unwrap_or_default(),
            members: Vec::new(),
        }
    }
}

impl Model {
    pub fn is_group(&self) -> bool {
        self.kind == GROUP
    }

    /// The conversation with its members' rows: a group lists them, oldest first; a direct
    /// conversation's are implied by its pair.
    pub fn with_members(self, rows: &[super::member::Model]) -> chat_proto::Conversation {
        let group = self.is_group();
        let created_at_ms = self.created_at.timestamp_millis();
        let mut conversation = chat_proto::Conversation::from(self);
        if group {
            let id = conversation.id;
            conversation.members =
                super::member::as_group_members(rows.iter().filter(|row| row.conversation_id == id), created_at_ms);
        }
        conversation
    }
}
