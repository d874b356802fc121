//! Edits, deletes and reactions in the database: applying a batch's changes, reading a page's
//! reactions, the changes a replay sends, and retention.

use std::collections::{BTreeMap, HashMap};

use chat_proto::message_refusal as why;
use chat_proto::{ErrorKind, MemberRole, MessageChangeKind, MessageEvent, StoredMessage};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};

use super::{may_have_run, now_in_micros, Store, StoreError};
use crate::entity::{conversation, member, message, message_event, reaction};

/// An edit, delete or reaction accepted for storage (see `chat_proto::ChangeMessage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessageChange {
    pub conversation_id: i64,
    pub message_id: i64,
    pub user_id: i64,
    pub kind: MessageChangeKind,
    pub content: String,
    pub emoji: String,
    pub on: bool,
    /// Unique per user: a second change with the same key answers what the first stored.
    pub dedup_key: String,
}

/// Why a change was refused: the kind, and a [`chat_proto::message_refusal`] code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRefusal {
    pub kind: ErrorKind,
    pub code: &'static str,
}

/// A message's reactions: `emoji → count`, sorted by emoji.
pub type Counts = BTreeMap<String, u32>;

/// Most messages retention deletes in one statement.
pub const RETENTION_BATCH: u64 = 1_000;

impl Store {
    /// Applies a batch's edits, deletes and reactions in order, in one transaction: what each
    /// did (a reaction that changed nothing answers with `id` 0 and the counts as they stand),
    /// or why it was refused. A change whose user and dedup key already stored an event (a
    /// retry, or a redelivered command) answers that event and changes nothing.
    pub async fn apply_message_changes(
        &self,
        changes: &[NewMessageChange],
    ) -> Result<Vec<Result<MessageEvent, MessageRefusal>>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin().await?;
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            results.push(apply_message_change(&txn, change).await?);
        }
        if let Err(e) = txn.commit().await {
            return Err(if may_have_run(&e) { StoreError::CommitUnknown(e) } else { e.into() });
        }
        Ok(results)
    }

    /// The reactions of `message_ids`: counts by message, and the emojis `viewer` (0: nobody)
    /// added, by message. Two statements whatever the number of messages.
    pub async fn reactions_of(
        &self,
        message_ids: &[i64],
        viewer: i64,
    ) -> Result<(HashMap<i64, Counts>, HashMap<i64, Vec<String>>), StoreError> {
        let mut counts: HashMap<i64, Counts> = HashMap::new();
        let mut mine: HashMap<i64, Vec<String>> = HashMap::new();
        if message_ids.is_empty() {
            return Ok((counts, mine));
        }
        let rows: Vec<(i64, String, i64)> = reaction::Entity::find()
            .select_only()
            .column(reaction::Column::MessageId)
            .column(reaction::Column::Emoji)
            .column_as(reaction::Column::UserId.count(), "n")
            .filter(reaction::Column::MessageId.is_in(message_ids.iter().copied()))
            .group_by(reaction::Column::MessageId)
            .group_by(reaction::Column::Emoji)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (message_id, emoji, n) in rows {
            counts.entry(message_id).or_default().insert(emoji, u32::try_from(n).unwrap_or(u32::MAX));
        }
        if viewer > 0 {
            let rows: Vec<(i64, String)> = reaction::Entity::find()
                .select_only()
                .column(reaction::Column::MessageId)
                .column(reaction::Column::Emoji)
                .filter(reaction::Column::MessageId.is_in(message_ids.iter().copied()))
                .filter(reaction::Column::UserId.eq(viewer))
                .order_by_asc(reaction::Column::Emoji)
                .into_tuple()
                .all(&self.db)
                .await?;
            for (message_id, emoji) in rows {
                mine.entry(message_id).or_default().push(emoji);
            }
        }
        Ok((counts, mine))
    }

    /// The conversation's message changes made after message `after` to messages up to
    /// `up_to`, in the conversation's order, at most `limit`; an edit with the message as it
    /// became.
    pub async fn message_events_after(
        &self,
        conversation_id: i64,
        after: i64,
        up_to: i64,
        limit: u64,
    ) -> Result<Vec<MessageEvent>, StoreError> {
        let rows = message_event::Entity::find()
            .filter(message_event::Column::ConversationId.eq(conversation_id))
            .filter(message_event::Column::AfterMessageId.gte(after))
            .filter(message_event::Column::MessageId.lte(up_to))
            .order_by_asc(message_event::Column::AfterMessageId)
            .order_by_asc(message_event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut edited: Vec<i64> =
            rows.iter().filter(|e| e.kind == message_event::EDITED).map(|e| e.message_id).collect();
        edited.sort_unstable();
        edited.dedup();
        let messages: HashMap<i64, message::Model> = if edited.is_empty() {
            HashMap::new()
        } else {
            message::Entity::find()
                .filter(message::Column::Id.is_in(edited.iter().copied()))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|m| (m.id, m))
                .collect()
        };
        let (counts, _) = self.reactions_of(&edited, 0).await?;
        Ok(rows
            .into_iter()
            .map(|event| {
                let message = messages.get(&event.message_id).map(|m| as_edited(m.clone(), &event, counts.get(&m.id)));
                event.into_event(message)
            })
            .collect())
    }

    /// Deletes up to [`RETENTION_BATCH`] of the oldest messages created before `cutoff`, with
    /// their reactions and changes (by cascade); how many it deleted. It looks only at the
    /// oldest messages by id (the primary key), so a sweep with nothing to delete costs one
    /// short index scan.
    pub async fn delete_messages_before(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        let oldest: Vec<(i64, chrono::DateTime<chrono::Utc>)> = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .column(message::Column::CreatedAt)
            .order_by_asc(message::Column::Id)
            .limit(RETENTION_BATCH)
            .into_tuple()
            .all(&self.db)
            .await?;
        let expired: Vec<i64> = oldest.into_iter().filter(|(_, at)| *at < cutoff).map(|(id, _)| id).collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let deleted = message::Entity::delete_many().filter(message::Column::Id.is_in(expired)).exec(&self.db).await?;
        Ok(deleted.rows_affected)
    }
}

/// A message as an edit made it: the edit's content and time (it may have changed since).
fn as_edited(row: message::Model, event: &message_event::Model, counts: Option<&Counts>) -> StoredMessage {
    let mut stored = row.into_stored(None);
    stored.content = event.content.clone().unwrap_or_default();
    stored.edited_at_ms = event.created_at.timestamp_millis();
    stored.deleted_at_ms = 0;
    stored.reactions = counts.map(|c| c.clone().into_iter().collect()).unwrap_or_default();
    stored
}

async fn apply_message_change(
    txn: &DatabaseTransaction,
    change: &NewMessageChange,
) -> Result<Result<MessageEvent, MessageRefusal>, StoreError> {
    let done = message_event::Entity::find()
        .filter(message_event::Column::UserId.eq(change.user_id))
        .filter(message_event::Column::DedupKey.eq(change.dedup_key.as_str()))
        .one(txn)
        .await?;
    if let Some(done) = done {
        return Ok(Ok(answer_again(txn, done).await?));
    }
    let refuse = |kind: ErrorKind, code: &'static str| Ok(Err(MessageRefusal { kind, code }));
    let member = member::Entity::find_by_id((change.conversation_id, change.user_id)).one(txn).await?;
    let Some(member) = member else {
        return match conversation::Entity::find_by_id(change.conversation_id).one(txn).await? {
            Some(_) => refuse(ErrorKind::Forbidden, why::NOT_MEMBER),
            None => refuse(ErrorKind::NotFound, why::NO_CONVERSATION),
        };
    };
    let found = message::Entity::find_by_id(change.message_id).one(txn).await?;
    let Some(target) = found.filter(|m| m.conversation_id == change.conversation_id) else {
        return refuse(ErrorKind::NotFound, why::NO_MESSAGE);
    };
    if target.deleted_at.is_some() {
        return refuse(ErrorKind::Invalid, why::DELETED);
    }
    let now = now_in_micros();
    let event = message_event::ActiveModel {
        conversation_id: Set(change.conversation_id),
        message_id: Set(target.id),
        // The conversation's newest message, as every member's row has it.
        after_message_id: Set(member.last_message_id.max(target.id)),
        user_id: Set(change.user_id),
        dedup_key: Set(change.dedup_key.clone()),
        created_at: Set(now),
        on: Set(false),
        ..Default::default()
    };
    match change.kind {
        MessageChangeKind::Edit => {
            if target.sender_id != change.user_id {
                return refuse(ErrorKind::Forbidden, why::NOT_SENDER);
            }
            if target.message_type != "text" {
                return refuse(ErrorKind::Invalid, why::NOT_TEXT);
            }
            message::Entity::update_many()
                .col_expr(message::Column::Content, Expr::value(change.content.as_str()))
                .col_expr(message::Column::EditedAt, Expr::value(now))
                .filter(message::Column::Id.eq(target.id))
                .exec(txn)
                .await?;
            let stored = message_event::ActiveModel {
                kind: Set(message_event::EDITED.to_owned()),
                content: Set(Some(change.content.clone())),
                ..event
            }
            .insert(txn)
            .await?;
            let counts = counts_of(txn, target.id).await?;
            let message = as_edited(target, &stored, Some(&counts));
            Ok(Ok(stored.into_event(Some(message))))
        }
        MessageChangeKind::Delete => {
            let moderates = matches!(MemberRole::parse(&member.role), Some(MemberRole::Owner | MemberRole::Moderator))
                && conversation::Entity::find_by_id(change.conversation_id)
                    .one(txn)
                    .await?
                    .is_some_and(|c| c.is_group());
            if target.sender_id != change.user_id && !moderates {
                return refuse(ErrorKind::Forbidden, why::NOT_ALLOWED);
            }
            message::Entity::update_many()
                .col_expr(message::Column::Content, Expr::value(""))
                .col_expr(message::Column::DeletedAt, Expr::value(now))
                .filter(message::Column::Id.eq(target.id))
                .exec(txn)
                .await?;
            // A tombstone has no reactions.
            reaction::Entity::delete_many().filter(reaction::Column::MessageId.eq(target.id)).exec(txn).await?;
            let stored = message_event::ActiveModel { kind: Set(message_event::DELETED.to_owned()), ..event }
                .insert(txn)
                .await?;
            Ok(Ok(stored.into_event(None)))
        }
        MessageChangeKind::React => {
            let changed = if change.on {
                let row = reaction::ActiveModel {
                    message_id: Set(target.id),
                    emoji: Set(change.emoji.clone()),
                    user_id: Set(change.user_id),
                    created_at: Set(now),
                };
                let insert = reaction::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([
                            reaction::Column::MessageId,
                            reaction::Column::Emoji,
                            reaction::Column::UserId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                insert > 0
            } else {
                let removed = reaction::Entity::delete_many()
                    .filter(reaction::Column::MessageId.eq(target.id))
                    .filter(reaction::Column::Emoji.eq(change.emoji.as_str()))
                    .filter(reaction::Column::UserId.eq(change.user_id))
                    .exec(txn)
                    .await?;
                removed.rows_affected > 0
            };
            let counts = counts_of(txn, target.id).await?;
            let event = message_event::ActiveModel {
                kind: Set(message_event::REACTION.to_owned()),
                emoji: Set(Some(change.emoji.clone())),
                on: Set(change.on),
                counts: Set(Some(counts_json(&counts))),
                ..event
            };
            if !changed {
                // Nothing to store or announce: the answer says how things stand.
                let unchanged = message_event::Model {
                    id: 0,
                    conversation_id: change.conversation_id,
                    message_id: target.id,
                    after_message_id: 0,
                    kind: message_event::REACTION.to_owned(),
                    user_id: change.user_id,
                    content: None,
                    emoji: Some(change.emoji.clone()),
                    on: change.on,
                    counts: Some(counts_json(&counts)),
                    dedup_key: change.dedup_key.clone(),
                    created_at: now,
                };
                return Ok(Ok(unchanged.into_event(None)));
            }
            let stored = event.insert(txn).await?;
            Ok(Ok(stored.into_event(None)))
        }
    }
}

/// The answer to a change already stored: its event, an edit with the message as it made it.
async fn answer_again(txn: &DatabaseTransaction, done: message_event::Model) -> Result<MessageEvent, StoreError> {
    if done.kind != message_event::EDITED {
        return Ok(done.into_event(None));
    }
    let row = message::Entity::find_by_id(done.message_id).one(txn).await?;
    let counts = counts_of(txn, done.message_id).await?;
    let message = row.map(|row| as_edited(row, &done, Some(&counts)));
    Ok(done.into_event(message))
}

/// A message's reactions, `emoji → count`.
async fn counts_of(db: &impl ConnectionTrait, message_id: i64) -> Result<Counts, StoreError> {
    let rows: Vec<(String, i64)> = reaction::Entity::find()
        .select_only()
        .column(reaction::Column::Emoji)
        .column_as(reaction::Column::UserId.count(), "n")
        .filter(reaction::Column::MessageId.eq(message_id))
        .group_by(reaction::Column::Emoji)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(emoji, n)| (emoji, u32::try_from(n).unwrap_or(u32::MAX))).collect())
}

fn counts_json(counts: &Counts) -> String {
    serde_json::to_string(counts).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;
    use crate::store::NewMessage;

    /// Stores a message; its id.
    async fn send(store: &Store, conversation_id: i64, sender_id: i64, message_type: &str, content: &str) -> i64 {
        let new = NewMessage {
            conversation_id,
            sender_id,
            message_type: message_type.into(),
            content: content.into(),
            dedup_key: format!("k:{content}"),
        };
        store.insert_messages(&[new]).await.expect("stored")[0].id
    }

    fn change(
        conversation_id: i64,
        message_id: i64,
        user_id: i64,
        kind: MessageChangeKind,
        key: &str,
    ) -> NewMessageChange {
        NewMessageChange {
            conversation_id,
            message_id,
            user_id,
            kind,
            content: String::new(),
            emoji: String::new(),
            on: false,
            dedup_key: key.into(),
        }
    }

    fn edit(conversation_id: i64, message_id: i64, user_id: i64, content: &str, key: &str) -> NewMessageChange {
        NewMessageChange {
            content: content.into(),
            ..change(conversation_id, message_id, user_id, MessageChangeKind::Edit, key)
        }
    }

    fn react(
        conversation_id: i64,
        message_id: i64,
        user_id: i64,
        emoji: &str,
        on: bool,
        key: &str,
    ) -> NewMessageChange {
        NewMessageChange {
            emoji: emoji.into(),
            on,
            ..change(conversation_id, message_id, user_id, MessageChangeKind::React, key)
        }
    }

    async fn apply_one(store: &Store, change: NewMessageChange) -> Result<MessageEvent, &'static str> {
        let mut results = store.apply_message_changes(&[change]).await.expect("applied");
        results.remove(0).map_err(|refusal| refusal.code)
    }

    #[tokio::test]
    async fn edits_and_deletes_follow_the_rules_and_a_tombstone_stays_in_place() {
        let (_dir, store) = temp_store().await;
        let (pair, _) = store.open_conversation(1, 2).await.expect("pair");
        let (other, _) = store.open_conversation(1, 3).await.expect("other pair");
        let first = send(&store, pair.id, 1, "text", "helo").await;
        let image = send(&store, pair.id, 1, "image", "https://x.example/a.png").await;
        let second = send(&store, pair.id, 2, "text", "hi").await;

        assert_eq!(apply_one(&store, edit(pair.id, first, 2, "x", "a")).await, Err(why::NOT_SENDER));
        assert_eq!(apply_one(&store, edit(pair.id, image, 1, "x", "b")).await, Err(why::NOT_TEXT));
        assert_eq!(
            apply_one(&store, edit(other.id, first, 1, "x", "c")).await,
            Err(why::NO_MESSAGE),
            "another conversation's"
        );
        assert_eq!(apply_one(&store, edit(pair.id, first, 3, "x", "d")).await, Err(why::NOT_MEMBER));
        assert_eq!(apply_one(&store, edit(9_999, first, 1, "x", "e")).await, Err(why::NO_CONVERSATION));

        let edited = apply_one(&store, edit(pair.id, first, 1, "hello", "f")).await.expect("the sender edits");
        let message = edited.message.clone().expect("an edit carries the message");
        assert_eq!((message.id, message.content.as_str()), (first, "hello"));
        assert!(message.edited_at_ms > 0 && message.deleted_at_ms == 0);
        assert_eq!(edited.after_message_id, second, "placed after the newest message");
        // A retry with the same key answers the first edit, even after a later one.
        apply_one(&store, edit(pair.id, first, 1, "hello!", "g")).await.expect("edited again");
        let retried = apply_one(&store, edit(pair.id, first, 1, "hello", "f")).await.expect("retry");
        assert_eq!((retried.id, retried.message.expect("message").content), (edited.id, "hello".into()));

        let delete = |user, key: &str| change(pair.id, first, user, MessageChangeKind::Delete, key);
        assert_eq!(apply_one(&store, delete(2, "h")).await, Err(why::NOT_ALLOWED), "a direct partner may not");
        let deleted = apply_one(&store, delete(1, "i")).await.expect("the sender deletes");
        assert_eq!(apply_one(&store, delete(1, "i")).await.expect("same key").id, deleted.id);
        assert_eq!(apply_one(&store, delete(1, "j")).await, Err(why::DELETED), "twice");
        assert_eq!(apply_one(&store, edit(pair.id, first, 1, "x", "k")).await, Err(why::DELETED));
        assert_eq!(apply_one(&store, react(pair.id, first, 2, "👍", true, "l")).await, Err(why::DELETED));

        let (page, total) =
            store.messages_page(pair.id, crate::store::HistoryWindow::After { id: 0, limit: 10 }).await.expect("page");
        assert_eq!(total, 3);
        let ids: Vec<i64> = page.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![first, image, second], "the tombstone keeps its place");
        assert!(page[0].deleted_at.is_some() && page[0].content.is_empty());
    }

    #[tokio::test]
    async fn group_moderators_delete_others_messages_and_members_do_not() {
        let (_dir, store) = temp_store().await;
        let group = store.create_group(1, "Team", &[2, 3]).await.expect("group");
        let promote = crate::store::NewMemberChange {
            request_id: "r1".into(),
            conversation_id: group.id,
            actor_id: 1,
            kind: chat_proto::MemberChangeKind::SetRole,
            user_id: 2,
            role: MemberRole::Moderator,
            max_members: 10,
        };
        store.apply_member_changes(&[promote]).await.expect("applied")[0].as_ref().expect("promoted");
        let by_three = send(&store, group.id, 3, "text", "mine").await;
        let by_one = send(&store, group.id, 1, "text", "owner's").await;
        let delete = |message, user, key: &str| change(group.id, message, user, MessageChangeKind::Delete, key);
        assert_eq!(apply_one(&store, delete(by_one, 3, "a")).await, Err(why::NOT_ALLOWED), "a plain member");
        apply_one(&store, delete(by_one, 2, "b")).await.expect("a moderator deletes the owner's message");
        apply_one(&store, delete(by_three, 1, "c")).await.expect("the owner deletes a member's message");
    }

    #[tokio::test]
    async fn reactions_count_each_user_s_emoji_once_and_replay_in_order() {
        let (_dir, store) = temp_store().await;
        let (pair, _) = store.open_conversation(1, 2).await.expect("pair");
        let first = send(&store, pair.id, 1, "text", "one").await;
        let up = apply_one(&store, react(pair.id, first, 2, "👍", true, "a")).await.expect("added");
        assert!(up.id > 0);
        assert_eq!(up.counts, [("👍".to_owned(), 1)].into());
        let again = apply_one(&store, react(pair.id, first, 2, "👍", true, "b")).await.expect("added again");
        assert_eq!((again.id, again.counts.get("👍")), (0, Some(&1)), "nothing changed, nothing stored");
        apply_one(&store, react(pair.id, first, 1, "👍", true, "c")).await.expect("another user");
        apply_one(&store, react(pair.id, first, 1, "🎉", true, "d")).await.expect("another emoji");
        let off = apply_one(&store, react(pair.id, first, 2, "👍", false, "e")).await.expect("taken back");
        assert_eq!(off.counts, [("👍".to_owned(), 1), ("🎉".to_owned(), 1)].into());
        let not_there = apply_one(&store, react(pair.id, first, 2, "🎉", false, "f")).await.expect("not added");
        assert_eq!(not_there.id, 0);

        let (counts, mine) = store.reactions_of(&[first], 1).await.expect("reactions");
        assert_eq!(counts[&first], [("👍".to_owned(), 1), ("🎉".to_owned(), 1)].into());
        let mut own = mine[&first].clone();
        own.sort();
        assert_eq!(own, vec!["🎉".to_owned(), "👍".to_owned()]);

        // A replay from the first message: its changes in the order they were made; none for
        // messages the client does not hold yet.
        let second = send(&store, pair.id, 2, "text", "two").await;
        apply_one(&store, edit(pair.id, second, 2, "deux", "g")).await.expect("edited");
        apply_one(&store, edit(pair.id, first, 1, "uno", "h")).await.expect("edited");
        let replayed = store.message_events_after(pair.id, first, first, 100).await.expect("events");
        let kinds: Vec<(i64, i32)> = replayed.iter().map(|e| (e.message_id, e.kind)).collect();
        let reaction = chat_proto::MessageEventKind::Reaction as i32;
        let edited = chat_proto::MessageEventKind::Edited as i32;
        assert_eq!(
            kinds,
            vec![(first, reaction), (first, reaction), (first, reaction), (first, reaction), (first, edited)]
        );
        assert_eq!(replayed.last().and_then(|e| e.message.as_ref()).map(|m| m.content.as_str()), Some("uno"));
        assert!(store.message_events_after(pair.id, second + 1, second, 100).await.expect("none").is_empty());
    }

    #[tokio::test]
    async fn retention_deletes_old_messages_with_their_reactions_and_changes() {
        let (_dir, store) = temp_store().await;
        let (pair, _) = store.open_conversation(1, 2).await.expect("pair");
        let old = send(&store, pair.id, 1, "text", "old").await;
        apply_one(&store, react(pair.id, old, 2, "👍", true, "a")).await.expect("reacted");
        apply_one(&store, edit(pair.id, old, 1, "older", "b")).await.expect("edited");
        let cutoff = chrono::Utc::now() + chrono::Duration::milliseconds(1);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let new = send(&store, pair.id, 2, "text", "new").await;
        assert_eq!(store.delete_messages_before(cutoff).await.expect("swept"), 1);
        assert_eq!(store.delete_messages_before(cutoff).await.expect("swept again"), 0);
        let (page, _) =
            store.messages_page(pair.id, crate::store::HistoryWindow::After { id: 0, limit: 10 }).await.expect("page");
        assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), vec![new]);
        let (counts, _) = store.reactions_of(&[old], 0).await.expect("reactions");
        assert!(counts.is_empty(), "the reactions went with the message");
        assert!(store.message_events_after(pair.id, 0, new, 100).await.expect("events").is_empty());
    }
}
