//! The gateway: the Socket.IO and REST front of the chat service.
//!
//! It terminates client connections, validates what clients send, and puts it on the bus:
//! sends go to the durable work queue, typing goes out directly, queries go to the persister
//! by request-reply. What comes back from the bus (stored messages, typing of other gateways'
//! sockets, presence changes, outcomes of its own sends) it delivers to its local sockets. It
//! keeps no state that outlives a connection, so any number of gateways can run side by side.
//!
//! - [`sockets`]: the `/chat` namespace and its events;
//! - [`rest`]: the HTTP API, and [`openapi`]: its OpenAPI document;
//! - [`web`]: the browser test client and the API docs page (embedded static files);
//! - [`auth`]: who a client is (development mode or JWT);
//! - [`defaults`]: the defaults of the settings, declared once;
//! - `delivery`: what comes back from the bus (stored messages, outcomes, typing, presence) on
//!   its way to local rooms and sockets, and the subscriptions that bring only that;
//! - [`limits`]: rate and connection limits;
//! - [`listener`]: the TCP listener that drops peers which stop reading;
//! - [`metrics`]: the gateway's Prometheus metrics;
//! - `outbox`: sends on their way to the work queue, batched per partition;
//! - `rooms`: delivery into conversation rooms, and the replay of missed messages;
//! - [`validate`]: payload rules and error texts;
//! - [`wire`]: the JSON the clients see.

pub mod auth;
pub mod defaults;
mod delivery;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod openapi;
mod outbox;
mod queries;
pub mod rest;
mod rooms;
pub mod sockets;
pub mod validate;
pub mod web;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_bus::{Bus, BusError, ConnectionEvent};
use chat_proto::{Conversation, Subjects};
use socketioxide::SocketIo;

use crate::auth::{AuthConfig, AuthSetupError, Authenticator};
use crate::limits::{Limits, LimitsConfig};

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
    /// Packets waiting to be written to one socket before it counts as a slow reader and is
    /// disconnected.
    pub max_buffered_packets: usize,
    /// Origins allowed by CORS; `None` allows any origin (development only).
    pub allowed_origins: Option<Vec<String>>,
    /// How clients prove who they are.
    pub auth: AuthConfig,
    /// Rate limits per user and connection limits per user and address.
    pub limits: LimitsConfig,
    /// Take the client address from the first `X-Forwarded-For` entry (behind a trusted load
    /// balancer) rather than from the TCP peer.
    pub trust_forwarded_for: bool,
    /// How often presence is told which sockets are open here; presence takes a gateway silent
    /// for several intervals for dead.
    pub heartbeat_interval: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            gateway_id: format!("gw-{}", uuid::Uuid::new_v4().simple()),
            max_content_chars: defaults::MAX_CONTENT_CHARS,
            max_payload_bytes: defaults::MAX_PAYLOAD_BYTES,
            query_timeout: defaults::QUERY_TIMEOUT,
            max_pending_sends: defaults::MAX_PENDING_SENDS,
            max_rooms_per_socket: defaults::MAX_ROOMS_PER_SOCKET,
            max_buffered_packets: defaults::MAX_BUFFERED_PACKETS,
            allowed_origins: None,
            auth: AuthConfig::Development,
            limits: LimitsConfig::default(),
            trust_forwarded_for: false,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("authentication: {0}")]
    Auth(#[from] AuthSetupError),
}

/// One gateway: shared by every socket and request it serves.
pub struct Gateway {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) config: GatewayConfig,
    pub(crate) io: SocketIo,
    /// Conversation rooms with a member here, each with its delivery state.
    pub(crate) rooms: rooms::LocalRooms,
    /// Sends on their way to the work queue.
    pub(crate) outbox: outbox::Outbox,
    /// Conversations never change once created, so the ones seen are kept (bounded).
    pub(crate) conversations: quick_cache::sync::Cache<i64, Conversation>,
    pub(crate) limits: Limits,
    pub(crate) auth: Authenticator,
    /// Sockets open here (socket id → user id), as reported to presence.
    pub(crate) local_sockets: tokio::sync::Mutex<HashMap<String, i64>>,
    /// Sends queued or on the bus whose outcome has not come back yet (request id → when the
    /// client sent it, and its partition): for the send-to-ack latency, the outbox's wait for
    /// answers, and the drain at shutdown. Bounded: an outcome lost on the way cannot make it
    /// grow for ever.
    pub(crate) sends_in_flight: quick_cache::sync::Cache<String, (Instant, u32)>,
    /// Set once shutdown has begun: the gateway is no longer ready for new clients.
    draining: AtomicBool,
}

/// Event that tells every client of a gateway that is shutting down to reconnect (an
/// extension of the API; the transport is closed right after, and socket.io clients reconnect
/// by themselves).
pub const SHUTDOWN_EVENT: &str = "server-shutdown";

impl Gateway {
    /// Builds the gateway and its HTTP application (REST routes and the Socket.IO endpoint),
    /// starts listening to its own subject on the bus (outcomes, presence changes), and starts its
    /// presence heartbeat.
    pub async fn start(
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        config: GatewayConfig,
    ) -> Result<(Arc<Gateway>, axum::Router), GatewayError> {
        let (layer, io) = SocketIo::builder()
            .max_payload(config.max_payload_bytes)
            .ws_max_message_size(config.max_payload_bytes as usize)
            .max_buffer_size(config.max_buffered_packets)
            // Chat frames are small; a larger one is read in several chunks. The default
            // (4 KiB) is memory every idle connection holds.
            .ws_read_buffer_size(1024)
            .build_layer();
        let (outbox, lanes) = outbox::Outbox::new(subjects.partitions());
        let gateway = Arc::new(Gateway {
            outbox,
            rooms: rooms::LocalRooms::default(),
            bus,
            subjects,
            io: io.clone(),
            conversations: quick_cache::sync::Cache::new(100_000),
            local_sockets: tokio::sync::Mutex::new(HashMap::new()),
            sends_in_flight: quick_cache::sync::Cache::new(100_000),
            draining: AtomicBool::new(false),
            limits: Limits::new(config.limits.clone()),
            auth: Authenticator::new(&config.auth)?,
            config,
        });
        delivery::listen(&gateway).await?;
        outbox::Outbox::start(&gateway, lanes);
        sockets::register(&gateway);
        tokio::spawn(heartbeat(gateway.clone()));
        tokio::spawn(resync_after_reconnections(gateway.clone()));
        tokio::spawn(forget_idle_users(gateway.clone()));
        let cors = cors_layer(gateway.config.allowed_origins.as_deref(), gateway.auth.is_development());
        // The CORS layer wraps the Socket.IO one too: browsers poll across origins.
        let app = rest::router(gateway.clone())
            .merge(web::router())
            .layer(axum::middleware::map_response(rest::json_errors))
            .layer(layer)
            .layer(axum::middleware::map_request(detach_from_read_buffer))
            .layer(cors);
        Ok((gateway, app))
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
        tracing::info!(sockets, sends_in_flight = self.sends_in_flight.len(), ?grace, "shutting down: draining");
        let reached = self.io.of(sockets::NAMESPACE).map_or(0, |everyone| everyone.sockets().len() as u64);
        if let Some(everyone) = self.io.of(sockets::NAMESPACE) {
            match everyone.emit(SHUTDOWN_EVENT, &serde_json::json!({ "reconnect": true })).await {
                Ok(()) => metrics::events_out(SHUTDOWN_EVENT, reached),
                Err(e) => tracing::debug!(error = %e, "shutdown broadcast failed"),
            }
        }
        while !self.sends_in_flight.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.sends_in_flight.is_empty() {
            tracing::warn!(sends = self.sends_in_flight.len(), "grace period over with sends unanswered");
        }
        self.send_heartbeat(true).await;
        let closing = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)),
            self.io.close(),
        );
        if closing.await.is_err() {
            tracing::warn!("closing the connections outlasted the grace period");
        }
    }
}

/// Core messages published while this gateway was cut off from the bus are lost: when the
/// connection goes, every room notes where it stood; when it is back, each reads what it
/// missed (see `rooms`).
async fn resync_after_reconnections(gateway: Arc<Gateway>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = gateway.bus.connection_events();
    loop {
        let event = events.recv().await;
        let rooms = gateway.rooms.all();
        match event {
            Ok(ConnectionEvent::Lost) => rooms::mark_lost(&rooms),
            Ok(ConnectionEvent::Restored) | Err(RecvError::Lagged(_)) => {
                tracing::info!(rooms = rooms.len(), "reconnected to the bus: resynchronising rooms");
                rooms::resync_rooms(&gateway, rooms).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn forget_idle_users(gateway: Arc<Gateway>) {
    let mut ticks = tokio::time::interval(limits::FORGET_INTERVAL);
    loop {
        ticks.tick().await;
        gateway.limits.forget_idle_users();
    }
}

async fn heartbeat(gateway: Arc<Gateway>) {
    let mut ticks = tokio::time::interval(gateway.config.heartbeat_interval);
    loop {
        ticks.tick().await;
        gateway.send_heartbeat(false).await;
    }
}

/// Detaches an Engine.IO request from hyper's read buffer. hyper parses the URI and headers as
/// slices of that buffer (16 KiB per connection), axum keeps a clone of the URI in the
/// extensions (`OriginalUri`), and engine.io keeps a WebSocket's request parts for the
/// connection's whole life: without this, every open connection would keep its whole read
/// buffer alive. So the URI and headers are copied, and of the extensions only the two the
/// socket needs are kept: the client's address and the upgrade handle.
async fn detach_from_read_buffer(mut request: axum::extract::Request) -> axum::extract::Request {
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    if let Ok(uri) = axum::http::Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    let copied = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            let name = axum::http::HeaderName::from_bytes(name.as_str().as_bytes()).ok()?;
            let value = axum::http::HeaderValue::from_bytes(value.as_bytes()).ok()?;
            Some((name, value))
        })
        .collect();
    *request.headers_mut() = copied;
    let mut kept = axum::http::Extensions::new();
    if let Some(info) = request.extensions().get::<axum::extract::ConnectInfo<crate::listener::ClientAddr>>() {
        kept.insert(*info);
    }
    if let Some(upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        kept.insert(upgrade);
    }
    *request.extensions_mut() = kept;
    request
}

/// CORS: the configured origins; with none configured, any origin in development mode, and
/// none (same origin only) otherwise.
fn cors_layer(allowed_origins: Option<&[String]>, development: bool) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    match allowed_origins {
        None if development => CorsLayer::permissive(),
        None => CorsLayer::new(),
        Some(origins) => {
            let origins = origins.iter().filter_map(|o| o.parse().ok()).collect::<Vec<_>>();
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any)
        }
    }
}
