//! The database schema, as sea-orm migrations that run on Postgres (the cluster) and SQLite
//! (the all-in-one mode). Each migration is a file of its own; never edit one that has shipped,
//! add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_conversations_and_messages;
mod m20261125_000002_add_message_dedup_key;
mod m20261204_000003_create_conversation_members;
mod m20261205_000004_add_groups;
mod m20261205_000005_add_message_lifecycle;
mod m20261206_000006_members_index_without_activity;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_conversations_and_messages::Migration),
            Box::new(m20261125_000002_add_message_dedup_key::Migration),
            Box::new(m20261204_000003_create_conversation_members::Migration),
            Box::new(m20261205_000004_add_groups::Migration),
            Box::new(m20261205_000005_add_message_lifecycle::Migration),
            Box::new(m20261206_000006_members_index_without_activity::Migration),
        ]
    }
}
