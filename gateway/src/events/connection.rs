//! A socket's life on this gateway: admission (who it is, whether the limits let it in), the
//! binding of its event handlers, set-up (presence is told it is here) and tear-down (its
//! rooms released, presence told it is gone).

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::Instrument;

use super::socket_state::{Membership, SocketState};
use super::{join, lifecycle, members, receipts, send, typing};
use crate::auth::Credentials;
use crate::emit::{emit_error, room_of_user, Overflowed};
use crate::errors::ClientError;
use crate::gateway::Gateway;
use crate::metrics::{self, OpenConnection};
use crate::payload::PayloadObject;
use crate::proxies::TrustedProxies;
use crate::rooms::SocketRooms;
use crate::validate;
use crate::wire::event;
use chat_proto::{MemberChangeKind, MessageChangeKind, ReceiptKind};

/// What the connect middleware decided about a socket, for the connect handler: its state
/// and the held membership lock, or why it was refused; with the connection's span, which
/// the handler's set-up continues. Taken once.
#[derive(Clone, Default)]
struct Admission(Arc<std::sync::Mutex<Option<(Admitted, tracing::Span)>>>);

/// An admitted socket's state with its membership lock held, or why it was refused.
type Admitted = Result<(Arc<SocketState>, OwnedMutexGuard<Membership>), ClientError>;

/// The connect middleware: authenticates the socket, and for an admitted one makes its state,
/// takes its membership lock and binds its event handlers. It runs before socketioxide
/// sends the namespace's CONNECT packet, whereas the connect handler runs after it: a client
/// emits as soon as it reads CONNECT, and an event that finds no handler is dropped without a
/// word (1 join in about 100,000 was, in connection storms, when this ran in the handler).
///
/// Its `socket-connect` span lasts until the set-up is done: presence told, the user's
/// subject held.
pub(super) fn admit(gw: &Arc<Gateway>, socket: &SocketRef, auth: &Value) {
    let span = tracing::info_span!(
        parent: None,
        "socket-connect",
        otel.kind = "server",
        socket = %socket.id,
        user_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let entered = span.enter();
    let admitted = authenticate(gw, socket, auth).and_then(|user_id| {
        span.record("user_id", user_id);
        let address = client_address(socket, &gw.config.trusted_proxies);
        Ok((user_id, gw.limits.open_connection(user_id, address)?))
    });
    let outcome = admitted.map(|(user_id, ticket)| {
        let membership = Arc::new(Mutex::new(Membership::default()));
        let guard = membership.clone().try_lock_owned().expect("a new lock is free");
        let state = Arc::new(SocketState {
            user_id,
            membership,
            pending_sends: Arc::default(),
            last_sends: Default::default(),
            _ticket: ticket,
            _open: OpenConnection::new(),
        });
        socket.extensions.insert(Overflowed::default());
        socket.extensions.insert(SocketRooms { user_id, membership: state.membership.clone() });
        socket.join(room_of_user(user_id));
        bind_handlers(gw, &state, socket);
        (state, guard)
    });
    drop(entered);
    socket.extensions.insert(Admission(Arc::new(std::sync::Mutex::new(Some((outcome, span))))));
}

/// The connect handler: set-up of an admitted socket (the membership lock is still held from
/// [`admit`]), or the refusal told and the socket disconnected.
pub(super) fn on_connect(gw: Arc<Gateway>, socket: SocketRef) -> impl Future<Output = ()> {
    let admission = socket
        .extensions
        .get::<Admission>()
        .and_then(|Admission(outcome)| outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
    async move {
        let (refusal, span) = match admission {
            Some((Ok((state, guard)), span)) => {
                span.record("outcome", "accepted");
                return set_up(&gw, &state, &socket, guard).instrument(span).await;
            }
            Some((Err(refusal), span)) => (refusal, span),
            None => {
                tracing::error!(socket = %socket.id, "socket connected without admission");
                (ClientError::ConnectionRefused, tracing::Span::none())
            }
        };
        let _entered = span.enter();
        span.record("outcome", refusal.kind().label());
        emit_error(&socket, &refusal);
        if let Err(e) = socket.disconnect() {
            tracing::debug!(error = %e, "disconnecting a refused socket failed");
        }
    }
}

/// The socket's user. The token may come in the Socket.IO `auth` payload (`{token}`), the
/// handshake query (`token`), or an `Authorization: Bearer` header.
fn authenticate(gw: &Gateway, socket: &SocketRef, auth: &Value) -> Result<i64, ClientError> {
    let parts = socket.req_parts();
    let query = parts.uri.query();
    let from_query = validate::query_param(query, "token");
    let token = auth
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(from_query)
        .or_else(|| crate::auth::bearer_token(&parts.headers).map(str::to_owned));
    let claimed_user = validate::query_param(query, "userId");
    Ok(gw.auth.authenticate(&Credentials { token: token.as_deref(), claimed_user: claimed_user.as_deref() })?)
}

/// The client's address: the TCP peer's, or what trusted proxies say in `X-Forwarded-For`
/// (see [`crate::proxies`]). None when the server runs without peer addresses (some tests).
fn client_address(socket: &SocketRef, trusted_proxies: &TrustedProxies) -> Option<std::net::IpAddr> {
    let parts = socket.req_parts();
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<crate::listener::ClientAddr>>()?.0 .0.ip();
    Some(trusted_proxies.client_address(peer, &parts.headers))
}

async fn set_up(
    gw: &Arc<Gateway>,
    state: &SocketState,
    socket: &SocketRef,
    mut membership: OwnedMutexGuard<Membership>,
) {
    // The user's subject first: a receipt the user moves on another device from now on reaches
    // this socket.
    let user_id = state.user_id;
    let listening = gw.users.open(user_id, || (), |()| crate::delivery::listen_to_user(gw, user_id)).await;
    match listening {
        Ok(()) => membership.holds_user_subject = true,
        Err(e) => tracing::warn!(user_id, error = %e, "subscribing to the user's subject failed"),
    }
    gw.report_socket(&socket.id, state.user_id, true).await;
    tracing::debug!(socket = %socket.id, user_id = state.user_id, "socket connected");
    drop(membership);
}

async fn tear_down(gw: &Gateway, state: &SocketState, socket: &SocketRef) {
    let mut membership = state.membership.lock().await;
    membership.closed = true;
    for conversation_id in std::mem::take(&mut membership.conversations) {
        join::release_room(gw, conversation_id);
    }
    if std::mem::take(&mut membership.holds_user_subject) {
        gw.users.close(state.user_id);
    }
    gw.report_socket(&socket.id, state.user_id, false).await;
    tracing::debug!(socket = %socket.id, user_id = state.user_id, "socket disconnected");
}

/// Binds the socket's event handlers, each counted as it arrives.
fn bind_handlers(gw: &Arc<Gateway>, state: &Arc<SocketState>, socket: &SocketRef) {
    let (g, s) = (gw.clone(), state.clone());
    socket.on(event::SEND_MESSAGE, move |socket: SocketRef, TryData(payload): TryData<PayloadObject>| {
        metrics::event_in(event::SEND_MESSAGE);
        send::on_send(&g, &s, &socket, payload.unwrap_or_default());
        std::future::ready(())
    });

    let (g, s) = (gw.clone(), state.clone());
    socket.on(
        event::JOIN_CONVERSATION,
        move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<Value>| async move {
            metrics::event_in(event::JOIN_CONVERSATION);
            join::on_join(&g, &s, &socket, ack, payload.unwrap_or(Value::Null)).await;
        },
    );

    let (g, s) = (gw.clone(), state.clone());
    socket.on(
        event::LEAVE_CONVERSATION,
        move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<Value>| async move {
            metrics::event_in(event::LEAVE_CONVERSATION);
            join::on_leave(&g, &s, &socket, ack, payload.unwrap_or(Value::Null)).await;
        },
    );

    // Synchronous, like sends: a socket's receipts and sends reach the bus in its order.
    for (name, kind) in [(event::MARK_DELIVERED, ReceiptKind::Delivered), (event::MARK_READ, ReceiptKind::Read)] {
        let (g, s) = (gw.clone(), state.clone());
        socket.on(name, move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<PayloadObject>| {
            metrics::event_in(name);
            receipts::on_mark(&g, &s, &socket, ack, payload.unwrap_or_default(), kind);
            std::future::ready(())
        });
    }

    // Synchronous, like sends: a group's membership changes are ordered with its messages.
    for kind in [MemberChangeKind::Add, MemberChangeKind::Remove, MemberChangeKind::Leave, MemberChangeKind::SetRole] {
        let (g, s) = (gw.clone(), state.clone());
        let name = members::event_name(kind);
        socket.on(name, move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<Value>| {
            metrics::event_in(name);
            members::on_change(&g, &s, &socket, ack, payload.unwrap_or(Value::Null), kind);
            std::future::ready(())
        });
    }

    // Synchronous, like sends: a message's changes are ordered with the conversation's messages.
    for kind in [MessageChangeKind::Edit, MessageChangeKind::Delete, MessageChangeKind::React] {
        let (g, s) = (gw.clone(), state.clone());
        let name = lifecycle::event_name(kind);
        socket.on(name, move |socket: SocketRef, ack: AckSender, TryData(payload): TryData<Value>| {
            metrics::event_in(name);
            lifecycle::on_change(&g, &s, &socket, ack, payload.unwrap_or(Value::Null), kind);
            std::future::ready(())
        });
    }

    let (g, s) = (gw.clone(), state.clone());
    socket.on(event::TYPING, move |socket: SocketRef, TryData(payload): TryData<Value>| async move {
        metrics::event_in(event::TYPING);
        typing::on_typing(&g, &s, &socket, payload.unwrap_or(Value::Null)).await;
    });

    socket.on_fallback(async |socket: SocketRef, Event(event): Event| {
        metrics::event_in("other");
        emit_error(&socket, &ClientError::UnknownEvent(event.chars().take(64).collect()));
    });

    let (g, s) = (gw.clone(), state.clone());
    socket.on_disconnect(move |socket: SocketRef| async move {
        let span = tracing::info_span!(
            parent: None,
            "socket-disconnect",
            otel.kind = "server",
            socket = %socket.id,
            user_id = s.user_id,
        );
        tear_down(&g, &s, &socket).instrument(span).await
    });
}
