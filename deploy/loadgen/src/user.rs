//! One simulated user: a socket on one gateway, joined to the conversation it shares with its
//! partner, sending stamped messages and checking what its partner sends.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::check::{Arrival, Inbox, SeqSet, Stamp};
use crate::metrics::Metrics;
use crate::receipt::Marker;
use crate::sio::{self, Endpoint, Inbound};

/// Most packets a user writes before it flushes them, even while more frames are ready to read:
/// a bound on how long a packet waits behind the frames read before it.
const UNFLUSHED_MAX: usize = 16;

/// Who a user is and where it connects.
#[derive(Debug, Clone)]
pub struct Plan {
    pub index: usize,
    pub user_id: u64,
    pub partner: usize,
    pub partner_id: u64,
    pub conversation: u64,
    pub endpoint: Arc<Endpoint>,
    pub bind: Option<IpAddr>,
}

/// How a user sends.
#[derive(Debug)]
pub enum Load {
    /// Connected and joined; sends nothing.
    Idle,
    /// Open loop: the crowd's scheduler (`schedule::dispatch`) hands over each send when it is
    /// due, as its scheduled time; the user sends it at once, stamped with that time, so any
    /// delay counts as latency. With `max_in_flight`, a send due while that many are
    /// unanswered waits for the next answer (counted as a cap hit, and late, which the
    /// latency shows); without, nothing holds a send back.
    Scheduled { due: mpsc::UnboundedReceiver<Instant>, max_in_flight: Option<u32> },
    /// Closed loop: `window` sends unanswered at all times.
    Closed { window: u32 },
}

/// What the run asks of every user, through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Setup,
    Run { start: Instant, stop_sending: Instant },
    Stop,
}

/// Settings shared by every user of a run.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub run: u64,
    pub setup_timeout: Duration,
    /// Bounds the connections being opened at once.
    pub connecting: Semaphore,
    /// `--mark-read`: every user marks each message of its partner read as it arrives.
    pub mark_read: bool,
}

/// What one user saw, for the delivery check at the end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub index: usize,
    pub partner: usize,
    pub connected: bool,
    pub sent: u64,
    pub acked: SeqSet,
    pub inbox: Inbox,
}

/// The fields of a stored message that the checks need.
#[derive(Deserialize)]
struct StoredMessage<'a> {
    id: i64,
    sender_id: u64,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

/// What the session loop has to do after a frame.
enum Reply {
    Nothing,
    Pong,
    /// A send was answered (`message-sent` or `message-error`).
    Answered,
    /// A packet to send now (a receipt).
    Send(String),
    Closed,
}

pub async fn run(
    plan: Plan,
    load: Load,
    shared: Arc<Shared>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    phase: watch::Receiver<Phase>,
) -> Outcome {
    let marker = shared.mark_read.then(|| Marker::new(plan.conversation, plan.user_id, plan.partner_id));
    let mut user = User {
        outcome: Outcome { index: plan.index, partner: plan.partner, ..Outcome::default() },
        content: String::new(),
        metrics: Arc::clone(&shared.metrics),
        run: shared.run,
        marker,
        plan,
    };
    let opened = {
        let _permit = shared.connecting.acquire().await;
        user.open(shared.setup_timeout).await
    };
    let ws = match opened {
        Ok(ws) => ws,
        Err(e) => {
            let _ = ready.send(Err(format!("user {}: {e}", user.plan.user_id)));
            return user.outcome;
        }
    };
    user.outcome.connected = true;
    let _ = ready.send(Ok(()));
    user.session(ws, load, phase).await;
    user.outcome
}

/// The next send the crowd's scheduler hands over (`None` once it is done); for loads it does
/// not drive, never.
async fn next_due(load: &mut Load) -> Option<Instant> {
    match load {
        Load::Scheduled { due, .. } => due.recv().await,
        Load::Idle | Load::Closed { .. } => std::future::pending().await,
    }
}

struct User {
    plan: Plan,
    run: u64,
    metrics: Arc<Metrics>,
    outcome: Outcome,
    /// Reused buffer for the stamp of the next message.
    content: String,
    /// `--mark-read`: the user's receipts.
    marker: Option<Marker>,
}

impl User {
    async fn open(&self, limit: Duration) -> Result<sio::Ws, sio::SioError> {
        let mut ws = sio::connect(&self.plan.endpoint, self.plan.user_id, self.plan.bind, limit).await?;
        sio::join(&mut ws, self.plan.conversation, self.plan.user_id, limit).await?;
        Ok(ws)
    }

    async fn session(&mut self, ws: sio::Ws, mut load: Load, mut phase: watch::Receiver<Phase>) {
        let (mut tx, mut rx) = ws.split();
        // Closed loop: whether answered sends are replaced, and until when.
        let mut sending = false;
        let mut stop_sending = Instant::now();
        let mut in_flight: u32 = 0;
        let max_in_flight = match load {
            Load::Scheduled { max_in_flight, .. } => max_in_flight,
            Load::Idle | Load::Closed { .. } => None,
        };
        // Open loop with a cap: the send that came due while `max_in_flight` were unanswered;
        // it goes out with the next answer. The queue is not read meanwhile, so later sends
        // wait there, each in turn.
        let mut waiting: Option<Instant> = None;
        // Open loop: false once the scheduler has handed over its last send.
        let mut scheduled = matches!(load, Load::Scheduled { .. });
        // Packets written but not yet flushed to the socket (see the flush branch).
        let mut unflushed = 0;
        loop {
            let take_due = scheduled && waiting.is_none();
            let outgoing = tokio::select! {
                // Frames already read come first, and the packets they call for are flushed
                // together once no more is ready (or past UNFLUSHED_MAX): one write system call
                // for what answers one read, where a flush per packet made a write each. The
                // servers see the same packets, sooner or later by microseconds.
                biased;
                frame = rx.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => {
                            self.metrics.error(format!("user {}: the server closed the connection", self.plan.user_id));
                            return;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            self.metrics.error(format!("user {}: {e}", self.plan.user_id));
                            return;
                        }
                    };
                    match self.handle(&text) {
                        Reply::Nothing => None,
                        Reply::Pong => Some(sio::PONG.to_owned()),
                        Reply::Send(packet) => Some(packet),
                        Reply::Closed => return,
                        Reply::Answered => {
                            in_flight = in_flight.saturating_sub(1);
                            match load {
                                Load::Scheduled { .. } => waiting.take().map(|due| {
                                    in_flight += 1;
                                    self.next_message(self.metrics.ns(due))
                                }),
                                Load::Closed { .. } if sending && Instant::now() < stop_sending => {
                                    in_flight += 1;
                                    Some(self.next_message(self.metrics.now_ns()))
                                }
                                Load::Idle | Load::Closed { .. } => None,
                            }
                        }
                    }
                }
                due = next_due(&mut load), if take_due => match due {
                    None => {
                        scheduled = false;
                        None
                    }
                    Some(due) if max_in_flight.is_some_and(|max| in_flight >= max) => {
                        self.metrics.cap_hits.add(1);
                        waiting = Some(due);
                        None
                    }
                    Some(due) => {
                        in_flight += 1;
                        Some(self.next_message(self.metrics.ns(due)))
                    }
                },
                flushed = tx.flush(), if unflushed > 0 => {
                    unflushed = 0;
                    if let Err(e) = flushed {
                        self.metrics.error(format!("user {}: {e}", self.plan.user_id));
                        return;
                    }
                    None
                }
                changed = phase.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = *phase.borrow_and_update();
                    match current {
                        Phase::Setup => None,
                        Phase::Stop => return,
                        Phase::Run { start, stop_sending: until } => match load {
                            // The scheduler decides when these send.
                            Load::Idle | Load::Scheduled { .. } => None,
                            Load::Closed { window } => {
                                stop_sending = until;
                                sending = true;
                                tokio::time::sleep_until(start).await;
                                let mut burst = Vec::new();
                                for _ in 0..window {
                                    burst.push(Message::text(self.next_message(self.metrics.now_ns())));
                                }
                                in_flight = window;
                                let mut burst = futures::stream::iter(burst.into_iter().map(Ok));
                                if let Err(e) = tx.send_all(&mut burst).await {
                                    self.metrics.error(format!("user {}: {e}", self.plan.user_id));
                                    return;
                                }
                                unflushed = 0; // `send_all` flushed them too
                                None
                            }
                        },
                    }
                }
            };
            if let Some(text) = outgoing {
                unflushed += 1;
                let written = if unflushed >= UNFLUSHED_MAX {
                    unflushed = 0;
                    tx.send(Message::text(text)).await
                } else {
                    tx.feed(Message::text(text)).await
                };
                if let Err(e) = written {
                    self.metrics.error(format!("user {}: {e}", self.plan.user_id));
                    return;
                }
            }
        }
    }

    /// The `send-message` packet of the next message, stamped `at_ns`.
    fn next_message(&mut self, at_ns: u64) -> String {
        let stamp = Stamp { run: self.run, sender: self.plan.index, seq: self.outcome.sent, at_ns };
        stamp.encode(&mut self.content);
        self.outcome.sent += 1;
        self.metrics.sent.add(1);
        let payload = format!(
            "{{\"sender_id\":{},\"conversation_id\":{},\"message_type\":\"text\",\"content\":\"{}\"}}",
            self.plan.user_id, self.plan.conversation, self.content
        );
        sio::event("send-message", &payload, None)
    }

    fn handle(&mut self, text: &str) -> Reply {
        let frame = sio::parse(text);
        // Pings keep coming while connections idle; only other traffic says they have not settled.
        if frame != Inbound::Ping {
            self.metrics.frames.add(1);
        }
        match frame {
            Inbound::Ping => Reply::Pong,
            Inbound::Disconnected => {
                self.metrics.error(format!("user {}: disconnected by the server", self.plan.user_id));
                Reply::Closed
            }
            Inbound::Event { name: "message-sent", payload } => match self.stamp_of(payload, "message-sent") {
                Some((stamp, _)) if stamp.sender == self.plan.index => {
                    if self.outcome.acked.insert(stamp.seq) {
                        self.metrics.record_ack(stamp.at_ns, self.metrics.now_ns());
                    } else {
                        self.metrics.error(format!("user {}: message-sent twice for {}", self.plan.user_id, stamp.seq));
                    }
                    Reply::Answered
                }
                Some(_) => {
                    self.metrics.error(format!("user {}: message-sent for its partner's message", self.plan.user_id));
                    Reply::Nothing
                }
                None => Reply::Nothing,
            },
            Inbound::Event { name: "receive-message", payload } => {
                if let Some((stamp, id)) = self.stamp_of(payload, "receive-message") {
                    if stamp.sender == self.plan.partner
                        && self.outcome.inbox.record(stamp.seq, id) != Arrival::Duplicate
                    {
                        let now = self.metrics.now_ns();
                        self.metrics.record_delivery(stamp.at_ns, now);
                        // As a client showing the conversation: each new message of the
                        // partner is marked read as soon as it is shown.
                        if let Some(marker) = &mut self.marker {
                            return Reply::Send(marker.mark(id, now, &self.metrics));
                        }
                    }
                }
                Reply::Nothing
            }
            Inbound::Ack { id, args } => {
                match &mut self.marker {
                    Some(marker) => marker.answer(id, args, self.metrics.now_ns(), &self.metrics),
                    None => self.metrics.error(format!("user {}: an ack nothing asked for", self.plan.user_id)),
                }
                Reply::Nothing
            }
            Inbound::Event { name: "message-read", payload } => {
                if let Some(marker) = &mut self.marker {
                    marker.announcement(payload, &self.metrics);
                }
                Reply::Nothing
            }
            // Reading implies delivered, announced as `message-read` alone.
            Inbound::Event { name: "message-delivered", .. } => {
                self.metrics.receipts.delivered_events.add(1);
                Reply::Nothing
            }
            Inbound::Event { name: "message-error", payload } => {
                self.metrics.message_error(format!("user {}: message-error {}", self.plan.user_id, payload));
                Reply::Answered
            }
            Inbound::Event { name: "error", payload } => {
                self.metrics.error(format!("user {}: error {}", self.plan.user_id, payload));
                Reply::Nothing
            }
            _ => Reply::Nothing,
        }
    }

    /// The stamp and id of a stored message of this run (own echoes included); `None`, counted
    /// as foreign, for anything else.
    fn stamp_of(&self, payload: &str, event: &str) -> Option<(Stamp, i64)> {
        let found = serde_json::from_str::<StoredMessage>(payload)
            .ok()
            .and_then(|m| Stamp::decode(&m.content).map(|s| (s, m.id, m.sender_id)));
        match found {
            Some((stamp, id, sender_id)) if stamp.run == self.run => {
                let from_me = stamp.sender == self.plan.index && sender_id == self.plan.user_id;
                let from_partner = stamp.sender == self.plan.partner && sender_id == self.plan.partner_id;
                if from_me || from_partner {
                    Some((stamp, id))
                } else {
                    let user = self.plan.user_id;
                    self.metrics.error(format!("user {user}: {event} from sender {sender_id} of another conversation"));
                    None
                }
            }
            _ => {
                self.metrics.foreign.add(1);
                None
            }
        }
    }
}
