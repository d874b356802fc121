//! The inbox: each member's read and delivered positions in a conversation, its unread count,
//! and the conversation's newest message and activity time copied onto the member's row, so
//! that a user's inbox page is one index range scan and `total_unread` one sum over the user's
//! rows (no per-conversation query). The persister keeps these columns up to date in the same
//! transaction as the messages it stores.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConversationMembers {
    Table,
    ConversationId,
    UserId,
    /// The newest message the member has read (0: none). Reading implies delivered.
    LastReadMessageId,
    ReadAt,
    /// The newest message delivered to one of the member's devices (0: none).
    LastDeliveredMessageId,
    DeliveredAt,
    /// Messages from others after `last_read_message_id`.
    UnreadCount,
    /// The conversation's newest message (0: none), the same on every member's row.
    LastMessageId,
    /// The newest message's time, else the conversation's creation: the inbox order.
    LastActivityAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ConversationMembers as M;
        manager
            .create_table(
                Table::create()
                    .table(M::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(M::ConversationId).big_integer().not_null())
                    .col(ColumnDef::new(M::UserId).big_integer().not_null())
                    .col(ColumnDef::new(M::LastReadMessageId).big_integer().not_null().default(0))
                    .col(ColumnDef::new(M::ReadAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(M::LastDeliveredMessageId).big_integer().not_null().default(0))
                    .col(ColumnDef::new(M::DeliveredAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(M::UnreadCount).big_integer().not_null().default(0))
                    .col(ColumnDef::new(M::LastMessageId).big_integer().not_null().default(0))
                    .col(ColumnDef::new(M::LastActivityAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(M::ConversationId).col(M::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("conversation_members_conversation")
                            .from(M::Table, M::ConversationId)
                            .to(Conversations::Table, Conversations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversation_members_inbox")
                    .table(M::Table)
                    .col(M::UserId)
                    .col(M::LastActivityAt)
                    .col(M::ConversationId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Conversations stored before this migration: each member has read up to their own
        // newest message; what others sent after it is unread.
        for member in ["sender_id", "receiver_id"] {
            // Written without LATERAL, which SQLite lacks.
            let backfill = format!(
                "INSERT INTO conversation_members \
                   (conversation_id, user_id, last_read_message_id, last_delivered_message_id, unread_count, \
                    last_message_id, last_activity_at) \
                 SELECT b.id, b.user_id, b.own, b.own, \
                   (SELECT COUNT(*) FROM messages m \
                     WHERE m.conversation_id = b.id AND m.sender_id <> b.user_id AND m.id > b.own), \
                   COALESCE((SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = b.id), 0), \
                   COALESCE((SELECT MAX(m.created_at) FROM messages m WHERE m.conversation_id = b.id), b.created_at) \
                 FROM (SELECT c.id, c.{member} AS user_id, c.created_at, \
                         COALESCE((SELECT MAX(m.id) FROM messages m \
                           WHERE m.conversation_id = c.id AND m.sender_id = c.{member}), 0) AS own \
                       FROM conversations c) b \
                 WHERE NOT EXISTS (SELECT 1 FROM conversation_members x \
                   WHERE x.conversation_id = b.id AND x.user_id = b.user_id)"
            );
            manager.get_connection().execute_unprepared(&backfill).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ConversationMembers::Table).to_owned()).await
    }
}
