//! The `/chat` namespace's client events, one module each; what comes back from the bus is in
//! `delivery`.
//!
//! - `connection`: admission, set-up and tear-down of a socket, and the binding of its
//!   handlers;
//! - `send`: `send-message`;
//! - `join`: `join-conversation` and `leave-conversation`;
//! - `receipts`: `mark-delivered` and `mark-read`;
//! - `members`: `add-member`, `remove-member`, `leave-group` and `set-role`;
//! - `lifecycle`: `edit-message`, `delete-message` and `react`;
//! - `typing`: `typing`;
//! - `socket_state`: what the gateway keeps per socket.
//!
//! Three rules shape them:
//!
//! - **A socket's sends keep their order.** socketioxide runs each event's handler in a task
//!   of its own, so two sends of one socket could reach the bus in either order. The
//!   `send-message` handler therefore does its work synchronously (handlers are called in
//!   arrival order; only the futures they return are spawned) and hands the command to its
//!   partition's lane in the `outbox`, which puts it on the work queue in that order.
//! - **Set-up and tear-down of a socket never interleave.** Set-up and joining rooms are
//!   asynchronous (presence reports, history reads), and a client may disconnect mid-way.
//!   Each socket's membership lock is taken, before anything else runs, by the connect
//!   middleware and held until set-up is done; joins and the disconnect handler take it too,
//!   so tear-down sees a finished set-up and releases exactly what was acquired.
//! - **A socket's event handlers exist before its client can emit.** They are bound by the
//!   connect middleware, which socketioxide runs before it sends the CONNECT packet.

mod connection;
mod join;
mod lifecycle;
mod members;
mod receipts;
mod send;
mod socket_state;
mod typing;

pub(crate) use receipts::answer_held;

use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::gateway::Gateway;
use crate::wire::NAMESPACE;

/// Serves the `/chat` namespace: every socket goes through admission, then set-up.
pub(crate) fn register(gateway: &Arc<Gateway>) {
    let gw = gateway.clone();
    let admit = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        connection::admit(&gw, &socket, &auth.unwrap_or(Value::Null));
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    let gw = gateway.clone();
    let on_connect = move |socket: SocketRef| connection::on_connect(gw.clone(), socket);
    gateway.io.ns(NAMESPACE, on_connect.with(admit));
}
