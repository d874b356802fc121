//! The presence loop: gateway reports in, online/offline announcements out.
//!
//! State is kept in memory and mirrored, socket by socket, into a key-value bucket on the bus
//! (`<gateway>.<socket>` → user id), so that a restarted presence service resumes from what it
//! knew instead of announcing everyone anew. Gateways send a heartbeat with their open
//! sockets every few seconds: it corrects whatever presence missed while it was down, and a
//! gateway whose heartbeats stop for [`PresenceConfig::gateway_timeout`] is taken for dead and
//! its users offline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_bus::{Bus, BusError, KeyValue};
use chat_proto::{
    gateway_event, presence_report::Report, ContactList, GatewayEvent, ListContacts, PresenceChange, PresenceReport,
    QueryReply, Subjects, RPC_LIST_CONTACTS,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::state::PresenceState;

/// How long a contacts lookup may take before the announcement is given up.
const CONTACTS_TIMEOUT: Duration = Duration::from_secs(5);
/// Contact lookups in flight at once; announcements still go out in transition order.
const LOOKUPS_IN_FLIGHT: usize = 64;
/// Most users named in one presence announcement (about 50 KB of ids).
const NOTIFY_PER_ANNOUNCEMENT: usize = 10_000;

#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// A gateway silent for this long is taken for dead, and its sockets closed.
    pub gateway_timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { gateway_timeout: Duration::from_secs(15) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("the gateway report subscription ended: the bus connection is gone")]
    SubscriptionEnded,
}

pub struct Presence {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    config: PresenceConfig,
}

/// The state, written by the tracker and read by the announcer (where a user's contacts
/// have sockets). Locked briefly, never across an await.
type SharedState = Arc<std::sync::Mutex<PresenceState>>;

fn lock(state: &SharedState) -> std::sync::MutexGuard<'_, PresenceState> {
    // Every update under this lock is a map insert or remove: a panic cannot leave it
    // half-done, so a poisoned lock is still safe to use.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The part of presence that changes the state: one task, one report at a time.
struct Tracker {
    state: SharedState,
    sockets: Arc<dyn KeyValue>,
    last_heard: HashMap<String, Instant>,
    changes: mpsc::UnboundedSender<PresenceChange>,
}

impl Presence {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, config: PresenceConfig) -> Self {
        Self { bus, subjects, config }
    }

    /// Restores the state, subscribes, then runs in tasks of its own until the bus connection
    /// ends.
    pub async fn start(self) -> Result<tokio::task::JoinHandle<Result<(), PresenceError>>, PresenceError> {
        let sockets = self.bus.key_value(&self.subjects.presence_bucket()).await?;
        let state = restore(sockets.as_ref()).await?;
        let now = Instant::now();
        // Every gateway known from before gets a full timeout to show it is still there.
        let last_heard = state.gateways().into_iter().map(|gw| (gw, now)).collect();
        let mut reports = self.bus.subscribe(&self.subjects.presence_reports()).await?;
        let (changes, pending) = mpsc::unbounded_channel();
        crate::metrics::observe(&state);
        let state: SharedState = Arc::new(std::sync::Mutex::new(state));
        let mut tracker = Tracker { state: state.clone(), sockets, last_heard, changes };
        let presence = Arc::new(self);
        tokio::spawn(presence.clone().announce(pending, state));

        let timeout = presence.config.gateway_timeout;
        Ok(tokio::spawn(async move {
            let mut sweep = tokio::time::interval((timeout / 4).max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    report = reports.next() => {
                        let Some(report) = report else { break };
                        match chat_proto::decode::<PresenceReport>(&report.payload) {
                            Ok(report) => tracker.apply(report).await,
                            Err(e) => tracing::warn!(error = %e, "ignoring undecodable presence report"),
                        }
                    }
                    _ = sweep.tick() => tracker.expire_silent_gateways(timeout).await,
                }
                crate::metrics::observe(&lock(&tracker.state));
            }
            Err(PresenceError::SubscriptionEnded)
        }))
    }

    /// Announces changes in the order they happened; contact lookups overlap, and `buffered`
    /// hands their results back in that same order, so a user's `online` can never overtake
    /// their `offline`. Each announcement goes only to the gateways where the user's contacts
    /// have sockets, naming the contacts there.
    async fn announce(self: Arc<Self>, pending: mpsc::UnboundedReceiver<PresenceChange>, state: SharedState) {
        let this = &self;
        let mut announcements = futures::stream::poll_fn({
            let mut pending = pending;
            move |cx| pending.poll_recv(cx)
        })
        .map(|change| async move { (this.contacts_of(change.user_id).await, change) })
        .buffered(LOOKUPS_IN_FLIGHT);
        while let Some((contacts, change)) = announcements.next().await {
            let routes = lock(&state).by_gateway(&contacts);
            for (gateway, online_contacts) in routes {
                let subject = self.subjects.gateway(&gateway);
                // In slices, so a user with very many contacts stays under the bus's largest
                // payload.
                for notify in online_contacts.chunks(NOTIFY_PER_ANNOUNCEMENT) {
                    let announcement = PresenceChange { notify: notify.to_vec(), ..change.clone() };
                    let event = GatewayEvent { event: Some(gateway_event::Event::Presence(announcement)) };
                    if let Err(e) = self.bus.publish(&subject, chat_proto::encode(&event)).await {
                        tracing::warn!(user_id = change.user_id, %gateway, error = %e, "presence announcement failed");
                    }
                }
            }
        }
    }

    async fn contacts_of(&self, user_id: i64) -> Vec<i64> {
        let query = chat_proto::encode(&ListContacts { user_id });
        let answer = self.bus.request(&self.subjects.rpc(RPC_LIST_CONTACTS), query, CONTACTS_TIMEOUT).await;
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
}

/// Rebuilds the state from the bucket, without announcing anything: it was announced before.
async fn restore(sockets: &dyn KeyValue) -> Result<PresenceState, BusError> {
    let mut state = PresenceState::default();
    let entries = sockets.entries().await?;
    for (key, value) in &entries {
        let parsed = key.split_once('.').zip(std::str::from_utf8(value).ok().and_then(|v| v.parse::<i64>().ok()));
        match parsed {
            Some(((gateway, socket), user_id)) => {
                state.socket_opened(gateway, socket, user_id);
            }
            None => tracing::warn!(%key, "ignoring malformed presence entry"),
        }
    }
    tracing::info!(sockets = entries.len(), "presence state restored");
    Ok(state)
}

fn socket_key(gateway_id: &str, socket_id: &str) -> String {
    format!("{gateway_id}.{socket_id}")
}

impl Tracker {
    async fn apply(&mut self, report: PresenceReport) {
        match report.report {
            Some(Report::Socket(event)) => {
                self.last_heard.insert(event.gateway_id.clone(), Instant::now());
                let key = socket_key(&event.gateway_id, &event.socket_id);
                if event.connected {
                    self.persist_open(&key, event.user_id).await;
                    let came_online =
                        lock(&self.state).socket_opened(&event.gateway_id, &event.socket_id, event.user_id);
                    if came_online {
                        self.changed(event.user_id, true);
                    }
                } else {
                    self.persist_closed(&key).await;
                    let went_offline = lock(&self.state).socket_closed(&event.gateway_id, &event.socket_id);
                    if let Some(user_id) = went_offline {
                        self.changed(user_id, false);
                    }
                }
            }
            Some(Report::Heartbeat(heartbeat)) => {
                let gateway = heartbeat.gateway_id;
                let open: Vec<(String, i64)> =
                    heartbeat.sockets.into_iter().map(|s| (s.socket_id, s.user_id)).collect();
                let (before, (online, offline)) = {
                    let mut state = lock(&self.state);
                    (state.sockets_of(&gateway), state.reconcile(&gateway, &open))
                };
                for socket in before.iter().filter(|s| !open.iter().any(|(o, _)| o == *s)) {
                    self.persist_closed(&socket_key(&gateway, socket)).await;
                }
                for (socket, user_id) in open.iter().filter(|(s, _)| !before.contains(s)) {
                    self.persist_open(&socket_key(&gateway, socket), *user_id).await;
                }
                if open.is_empty() {
                    // An empty heartbeat is also how a gateway says goodbye.
                    self.last_heard.remove(&gateway);
                } else {
                    self.last_heard.insert(gateway, Instant::now());
                }
                offline.into_iter().for_each(|user_id| self.changed(user_id, false));
                online.into_iter().for_each(|user_id| self.changed(user_id, true));
            }
            None => tracing::warn!("ignoring empty presence report"),
        }
    }

    async fn expire_silent_gateways(&mut self, timeout: Duration) {
        let now = Instant::now();
        let silent: Vec<String> = self
            .last_heard
            .iter()
            .filter(|(_, heard)| now.duration_since(**heard) > timeout)
            .map(|(gw, _)| gw.clone())
            .collect();
        for gateway in silent {
            tracing::warn!(%gateway, ?timeout, "gateway silent for too long: closing its sockets");
            self.last_heard.remove(&gateway);
            let sockets = lock(&self.state).sockets_of(&gateway);
            for socket in sockets {
                self.persist_closed(&socket_key(&gateway, &socket)).await;
            }
            let offline = lock(&self.state).gateway_lost(&gateway);
            for user_id in offline {
                self.changed(user_id, false);
            }
        }
    }

    fn changed(&self, user_id: i64, online: bool) {
        // The receiver lives as long as the presence service.
        let _ = self.changes.send(PresenceChange { user_id, online, notify: Vec::new() });
    }

    async fn persist_open(&self, key: &str, user_id: i64) {
        if let Err(e) = self.sockets.put(key, Bytes::from(user_id.to_string())).await {
            tracing::warn!(%key, error = %e, "recording an open socket failed; the next heartbeat repairs it");
        }
    }

    async fn persist_closed(&self, key: &str) {
        if let Err(e) = self.sockets.delete(key).await {
            tracing::warn!(%key, error = %e, "recording a closed socket failed; the next heartbeat repairs it");
        }
    }
}
