//! Retention: messages older than `--retention` are deleted, with their reactions and
//! changes, in small batches, so that the persister's batches of sends never wait long behind
//! it. Every persister replica sweeps; two sweeping at once delete the same rows at worst,
//! which is harmless.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Store, RETENTION_BATCH};

/// The pause between two deleting statements of a sweep: the database serves others meanwhile.
const BETWEEN_BATCHES: Duration = Duration::from_millis(200);

/// How often the oldest messages are looked at: a tenth of the retention, between one second
/// and one minute.
fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Sweeps until `shutdown`.
pub(crate) async fn run(store: Store, retention: Duration, shutdown: CancellationToken) {
    let interval = sweep_interval(retention);
    tracing::info!(?retention, ?interval, "message retention on");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Ok(age) = chrono::Duration::from_std(retention) else { return };
        let cutoff = chrono::Utc::now() - age;
        let mut deleted = 0;
        loop {
            match store.delete_messages_before(cutoff).await {
                Ok(0) => break,
                Ok(n) => {
                    deleted += n;
                    crate::metrics::messages_expired(n);
                    if n < RETENTION_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting expired messages failed; retrying at the next sweep");
                    break;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(BETWEEN_BATCHES) => {}
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "expired messages deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_come_at_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(sweep_interval(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(sweep_interval(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(sweep_interval(Duration::from_secs(30 * 86_400)), Duration::from_secs(60));
    }
}
