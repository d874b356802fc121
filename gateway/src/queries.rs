//! The gateway's side of request-reply: asking the persister.

use chat_proto::{
    conversation_reply, Conversation, ConversationReply, ErrorKind, GetConversation, QueryError, QueryReply,
    RPC_GET_CONVERSATION,
};

use crate::Gateway;

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

impl Gateway {
    /// Sends query `name` to the persister and waits for its reply.
    pub(crate) async fn query<Q: prost::Message, R: QueryReply>(
        &self,
        name: &str,
        query: &Q,
    ) -> Result<R, QueryFailure> {
        let subject = self.subjects.rpc(name);
        let bytes = self
            .bus
            .request(&subject, chat_proto::encode(query), self.config.query_timeout)
            .await
            .map_err(|e| QueryFailure::Unavailable(e.to_string()))?;
        let reply: R = chat_proto::decode(&bytes).map_err(|e| QueryFailure::Unavailable(e.to_string()))?;
        match reply.error() {
            Some(error) => Err(QueryFailure::Refused(error.clone())),
            None => Ok(reply),
        }
    }

    /// A conversation by id, from the cache or the persister.
    pub(crate) async fn conversation(&self, id: i64) -> Result<Conversation, QueryFailure> {
        if let Some(hit) = self.conversations.get(&id) {
            return Ok(hit);
        }
        let reply: ConversationReply =
            self.query(RPC_GET_CONVERSATION, &GetConversation { conversation_id: id }).await?;
        match reply.result {
            Some(conversation_reply::Result::Conversation(conversation)) => {
                self.conversations.insert(id, conversation.clone());
                Ok(conversation)
            }
            _ => Err(QueryFailure::Unavailable("empty conversation reply".into())),
        }
    }
}
