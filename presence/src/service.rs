//! The presence loop: gateway reports in, online/offline announcements out.
//!
//! Every replica hears every report and keeps the whole state; one of them, the holder of a
//! lease ([`crate::lease`]), announces. State is kept in memory and mirrored by the announcing
//! replica, socket by socket, into a key-value bucket on the bus (`<gateway>.<socket>` → user
//! id), so that a restarted presence service resumes from what it knew instead of announcing
//! everyone anew. Gateways send a heartbeat with their open sockets every few seconds: it
//! corrects whatever presence missed while it was down, and a gateway whose heartbeats stop
//! for [`PresenceConfig::gateway_timeout`] is taken for dead and its users offline.
//!
//! The announcing replica also records, per user, what it announced last (a second bucket:
//! the users announced online). A replica that takes the lease over compares that record with
//! what it knows and announces just the difference: the transitions the previous holder had
//! not announced when it died, and nothing it had.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_bus::{Bus, BusError, KeyValue};
use chat_proto::{
    gateway_event, presence_report::Report, ContactList, GatewayEvent, ListContacts, PresenceChange, PresenceReport,
    QueryReply, SocketEvent, Subjects, RPC_LIST_CONTACTS,
};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::defaults;
use crate::lease::Lease;
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
    /// The term of the announcing replica's lease: when it dies, another replica announces
    /// within about this long.
    pub lease: Duration,
    /// This replica's name in the lease bucket (unique per replica; e.g. the pod name).
    pub replica_id: String,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            gateway_timeout: defaults::GATEWAY_TIMEOUT,
            lease: defaults::LEASE,
            replica_id: format!("presence-{}", std::process::id()),
        }
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

/// What the tracker hands the announcer, in the order it happened.
enum ToAnnounce {
    /// This replica now holds the lease; the users the record says were announced online.
    Lead(HashSet<i64>),
    /// This replica no longer holds the lease: announce nothing until the next `Lead`.
    Follow,
    /// A user came online or went offline; the span of the report that made it so (none for
    /// heartbeats and silent gateways), the parent of its announcement's.
    Change(PresenceChange, tracing::Span),
}

/// The part of presence that changes the state: one task, one report at a time.
struct Tracker {
    state: SharedState,
    /// The mirror of the open sockets, written by the announcing replica only.
    sockets: Arc<dyn KeyValue>,
    /// The users last announced online, read when this replica takes the lease.
    announced: Arc<dyn KeyValue>,
    last_heard: HashMap<String, Instant>,
    /// Whether this replica announces (it holds the lease, and the announcer knows).
    leading: bool,
    to_announce: mpsc::UnboundedSender<ToAnnounce>,
}

/// Aborts a task when dropped: the lease and the announcer live exactly as long as the
/// tracker's task, so a presence service that is stopped (or aborted in a test) lets go of
/// its lease.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Presence {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, config: PresenceConfig) -> Self {
        Self { bus, subjects, config }
    }

    /// Subscribes, restores the state, then runs in tasks of its own until the bus connection
    /// ends.
    pub async fn start(self) -> Result<tokio::task::JoinHandle<Result<(), PresenceError>>, PresenceError> {
        let sockets = self.bus.key_value(&self.subjects.presence_bucket(), "chat presence: open sockets", None).await?;
        let announced = self
            .bus
            .key_value(&self.subjects.presence_announced_bucket(), "chat presence: users announced online", None)
            .await?;
        let lease = Lease::open(self.bus.as_ref(), &self.subjects, &self.config.replica_id, self.config.lease).await?;
        // Subscribed before the state is read, so that no report falls between the two: a
        // report applied to a state that already has it changes nothing.
        let mut reports = self.bus.subscribe(&self.subjects.presence_reports()).await?;
        let state = restore(sockets.as_ref()).await?;
        let now = Instant::now();
        // Every gateway known from before gets a full timeout to show it is still there.
        let last_heard = state.gateways().into_iter().map(|gw| (gw, now)).collect();
        let (to_announce, pending) = mpsc::unbounded_channel();
        crate::metrics::observe(&state);
        let state: SharedState = Arc::new(std::sync::Mutex::new(state));
        let mut tracker = Tracker {
            state: state.clone(),
            sockets,
            announced: announced.clone(),
            last_heard,
            leading: false,
            to_announce,
        };
        let (holds_lease, mut lease_held) = watch::channel(false);
        let lease_task = AbortOnDrop(tokio::spawn(lease.keep(holds_lease)));
        let presence = Arc::new(self);
        let announcer =
            AbortOnDrop(tokio::spawn(presence.clone().announce(pending, state, announced, lease_held.clone())));

        let timeout = presence.config.gateway_timeout;
        Ok(tokio::spawn(async move {
            let _tasks = (lease_task, announcer);
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
                    changed = lease_held.changed() => {
                        if changed.is_err() { break }
                    }
                }
                // Also retried on every sweep, should taking over fail for a moment.
                let holds = *lease_held.borrow_and_update();
                if holds != tracker.leading {
                    tracker.follow_lease(holds).await;
                }
                crate::metrics::observe(&lock(&tracker.state));
            }
            Err(PresenceError::SubscriptionEnded)
        }))
    }

    /// Announces changes in the order they happened; contact lookups overlap, and `buffered`
    /// hands their results back in that same order, so a user's `online` can never overtake
    /// their `offline`. Each announcement goes only to the gateways where the user's contacts
    /// have sockets, naming the contacts there; then it is recorded (the users announced
    /// online), for the replica that may take over.
    async fn announce(
        self: Arc<Self>,
        pending: mpsc::UnboundedReceiver<ToAnnounce>,
        state: SharedState,
        record: Arc<dyn KeyValue>,
        lease_held: watch::Receiver<bool>,
    ) {
        let this = &self;
        let mut inputs = futures::stream::poll_fn({
            let mut pending = pending;
            move |cx| pending.poll_recv(cx)
        })
        .map(|input| async move {
            match input {
                ToAnnounce::Change(change, cause) => {
                    (this.contacts_of(change.user_id).await, ToAnnounce::Change(change, cause))
                }
                other => (Vec::new(), other),
            }
        })
        .buffered(LOOKUPS_IN_FLIGHT);
        // Whether this replica announces, and the users it (or the holder before it) announced
        // online.
        let mut leading = false;
        let mut announced_online: HashSet<i64> = HashSet::new();
        while let Some((contacts, input)) = inputs.next().await {
            let (change, cause) = match input {
                ToAnnounce::Lead(record) => {
                    (leading, announced_online) = (true, record);
                    continue;
                }
                ToAnnounce::Follow => {
                    (leading, announced_online) = (false, HashSet::new());
                    continue;
                }
                ToAnnounce::Change(change, cause) => (change, cause),
            };
            // The lease may have lapsed before the tracker heard: stay silent then; the
            // difference is announced by whichever replica leads next.
            if !leading || !*lease_held.borrow() {
                continue;
            }
            if announced_online.contains(&change.user_id) == change.online {
                continue; // announced already: by this replica, or by the holder before it
            }
            let span = tracing::info_span!(
                parent: &cause,
                "announce-presence",
                otel.kind = "producer",
                user_id = change.user_id,
                online = change.online,
                contacts = contacts.len(),
            );
            drop(cause); // the report's span ends with its announcement on its way
            self.publish(&change, &contacts, &state).instrument(span).await;
            let key = change.user_id.to_string();
            let recorded = if change.online {
                announced_online.insert(change.user_id);
                record.put(&key, Bytes::from_static(b"1")).await
            } else {
                announced_online.remove(&change.user_id);
                record.delete(&key).await
            };
            if let Err(e) = recorded {
                tracing::warn!(user_id = change.user_id, error = %e, "recording an announcement failed; a replica that takes over may repeat it");
            }
        }
    }

    /// Sends one change to the gateways where the user's contacts have sockets.
    async fn publish(&self, change: &PresenceChange, contacts: &[i64], state: &SharedState) {
        let routes = lock(state).by_gateway(contacts);
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
                // Heartbeats, every few seconds from every gateway, get none: they rarely
                // change anything, and a trace each would bury the rest.
                let span = tracing::info_span!(
                    parent: None,
                    "presence-report",
                    otel.kind = "consumer",
                    gateway = %event.gateway_id,
                    user_id = event.user_id,
                    connected = event.connected,
                    transition = false,
                );
                self.socket_event(event).instrument(span).await;
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

    /// A socket opened or closed; the user's first or last socket is a transition.
    async fn socket_event(&mut self, event: SocketEvent) {
        self.last_heard.insert(event.gateway_id.clone(), Instant::now());
        let key = socket_key(&event.gateway_id, &event.socket_id);
        let transition = if event.connected {
            self.persist_open(&key, event.user_id).await;
            let came_online = lock(&self.state).socket_opened(&event.gateway_id, &event.socket_id, event.user_id);
            came_online.then_some((event.user_id, true))
        } else {
            self.persist_closed(&key).await;
            let went_offline = lock(&self.state).socket_closed(&event.gateway_id, &event.socket_id);
            went_offline.map(|user_id| (user_id, false))
        };
        if let Some((user_id, online)) = transition {
            tracing::Span::current().record("transition", true);
            self.changed(user_id, online);
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

    /// A transition, for the announcer; a replica that does not lead keeps it to itself (the
    /// one that leads announces it, or the next to lead finds it in the difference).
    fn changed(&self, user_id: i64, online: bool) {
        if self.leading {
            let change = PresenceChange { user_id, online, notify: Vec::new() };
            self.hand_over(ToAnnounce::Change(change, tracing::Span::current()));
        }
    }

    fn hand_over(&self, input: ToAnnounce) {
        // The announcer lives as long as the tracker.
        let _ = self.to_announce.send(input);
    }

    /// Starts or stops announcing as the lease says. Taking over: the socket mirror is made to
    /// match this replica's state (the previous holder may have died between a report and its
    /// write), then the users whose state differs from what was last announced are announced.
    /// A failed read leaves this replica silent; the next loop tries again.
    async fn follow_lease(&mut self, holds: bool) {
        if !holds {
            tracing::info!("presence: another replica announces now");
            self.leading = false;
            self.hand_over(ToAnnounce::Follow);
            crate::metrics::leading(false);
            return;
        }
        let (mirror, record) = match (self.sockets.entries().await, self.announced.entries().await) {
            (Ok(mirror), Ok(record)) => (mirror, record),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "presence: cannot read the buckets to take over; retrying");
                return;
            }
        };
        self.leading = true;
        crate::metrics::leading(true);
        self.sync_mirror(mirror).await;
        let announced: HashSet<i64> = record.iter().filter_map(|(key, _)| key.parse::<i64>().ok()).collect();
        let online: HashSet<i64> = lock(&self.state).online_user_ids().collect();
        let came_online: Vec<i64> = online.difference(&announced).copied().collect();
        let went_offline: Vec<i64> = announced.difference(&online).copied().collect();
        tracing::info!(
            online = online.len(),
            to_announce_online = came_online.len(),
            to_announce_offline = went_offline.len(),
            "presence: this replica announces now"
        );
        self.hand_over(ToAnnounce::Lead(announced));
        went_offline.into_iter().for_each(|user_id| self.changed(user_id, false));
        came_online.into_iter().for_each(|user_id| self.changed(user_id, true));
    }

    /// Writes what the mirror lacks of the state and deletes what the state no longer has.
    async fn sync_mirror(&self, mirror: Vec<(String, Bytes)>) {
        let mirrored: HashMap<String, Bytes> = mirror.into_iter().collect();
        let open: HashMap<String, i64> = lock(&self.state)
            .sockets()
            .map(|(gateway, socket, user_id)| (socket_key(gateway, socket), user_id))
            .collect();
        for (key, user_id) in &open {
            if mirrored.get(key).map(|v| v.as_ref()) != Some(user_id.to_string().as_bytes()) {
                self.persist_open(key, *user_id).await;
            }
        }
        for key in mirrored.keys().filter(|key| !open.contains_key(*key)) {
            self.persist_closed(key).await;
        }
    }

    async fn persist_open(&self, key: &str, user_id: i64) {
        if !self.leading {
            return;
        }
        if let Err(e) = self.sockets.put(key, Bytes::from(user_id.to_string())).await {
            tracing::warn!(%key, error = %e, "recording an open socket failed; the next heartbeat repairs it");
        }
    }

    async fn persist_closed(&self, key: &str) {
        if !self.leading {
            return;
        }
        if let Err(e) = self.sockets.delete(key).await {
            tracing::warn!(%key, error = %e, "recording a closed socket failed; the next heartbeat repairs it");
        }
    }
}
