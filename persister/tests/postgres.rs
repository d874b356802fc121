//! The store against the machine's real Postgres: migrations, the one-conversation-per-pair
//! rule under concurrency, and batch inserts. Each run uses a database of its own, dropped
//! at the end. Without a reachable server the test is skipped with a loud message, except
//! under `CI=true`, where that is a failure.

use chat_persister::{HistoryWindow, NewMessage, Store};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn admin() -> Option<DatabaseConnection> {
    let url = std::env::var("CHAT_TEST_POSTGRES_ADMIN_URL").unwrap_or_else(|_| ADMIN_URL.to_owned());
    match Database::connect(&url).await {
        Ok(db) => Some(db),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Postgres is required under CI: {e}")
        }
        Err(e) => {
            eprintln!("\n!!! SKIPPING postgres tests: cannot connect to {url}: {e}\n");
            None
        }
    }
}

#[tokio::test]
async fn the_store_works_on_postgres() {
    let Some(admin) = admin().await else { return };
    let name = format!("chat_test_{}", std::process::id());
    admin.execute_unprepared(&format!("drop database if exists {name} with (force)")).await.unwrap();
    admin.execute_unprepared(&format!("create database {name}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");

    let store = Store::connect(&url).await.expect("connects and migrates");
    // Migrations are idempotent: a second role starting against the same database is fine.
    let again = Store::connect(&url).await.expect("second connect");

    // Two concurrent opens of one pair, in both orders, give one conversation.
    let (a, b) = tokio::join!(store.open_conversation(10, 20), again.open_conversation(20, 10));
    let ((a, a_created), (b, b_created)) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id);
    assert!(a_created ^ b_created, "exactly one of them created it");

    let batch: Vec<NewMessage> = (0..50)
        .map(|i| NewMessage {
            conversation_id: a.id,
            sender_id: 10,
            message_type: "text".into(),
            content: format!("m{i}"),
            dedup_key: format!("r:{i}"),
        })
        .collect();
    let stored = store.insert_messages(&batch).await.unwrap();
    assert_eq!(stored.len(), 50);
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids follow the batch order");
    let (page, total) = store.messages_page(a.id, HistoryWindow::Page { page: 3, limit: 20 }).await.unwrap();
    assert_eq!(total, 50);
    assert_eq!(
        page.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        (40..50).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let (before, _) = store.messages_page(a.id, HistoryWindow::Before { id: stored[5].id, limit: 3 }).await.unwrap();
    assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), stored[2..5].iter().map(|m| m.id).collect::<Vec<_>>());
    assert_eq!(store.contacts_of(20).await.unwrap(), vec![10]);
    // A batch repeating stored keys (a redelivered batch) stores nothing new.
    let repeated = store.insert_messages(&batch[..10]).await.unwrap();
    assert_eq!(repeated, stored[..10].to_vec());
    assert_eq!(store.messages_page(a.id, HistoryWindow::Page { page: 1, limit: 1 }).await.unwrap().1, 50);

    drop((store, again));
    admin.execute_unprepared(&format!("drop database {name} with (force)")).await.unwrap();
}
