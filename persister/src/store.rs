//! Database access: every query the chat service makes, in one place.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chat_migrations::{Migrator, MigratorTrait};
use chat_proto::Conversation;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use crate::entity::{conversation, message};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {url}: {source}")]
    Connect { url: String, source: DbErr },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("database migration failed: {0}")]
    Migrate(DbErr),
    #[error("database error: {0}")]
    Query(#[from] DbErr),
    #[error("the commit's outcome is unknown: {0}")]
    CommitUnknown(DbErr),
}

/// Whether a statement that failed may still have been carried out: it was sent, and the
/// database neither refused it nor answered (the connection broke, say). A refusal or a
/// connection never obtained means it did not run.
fn may_have_run(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::RuntimeErr;
    match error {
        DbErr::ConnectionAcquire(_) => false,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => !matches!(
            e,
            Sqlx::Database(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Configuration(_) | Sqlx::Encode(_)
        ),
        _ => true,
    }
}

/// A message accepted for storage; the store gives it its id and timestamp.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub conversation_id: i64,
    pub sender_id: i64,
    pub message_type: String,
    pub content: String,
    /// Unique per sender: a second message with the same key is not stored.
    pub dedup_key: String,
}

/// Handle to the database. Cheap to clone (a connection pool).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// The SQLite database of the all-in-one mode, `chat.db` in `data_dir` (created if missing).
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
        let url = format!("sqlite://{}?mode=rwc", data_dir.join("chat.db").display());
        Self::connect(&url).await
    }

    /// Connects to `url` (`postgres://…` or `sqlite://…`) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            // Write-ahead logging lets history reads proceed while the persister commits;
            // NORMAL sync is durable across process crashes, and across power loss in WAL mode
            // it can lose only the last transactions, never corrupt the file.
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        let db = Database::connect(options).await.map_err(|source| StoreError::Connect { url: redact(url), source })?;
        Migrator::up(&db, None).await.map_err(StoreError::Migrate)?;
        Ok(Self { db })
    }

    /// Whether the database answers now (a trivial round trip): for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    pub async fn conversation(&self, id: i64) -> Result<Option<Conversation>, StoreError> {
        Ok(conversation::Entity::find_by_id(id).one(&self.db).await?.map(Into::into))
    }

    /// The conversation of the pair, created when the pair has none; `true` when created now.
    /// Two concurrent calls for one pair get the same conversation (the pair is a unique key).
    pub async fn open_conversation(
        &self,
        sender_id: i64,
        receiver_id: i64,
    ) -> Result<(Conversation, bool), StoreError> {
        let (low, high) = (sender_id.min(receiver_id), sender_id.max(receiver_id));
        let row = conversation::ActiveModel {
            sender_id: Set(sender_id),
            receiver_id: Set(receiver_id),
            user_low: Set(low),
            user_high: Set(high),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        };
        let inserted = conversation::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([conversation::Column::UserLow, conversation::Column::UserHigh])
                    .do_nothing()
                    .to_owned(),
            )
            .exec(&self.db)
            .await;
        let created = match inserted {
            Ok(_) => true,
            Err(DbErr::RecordNotInserted) => false,
            Err(e) => return Err(e.into()),
        };
        let existing = conversation::Entity::find()
            .filter(conversation::Column::UserLow.eq(low))
            .filter(conversation::Column::UserHigh.eq(high))
            .one(&self.db)
            .await?
            .ok_or(DbErr::RecordNotFound(format!("conversation of users {low} and {high}")))?;
        Ok((existing.into(), created))
    }

    /// The user's conversations, newest first.
    pub async fn conversations_of(&self, user_id: i64) -> Result<Vec<Conversation>, StoreError> {
        let rows = conversation::Entity::find()
            .filter(conversation::Column::UserLow.eq(user_id).or(conversation::Column::UserHigh.eq(user_id)))
            .order_by_desc(conversation::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The users who share a conversation with `user_id`.
    pub async fn contacts_of(&self, user_id: i64) -> Result<Vec<i64>, StoreError> {
        let mut contacts: Vec<i64> = self
            .conversations_of(user_id)
            .await?
            .into_iter()
            .map(|c| if c.sender_id == user_id { c.receiver_id } else { c.sender_id })
            .collect();
        contacts.sort_unstable();
        contacts.dedup();
        Ok(contacts)
    }

    /// Stores a batch of messages with one multi-row `INSERT`: all of them or none. One
    /// statement is a transaction of its own, so the batch costs one round trip (no `BEGIN`,
    /// no `COMMIT`). A message whose sender already stored one under the same dedup key is not
    /// stored again: the one stored first takes its place in the result, so a retried send
    /// gets the original back. The result is in the order of `batch`.
    ///
    /// [`StoreError::CommitUnknown`] when the batch may be stored nevertheless: the statement
    /// was sent and no answer came, or it succeeded and reading back the duplicates failed.
    pub async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<message::Model>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let now = chrono::Utc::now();
        let rows = batch.iter().map(|new| message::ActiveModel {
            conversation_id: Set(new.conversation_id),
            sender_id: Set(new.sender_id),
            message_type: Set(new.message_type.clone()),
            content: Set(new.content.clone()),
            created_at: Set(now),
            dedup_key: Set(Some(new.dedup_key.clone())),
            ..Default::default()
        });
        let inserted = message::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([message::Column::SenderId, message::Column::DedupKey]).do_nothing().to_owned(),
            )
            .exec_with_returning_many(&self.db)
            .await;
        let inserted = match inserted {
            Ok(models) => models,
            // Every row conflicted: nothing new. (Backends differ in how they say so.)
            Err(DbErr::RecordNotInserted | DbErr::RecordNotFound(_)) => Vec::new(),
            Err(e) if may_have_run(&e) => return Err(StoreError::CommitUnknown(e)),
            Err(e) => return Err(e.into()),
        };
        // From here on the batch is stored: a failure must not be reported as "not stored".
        self.with_originals(batch, inserted).await.map_err(StoreError::CommitUnknown)
    }

    /// The stored message of each of `batch`, in its order: the row `inserted` when it was new,
    /// else the one its sender stored first under the same dedup key.
    async fn with_originals(
        &self,
        batch: &[NewMessage],
        inserted: Vec<message::Model>,
    ) -> Result<Vec<message::Model>, DbErr> {
        let mut by_key: HashMap<(i64, String), message::Model> =
            inserted.into_iter().filter_map(|m| Some(((m.sender_id, m.dedup_key.clone()?), m))).collect();
        // Rows skipped as duplicates were stored earlier: fetch the originals in one query.
        let missing: Vec<&NewMessage> =
            batch.iter().filter(|new| !by_key.contains_key(&(new.sender_id, new.dedup_key.clone()))).collect();
        if !missing.is_empty() {
            let mut originals = sea_orm::Condition::any();
            for new in &missing {
                originals = originals.add(
                    sea_orm::Condition::all()
                        .add(message::Column::SenderId.eq(new.sender_id))
                        .add(message::Column::DedupKey.eq(new.dedup_key.as_str())),
                );
            }
            for model in message::Entity::find().filter(originals).all(&self.db).await? {
                if let Some(key) = model.dedup_key.clone() {
                    by_key.insert((model.sender_id, key), model);
                }
            }
        }
        let stored = batch
            .iter()
            .map(|new| {
                by_key
                    .get(&(new.sender_id, new.dedup_key.clone()))
                    .cloned()
                    .ok_or_else(|| DbErr::RecordNotFound(format!("message with dedup key {}", new.dedup_key)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(stored)
    }

    /// A conversation's messages in id order (oldest first) as chosen by `window`, and the
    /// conversation's total message count.
    pub async fn messages_page(
        &self,
        conversation_id: i64,
        window: HistoryWindow,
    ) -> Result<(Vec<message::Model>, u64), StoreError> {
        let in_conversation = message::Entity::find().filter(message::Column::ConversationId.eq(conversation_id));
        let total = in_conversation.clone().count(&self.db).await?;
        let rows = match window {
            HistoryWindow::Page { page, limit } => {
                in_conversation
                    .order_by_asc(message::Column::Id)
                    .offset(page.saturating_sub(1).saturating_mul(limit))
                    .limit(limit)
                    .all(&self.db)
                    .await?
            }
            HistoryWindow::After { id, limit } => {
                in_conversation
                    .filter(message::Column::Id.gt(id))
                    .order_by_asc(message::Column::Id)
                    .limit(limit)
                    .all(&self.db)
                    .await?
            }
            HistoryWindow::Before { id, limit } => {
                let mut newest_first = in_conversation
                    .filter(message::Column::Id.lt(id))
                    .order_by_desc(message::Column::Id)
                    .limit(limit)
                    .all(&self.db)
                    .await?;
                newest_first.reverse();
                newest_first
            }
        };
        Ok((rows, total))
    }
}

/// Which part of a conversation's history to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryWindow {
    /// Page `page` (from 1) of `limit` messages, counted from the oldest.
    Page { page: u64, limit: u64 },
    /// The `limit` oldest messages with an id above `id`.
    After { id: i64, limit: u64 },
    /// The `limit` newest messages with an id below `id`.
    Before { id: i64, limit: u64 },
}

/// The URL without its password, for error messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &credentials[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(dir.path()).await.expect("store opens");
        (dir, store)
    }

    #[test]
    fn a_statement_may_have_run_unless_refused_or_never_sent() {
        use sea_orm::sqlx::Error as Sqlx;
        use sea_orm::{ConnAcquireErr, RuntimeErr};
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(may_have_run(&DbErr::Exec(RuntimeErr::SqlxError(Sqlx::Io(broken)))));
        assert!(may_have_run(&DbErr::Query(RuntimeErr::SqlxError(Sqlx::Protocol("cut".into())))));
        assert!(!may_have_run(&DbErr::Exec(RuntimeErr::SqlxError(Sqlx::PoolTimedOut))));
        assert!(!may_have_run(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)));
    }

    fn text(conversation_id: i64, sender_id: i64, content: &str) -> NewMessage {
        NewMessage {
            conversation_id,
            sender_id,
            message_type: "text".into(),
            content: content.into(),
            dedup_key: format!("k:{content}"),
        }
    }

    #[tokio::test]
    async fn a_pair_has_one_conversation_whoever_opens_it() {
        let (_dir, store) = temp_store().await;
        let (first, created) = store.open_conversation(1, 2).await.unwrap();
        assert!(created);
        assert_eq!((first.sender_id, first.receiver_id), (1, 2));
        let (again, created_again) = store.open_conversation(2, 1).await.unwrap();
        assert!(!created_again);
        assert_eq!(again, first);
        let (other, _) = store.open_conversation(1, 3).await.unwrap();
        assert_ne!(other.id, first.id);
        assert_eq!(store.contacts_of(1).await.unwrap(), vec![2, 3]);
        assert_eq!(store.contacts_of(2).await.unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn messages_come_back_in_id_order_by_page() {
        let (_dir, store) = temp_store().await;
        let (conv, _) = store.open_conversation(1, 2).await.unwrap();
        let batch: Vec<_> = (0..5).map(|i| text(conv.id, 1 + i % 2, &format!("m{i}"))).collect();
        let stored = store.insert_messages(&batch).await.unwrap();
        assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
        let (page2, total) = store.messages_page(conv.id, HistoryWindow::Page { page: 2, limit: 2 }).await.unwrap();
        assert_eq!(total, 5);
        let contents: Vec<_> = page2.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["m2", "m3"]);
        let (after, _) =
            store.messages_page(conv.id, HistoryWindow::After { id: stored[1].id, limit: 2 }).await.unwrap();
        assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), [stored[2].id, stored[3].id]);
        let (before, _) =
            store.messages_page(conv.id, HistoryWindow::Before { id: stored[4].id, limit: 2 }).await.unwrap();
        assert_eq!(before.iter().map(|m| m.id).collect::<Vec<_>>(), [stored[2].id, stored[3].id], "oldest first");
    }

    #[tokio::test]
    async fn a_failing_batch_stores_nothing() {
        let (_dir, store) = temp_store().await;
        let (conv, _) = store.open_conversation(1, 2).await.unwrap();
        // conversation 999 does not exist: the foreign key fails the whole transaction
        let batch = [text(conv.id, 1, "kept?"), text(999, 1, "orphan")];
        assert!(store.insert_messages(&batch).await.is_err());
        assert_eq!(store.messages_page(conv.id, HistoryWindow::Page { page: 1, limit: 10 }).await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn a_sender_stores_one_message_per_dedup_key() {
        let (_dir, store) = temp_store().await;
        let (conv, _) = store.open_conversation(1, 2).await.unwrap();
        let first = store.insert_messages(&[text(conv.id, 1, "hello")]).await.unwrap();
        // the same key again, alone and twice within one batch: the first message every time
        let again = store.insert_messages(&[text(conv.id, 1, "hello"), text(conv.id, 1, "hello")]).await.unwrap();
        assert_eq!(again, vec![first[0].clone(), first[0].clone()]);
        // another sender may use the same key
        let other = store.insert_messages(&[text(conv.id, 2, "hello")]).await.unwrap();
        assert_ne!(other[0].id, first[0].id);
        assert_eq!(store.messages_page(conv.id, HistoryWindow::Page { page: 1, limit: 10 }).await.unwrap().1, 2);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://chat:secret@db:5432/chat"), "postgres://chat:***@db:5432/chat");
        assert_eq!(redact("sqlite://data/chat.db"), "sqlite://data/chat.db");
    }
}
