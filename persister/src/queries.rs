//! Request-reply queries the persister answers: conversations, history pages, contacts.
//!
//! Each query has its own subject; all persister replicas join one queue group per subject,
//! so each request is answered once, by whichever replica is free.

use std::future::Future;

use chat_bus::BusError;
use chat_proto::{
    conversation_reply, ContactList, Conversation, ConversationList, ConversationReply, CreateGroup, ErrorKind,
    GetConversation, GetPositions, InboxCursor, InboxEntry, ListContacts, ListConversations, ListMemberEvents,
    ListMessageEvents, ListMessages, MemberEventList, MessageEventList, MessagePage, OpenConversation, PositionList,
    QueryError, QueryReply, MAX_GROUP_NAME_CHARS, MAX_MEMBER_EVENTS, MAX_MESSAGE_EVENTS, MAX_PAGE_SIZE,
    RPC_CREATE_GROUP, RPC_GET_CONVERSATION, RPC_GET_POSITIONS, RPC_LIST_CONTACTS, RPC_LIST_CONVERSATIONS,
    RPC_LIST_MEMBER_EVENTS, RPC_LIST_MESSAGES, RPC_LIST_MESSAGE_EVENTS, RPC_OPEN_CONVERSATION,
};
use futures::StreamExt;

use crate::service::{Persister, CONSUMER_NAME};
use crate::store::{HistoryWindow, StoreError};

impl Persister {
    pub(crate) async fn start_query_responders(&self) -> Result<(), BusError> {
        self.respond(RPC_GET_CONVERSATION, |p, q: GetConversation| async move { p.get_conversation(q).await }).await?;
        self.respond(RPC_OPEN_CONVERSATION, |p, q: OpenConversation| async move { p.open_conversation(q).await })
            .await?;
        self.respond(RPC_CREATE_GROUP, |p, q: CreateGroup| async move { p.create_group(q).await }).await?;
        self.respond(RPC_LIST_CONVERSATIONS, |p, q: ListConversations| async move { p.list_conversations(q).await })
            .await?;
        self.respond(RPC_LIST_MESSAGES, |p, q: ListMessages| async move { p.list_messages(q).await }).await?;
        self.respond(RPC_LIST_CONTACTS, |p, q: ListContacts| async move { p.list_contacts(q).await }).await?;
        self.respond(RPC_GET_POSITIONS, |p, q: GetPositions| async move { p.get_positions(q).await }).await?;
        self.respond(RPC_LIST_MEMBER_EVENTS, |p, q: ListMemberEvents| async move { p.list_member_events(q).await })
            .await?;
        self.respond(RPC_LIST_MESSAGE_EVENTS, |p, q: ListMessageEvents| async move { p.list_message_events(q).await })
            .await?;
        Ok(())
    }

    /// Answers every request on the query's subject with `handler`, each in a task of its own.
    async fn respond<Q, R, F, Fut>(&self, name: &str, handler: F) -> Result<(), BusError>
    where
        Q: prost::Message + Default + 'static,
        R: QueryReply + 'static,
        F: Fn(Persister, Q) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, QueryError>> + Send + 'static,
    {
        let subject = self.subjects.rpc(name);
        let mut requests = self.bus.queue_subscribe(&subject, CONSUMER_NAME).await?;
        let persister = self.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(reply_to) = request.reply else {
                    continue;
                };
                let (persister, handler) = (persister.clone(), handler.clone());
                tokio::spawn(async move {
                    let reply = match chat_proto::decode::<Q>(&request.payload) {
                        Ok(query) => handler(persister.clone(), query).await.unwrap_or_else(R::failed),
                        Err(e) => R::failed(QueryError::new(ErrorKind::Invalid, e.to_string())),
                    };
                    if let Err(e) = persister.bus.publish(&reply_to, chat_proto::encode(&reply)).await {
                        tracing::warn!(subject = %request.subject, error = %e, "query reply failed");
                    }
                });
            }
            tracing::warn!(%subject, "query subscription ended");
        });
        Ok(())
    }

    async fn get_conversation(&self, query: GetConversation) -> Result<ConversationReply, QueryError> {
        let conversation = self
            .conversation(query.conversation_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| QueryError::new(ErrorKind::NotFound, "Conversation not found"))?;
        Ok(ConversationReply {
            result: Some(conversation_reply::Result::Conversation(Conversation::clone(&conversation))),
            created: false,
        })
    }

    /// Creates a group; the request is checked again here (the gateway words the client's
    /// errors, this keeps the store consistent whoever asks).
    async fn create_group(&self, query: CreateGroup) -> Result<ConversationReply, QueryError> {
        let name = query.name.trim();
        if name.is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS {
            return Err(QueryError::new(
                ErrorKind::Invalid,
                format!("name must be 1 to {MAX_GROUP_NAME_CHARS} characters"),
            ));
        }
        if query.creator_id <= 0 || query.member_ids.iter().any(|id| *id <= 0) {
            return Err(QueryError::new(ErrorKind::Invalid, "user ids must be positive integers"));
        }
        let group = self.store.create_group(query.creator_id, name, &query.member_ids).await.map_err(internal)?;
        Ok(ConversationReply { result: Some(conversation_reply::Result::Conversation(group)), created: true })
    }

    async fn open_conversation(&self, query: OpenConversation) -> Result<ConversationReply, QueryError> {
        if query.sender_id <= 0 || query.receiver_id <= 0 {
            return Err(QueryError::new(ErrorKind::Invalid, "user ids must be positive integers"));
        }
        if query.sender_id == query.receiver_id {
            return Err(QueryError::new(ErrorKind::Invalid, "receiver_id must differ from sender_id"));
        }
        let (conversation, created) =
            self.store.open_conversation(query.sender_id, query.receiver_id).await.map_err(internal)?;
        Ok(ConversationReply { result: Some(conversation_reply::Result::Conversation(conversation)), created })
    }

    /// An inbox page; or, for a gateway of the previous version (`limit` 0), every
    /// conversation of the user in the old shape.
    async fn list_conversations(&self, query: ListConversations) -> Result<ConversationList, QueryError> {
        if query.limit == 0 {
            let conversations = self.store.conversations_of(query.user_id).await.map_err(internal)?;
            return Ok(ConversationList { conversations, ..Default::default() });
        }
        let before = match query.before {
            Some(cursor) => Some((
                chrono::DateTime::from_timestamp_micros(cursor.activity_us)
                    .ok_or_else(|| QueryError::new(ErrorKind::Invalid, "before is not a valid cursor"))?,
                cursor.conversation_id,
            )),
            None => None,
        };
        let limit = u64::from(query.limit.min(MAX_PAGE_SIZE));
        let page = self.store.inbox_page(query.user_id, limit, before).await.map_err(internal)?;
        // The last messages as the history shows them, reactions included (one statement).
        let last: Vec<i64> = page.entries.iter().filter_map(|row| row.last_message.as_ref().map(|m| m.id)).collect();
        let (mut counts, _) = self.store.reactions_of(&last, 0).await.map_err(internal)?;
        let entries = page
            .entries
            .into_iter()
            .map(|row| InboxEntry {
                conversation: Some(row.conversation.with_members(&row.members)),
                last_message: row.last_message.map(|m| {
                    let reactions = counts.remove(&m.id).unwrap_or_default();
                    chat_proto::StoredMessage { reactions: reactions.into_iter().collect(), ..m.into_stored(None) }
                }),
                unread_count: row.own.unread_count,
                last_activity_ms: row.own.last_activity_at.timestamp_millis(),
                members: row.members.into_iter().map(Into::into).collect(),
            })
            .collect();
        let next_before = page.next_before.map(|(activity, conversation_id)| InboxCursor {
            activity_us: activity.timestamp_micros(),
            conversation_id,
        });
        Ok(ConversationList { entries, total_unread: page.total_unread, next_before, ..Default::default() })
    }

    async fn get_positions(&self, query: GetPositions) -> Result<PositionList, QueryError> {
        let rows = self.store.positions(query.conversation_id).await.map_err(internal)?;
        Ok(PositionList { members: rows.into_iter().map(Into::into).collect(), error: None })
    }

    async fn list_messages(&self, query: ListMessages) -> Result<MessagePage, QueryError> {
        if query.limit == 0 {
            return Err(QueryError::new(ErrorKind::Invalid, "limit must be a positive integer"));
        }
        let limit = u64::from(query.limit.min(MAX_PAGE_SIZE));
        let window = match (query.after_id, query.before_id) {
            (Some(_), Some(_)) => {
                return Err(QueryError::new(ErrorKind::Invalid, "give either after or before, not both"))
            }
            (Some(id), None) => HistoryWindow::After { id, limit },
            (None, Some(id)) => HistoryWindow::Before { id, limit },
            (None, None) if query.page == 0 => {
                return Err(QueryError::new(ErrorKind::Invalid, "page must be a positive integer"));
            }
            (None, None) => HistoryWindow::Page { page: u64::from(query.page), limit },
        };
        let conversation = self
            .conversation_header(query.conversation_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| QueryError::new(ErrorKind::NotFound, "Conversation not found"))?;
        let (rows, total) = self.store.messages_page(conversation.id, window).await.map_err(internal)?;
        let ids: Vec<i64> = rows.iter().map(|m| m.id).collect();
        let (mut counts, mut mine) = self.store.reactions_of(&ids, query.viewer_id).await.map_err(internal)?;
        let messages = rows
            .into_iter()
            .map(|row| {
                let id = row.id;
                let mut stored = row.into_stored(None);
                stored.reactions = counts.remove(&id).unwrap_or_default().into_iter().collect();
                stored.my_reactions = mine.remove(&id).unwrap_or_default();
                stored
            })
            .collect();
        Ok(MessagePage { messages, total, error: None })
    }

    async fn list_member_events(&self, query: ListMemberEvents) -> Result<MemberEventList, QueryError> {
        let rows = self
            .store
            .member_events_after(query.conversation_id, query.after_message_id, MAX_MEMBER_EVENTS)
            .await
            .map_err(internal)?;
        Ok(MemberEventList { events: rows.into_iter().map(Into::into).collect(), error: None })
    }

    async fn list_message_events(&self, query: ListMessageEvents) -> Result<MessageEventList, QueryError> {
        let events = self
            .store
            .message_events_after(
                query.conversation_id,
                query.after_message_id,
                query.up_to_message_id,
                MAX_MESSAGE_EVENTS,
            )
            .await
            .map_err(internal)?;
        Ok(MessageEventList { events, error: None })
    }

    async fn list_contacts(&self, query: ListContacts) -> Result<ContactList, QueryError> {
        let user_ids = self.store.contacts_of(query.user_id).await.map_err(internal)?;
        Ok(ContactList { user_ids, error: None })
    }
}

fn internal(e: StoreError) -> QueryError {
    tracing::error!(error = %e, "query failed");
    QueryError::new(ErrorKind::Internal, "Internal server error")
}
