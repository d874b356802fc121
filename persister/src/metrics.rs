//! The persister's metrics: their names (the contract with the dashboards) and how they are
//! recorded.

use std::sync::Arc;
use std::time::Duration;

use chat_bus::Bus;

pub const BATCH_SIZE: &str = "chat_persister_batch_size";
pub const INSERT_SECONDS: &str = "chat_persister_insert_seconds";
pub const QUEUE_WAIT_SECONDS: &str = "chat_persister_queue_wait_seconds";
pub const BATCH_FILL_SECONDS: &str = "chat_persister_batch_fill_seconds";
pub const MESSAGES_STORED: &str = "chat_persister_messages_stored_total";
pub const CONSUMER_PENDING: &str = "chat_persister_consumer_pending";
pub const RECEIPTS_SUPERSEDED: &str = "chat_persister_receipts_superseded_total";
pub const MESSAGES_EXPIRED: &str = "chat_persister_messages_expired_total";

/// How often the work queue's backlog is read.
pub const PENDING_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Describes the persister's metrics and shows them at zero before any batch.
pub fn describe() {
    metrics::describe_histogram!(BATCH_SIZE, metrics::Unit::Count, "Send commands per batch");
    metrics::describe_histogram!(INSERT_SECONDS, metrics::Unit::Seconds, "One batch's database transaction");
    metrics::describe_histogram!(
        QUEUE_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "From the work queue storing a job (by its clock) to a persister taking it"
    );
    metrics::describe_histogram!(
        BATCH_FILL_SECONDS,
        metrics::Unit::Seconds,
        "From a batch's first job taken to the batch closed (the linger, and the jobs already waiting)"
    );
    metrics::describe_counter!(
        MESSAGES_STORED,
        "Messages stored by batch transactions (a retried send found stored already counts again)"
    );
    metrics::describe_gauge!(
        CONSUMER_PENDING,
        "Send commands waiting in the work queue for the persisters, handed out but unacknowledged included"
    );
    metrics::describe_counter!(
        RECEIPTS_SUPERSEDED,
        "Receipts answered without the database: at or below the member's position known from this persister's commits"
    );
    metrics::describe_counter!(MESSAGES_EXPIRED, "Messages deleted by retention (--retention)");
    metrics::counter!(MESSAGES_STORED).absolute(0);
    metrics::counter!(MESSAGES_EXPIRED).absolute(0);
    metrics::counter!(RECEIPTS_SUPERSEDED).absolute(0);
    // Registering a histogram shows its buckets, empty, before the first observation.
    let _ = metrics::histogram!(BATCH_SIZE);
    let _ = metrics::histogram!(INSERT_SECONDS);
    let _ = metrics::histogram!(QUEUE_WAIT_SECONDS);
    let _ = metrics::histogram!(BATCH_FILL_SECONDS);
    metrics::gauge!(CONSUMER_PENDING).set(0.0);
}

pub(crate) fn messages_expired(deleted: u64) {
    metrics::counter!(MESSAGES_EXPIRED).increment(deleted);
}

pub(crate) fn batch(size: usize) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

/// A job taken from the work queue that said when it stored it. The queue's clock may be
/// another machine's: a job that seems to come from the future waited zero.
pub(crate) fn job_taken(enqueued_at: Option<std::time::SystemTime>) {
    if let Some(at) = enqueued_at {
        let waited = std::time::SystemTime::now().duration_since(at).unwrap_or_default();
        metrics::histogram!(QUEUE_WAIT_SECONDS).record(waited.as_secs_f64());
    }
}

pub(crate) fn batch_filled(elapsed: Duration) {
    metrics::histogram!(BATCH_FILL_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn inserted(elapsed: Duration, stored: usize) {
    metrics::histogram!(INSERT_SECONDS).record(elapsed.as_secs_f64());
    metrics::counter!(MESSAGES_STORED).increment(stored as u64);
}

pub(crate) fn receipts_superseded(count: usize) {
    if count > 0 {
        metrics::counter!(RECEIPTS_SUPERSEDED).increment(count as u64);
    }
}

/// Reads the work queue's backlog every [`PENDING_POLL_INTERVAL`] into the pending gauge,
/// for as long as the process runs.
pub fn spawn_pending_gauge(bus: Arc<dyn Bus>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PENDING_POLL_INTERVAL);
        loop {
            ticks.tick().await;
            match bus.work_queue_pending(crate::service::CONSUMER_NAME).await {
                Ok(pending) => metrics::gauge!(CONSUMER_PENDING).set(pending as f64),
                Err(e) => tracing::debug!(error = %e, "reading the work queue's backlog failed"),
            }
        }
    })
}
