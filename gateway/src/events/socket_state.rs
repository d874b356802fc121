//! What the gateway keeps per connected socket.

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::limits::ConnectionTicket;
use crate::metrics::OpenConnection;

pub(super) struct SocketState {
    pub user_id: i64,
    pub membership: Arc<Mutex<Membership>>,
    /// Validated sends of this socket waiting in the outbox, not yet on the bus.
    pub pending_sends: Arc<AtomicUsize>,
    /// The socket's place in the connection limits, freed when the socket is gone.
    pub _ticket: ConnectionTicket,
    /// The socket's place in the connections gauge, likewise.
    pub _open: OpenConnection,
}

/// The rooms a socket holds; see the `events` module doc for the locking rule.
#[derive(Default)]
pub(super) struct Membership {
    /// Conversation rooms joined, each holding the gateway's room of the conversation.
    pub conversations: HashSet<i64>,
    /// Holds this gateway's interest in the user's subject (released at tear-down).
    pub holds_user_subject: bool,
    /// Torn down: nothing may be acquired any more.
    pub closed: bool,
}
