//! The defaults of the persister's settings, declared once: [`PersisterConfig::default`] and
//! the command line's flags (`src/config.rs`) read them.
//!
//! [`PersisterConfig::default`]: crate::PersisterConfig

use std::time::Duration;

/// How long a batch is retried while the database is unavailable before its senders get
/// `message-error`.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most send commands stored in one statement.
pub const MAX_BATCH: usize = 256;
/// How long a batch waits for more commands after its first, when they have lately come less
/// than this apart (an idle persister adds no latency). Measured at 1,000 msg/s evenly spread
/// (one gateway, a 2-core box): 2 ms cut the CPU of all server processes per message by 30 %
/// (Postgres's by half: about three commands per transaction instead of one) and left the p99
/// delivery within the run-to-run noise; 5 ms saved another 6 % for 6 ms more at the p99.
pub const BATCH_LINGER: Duration = Duration::from_millis(2);
/// Batches stored at once on NATS, whose work queue hands out a partition's next job only
/// after the previous one is acknowledged.
pub const BATCHES_IN_FLIGHT: usize = 4;
/// Batches stored at once on a queue that hands out jobs in one line (the in-process one):
/// one, the only number that keeps a conversation's messages in order there. Safe on any
/// queue, hence [`PersisterConfig::default`]'s.
///
/// [`PersisterConfig::default`]: crate::PersisterConfig
pub const BATCHES_IN_FLIGHT_IN_PROCESS: usize = 1;
