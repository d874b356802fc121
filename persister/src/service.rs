//! The persister's loops: the send-command consumer and the query responders.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use chat_bus::{Backoff, Bus, BusError, Job, Retryable, WorkQueue};
use chat_proto::{
    gateway_event, member_outcome, message_change_outcome, receipt_outcome, room_event, send_outcome, user_event,
    ChangeMember, ChangeMessage, Conversation, DeliveredMessage, Delivery, ErrorKind, GatewayEvent, MarkReceipt,
    MemberEvent, MemberEvents, MemberOutcome, MessageChangeOutcome, MessageEvent, MessageEvents, QueryError,
    ReceiptKind, ReceiptOutcome, ReceiptPosition, ReceiptPositions, RoomEvent, SendBatch, SendMessage, SendOutcome,
    Subjects, UserEvent, UNKNOWN_MESSAGE,
};
use futures::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::defaults;
use crate::known::KnownPositions;
use crate::linger::{self, Linger};
use crate::store::{NewMemberChange, NewMessage, NewMessageChange, NewReceipt, Store, StoreError, StoredReceipt};
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

/// Conversations never change once created, but for a group's members, so the ones seen are
/// kept without those (bounded) to spare a query per message. A missing conversation is not
/// cached: it may be created a moment later.
pub(crate) type ConversationCache = quick_cache::sync::Cache<i64, Arc<Conversation>>;

/// The conversations of one batch, groups with their members as they stood before it.
type BatchConversations = std::collections::HashMap<i64, Arc<Conversation>>;

/// A group with its members' rows.
fn with_members(header: &Conversation, rows: Option<&Vec<crate::entity::member::Model>>) -> Conversation {
    let members = crate::entity::member::as_group_members(rows.into_iter().flatten(), header.created_at_ms);
    Conversation { members, ..header.clone() }
}

/// Settings of a persister; the defaults suit a local run.
#[derive(Clone, Debug)]
pub struct PersisterConfig {
    /// How long a batch is retried while the database is unavailable before its senders get
    /// `message-error`. Meanwhile the jobs stay on the queue, marked as in progress.
    pub store_timeout: Duration,
    /// Most send commands stored in one statement: bounds the latency a batch adds.
    pub max_batch: usize,
    /// How long a batch waits for more commands after its first one, when jobs have lately
    /// come less than that apart (see `linger`): under moderate load a little makes batches,
    /// hence transactions per message, fewer; idle, a batch does not wait. Whatever is
    /// already waiting is always taken (up to `max_batch`); zero never waits.
    pub batch_linger: Duration,
    /// Batches stored at once. More than one keeps the database and the queue busy while a
    /// batch waits on a commit, and lets each partition go on as soon as its own job is done
    /// instead of when the whole batch is. Safe only on a work queue that hands out a
    /// partition's next job after the previous one is acknowledged (NATS: `max_ack_pending`
    /// 1); the in-process queue does not, so the all-in-one mode keeps this at 1.
    pub batches_in_flight: usize,
    /// Messages older than this are deleted (see `retention`); `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        Self {
            store_timeout: defaults::STORE_TIMEOUT,
            max_batch: defaults::MAX_BATCH,
            batch_linger: defaults::BATCH_LINGER,
            batches_in_flight: defaults::BATCHES_IN_FLIGHT_IN_PROCESS,
            retention: None,
        }
    }
}

#[derive(Clone)]
pub struct Persister {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) store: Store,
    pub(crate) conversations: Arc<ConversationCache>,
    /// Members' positions as far as this persister committed them: receipts they supersede
    /// are answered without the database.
    known: Arc<KnownPositions>,
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
            known: Arc::default(),
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
        if let Some(retention) = self.config.retention {
            tokio::spawn(crate::retention::run(self.store.clone(), retention, shutdown.clone()));
        }
        Ok(tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(self.config.batches_in_flight.max(1)));
            let mut in_flight = tokio::task::JoinSet::new();
            let mut linger = Linger::new(self.config.batch_linger);
            let ended = loop {
                // A free slot first, so that a job is never taken without a batch to put it in.
                let Ok(slot) = slots.clone().acquire_owned().await else { break Ok(()) };
                let first = tokio::select! {
                    biased;
                    // Waiting for the first job of a batch is the one safe place to stop:
                    // nothing has been taken from the queue yet.
                    () = shutdown.cancelled() => break Ok(()),
                    first = jobs.next() => first,
                };
                let Some(first) = first else { break Err(PersisterError::QueueEnded) };
                linger.arrived(Instant::now());
                let batch = self.fill_batch(first, &mut jobs, &mut linger).await;
                let this = self.clone();
                in_flight.spawn(async move {
                    this.handle_batch(batch).await;
                    drop(slot);
                });
                // Reap the finished ones, so the set holds only batches in flight.
                while in_flight.try_join_next().is_some() {}
            };
            let batches = in_flight.len();
            tracing::info!(batches, "persister stopping: finishing the batches in hand");
            while in_flight.join_next().await.is_some() {}
            ended
        }))
    }

    /// A batch: `first`, then whatever the queue hands out within the linger time (when
    /// `linger` says to wait at all, and only while the batch is small), until it holds the
    /// batch size in commands (a job is a gateway's batch of commands, so it may end a little
    /// above). Not cancelled half-way (jobs taken must be handled), so it never waits longer
    /// than the linger time.
    async fn fill_batch(&self, first: Job, jobs: &mut WorkQueue, linger: &mut Linger) -> Vec<TakenJob> {
        let began = Instant::now();
        let mut batch = vec![TakenJob::read(first)];
        let mut commands = batch[0].len();
        let deadline = began + linger.wait();
        while commands < self.config.max_batch {
            // `timeout_at` polls the queue before the clock, so jobs already waiting are taken
            // even with no linger at all, or once the batch is big enough not to wait. Tokio
            // rounds a deadline up to its next millisecond tick, so a batch also takes what
            // arrives until then: the linger lasts up to a millisecond longer than set, and
            // "no wait" is up to a millisecond (ARCHITECTURE.md, Performance, measures both).
            let until = linger::wait_until(deadline, commands, Instant::now());
            match tokio::time::timeout_at(until, jobs.next()).await {
                Ok(Some(job)) => {
                    linger.arrived(Instant::now());
                    let taken = TakenJob::read(job);
                    commands += taken.len();
                    batch.push(taken);
                }
                Ok(None) | Err(_) => break,
            }
        }
        crate::metrics::batch_filled(began.elapsed());
        batch
    }

    /// A conversation as it stands now: from the cache, except a group's members, which are
    /// read each time (they change).
    pub(crate) async fn conversation(&self, id: i64) -> Result<Option<Arc<Conversation>>, StoreError> {
        let Some(header) = self.conversation_header(id).await? else {
            return Ok(None);
        };
        if !header.is_group() {
            return Ok(Some(header));
        }
        let members = self.store.group_members(&[id]).await?;
        Ok(Some(Arc::new(with_members(&header, members.get(&id)))))
    }

    /// A conversation without a group's members, which never changes: from the cache.
    pub(crate) async fn conversation_header(&self, id: i64) -> Result<Option<Arc<Conversation>>, StoreError> {
        if let Some(hit) = self.conversations.get(&id) {
            return Ok(Some(hit));
        }
        let Some(found) = self.store.conversation(id).await? else {
            return Ok(None);
        };
        let header = Arc::new(found.without_members());
        self.conversations.insert(id, header.clone());
        Ok(Some(header))
    }

    /// The conversations a batch's messages and receipts name, as they stand before the batch:
    /// groups with their members read now, in one statement for all of them.
    async fn conversations_of(
        &self,
        commands: &[SendMessage],
        receipts: &[MarkReceipt],
    ) -> Result<BatchConversations, StoreError> {
        let mut ids: Vec<i64> = commands.iter().map(|c| c.conversation_id).collect();
        ids.extend(receipts.iter().map(|r| r.conversation_id));
        ids.sort_unstable();
        ids.dedup();
        let mut found = BatchConversations::with_capacity(ids.len());
        let mut groups = Vec::new();
        for id in ids {
            if let Some(header) = self.conversation_header(id).await? {
                if header.is_group() {
                    groups.push(id);
                }
                found.insert(id, header);
            }
        }
        if !groups.is_empty() {
            let members = self.store.group_members(&groups).await?;
            for id in groups {
                if let Some(header) = found.get(&id) {
                    let group = with_members(header, members.get(&id));
                    found.insert(id, Arc::new(group));
                }
            }
        }
        Ok(found)
    }

    /// Applies a batch's membership changes; the answer to each, in order.
    async fn store_member_changes<'a>(
        &self,
        changes: &'a [ChangeMember],
    ) -> Result<Vec<(&'a ChangeMember, Result<Vec<MemberEvent>, QueryError>)>, StoreError> {
        let new: Vec<NewMemberChange> = changes
            .iter()
            .map(|c| NewMemberChange {
                request_id: c.request_id.clone(),
                conversation_id: c.conversation_id,
                actor_id: c.actor_id,
                kind: c.kind(),
                user_id: c.user_id,
                role: c.role(),
                max_members: usize::try_from(c.max_members).unwrap_or(usize::MAX),
            })
            .collect();
        let results = self.store.apply_member_changes(&new).await?;
        Ok(changes
            .iter()
            .zip(results)
            .map(|(change, result)| {
                let answer = result
                    .map(|events| events.into_iter().map(MemberEvent::from).collect())
                    .map_err(|refusal| QueryError::new(refusal.kind, refusal.code));
                (change, answer)
            })
            .collect())
    }

    /// Applies a batch's edits, deletes and reactions; the answer to each, in order.
    async fn store_message_changes<'a>(
        &self,
        changes: &'a [ChangeMessage],
    ) -> Result<Vec<(&'a ChangeMessage, Result<MessageEvent, QueryError>)>, StoreError> {
        let new: Vec<NewMessageChange> = changes
            .iter()
            .map(|c| NewMessageChange {
                conversation_id: c.conversation_id,
                message_id: c.message_id,
                user_id: c.user_id,
                kind: c.kind(),
                content: c.content.clone(),
                emoji: c.emoji.clone(),
                on: c.on,
                dedup_key: c.dedup_key(),
            })
            .collect();
        let results = self.store.apply_message_changes(&new).await?;
        Ok(changes
            .iter()
            .zip(results)
            .map(|(change, result)| (change, result.map_err(|refusal| QueryError::new(refusal.kind, refusal.code))))
            .collect())
    }

    async fn handle_batch(&self, taken: Vec<TakenJob>) {
        let commands: Vec<&SendMessage> = taken.iter().flat_map(|t| &t.commands).collect();
        crate::metrics::batch(commands.len());
        let span = batch_span(&commands);
        self.store_and_answer(taken).instrument(span).await
    }

    async fn store_and_answer(&self, taken: Vec<TakenJob>) {
        let mut spans = CommandSpans::default();
        let mut jobs = Vec::with_capacity(taken.len());
        let mut commands = Vec::new();
        let mut receipts = Vec::new();
        let mut changes = Vec::new();
        let mut edits = Vec::new();
        for TakenJob { job, commands: of_job, receipts: receipts_of_job, member_changes, message_changes } in taken {
            for command in &of_job {
                spans.open(&job.subject, command);
            }
            jobs.push(job);
            commands.extend(of_job);
            receipts.extend(receipts_of_job);
            changes.extend(member_changes);
            edits.extend(message_changes);
        }
        let recently_gave_up = self
            .gave_up_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < self.config.store_timeout);
        let deadline = if recently_gave_up { Instant::now() } else { Instant::now() + self.config.store_timeout };
        // After a commit with an unknown outcome the batch may be stored already: giving up
        // would tell senders "failed" about messages that exist. So the batch is then retried
        // until the database answers (the retry finds the rows by their dedup keys), and the
        // partition waits meanwhile, which keeps later messages behind it.
        let mut outcome_unknown = false;
        let retryable = |e: &StoreError| {
            outcome_unknown |= matches!(e, StoreError::CommitUnknown(_));
            if outcome_unknown {
                Retryable::Always
            } else {
                Retryable::BeforeDeadline
            }
        };
        let started = Instant::now();
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2), deadline);
        let (batch, marked, changed, edited, held) = (&commands, &receipts, &changes, &edits, &jobs);
        let store = || async move {
            // Messages first: a receipt, an edit or a reaction of the batch may name one of
            // them; then membership changes, then the messages' changes. All are idempotent,
            // so a retry after a failure of a later one redoes the earlier ones harmlessly.
            // Groups' members as they stand before the batch.
            let stored = async {
                let conversations = self.conversations_of(batch, marked).await?;
                let messages = self.store_batch(batch, &conversations).await?;
                let receipts = self.store_receipts(marked, &conversations).await?;
                let changes = self.store_member_changes(changed).await?;
                let edits = self.store_message_changes(edited).await?;
                Ok::<_, StoreError>((messages, receipts, changes, edits))
            }
            .await;
            if stored.is_err() {
                // Tell the queue we are still at it, so it does not hand the jobs to another
                // persister while the batch waits for its next attempt.
                for job in held {
                    if let Err(e) = job.in_progress().await {
                        tracing::debug!(error = %e, "progress signal failed");
                    }
                }
            }
            stored
        };
        let (outcomes, receipt_outcomes, member_outcomes, edit_outcomes) = match backoff
            .retry("storing a batch", retryable, store)
            .await
        {
            Ok(outcomes) => {
                *self.gave_up_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                outcomes
            }
            Err(e) => {
                tracing::error!(error = %e, messages = commands.len(), receipts = receipts.len(), "storing a batch failed; giving up");
                *self.gave_up_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
                let refusal = QueryError::new(
                    ErrorKind::Internal,
                    format!("storage unavailable for {:?}", self.config.store_timeout),
                );
                let refused_receipts = receipts.iter().map(|r| (r, ReceiptAnswer::Refused(refusal.clone()))).collect();
                let refused_changes = changes.iter().map(|c| (c, Err(refusal.clone()))).collect();
                let refused_edits = edits.iter().map(|c| (c, Err(refusal.clone()))).collect();
                (
                    commands.iter().map(|c| (c, send_outcome::Result::Refused(refusal.clone()))).collect(),
                    refused_receipts,
                    refused_changes,
                    refused_edits,
                )
            }
        };
        let answers =
            BatchAnswers { outcomes, receipts: receipt_outcomes, changes: member_outcomes, edits: edit_outcomes };
        self.publish_deliveries(answers, &spans).await;
        let stored_in = started.elapsed();
        let size = jobs.len();
        for job in jobs {
            if let Err(e) = job.ack().await {
                tracing::warn!(error = %e, "acknowledging a send command failed; it will be redelivered and deduplicated");
            }
        }
        tracing::debug!(size, ?stored_in, total = ?started.elapsed(), "batch done");
    }

    /// Checks and stores the commands of a batch in one statement; the outcome of each, in
    /// order. Fails as a whole when the database does, so the batch can be retried.
    async fn store_batch<'a>(
        &self,
        commands: &'a [SendMessage],
        conversations: &BatchConversations,
    ) -> Result<Vec<(&'a SendMessage, send_outcome::Result)>, StoreError> {
        let mut outcomes = Vec::with_capacity(commands.len());
        let mut accepted = Vec::with_capacity(commands.len());
        for command in commands {
            match conversations.get(&command.conversation_id).cloned() {
                Some(conversation) if conversation.has_participant(command.sender_id) => {
                    accepted.push((command, conversation));
                }
                Some(_) => outcomes.push((command, ErrorKind::Forbidden, "not a participant of the conversation")),
                None => outcomes.push((command, ErrorKind::NotFound, "no such conversation")),
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
            self.known.messages_stored(&stored);
            stored
        };
        let mut results: Vec<(&SendMessage, send_outcome::Result)> = accepted
            .into_iter()
            .zip(stored)
            .map(|((command, conversation), row)| {
                (command, send_outcome::Result::Stored(row.into_stored(Some(conversation.without_members()))))
            })
            .collect();
        results.extend(
            outcomes
                .into_iter()
                .map(|(command, kind, reason)| (command, send_outcome::Result::Refused(QueryError::new(kind, reason)))),
        );
        Ok(results)
    }

    /// Checks and stores the receipts of a batch; the answer to each, in order. Fails as a
    /// whole when the database does, so the batch can be retried.
    async fn store_receipts<'a>(
        &self,
        receipts: &'a [MarkReceipt],
        conversations: &BatchConversations,
    ) -> Result<Vec<(&'a MarkReceipt, ReceiptAnswer)>, StoreError> {
        let mut answers: Vec<(&MarkReceipt, Option<ReceiptAnswer>)> = Vec::with_capacity(receipts.len());
        let mut accepted = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            let refusal = match conversations.get(&receipt.conversation_id) {
                Some(conversation) if conversation.has_participant(receipt.user_id) => None,
                Some(_) => Some(QueryError::new(ErrorKind::Forbidden, "not a member of the conversation")),
                None => Some(QueryError::new(ErrorKind::NotFound, "conversation")),
            };
            let answer = match refusal {
                Some(refusal) => Some(ReceiptAnswer::Refused(refusal)),
                None => self
                    .known
                    .superseded(receipt.conversation_id, receipt.user_id, receipt.kind(), receipt.message_id)
                    .map(ReceiptAnswer::Superseded),
            };
            if answer.is_none() {
                accepted.push(NewReceipt {
                    conversation_id: receipt.conversation_id,
                    user_id: receipt.user_id,
                    message_id: receipt.message_id,
                    read: receipt.kind() == ReceiptKind::Read,
                });
            }
            answers.push((receipt, answer));
        }
        let superseded = answers.iter().filter(|(_, a)| matches!(a, Some(ReceiptAnswer::Superseded(_)))).count();
        crate::metrics::receipts_superseded(superseded);
        let stored = self.store.apply_receipts(&accepted).await?;
        for receipt in stored.iter().flatten() {
            self.known.row_stored(&receipt.positions);
        }
        let mut stored = stored.into_iter();
        Ok(answers
            .into_iter()
            .map(|(receipt, answer)| {
                let answer = answer.unwrap_or_else(|| match stored.next().flatten() {
                    Some(stored) => ReceiptAnswer::Stored(stored),
                    None => ReceiptAnswer::Refused(QueryError::new(ErrorKind::NotFound, UNKNOWN_MESSAGE)),
                });
                (receipt, answer)
            })
            .collect())
    }

    /// Publishes what a batch confirmed to those who need it: each conversation's stored
    /// messages on its room subject (heard only by gateways with a member of it), each
    /// gateway's outcomes on that gateway's subject. One publication per conversation and per
    /// gateway in the batch (more only past [`MAX_DELIVERY_BYTES`]), never one per message.
    /// Each message and outcome carries the trace context of its own publication span, a
    /// child of its command's `store-message`.
    async fn publish_deliveries(&self, answers: BatchAnswers<'_>, spans: &CommandSpans) {
        let BatchAnswers { outcomes, receipts, changes, edits } = answers;
        let members_after = self.members_after(&changes).await;
        let mut routed = RoutedDeliveries::default();
        for (change, answer) in changes {
            routed.push_member_change(change, answer, &members_after);
        }
        for (edit, answer) in edits {
            routed.push_message_change(edit, answer);
        }
        for (receipt, answer) in receipts {
            routed.push_receipt(receipt, answer);
        }
        for (command, result) in &outcomes {
            if let send_outcome::Result::Stored(message) = result {
                let span = tracing::info_span!(parent: &spans.of(command), "publish-message", otel.kind = "producer");
                let trace = chat_telemetry::inject_context(&span).into_iter().collect();
                routed.push_message(DeliveredMessage { message: Some(message.clone()), trace });
            }
        }
        for (command, result) in outcomes {
            let span = tracing::info_span!(parent: &spans.of(command), "publish-outcome", otel.kind = "producer");
            routed.push_outcome(SendOutcome {
                request_id: command.request_id.clone(),
                socket_id: command.socket_id.clone(),
                gateway_id: command.gateway_id.clone(),
                result: Some(result),
                trace: chat_telemetry::inject_context(&span).into_iter().collect(),
            });
        }
        for (subject, payload) in routed.finish(&self.subjects) {
            if let Err(e) = self.bus.publish(&subject, payload).await {
                tracing::warn!(%subject, error = %e, "publishing a delivery failed");
            }
        }
    }
}

impl Persister {
    /// Who hears the membership changes a batch made, by group: its members after the batch
    /// and those the batch removed. (Read after the commit; a group whose members cannot be
    /// read is told to those the changes name, and to its room.)
    async fn members_after(
        &self,
        changes: &[(&ChangeMember, Result<Vec<MemberEvent>, QueryError>)],
    ) -> std::collections::HashMap<i64, Vec<i64>> {
        let mut groups: Vec<i64> = changes
            .iter()
            .filter(|(_, answer)| answer.as_ref().is_ok_and(|events| !events.is_empty()))
            .map(|(change, _)| change.conversation_id)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.is_empty() {
            return Default::default();
        }
        let mut audience: std::collections::HashMap<i64, Vec<i64>> = match self.store.group_members(&groups).await {
            Ok(rows) => rows.into_iter().map(|(id, rows)| (id, rows.iter().map(|r| r.user_id).collect())).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the members of changed groups failed");
                Default::default()
            }
        };
        for (change, answer) in changes {
            for event in answer.iter().flatten() {
                let users = audience.entry(change.conversation_id).or_default();
                for user_id in [event.user_id, event.by] {
                    if !users.contains(&user_id) {
                        users.push(user_id);
                    }
                }
            }
        }
        audience
    }
}

/// What a batch stored, or why not, for each of its commands.
struct BatchAnswers<'a> {
    outcomes: Vec<(&'a SendMessage, send_outcome::Result)>,
    receipts: Vec<(&'a MarkReceipt, ReceiptAnswer)>,
    changes: Vec<(&'a ChangeMember, Result<Vec<MemberEvent>, QueryError>)>,
    edits: Vec<(&'a ChangeMessage, Result<MessageEvent, QueryError>)>,
}

/// What the store did with a receipt.
enum ReceiptAnswer {
    Stored(StoredReceipt),
    /// It would move nothing: the member's known position of its kind (see `known`), which
    /// the database was not asked about.
    Superseded(i64),
    Refused(QueryError),
}

/// What a batch confirmed, sorted by subject: each conversation's messages and moved receipts
/// for its room, each gateway's outcomes for that gateway, each user's moved receipts for the
/// user's other sockets, in the order they were pushed.
#[derive(Default)]
struct RoutedDeliveries {
    member_outcomes: Vec<(String, Vec<MemberOutcome>)>,
    message_outcomes: Vec<(String, Vec<MessageChangeOutcome>)>,
    room_changes: Vec<(i64, Vec<MessageEvent>)>,
    room_members: Vec<(i64, Vec<MemberEvent>)>,
    user_members: Vec<(i64, Vec<MemberEvent>)>,
    rooms: Vec<(i64, Vec<DeliveredMessage>)>,
    gateways: Vec<(String, Vec<SendOutcome>)>,
    receipt_outcomes: Vec<(String, Vec<ReceiptOutcome>)>,
    room_receipts: Vec<(i64, Vec<ReceiptPosition>)>,
    user_receipts: Vec<(i64, Vec<ReceiptPosition>)>,
}

impl RoutedDeliveries {
    /// A receipt's outcome for its gateway, and, when it moved a position, the position for
    /// the conversation's room and the user's sockets.
    fn push_receipt(&mut self, receipt: &MarkReceipt, answer: ReceiptAnswer) {
        let (result, moved) = match answer {
            ReceiptAnswer::Stored(StoredReceipt { positions, moved }) => {
                let read = receipt.kind() == ReceiptKind::Read;
                let (message_id, at) = if read {
                    (positions.last_read_message_id, positions.read_at)
                } else {
                    (positions.last_delivered_message_id, positions.delivered_at)
                };
                let position = ReceiptPosition {
                    conversation_id: receipt.conversation_id,
                    user_id: receipt.user_id,
                    kind: receipt.kind,
                    message_id,
                    at_ms: at.map_or(0, |at| at.timestamp_millis()),
                };
                if moved {
                    entries_for(&mut self.room_receipts, receipt.conversation_id).push(position.clone());
                    entries_for(&mut self.user_receipts, receipt.user_id).push(position.clone());
                }
                (receipt_outcome::Result::Position(position), moved)
            }
            ReceiptAnswer::Superseded(message_id) => {
                // Nothing moved, so nothing is announced: the gateway only needs the position
                // for the acknowledgement (its time is not known here).
                let position = ReceiptPosition {
                    conversation_id: receipt.conversation_id,
                    user_id: receipt.user_id,
                    kind: receipt.kind,
                    message_id,
                    at_ms: 0,
                };
                (receipt_outcome::Result::Position(position), false)
            }
            ReceiptAnswer::Refused(refusal) => (receipt_outcome::Result::Refused(refusal), false),
        };
        entries_for(&mut self.receipt_outcomes, receipt.gateway_id.clone()).push(ReceiptOutcome {
            request_id: receipt.request_id.clone(),
            socket_id: receipt.socket_id.clone(),
            gateway_id: receipt.gateway_id.clone(),
            result: Some(result),
            moved,
            trace: Default::default(),
            conversation_id: receipt.conversation_id,
            message_id: receipt.message_id,
        });
    }

    /// A membership change's outcome for its gateway, and its events for the group's room and
    /// for each of `members_after`'s users of the group.
    fn push_member_change(
        &mut self,
        change: &ChangeMember,
        answer: Result<Vec<MemberEvent>, QueryError>,
        members_after: &std::collections::HashMap<i64, Vec<i64>>,
    ) {
        let result = match answer {
            Ok(events) => {
                if !events.is_empty() {
                    entries_for(&mut self.room_members, change.conversation_id).extend(events.iter().cloned());
                    for &user_id in members_after.get(&change.conversation_id).into_iter().flatten() {
                        entries_for(&mut self.user_members, user_id).extend(events.iter().cloned());
                    }
                }
                member_outcome::Result::Done(MemberEvents { events })
            }
            Err(refusal) => member_outcome::Result::Refused(refusal),
        };
        entries_for(&mut self.member_outcomes, change.gateway_id.clone()).push(MemberOutcome {
            request_id: change.request_id.clone(),
            socket_id: change.socket_id.clone(),
            gateway_id: change.gateway_id.clone(),
            result: Some(result),
            trace: Default::default(),
            conversation_id: change.conversation_id,
            user_id: change.user_id,
            kind: change.kind,
            role: change.role,
        });
    }

    /// An edit's, delete's or reaction's outcome for its gateway, and, when it stored a
    /// change, the change for the conversation's room.
    fn push_message_change(&mut self, change: &ChangeMessage, answer: Result<MessageEvent, QueryError>) {
        let result = match answer {
            Ok(event) => {
                if event.id != 0 {
                    entries_for(&mut self.room_changes, change.conversation_id).push(event.clone());
                }
                message_change_outcome::Result::Done(event)
            }
            Err(refusal) => message_change_outcome::Result::Refused(refusal),
        };
        entries_for(&mut self.message_outcomes, change.gateway_id.clone()).push(MessageChangeOutcome {
            request_id: change.request_id.clone(),
            socket_id: change.socket_id.clone(),
            gateway_id: change.gateway_id.clone(),
            result: Some(result),
            trace: Default::default(),
            conversation_id: change.conversation_id,
            message_id: change.message_id,
        });
    }

    fn push_message(&mut self, message: DeliveredMessage) {
        let conversation_id = message.message.as_ref().map_or(0, |m| m.conversation_id);
        entries_for(&mut self.rooms, conversation_id).push(message);
    }

    fn push_outcome(&mut self, outcome: SendOutcome) {
        entries_for(&mut self.gateways, outcome.gateway_id.clone()).push(outcome);
    }

    /// The publications: subject and encoded payload, each under [`MAX_DELIVERY_BYTES`] (a
    /// single larger entry goes alone), in order.
    fn finish(self, subjects: &Subjects) -> Vec<(String, bytes::Bytes)> {
        let rooms = self.rooms.into_iter().flat_map(|(conversation_id, messages)| {
            let subject = subjects.room(conversation_id);
            chat_proto::split_by_size(messages, MAX_DELIVERY_BYTES, |m| m.encoded_len()).into_iter().map(
                move |messages| {
                    let delivery = Delivery { messages, ..Default::default() };
                    let event = RoomEvent { event: Some(room_event::Event::Messages(delivery)) };
                    (subject.clone(), chat_proto::encode(&event))
                },
            )
        });
        // A gateway's receipt outcomes ride in its last publication of send outcomes (they are
        // small): one publication per gateway and batch, and they arrive after the sends' (a
        // lane awaits the answer to its batch's last command).
        let mut receipt_outcomes = self.receipt_outcomes;
        let mut gateways = Vec::with_capacity(self.gateways.len() + receipt_outcomes.len());
        for (gateway, outcomes) in self.gateways {
            let receipts = match receipt_outcomes.iter().position(|(known, _)| *known == gateway) {
                Some(index) => receipt_outcomes.swap_remove(index).1,
                None => Vec::new(),
            };
            gateways.push((gateway, outcomes, receipts));
        }
        gateways.extend(receipt_outcomes.into_iter().map(|(gateway, receipts)| (gateway, Vec::new(), receipts)));
        let gateways = gateways.into_iter().flat_map(|(gateway, outcomes, receipt_outcomes)| {
            let subject = subjects.gateway(&gateway);
            let mut parts = chat_proto::split_by_size(outcomes, MAX_DELIVERY_BYTES, |o| o.encoded_len());
            if parts.is_empty() {
                parts.push(Vec::new());
            }
            let last = parts.len() - 1;
            let mut receipt_outcomes = Some(receipt_outcomes);
            parts.into_iter().enumerate().map(move |(index, outcomes)| {
                let receipt_outcomes =
                    if index == last { receipt_outcomes.take().unwrap_or_default() } else { Vec::new() };
                let delivery = Delivery { outcomes, receipt_outcomes, ..Default::default() };
                let event = GatewayEvent { event: Some(gateway_event::Event::Outcomes(delivery)) };
                (subject.clone(), chat_proto::encode(&event))
            })
        });
        let room_receipts = self.room_receipts.into_iter().map(|(conversation_id, positions)| {
            let event = RoomEvent { event: Some(room_event::Event::Receipts(ReceiptPositions { positions })) };
            (subjects.room(conversation_id), chat_proto::encode(&event))
        });
        let user_receipts = self.user_receipts.into_iter().map(|(user_id, positions)| {
            let event = UserEvent { event: Some(user_event::Event::Receipts(ReceiptPositions { positions })) };
            (subjects.user(user_id), chat_proto::encode(&event))
        });
        // Membership changes after the batch's messages and receipts, as they were stored.
        let room_members = self.room_members.into_iter().map(|(conversation_id, events)| {
            let event = RoomEvent { event: Some(room_event::Event::Members(MemberEvents { events })) };
            (subjects.room(conversation_id), chat_proto::encode(&event))
        });
        let user_members = self.user_members.into_iter().map(|(user_id, events)| {
            let event = UserEvent { event: Some(user_event::Event::Members(MemberEvents { events })) };
            (subjects.user(user_id), chat_proto::encode(&event))
        });
        let member_outcomes = self.member_outcomes.into_iter().map(|(gateway, member_outcomes)| {
            let delivery = Delivery { member_outcomes, ..Default::default() };
            let event = GatewayEvent { event: Some(gateway_event::Event::Outcomes(delivery)) };
            (subjects.gateway(&gateway), chat_proto::encode(&event))
        });
        // The messages' changes last, as they were stored.
        let room_changes = self.room_changes.into_iter().map(|(conversation_id, events)| {
            let event = RoomEvent { event: Some(room_event::Event::MessageChanges(MessageEvents { events })) };
            (subjects.room(conversation_id), chat_proto::encode(&event))
        });
        let message_outcomes = self.message_outcomes.into_iter().map(|(gateway, message_outcomes)| {
            let delivery = Delivery { message_outcomes, ..Default::default() };
            let event = GatewayEvent { event: Some(gateway_event::Event::Outcomes(delivery)) };
            (subjects.gateway(&gateway), chat_proto::encode(&event))
        });
        rooms
            .chain(room_receipts)
            .chain(user_receipts)
            .chain(room_members)
            .chain(user_members)
            .chain(gateways)
            .chain(member_outcomes)
            .chain(room_changes)
            .chain(message_outcomes)
            .collect()
    }
}

/// The entries of one conversation or gateway, added at the end when it is new. A batch
/// touches at most a few hundred of each, and a linear search keeps their order without a
/// second map.
fn entries_for<K: PartialEq, T>(routes: &mut Vec<(K, Vec<T>)>, key: K) -> &mut Vec<T> {
    let index = match routes.iter().position(|(known, _)| *known == key) {
        Some(index) => index,
        None => {
            routes.push((key, Vec::new()));
            routes.len() - 1
        }
    };
    &mut routes[index].1
}

/// A job taken from the work queue, with the send commands and receipts it carries.
struct TakenJob {
    job: Job,
    commands: Vec<SendMessage>,
    receipts: Vec<MarkReceipt>,
    member_changes: Vec<ChangeMember>,
    message_changes: Vec<ChangeMessage>,
}

impl TakenJob {
    fn read(job: Job) -> Self {
        crate::metrics::job_taken(job.enqueued_at);
        let batch = match SendBatch::from_payload(&job.payload) {
            Ok(batch) => batch,
            // Only our gateways publish here; an undecodable batch has nobody to answer. It is
            // still acknowledged with its batch, so it does not block its partition.
            Err(e) => {
                tracing::error!(subject = %job.subject, error = %e, "dropping undecodable send commands");
                SendBatch::default()
            }
        };
        Self {
            job,
            commands: batch.commands,
            receipts: batch.receipts,
            member_changes: batch.member_changes,
            message_changes: batch.message_changes,
        }
    }

    /// How many commands, receipts and membership changes it carries.
    fn len(&self) -> usize {
        self.commands.len() + self.receipts.len() + self.member_changes.len() + self.message_changes.len()
    }
}

/// Largest [`Delivery`] payload published: well under NATS's default `max_payload` (1 MiB),
/// with room for a message of the longest content.
pub(crate) const MAX_DELIVERY_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::StoredMessage;

    fn message(id: i64, content_len: usize) -> DeliveredMessage {
        let message = StoredMessage { id, content: "x".repeat(content_len), ..Default::default() };
        DeliveredMessage { message: Some(message), trace: Default::default() }
    }

    /// The room publications of `routed`: each payload's size and its message ids.
    fn room_publications(routed: RoutedDeliveries) -> Vec<(usize, Vec<i64>)> {
        routed
            .finish(&Subjects::new("chat"))
            .iter()
            .map(|(_, payload)| match chat_proto::decode::<RoomEvent>(payload).map(|e| e.event) {
                Ok(Some(room_event::Event::Messages(delivery))) => {
                    let ids = delivery.messages.iter().filter_map(|m| m.message.as_ref().map(|m| m.id)).collect();
                    (payload.len(), ids)
                }
                other => panic!("not the messages of a room: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn deliveries_stay_under_the_size_limit_and_keep_the_order() {
        let mut routed = RoutedDeliveries::default();
        for id in 1..=100 {
            routed.push_message(message(id, 10_000));
        }
        let published = room_publications(routed);
        assert!(published.len() >= 4, "1 MB of messages needs several deliveries, got {}", published.len());
        for (len, _) in &published {
            assert!(*len <= MAX_DELIVERY_BYTES, "a delivery of {len} bytes");
        }
        let ids: Vec<i64> = published.into_iter().flat_map(|(_, ids)| ids).collect();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_goes_to_the_rooms_of_its_conversations_and_the_gateways_of_its_senders() {
        let in_conversation = |id: i64, conversation_id: i64| {
            let mut delivered = message(id, 10);
            if let Some(m) = delivered.message.as_mut() {
                m.conversation_id = conversation_id;
            }
            delivered
        };
        let outcome = |request_id: &str, gateway_id: &str| SendOutcome {
            request_id: request_id.into(),
            gateway_id: gateway_id.into(),
            ..Default::default()
        };
        let mut routed = RoutedDeliveries::default();
        for (id, conversation_id) in [(1, 7), (2, 9), (3, 7)] {
            routed.push_message(in_conversation(id, conversation_id));
        }
        for (request_id, gateway_id) in [("r1", "gw-a"), ("r2", "gw-b"), ("r3", "gw-a")] {
            routed.push_outcome(outcome(request_id, gateway_id));
        }
        let published = routed.finish(&Subjects::new("chat"));
        let subjects: Vec<&str> = published.iter().map(|(subject, _)| subject.as_str()).collect();
        assert_eq!(subjects, ["chat.room.7", "chat.room.9", "chat.gw.gw-a", "chat.gw.gw-b"], "one each");

        let room_ids = |payload: &bytes::Bytes| match chat_proto::decode::<RoomEvent>(payload).map(|e| e.event) {
            Ok(Some(room_event::Event::Messages(delivery))) => {
                assert!(delivery.outcomes.is_empty(), "no outcomes on a room subject");
                delivery.messages.iter().filter_map(|m| m.message.as_ref().map(|m| m.id)).collect::<Vec<_>>()
            }
            other => panic!("not the messages of a room: {other:?}"),
        };
        assert_eq!(room_ids(&published[0].1), vec![1, 3], "conversation 7's messages, in order");
        assert_eq!(room_ids(&published[1].1), vec![2]);
        match chat_proto::decode::<GatewayEvent>(&published[2].1).map(|e| e.event) {
            Ok(Some(gateway_event::Event::Outcomes(delivery))) => {
                assert!(delivery.messages.is_empty());
                let requests: Vec<&str> = delivery.outcomes.iter().map(|o| o.request_id.as_str()).collect();
                assert_eq!(requests, ["r1", "r3"], "gateway a's outcomes only, in order");
            }
            other => panic!("not outcomes: {other:?}"),
        }
    }

    #[test]
    fn a_superseded_receipt_is_answered_with_its_position_and_announced_nowhere() {
        let mut routed = RoutedDeliveries::default();
        let receipt = MarkReceipt {
            request_id: "r1".into(),
            gateway_id: "gw-a".into(),
            conversation_id: 7,
            user_id: 3,
            message_id: 40,
            kind: ReceiptKind::Read as i32,
            ..Default::default()
        };
        routed.push_receipt(&receipt, ReceiptAnswer::Superseded(42));
        let published = routed.finish(&Subjects::new("chat"));
        let subjects: Vec<&str> = published.iter().map(|(subject, _)| subject.as_str()).collect();
        assert_eq!(subjects, ["chat.gw.gw-a"], "no room or user publication: nothing moved");
        match chat_proto::decode::<GatewayEvent>(&published[0].1).map(|e| e.event) {
            Ok(Some(gateway_event::Event::Outcomes(delivery))) => {
                let [outcome] = &delivery.receipt_outcomes[..] else { panic!("one outcome: {delivery:?}") };
                assert!(!outcome.moved);
                match &outcome.result {
                    Some(receipt_outcome::Result::Position(position)) => {
                        assert_eq!((position.conversation_id, position.user_id, position.message_id), (7, 3, 42));
                        assert_eq!(position.kind(), ReceiptKind::Read);
                    }
                    other => panic!("not a position: {other:?}"),
                }
            }
            other => panic!("not outcomes: {other:?}"),
        }
    }

    #[test]
    fn a_gateway_s_receipt_outcomes_ride_with_its_send_outcomes() {
        let mut routed = RoutedDeliveries::default();
        routed.push_outcome(SendOutcome { request_id: "s1".into(), gateway_id: "gw-a".into(), ..Default::default() });
        let receipt = |request_id: &str, gateway_id: &str| MarkReceipt {
            request_id: request_id.into(),
            gateway_id: gateway_id.into(),
            ..Default::default()
        };
        let refused = || ReceiptAnswer::Refused(QueryError::new(ErrorKind::Forbidden, "no"));
        routed.push_receipt(&receipt("r1", "gw-a"), refused());
        routed.push_receipt(&receipt("r2", "gw-b"), refused());
        let published = routed.finish(&Subjects::new("chat"));
        let by_subject: Vec<(&str, Vec<String>, Vec<String>)> = published
            .iter()
            .map(|(subject, payload)| match chat_proto::decode::<GatewayEvent>(payload).map(|e| e.event) {
                Ok(Some(gateway_event::Event::Outcomes(delivery))) => (
                    subject.as_str(),
                    delivery.outcomes.into_iter().map(|o| o.request_id).collect(),
                    delivery.receipt_outcomes.into_iter().map(|o| o.request_id).collect(),
                ),
                other => panic!("not outcomes: {other:?}"),
            })
            .collect();
        assert_eq!(
            by_subject,
            vec![
                ("chat.gw.gw-a", vec!["s1".to_owned()], vec!["r1".to_owned()]),
                ("chat.gw.gw-b", vec![], vec!["r2".to_owned()]),
            ]
        );
    }

    #[test]
    fn an_oversized_entry_goes_alone_and_nothing_empty_is_published() {
        assert!(RoutedDeliveries::default().finish(&Subjects::new("chat")).is_empty());
        let mut routed = RoutedDeliveries::default();
        for (id, len) in [(1, 10), (2, MAX_DELIVERY_BYTES + 1), (3, 10)] {
            routed.push_message(message(id, len));
        }
        let ids: Vec<Vec<i64>> = room_publications(routed).into_iter().map(|(_, ids)| ids).collect();
        assert_eq!(ids, vec![vec![1], vec![2], vec![3]]);
    }
}
