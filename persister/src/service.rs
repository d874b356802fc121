//! The persister's loops: the send-command consumer and the query responders.

use std::sync::Arc;
use std::time::Duration;

use chat_bus::{Bus, BusError, Job};
use chat_proto::{send_outcome, Conversation, SendMessage, SendOutcome, Subjects};
use futures::StreamExt;

use crate::store::{NewMessage, Store, StoreError};

/// Most send commands stored in one transaction: bounds the latency a batch adds.
const MAX_BATCH: usize = 256;
/// Attempts to store a batch before its senders are told it failed.
const STORE_ATTEMPTS: u32 = 3;
/// Name of the durable consumer that all persister replicas share.
pub const CONSUMER_NAME: &str = "persister";

#[derive(Debug, thiserror::Error)]
pub enum PersisterError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("the work queue ended: the bus connection is gone")]
    QueueEnded,
}

/// Conversations never change once created, so the ones seen are kept (bounded) to spare a
/// query per message. A missing conversation is not cached: it may be created a moment later.
pub(crate) type ConversationCache = quick_cache::sync::Cache<i64, Conversation>;

#[derive(Clone)]
pub struct Persister {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) store: Store,
    pub(crate) conversations: Arc<ConversationCache>,
}

impl Persister {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, store: Store) -> Self {
        Self { bus, subjects, store, conversations: Arc::new(ConversationCache::new(100_000)) }
    }

    /// Runs until the bus connection ends. Subscribes before it returns control, so that a
    /// gateway started after `start` finds someone listening.
    pub async fn start(self) -> Result<tokio::task::JoinHandle<Result<(), PersisterError>>, PersisterError> {
        let mut jobs = self.bus.work_queue(CONSUMER_NAME).await?;
        self.start_query_responders().await?;
        Ok(tokio::spawn(async move {
            // Whatever is already waiting is taken at once, up to MAX_BATCH: under load the
            // batches grow and the commits per message shrink; when idle a batch is one message.
            let mut batches = (&mut jobs).ready_chunks(MAX_BATCH);
            while let Some(batch) = batches.next().await {
                self.handle_batch(batch).await;
            }
            Err(PersisterError::QueueEnded)
        }))
    }

    pub(crate) async fn conversation(&self, id: i64) -> Result<Option<Conversation>, StoreError> {
        if let Some(hit) = self.conversations.get(&id) {
            return Ok(Some(hit));
        }
        let found = self.store.conversation(id).await?;
        if let Some(conversation) = &found {
            self.conversations.insert(id, conversation.clone());
        }
        Ok(found)
    }

    async fn handle_batch(&self, jobs: Vec<Job>) {
        let mut accepted: Vec<(SendMessage, Conversation)> = Vec::with_capacity(jobs.len());
        let mut refused: Vec<(SendMessage, String)> = Vec::new();
        for job in &jobs {
            let command: SendMessage = match chat_proto::decode(&job.payload) {
                Ok(command) => command,
                Err(e) => {
                    // Only our gateways publish here; an undecodable command has nobody to answer.
                    tracing::error!(subject = %job.subject, error = %e, "dropping undecodable send command");
                    continue;
                }
            };
            match self.check(&command).await {
                Ok(conversation) => accepted.push((command, conversation)),
                Err(reason) => refused.push((command, reason)),
            }
        }

        let stored = self.store_with_retries(&accepted).await;
        match stored {
            Ok(stored) => {
                for ((command, conversation), message) in accepted.into_iter().zip(stored) {
                    let message = message.into_stored(Some(conversation));
                    self.publish(&self.subjects.conversation_messages(message.conversation_id), &message).await;
                    self.send_outcome(&command, send_outcome::Result::Stored(message)).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, messages = accepted.len(), "storing a batch failed");
                for (command, _) in accepted {
                    self.send_outcome(&command, send_outcome::Result::Error("Failed to send message".into())).await;
                }
            }
        }
        for (command, reason) in refused {
            self.send_outcome(&command, send_outcome::Result::Error(reason)).await;
        }
        for job in jobs {
            if let Err(e) = job.ack().await {
                tracing::warn!(error = %e, "acknowledging a send command failed; it may be redelivered");
            }
        }
    }

    /// Whether the command may be stored: `Err` carries the text for `message-error`.
    async fn check(&self, command: &SendMessage) -> Result<Conversation, String> {
        match self.conversation(command.conversation_id).await {
            Ok(Some(conversation)) if conversation.has_participant(command.sender_id) => Ok(conversation),
            Ok(Some(_)) => Err("Unauthorized to send to this conversation".into()),
            Ok(None) => Err("Conversation not found".into()),
            Err(e) => {
                tracing::error!(error = %e, conversation_id = command.conversation_id, "conversation lookup failed");
                Err("Failed to send message".into())
            }
        }
    }

    async fn store_with_retries(
        &self,
        accepted: &[(SendMessage, Conversation)],
    ) -> Result<Vec<crate::entity::message::Model>, StoreError> {
        if accepted.is_empty() {
            return Ok(Vec::new());
        }
        let batch: Vec<NewMessage> = accepted
            .iter()
            .map(|(c, _)| NewMessage {
                conversation_id: c.conversation_id,
                sender_id: c.sender_id,
                message_type: c.message_type.clone(),
                content: c.content.clone(),
                dedup_key: c.dedup_key(),
            })
            .collect();
        let mut attempt = 1;
        loop {
            match self.store.insert_messages(&batch).await {
                Ok(stored) => return Ok(stored),
                Err(e) if attempt < STORE_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "storing a batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_outcome(&self, command: &SendMessage, result: send_outcome::Result) {
        let outcome = SendOutcome {
            request_id: command.request_id.clone(),
            socket_id: command.socket_id.clone(),
            result: Some(result),
        };
        self.publish(&self.subjects.send_outcomes(&command.gateway_id), &outcome).await;
    }

    async fn publish<M: prost::Message>(&self, subject: &str, message: &M) {
        if let Err(e) = self.bus.publish(subject, chat_proto::encode(message)).await {
            tracing::warn!(%subject, error = %e, "publish failed");
        }
    }
}
