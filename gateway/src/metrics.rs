//! The gateway's metrics: their names (the contract with the dashboards) and how they are
//! recorded. Labels come from fixed sets, so the number of series stays bounded.
//!
//! The series recorded per event or per message are registered once, in [`describe`], and
//! recorded through the handles kept in [`Hot`]: `metrics::counter!` looks its key up in the
//! recorder's registry (a hash of the name and labels) on every call: 4.6 % of the gateway's
//! profile in a closed loop with receipts before they were kept.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

use crate::wire::event;

pub const CONNECTIONS: &str = "chat_gateway_connections";
pub const ROOMS: &str = "chat_gateway_rooms";
pub const EVENTS_IN: &str = "chat_gateway_events_in_total";
pub const EVENTS_OUT: &str = "chat_gateway_events_out_total";
pub const ERRORS: &str = "chat_gateway_errors_total";
pub const SEND_ACK_SECONDS: &str = "chat_gateway_send_ack_seconds";
pub const RECEIPT_ACK_SECONDS: &str = "chat_gateway_receipt_ack_seconds";
pub const OUTBOX_WAIT_SECONDS: &str = "chat_gateway_outbox_wait_seconds";
pub const ENQUEUE_SECONDS: &str = "chat_gateway_enqueue_seconds";
pub const OUTCOME_WAIT_SECONDS: &str = "chat_gateway_outcome_wait_seconds";
pub const RECEIPTS_SUPERSEDED: &str = "chat_gateway_receipts_superseded_total";
/// Receipts answered by the outcome of their socket's own newer send (see `events::receipts`).
pub const RECEIPTS_HELD: &str = "chat_gateway_receipts_held_total";
/// HTTP requests answered, by `route` (the matched route template, never the raw path),
/// `method` and `status` (the code).
pub const HTTP_REQUESTS: &str = "chat_http_requests_total";
/// How long HTTP requests took until their response's head, by `route` and `method`. Not
/// observed for the Socket.IO transport (a long-poll lasts as long as it waits).
pub const HTTP_REQUEST_SECONDS: &str = "chat_http_request_duration_seconds";

/// Client events counted by name; any other is counted as `other`.
pub const EVENTS_IN_NAMES: [&str; 14] = [
    event::SEND_MESSAGE,
    event::JOIN_CONVERSATION,
    event::LEAVE_CONVERSATION,
    event::TYPING,
    event::MARK_DELIVERED,
    event::MARK_READ,
    event::ADD_MEMBER,
    event::REMOVE_MEMBER,
    event::LEAVE_GROUP,
    event::SET_ROLE,
    event::EDIT_MESSAGE,
    event::DELETE_MESSAGE,
    event::REACT,
    "other",
];
/// Events sent to clients.
pub const EVENTS_OUT_NAMES: [&str; 18] = [
    event::RECEIVE_MESSAGE,
    event::MESSAGE_UPDATED,
    event::MESSAGE_DELETED,
    event::REACTION_UPDATED,
    event::MEMBER_ADDED,
    event::MEMBER_REMOVED,
    event::ROLE_CHANGED,
    event::MESSAGE_DELIVERED,
    event::MESSAGE_READ,
    event::MESSAGE_SENT,
    event::MESSAGE_ERROR,
    event::USER_TYPING,
    event::USER_ONLINE,
    event::USER_OFFLINE,
    event::JOINED_CONVERSATION,
    event::ERROR,
    event::SERVER_SHUTDOWN,
    "other",
];

/// The kinds of failure the error metric counts (see `errors::ClientError::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A payload that breaks the rules (missing field, bad type, too long, unknown event).
    Validation,
    /// Not authenticated, or not allowed (another user's id, another's conversation).
    Unauthorized,
    RateLimited,
    /// An unknown conversation.
    NotFound,
    /// The persister could not store or read (its answer was an error, or none came).
    Storage,
    /// The bus refused or lost a command.
    Bus,
    /// Resource limits of a connection (rooms per socket, queued sends, slow reader).
    Limit,
}

impl Failure {
    pub const ALL: [Failure; 7] = [
        Failure::Validation,
        Failure::Unauthorized,
        Failure::RateLimited,
        Failure::NotFound,
        Failure::Storage,
        Failure::Bus,
        Failure::Limit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Validation => "validation",
            Failure::Unauthorized => "unauthorized",
            Failure::RateLimited => "rate_limited",
            Failure::NotFound => "not_found",
            Failure::Storage => "storage",
            Failure::Bus => "bus",
            Failure::Limit => "limit",
        }
    }
}

/// Describes the gateway's metrics and shows each series at zero before any traffic.
pub fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "Socket.IO connections open on this gateway");
    metrics::describe_gauge!(ROOMS, "Conversation rooms with at least one member on this gateway");
    metrics::describe_counter!(EVENTS_IN, "Events received from clients, by event");
    metrics::describe_counter!(EVENTS_OUT, "Events sent to clients, by event (one per socket reached)");
    metrics::describe_counter!(ERRORS, "Errors answered to clients, by kind");
    metrics::describe_histogram!(
        SEND_ACK_SECONDS,
        metrics::Unit::Seconds,
        "From a send-message received to its message-sent emitted"
    );
    metrics::describe_histogram!(
        RECEIPT_ACK_SECONDS,
        metrics::Unit::Seconds,
        "From a mark-delivered or mark-read received to its acknowledgement"
    );
    metrics::describe_histogram!(
        OUTBOX_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "A command's wait in its outbox lane, from its event received to its lane taking it"
    );
    metrics::describe_histogram!(
        ENQUEUE_SECONDS,
        metrics::Unit::Seconds,
        "A lane's batch put on the work queue: from its publication to the queue's acknowledgement"
    );
    metrics::describe_histogram!(
        OUTCOME_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "From a lane's batch stored by the work queue to the outcome of its last command (at most the lane's wait limit)"
    );
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template, method and status");
    metrics::describe_histogram!(
        HTTP_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "From an HTTP request received to its response's head, by route template and method"
    );
    metrics::describe_counter!(
        RECEIPTS_SUPERSEDED,
        "Receipts answered by the gateway without the persister: at or below the member's known position"
    );
    metrics::describe_counter!(
        RECEIPTS_HELD,
        "Receipts answered by the gateway without the persister: by the outcome of their socket's own newer send"
    );
    metrics::gauge!(CONNECTIONS).set(0.0);
    metrics::gauge!(ROOMS).set(0.0);
    // Registering the hot series shows each at zero, and each histogram's buckets empty,
    // before the first observation.
    let hot = hot();
    for counter in hot.events_in.iter().chain(&hot.events_out) {
        counter.absolute(0);
    }
    hot.receipts_superseded.absolute(0);
    hot.receipts_held.absolute(0);
    for kind in Failure::ALL {
        metrics::counter!(ERRORS, "kind" => kind.label()).absolute(0);
    }
}

/// Handles of the series recorded per event or per message, in the recorder installed when
/// they were first asked for. [`describe`] asks first, right after the process installs its
/// recorder; where none is installed (unit tests), the handles record nothing, as the macros
/// would. A handle stays valid as long as its series: the recorder is built without an idle
/// timeout, so series are never dropped.
struct Hot {
    /// By the index of their label in [`EVENTS_IN_NAMES`].
    events_in: [Counter; EVENTS_IN_NAMES.len()],
    /// By the index of their label in [`EVENTS_OUT_NAMES`].
    events_out: [Counter; EVENTS_OUT_NAMES.len()],
    send_ack: Histogram,
    receipt_ack: Histogram,
    outbox_wait: Histogram,
    enqueue: Histogram,
    outcome_wait: Histogram,
    receipts_superseded: Counter,
    receipts_held: Counter,
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| Hot {
        events_in: EVENTS_IN_NAMES.map(|event| metrics::counter!(EVENTS_IN, "event" => event)),
        events_out: EVENTS_OUT_NAMES.map(|event| metrics::counter!(EVENTS_OUT, "event" => event)),
        send_ack: metrics::histogram!(SEND_ACK_SECONDS),
        receipt_ack: metrics::histogram!(RECEIPT_ACK_SECONDS),
        outbox_wait: metrics::histogram!(OUTBOX_WAIT_SECONDS),
        enqueue: metrics::histogram!(ENQUEUE_SECONDS),
        outcome_wait: metrics::histogram!(OUTCOME_WAIT_SECONDS),
        receipts_superseded: metrics::counter!(RECEIPTS_SUPERSEDED),
        receipts_held: metrics::counter!(RECEIPTS_HELD),
    })
}

/// The index of `name` in `names`, else that of `other` (the last).
fn label_index(names: &[&str], name: &str) -> usize {
    names.iter().position(|known| *known == name).unwrap_or(names.len() - 1)
}

pub(crate) fn event_in(event: &str) {
    hot().events_in[label_index(&EVENTS_IN_NAMES, event)].increment(1);
}

pub(crate) fn events_out(event: &str, sockets: u64) {
    hot().events_out[label_index(&EVENTS_OUT_NAMES, event)].increment(sockets);
}

pub(crate) fn error(kind: Failure) {
    metrics::counter!(ERRORS, "kind" => kind.label()).increment(1);
}

pub(crate) fn send_acknowledged(elapsed: Duration) {
    hot().send_ack.record(elapsed.as_secs_f64());
}

pub(crate) fn receipt_acknowledged(elapsed: Duration) {
    hot().receipt_ack.record(elapsed.as_secs_f64());
}

/// The lane waits of the commands a lane took at `taken`, each queued at its instant.
pub(crate) fn outbox_waits(queued_at: impl Iterator<Item = Instant>, taken: Instant) {
    let histogram = &hot().outbox_wait;
    for at in queued_at {
        histogram.record(taken.saturating_duration_since(at).as_secs_f64());
    }
}

pub(crate) fn enqueued(elapsed: Duration) {
    hot().enqueue.record(elapsed.as_secs_f64());
}

pub(crate) fn outcome_waited(elapsed: Duration) {
    hot().outcome_wait.record(elapsed.as_secs_f64());
}

pub(crate) fn receipt_answered_locally() {
    hot().receipts_superseded.increment(1);
}

pub(crate) fn receipt_held() {
    hot().receipts_held.increment(1);
}

/// One HTTP request answered; `elapsed` is `None` where its duration says nothing (the
/// Socket.IO transport). Labels: see [`HTTP_REQUESTS`]; the caller bounds `route`.
pub(crate) fn http_request(route: &str, method: &'static str, status: u16, elapsed: Option<Duration>) {
    let route = route.to_owned();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status.to_string())
        .increment(1);
    if let Some(elapsed) = elapsed {
        metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => route, "method" => method).record(elapsed.as_secs_f64());
    }
}

/// Shows a route's series at zero before its first request: the latency histogram, and the
/// counter of each status it answers on success (other statuses appear as they happen).
pub(crate) fn http_route_known(route: &str, method: &'static str, success_statuses: &[u16]) {
    let _ = metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => route.to_owned(), "method" => method);
    for status in success_statuses {
        metrics::counter!(HTTP_REQUESTS, "route" => route.to_owned(), "method" => method, "status" => status.to_string())
            .absolute(0);
    }
}

pub(crate) fn set_rooms(rooms: usize) {
    metrics::gauge!(ROOMS).set(rooms as f64);
}

/// Counts a connection open from creation to drop: held by the socket's state, so every way a
/// socket goes away (disconnect, server close) takes it off the gauge.
pub(crate) struct OpenConnection;

impl OpenConnection {
    pub(crate) fn new() -> Self {
        metrics::gauge!(CONNECTIONS).increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_found_by_name_and_unknown_names_count_as_other() {
        assert_eq!(EVENTS_IN_NAMES[label_index(&EVENTS_IN_NAMES, event::MARK_READ)], event::MARK_READ);
        assert_eq!(EVENTS_OUT_NAMES[label_index(&EVENTS_OUT_NAMES, event::MESSAGE_SENT)], event::MESSAGE_SENT);
        assert_eq!(EVENTS_IN_NAMES[label_index(&EVENTS_IN_NAMES, "no-such-event")], "other");
        assert_eq!(EVENTS_OUT_NAMES[label_index(&EVENTS_OUT_NAMES, "no-such-event")], "other");
    }
}
