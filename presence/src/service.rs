//! The presence loop: socket events in, online/offline announcements out.

use std::sync::Arc;
use std::time::Duration;

use chat_bus::{Bus, BusError};
use chat_proto::{
    ContactList, ListContacts, PresenceChange, QueryReply, SocketEvent, Subjects, RPC_LIST_CONTACTS,
};
use futures::StreamExt;

use crate::state::PresenceState;

/// How long a contacts lookup may take before the announcement is given up.
const CONTACTS_TIMEOUT: Duration = Duration::from_secs(5);
/// Contact lookups in flight at once; announcements still go out in transition order.
const LOOKUPS_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("the socket event subscription ended: the bus connection is gone")]
    SubscriptionEnded,
}

pub struct Presence {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
}

impl Presence {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects) -> Self {
        Self { bus, subjects }
    }

    /// Subscribes, then runs in a task of its own until the bus connection ends.
    pub async fn start(
        self,
    ) -> Result<tokio::task::JoinHandle<Result<(), PresenceError>>, PresenceError> {
        let events = self
            .bus
            .subscribe(&self.subjects.presence_sockets())
            .await?;
        Ok(tokio::spawn(async move {
            let mut state = PresenceState::default();
            let this = &self;
            // State changes are applied one event at a time, in arrival order; the contact
            // lookups they need overlap, and `buffered` hands their results back in that same
            // order, so a user's `online` can never overtake their `offline`.
            let mut announcements = events
                .filter_map(|message| {
                    let transition = match chat_proto::decode::<SocketEvent>(&message.payload) {
                        Ok(event) => apply(&mut state, &event),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring undecodable socket event");
                            None
                        }
                    };
                    std::future::ready(transition)
                })
                .map(|change| async move { (this.contacts_of(change.user_id).await, change) })
                .buffered(LOOKUPS_IN_FLIGHT);
            while let Some((contacts, change)) = announcements.next().await {
                self.announce(&change, &contacts).await;
            }
            Err(PresenceError::SubscriptionEnded)
        }))
    }

    async fn contacts_of(&self, user_id: i64) -> Vec<i64> {
        let query = chat_proto::encode(&ListContacts { user_id });
        let answer = self
            .bus
            .request(
                &self.subjects.rpc(RPC_LIST_CONTACTS),
                query,
                CONTACTS_TIMEOUT,
            )
            .await;
        let reply = answer
            .map_err(|e| e.to_string())
            .and_then(|bytes| chat_proto::decode::<ContactList>(&bytes).map_err(|e| e.to_string()));
        match reply {
            Ok(list) if list.error().is_none() => list.user_ids,
            Ok(list) => {
                tracing::warn!(user_id, error = ?list.error, "contacts lookup refused; presence not announced");
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(user_id, %error, "contacts lookup failed; presence not announced");
                Vec::new()
            }
        }
    }

    async fn announce(&self, change: &PresenceChange, contacts: &[i64]) {
        let payload = chat_proto::encode(change);
        for contact in contacts {
            if let Err(e) = self
                .bus
                .publish(&self.subjects.user(*contact), payload.clone())
                .await
            {
                tracing::warn!(contact, error = %e, "presence announcement failed");
            }
        }
    }
}

/// Applies one socket event; the presence change to announce, if it made one.
fn apply(state: &mut PresenceState, event: &SocketEvent) -> Option<PresenceChange> {
    if event.connected {
        state
            .socket_opened(&event.gateway_id, &event.socket_id, event.user_id)
            .then_some(PresenceChange {
                user_id: event.user_id,
                online: true,
            })
    } else {
        state
            .socket_closed(&event.gateway_id, &event.socket_id)
            .map(|user_id| PresenceChange {
                user_id,
                online: false,
            })
    }
}
