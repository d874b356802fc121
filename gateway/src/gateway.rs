//! The gateway's shared state: what every socket handler, bus listener and REST handler of
//! one gateway works with, and the reports it makes to presence. Handlers (`events`,
//! `delivery`, `rest`) stand on this; this stands on the modules below it (`outbox`, `rooms`,
//! `queries`, `limits`, `auth`, `emit`) and knows nothing of the handlers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_bus::Bus;
use chat_proto::presence_report::Report;
use chat_proto::{GatewayHeartbeat, OpenSocket, PresenceReport, SocketEvent, Subjects};
use socketioxide::socket::Sid;
use socketioxide::SocketIo;
use tracing::Instrument;

use crate::auth::{AuthConfig, Authenticator};
use crate::defaults;
use crate::interest::Interests;
use crate::limits::{Limits, LimitsConfig};
use crate::metrics;
use crate::outbox::Outbox;
use crate::proxies::TrustedProxies;
use crate::queries::Queries;
use crate::rooms::LocalRooms;
use crate::wire::{event, ShutdownEvent, NAMESPACE};

/// How long a shutting-down gateway leaves its sockets' writer tasks to write what is queued
/// (the last answers) before it closes their transports (within the grace period).
const WRITERS_FLUSH: Duration = Duration::from_millis(100);

/// Settings of a gateway; the defaults suit a local run.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Unique among the gateways of a cluster: outcomes of sends name the gateway whose socket
    /// sent them.
    pub gateway_id: String,
    /// Longest accepted message `content`, in characters.
    pub max_content_chars: usize,
    /// Largest Socket.IO packet or HTTP body accepted, in bytes.
    pub max_payload_bytes: u64,
    /// How long a query to the persister may take before the client gets an error.
    pub query_timeout: Duration,
    /// Sends a socket may have waiting for the bus before further ones are refused.
    pub max_pending_sends: usize,
    /// Conversation rooms one socket may be in at once.
    pub max_rooms_per_socket: usize,
    /// Most members a group may have, its creator included.
    pub max_group_members: usize,
    /// Packets waiting to be written to one socket before it counts as a slow reader and is
    /// disconnected.
    pub max_buffered_packets: usize,
    /// Origins allowed by CORS; `None` allows any origin (development only).
    pub allowed_origins: Option<Vec<String>>,
    /// How clients prove who they are.
    pub auth: AuthConfig,
    /// Rate limits per user and connection limits per user and address.
    pub limits: LimitsConfig,
    /// Proxies trusted to say, in `X-Forwarded-For`, whom they forward (see [`crate::proxies`]);
    /// none by default: the client's address is the TCP peer's.
    pub trusted_proxies: TrustedProxies,
    /// How often presence is told which sockets are open here; presence takes a gateway silent
    /// for several intervals for dead.
    pub heartbeat_interval: Duration,
}

/// A gateway id for a gateway given none: unique, and a valid subject token.
pub fn generated_gateway_id() -> String {
    format!("gw-{}", uuid::Uuid::new_v4().simple())
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            gateway_id: generated_gateway_id(),
            max_content_chars: defaults::MAX_CONTENT_CHARS,
            max_payload_bytes: defaults::MAX_PAYLOAD_BYTES,
            query_timeout: defaults::QUERY_TIMEOUT,
            max_pending_sends: defaults::MAX_PENDING_SENDS,
            max_rooms_per_socket: defaults::MAX_ROOMS_PER_SOCKET,
            max_group_members: defaults::MAX_GROUP_MEMBERS,
            max_buffered_packets: defaults::MAX_BUFFERED_PACKETS,
            allowed_origins: None,
            auth: AuthConfig::Development,
            limits: LimitsConfig::default(),
            trusted_proxies: TrustedProxies::default(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
        }
    }
}

/// One gateway: shared by every socket and request it serves.
pub struct Gateway {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) config: GatewayConfig,
    pub(crate) io: SocketIo,
    /// Conversation rooms with a member here, each with its delivery state.
    pub(crate) rooms: LocalRooms,
    /// Users with a socket here, each holding the user's subject (their receipts, for their
    /// sockets outside the conversation's room).
    pub(crate) users: Interests<()>,
    /// Sends on their way to the work queue, and those whose outcome is awaited.
    pub(crate) outbox: Outbox,
    /// Queries to the persister.
    pub(crate) queries: Queries,
    pub(crate) limits: Limits,
    pub(crate) auth: Authenticator,
    /// Sockets open here (socket id → user id), as reported to presence.
    local_sockets: tokio::sync::Mutex<HashMap<String, i64>>,
    /// Set once shutdown has begun: the gateway is no longer ready for new clients.
    draining: AtomicBool,
}

impl Gateway {
    /// The gateway's state; `io` is its Socket.IO server (handlers are registered by the
    /// caller), the outbox's lanes start now.
    pub(crate) fn new(
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        config: GatewayConfig,
        io: SocketIo,
        auth: Authenticator,
    ) -> Self {
        Gateway {
            outbox: Outbox::start(bus.clone(), subjects.clone(), io.clone()),
            queries: Queries::new(bus.clone(), subjects.clone(), config.query_timeout),
            rooms: LocalRooms::default(),
            users: Interests::default(),
            limits: Limits::new(config.limits.clone()),
            local_sockets: tokio::sync::Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            bus,
            subjects,
            io,
            auth,
            config,
        }
    }

    /// Whether shutdown has begun (the gateway is then not ready).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Shuts the gateway down within `grace`: marks it draining (not ready), tells every client
    /// `server-shutdown {reconnect: true}`, waits for the outcomes of the sends in flight so that
    /// their senders get `message-sent`, tells presence all its sockets are gone (their users go
    /// offline now rather than after the heartbeat timeout), and closes every connection's
    /// transport. socket.io clients take that as a "transport close" and reconnect by
    /// themselves (through the load balancer, to another gateway); a namespace disconnect
    /// would tell them not to. Open WebSockets would otherwise keep the HTTP server's graceful
    /// shutdown waiting.
    pub async fn shut_down(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.draining.store(true, Ordering::SeqCst);
        let sockets = self.local_sockets.lock().await.len();
        tracing::info!(sockets, sends_in_flight = self.outbox.in_flight(), ?grace, "shutting down: draining");
        let reached = self.io.of(NAMESPACE).map_or(0, |everyone| everyone.sockets().len() as u64);
        if let Some(everyone) = self.io.of(NAMESPACE) {
            match everyone.emit(event::SERVER_SHUTDOWN, &ShutdownEvent { reconnect: true }).await {
                Ok(()) => metrics::events_out(event::SERVER_SHUTDOWN, reached),
                Err(e) => tracing::debug!(error = %e, "shutdown broadcast failed"),
            }
        }
        while self.outbox.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.outbox.in_flight() > 0 {
            tracing::warn!(sends = self.outbox.in_flight(), "grace period over with sends unanswered");
        }
        self.send_heartbeat(true).await;
        // The last outcomes' `message-sent` are queued on their sockets, and closing a transport
        // drops what its writer task has not written yet (engine.io cancels the task at once):
        // a moment for the writers, so the last answers reach their senders.
        let now = tokio::time::Instant::now();
        tokio::time::sleep(WRITERS_FLUSH.min(deadline.saturating_duration_since(now))).await;
        let closing = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)),
            self.io.close(),
        );
        if closing.await.is_err() {
            tracing::warn!("closing the connections outlasted the grace period");
        }
    }

    /// Records a socket opening or closing here, and tells presence. The registry lock is
    /// held while publishing, so that reports and heartbeats leave in the order of the
    /// registry's changes (see [`Gateway::send_heartbeat`]).
    pub(crate) async fn report_socket(&self, socket_id: &Sid, user_id: i64, connected: bool) {
        let socket_id = socket_id.to_string();
        let mut local = self.local_sockets.lock().await;
        if connected {
            local.insert(socket_id.clone(), user_id);
        } else {
            local.remove(&socket_id);
        }
        let event = SocketEvent { gateway_id: self.config.gateway_id.clone(), socket_id, user_id, connected };
        let report = PresenceReport { report: Some(Report::Socket(event)) };
        // A child of the socket's `socket-connect` or `socket-disconnect` span.
        let span = tracing::info_span!("report-presence", otel.kind = "producer", user_id, connected);
        let subject = self.subjects.presence_reports();
        if let Err(e) = self.bus.publish(&subject, chat_proto::encode(&report)).instrument(span).await {
            tracing::warn!(user_id, connected, error = %e, "reporting a socket to presence failed");
        }
    }

    /// Tells presence every socket open here; `goodbye` tells it none are (on shutdown).
    pub(crate) async fn send_heartbeat(&self, goodbye: bool) {
        let local = self.local_sockets.lock().await;
        let sockets = if goodbye {
            Vec::new()
        } else {
            local
                .iter()
                .map(|(socket_id, user_id)| OpenSocket { socket_id: socket_id.clone(), user_id: *user_id })
                .collect()
        };
        let heartbeat = GatewayHeartbeat { gateway_id: self.config.gateway_id.clone(), sockets };
        let report = PresenceReport { report: Some(Report::Heartbeat(heartbeat)) };
        if let Err(e) = self.bus.publish(&self.subjects.presence_reports(), chat_proto::encode(&report)).await {
            tracing::warn!(error = %e, "presence heartbeat failed");
        }
    }
}
