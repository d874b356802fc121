//! Database access: every query the chat service makes, in one place.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chat_migrations::{Migrator, MigratorTrait};
use chat_proto::{Conversation, MemberRole};
use sea_orm::sea_query::Expr;
use sea_orm::sea_query::{ArrayType, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};

use crate::entity::{conversation, member, member_event, message};

mod lifecycle;
pub use lifecycle::{Counts, MessageRefusal, NewMessageChange, RETENTION_BATCH};

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

/// A receipt accepted for storage: move `user_id`'s position in the conversation to
/// `message_id`, if that is forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewReceipt {
    pub conversation_id: i64,
    pub user_id: i64,
    pub message_id: i64,
    /// Reading implies delivered: a read moves both positions.
    pub read: bool,
}

/// A membership change accepted for storage (see `chat_proto::ChangeMember`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMemberChange {
    pub request_id: String,
    pub conversation_id: i64,
    pub actor_id: i64,
    pub kind: chat_proto::MemberChangeKind,
    pub user_id: i64,
    pub role: MemberRole,
    pub max_members: usize,
}

/// Why a membership change was refused: the kind, and a [`chat_proto::member_refusal`] code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRefusal {
    pub kind: chat_proto::ErrorKind,
    pub code: &'static str,
}

/// What storing a receipt did: the member's positions afterwards, and whether this receipt
/// is the one that moved them (the newest of its member and kind in the batch, past the
/// position stored before). `None` when the message is not a stored message of the
/// conversation, or the member has no row (not a member).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    pub positions: member::Model,
    pub moved: bool,
}

/// What a batch of receipts found and did: which of them name a stored message of their own
/// conversation, and the rows of the members they name before and after the batch.
struct ReceiptMoves {
    valid: Vec<bool>,
    before: HashMap<(i64, i64), member::Model>,
    after: HashMap<(i64, i64), member::Model>,
}

impl ReceiptMoves {
    /// Each receipt's answer, in order; the newest of its member and kind is the one that
    /// moved the position.
    fn answers(&self, receipts: &[NewReceipt]) -> Vec<Option<StoredReceipt>> {
        receipts
            .iter()
            .zip(&self.valid)
            .map(|(receipt, valid)| {
                let key = (receipt.conversation_id, receipt.user_id);
                let row = self.after.get(&key).filter(|_| *valid)?;
                let before = self.before.get(&key)?;
                let moved = if receipt.read {
                    row.last_read_message_id == receipt.message_id && before.last_read_message_id < receipt.message_id
                } else {
                    row.last_delivered_message_id == receipt.message_id
                        && before.last_delivered_message_id < receipt.message_id
                };
                Some(StoredReceipt { positions: row.clone(), moved })
            })
            .collect()
    }
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

    /// The conversation, with its members when it is a group.
    pub async fn conversation(&self, id: i64) -> Result<Option<Conversation>, StoreError> {
        let Some(model) = conversation::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(None);
        };
        if !model.is_group() {
            return Ok(Some(model.into()));
        }
        let members = member::Entity::find().filter(member::Column::ConversationId.eq(id)).all(&self.db).await?;
        Ok(Some(model.with_members(&members)))
    }

    /// Creates a group owned by `creator_id` whose members are the creator and `member_ids`
    /// (duplicates count once), in one transaction.
    pub async fn create_group(
        &self,
        creator_id: i64,
        name: &str,
        member_ids: &[i64],
    ) -> Result<Conversation, StoreError> {
        let now = now_in_micros();
        let txn = self.db.begin().await?;
        let row = conversation::ActiveModel {
            sender_id: Set(creator_id),
            receiver_id: Set(creator_id),
            user_low: Set(creator_id),
            user_high: Set(creator_id),
            created_at: Set(now),
            kind: Set(conversation::GROUP.to_owned()),
            name: Set(Some(name.to_owned())),
            ..Default::default()
        };
        let group = conversation::Entity::insert(row).exec_with_returning(&txn).await?;
        let mut users = vec![creator_id];
        for &user_id in member_ids {
            if !users.contains(&user_id) {
                users.push(user_id);
            }
        }
        let rows: Vec<member::Model> = users
            .iter()
            .map(|&user_id| member::Model {
                conversation_id: group.id,
                user_id,
                last_read_message_id: 0,
                read_at: None,
                last_delivered_message_id: 0,
                delivered_at: None,
                unread_count: 0,
                last_message_id: 0,
                last_activity_at: now,
                role: if user_id == creator_id { MemberRole::Owner } else { MemberRole::Member }.as_str().to_owned(),
                joined_at: Some(now),
            })
            .collect();
        for chunk in rows.chunks(ROWS_PER_UPSERT) {
            member::Entity::insert_many(chunk.iter().cloned().map(member::ActiveModel::from)).exec(&txn).await?;
        }
        txn.commit().await?;
        Ok(group.with_members(&rows))
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
            kind: Set(conversation::DIRECT.to_owned()),
            ..Default::default()
        };
        let inserted = conversation::Entity::insert(row)
            .on_conflict(
                // The pair is unique among direct conversations (a partial index), whose
                // condition the database must see as written, not as a bound parameter.
                OnConflict::columns([conversation::Column::UserLow, conversation::Column::UserHigh])
                    .target_and_where(Expr::cust("kind = 'direct'"))
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
            .filter(conversation::Column::Kind.eq(conversation::DIRECT))
            .one(&self.db)
            .await?
            .ok_or(DbErr::RecordNotFound(format!("conversation of users {low} and {high}")))?;
        // Every time, not only when created: an earlier call that stopped between the two
        // statements left the conversation without its members' rows.
        let members = [existing.sender_id, existing.receiver_id].map(|user_id| member::ActiveModel {
            conversation_id: Set(existing.id),
            user_id: Set(user_id),
            last_read_message_id: Set(0),
            read_at: Set(None),
            last_delivered_message_id: Set(0),
            delivered_at: Set(None),
            unread_count: Set(0),
            last_message_id: Set(0),
            last_activity_at: Set(existing.created_at),
            ..Default::default()
        });
        let added = member::Entity::insert_many(members)
            .on_conflict(
                OnConflict::columns([member::Column::ConversationId, member::Column::UserId]).do_nothing().to_owned(),
            )
            .exec(&self.db)
            .await;
        match added {
            Ok(_) | Err(DbErr::RecordNotInserted) => {}
            Err(e) => return Err(e.into()),
        }
        Ok((existing.into(), created))
    }

    /// The members of each group of `ids` (direct conversations have none here), oldest first.
    pub async fn group_members(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<member::Model>>, StoreError> {
        let mut members: HashMap<i64, Vec<member::Model>> = HashMap::new();
        for chunk in ids.chunks(PAIRS_PER_STATEMENT) {
            let rows = member::Entity::find()
                .filter(member::Column::ConversationId.is_in(chunk.to_vec()))
                .all(&self.db)
                .await?;
            for row in rows {
                members.entry(row.conversation_id).or_default().push(row);
            }
        }
        Ok(members)
    }

    /// Applies a batch's membership changes in order, in one transaction: what each stored, or
    /// why it was refused (a [`chat_proto::member_refusal`] code). A change whose request id
    /// already stored events (a redelivered command) answers those and changes nothing.
    pub async fn apply_member_changes(
        &self,
        changes: &[NewMemberChange],
    ) -> Result<Vec<Result<Vec<member_event::Model>, MemberRefusal>>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await?;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            results.push(Self::apply_member_change(&txn, change).await?);
        }
        if let Err(e) = txn.commit().await {
            return Err(if may_have_run(&e) { StoreError::CommitUnknown(e) } else { e.into() });
        }
        Ok(results)
    }

    async fn apply_member_change(
        txn: &sea_orm::DatabaseTransaction,
        change: &NewMemberChange,
    ) -> Result<Result<Vec<member_event::Model>, MemberRefusal>, StoreError> {
        use chat_proto::member_refusal as why;
        use chat_proto::MemberChangeKind as Kind;
        let done = member_event::Entity::find()
            .filter(member_event::Column::RequestId.eq(change.request_id.as_str()))
            .order_by_asc(member_event::Column::Id)
            .all(txn)
            .await?;
        if !done.is_empty() {
            return Ok(Ok(done));
        }
        let refuse = |kind: chat_proto::ErrorKind, code: &'static str| Ok(Err(MemberRefusal { kind, code }));
        let Some(group) = conversation::Entity::find_by_id(change.conversation_id).one(txn).await? else {
            return refuse(chat_proto::ErrorKind::NotFound, why::NO_CONVERSATION);
        };
        if !group.is_group() {
            return refuse(chat_proto::ErrorKind::Invalid, why::NOT_GROUP);
        }
        let mut members = member::Entity::find().filter(member::Column::ConversationId.eq(group.id)).all(txn).await?;
        // Oldest first: who inherits the ownership.
        members.sort_by_key(|m| (m.joined_at.unwrap_or(group.created_at), m.user_id));
        let role_of = |user_id: i64| {
            members
                .iter()
                .find(|m| m.user_id == user_id)
                .map(|m| MemberRole::parse(&m.role).unwrap_or(MemberRole::Member))
        };
        let Some(actor) = role_of(change.actor_id) else {
            return refuse(chat_proto::ErrorKind::Forbidden, why::NOT_MEMBER);
        };
        let manages = matches!(actor, MemberRole::Owner | MemberRole::Moderator);
        let target = role_of(change.user_id);
        let now = now_in_micros();
        let newest: Option<i64> = message::Entity::find()
            .select_only()
            .column_as(message::Column::Id.max(), "newest")
            .filter(message::Column::ConversationId.eq(group.id))
            .into_tuple()
            .one(txn)
            .await?
            .flatten();
        let after_message_id = newest.unwrap_or(0);
        let event = |kind: &str, user_id: i64, role: MemberRole| member_event::ActiveModel {
            conversation_id: Set(group.id),
            after_message_id: Set(after_message_id),
            kind: Set(kind.to_owned()),
            user_id: Set(user_id),
            role: Set(role.as_str().to_owned()),
            by_user_id: Set(change.actor_id),
            request_id: Set(change.request_id.clone()),
            created_at: Set(now),
            ..Default::default()
        };
        let mut events = Vec::new();
        match change.kind {
            Kind::Add => {
                if target.is_some() {
                    return refuse(chat_proto::ErrorKind::Invalid, why::ALREADY_MEMBER);
                }
                if !manages {
                    return refuse(chat_proto::ErrorKind::Forbidden, why::NOT_ALLOWED);
                }
                if change.role != MemberRole::Member && actor != MemberRole::Owner {
                    return refuse(chat_proto::ErrorKind::Forbidden, why::OWNER_ONLY);
                }
                if members.len() >= change.max_members {
                    return refuse(chat_proto::ErrorKind::Invalid, why::GROUP_FULL);
                }
                // The new member starts at the group's newest message: the history before it
                // is readable, not unread.
                let row = member::Model {
                    conversation_id: group.id,
                    user_id: change.user_id,
                    last_read_message_id: after_message_id,
                    read_at: None,
                    last_delivered_message_id: after_message_id,
                    delivered_at: None,
                    unread_count: 0,
                    last_message_id: after_message_id,
                    last_activity_at: now,
                    role: change.role.as_str().to_owned(),
                    joined_at: Some(now),
                };
                member::Entity::insert(member::ActiveModel::from(row)).exec(txn).await?;
                events.push(event(member_event::ADDED, change.user_id, change.role));
            }
            Kind::Remove | Kind::Leave => {
                let user_id = if change.kind == Kind::Leave { change.actor_id } else { change.user_id };
                let Some(role) = role_of(user_id) else {
                    return refuse(chat_proto::ErrorKind::Invalid, why::NO_SUCH_MEMBER);
                };
                if change.kind == Kind::Remove {
                    if role == MemberRole::Owner {
                        return refuse(chat_proto::ErrorKind::Forbidden, why::OWNER_STAYS);
                    }
                    if !manages {
                        return refuse(chat_proto::ErrorKind::Forbidden, why::NOT_ALLOWED);
                    }
                    if role == MemberRole::Moderator && actor != MemberRole::Owner {
                        return refuse(chat_proto::ErrorKind::Forbidden, why::OWNER_ONLY);
                    }
                }
                member::Entity::delete_many()
                    .filter(member::Column::ConversationId.eq(group.id))
                    .filter(member::Column::UserId.eq(user_id))
                    .exec(txn)
                    .await?;
                events.push(event(member_event::REMOVED, user_id, role));
                if role == MemberRole::Owner {
                    let remaining = members.iter().filter(|m| m.user_id != user_id);
                    let heir = remaining
                        .clone()
                        .find(|m| m.role == MemberRole::Moderator.as_str())
                        .or_else(|| remaining.clone().next());
                    if let Some(heir) = heir {
                        set_role(txn, group.id, heir.user_id, MemberRole::Owner).await?;
                        events.push(event(member_event::ROLE_CHANGED, heir.user_id, MemberRole::Owner));
                    }
                }
            }
            Kind::SetRole => {
                if actor != MemberRole::Owner {
                    return refuse(chat_proto::ErrorKind::Forbidden, why::OWNER_ONLY);
                }
                let Some(role) = target else {
                    return refuse(chat_proto::ErrorKind::Invalid, why::NO_SUCH_MEMBER);
                };
                if role == MemberRole::Owner || change.role == MemberRole::Owner {
                    return refuse(chat_proto::ErrorKind::Forbidden, why::OWNER_STAYS);
                }
                if role != change.role {
                    set_role(txn, group.id, change.user_id, change.role).await?;
                    events.push(event(member_event::ROLE_CHANGED, change.user_id, change.role));
                }
            }
        }
        let mut stored = Vec::with_capacity(events.len());
        for event in events {
            stored.push(sea_orm::ActiveModelTrait::insert(event, txn).await?);
        }
        Ok(Ok(stored))
    }

    /// A group's membership changes after message `after` (made after it), oldest first, at
    /// most `limit`.
    pub async fn member_events_after(
        &self,
        conversation_id: i64,
        after: i64,
        limit: u64,
    ) -> Result<Vec<member_event::Model>, StoreError> {
        Ok(member_event::Entity::find()
            .filter(member_event::Column::ConversationId.eq(conversation_id))
            .filter(member_event::Column::AfterMessageId.gte(after))
            .order_by_asc(member_event::Column::AfterMessageId)
            .order_by_asc(member_event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// The user's conversations, newest first (without a group's members).
    pub async fn conversations_of(&self, user_id: i64) -> Result<Vec<Conversation>, StoreError> {
        let ids: Vec<i64> = member::Entity::find()
            .select_only()
            .column(member::Column::ConversationId)
            .filter(member::Column::UserId.eq(user_id))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut rows = Vec::new();
        for chunk in ids.chunks(PAIRS_PER_STATEMENT) {
            rows.extend(
                conversation::Entity::find()
                    .filter(conversation::Column::Id.is_in(chunk.to_vec()))
                    .all(&self.db)
                    .await?,
            );
        }
        rows.sort_by_key(|c| std::cmp::Reverse(c.id));
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The users who share a conversation with `user_id`, direct or group, in id order.
    pub async fn contacts_of(&self, user_id: i64) -> Result<Vec<i64>, StoreError> {
        let backend = self.db.get_database_backend();
        let p = match backend {
            sea_orm::DatabaseBackend::Postgres => "$1",
            _ => "?1",
        };
        let sql = format!(
            "SELECT DISTINCT other.user_id FROM conversation_members mine \
             JOIN conversation_members other ON other.conversation_id = mine.conversation_id \
             WHERE mine.user_id = {p} AND other.user_id <> {p} ORDER BY other.user_id"
        );
        let contacts: Vec<i64> = self
            .db
            .query_all(Statement::from_sql_and_values(backend, sql, [user_id.into()]))
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<i64>(0))
            .collect::<Result<_, _>>()?;
        Ok(contacts)
    }

    /// Stores a batch of messages with one multi-row `INSERT`, and moves its members' inbox
    /// rows with one multi-row upsert, in one transaction: all of it or none. A message whose
    /// sender already stored one under the same dedup key is not stored again (and moves no
    /// counter): the one stored first takes its place in the result, so a retried send gets
    /// the original back. The result is in the order of `batch`.
    ///
    /// [`StoreError::CommitUnknown`] when the batch may be stored nevertheless: the commit was
    /// sent and no answer came, or it succeeded and reading back the duplicates failed.
    pub async fn insert_messages(&self, batch: &[NewMessage]) -> Result<Vec<message::Model>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let inserted = if backend == sea_orm::DatabaseBackend::Postgres && batch.len() <= MESSAGES_PER_STATEMENT {
            // One statement is one transaction of its own: nothing to begin or commit.
            let statement = insert_with_moves(batch);
            match message::Model::find_by_statement(statement).all(&self.db).await {
                Ok(inserted) => inserted,
                Err(e) => return Err(if may_have_run(&e) { StoreError::CommitUnknown(e) } else { e.into() }),
            }
        } else {
            self.insert_in_transaction(batch).await?
        };
        // From here on the batch is stored: a failure must not be reported as "not stored".
        self.with_originals(batch, inserted).await.map_err(StoreError::CommitUnknown)
    }

    /// [`Store::insert_messages`] as a transaction of three statements (the new rows, the
    /// moves of the members who sent nothing, the senders' rows): SQLite, which has no
    /// `INSERT` in a `WITH`, and batches too large for one statement's parameters.
    async fn insert_in_transaction(&self, batch: &[NewMessage]) -> Result<Vec<message::Model>, StoreError> {
        let txn = self.db.begin().await?;
        let inserted = Self::insert_new(&txn, batch).await?;
        // The members who did not send in the batch: one statement for all its conversations,
        // whatever their number of members (a group's thousand rows are not sent as parameters).
        for update in others_moves(txn.get_database_backend(), &inserted) {
            txn.execute(update).await?;
        }
        // The senders' own rows: their positions move to their newest message.
        let senders = sender_moves(&inserted);
        for rows in senders.chunks(ROWS_PER_UPSERT) {
            member::Entity::insert_many(rows.iter().cloned())
                .on_conflict(on_members_conflict(inbox_move_sets()))
                .exec(&txn)
                .await?;
        }
        if let Err(e) = txn.commit().await {
            return Err(if may_have_run(&e) { StoreError::CommitUnknown(e) } else { e.into() });
        }
        Ok(inserted)
    }

    /// The rows of `batch` that are new (not duplicates), as inserted.
    async fn insert_new(
        txn: &sea_orm::DatabaseTransaction,
        batch: &[NewMessage],
    ) -> Result<Vec<message::Model>, StoreError> {
        let now = now_in_micros();
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
            .exec_with_returning_many(txn)
            .await;
        match inserted {
            Ok(models) => Ok(models),
            // Every row conflicted: nothing new. (Backends differ in how they say so.)
            Err(DbErr::RecordNotInserted | DbErr::RecordNotFound(_)) => Ok(Vec::new()),
            // Inside the transaction: whatever happened, nothing is committed.
            Err(e) => Err(e.into()),
        }
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

    /// Stores a batch of receipts; what each did, in the order of `receipts`. Within the
    /// batch only the newest receipt of each member and kind matters (positions only move
    /// forward). On Postgres the batch is one statement ([`receipts_with_moves`]); elsewhere
    /// four whatever its size: the messages' check, the members' positions, the unread counts
    /// after the new read positions, and one upsert.
    pub async fn apply_receipts(&self, receipts: &[NewReceipt]) -> Result<Vec<Option<StoredReceipt>>, StoreError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let moves = if backend == sea_orm::DatabaseBackend::Postgres && receipts.len() <= RECEIPTS_PER_STATEMENT {
            self.receipts_in_one_statement(receipts).await?
        } else {
            self.receipts_step_by_step(receipts).await?
        };
        Ok(moves.answers(receipts))
    }

    /// [`Store::apply_receipts`] on Postgres: one round trip, one transaction.
    async fn receipts_in_one_statement(&self, receipts: &[NewReceipt]) -> Result<ReceiptMoves, StoreError> {
        let rows = self.db.query_all(receipts_with_moves(receipts)).await?;
        let mut moves = ReceiptMoves {
            valid: vec![false; receipts.len()],
            before: HashMap::with_capacity(rows.len()),
            after: HashMap::with_capacity(rows.len()),
        };
        for row in rows {
            let slot: i64 = row.try_get("", "slot")?;
            let Some(valid) = usize::try_from(slot).ok().and_then(|slot| moves.valid.get_mut(slot)) else { continue };
            *valid = true;
            let before = member::Model::from_query_result(&row, "before_")?;
            let moved = row.try_get::<Option<i64>>("", "after_user_id")?.is_some();
            let after = if moved { member::Model::from_query_result(&row, "after_")? } else { before.clone() };
            let key = (before.conversation_id, before.user_id);
            moves.before.insert(key, before);
            moves.after.insert(key, after);
        }
        Ok(moves)
    }

    /// [`Store::apply_receipts`] in four statements: SQLite, which has no `UPDATE` in a `WITH`,
    /// and batches too large for one statement's parameters. Each statement moves positions
    /// only forward, so a batch retried after a failure between them does no harm.
    async fn receipts_step_by_step(&self, receipts: &[NewReceipt]) -> Result<ReceiptMoves, StoreError> {
        // Which receipts name a stored message of their own conversation.
        let ids: Vec<i64> = receipts.iter().map(|r| r.message_id).collect();
        let conversation_of: HashMap<i64, i64> = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .column(message::Column::ConversationId)
            .filter(message::Column::Id.is_in(ids))
            .into_tuple::<(i64, i64)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let valid = |r: &NewReceipt| conversation_of.get(&r.message_id) == Some(&r.conversation_id);

        // The wanted positions of each member: the newest read and delivered of the batch.
        let mut wanted: Vec<((i64, i64), (i64, i64))> = Vec::new();
        let mut index_of: HashMap<(i64, i64), usize> = HashMap::new();
        for receipt in receipts.iter().filter(|r| valid(r)) {
            let key = (receipt.conversation_id, receipt.user_id);
            let index = *index_of.entry(key).or_insert_with(|| {
                wanted.push((key, (0, 0)));
                wanted.len() - 1
            });
            let (read, delivered) = &mut wanted[index].1;
            if receipt.read {
                *read = (*read).max(receipt.message_id);
            }
            *delivered = (*delivered).max(receipt.message_id);
        }
        let mut current: HashMap<(i64, i64), member::Model> = HashMap::new();
        for chunk in wanted.chunks(PAIRS_PER_STATEMENT) {
            let mut pairs = sea_orm::Condition::any();
            for ((conversation_id, user_id), _) in chunk {
                pairs = pairs.add(
                    sea_orm::Condition::all()
                        .add(member::Column::ConversationId.eq(*conversation_id))
                        .add(member::Column::UserId.eq(*user_id)),
                );
            }
            for row in member::Entity::find().filter(pairs).all(&self.db).await? {
                current.insert((row.conversation_id, row.user_id), row);
            }
        }

        // The rows after the batch; the unread counts of the read positions that move.
        let now = now_in_micros();
        let mut after: HashMap<(i64, i64), member::Model> = HashMap::new();
        let mut unread_after: Vec<(i64, i64, i64)> = Vec::new();
        for (key, (read, delivered)) in &wanted {
            let Some(row) = current.get(key) else { continue };
            let mut row = row.clone();
            if *read > row.last_read_message_id {
                row.last_read_message_id = *read;
                row.read_at = Some(now);
                unread_after.push((key.0, key.1, *read));
            }
            if *delivered > row.last_delivered_message_id {
                row.last_delivered_message_id = *delivered;
                row.delivered_at = Some(now);
            }
            after.insert(*key, row);
        }
        for (key, unread) in self.unread_after(&unread_after).await? {
            if let Some(row) = after.get_mut(&key) {
                row.unread_count = unread;
            }
        }
        let moved: Vec<&member::Model> =
            after.iter().filter(|(key, row)| current.get(key) != Some(row)).map(|(_, row)| row).collect();
        if !moved.is_empty() {
            let rows = moved.iter().map(|row| member::ActiveModel {
                conversation_id: Set(row.conversation_id),
                user_id: Set(row.user_id),
                last_read_message_id: Set(row.last_read_message_id),
                read_at: Set(row.read_at),
                last_delivered_message_id: Set(row.last_delivered_message_id),
                delivered_at: Set(row.delivered_at),
                unread_count: Set(row.unread_count),
                last_message_id: Set(row.last_message_id),
                last_activity_at: Set(row.last_activity_at),
                ..Default::default()
            });
            member::Entity::insert_many(rows).on_conflict(receipt_move_rules()).exec(&self.db).await?;
        }

        let valid = receipts.iter().map(valid).collect();
        Ok(ReceiptMoves { valid, before: current, after })
    }

    /// For each (conversation, user, read position): the messages of others after it.
    async fn unread_after(&self, positions: &[(i64, i64, i64)]) -> Result<Vec<((i64, i64), i64)>, StoreError> {
        #[derive(FromQueryResult)]
        struct Count {
            slot: i64,
            unread: i64,
        }
        let backend = self.db.get_database_backend();
        let mut counts = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(PAIRS_PER_STATEMENT) {
            // One statement for the chunk: each count is an index range scan of the unread tail.
            let mut sql = String::new();
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 3);
            for (slot, (conversation_id, user_id, read)) in chunk.iter().enumerate() {
                if slot > 0 {
                    sql.push_str(" UNION ALL ");
                }
                let n = values.len();
                let p = |i: usize| bind_slot(backend, n + i);
                sql.push_str(&format!(
                    "SELECT CAST({slot} AS BIGINT) AS slot, COUNT(*) AS unread FROM messages \
                     WHERE conversation_id = {} AND id > {} AND sender_id <> {}",
                    p(1),
                    p(2),
                    p(3)
                ));
                values.extend([(*conversation_id).into(), (*read).into(), (*user_id).into()]);
            }
            let rows =
                Count::find_by_statement(Statement::from_sql_and_values(backend, sql, values)).all(&self.db).await?;
            for row in rows {
                if let Some((conversation_id, user_id, _)) = usize::try_from(row.slot).ok().and_then(|i| chunk.get(i)) {
                    counts.push(((*conversation_id, *user_id), row.unread));
                }
            }
        }
        Ok(counts)
    }

    /// One page of `user_id`'s inbox, newest activity first (ties: highest conversation id),
    /// after `before` when given; and the user's unread messages over all conversations.
    /// Four statements whatever the page size: the page (an index range scan of the user's
    /// rows), its conversations, their last messages and their members, plus the total; all
    /// read from one snapshot.
    pub async fn inbox_page(
        &self,
        user_id: i64,
        limit: u64,
        before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    ) -> Result<InboxPage, StoreError> {
        use member::Column as M;
        let snapshot = self.read_snapshot().await?;
        let mut page = member::Entity::find().filter(M::UserId.eq(user_id));
        if let Some((activity, conversation_id)) = before {
            page = page.filter(
                sea_orm::Condition::any().add(M::LastActivityAt.lt(activity)).add(
                    sea_orm::Condition::all()
                        .add(M::LastActivityAt.eq(activity))
                        .add(M::ConversationId.lt(conversation_id)),
                ),
            );
        }
        let mut rows = page
            .order_by_desc(M::LastActivityAt)
            .order_by_desc(M::ConversationId)
            .limit(limit.saturating_add(1))
            .all(&snapshot)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let ids: Vec<i64> = rows.iter().map(|row| row.conversation_id).collect();
        let last_ids: Vec<i64> = rows.iter().map(|row| row.last_message_id).filter(|id| *id > 0).collect();
        let (conversations, last_messages, members) = if ids.is_empty() {
            Default::default()
        } else {
            (
                conversation::Entity::find().filter(conversation::Column::Id.is_in(ids.clone())).all(&snapshot).await?,
                message::Entity::find().filter(message::Column::Id.is_in(last_ids)).all(&snapshot).await?,
                member::Entity::find()
                    .filter(M::ConversationId.is_in(ids))
                    .order_by_asc(M::UserId)
                    .all(&snapshot)
                    .await?,
            )
        };
        let total_unread: Option<i64> = member::Entity::find()
            .select_only()
            .column_as(Expr::cust("CAST(COALESCE(SUM(unread_count), 0) AS BIGINT)"), "total")
            .filter(M::UserId.eq(user_id))
            .into_tuple()
            .one(&snapshot)
            .await?;
        snapshot.commit().await?;
        let next_before = rows.last().filter(|_| more).map(|row| (row.last_activity_at, row.conversation_id));
        let mut conversations: HashMap<i64, conversation::Model> =
            conversations.into_iter().map(|c| (c.id, c)).collect();
        let mut last_messages: HashMap<i64, message::Model> = last_messages.into_iter().map(|m| (m.id, m)).collect();
        let entries = rows
            .into_iter()
            .filter_map(|row| {
                let conversation = conversations.remove(&row.conversation_id)?;
                Some(InboxRow {
                    last_message: last_messages.remove(&row.last_message_id),
                    members: members.iter().filter(|m| m.conversation_id == row.conversation_id).cloned().collect(),
                    conversation,
                    own: row,
                })
            })
            .collect();
        Ok(InboxPage { entries, total_unread: total_unread.unwrap_or(0), next_before })
    }

    /// A read-only transaction whose statements all see the database as of its first one.
    /// Postgres gives that at REPEATABLE READ (its default, READ COMMITTED, takes a new snapshot
    /// per statement); a SQLite transaction reads one snapshot already, and sea-orm would only
    /// warn about an isolation level there.
    /// Both settings go in one statement (sea-orm's `begin_with_config` sends one each).
    async fn read_snapshot(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            txn.execute_unprepared("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
        }
        Ok(txn)
    }

    /// The read and delivered positions of a conversation's members.
    pub async fn positions(&self, conversation_id: i64) -> Result<Vec<member::Model>, StoreError> {
        Ok(member::Entity::find()
            .filter(member::Column::ConversationId.eq(conversation_id))
            .order_by_asc(member::Column::UserId)
            .all(&self.db)
            .await?)
    }

    /// A conversation's messages in id order (oldest first) as chosen by `window`, and the
    /// conversation's total message count, both read from one snapshot: a deletion (retention,
    /// say) between the count and the page would otherwise give a total that disagrees with it.
    pub async fn messages_page(
        &self,
        conversation_id: i64,
        window: HistoryWindow,
    ) -> Result<(Vec<message::Model>, u64), StoreError> {
        let snapshot = self.read_snapshot().await?;
        let in_conversation = message::Entity::find().filter(message::Column::ConversationId.eq(conversation_id));
        let total = in_conversation.clone().count(&snapshot).await?;
        let rows = match window {
            HistoryWindow::Page { page, limit } => {
                in_conversation
                    .order_by_asc(message::Column::Id)
                    .offset(page.saturating_sub(1).saturating_mul(limit))
                    .limit(limit)
                    .all(&snapshot)
                    .await?
            }
            HistoryWindow::After { id, limit } => {
                in_conversation
                    .filter(message::Column::Id.gt(id))
                    .order_by_asc(message::Column::Id)
                    .limit(limit)
                    .all(&snapshot)
                    .await?
            }
            HistoryWindow::Before { id, limit } => {
                let mut newest_first = in_conversation
                    .filter(message::Column::Id.lt(id))
                    .order_by_desc(message::Column::Id)
                    .limit(limit)
                    .all(&snapshot)
                    .await?;
                newest_first.reverse();
                newest_first
            }
        };
        snapshot.commit().await?;
        Ok((rows, total))
    }
}

/// One page of a user's inbox (see [`Store::inbox_page`]).
#[derive(Debug)]
pub struct InboxPage {
    pub entries: Vec<InboxRow>,
    pub total_unread: i64,
    /// Where the next page starts (the last entry's activity and id); `None` on the last page.
    pub next_before: Option<(chrono::DateTime<chrono::Utc>, i64)>,
}

/// One conversation of an inbox page: the user's own row, the conversation, its newest
/// message and every member's row.
#[derive(Debug)]
pub struct InboxRow {
    pub own: member::Model,
    pub conversation: conversation::Model,
    pub last_message: Option<message::Model>,
    pub members: Vec<member::Model>,
}

/// Gives a group member a role.
async fn set_role(
    txn: &sea_orm::DatabaseTransaction,
    conversation_id: i64,
    user_id: i64,
    role: MemberRole,
) -> Result<(), DbErr> {
    member::Entity::update_many()
        .col_expr(member::Column::Role, Expr::value(role.as_str()))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Now, to the microsecond: what Postgres keeps, so that an inbox cursor made from a stored
/// time finds the same time again on every backend.
fn now_in_micros() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// Most (conversation, member) pairs one statement names: well under every backend's limit
/// on bound parameters.
const PAIRS_PER_STATEMENT: usize = 200;

/// Most members' rows one upsert writes (some ten bound parameters each).
const ROWS_PER_UPSERT: usize = 2_000;

/// The new messages of a batch by conversation, in id order.
fn by_conversation(inserted: &[message::Model]) -> Vec<(i64, Vec<&message::Model>)> {
    let mut conversations: Vec<(i64, Vec<&message::Model>)> = Vec::new();
    for message in inserted {
        match conversations.iter_mut().find(|(id, _)| *id == message.conversation_id) {
            Some((_, messages)) => messages.push(message),
            None => conversations.push((message.conversation_id, vec![message])),
        }
    }
    for (_, messages) in &mut conversations {
        messages.sort_by_key(|m| m.id);
    }
    conversations
}

/// What a batch's new messages do to the rows of the members who sent none of them: `k` more
/// unread, and the conversation's newest message and activity where they are newer than the
/// row's. One `UPDATE … FROM` per [`CONVERSATIONS_PER_UPDATE`] conversations, whatever their
/// number (one per conversation made a batch's round trips grow with it: a 40-message batch
/// over 35 conversations spent most of its 9 ms in them). Every member's row exists from the
/// conversation's creation or the member's joining; a removed member has none, and gets
/// nothing. Portable SQL: Postgres and SQLite (3.33 and later) both take a `WITH` of `VALUES`
/// before `UPDATE … FROM`.
fn others_moves(backend: sea_orm::DatabaseBackend, inserted: &[message::Model]) -> Vec<Statement> {
    let conversations = by_conversation(inserted);
    conversations
        .chunks(CONVERSATIONS_PER_UPDATE)
        .filter_map(|chunk| {
            let mut values: Vec<sea_orm::Value> = Vec::new();
            // `(slot, slot, …)` for one row of a VALUES list, its values bound in order.
            let mut row = |row: Vec<sea_orm::Value>| {
                let slots: Vec<String> = row
                    .into_iter()
                    .map(|value| {
                        values.push(value);
                        bind_slot(backend, values.len())
                    })
                    .collect();
                format!("({})", slots.join(", "))
            };
            // Bound in the order the SQL names them (SQLite's `?` are positional): every
            // conversation's move, then every sender.
            let mut moves = Vec::with_capacity(chunk.len());
            for (conversation_id, new) in chunk {
                let Some(newest) = new.last() else { continue };
                let more_unread = i64::try_from(new.len()).unwrap_or(i64::MAX);
                moves.push(row(vec![
                    (*conversation_id).into(),
                    more_unread.into(),
                    newest.id.into(),
                    newest.created_at.into(),
                ]));
            }
            if moves.is_empty() {
                return None;
            }
            let mut senders = Vec::with_capacity(chunk.len());
            for (conversation_id, new) in chunk {
                let mut ids: Vec<i64> = new.iter().map(|m| m.sender_id).collect();
                ids.sort_unstable();
                ids.dedup();
                senders.extend(ids.into_iter().map(|id| row(vec![(*conversation_id).into(), id.into()])));
            }
            let t = MEMBERS_TABLE;
            // Every SET expression reads the row as it was: both CASEs see the old last_message_id.
            let sql = format!(
                "WITH moves (conversation_id, more_unread, newest_id, newest_at) AS (VALUES {moves}), \
                 senders (conversation_id, user_id) AS (VALUES {senders}) \
                 UPDATE {t} SET \
                 unread_count = {t}.unread_count + moves.more_unread, \
                 last_activity_at = CASE WHEN {t}.last_message_id < moves.newest_id \
                 THEN moves.newest_at ELSE {t}.last_activity_at END, \
                 last_message_id = CASE WHEN {t}.last_message_id < moves.newest_id \
                 THEN moves.newest_id ELSE {t}.last_message_id END \
                 FROM moves WHERE {t}.conversation_id = moves.conversation_id \
                 AND NOT EXISTS (SELECT 1 FROM senders WHERE senders.conversation_id = {t}.conversation_id \
                 AND senders.user_id = {t}.user_id)",
                moves = moves.join(", "),
                senders = senders.join(", "),
            );
            Some(Statement::from_sql_and_values(backend, sql, values))
        })
        .collect()
}

/// Messages [`insert_with_moves`] takes in one statement. Its values travel as arrays, so the
/// bound is what one statement should carry, not a parameter limit.
const MESSAGES_PER_STATEMENT: usize = 10_000;

/// Postgres: a batch's new messages and the inbox moves they make, as one statement (one round
/// trip, where the transaction of [`Store::insert_in_transaction`] takes five): the rows not
/// skipped as duplicates (`new`) move the rows of their conversations' members, as
/// [`others_moves`] and [`sender_moves`] do from Rust: the members who sent nothing get every
/// new message unread and the newest as their last; each sender's positions move to their own
/// newest, with the others' messages after it unread. The two updates touch different rows
/// (senders and the others), as one statement requires. Answers the new rows in id order.
///
/// The batch travels as one array per column (`unnest … WITH ORDINALITY`, inserted in the
/// batch's order, so a conversation's ids follow its sends), not as a `VALUES` row per
/// message: the text is then the same for every batch size, so each connection parses it once
/// and Postgres can reuse its plan, where a text per batch size was parsed and planned anew
/// almost every time (a fifth of Postgres's CPU at 8,500 msg/s). The senders' unread counts
/// are one grouped join, not a count per sender over the whole batch (which grew with the
/// square of the batch: another sixth).
fn insert_with_moves(batch: &[NewMessage]) -> Statement {
    let values: Vec<sea_orm::Value> = vec![
        array_of(ArrayType::BigInt, batch.iter().map(|new| new.conversation_id.into())),
        array_of(ArrayType::BigInt, batch.iter().map(|new| new.sender_id.into())),
        array_of(ArrayType::String, batch.iter().map(|new| new.message_type.clone().into())),
        array_of(ArrayType::String, batch.iter().map(|new| new.content.clone().into())),
        array_of(ArrayType::String, batch.iter().map(|new| new.dedup_key.clone().into())),
        now_in_micros().into(),
    ];
    let t = MEMBERS_TABLE;
    let sets: Vec<String> = inbox_move_sets()
        .into_iter()
        .map(|(column, expression)| format!("{} = {expression}", sea_orm::IdenStatic::as_str(&column)))
        .collect();
    let sql = format!(
        "WITH new AS (\
           INSERT INTO messages (conversation_id, sender_id, message_type, content, created_at, dedup_key) \
           SELECT b.conversation_id, b.sender_id, b.message_type, b.content, $6, b.dedup_key \
           FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY \
             AS b (conversation_id, sender_id, message_type, content, dedup_key, slot) \
           ORDER BY b.slot \
           ON CONFLICT (sender_id, dedup_key) DO NOTHING RETURNING *), \
         newest AS (\
           SELECT conversation_id, MAX(id) AS id, MAX(created_at) AS created_at, COUNT(*) AS n \
           FROM new GROUP BY conversation_id), \
         own AS (\
           SELECT conversation_id, sender_id AS user_id, MAX(id) AS own_last \
           FROM new GROUP BY conversation_id, sender_id), \
         own_unread AS (\
           SELECT own.conversation_id, own.user_id, own.own_last, COUNT(later.id) AS n \
           FROM own LEFT JOIN new later ON later.conversation_id = own.conversation_id \
             AND later.sender_id <> own.user_id AND later.id > own.own_last \
           GROUP BY own.conversation_id, own.user_id, own.own_last), \
         others AS (\
           UPDATE {t} SET \
             unread_count = {t}.unread_count + newest.n, \
             last_activity_at = CASE WHEN {t}.last_message_id < newest.id \
               THEN newest.created_at ELSE {t}.last_activity_at END, \
             last_message_id = CASE WHEN {t}.last_message_id < newest.id \
               THEN newest.id ELSE {t}.last_message_id END \
           FROM newest WHERE {t}.conversation_id = newest.conversation_id \
           AND NOT EXISTS (SELECT 1 FROM own \
             WHERE own.conversation_id = {t}.conversation_id AND own.user_id = {t}.user_id)), \
         senders AS (\
           INSERT INTO {t} (conversation_id, user_id, last_read_message_id, read_at, \
             last_delivered_message_id, delivered_at, unread_count, last_message_id, last_activity_at) \
           SELECT own_unread.conversation_id, own_unread.user_id, own_unread.own_last, newest.created_at, \
             own_unread.own_last, newest.created_at, own_unread.n, newest.id, newest.created_at \
           FROM own_unread JOIN newest ON newest.conversation_id = own_unread.conversation_id \
           ON CONFLICT (conversation_id, user_id) DO UPDATE SET {sets}) \
         SELECT * FROM new ORDER BY id",
        sets = sets.join(", "),
    );
    Statement::from_sql_and_values(sea_orm::DatabaseBackend::Postgres, sql, values)
}

/// Receipts [`receipts_with_moves`] takes in one statement (its values travel as arrays).
const RECEIPTS_PER_STATEMENT: usize = 10_000;

/// Postgres: a batch of receipts as one statement (one round trip, where the steps of
/// [`Store::receipts_step_by_step`] take four), which does what those steps do: the receipts
/// naming a stored message of their own conversation (`valid`) give each member the newest read
/// and delivered position of the batch (`wanted`, reading implies delivered), and the members'
/// rows move forward to them (`moved`), the unread count with the read position. Answers one
/// row per valid receipt of a member: its slot in the batch (from 0), the member's row before
/// (`before_*`: the statement's snapshot) and after (`after_*`, null when nothing moved). The
/// receipts travel as one array per column, so the text is the same whatever the batch's size
/// (see [`insert_with_moves`]).
///
/// A receipt's message is looked up by a scalar subquery on the primary key, not by a join:
/// Postgres keeps a connection's plan of this statement (a generic plan, after five runs)
/// until statistics change, and a join planned while `messages` was small is a hash join over
/// the whole table, kept as the table grows when nothing analyzes it. A subquery is planned as
/// a probe of the key whatever the table's size, so the cost per receipt stays the same.
fn receipts_with_moves(receipts: &[NewReceipt]) -> Statement {
    use sea_orm::{IdenStatic, Iterable};
    let values: Vec<sea_orm::Value> = vec![
        array_of(ArrayType::BigInt, receipts.iter().map(|r| r.conversation_id.into())),
        array_of(ArrayType::BigInt, receipts.iter().map(|r| r.user_id.into())),
        array_of(ArrayType::BigInt, receipts.iter().map(|r| r.message_id.into())),
        array_of(ArrayType::Bool, receipts.iter().map(|r| r.read.into())),
        now_in_micros().into(),
    ];
    let now = "$5";
    let columns: Vec<String> = member::Column::iter()
        .map(|column| {
            let c = column.as_str();
            format!("b.{c} AS before_{c}, m.{c} AS after_{c}")
        })
        .collect();
    let t = MEMBERS_TABLE;
    let sql = format!(
        "WITH r AS (\
           SELECT ordinality - 1 AS slot, conversation_id, user_id, message_id, is_read \
           FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[]) WITH ORDINALITY \
             AS r (conversation_id, user_id, message_id, is_read, ordinality)), \
         valid AS (\
           SELECT r.* FROM r WHERE (SELECT messages.conversation_id FROM messages \
             WHERE messages.id = r.message_id) = r.conversation_id), \
         wanted AS (\
           SELECT conversation_id, user_id, \
             MAX(CASE WHEN is_read THEN message_id ELSE 0 END) AS read, MAX(message_id) AS delivered \
           FROM valid GROUP BY conversation_id, user_id), \
         moved AS (\
           UPDATE {t} SET \
             last_read_message_id = GREATEST({t}.last_read_message_id, wanted.read), \
             read_at = CASE WHEN wanted.read > {t}.last_read_message_id THEN {now} ELSE {t}.read_at END, \
             unread_count = CASE WHEN wanted.read > {t}.last_read_message_id \
               THEN (SELECT COUNT(*) FROM messages WHERE messages.conversation_id = wanted.conversation_id \
                 AND messages.id > wanted.read AND messages.sender_id <> wanted.user_id) \
               ELSE {t}.unread_count END, \
             last_delivered_message_id = GREATEST({t}.last_delivered_message_id, wanted.delivered), \
             delivered_at = CASE WHEN wanted.delivered > {t}.last_delivered_message_id \
               THEN {now} ELSE {t}.delivered_at END \
           FROM wanted WHERE {t}.conversation_id = wanted.conversation_id AND {t}.user_id = wanted.user_id \
           AND (wanted.read > {t}.last_read_message_id OR wanted.delivered > {t}.last_delivered_message_id) \
           RETURNING {t}.*) \
         SELECT valid.slot, {columns} FROM valid \
         JOIN {t} b ON b.conversation_id = valid.conversation_id AND b.user_id = valid.user_id \
         LEFT JOIN moved m ON m.conversation_id = valid.conversation_id AND m.user_id = valid.user_id",
        columns = columns.join(", "),
    );
    Statement::from_sql_and_values(sea_orm::DatabaseBackend::Postgres, sql, values)
}

/// A Postgres array of `values` (their element type `kind`), bound as one parameter.
fn array_of(kind: ArrayType, values: impl Iterator<Item = sea_orm::Value>) -> sea_orm::Value {
    sea_orm::Value::Array(kind, Some(Box::new(values.collect())))
}

/// The placeholder of the `n`th bound value (from 1) in the backend's syntax.
fn bind_slot(backend: sea_orm::DatabaseBackend, n: usize) -> String {
    match backend {
        sea_orm::DatabaseBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// Conversations per statement of [`others_moves`]: 6 bound values each at most (4, and 2 per
/// sender of a direct conversation), well under SQLite's 32,766.
const CONVERSATIONS_PER_UPDATE: usize = 1_000;

/// The rows of the members who sent in a batch, for an upsert by [`inbox_move_sets`]: the
/// conversation's newest message and activity, the sender's read and delivered position at
/// their newest own message, and the unread count after it (the others' messages after it).
fn sender_moves(inserted: &[message::Model]) -> Vec<member::ActiveModel> {
    let mut rows = Vec::new();
    for (conversation_id, new) in by_conversation(inserted) {
        let Some(newest) = new.last() else { continue };
        let mut senders: Vec<i64> = new.iter().map(|m| m.sender_id).collect();
        senders.sort_unstable();
        senders.dedup();
        for user_id in senders {
            let own_last = new.iter().filter(|m| m.sender_id == user_id).map(|m| m.id).max().unwrap_or(0);
            let unread = new.iter().filter(|m| m.sender_id != user_id && m.id > own_last).count();
            rows.push(member::ActiveModel {
                conversation_id: Set(conversation_id),
                user_id: Set(user_id),
                last_read_message_id: Set(own_last),
                read_at: Set(Some(newest.created_at)),
                last_delivered_message_id: Set(own_last),
                delivered_at: Set(Some(newest.created_at)),
                unread_count: Set(i64::try_from(unread).unwrap_or(i64::MAX)),
                last_message_id: Set(newest.id),
                last_activity_at: Set(newest.created_at),
                ..Default::default()
            });
        }
    }
    rows
}

/// How a row of [`sender_moves`] meets the stored one: a position only moves forward; the
/// sender has the unread count after their message (a row without a read position, the stored
/// count plus the new messages); the newest message and activity are the later of the two.
/// (Portable SQL: `excluded` and the table's name work on Postgres and SQLite alike.)
fn inbox_move_sets() -> Vec<(member::Column, String)> {
    let t = MEMBERS_TABLE;
    let mut sets = positions_forward_sets();
    sets.extend([
        (
            member::Column::UnreadCount,
            format!(
                "CASE WHEN excluded.last_read_message_id > 0 THEN excluded.unread_count \
                 ELSE {t}.unread_count + excluded.unread_count END"
            ),
        ),
        (member::Column::LastMessageId, forward("last_message_id", "last_message_id")),
        (member::Column::LastActivityAt, forward("last_message_id", "last_activity_at")),
    ]);
    sets
}

/// How a receipt's row meets the stored one: positions only move forward, and the unread count
/// goes with the read position; the conversation's newest message is left as stored.
fn receipt_move_rules() -> OnConflict {
    let mut sets = positions_forward_sets();
    sets.push((member::Column::UnreadCount, forward("last_read_message_id", "unread_count")));
    on_members_conflict(sets)
}

/// The updates of an upsert of members' rows whose read and delivered positions (and their
/// times) only move forward.
fn positions_forward_sets() -> Vec<(member::Column, String)> {
    vec![
        (member::Column::LastReadMessageId, forward("last_read_message_id", "last_read_message_id")),
        (member::Column::ReadAt, forward("last_read_message_id", "read_at")),
        (member::Column::LastDeliveredMessageId, forward("last_delivered_message_id", "last_delivered_message_id")),
        (member::Column::DeliveredAt, forward("last_delivered_message_id", "delivered_at")),
    ]
}

/// An upsert's `ON CONFLICT (conversation_id, user_id) DO UPDATE` with these updates.
fn on_members_conflict(sets: Vec<(member::Column, String)>) -> OnConflict {
    let mut rules = OnConflict::columns([member::Column::ConversationId, member::Column::UserId]);
    for (column, expression) in sets {
        rules.value(column, Expr::cust(expression));
    }
    rules
}

const MEMBERS_TABLE: &str = "conversation_members";

/// `with` from the incoming row when its `column` is ahead of the stored one, else as stored.
fn forward(column: &str, with: &str) -> String {
    let t = MEMBERS_TABLE;
    format!("CASE WHEN excluded.{column} > {t}.{column} THEN excluded.{with} ELSE {t}.{with} END")
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

    pub(super) async fn temp_store() -> (tempfile::TempDir, Store) {
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
    async fn a_group_has_its_members_with_roles_and_makes_them_contacts() {
        let (_dir, store) = temp_store().await;
        let group = store.create_group(10, "Team", &[12, 11, 12, 10]).await.unwrap();
        assert!(group.is_group());
        assert_eq!((group.name.as_str(), group.sender_id, group.receiver_id), ("Team", 10, 0));
        let roles: Vec<(i64, MemberRole)> = group.members.iter().map(|m| (m.user_id, m.role())).collect();
        assert_eq!(roles, [(10, MemberRole::Owner), (11, MemberRole::Member), (12, MemberRole::Member)]);
        assert!(group.members.iter().all(|m| m.joined_at_ms == group.created_at_ms));
        assert_eq!(store.conversation(group.id).await.unwrap(), Some(group.clone()), "read back whole");
        // A second group of the same users, and a direct conversation beside them.
        let again = store.create_group(10, "Team", &[11]).await.unwrap();
        assert_ne!(again.id, group.id);
        let (direct, _) = store.open_conversation(10, 13).await.unwrap();
        assert_eq!(store.contacts_of(11).await.unwrap(), vec![10, 12]);
        assert_eq!(store.contacts_of(10).await.unwrap(), vec![11, 12, 13]);
        let ids: Vec<i64> = store.conversations_of(10).await.unwrap().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![direct.id, again.id, group.id], "newest first");
        // A message moves every member's inbox row.
        let stored = store.insert_messages(&[text(group.id, 11, "hi all")]).await.unwrap();
        assert_eq!(standing(&store, group.id, 10).await, (1, 0, 0));
        assert_eq!(standing(&store, group.id, 12).await, (1, 0, 0));
        assert_eq!(standing(&store, group.id, 11).await, (0, stored[0].id, stored[0].id));
    }

    fn change(id: &str, group: i64, actor: i64, kind: chat_proto::MemberChangeKind, user: i64) -> NewMemberChange {
        NewMemberChange {
            request_id: id.into(),
            conversation_id: group,
            actor_id: actor,
            kind,
            user_id: user,
            role: MemberRole::Member,
            max_members: 5,
        }
    }

    #[tokio::test]
    async fn membership_changes_follow_the_roles_rules_and_are_stored_in_the_group_s_order() {
        use chat_proto::member_refusal as why;
        use chat_proto::MemberChangeKind::{Add, Leave, Remove, SetRole};
        let (_dir, store) = temp_store().await;
        let group = store.create_group(10, "Team", &[11, 12]).await.unwrap();
        let g = group.id;
        let first = store.insert_messages(&[text(g, 10, "hi")]).await;
        let first = first.unwrap()[0].id;
        let apply = |changes: Vec<NewMemberChange>| {
            let store = store.clone();
            async move { store.apply_member_changes(&changes).await.unwrap() }
        };
        let code = |result: &Result<Vec<member_event::Model>, MemberRefusal>| result.as_ref().err().map(|r| r.code);
        let results = apply(vec![
            change("a", g, 11, Add, 13), // a member cannot add
            NewMemberChange { role: MemberRole::Moderator, ..change("b", g, 10, SetRole, 11) },
            change("c", g, 11, Add, 13), // a moderator can
            NewMemberChange { role: MemberRole::Moderator, ..change("d", g, 11, Add, 14) }, // not a moderator
            change("e", g, 11, Remove, 10), // nobody removes the owner
            change("f", g, 11, Add, 13), // already in
            change("g", g, 99, Leave, 99), // not a member
            change("h", g, 11, Remove, 12),
        ])
        .await;
        let codes: Vec<Option<&str>> = results.iter().map(code).collect();
        assert_eq!(
            codes,
            [
                Some(why::NOT_ALLOWED),
                None,
                None,
                Some(why::OWNER_ONLY),
                Some(why::OWNER_STAYS),
                Some(why::ALREADY_MEMBER),
                Some(why::NOT_MEMBER),
                None
            ]
        );
        let added = &results[2].as_ref().unwrap()[0];
        assert_eq!((added.kind.as_str(), added.user_id, added.by_user_id), (member_event::ADDED, 13, 11));
        assert_eq!(added.after_message_id, first, "placed after the group's newest message");
        // The new member starts with nothing unread.
        assert_eq!(standing(&store, g, 13).await, (0, first, first));
        // The owner leaves: the oldest moderator (11) inherits.
        let left = apply(vec![change("i", g, 10, Leave, 10)]).await;
        let events: Vec<(String, i64, String)> =
            left[0].as_ref().unwrap().iter().map(|e| (e.kind.clone(), e.user_id, e.role.clone())).collect();
        assert_eq!(
            events,
            [
                (member_event::REMOVED.into(), 10, "owner".into()),
                (member_event::ROLE_CHANGED.into(), 11, "owner".into())
            ]
        );
        let now = store.conversation(g).await.unwrap().unwrap();
        let roles: Vec<(i64, MemberRole)> = now.members.iter().map(|m| (m.user_id, m.role())).collect();
        assert_eq!(roles, [(11, MemberRole::Owner), (13, MemberRole::Member)]);
        // A redelivered command answers what it stored, and changes nothing more.
        let again = apply(vec![change("c", g, 11, Add, 13)]).await;
        assert_eq!(again[0].as_ref().unwrap(), &results[2].as_ref().unwrap().clone());
        // Full at max_members; a direct conversation is no group.
        for (i, user) in (20..23).enumerate() {
            let result = apply(vec![change(&format!("full{i}"), g, 11, Add, user)]).await;
            let expected = if i < 3 { None } else { Some(why::GROUP_FULL) };
            assert_eq!(code(&result[0]), expected, "adding {user}");
        }
        let full = apply(vec![change("full3", g, 11, Add, 30)]).await;
        assert_eq!(code(&full[0]), Some(why::GROUP_FULL));
        let (direct, _) = store.open_conversation(1, 2).await.unwrap();
        assert_eq!(code(&apply(vec![change("j", direct.id, 1, Add, 3)]).await[0]), Some(why::NOT_GROUP));
        // The history of changes, in order, after a message.
        let history = store.member_events_after(g, first, 100).await.unwrap();
        let users: Vec<i64> = history.iter().map(|e| e.user_id).collect();
        assert_eq!(users, [11, 13, 12, 10, 11, 20, 21, 22]);
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

    fn read(conversation_id: i64, user_id: i64, message_id: i64) -> NewReceipt {
        NewReceipt { conversation_id, user_id, message_id, read: true }
    }

    /// (unread count, last read, last delivered) of a member.
    async fn standing(store: &Store, conversation_id: i64, user_id: i64) -> (i64, i64, i64) {
        let rows = store.positions(conversation_id).await.unwrap();
        let row = rows.iter().find(|row| row.user_id == user_id).expect("a member's row");
        (row.unread_count, row.last_read_message_id, row.last_delivered_message_id)
    }

    #[tokio::test]
    async fn messages_move_the_members_unread_counts_and_the_sender_s_positions() {
        let (_dir, store) = temp_store().await;
        let (conv, _) = store.open_conversation(1, 2).await.unwrap();
        assert_eq!(standing(&store, conv.id, 1).await, (0, 0, 0), "rows made with the conversation");
        let stored = store.insert_messages(&[text(conv.id, 1, "a"), text(conv.id, 1, "b")]).await.unwrap();
        assert_eq!(standing(&store, conv.id, 2).await, (2, 0, 0));
        assert_eq!(standing(&store, conv.id, 1).await, (0, stored[1].id, stored[1].id), "own messages are read");
        // A redelivered batch moves nothing.
        store.insert_messages(&[text(conv.id, 1, "a"), text(conv.id, 1, "b")]).await.unwrap();
        assert_eq!(standing(&store, conv.id, 2).await, (2, 0, 0));
        // Replying reads what came before.
        let reply = store.insert_messages(&[text(conv.id, 2, "c")]).await.unwrap();
        assert_eq!(standing(&store, conv.id, 2).await, (0, reply[0].id, reply[0].id));
        assert_eq!(standing(&store, conv.id, 1).await.0, 1);
    }

    #[tokio::test]
    async fn one_batch_over_several_conversations_moves_each_member_s_row() {
        let (_dir, store) = temp_store().await;
        let (one, _) = store.open_conversation(1, 2).await.unwrap();
        let (two, _) = store.open_conversation(1, 3).await.unwrap();
        let (both, _) = store.open_conversation(2, 3).await.unwrap();
        let batch = [
            text(one.id, 1, "a"),
            text(two.id, 3, "b"),
            text(one.id, 1, "c"),
            text(both.id, 2, "d"),
            text(both.id, 3, "e"),
        ];
        let ids: Vec<i64> = store.insert_messages(&batch).await.unwrap().iter().map(|m| m.id).collect();
        let row = |conversation_id, user_id| {
            let store = &store;
            async move {
                let rows = store.positions(conversation_id).await.unwrap();
                rows.into_iter().find(|row| row.user_id == user_id).expect("a member's row")
            }
        };
        // Members who sent nothing: every message of their conversation unread, its newest last.
        let reader = row(one.id, 2).await;
        assert_eq!((reader.unread_count, reader.last_message_id, reader.last_read_message_id), (2, ids[2], 0));
        let reader = row(two.id, 1).await;
        assert_eq!((reader.unread_count, reader.last_message_id), (1, ids[1]));
        // Senders: their own messages read; both members of `both` sent, so neither is an "other".
        assert_eq!(row(one.id, 1).await.unread_count, 0);
        assert_eq!((row(both.id, 2).await.unread_count, row(both.id, 2).await.last_message_id), (1, ids[4]));
        assert_eq!((row(both.id, 3).await.unread_count, row(both.id, 3).await.last_read_message_id), (0, ids[4]));
        let moved = row(one.id, 2).await.last_activity_at;
        // A later batch elsewhere leaves these rows as they are.
        store.insert_messages(&[text(two.id, 1, "f")]).await.unwrap();
        assert_eq!(row(one.id, 2).await.last_activity_at, moved);
        assert_eq!(row(two.id, 3).await.unread_count, 1);
    }

    #[tokio::test]
    async fn receipts_move_positions_forward_only_and_refuse_foreign_messages() {
        let (_dir, store) = temp_store().await;
        let (conv, _) = store.open_conversation(1, 2).await.unwrap();
        let (other, _) = store.open_conversation(1, 3).await.unwrap();
        let batch: Vec<_> = (0..4).map(|i| text(conv.id, 1, &format!("m{i}"))).collect();
        let ids: Vec<i64> = store.insert_messages(&batch).await.unwrap().iter().map(|m| m.id).collect();
        let foreign = store.insert_messages(&[text(other.id, 1, "x")]).await.unwrap()[0].id;

        let delivered = NewReceipt { read: false, ..read(conv.id, 2, ids[3]) };
        let answers = store
            .apply_receipts(&[read(conv.id, 2, ids[1]), read(conv.id, 2, ids[0]), delivered, read(conv.id, 2, foreign)])
            .await
            .unwrap();
        let moved: Vec<Option<bool>> = answers.iter().map(|a| a.as_ref().map(|a| a.moved)).collect();
        assert_eq!(moved, vec![Some(true), Some(false), Some(true), None], "the newest of each kind moves");
        assert_eq!(standing(&store, conv.id, 2).await, (2, ids[1], ids[3]));
        assert!(answers[0].as_ref().is_some_and(|a| a.positions.read_at.is_some()));

        // Older again: nothing moves, the answer has the current position.
        let again = store.apply_receipts(&[read(conv.id, 2, ids[0])]).await.unwrap();
        let again = again[0].as_ref().expect("a member's receipt");
        assert!(!again.moved);
        assert_eq!(again.positions.last_read_message_id, ids[1]);
        // Reading implies delivered, and the unread count follows the read position.
        store.apply_receipts(&[read(conv.id, 2, ids[3])]).await.unwrap();
        assert_eq!(standing(&store, conv.id, 2).await, (0, ids[3], ids[3]));
        // A user without a row (not a member) gets no answer.
        assert_eq!(store.apply_receipts(&[read(conv.id, 9, ids[3])]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn the_inbox_pages_by_newest_activity_with_the_total_unread() {
        let (_dir, store) = temp_store().await;
        let mut conversations = Vec::new();
        for other in 2..=6 {
            conversations.push(store.open_conversation(1, other).await.unwrap().0);
        }
        // The oldest conversation gets a message from the other side: it comes first.
        let oldest = conversations[0].id;
        let last = store.insert_messages(&[text(oldest, 2, "hi"), text(oldest, 2, "there")]).await.unwrap();
        let first = store.inbox_page(1, 2, None).await.unwrap();
        assert_eq!(first.total_unread, 2);
        assert_eq!(first.entries[0].conversation.id, oldest);
        assert_eq!(first.entries[0].own.unread_count, 2);
        assert_eq!(first.entries[0].last_message.as_ref().map(|m| m.id), Some(last[1].id));
        assert_eq!(first.entries[0].members.len(), 2);
        // Walk every page: each conversation once, newest first, and no cursor after the last.
        let mut seen: Vec<i64> = first.entries.iter().map(|e| e.conversation.id).collect();
        let mut cursor = first.next_before;
        while let Some(before) = cursor {
            let page = store.inbox_page(1, 2, Some(before)).await.unwrap();
            seen.extend(page.entries.iter().map(|e| e.conversation.id));
            cursor = page.next_before;
        }
        let mut expected: Vec<i64> = conversations[1..].iter().rev().map(|c| c.id).collect();
        expected.insert(0, oldest);
        assert_eq!(seen, expected);
        assert_eq!(store.inbox_page(2, 10, None).await.unwrap().total_unread, 0, "own messages are not unread");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://chat:secret@db:5432/chat"), "postgres://chat:***@db:5432/chat");
        assert_eq!(redact("sqlite://data/chat.db"), "sqlite://data/chat.db");
    }
}
