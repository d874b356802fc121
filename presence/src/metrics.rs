//! Presence's metrics: their names (the contract with the dashboards) and how they are set.

use crate::state::PresenceState;

pub const ONLINE_USERS: &str = "chat_presence_online_users";
pub const SOCKETS: &str = "chat_presence_sockets";
pub const LEADER: &str = "chat_presence_leader";

/// Describes presence's metrics and shows them at zero before any report.
pub fn describe() {
    metrics::describe_gauge!(ONLINE_USERS, "Users with at least one open socket on any gateway");
    metrics::describe_gauge!(SOCKETS, "Open sockets on all gateways");
    metrics::describe_gauge!(LEADER, "1 on the presence replica that announces (holds the lease), 0 on the others");
    metrics::gauge!(ONLINE_USERS).set(0.0);
    metrics::gauge!(SOCKETS).set(0.0);
    metrics::gauge!(LEADER).set(0.0);
}

pub(crate) fn leading(leads: bool) {
    metrics::gauge!(LEADER).set(if leads { 1.0 } else { 0.0 });
}

pub(crate) fn observe(state: &PresenceState) {
    metrics::gauge!(ONLINE_USERS).set(state.online_users() as f64);
    metrics::gauge!(SOCKETS).set(state.open_sockets() as f64);
}
