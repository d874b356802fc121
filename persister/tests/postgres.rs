//! The store against the machine's real Postgres: migrations, the one-conversation-per-pair
//! rule under concurrency, and batch inserts. Each run uses a database of its own, dropped
//! at the end. Without a reachable server the test is skipped with a loud message, except
//! under `CI=true`, where that is a failure.

use chat_persister::{HistoryWindow, NewMessage, NewReceipt, Store};
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

/// A database of its own for one test (`tag` tells the tests apart): the admin connection, its
/// name (to drop it at the end) and its URL. None when Postgres is absent outside CI.
async fn fresh_database(tag: &str) -> Option<(DatabaseConnection, String, String)> {
    let admin = admin().await?;
    let name = format!("chat_test_{tag}_{}", std::process::id());
    admin.execute_unprepared(&format!("drop database if exists {name} with (force)")).await.unwrap();
    admin.execute_unprepared(&format!("create database {name}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    Some((admin, name, url))
}

/// A text message of `sender_id` in `conversation_id`.
fn text(conversation_id: i64, sender_id: i64, content: String, dedup_key: String) -> NewMessage {
    NewMessage { conversation_id, sender_id, message_type: "text".into(), content, dedup_key }
}

#[tokio::test]
async fn the_store_works_on_postgres() {
    let Some((admin, name, url)) = fresh_database("store").await else { return };

    let store = Store::connect(&url).await.expect("connects and migrates");
    // Migrations are idempotent: a second role starting against the same database is fine.
    let again = Store::connect(&url).await.expect("second connect");

    // Two concurrent opens of one pair, in both orders, give one conversation.
    let (a, b) = tokio::join!(store.open_conversation(10, 20), again.open_conversation(20, 10));
    let ((a, a_created), (b, b_created)) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id);
    assert!(a_created ^ b_created, "exactly one of them created it");

    let batch: Vec<NewMessage> = (0..50).map(|i| text(a.id, 10, format!("m{i}"), format!("r:{i}"))).collect();
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

    // The inbox rows moved with the batch, in the same transaction; receipts move them on.
    let read = |message_id| NewReceipt { conversation_id: a.id, user_id: 20, message_id, read: true };
    let inbox = store.inbox_page(20, 50, None).await.unwrap();
    assert_eq!((inbox.total_unread, inbox.entries.len()), (50, 1));
    let answers = store.apply_receipts(&[read(stored[9].id), read(stored[4].id)]).await.unwrap();
    assert_eq!(answers.iter().map(|a| a.as_ref().map(|a| a.moved)).collect::<Vec<_>>(), vec![Some(true), Some(false)]);
    assert_eq!(store.inbox_page(20, 50, None).await.unwrap().total_unread, 40);
    // One batch of each kind: a delivered receipt moves the delivered position alone (the
    // unread count stays); a message of another conversation, a user who is no member, and a
    // message not stored (an id past the newest) are refused.
    let (other, _) = store.open_conversation(10, 30).await.unwrap();
    let foreign = NewMessage { conversation_id: other.id, dedup_key: "foreign".into(), ..batch[0].clone() };
    let foreign = store.insert_messages(&[foreign]).await.unwrap()[0].id;
    let delivered = NewReceipt { read: false, ..read(stored[20].id) };
    let answers = store
        .apply_receipts(&[
            delivered,
            read(foreign),
            NewReceipt { user_id: 99, ..read(stored[30].id) },
            read(foreign + 1_000),
        ])
        .await
        .unwrap();
    assert!(answers[1..].iter().all(Option::is_none), "refused: {answers:?}");
    let moved = answers[0].as_ref().expect("a member's receipt");
    let positions = &moved.positions;
    assert!(moved.moved && positions.delivered_at.is_some());
    assert_eq!(
        (positions.last_read_message_id, positions.last_delivered_message_id, positions.unread_count),
        (stored[9].id, stored[20].id, 40)
    );
    // Many members' counts in one statement (placeholders numbered past the first pair).
    let mut pairs = Vec::new();
    for other in 100..130 {
        let (conversation, _) = store.open_conversation(20, other).await.unwrap();
        let message = |key: &str| NewMessage {
            conversation_id: conversation.id,
            sender_id: 20,
            dedup_key: format!("{key}:{other}"),
            ..batch[0].clone()
        };
        let id = store.insert_messages(&[message("first"), message("second")]).await.unwrap()[0].id;
        pairs.push(NewReceipt { conversation_id: conversation.id, user_id: other, message_id: id, read: true });
    }
    let answers = store.apply_receipts(&pairs).await.unwrap();
    for (answer, pair) in answers.iter().zip(&pairs) {
        let answer = answer.as_ref().expect("a member's receipt");
        assert_eq!((answer.positions.last_read_message_id, answer.positions.unread_count), (pair.message_id, 1));
    }
    // One batch over all thirty conversations, each sent by the other member: user 20's rows
    // all move in it (one statement for them all, placeholders numbered across conversations).
    let replies: Vec<NewMessage> = pairs
        .iter()
        .map(|pair| NewMessage {
            conversation_id: pair.conversation_id,
            sender_id: pair.user_id,
            dedup_key: format!("reply:{}", pair.conversation_id),
            ..batch[0].clone()
        })
        .collect();
    // Both members sending in one batch: each reads up to their own newest; what the other sent
    // after it is unread.
    let (both, _) = store.open_conversation(40, 41).await.unwrap();
    let says = |sender_id: i64, key: &str| NewMessage {
        conversation_id: both.id,
        sender_id,
        dedup_key: key.into(),
        ..batch[0].clone()
    };
    let said = store.insert_messages(&[says(40, "b1"), says(41, "b2"), says(40, "b3")]).await.unwrap();
    let rows = store.positions(both.id).await.unwrap();
    let standing: Vec<(i64, i64, i64, i64)> =
        rows.iter().map(|r| (r.user_id, r.unread_count, r.last_read_message_id, r.last_message_id)).collect();
    assert_eq!(standing, vec![(40, 0, said[2].id, said[2].id), (41, 1, said[1].id, said[2].id)]);
    let replied = store.insert_messages(&replies).await.unwrap();
    assert_eq!(store.inbox_page(20, 50, None).await.unwrap().total_unread, 40 + 30);
    for (pair, reply) in pairs.iter().zip(&replied) {
        let rows = store.positions(pair.conversation_id).await.unwrap();
        let mine = rows.iter().find(|row| row.user_id == 20).expect("user 20's row");
        let theirs = rows.iter().find(|row| row.user_id == pair.user_id).expect("the replier's row");
        assert_eq!((mine.unread_count, mine.last_message_id), (1, reply.id));
        assert_eq!((theirs.unread_count, theirs.last_read_message_id, theirs.last_message_id), (0, reply.id, reply.id));
    }
    let page = store.inbox_page(20, 10, None).await.unwrap();
    let next = store.inbox_page(20, 10, page.next_before).await.unwrap();
    assert!(page.entries.iter().all(|e| next.entries.iter().all(|n| n.conversation.id != e.conversation.id)));
    assert_eq!(page.entries.len() + next.entries.len(), 20);

    // Edits, reactions and deletes (migration 5): counted per emoji, a tombstone kept, and
    // retention taking a message with its reactions and changes (the cascade).
    use chat_persister::store::NewMessageChange;
    use chat_proto::MessageChangeKind;
    let change = |user_id, kind, emoji: &str, key: &str| NewMessageChange {
        conversation_id: a.id,
        message_id: stored[0].id,
        user_id,
        kind,
        content: "edited".into(),
        emoji: emoji.into(),
        on: true,
        dedup_key: key.into(),
    };
    let applied = store
        .apply_message_changes(&[
            change(10, MessageChangeKind::Edit, "", "e1"),
            change(20, MessageChangeKind::React, "👍", "e2"),
            change(10, MessageChangeKind::React, "👍", "e3"),
        ])
        .await
        .unwrap();
    let counts = &applied[2].as_ref().expect("reacted").counts;
    assert_eq!(counts.get("👍"), Some(&2));
    let (reactions, mine) = store.reactions_of(&[stored[0].id], 20).await.unwrap();
    assert_eq!((reactions[&stored[0].id].get("👍"), mine[&stored[0].id].len()), (Some(&2), 1));
    let deleted = store.apply_message_changes(&[change(10, MessageChangeKind::Delete, "", "e4")]).await.unwrap();
    assert!(deleted[0].is_ok(), "the sender deletes");
    assert_eq!(store.message_events_after(a.id, 0, stored[0].id, 10).await.unwrap().len(), 4);
    let swept = store.delete_messages_before(chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(swept, 144, "every message of the test, in one batch");
    assert!(store.message_events_after(a.id, 0, stored[0].id, 10).await.unwrap().is_empty(), "cascaded");

    drop((store, again));
    admin.execute_unprepared(&format!("drop database {name} with (force)")).await.unwrap();
}

/// A history page and an inbox page are each read from one snapshot: while messages come, are
/// read and go (as retention deletes them), a history's total counts the rows of a page that
/// holds them all, and an inbox's total unread is the sum of its rows' counts. Read at Postgres's
/// default isolation, each statement would see the tables as of its own start, and a commit
/// between two of them would make them disagree.
#[tokio::test]
async fn pages_and_their_totals_agree_while_messages_come_and_go() {
    let Some((admin, name, url)) = fresh_database("snapshot").await else { return };
    let store = Store::connect(&url).await.expect("connects and migrates");
    let (conversation, _) = store.open_conversation(1, 2).await.unwrap();
    let churn_db = Database::connect(&url).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<NewMessage> = (0..5)
                    .map(|i| text(conversation.id, 1, format!("r{round} m{i}"), format!("r{round}:{i}")))
                    .collect();
                let stored = store.insert_messages(&batch).await.unwrap();
                // User 2 reads the first of them: unread goes 5 up, then 4 down.
                let read =
                    NewReceipt { conversation_id: conversation.id, user_id: 2, message_id: stored[0].id, read: true };
                store.apply_receipts(&[read]).await.unwrap();
                churn_db
                    .execute_unprepared(&format!("delete from messages where conversation_id = {}", conversation.id))
                    .await
                    .unwrap();
                round += 1;
            }
            round
        }
    });
    for _ in 0..1_000 {
        let (page, total) =
            store.messages_page(conversation.id, HistoryWindow::Page { page: 1, limit: 100 }).await.unwrap();
        assert_eq!(total, page.len() as u64, "the total counts the page that holds every message");
        let inbox = store.inbox_page(2, 10, None).await.unwrap();
        let unread: i64 = inbox.entries.iter().map(|entry| entry.own.unread_count).sum();
        assert_eq!(inbox.total_unread, unread, "the total unread is the sum of the page's counts");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = churn.await.unwrap();
    assert!(rounds > 10, "messages came and went while the pages were read ({rounds} rounds)");
    drop(store);
    admin.execute_unprepared(&format!("drop database {name} with (force)")).await.unwrap();
}
