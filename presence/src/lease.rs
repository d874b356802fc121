//! Which presence replica announces: the one that holds a lease, a key in a bucket whose
//! entries expire unless written again.
//!
//! A replica takes the lease when the key is free (`create`) and keeps it by writing it again
//! with the revision it last wrote (`update`), every quarter of the term. The server drops the
//! key a full term after the holder's last write, so when the holder dies (SIGKILL, a lost
//! node) the key is free within one term, and the next round of another replica takes it. A
//! holder that cannot renew counts itself out half a term after its last successful write was
//! sent: before the server frees the key, so two replicas never both believe they hold it.
//! Only durations measured by each replica's own monotonic clock are compared, never wall-clock
//! times of different machines.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_bus::{Bus, BusError, KeyValue};
use chat_proto::Subjects;
use tokio::sync::watch;
use tokio::time::Instant;

/// The one key of the lease bucket.
const KEY: &str = "announcer";

pub(crate) struct Lease {
    kv: Arc<dyn KeyValue>,
    /// This replica's id, written as the key's value (for whoever inspects the bucket).
    holder: Bytes,
    term: Duration,
    /// The revision of our last write while we hold the key.
    revision: Option<u64>,
    /// When our last successful write was sent.
    written_at: Option<Instant>,
}

impl Lease {
    pub(crate) async fn open(
        bus: &dyn Bus,
        subjects: &Subjects,
        holder: &str,
        term: Duration,
    ) -> Result<Self, BusError> {
        let kv = bus
            .key_value(&subjects.presence_lease_bucket(), "chat presence: which replica announces", Some(term))
            .await?;
        Ok(Self { kv, holder: Bytes::from(holder.to_owned()), term, revision: None, written_at: None })
    }

    /// How often [`Lease::round`] runs.
    fn round_every(&self) -> Duration {
        self.term / 4
    }

    /// Takes the lease if it is free, renews it if it is ours; whether this replica holds it
    /// now.
    pub(crate) async fn round(&mut self) -> bool {
        let sent = Instant::now();
        let attempt = match self.revision {
            None => self.kv.create(KEY, self.holder.clone()),
            Some(revision) => self.kv.update(KEY, self.holder.clone(), revision),
        };
        match tokio::time::timeout(self.round_every(), attempt).await {
            Ok(Ok(Some(revision))) => {
                self.revision = Some(revision);
                self.written_at = Some(sent);
            }
            // Another replica holds the key (or ours expired and another took it).
            Ok(Ok(None)) => {
                self.revision = None;
                self.written_at = None;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "presence lease: could not take or renew it"),
            Err(_) => tracing::warn!(timeout = ?self.round_every(), "presence lease: no answer in time"),
        }
        self.holds()
    }

    fn holds(&self) -> bool {
        self.written_at.is_some_and(|at| at.elapsed() < self.term / 2)
    }

    /// Runs rounds forever, telling whether this replica holds the lease through `holds`.
    pub(crate) async fn keep(mut self, holds: watch::Sender<bool>) {
        let mut rounds = tokio::time::interval(self.round_every());
        rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            rounds.tick().await;
            let held = self.round().await;
            holds.send_if_modified(|current| {
                let changed = *current != held;
                *current = held;
                changed
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_bus::MemoryBus;

    const TERM: Duration = Duration::from_secs(4);

    #[tokio::test(start_paused = true)]
    async fn one_replica_holds_the_lease_and_another_takes_it_when_the_holder_stops_renewing() {
        let bus = MemoryBus::new();
        let subjects = Subjects::default();
        let mut a = Lease::open(&bus, &subjects, "a", TERM).await.unwrap();
        let mut b = Lease::open(&bus, &subjects, "b", TERM).await.unwrap();
        assert!(a.round().await, "a takes the free lease");
        assert!(!b.round().await, "b finds it held");
        for _ in 0..8 {
            tokio::time::advance(TERM / 4).await;
            assert!(a.round().await, "a keeps it by renewing");
            assert!(!b.round().await, "b never gets it meanwhile");
        }
        // a stops (killed): b gets the lease once it expired, not before.
        tokio::time::advance(TERM / 2).await;
        assert!(!b.round().await, "half a term after a's last write, the key is still a's");
        tokio::time::advance(TERM / 2 + Duration::from_millis(1)).await;
        assert!(b.round().await, "a term after a's last write, b takes it");
        assert!(!a.round().await, "a, back, finds it taken");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_cannot_renew_counts_itself_out_before_the_key_expires() {
        let bus = MemoryBus::new();
        let mut a = Lease::open(&bus, &Subjects::default(), "a", TERM).await.unwrap();
        assert!(a.round().await);
        tokio::time::advance(TERM / 2).await;
        assert!(!a.holds(), "without a renewal for half a term, a no longer counts on the lease");
    }
}
