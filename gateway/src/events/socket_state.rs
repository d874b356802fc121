//! What the gateway keeps per connected socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::limits::ConnectionTicket;
use crate::metrics::OpenConnection;
pub(super) use crate::rooms::Membership;

pub(super) struct SocketState {
    pub user_id: i64,
    pub membership: Arc<Mutex<Membership>>,
    /// Validated commands of this socket waiting in the outbox, not yet on the bus, and its
    /// receipts held there behind its sends.
    pub pending_sends: Arc<AtomicUsize>,
    /// The request id of this socket's latest send in each conversation it sent in: a receipt
    /// it sends next in that conversation may wait for that send's outcome (`receipts`).
    pub last_sends: std::sync::Mutex<HashMap<i64, String>>,
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

    /// A send of this socket in `conversation_id` went to the outbox.
    pub fn note_send(&self, conversation_id: i64, request_id: &str) {
        let mut last_sends = self.last_sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match last_sends.get_mut(&conversation_id) {
            Some(last) => request_id.clone_into(last),
            None => {
                last_sends.insert(conversation_id, request_id.to_owned());
            }
        }
    }

    /// The request id of this socket's latest send in `conversation_id`, answered or not.
    pub fn last_send_in(&self, conversation_id: i64) -> Option<String> {
        let last_sends = self.last_sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last_sends.get(&conversation_id).cloned()
    }
}
