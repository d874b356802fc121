//! The gateway's side of request-reply: asking the persister.

use std::sync::Arc;
use std::time::Duration;

use chat_bus::Bus;
use chat_proto::{
    conversation_reply, Conversation, ConversationReply, ErrorKind, GetConversation, QueryError, QueryReply, Subjects,
    RPC_GET_CONVERSATION,
};

/// Why a query got no useful answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryFailure {
    /// The persister answered with a refusal (not found, invalid, ...).
    #[error("{}", .0.message)]
    Refused(QueryError),
    /// No answer: the persister is down, slow, or answered garbage.
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

impl QueryFailure {
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            QueryFailure::Refused(e) => Some(e.kind()),
            QueryFailure::Unavailable(_) => None,
        }
    }
}

/// Queries to the persister, with the conversations seen so far (they never change once
/// created, so they are kept; bounded).
pub struct Queries {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    timeout: Duration,
    conversations: quick_cache::sync::Cache<i64, Arc<Conversation>>,
}

impl Queries {
    /// `timeout`: how long a query may take before the client gets an error.
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, timeout: Duration) -> Self {
        Self { bus, subjects, timeout, conversations: quick_cache::sync::Cache::new(100_000) }
    }

    /// Sends query `name` to the persister and waits for its reply.
    pub async fn query<Q: prost::Message, R: QueryReply>(&self, name: &str, query: &Q) -> Result<R, QueryFailure> {
        let subject = self.subjects.rpc(name);
        let bytes = self
            .bus
            .request(&subject, chat_proto::encode(query), self.timeout)
            .await
            .map_err(|e| QueryFailure::Unavailable(e.to_string()))?;
        let reply: R = chat_proto::decode(&bytes).map_err(|e| QueryFailure::Unavailable(e.to_string()))?;
        match reply.error() {
            Some(error) => Err(QueryFailure::Refused(error.clone())),
            None => Ok(reply),
        }
    }

    /// A conversation by id, from the cache or the persister.
    /// A direct conversation is cached (it never changes); a group, whose members change, is
    /// read each time. (Shared: a group carries its member list.)
    pub async fn conversation(&self, id: i64) -> Result<Arc<Conversation>, QueryFailure> {
        if let Some(hit) = self.conversations.get(&id) {
            return Ok(hit);
        }
        let reply: ConversationReply =
            self.query(RPC_GET_CONVERSATION, &GetConversation { conversation_id: id }).await?;
        match reply.result {
            Some(conversation_reply::Result::Conversation(conversation)) => {
                let conversation = Arc::new(conversation);
                // A group's members change: it is asked for each time.
                if !conversation.is_group() {
                    self.conversations.insert(id, conversation.clone());
                }
                Ok(conversation)
            }
            _ => Err(QueryFailure::Unavailable("empty conversation reply".into())),
        }
    }
}
