//! Sends and receipts on their way to the work queue, one lane per partition, batched (group
//! commit).
//!
//! The `send-message`, `mark-delivered` and `mark-read` handlers put each validated command in
//! its conversation's partition's lane,
//! synchronously, in the order the socket sent them. One task per lane takes whatever is
//! waiting (up to [`MAX_BATCH_COMMANDS`] commands, [`MAX_BATCH_BYTES`] bytes), publishes it as
//! one [`SendBatch`] on the partition's subject, waits until JetStream has stored it, and goes
//! on. So a partition has at most one batch of this gateway in flight, its commands stay in
//! the order they arrived (a conversation's sends always travel in one partition), and the
//! work queue's cost (store, hand out, acknowledge: the largest part of a message's cost) is
//! paid per batch: when idle a batch holds one command and adds no latency, under load it
//! holds what arrived while the previous batch was on its way.
//!
//! "On its way" lasts until the persister has answered the batch, not just until JetStream has
//! stored it: a lane waits for the outcome of its last command (or [`ANSWER_WAIT`]) before it
//! publishes the next batch. Without that, evenly spread load (each partition's sends a few
//! milliseconds apart) makes every batch one command, and a persister that falls behind finds
//! a backlog of one-command jobs that it takes one per partition at a time: its rate is then
//! bounded by jobs, not commands, and the queue never catches up. With it, a lane has at most
//! one unanswered batch in the queue, and batches grow with the persister's latency, so the
//! cost per command falls as the load rises.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chat_bus::Bus;
use chat_proto::{ChangeMember, ChangeMessage, MarkReceipt, SendBatch, SendMessage, Subjects};
use prost::Message as _;
use socketioxide::extract::AckSender;
use socketioxide::SocketIo;
use tokio::sync::mpsc;
use tracing::{Instrument, Span};

use crate::emit::{chat_socket, emit_message_error, refuse_member_change, refuse_message_change, refuse_receipt};
use crate::errors::ClientError;

/// Most commands in one batch: bounds the rows of the persister's insert statement.
pub const MAX_BATCH_COMMANDS: usize = 256;
/// Most bytes in one batch, well under NATS's default largest payload (1 MiB); a single
/// command of the longest content fits.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Longest wait for the answer to a lane's previous batch before the next goes anyway: an
/// answer lost on the way (a NATS disconnection) or a persister that is down must not stall
/// the lane; a persister slower than this gets batches as before.
pub const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A command waiting in its lane.
pub(crate) struct Queued {
    pub command: Outgoing,
    /// A receipt's or a membership change's acknowledgement: it waits in the in-flight cache
    /// (not in the lane) until the outcome comes back.
    pub ack: Option<AckSender>,
    /// The handler's span (`send-message`, `mark-read`, ...), root of the command's trace.
    pub span: Span,
    /// The sending socket's count of commands not yet on the bus, decremented once this one is.
    pub pending: Arc<AtomicUsize>,
}

/// What travels to the persister.
pub(crate) enum Outgoing {
    Send(SendMessage),
    Receipt(MarkReceipt),
    Member(ChangeMember),
    Message(ChangeMessage),
}

impl Outgoing {
    fn request_id(&self) -> &str {
        match self {
            Outgoing::Send(send) => &send.request_id,
            Outgoing::Receipt(receipt) => &receipt.request_id,
            Outgoing::Member(change) => &change.request_id,
            Outgoing::Message(change) => &change.request_id,
        }
    }

    fn conversation_id(&self) -> i64 {
        match self {
            Outgoing::Send(send) => send.conversation_id,
            Outgoing::Receipt(receipt) => receipt.conversation_id,
            Outgoing::Member(change) => change.conversation_id,
            Outgoing::Message(change) => change.conversation_id,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Outgoing::Send(send) => send.encoded_len(),
            Outgoing::Receipt(receipt) => receipt.encoded_len(),
            Outgoing::Member(change) => change.encoded_len(),
            Outgoing::Message(change) => change.encoded_len(),
        }
    }
}

/// What waits with a command for its outcome: a receipt's or a change's acknowledgement, and
/// the receipts held behind a send (see [`HeldReceipt`]). Shared by the in-flight entry and
/// taken once, by whoever answers the command.
#[derive(Default)]
struct Waiting {
    ack: Option<AckSender>,
    held: Vec<HeldReceipt>,
}

type SharedWaiting = Arc<std::sync::Mutex<Waiting>>;

fn lock_waiting(waiting: &SharedWaiting) -> std::sync::MutexGuard<'_, Waiting> {
    // Every update under this lock is a push or a take.
    waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take_waiting(waiting: Option<SharedWaiting>) -> Waiting {
    waiting.map(|waiting| std::mem::take(&mut *lock_waiting(&waiting))).unwrap_or_default()
}

/// A receipt that waits for the outcome of its socket's own newer send in the conversation
/// instead of making a trip of its own to the persister: a member's own stored message counts
/// as read (and delivered) by them, so once that send is stored with a larger id than the
/// marked message, the receipt moved nothing, and that id answers it. A send that fails, or
/// was stored before the marked message (its outcome still on its way when the receipt came),
/// lets the receipt go to the persister after all (`events::receipts`).
pub(crate) struct HeldReceipt {
    pub conversation_id: i64,
    pub message_id: i64,
    pub kind: chat_proto::ReceiptKind,
    pub user_id: i64,
    pub socket_id: String,
    pub ack: AckSender,
    pub span: Span,
    /// Its place among the socket's pending commands, taken while it waits.
    pub slot: PendingSlot,
}

/// A command's place in its socket's bound on pending commands, given back when dropped (a
/// held receipt answered, or dropped with an outcome that never came), or handed on with the
/// command to a lane, which gives it back once the command is on the bus.
pub(crate) struct PendingSlot(Option<Arc<AtomicUsize>>);

impl PendingSlot {
    /// A place the caller has taken already (`SocketState::reserve_pending`).
    pub(crate) fn taken(counter: Arc<AtomicUsize>) -> Self {
        Self(Some(counter))
    }

    /// The counter, for the lane to give the place back.
    pub(crate) fn hand_on(mut self) -> Arc<AtomicUsize> {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Some(counter) = self.0.take() {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What [`Outbox::answered`] knows of a command whose outcome came back.
pub(crate) struct Answered {
    /// When the client sent it.
    pub sent_at: Instant,
    /// A receipt's acknowledgement.
    pub ack: Option<AckSender>,
    /// The receipts held behind a send.
    pub held: Vec<HeldReceipt>,
}

/// The lanes, one per partition of the work queue, and the sends whose outcome has not come
/// back yet.
pub(crate) struct Outbox {
    subjects: Subjects,
    /// Each command with the instant it was queued.
    lanes: Vec<mpsc::UnboundedSender<(Instant, Queued)>>,
    answers: Vec<Arc<Answers>>,
    in_flight: Arc<InFlight>,
}

/// Commands queued or on the bus whose outcome has not come back yet (request id → when the
/// client sent it, its partition, and what waits for the outcome): for the send-to-ack
/// latency, the lanes' wait for answers, the acknowledgements and the drain at shutdown.
/// Bounded: an outcome lost on the way cannot make it grow for ever (what waited for it is
/// dropped unanswered, as the outcome was).
type InFlight = quick_cache::sync::Cache<String, (Instant, u32, Option<SharedWaiting>)>;

/// The answer a lane waits for: the outcome of the last command of its previous batch.
#[derive(Default)]
struct Answers {
    awaited: std::sync::Mutex<Option<String>>,
    arrived: tokio::sync::Notify,
}

impl Answers {
    fn await_answer_to(&self, request_id: &str) {
        *self.lock() = Some(request_id.to_owned());
    }

    fn forget(&self) {
        *self.lock() = None;
    }

    /// Waits until the awaited answer arrives, or `limit`; how long it waited, if an answer
    /// was awaited.
    async fn wait(&self, limit: std::time::Duration) -> Option<std::time::Duration> {
        // Registered before the check, so an answer between the two still wakes it.
        let arrived = self.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let mut waited = None;
        if self.lock().is_some() {
            let began = tokio::time::Instant::now();
            let _ = tokio::time::timeout(limit, arrived).await;
            waited = Some(began.elapsed());
        }
        self.forget();
        waited
    }

    fn answered(&self, request_id: &str) {
        let mut awaited = self.lock();
        if awaited.as_deref() == Some(request_id) {
            *awaited = None;
            self.arrived.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Every update under this lock is one assignment.
        self.awaited.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Outbox {
    /// The outbox, with one task per lane publishing to the work queue on `bus`; a sender
    /// whose send cannot be put on the bus is told through `io`.
    pub(crate) fn start(bus: Arc<dyn Bus>, subjects: Subjects, io: SocketIo) -> Self {
        let partitions = subjects.partitions().max(1);
        let in_flight = Arc::new(InFlight::new(100_000));
        let mut lanes = Vec::with_capacity(partitions as usize);
        let mut answers = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let (lane, queue) = mpsc::unbounded_channel();
            let answered = Arc::new(Answers::default());
            let publisher = Publisher {
                bus: bus.clone(),
                subject: subjects.inbound_partition(partition),
                io: io.clone(),
                in_flight: in_flight.clone(),
            };
            tokio::spawn(run_lane(publisher, queue, answered.clone()));
            lanes.push(lane);
            answers.push(answered);
        }
        Self { subjects, lanes, answers, in_flight }
    }

    /// Puts a command in its conversation's lane; never waits. (Each socket bounds what it has
    /// waiting, so the lanes need no bound of their own.)
    pub(crate) fn push(&self, mut queued: Queued) {
        let partition = self.subjects.partition_of(queued.command.conversation_id());
        let waiting =
            queued.ack.take().map(|ack| Arc::new(std::sync::Mutex::new(Waiting { ack: Some(ack), held: Vec::new() })));
        let now = Instant::now();
        self.in_flight.insert(queued.command.request_id().to_owned(), (now, partition, waiting));
        if let Some(lane) = self.lanes.get(partition as usize) {
            // The lane tasks live as long as the runtime: the send cannot fail.
            let _ = lane.send((now, queued));
        }
    }

    /// The outcome of a command came back: its lane may go on if it waited for it. When the
    /// client sent it, and what waited for the outcome, if it was still in flight.
    pub(crate) fn answered(&self, request_id: &str) -> Option<Answered> {
        let (_, (sent_at, partition, waiting)) = self.in_flight.remove(request_id)?;
        if let Some(answers) = self.answers.get(partition as usize) {
            answers.answered(request_id);
        }
        let Waiting { ack, held } = take_waiting(waiting);
        Some(Answered { sent_at, ack, held })
    }

    /// Holds `receipt` until the outcome of the send `send_request_id` if that send is still
    /// in flight; otherwise gives it back (`Some`). (Under the in-flight cache's lock for the
    /// entry, so an outcome arriving meanwhile either finds the receipt or came before.)
    pub(crate) fn hold_behind_send(&self, send_request_id: &str, receipt: HeldReceipt) -> Option<HeldReceipt> {
        let mut receipt = Some(receipt);
        let held = self.in_flight.entry(send_request_id, Some(std::time::Duration::ZERO), |_, (_, _, waiting)| {
            let waiting = waiting.get_or_insert_with(SharedWaiting::default);
            lock_waiting(waiting).held.extend(receipt.take());
            quick_cache::sync::EntryAction::Retain(())
        });
        drop(held); // an absent entry's placeholder goes with it
        receipt
    }

    /// Sends whose outcome has not come back yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// What a lane needs to put its batches on the work queue.
struct Publisher {
    bus: Arc<dyn Bus>,
    subject: String,
    io: SocketIo,
    in_flight: Arc<InFlight>,
}

async fn run_lane(publisher: Publisher, mut queue: mpsc::UnboundedReceiver<(Instant, Queued)>, answers: Arc<Answers>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH_COMMANDS);
    while queue.recv_many(&mut waiting, MAX_BATCH_COMMANDS).await > 0 {
        crate::metrics::outbox_waits(waiting.iter().map(|(queued_at, _)| *queued_at), Instant::now());
        let taken = waiting.drain(..).map(|(_, queued)| queued).collect();
        for batch in split_by_size(taken) {
            let parts = split_for_order(batch);
            let count = parts.len();
            for (index, part) in parts.into_iter().enumerate() {
                // A partition's jobs are stored in order, so the answer to the last command
                // comes after the others'.
                if let Some(last) = part.last() {
                    answers.await_answer_to(last.command.request_id());
                }
                if !publisher.publish(part).await {
                    answers.forget(); // no answer will come
                }
                if index + 1 < count {
                    // The next part must not be stored with this one (see `split_for_order`).
                    wait_for_outcome(&answers).await;
                }
            }
        }
        wait_for_outcome(&answers).await;
    }
}

/// A lane's wait for the outcome of its last command, timed.
async fn wait_for_outcome(answers: &Answers) {
    if let Some(waited) = answers.wait(ANSWER_WAIT).await {
        crate::metrics::outcome_waited(waited);
    }
}

/// Splits commands into batches of at most [`MAX_BATCH_BYTES`] (a larger command goes alone),
/// keeping the order.
fn split_by_size(commands: Vec<Queued>) -> Vec<Vec<Queued>> {
    // Each command's trace context is added later: about 100 bytes.
    chat_proto::split_by_size(commands, MAX_BATCH_BYTES, |queued| queued.command.encoded_len() + TRACE_CONTEXT_BYTES)
}

/// Splits a batch where a send follows a membership change or a message's change, keeping
/// the order. The persister stores a batch's sends before its changes; a change the client
/// made before a send must therefore reach it in an earlier batch, which the lane publishes
/// only once the persister has answered the previous part (or after [`ANSWER_WAIT`]).
fn split_for_order(commands: Vec<Queued>) -> Vec<Vec<Queued>> {
    let mut parts: Vec<Vec<Queued>> = Vec::new();
    for queued in commands {
        let after_a_change = parts
            .last()
            .and_then(|part| part.last())
            .is_some_and(|previous| matches!(previous.command, Outgoing::Member(_) | Outgoing::Message(_)));
        match parts.last_mut() {
            Some(part) if !(after_a_change && matches!(queued.command, Outgoing::Send(_))) => part.push(queued),
            _ => parts.push(vec![queued]),
        }
    }
    parts
}

/// How a command that could not be put on the bus is answered: a send with `message-error`,
/// a receipt or a membership change with a failed acknowledgement echoing its ids.
enum Answer {
    Send,
    Receipt(i64, i64),
    Member(i64, i64),
    Message(i64, i64),
}

/// Room kept per command for the trace context it gets when it leaves the outbox.
const TRACE_CONTEXT_BYTES: usize = 117;

/// Publishes one batch and waits until the work queue has stored it; on failure each sender
/// gets `message-error`, each receipt a failed acknowledgement and `error`. Whether it was
/// stored.
impl Publisher {
    async fn publish(&self, queued: Vec<Queued>) -> bool {
        let subject = self.subject.as_str();
        // Each command's `enqueue` span, a child of its handler's span, lasts the publication;
        // its context travels in the command, so the persister's span of it becomes its child.
        let mut enqueue_spans = Vec::with_capacity(queued.len());
        let mut senders = Vec::with_capacity(queued.len());
        let mut batch = SendBatch::default();
        for Queued { command, span, pending, .. } in queued {
            let enqueue = tracing::info_span!(
                parent: &span,
                "enqueue",
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.destination.name = %subject,
            );
            let trace = chat_telemetry::inject_context(&enqueue).into_iter().collect();
            enqueue_spans.push(enqueue);
            let sender = match command {
                Outgoing::Send(mut send) => {
                    send.trace = trace;
                    let sender = (send.request_id.clone(), send.socket_id.clone(), Answer::Send);
                    batch.commands.push(send);
                    sender
                }
                Outgoing::Receipt(mut receipt) => {
                    receipt.trace = trace;
                    let answer = Answer::Receipt(receipt.conversation_id, receipt.message_id);
                    let sender = (receipt.request_id.clone(), receipt.socket_id.clone(), answer);
                    batch.receipts.push(receipt);
                    sender
                }
                Outgoing::Member(mut change) => {
                    change.trace = trace;
                    let answer = Answer::Member(change.conversation_id, change.user_id);
                    let sender = (change.request_id.clone(), change.socket_id.clone(), answer);
                    batch.member_changes.push(change);
                    sender
                }
                Outgoing::Message(mut change) => {
                    change.trace = trace;
                    let answer = Answer::Message(change.conversation_id, change.message_id);
                    let sender = (change.request_id.clone(), change.socket_id.clone(), answer);
                    batch.message_changes.push(change);
                    sender
                }
            };
            senders.push((sender, span, pending));
        }
        // Deduplicated by the first command's request id, unique to this attempt: a client's retry
        // must reach the persister, which answers it with the message stored the first time.
        let dedup_id = senders.first().map_or(String::new(), |((request_id, _, _), _, _)| request_id.clone());
        let publishing = enqueue_spans.first().cloned().unwrap_or_else(Span::none);
        let began = Instant::now();
        let enqueued = self.bus.enqueue(subject, &dedup_id, chat_proto::encode(&batch)).instrument(publishing).await;
        if enqueued.is_ok() {
            crate::metrics::enqueued(began.elapsed());
        }
        drop(enqueue_spans);
        for ((request_id, socket_id, answer), span, pending) in senders {
            pending.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = &enqueued {
                let _entered = span.enter();
                tracing::error!(error = %e, "putting a command on the bus failed");
                let Waiting { ack, held } =
                    take_waiting(self.in_flight.remove(&request_id).and_then(|(_, (_, _, waiting))| waiting));
                for receipt in held {
                    let echo = (receipt.conversation_id.into(), receipt.message_id.into());
                    let socket = receipt.socket_id.parse().ok().and_then(|sid| chat_socket(&self.io, sid));
                    refuse_receipt(socket.as_ref(), Some(receipt.ack), echo, &ClientError::ReceiptFailed);
                }
                let socket = socket_id.parse().ok().and_then(|sid| chat_socket(&self.io, sid));
                match (answer, socket) {
                    (Answer::Send, Some(socket)) => emit_message_error(&socket, &ClientError::SendFailed),
                    (Answer::Send, None) => {}
                    (Answer::Receipt(conversation_id, message_id), socket) => {
                        let echo = (conversation_id.into(), message_id.into());
                        refuse_receipt(socket.as_ref(), ack, echo, &ClientError::ReceiptFailed);
                    }
                    (Answer::Member(conversation_id, user_id), socket) => {
                        let echo = (conversation_id.into(), user_id.into());
                        refuse_member_change(socket.as_ref(), ack, echo, &ClientError::MemberChangeFailed);
                    }
                    (Answer::Message(conversation_id, message_id), socket) => {
                        let echo = (conversation_id.into(), message_id.into());
                        refuse_message_change(socket.as_ref(), ack, echo, &ClientError::MessageChangeFailed);
                    }
                }
            }
        }
        enqueued.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(content_len: usize) -> Queued {
        let command = SendMessage { request_id: "r".into(), content: "x".repeat(content_len), ..Default::default() };
        Queued { command: Outgoing::Send(command), ack: None, span: Span::none(), pending: Arc::default() }
    }

    fn sent(command: &Outgoing) -> Option<SendMessage> {
        match command {
            Outgoing::Send(send) => Some(send.clone()),
            Outgoing::Receipt(_) | Outgoing::Member(_) | Outgoing::Message(_) => None,
        }
    }

    #[test]
    fn batches_stay_under_the_size_limit_in_order() {
        let commands: Vec<Queued> = (0..100).map(|i| queued(10_000 + i)).collect();
        let batches = split_by_size(commands);
        assert!(batches.len() >= 4, "1 MB of commands needs several batches, got {}", batches.len());
        for batch in &batches {
            let commands: Vec<SendMessage> = batch.iter().filter_map(|q| sent(&q.command)).collect();
            let len = chat_proto::encode(&SendBatch { commands, ..Default::default() }).len();
            assert!(len <= MAX_BATCH_BYTES, "a batch of {len} bytes");
        }
        let lengths: Vec<usize> =
            batches.iter().flatten().filter_map(|q| sent(&q.command)).map(|c| c.content.len()).collect();
        assert_eq!(lengths, (0..100).map(|i| 10_000 + i).collect::<Vec<_>>(), "order kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_waits_for_the_answer_to_its_last_command_or_the_limit() {
        let limit = std::time::Duration::from_secs(1);
        let answers = Arc::new(Answers::default());

        // The answer came before the wait: no wait at all.
        answers.await_answer_to("r1");
        answers.answered("r1");
        let started = tokio::time::Instant::now();
        assert_eq!(answers.wait(limit).await, None, "nothing awaited, nothing timed");
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);

        // The answer comes during the wait; another request's answer does not count.
        answers.await_answer_to("r2");
        let answering = answers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            answering.answered("r1");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            answering.answered("r2");
        });
        let started = tokio::time::Instant::now();
        assert_eq!(answers.wait(limit).await, Some(std::time::Duration::from_millis(20)), "the wait, timed");
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(20));

        // No answer: the lane goes on after the limit, and forgets what it waited for.
        answers.await_answer_to("r3");
        let started = tokio::time::Instant::now();
        assert_eq!(answers.wait(limit).await, Some(limit), "a wait cut short by the limit counts the limit");
        assert_eq!(started.elapsed(), limit);
        answers.answered("r3"); // late: nobody waits, and nothing is kept for the next wait
        answers.await_answer_to("r4");
        let started = tokio::time::Instant::now();
        answers.wait(limit).await;
        assert_eq!(started.elapsed(), limit, "the late answer did not release the next wait");
    }

    #[test]
    fn a_send_after_a_change_goes_in_the_next_part() {
        let of = |command: Outgoing| Queued { command, ack: None, span: Span::none(), pending: Arc::default() };
        let send = || of(Outgoing::Send(SendMessage::default()));
        let edit = || of(Outgoing::Message(ChangeMessage::default()));
        let receipt = || of(Outgoing::Receipt(MarkReceipt::default()));
        let kinds = |parts: Vec<Vec<Queued>>| -> Vec<Vec<&'static str>> {
            parts
                .iter()
                .map(|part| {
                    part.iter()
                        .map(|q| match q.command {
                            Outgoing::Send(_) => "send",
                            Outgoing::Message(_) => "edit",
                            Outgoing::Receipt(_) => "receipt",
                            Outgoing::Member(_) => "member",
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(
            kinds(split_for_order(vec![send(), edit(), edit(), send(), receipt(), send()])),
            vec![vec!["send", "edit", "edit"], vec!["send", "receipt", "send"]],
            "stored sends first, then changes: each part keeps the client's order"
        );
        assert_eq!(kinds(split_for_order(vec![send(), receipt(), send()])).len(), 1, "receipts only move forward");
        assert!(split_for_order(Vec::new()).is_empty());
    }

    #[test]
    fn an_oversized_command_goes_alone() {
        let batches = split_by_size(vec![queued(10), queued(MAX_BATCH_BYTES), queued(10)]);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(split_by_size(Vec::new()).is_empty());
    }
}
