//! Idempotent sends: each message remembers the key its send was deduplicated by, and a sender
//! cannot store two messages under one key.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    SenderId,
    /// `c:<client_msg_id>` when the client chose an id, else `r:<request id>` (the gateway's id
    /// for the send, which makes a redelivered command idempotent too). Null on older rows.
    DedupKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(ColumnDef::new(Messages::DedupKey).string_len(80).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_sender_dedup_key")
                    .table(Messages::Table)
                    .col(Messages::SenderId)
                    .col(Messages::DedupKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("messages_sender_dedup_key").table(Messages::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Messages::Table).drop_column(Messages::DedupKey).to_owned()).await
    }
}
