//! The defaults of presence's settings, declared once: [`PresenceConfig::default`] and the
//! command line's flags (`src/config.rs`) read them.
//!
//! [`PresenceConfig::default`]: crate::PresenceConfig

use std::time::Duration;

/// A gateway silent for this long is taken for dead (three of its default heartbeat
/// intervals).
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(15);
/// The term of the announcing replica's lease.
pub const LEASE: Duration = Duration::from_secs(5);
