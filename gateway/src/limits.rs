//! Per-user rate limits and per-user / per-address connection limits.
//!
//! The limits are kept per gateway, in memory: a user's budget is the configured rate on each
//! gateway they are connected to. A load balancer with sticky sessions keeps a user on one
//! gateway; cluster-wide counting would cost a NATS round trip per event, which the rate of
//! typing events does not justify.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::defaults;

/// A token bucket: `per_second` tokens flow in, at most `burst` are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl Rate {
    fn limiter(self) -> DefaultKeyedRateLimiter<i64> {
        let per_second = NonZeroU32::new(self.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
    }
}

#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub sends: Rate,
    pub typing: Rate,
    pub joins: Rate,
    pub max_connections_per_user: usize,
    pub max_connections_per_address: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sends: Rate { per_second: defaults::SEND_RATE, burst: defaults::SEND_BURST },
            typing: Rate {
                per_second: defaults::TYPING_RATE,
                burst: defaults::TYPING_RATE * defaults::TYPING_BURST_PER_RATE,
            },
            joins: Rate { per_second: defaults::JOIN_RATE, burst: defaults::JOIN_BURST },
            max_connections_per_user: defaults::MAX_CONNECTIONS_PER_USER,
            max_connections_per_address: defaults::MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

/// What a user is limited in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Send,
    Typing,
    Join,
}

/// Which connection limit a new connection would exceed, and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionLimit {
    #[error("Too many connections for this user (at most {0})")]
    PerUser(usize),
    #[error("Too many connections from this address (at most {0})")]
    PerAddress(usize),
}

pub struct Limits {
    config: LimitsConfig,
    sends: DefaultKeyedRateLimiter<i64>,
    typing: DefaultKeyedRateLimiter<i64>,
    joins: DefaultKeyedRateLimiter<i64>,
    connections: Arc<Mutex<Connections>>,
}

#[derive(Default)]
struct Connections {
    per_user: HashMap<i64, usize>,
    per_address: HashMap<IpAddr, usize>,
}

/// Holds one connection's place in the counts; dropping it frees the place.
pub struct ConnectionTicket {
    connections: Arc<Mutex<Connections>>,
    user_id: i64,
    address: Option<IpAddr>,
}

fn lock(connections: &Mutex<Connections>) -> MutexGuard<'_, Connections> {
    // Counts are updated by single increments and decrements: never left half-done.
    connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut connections = lock(&self.connections);
        decrement(&mut connections.per_user, &self.user_id);
        if let Some(address) = self.address {
            decrement(&mut connections.per_address, &address);
        }
    }
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            sends: config.sends.limiter(),
            typing: config.typing.limiter(),
            joins: config.joins.limiter(),
            connections: Arc::default(),
            config,
        }
    }

    /// Whether `user_id` may do `action` now (and uses a token if so).
    pub fn allow(&self, user_id: i64, action: Action) -> bool {
        let limiter = match action {
            Action::Send => &self.sends,
            Action::Typing => &self.typing,
            Action::Join => &self.joins,
        };
        limiter.check_key(&user_id).is_ok()
    }

    /// Counts a new connection, or says which limit it would exceed.
    pub fn open_connection(&self, user_id: i64, address: Option<IpAddr>) -> Result<ConnectionTicket, ConnectionLimit> {
        let mut connections = lock(&self.connections);
        if connections.per_user.get(&user_id).copied().unwrap_or(0) >= self.config.max_connections_per_user {
            return Err(ConnectionLimit::PerUser(self.config.max_connections_per_user));
        }
        if let Some(address) = address {
            if connections.per_address.get(&address).copied().unwrap_or(0) >= self.config.max_connections_per_address {
                return Err(ConnectionLimit::PerAddress(self.config.max_connections_per_address));
            }
            *connections.per_address.entry(address).or_default() += 1;
        }
        *connections.per_user.entry(user_id).or_default() += 1;
        Ok(ConnectionTicket { connections: self.connections.clone(), user_id, address })
    }

    /// Forgets the buckets of users not seen lately, so memory follows the active users.
    pub fn forget_idle_users(&self) {
        for limiter in [&self.sends, &self.typing, &self.joins] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// How often idle users' buckets are dropped.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(LimitsConfig {
            sends: Rate { per_second: 1, burst: 3 },
            max_connections_per_user: 2,
            max_connections_per_address: 3,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn a_burst_passes_then_the_bucket_is_empty_for_that_user_only() {
        let limits = limits();
        assert!((0..3).all(|_| limits.allow(1, Action::Send)));
        assert!(!limits.allow(1, Action::Send));
        assert!(limits.allow(2, Action::Send), "another user has a bucket of their own");
        assert!(limits.allow(1, Action::Typing), "another action has a bucket of its own");
    }

    #[test]
    fn connections_are_counted_per_user_and_address_until_dropped() {
        let limits = limits();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = limits.open_connection(1, Some(ip)).unwrap();
        let _second = limits.open_connection(1, Some(ip)).unwrap();
        assert_eq!(
            limits.open_connection(1, Some(ip)).err().map(|e| e.to_string()).as_deref(),
            Some("Too many connections for this user (at most 2)")
        );
        let _third = limits.open_connection(2, Some(ip)).unwrap();
        assert_eq!(
            limits.open_connection(3, Some(ip)).err().map(|e| e.to_string()).as_deref(),
            Some("Too many connections from this address (at most 3)")
        );
        drop(first);
        assert!(limits.open_connection(1, None).is_ok(), "a closed connection frees its place");
    }
}
