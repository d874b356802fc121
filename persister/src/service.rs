//! The persister's loops: the send-command consumer and the query responders.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument, Span};

use chat_bus::{Bus, BusError, Job, WorkQueue};
use chat_proto::{send_outcome, Conversation, SendMessage, SendOutcome, Subjects};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::store::{NewMessage, Store, StoreError};
use crate::trace::{batch_span, CommandSpans};

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

/// Settings of a persister; the defaults suit a local run.
#[derive(Clone, Debug)]
pub struct PersisterConfig {
    /// How long a batch is retried while the database is unavailable before its senders get
    /// `message-error`. Meanwhile the jobs stay on the queue, marked as in progress.
    pub store_timeout: Duration,
    /// Most send commands stored in one transaction: bounds the latency a batch adds.
    pub max_batch: usize,
    /// How long a batch waits for more commands after its first one. Whatever is already
    /// waiting is always taken (up to `max_batch`); zero adds no latency when idle, a little
    /// makes batches, hence commits per message, better under moderate load.
    pub batch_linger: Duration,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        Self { store_timeout: Duration::from_secs(30), max_batch: 256, batch_linger: Duration::ZERO }
    }
}

#[derive(Clone)]
pub struct Persister {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) store: Store,
    pub(crate) conversations: Arc<ConversationCache>,
    config: PersisterConfig,
    /// When a batch last gave up on the database: while that is recent and the database still
    /// fails, later batches give up at once instead of each waiting the full store timeout.
    gave_up_at: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Persister {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, store: Store, config: PersisterConfig) -> Self {
        Self {
            bus,
            subjects,
            store,
            conversations: Arc::new(ConversationCache::new(100_000)),
            config,
            gave_up_at: Arc::default(),
        }
    }

    /// Runs until the bus connection ends, or until `shutdown` is cancelled: then it takes no
    /// new batch, finishes the one in hand (stored, confirmed, acknowledged), and returns
    /// `Ok`. Subscribes before it returns control, so that a gateway started after `start`
    /// finds someone listening.
    pub async fn start(
        self,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<Result<(), PersisterError>>, PersisterError> {
        let mut jobs = self.bus.work_queue(CONSUMER_NAME).await?;
        self.start_query_responders().await?;
        Ok(tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    biased;
                    // Waiting for the first job of a batch is the one safe place to stop:
                    // nothing has been taken from the queue yet.
                    () = shutdown.cancelled() => {
                        tracing::info!("persister stopping: no batch in hand");
                        return Ok(());
                    }
                    first = jobs.next() => first,
                };
                let Some(first) = first else { return Err(PersisterError::QueueEnded) };
                let batch = self.fill_batch(first, &mut jobs).await;
                self.handle_batch(batch).await;
            }
        }))
    }

    /// A batch: `first`, then whatever the queue hands out within the linger time, up to the
    /// batch size. Not cancelled half-way (jobs taken must be handled), so it never waits
    /// longer than the linger time.
    async fn fill_batch(&self, first: Job, jobs: &mut WorkQueue) -> Vec<Job> {
        let mut batch = Vec::with_capacity(self.config.max_batch.min(64));
        batch.push(first);
        let deadline = Instant::now() + self.config.batch_linger;
        while batch.len() < self.config.max_batch {
            // `timeout_at` polls the queue before the clock, so jobs already waiting are taken
            // even with no linger at all.
            match tokio::time::timeout_at(deadline, jobs.next()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        batch
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
        crate::metrics::batch(jobs.len());
        let span = batch_span(&jobs);
        self.store_and_answer(jobs).instrument(span).await
    }

    async fn store_and_answer(&self, jobs: Vec<Job>) {
        let mut commands = Vec::with_capacity(jobs.len());
        let mut spans = CommandSpans::default();
        for job in &jobs {
            match chat_proto::decode::<SendMessage>(&job.payload) {
                Ok(command) => {
                    spans.open(job, &command);
                    commands.push(command);
                }
                // Only our gateways publish here; an undecodable command has nobody to answer.
                Err(e) => tracing::error!(subject = %job.subject, error = %e, "dropping undecodable send command"),
            }
        }
        let recently_gave_up = self
            .gave_up_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < self.config.store_timeout);
        let deadline = if recently_gave_up { Instant::now() } else { Instant::now() + self.config.store_timeout };
        let mut delay = Duration::from_millis(250);
        // After a commit with an unknown outcome the batch may be stored already: giving up
        // would tell senders "failed" about messages that exist. So the batch is then retried
        // until the database answers (the retry finds the rows by their dedup keys), and the
        // partition waits meanwhile, which keeps later messages behind it.
        let mut outcome_unknown = false;
        let started = Instant::now();
        let outcomes = loop {
            match self.store_batch(&commands).await {
                Ok(outcomes) => {
                    *self.gave_up_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                    break outcomes;
                }
                Err(e)
                    if outcome_unknown
                        || matches!(e, StoreError::CommitUnknown(_))
                        || Instant::now() + delay < deadline =>
                {
                    outcome_unknown |= matches!(e, StoreError::CommitUnknown(_));
                    tracing::warn!(error = %e, retry_in = ?delay, "storing a batch failed; retrying");
                    // Tell the queue we are still at it, so it does not hand the jobs to
                    // another persister meanwhile.
                    for job in &jobs {
                        if let Err(e) = job.in_progress().await {
                            tracing::debug!(error = %e, "progress signal failed");
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, messages = commands.len(), "storing a batch failed; giving up");
                    *self.gave_up_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
                    let error =
                        format!("Failed to send message: storage unavailable for {:?}", self.config.store_timeout);
                    break commands.iter().map(|c| (c, send_outcome::Result::Error(error.clone()))).collect();
                }
            }
        };
        for (command, outcome) in outcomes {
            let span = spans.of(command);
            if let send_outcome::Result::Stored(message) = &outcome {
                let publish = tracing::info_span!(parent: &span, "publish-message", otel.kind = "producer");
                self.publish_traced(&self.subjects.conversation_messages(message.conversation_id), message, publish)
                    .await;
            }
            self.send_outcome(command, outcome, &span).await;
        }
        let stored_in = started.elapsed();
        let size = jobs.len();
        for job in jobs {
            if let Err(e) = job.ack().await {
                tracing::warn!(error = %e, "acknowledging a send command failed; it will be redelivered and deduplicated");
            }
        }
        tracing::debug!(size, ?stored_in, total = ?started.elapsed(), "batch done");
    }

    /// Checks and stores the commands of a batch in one transaction; the outcome of each, in
    /// order. Fails as a whole when the database does, so the batch can be retried.
    async fn store_batch<'a>(
        &self,
        commands: &'a [SendMessage],
    ) -> Result<Vec<(&'a SendMessage, send_outcome::Result)>, StoreError> {
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut accepted = Vec::with_capacity(commands.len());
        for command in commands {
            match self.conversation(command.conversation_id).await? {
                Some(conversation) if conversation.has_participant(command.sender_id) => {
                    accepted.push((command, conversation));
                }
                Some(_) => outcomes.push((command, "Unauthorized to send to this conversation")),
                None => outcomes.push((command, "Conversation not found")),
            }
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
        let stored = if batch.is_empty() {
            Vec::new()
        } else {
            let started = Instant::now();
            let span = tracing::info_span!("insert-messages", messages = batch.len());
            let stored = self.store.insert_messages(&batch).instrument(span).await?;
            crate::metrics::inserted(started.elapsed(), stored.len());
            stored
        };
        let mut results: Vec<(&SendMessage, send_outcome::Result)> = accepted
            .into_iter()
            .zip(stored)
            .map(|((command, conversation), row)| {
                (command, send_outcome::Result::Stored(row.into_stored(Some(conversation))))
            })
            .collect();
        results.extend(
            outcomes.into_iter().map(|(command, reason)| (command, send_outcome::Result::Error(reason.into()))),
        );
        Ok(results)
    }

    async fn send_outcome(&self, command: &SendMessage, result: send_outcome::Result, span: &Span) {
        let outcome = SendOutcome {
            request_id: command.request_id.clone(),
            socket_id: command.socket_id.clone(),
            result: Some(result),
        };
        let publish = tracing::info_span!(parent: span, "publish-outcome", otel.kind = "producer");
        self.publish_traced(&self.subjects.send_outcomes(&command.gateway_id), &outcome, publish).await;
    }

    /// Publishes within `span`, whose context the message carries to its subscribers.
    async fn publish_traced<M: prost::Message>(&self, subject: &str, message: &M, span: Span) {
        let headers = chat_telemetry::inject_context(&span);
        let published =
            self.bus.publish_with_headers(subject, headers, chat_proto::encode(message)).instrument(span).await;
        if let Err(e) = published {
            tracing::warn!(%subject, error = %e, "publish failed");
        }
    }
}
