//! Presence: who is online, across every gateway.
//!
//! Gateways report each socket that opens or closes ([`chat_proto::SocketEvent`]), and all
//! their open sockets in periodic heartbeats ([`chat_proto::GatewayHeartbeat`]). A user is
//! online while at least one of their sockets is open, on any gateway; [`PresenceState`] counts
//! them and reports only the transitions (first socket opened, last socket closed). Each
//! transition is announced to the user's contacts, the users who share a conversation with
//! them: on the subject of each gateway where contacts have sockets, naming the contacts there.
//! Never to every socket of the cluster, which would cost O(N²) as users arrive.
//!
//! Any number of replicas can run: each keeps the whole state, and the one holding a lease in
//! the key-value store announces (see `service` and `lease`).

pub mod defaults;
mod lease;
pub mod metrics;
mod service;
mod state;

pub use service::{Presence, PresenceConfig, PresenceError};
pub use state::PresenceState;
