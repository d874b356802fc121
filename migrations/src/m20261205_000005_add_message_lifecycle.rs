//! Edits, deletes and reactions: a message may be edited (`edited_at`) or deleted (`deleted_at`,
//! its content emptied: a tombstone in the history), and carries its reactions, one row per
//! user and emoji in `message_reactions`.
//!
//! Each change is also stored in `message_events`, placed after the conversation's newest
//! message when it was made (as `member_events` are): the order a rejoining client replays
//! them in. A change's `dedup_key` (the client's `changeId`, else the attempt's request id) is
//! unique per user, so a retried or redelivered change is stored once. Both tables follow
//! their message when retention deletes it (`ON DELETE CASCADE`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    EditedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum MessageReactions {
    Table,
    MessageId,
    UserId,
    Emoji,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MessageEvents {
    Table,
    Id,
    ConversationId,
    MessageId,
    AfterMessageId,
    Kind,
    UserId,
    Content,
    Emoji,
    On,
    Counts,
    DedupKey,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [Messages::EditedAt, Messages::DeletedAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .add_column_if_not_exists(ColumnDef::new(column).timestamp_with_time_zone().null())
                        .to_owned(),
                )
                .await?;
        }
        use MessageReactions as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(R::MessageId).big_integer().not_null())
                    .col(ColumnDef::new(R::UserId).big_integer().not_null())
                    .col(ColumnDef::new(R::Emoji).string_len(32).not_null())
                    .col(ColumnDef::new(R::CreatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(R::MessageId).col(R::Emoji).col(R::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("message_reactions_message")
                            .from(R::Table, R::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        use MessageEvents as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(E::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(E::ConversationId).big_integer().not_null())
                    .col(ColumnDef::new(E::MessageId).big_integer().not_null())
                    .col(ColumnDef::new(E::AfterMessageId).big_integer().not_null())
                    .col(ColumnDef::new(E::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(E::UserId).big_integer().not_null())
                    // An edit's new content; a reaction's emoji, whether it was added, and the
                    // message's counts after it (JSON `{emoji: count}`).
                    .col(ColumnDef::new(E::Content).text().null())
                    .col(ColumnDef::new(E::Emoji).string_len(32).null())
                    .col(ColumnDef::new(E::On).boolean().not_null().default(false))
                    .col(ColumnDef::new(E::Counts).text().null())
                    .col(ColumnDef::new(E::DedupKey).string_len(64).not_null())
                    .col(ColumnDef::new(E::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("message_events_message")
                            .from(E::Table, E::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for index in [
            Index::create()
                .name("message_events_order")
                .table(E::Table)
                .col(E::ConversationId)
                .col(E::AfterMessageId)
                .col(E::Id)
                .if_not_exists()
                .to_owned(),
            // The cascade from a deleted message.
            Index::create().name("message_events_message").table(E::Table).col(E::MessageId).if_not_exists().to_owned(),
            Index::create()
                .name("message_events_dedup")
                .table(E::Table)
                .col(E::UserId)
                .col(E::DedupKey)
                .unique()
                .if_not_exists()
                .to_owned(),
        ] {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MessageEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(MessageReactions::Table).to_owned()).await?;
        for column in [Messages::EditedAt, Messages::DeletedAt] {
            manager.alter_table(Table::alter().table(Messages::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
