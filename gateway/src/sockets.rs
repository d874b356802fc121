//! The `/chat` namespace: connection and the four client events. What comes back from the bus
//! is in `delivery`.
//!
//! Three rules shape this module:
//!
//! - **A socket's sends keep their order.** socketioxide runs each event's handler in a task
//!   of its own, so two sends of one socket could reach the bus in either order. The
//!   `send-message` handler therefore does its work synchronously (handlers are called in
//!   arrival order; only the futures they return are spawned) and hands the command to its
//!   partition's lane in the `outbox`, which puts it on the work queue in that order.
//! - **Set-up and tear-down of a socket never interleave.** Set-up and joining rooms are
//!   asynchronous (presence reports, history reads), and a client may disconnect mid-way.
//!   Each socket's [`Membership`] lock is taken, before anything else runs, by the connect
//!   middleware (`admit`) and held until set-up is done; joins and the disconnect handler
//!   take it too, so tear-down sees a finished set-up and releases exactly what was acquired.
//! - **A socket's event handlers exist before its client can emit.** They are registered by
//!   the connect middleware, which socketioxide runs before it sends the CONNECT packet.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chat_proto::presence_report::Report;
use chat_proto::{
    room_event, GatewayHeartbeat, OpenSocket, PresenceReport, RoomEvent, SendMessage, SocketEvent, Typing,
};
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::auth::Credentials;
use crate::limits::{Action, ConnectionTicket};
use crate::metrics::{self, Failure, OpenConnection};
use crate::outbox::Queued;
use crate::rooms;
use crate::validate;
use crate::Gateway;
use chat_proto::ErrorKind;

pub const NAMESPACE: &str = "/chat";
pub(crate) const INVALID_USER: &str = "userId query parameter is required and must be a positive integer";
pub(crate) const SEND_FAILED: &str = "Failed to send message";

/// What the gateway keeps per connected socket.
struct SocketState {
    user_id: i64,
    membership: Arc<Mutex<Membership>>,
    /// Validated sends of this socket waiting in the outbox, not yet on the bus.
    pending_sends: Arc<AtomicUsize>,
    /// The socket's place in the connection limits, freed when the socket is gone.
    _ticket: ConnectionTicket,
    /// The socket's place in the connections gauge, likewise.
    _open: OpenConnection,
}

/// The rooms a socket holds; see the module doc for the locking rule.
#[derive(Default)]
struct Membership {
    /// Conversation rooms joined, each holding the gateway's room of the conversation.
    conversations: HashSet<i64>,
    /// Torn down: nothing may be acquired any more.
    closed: bool,
}

pub(crate) fn register(gateway: &Arc<Gateway>) {
    let gw = gateway.clone();
    let admit = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        admit(&gw, &socket, &auth.unwrap_or(Value::Null));
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    let gw = gateway.clone();
    let on_connect = move |socket: SocketRef| on_connect(gw.clone(), socket);
    gateway.io.ns(NAMESPACE, on_connect.with(admit));
}

pub(crate) fn room_of_user(user_id: i64) -> String {
    format!("user:{user_id}")
}

pub(crate) fn room_of_conversation(conversation_id: i64) -> String {
    format!("conversation:{conversation_id}")
}

/// Sends an event to one socket. A socket whose outgoing buffer is full reads too slowly: it
/// is disconnected rather than allowed to grow server memory or silently miss events; its
/// client reconnects and recovers what it missed (`lastMessageId`).
pub(crate) fn emit<T: serde::Serialize + ?Sized>(socket: &SocketRef, event: &str, payload: &T) {
    match socket.emit(event, payload) {
        Ok(()) => metrics::events_out(event, 1),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => disconnect_slow_reader(socket, event),
        Err(e) => tracing::debug!(socket = %socket.id, event, error = %e, "emit failed"),
    }
}

/// Marks a socket whose buffer overflowed; set once per socket at connection.
#[derive(Clone, Default)]
struct Overflowed(Arc<std::sync::atomic::AtomicBool>);

/// Disconnects a socket whose outgoing buffer is full. socketioxide refuses to disconnect while
/// the buffer is full (the disconnect packet would not fit), so this keeps trying as the buffer
/// drains; a peer that does not read at all is cut by the listener's write-stall guard.
fn disconnect_slow_reader(socket: &SocketRef, event: &str) {
    let Some(Overflowed(flag)) = socket.extensions.get::<Overflowed>() else { return };
    if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return; // already on its way out
    }
    tracing::warn!(socket = %socket.id, event, "slow reader: outgoing buffer full, disconnecting");
    let socket = socket.clone();
    tokio::spawn(async move {
        while socket.connected() {
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                _ => return,
            }
        }
    });
}

fn emit_error(socket: &SocketRef, message: &str) {
    metrics::error(Failure::of_message(message));
    emit(socket, "error", &json!({ "message": message }));
}

/// `message-error` to the sender of a message, counted as an error of `kind`.
pub(crate) fn emit_message_error(socket: &SocketRef, kind: Failure, message: &str) {
    metrics::error(kind);
    emit(socket, "message-error", &json!({ "error": message }));
}

/// What the connect middleware decided about a socket, for the connect handler: its state
/// and the held membership lock, or why it was refused. Taken once.
#[derive(Clone, Default)]
struct Admission(Arc<std::sync::Mutex<Option<Admitted>>>);

/// An admitted socket's state with its membership lock held, or why it was refused.
type Admitted = Result<(Arc<SocketState>, OwnedMutexGuard<Membership>), String>;

/// The connect middleware: authenticates the socket, and for an admitted one makes its state,
/// takes its membership lock and registers its event handlers. It runs before socketioxide
/// sends the namespace's CONNECT packet, whereas the connect handler runs after it: a client
/// emits as soon as it reads CONNECT, and an event that finds no handler is dropped without a
/// word (1 join in about 100,000 was, in connection storms, when this ran in the handler).
fn admit(gw: &Arc<Gateway>, socket: &SocketRef, auth: &Value) {
    let admitted = authenticate(gw, socket, auth).and_then(|user_id| {
        let address = client_address(socket, gw.config.trust_forwarded_for);
        gw.limits.open_connection(user_id, address).map(|ticket| (user_id, ticket))
    });
    let outcome = admitted.map(|(user_id, ticket)| {
        let membership = Arc::new(Mutex::new(Membership::default()));
        let guard = membership.clone().try_lock_owned().expect("a new lock is free");
        let state = Arc::new(SocketState {
            user_id,
            membership,
            pending_sends: Arc::default(),
            _ticket: ticket,
            _open: OpenConnection::new(),
        });
        socket.extensions.insert(Overflowed::default());
        socket.join(room_of_user(user_id));
        register_events(gw, &state, socket);
        (state, guard)
    });
    socket.extensions.insert(Admission(Arc::new(std::sync::Mutex::new(Some(outcome)))));
}

/// The connect handler: set-up of an admitted socket (the membership lock is still held from
/// [`admit`]), or the refusal told and the socket disconnected.
fn on_connect(gw: Arc<Gateway>, socket: SocketRef) -> impl Future<Output = ()> {
    let admission = socket
        .extensions
        .get::<Admission>()
        .and_then(|Admission(outcome)| outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
    async move {
        let refusal = match admission {
            Some(Ok((state, guard))) => return set_up(&gw, &state, &socket, guard).await,
            Some(Err(refusal)) => refusal,
            None => {
                tracing::error!(socket = %socket.id, "socket connected without admission");
                "Connection refused".to_owned()
            }
        };
        emit_error(&socket, &refusal);
        if let Err(e) = socket.disconnect() {
            tracing::debug!(error = %e, "disconnecting a refused socket failed");
        }
    }
}

/// The socket's user. The token may come in the Socket.IO `auth` payload (`{token}`), the
/// handshake query (`token`), or an `Authorization: Bearer` header.
fn authenticate(gw: &Gateway, socket: &SocketRef, auth: &Value) -> Result<i64, String> {
    let parts = socket.req_parts();
    let query = parts.uri.query();
    let from_query = validate::query_param(query, "token");
    let token = auth
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(from_query)
        .or_else(|| crate::rest::bearer_token(&parts.headers).map(str::to_owned));
    let claimed_user = validate::query_param(query, "userId");
    gw.auth.authenticate(&Credentials { token: token.as_deref(), claimed_user: claimed_user.as_deref() })
}

/// The client's address: the TCP peer, or the first `X-Forwarded-For` entry when the gateway
/// sits behind a load balancer it trusts.
fn client_address(socket: &SocketRef, trust_forwarded_for: bool) -> Option<std::net::IpAddr> {
    let parts = socket.req_parts();
    if trust_forwarded_for {
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        if let Some(first) = forwarded.and_then(|v| v.split(',').next()) {
            if let Ok(address) = first.trim().parse() {
                return Some(address);
            }
        }
    }
    parts.extensions.get::<axum::extract::ConnectInfo<crate::listener::ClientAddr>>().map(|info| info.0 .0.ip())
}

async fn set_up(gw: &Arc<Gateway>, state: &SocketState, socket: &SocketRef, membership: OwnedMutexGuard<Membership>) {
    gw.report_socket(&socket.id, state.user_id, true).await;
    tracing::debug!(socket = %socket.id, user_id = state.user_id, "socket connected");
    drop(membership);
}

fn register_events(gw: &Arc<Gateway>, state: &Arc<SocketState>, socket: &SocketRef) {
    let (g, s) = (gw.clone(), state.clone());
    socket.on("send-message", move |socket: SocketRef, TryData(payload): TryData<Value>| {
        metrics::event_in("send-message");
        on_send(&g, &s, &socket, payload.unwrap_or(Value::Null));
        std::future::ready(())
    });

    let (g, s) = (gw.clone(), state.clone());
    socket.on(
        "join-conversation",
        move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<Value>| async move {
            metrics::event_in("join-conversation");
            let payload = payload.unwrap_or(Value::Null);
            match join(&g, &s, &socket, &payload).await {
                Ok(conversation_id) => {
                    emit(
                        &socket,
                        "joined-conversation",
                        &json!({ "conversationId": conversation_id, "success": true }),
                    );
                    send_ack(ack, &json!({ "success": true, "conversationId": conversation_id }));
                }
                Err(message) => {
                    emit_error(&socket, &message);
                    let conversation_id = payload.get("conversationId").cloned().unwrap_or(Value::Null);
                    send_ack(ack, &json!({ "success": false, "conversationId": conversation_id, "error": message }));
                }
            }
        },
    );

    let (g, s) = (gw.clone(), state.clone());
    socket.on(
        "leave-conversation",
        move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<Value>| async move {
            metrics::event_in("leave-conversation");
            let payload = payload.unwrap_or(Value::Null);
            match validate::conversation_id(&payload) {
                Ok(conversation_id) => {
                    leave(&g, &s, &socket, conversation_id).await;
                    send_ack(ack, &json!({ "success": true, "conversationId": conversation_id }));
                }
                Err(message) => {
                    emit_error(&socket, &message);
                    let conversation_id = payload.get("conversationId").cloned().unwrap_or(Value::Null);
                    send_ack(ack, &json!({ "success": false, "conversationId": conversation_id, "error": message }));
                }
            }
        },
    );

    let (g, s) = (gw.clone(), state.clone());
    socket.on("typing", move |socket: SocketRef, TryData(payload): TryData<Value>| async move {
        metrics::event_in("typing");
        if let Err(message) = typing(&g, &s, &socket, &payload.unwrap_or(Value::Null)).await {
            emit_error(&socket, &message);
        }
    });

    socket.on_fallback(async |socket: SocketRef, Event(event): Event| {
        metrics::event_in("other");
        let shown: String = event.chars().take(64).collect();
        emit_error(&socket, &format!("Unknown event: {shown}"));
    });

    let (g, s) = (gw.clone(), state.clone());
    socket.on_disconnect(move |socket: SocketRef| async move { tear_down(&g, &s, &socket).await });
}

fn send_ack(ack: AckSender, payload: &Value) {
    if let Err(e) = ack.send(payload) {
        tracing::debug!(error = %e, "acknowledgement failed");
    }
}

/// `send-message`: validate, then queue for the bus (synchronously, to keep the socket's order).
/// Its span, the root of the message's trace, lasts until the command is on the work queue.
fn on_send(gw: &Arc<Gateway>, state: &SocketState, socket: &SocketRef, payload: Value) {
    let span = tracing::info_span!(
        parent: None,
        "send-message",
        otel.kind = "server",
        user_id = state.user_id,
        conversation_id = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    let _entered = span.enter();
    let send = match validate::send_message(&payload, gw.config.max_content_chars) {
        Ok(send) => send,
        Err(message) => return emit_message_error(socket, Failure::Validation, &message),
    };
    if send.sender_id != state.user_id {
        return emit_message_error(socket, Failure::Unauthorized, "Unauthorized to send as another user");
    }
    if !gw.limits.allow(state.user_id, Action::Send) {
        return emit_message_error(socket, Failure::RateLimited, "Rate limit exceeded: too many messages, slow down");
    }
    let command = SendMessage {
        request_id: uuid::Uuid::now_v7().to_string(),
        gateway_id: gw.config.gateway_id.clone(),
        socket_id: socket.id.to_string(),
        sender_id: send.sender_id,
        conversation_id: send.conversation_id,
        message_type: send.message_type.to_owned(),
        content: send.content,
        client_msg_id: send.client_msg_id.unwrap_or_default(),
        trace: Default::default(), // set when it leaves the outbox
    };
    span.record("conversation_id", command.conversation_id);
    span.record("request_id", command.request_id.as_str());
    if state.pending_sends.fetch_add(1, Ordering::SeqCst) >= gw.config.max_pending_sends {
        state.pending_sends.fetch_sub(1, Ordering::SeqCst);
        return emit_message_error(socket, Failure::Limit, "Too many messages waiting to be sent; slow down");
    }
    let partition = gw.subjects.partition_of(command.conversation_id);
    gw.sends_in_flight.insert(command.request_id.clone(), (std::time::Instant::now(), partition));
    gw.outbox.push(partition, Queued { command, span: span.clone(), pending: state.pending_sends.clone() });
}

/// `join-conversation`: the joined conversation's id, or the error text.
async fn join(gw: &Arc<Gateway>, state: &SocketState, socket: &SocketRef, payload: &Value) -> Result<i64, String> {
    let conversation_id = validate::conversation_id(payload)?;
    let last_seen = validate::last_message_id(payload)?;
    if !gw.limits.allow(state.user_id, Action::Join) {
        return Err("Rate limit exceeded: too many joins, slow down".into());
    }
    if !validate::claimed_user_matches(payload, state.user_id) {
        return Err("Unauthorized to join this conversation".into());
    }
    let conversation = gw.conversation(conversation_id).await.map_err(|failure| match failure.kind() {
        Some(ErrorKind::NotFound) => "Conversation not found".to_owned(),
        _ => {
            tracing::error!(conversation_id, error = %failure, "conversation lookup failed");
            "Failed to join conversation".to_owned()
        }
    })?;
    if !conversation.has_participant(state.user_id) {
        return Err("Unauthorized to join this conversation".into());
    }
    let mut membership = state.membership.lock().await;
    if membership.closed || membership.conversations.contains(&conversation_id) {
        return Ok(conversation_id);
    }
    if membership.conversations.len() >= gw.config.max_rooms_per_socket {
        return Err(format!(
            "Too many conversations joined on this connection (at most {}); leave one first",
            gw.config.max_rooms_per_socket
        ));
    }
    let room = gw.open_room(conversation_id).await.map_err(|e| {
        tracing::error!(conversation_id, error = %e, "subscribing to the conversation's room failed");
        "Failed to join conversation".to_owned()
    })?;
    membership.conversations.insert(conversation_id);
    rooms::join_room(gw, socket, conversation_id, &room, last_seen).await;
    Ok(conversation_id)
}

async fn leave(gw: &Gateway, state: &SocketState, socket: &SocketRef, conversation_id: i64) {
    let mut membership = state.membership.lock().await;
    if membership.conversations.remove(&conversation_id) {
        socket.leave(room_of_conversation(conversation_id));
        gw.close_room(conversation_id);
    }
}

/// `typing`: to the room's other sockets here at once, and to other gateways over the bus.
async fn typing(gw: &Gateway, state: &SocketState, socket: &SocketRef, payload: &Value) -> Result<(), String> {
    let (conversation_id, is_typing) = validate::typing(payload)?;
    if !gw.limits.allow(state.user_id, Action::Typing) {
        return Err("Rate limit exceeded: too many typing events, slow down".into());
    }
    if !state.membership.lock().await.conversations.contains(&conversation_id) {
        return Err("Join the conversation before typing in it".into());
    }
    let event = json!({ "conversationId": conversation_id, "userId": state.user_id, "isTyping": is_typing });
    let room = room_of_conversation(conversation_id);
    let reached = socket.to(room.clone()).sockets().len() as u64;
    match socket.to(room).emit("user-typing", &event).await {
        Ok(()) => metrics::events_out("user-typing", reached),
        Err(e) => tracing::debug!(error = %e, "local typing broadcast failed"),
    }
    let relayed =
        Typing { conversation_id, user_id: state.user_id, is_typing, origin_gateway_id: gw.config.gateway_id.clone() };
    let event = RoomEvent { event: Some(room_event::Event::Typing(relayed)) };
    if let Err(e) = gw.bus.publish(&gw.subjects.room(conversation_id), chat_proto::encode(&event)).await {
        tracing::warn!(error = %e, "relaying typing failed");
    }
    Ok(())
}

async fn tear_down(gw: &Gateway, state: &SocketState, socket: &SocketRef) {
    let mut membership = state.membership.lock().await;
    membership.closed = true;
    for conversation_id in std::mem::take(&mut membership.conversations) {
        gw.close_room(conversation_id);
    }
    gw.report_socket(&socket.id, state.user_id, false).await;
    tracing::debug!(socket = %socket.id, user_id = state.user_id, "socket disconnected");
}

impl Gateway {
    pub(crate) fn chat_socket(&self, socket_id: Sid) -> Option<SocketRef> {
        self.io.of(NAMESPACE)?.get_socket(socket_id)
    }

    /// Sends an event to every socket here in any of `rooms` (once to a socket in several),
    /// serialized once.
    pub(crate) fn emit_to_rooms<T: serde::Serialize + ?Sized>(&self, rooms: Vec<String>, event: &str, payload: &T) {
        let Some(namespace) = self.io.of(NAMESPACE) else { return };
        let members = namespace.to(rooms).sockets();
        if members.is_empty() {
            return;
        }
        let json = match serde_json::value::to_raw_value(payload) {
            Ok(json) => json,
            Err(e) => return tracing::error!(event, error = %e, "cannot serialize an event"),
        };
        for socket in members {
            emit(&socket, event, &json);
        }
    }

    /// Opens (or holds once more) the conversation's room here, subscribed to its room
    /// subject; its delivery state.
    async fn open_room(self: &Arc<Self>, conversation_id: i64) -> Result<rooms::SharedRoom, chat_bus::BusError> {
        let room =
            self.rooms.open(conversation_id, |room| crate::delivery::listen_to_room(self, conversation_id, room)).await;
        metrics::set_rooms(self.rooms.len());
        room
    }

    fn close_room(&self, conversation_id: i64) {
        self.rooms.close(conversation_id);
        metrics::set_rooms(self.rooms.len());
    }

    /// Records a socket opening or closing here, and tells presence. The registry lock is
    /// held while publishing, so that reports and heartbeats leave in the order of the
    /// registry's changes (see [`Gateway::send_heartbeat`]).
    async fn report_socket(&self, socket_id: &Sid, user_id: i64, connected: bool) {
        let socket_id = socket_id.to_string();
        let mut local = self.local_sockets.lock().await;
        if connected {
            local.insert(socket_id.clone(), user_id);
        } else {
            local.remove(&socket_id);
        }
        let event = SocketEvent { gateway_id: self.config.gateway_id.clone(), socket_id, user_id, connected };
        let report = PresenceReport { report: Some(Report::Socket(event)) };
        if let Err(e) = self.bus.publish(&self.subjects.presence_reports(), chat_proto::encode(&report)).await {
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
