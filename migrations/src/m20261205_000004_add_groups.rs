//! Groups: a conversation is `direct` (two users, as before) or a `group` with a name and any
//! number of members, each with a role and the time they joined.
//!
//! A group's row keeps the pair columns of a direct conversation filled with its creator, so
//! they stay `NOT NULL` (SQLite cannot relax a column); the pair's uniqueness now holds for
//! direct conversations only (a partial index), and a group's members are its rows in
//! `conversation_members`. Changes of a group's members are stored in `member_events`, each
//! placed after the group's newest message when it was made: the group's order of messages and
//! membership changes, which a rejoining client replays.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Kind,
    Name,
    UserLow,
    UserHigh,
}

#[derive(DeriveIden)]
enum ConversationMembers {
    Table,
    Role,
    JoinedAt,
}

#[derive(DeriveIden)]
enum MemberEvents {
    Table,
    Id,
    ConversationId,
    AfterMessageId,
    Kind,
    UserId,
    Role,
    ByUserId,
    RequestId,
    CreatedAt,
}

const PAIR_INDEX: &str = "conversations_pair";
const DIRECT_PAIR_INDEX: &str = "conversations_direct_pair";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        let added = [
            Table::alter()
                .table(Conversations::Table)
                .add_column_if_not_exists(
                    ColumnDef::new(Conversations::Kind).string_len(8).not_null().default("direct"),
                )
                .to_owned(),
            Table::alter()
                .table(Conversations::Table)
                .add_column_if_not_exists(ColumnDef::new(Conversations::Name).string_len(100).null())
                .to_owned(),
            Table::alter()
                .table(ConversationMembers::Table)
                .add_column_if_not_exists(
                    ColumnDef::new(ConversationMembers::Role).string_len(16).not_null().default("member"),
                )
                .to_owned(),
            Table::alter()
                .table(ConversationMembers::Table)
                .add_column_if_not_exists(
                    ColumnDef::new(ConversationMembers::JoinedAt).timestamp_with_time_zone().null(),
                )
                .to_owned(),
        ];
        for alter in added {
            manager.alter_table(alter).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(DIRECT_PAIR_INDEX)
                    .table(Conversations::Table)
                    .col(Conversations::UserLow)
                    .col(Conversations::UserHigh)
                    .unique()
                    .and_where(Expr::col(Conversations::Kind).eq("direct"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager.drop_index(Index::drop().name(PAIR_INDEX).table(Conversations::Table).if_exists().to_owned()).await?;
        use MemberEvents as E;
        manager
            .create_table(
                Table::create()
                    .table(E::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(E::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(E::ConversationId).big_integer().not_null())
                    .col(ColumnDef::new(E::AfterMessageId).big_integer().not_null())
                    .col(ColumnDef::new(E::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(E::UserId).big_integer().not_null())
                    .col(ColumnDef::new(E::Role).string_len(16).not_null())
                    .col(ColumnDef::new(E::ByUserId).big_integer().not_null())
                    .col(ColumnDef::new(E::RequestId).string_len(64).not_null())
                    .col(ColumnDef::new(E::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("member_events_conversation")
                            .from(E::Table, E::ConversationId)
                            .to(Conversations::Table, Conversations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("member_events_order")
                    .table(E::Table)
                    .col(E::ConversationId)
                    .col(E::AfterMessageId)
                    .col(E::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("member_events_request")
                    .table(E::Table)
                    .col(E::RequestId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MemberEvents::Table).to_owned()).await?;
        let groups = "DELETE FROM conversation_members WHERE conversation_id IN \
                      (SELECT id FROM conversations WHERE kind = 'group')";
        manager.get_connection().execute_unprepared(groups).await?;
        manager
            .get_connection()
            .execute_unprepared(
                "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations WHERE kind = 'group')",
            )
            .await?;
        manager.get_connection().execute_unprepared("DELETE FROM conversations WHERE kind = 'group'").await?;
        manager
            .create_index(
                Index::create()
                    .name(PAIR_INDEX)
                    .table(Conversations::Table)
                    .col(Conversations::UserLow)
                    .col(Conversations::UserHigh)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager.drop_index(Index::drop().name(DIRECT_PAIR_INDEX).table(Conversations::Table).to_owned()).await?;
        for alter in [
            Table::alter().table(Conversations::Table).drop_column(Conversations::Kind).to_owned(),
            Table::alter().table(Conversations::Table).drop_column(Conversations::Name).to_owned(),
            Table::alter().table(ConversationMembers::Table).drop_column(ConversationMembers::Role).to_owned(),
            Table::alter().table(ConversationMembers::Table).drop_column(ConversationMembers::JoinedAt).to_owned(),
        ] {
            manager.alter_table(alter).await?;
        }
        Ok(())
    }
}
