//! Conversations (one per pair of users) and their messages.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    SenderId,
    ReceiverId,
    /// The smaller and the larger of the two user ids: with a unique index on the pair, one
    /// conversation per pair whoever created it, written portably (no expression index).
    UserLow,
    UserHigh,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ConversationId,
    SenderId,
    MessageType,
    Content,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Conversations::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Conversations::SenderId).big_integer().not_null())
                    .col(ColumnDef::new(Conversations::ReceiverId).big_integer().not_null())
                    .col(ColumnDef::new(Conversations::UserLow).big_integer().not_null())
                    .col(ColumnDef::new(Conversations::UserHigh).big_integer().not_null())
                    .col(ColumnDef::new(Conversations::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversations_pair")
                    .table(Conversations::Table)
                    .col(Conversations::UserLow)
                    .col(Conversations::UserHigh)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Listing a user's conversations and contacts looks up both columns.
        manager
            .create_index(
                Index::create()
                    .name("conversations_user_high")
                    .table(Conversations::Table)
                    .col(Conversations::UserHigh)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Messages::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Messages::ConversationId).big_integer().not_null())
                    .col(ColumnDef::new(Messages::SenderId).big_integer().not_null())
                    .col(ColumnDef::new(Messages::MessageType).string_len(16).not_null())
                    .col(ColumnDef::new(Messages::Content).text().not_null())
                    .col(ColumnDef::new(Messages::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("messages_conversation")
                            .from(Messages::Table, Messages::ConversationId)
                            .to(Conversations::Table, Conversations::Id),
                    )
                    .check(Expr::col(Messages::MessageType).is_in(["text", "image", "file"]))
                    .to_owned(),
            )
            .await?;
        // History pages read one conversation in id order.
        manager
            .create_index(
                Index::create()
                    .name("messages_conversation_id")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Messages::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Conversations::Table).to_owned()).await
    }
}
