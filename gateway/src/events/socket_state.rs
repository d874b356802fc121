//! What the gateway keeps per connected socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::limits::ConnectionTicket;
use crate::metrics::OpenConnection;
pub(super) use crate::rooms::Membership;

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

impl SocketState {
    /// Takes a place for one more command in the outbox (sends, receipts and changes share
    /// them), unless `max` are taken: whether it got one. The outbox frees it once the command
    /// is on the bus.
    pub fn reserve_pending(&self, max: usize) -> bool {
        if self.pending_sends.fetch_add(1, Ordering::SeqCst) >= max {
            self.pending_sends.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}
