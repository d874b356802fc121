//! The gateway: the Socket.IO and REST front of the chat service.
//!
//! It terminates client connections, validates what clients send, and puts it on the bus:
//! sends go to the durable work queue, typing goes out directly, queries go to the persister
//! by request-reply. What comes back from the bus (stored messages, typing of other gateways'
//! sockets, presence changes, outcomes of its own sends) it delivers to its local sockets. It
//! keeps no state that outlives a connection, so any number of gateways can run side by side.
//!
//! The modules, top to bottom; each imports only from the ones below it:
//!
//! - this file: [`start`] wires them together, and runs the background tasks;
//! - handlers: `events` (one module per client event, and the socket's life), `delivery`
//!   (what comes back from the bus, to local rooms and sockets), [`rest`] (the HTTP API, with
//!   [`openapi`] its document), [`web`] (the test client and docs pages), `observe` (each
//!   HTTP request's metrics and span);
//! - [`gateway`]: the state they share ([`Gateway`], [`GatewayConfig`]) and the reports to
//!   presence;
//! - services: `outbox` (sends batched per partition to the work queue, and those awaiting an
//!   outcome), `rooms` (the rooms open here: live delivery, replay, resync), `queries`
//!   (request-reply to the persister);
//! - ground: `room_state` (the delivery rules, without I/O), `emit` (every write to a socket),
//!   [`errors`] (what a client is told when a request fails), [`wire`] (the client-facing
//!   JSON and event names), [`validate`] (payload rules), [`auth`], [`limits`], [`metrics`],
//!   [`listener`] (the TCP listener that drops peers which stop reading), [`proxies`] (the
//!   client's address behind trusted proxies), [`defaults`] (the settings' defaults, declared
//!   once).

pub mod auth;
pub mod defaults;
mod delivery;
mod emit;
pub mod errors;
mod events;
pub mod gateway;
mod interest;
pub mod limits;
pub mod listener;
pub mod metrics;
mod observe;
pub mod openapi;
mod outbox;
pub mod payload;
pub mod proxies;
mod queries;
pub mod rest;
mod room_state;
mod rooms;
pub mod validate;
pub mod web;
pub mod wire;

use std::sync::Arc;

use chat_bus::{Bus, BusError, ConnectionEvent};
use chat_proto::Subjects;
use socketioxide::SocketIo;

use crate::auth::{AuthSetupError, Authenticator};
pub use crate::gateway::{Gateway, GatewayConfig};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("authentication: {0}")]
    Auth(#[from] AuthSetupError),
}

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
    let auth = Authenticator::new(&config.auth)?;
    let gateway = Arc::new(Gateway::new(bus, subjects, config, io, auth));
    delivery::listen(&gateway).await?;
    events::register(&gateway);
    tokio::spawn(heartbeat(gateway.clone()));
    tokio::spawn(resync_after_reconnections(gateway.clone()));
    tokio::spawn(forget_idle_users(gateway.clone()));
    let cors = cors_layer(gateway.config.allowed_origins.as_deref(), gateway.auth.is_development());
    observe::register_rest_routes();
    // The CORS layer wraps the Socket.IO one too: browsers poll across origins. The metrics
    // and spans wrap everything, so they see the status the client gets; a layer of the router
    // runs after routing, so it knows the matched route.
    let app = rest::router(gateway.clone())
        .merge(web::router())
        .layer(axum::middleware::map_response(rest::json_errors))
        .layer(layer)
        .layer(axum::middleware::map_request(detach_from_read_buffer))
        .layer(cors)
        .layer(axum::middleware::from_fn(observe::http_request));
    Ok((gateway, app))
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
                for (conversation_id, user_id) in rooms::resync_rooms(&gateway.queries, &gateway.io, rooms).await {
                    delivery::leave_removed_member(&gateway, conversation_id, user_id);
                }
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
