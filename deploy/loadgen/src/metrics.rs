//! Counters and latency histograms shared by every simulated user of a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

/// Error texts kept for the report (the count has them all).
const ERROR_SAMPLES: usize = 10;

/// Latencies are recorded in microseconds, up to an hour, to three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct Metrics {
    /// Time zero of every stamp and of the measurement window.
    pub epoch: Instant,
    /// Start and end of the measurement window (ns since `epoch`); empty until set.
    window_start: AtomicU64,
    window_end: AtomicU64,
    ack_latency: Mutex<Histogram<u64>>,
    /// Delivery latencies by the second of the window their send was scheduled in (the whole
    /// window's are their sum): tells a tail made by a few stalls from one the run shares.
    delivery_by_second: Mutex<Vec<Histogram<u64>>>,
    pub sent: Counter,
    pub acked: Counter,
    pub delivered: Counter,
    pub acked_in_window: Counter,
    pub delivered_in_window: Counter,
    /// `message-error` answers (each ends one send).
    pub message_errors: Counter,
    /// Other errors: `error` events, protocol surprises, disconnections.
    pub errors: Counter,
    /// Messages whose content was not a stamp of this run and sender.
    pub foreign: Counter,
    /// Times an open-loop sender was due to send but had `max_in_flight` sends unanswered.
    pub cap_hits: Counter,
    /// Frames received other than pings (to tell when idle connections have settled).
    pub frames: Counter,
    /// `--mark-read`: receipts and what the server said about them (see `receipt`).
    pub receipts: ReceiptCounters,
    error_samples: Mutex<Vec<String>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            ack_latency: Mutex::new(histogram()),
            delivery_by_second: Mutex::new(Vec::new()),
            sent: Counter::default(),
            acked: Counter::default(),
            delivered: Counter::default(),
            acked_in_window: Counter::default(),
            delivered_in_window: Counter::default(),
            message_errors: Counter::default(),
            errors: Counter::default(),
            foreign: Counter::default(),
            cap_hits: Counter::default(),
            frames: Counter::default(),
            receipts: ReceiptCounters::default(),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    pub fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Sets the measurement window: latencies of messages sent in it and acks and deliveries
    /// that arrive in it count; the warm-up before and the drain after do not.
    pub fn set_window(&self, start: Instant, end: Instant) {
        self.window_end.store(self.ns(end), Ordering::Relaxed);
        self.window_start.store(self.ns(start), Ordering::Relaxed);
    }

    fn in_window(&self, ns: u64) -> bool {
        (self.window_start.load(Ordering::Relaxed)..self.window_end.load(Ordering::Relaxed)).contains(&ns)
    }

    pub fn record_ack(&self, sent_ns: u64, now_ns: u64) {
        self.acked.add(1);
        if self.in_window(now_ns) {
            self.acked_in_window.add(1);
        }
        if self.in_window(sent_ns) {
            lock(&self.ack_latency).saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
        }
    }

    pub fn record_delivery(&self, sent_ns: u64, now_ns: u64) {
        self.delivered.add(1);
        if self.in_window(now_ns) {
            self.delivered_in_window.add(1);
        }
        if self.in_window(sent_ns) {
            let second = (sent_ns - self.window_start.load(Ordering::Relaxed)) / 1_000_000_000;
            let index = usize::try_from(second).unwrap_or(usize::MAX - 1);
            let mut by_second = lock(&self.delivery_by_second);
            if by_second.len() <= index {
                by_second.resize_with(index + 1, histogram);
            }
            by_second[index].saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
        }
    }

    /// A receipt answered with success: the latency from its emission to the ack.
    pub fn record_receipt_ack(&self, sent_ns: u64, now_ns: u64) {
        self.receipts.acked.add(1);
        if self.in_window(now_ns) {
            self.receipts.acked_in_window.add(1);
        }
        if self.in_window(sent_ns) {
            lock(&self.receipts.ack_latency).saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
        }
    }

    /// A receipt refused (or answered against the contract): it ends that receipt.
    pub fn receipt_error(&self, what: impl Into<String>) {
        self.receipts.errors.add(1);
        self.sample(what.into());
    }

    /// Something about the `message-read` announcements that breaks the contract.
    pub fn announcement_error(&self, what: impl Into<String>) {
        self.receipts.announcement_errors.add(1);
        self.sample(what.into());
    }

    pub fn receipt_ack_latency(&self) -> Percentiles {
        Percentiles::of(&lock(&self.receipts.ack_latency))
    }

    pub fn error(&self, what: impl Into<String>) {
        self.errors.add(1);
        self.sample(what.into());
    }

    pub fn message_error(&self, what: impl Into<String>) {
        self.message_errors.add(1);
        self.sample(what.into());
    }

    fn sample(&self, what: String) {
        let mut samples = lock(&self.error_samples);
        if samples.len() < ERROR_SAMPLES {
            samples.push(what);
        }
    }

    pub fn error_samples(&self) -> Vec<String> {
        lock(&self.error_samples).clone()
    }

    pub fn ack_latency(&self) -> Percentiles {
        Percentiles::of(&lock(&self.ack_latency))
    }

    pub fn delivery_latency(&self) -> Percentiles {
        let mut whole = histogram();
        for second in lock(&self.delivery_by_second).iter() {
            // Same bounds and precision on both sides, so adding cannot fail.
            let _ = whole.add(second);
        }
        Percentiles::of(&whole)
    }

    /// Delivery latency of the messages sent in each second of the window, in order.
    pub fn delivery_latency_by_second(&self) -> Vec<Percentiles> {
        lock(&self.delivery_by_second).iter().map(Percentiles::of).collect()
    }
}

/// Receipts (`--mark-read`): every receiver marks each message of its partner read, with an
/// acknowledgement, and both members hear of each position that moved (`message-read`).
pub struct ReceiptCounters {
    /// `mark-read` emitted.
    pub sent: Counter,
    /// Answered `success: true` (moved or superseded).
    pub acked: Counter,
    pub acked_in_window: Counter,
    /// Of those, the ack's position was the marked message: the position moved and the
    /// contract says both members' sockets hear of it.
    pub moved: Counter,
    /// The ack's position was a newer message: the member's position was past the marked one
    /// already (its own newer message, which counts as read when stored, or a later receipt
    /// stored first); nothing is announced for it.
    pub superseded: Counter,
    /// Refused (`success: false`), or an ack the contract does not allow.
    pub errors: Counter,
    /// `message-read` events received, over all sockets.
    pub read_events: Counter,
    /// `message-read` events that break the contract: another conversation or member, a
    /// position that did not move forward.
    pub announcement_errors: Counter,
    /// `message-delivered` events received: none are expected, reading implies delivered.
    pub delivered_events: Counter,
    ack_latency: Mutex<Histogram<u64>>,
}

impl Default for ReceiptCounters {
    fn default() -> Self {
        Self {
            sent: Counter::default(),
            acked: Counter::default(),
            acked_in_window: Counter::default(),
            moved: Counter::default(),
            superseded: Counter::default(),
            errors: Counter::default(),
            read_events: Counter::default(),
            announcement_errors: Counter::default(),
            delivered_events: Counter::default(),
            ack_latency: Mutex::new(histogram()),
        }
    }
}

/// A poisoned lock only means another user task panicked; its counts are still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| Duration::from_micros(us).as_secs_f64() * 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_counts() {
        let metrics = Metrics::new();
        let start = metrics.epoch + Duration::from_secs(1);
        metrics.set_window(start, start + Duration::from_secs(1));
        let at = |ms: u64| metrics.ns(metrics.epoch + Duration::from_millis(ms));
        metrics.record_ack(at(500), at(900)); // warm-up: counted, not measured
        metrics.record_ack(at(1100), at(1102)); // in the window, 2 ms
        metrics.record_ack(at(1900), at(2100)); // sent in the window, answered after it: 200 ms
        metrics.record_delivery(at(2100), at(2200)); // drain
        assert_eq!((metrics.acked.get(), metrics.acked_in_window.get()), (3, 1));
        assert_eq!((metrics.delivered.get(), metrics.delivered_in_window.get()), (1, 0));
        let acks = metrics.ack_latency();
        assert_eq!(acks.count, 2);
        assert!((acks.p50 - 2.0).abs() < 0.01, "{acks:?}");
        assert!((acks.max - 200.0).abs() < 0.5, "{acks:?}");
        assert_eq!(metrics.delivery_latency().count, 0);
        assert!(metrics.delivery_latency_by_second().is_empty());
    }

    #[test]
    fn deliveries_are_also_kept_by_the_second_they_were_sent_in() {
        let metrics = Metrics::new();
        let start = metrics.epoch + Duration::from_secs(1);
        metrics.set_window(start, start + Duration::from_secs(3));
        let at = |ms: u64| metrics.ns(metrics.epoch + Duration::from_millis(ms));
        metrics.record_delivery(at(1100), at(1105)); // second 0: 5 ms
        metrics.record_delivery(at(3500), at(3900)); // second 2: 400 ms
        metrics.record_delivery(at(3600), at(3610)); // second 2: 10 ms
        let seconds = metrics.delivery_latency_by_second();
        assert_eq!(seconds.iter().map(|p| p.count).collect::<Vec<_>>(), [1, 0, 2]);
        assert!((seconds[0].max - 5.0).abs() < 0.01, "{seconds:?}");
        assert!((seconds[2].max - 400.0).abs() < 0.5, "{seconds:?}");
        assert_eq!(metrics.delivery_latency().count, 3);
    }
}
