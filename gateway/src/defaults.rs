//! The defaults of the gateway's settings, declared once: [`GatewayConfig::default`],
//! [`LimitsConfig::default`] and the command line's flags (`src/config.rs`) all read them, so
//! a run without flags and a gateway built in a test behave alike.
//!
//! [`GatewayConfig::default`]: crate::GatewayConfig
//! [`LimitsConfig::default`]: crate::limits::LimitsConfig

use std::time::Duration;

/// Longest accepted message `content`, in characters.
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// Largest Socket.IO packet or HTTP body accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: u64 = 1_000_000;
/// How long a query to the persister may take before the client gets an error.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Sends a socket may have waiting for the bus before further ones are refused.
pub const MAX_PENDING_SENDS: usize = 256;
/// Conversation rooms one socket may be in at once.
pub const MAX_ROOMS_PER_SOCKET: usize = 100;
/// Packets waiting to be written to one socket before it is disconnected as a slow reader.
pub const MAX_BUFFERED_PACKETS: usize = 1024;
/// Most members a group may have, its creator included.
pub const MAX_GROUP_MEMBERS: usize = 1_000;
/// How often presence is told which sockets are open here.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Messages a user may send per second, per gateway.
pub const SEND_RATE: u32 = 20;
/// Messages a user may send in a burst, per gateway.
pub const SEND_BURST: u32 = 40;
/// Typing events a user may send per second, per gateway.
pub const TYPING_RATE: u32 = 10;
/// Typing events a user may send in a burst, as a multiple of the typing rate (the burst has no
/// setting of its own).
pub const TYPING_BURST_PER_RATE: u32 = 2;
/// Joins a user may make per second, per gateway.
pub const JOIN_RATE: u32 = 20;
/// Joins a user may make in a burst, per gateway (no setting of its own).
pub const JOIN_BURST: u32 = 100;
/// Open connections one user may have on one gateway.
pub const MAX_CONNECTIONS_PER_USER: usize = 20;
/// Open connections one client address may have on one gateway.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 200;

/// JWT: the claim holding the user id.
pub const JWT_USER_CLAIM: &str = "sub";
/// JWT: clock-skew allowance for expiry and not-before.
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);
