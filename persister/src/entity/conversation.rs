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
}

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

impl From<Model> for chat_proto::Conversation {
    fn from(model: Model) -> Self {
        Self {
            id: model.id,
            sender_id: model.sender_id,
            receiver_id: model.receiver_id,
            created_at_ms: model.created_at.timestamp_millis(),
        }
    }
}
