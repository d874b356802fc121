//! Groups: a conversation is `direct` (two users, as before) or a `group` with a name and any
//! number of members, each with a role and the time they joined.
//!
//! A group's row keeps the pair columns of a direct conversation filled with its creator, so
//! they stay `NOT NULL` (SQLite cannot relax a column); the pair's uniqueness now holds for
//! direct conversations only (a partial index), and a group's members are its rows in
//! `conversation_members`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
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
        manager.drop_index(Index::drop().name(PAIR_INDEX).table(Conversations::Table).if_exists().to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
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
