//! The `rate` (open loop) and `max` (closed loop) modes: messages between partners, timed,
//! counted and checked.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cpu_meter::CpuMeter;
use crate::crowd::{Crowd, Setup};
use crate::metrics::{Metrics, Percentiles};
use crate::schedule::{self, Arrivals, Schedule};
use crate::user::{Load, Outcome};
use crate::{procfs, Common};

/// How often the drain checks whether every send has been answered and delivered.
const DRAIN_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Open loop: `rate` messages per second in total, timed by one clock for the whole crowd
    /// (see `schedule`), `arrivals` apart; `seed` fixes Poisson arrivals. With
    /// `max_in_flight`, a user due to send with that many unanswered waits for an answer.
    Rate { rate: f64, arrivals: Arrivals, seed: u64, max_in_flight: Option<u32> },
    /// Closed loop: every user keeps `window` sends unanswered.
    Max { window: u32 },
}

#[derive(Debug, Serialize)]
pub struct TrafficReport {
    pub mode: &'static str,
    pub urls: Vec<String>,
    pub users: usize,
    /// Open loop: the target in messages per second.
    pub rate_target: Option<f64>,
    /// Open loop: how sends are spread in time, `even` or `poisson`.
    pub arrival: Option<Arrivals>,
    /// Open loop: the seed of Poisson arrivals.
    pub seed: Option<u64>,
    /// Open loop: unanswered sends a user may have (`null`: no cap, the pure open loop).
    pub max_in_flight: Option<u32>,
    /// Closed loop: unanswered sends per user.
    pub window: Option<u32>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub setup_s: f64,
    /// Totals over the whole run (warm-up and drain included).
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Acks and deliveries that arrived in the measurement window, per second.
    pub throughput_acked_per_s: f64,
    pub throughput_delivered_per_s: f64,
    /// Send (scheduled, in open loop) to `message-sent`, messages sent in the window.
    pub ack_latency_ms: Percentiles,
    /// Send (scheduled, in open loop) to `receive-message` at the partner.
    pub delivery_latency_ms: Percentiles,
    /// The same for the messages sent in each second of the window, in order.
    pub delivery_latency_by_second_ms: Vec<Percentiles>,
    /// `message-error` answers.
    pub message_errors: u64,
    /// Other errors: `error` events, disconnections, messages of another conversation.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Acknowledged, never delivered to the partner.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Sent, answered by neither `message-sent` nor `message-error`.
    pub unanswered: u64,
    /// Open loop with `max_in_flight`: sends that came due at a user with that many
    /// unanswered, and so waited for an answer.
    pub cap_hits: u64,
    /// Messages with content this run did not write.
    pub foreign: u64,
    /// CPU time of the `--server-pid` processes and the `--server-database` backends during
    /// the measured window.
    pub server_cpu_s: Option<f64>,
    /// The same per 1,000 messages acknowledged in the window.
    pub server_cpu_s_per_1000_msgs: Option<f64>,
    /// CPU time of the load generator itself during the measured window: it shares the
    /// machine, and receipts add to its work too.
    pub loadgen_cpu_s: Option<f64>,
    /// Whether every receiver marked each message of its partner read (`--mark-read`).
    pub mark_read: bool,
    /// `--mark-read`: the receipts and their announcements; `null` without.
    pub receipts: Option<ReceiptReport>,
    /// Every message acknowledged was delivered exactly once and in order, without errors;
    /// with `--mark-read`, also every receipt acknowledged and announced as the contract says.
    pub ok: bool,
}

/// Receipts of a `--mark-read` run: every message a user received from its partner was marked
/// read with `mark-read`, emitted with an acknowledgement.
#[derive(Debug, Serialize)]
pub struct ReceiptReport {
    /// `mark-read` emitted (one per message received from the partner).
    pub sent: u64,
    /// Answered `success: true`.
    pub acked: u64,
    /// Of those, answered with the marked message as the position: the position moved.
    pub moved: u64,
    /// Answered with a newer position: the member was past the marked message already (its
    /// own newer message counts as read, or a later receipt was stored first); not announced.
    pub superseded: u64,
    /// Refused, or answered against the contract.
    pub errors: u64,
    /// Emitted, never answered (within the drain).
    pub unanswered: u64,
    /// Successful acks that arrived in the measurement window, per second.
    pub acked_per_s: f64,
    /// `mark-read` emitted to its ack, receipts emitted in the window.
    pub ack_latency_ms: Percentiles,
    /// `message-read` events received over all sockets.
    pub read_events: u64,
    /// What the contract makes that: each moved position announced once to the socket of
    /// each of the two members (the marking socket included).
    pub read_events_expected: u64,
    /// `message-read` events of another conversation or member, or not moving forward.
    pub announcement_errors: u64,
    /// `message-delivered` events: reading implies delivered, so 0 is expected.
    pub delivered_events: u64,
    pub ok: bool,
}

impl ReceiptReport {
    fn of(metrics: &Metrics, seconds: f64) -> Self {
        let r = &metrics.receipts;
        let (sent, acked, errors) = (r.sent.get(), r.acked.get(), r.errors.get());
        let mut report = Self {
            sent,
            acked,
            moved: r.moved.get(),
            superseded: r.superseded.get(),
            errors,
            unanswered: sent.saturating_sub(acked + errors),
            acked_per_s: r.acked_in_window.get() as f64 / seconds,
            ack_latency_ms: metrics.receipt_ack_latency(),
            read_events: r.read_events.get(),
            read_events_expected: 2 * r.moved.get(),
            announcement_errors: r.announcement_errors.get(),
            delivered_events: r.delivered_events.get(),
            ok: false,
        };
        // Every message received from the partner is marked: as many receipts as deliveries.
        report.ok = report.errors == 0
            && report.unanswered == 0
            && report.sent == metrics.delivered.get()
            && report.read_events == report.read_events_expected
            && report.announcement_errors == 0
            && report.delivered_events == 0;
        report
    }

    /// Every receipt answered and every announcement arrived (what the drain waits for).
    fn settled(metrics: &Metrics) -> bool {
        let r = &metrics.receipts;
        r.acked.get() + r.errors.get() >= r.sent.get() && r.read_events.get() >= 2 * r.moved.get()
    }
}

/// One run; with `mark_read`, every receiver marks each message of its partner read.
pub async fn run(common: &Common, pace: Pace, mark_read: bool) -> anyhow::Result<TrafficReport> {
    let users = common.users;
    // Open loop: the schedule of the whole crowd (checked before any connection is opened) and
    // a queue per user through which it hands over the sends.
    let (schedule, queues, loads) = match pace {
        Pace::Rate { rate, arrivals, seed, max_in_flight } => {
            let schedule = Schedule::new(arrivals, rate, users, seed)?;
            let (queues, loads): (Vec<_>, Vec<_>) = (0..users)
                .map(|_| {
                    let (queue, due) = mpsc::unbounded_channel();
                    (queue, Load::Scheduled { due, max_in_flight })
                })
                .unzip();
            (Some(schedule), queues, loads)
        }
        Pace::Max { window } => (None, Vec::new(), (0..users).map(|_| Load::Closed { window }).collect()),
    };
    let mut crowd = Crowd::assemble(common, Setup::Strict, loads, mark_read).await?;
    let metrics = crowd.metrics.clone();

    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + common.warmup;
    let stop_sending = window_start + common.duration;
    metrics.set_window(window_start, stop_sending);
    crowd.start(start, stop_sending);
    let dispatcher = schedule.map(|schedule| tokio::spawn(schedule::dispatch(schedule, queues, start, stop_sending)));
    tokio::time::sleep_until(window_start).await;
    let own_cpu_before = procfs::cpu_seconds(std::process::id());
    let server_cpu = CpuMeter::measure_until(&common.server_pid, &common.server_database, stop_sending).await;
    let own_cpu_after = procfs::cpu_seconds(std::process::id());
    // It ends with the last send due before `stop_sending`, so this does not wait.
    if let Some(dispatcher) = dispatcher {
        if let Err(e) = dispatcher.await {
            metrics.error(format!("the scheduler failed: {e}"));
        }
    }

    // Drain: wait until every send is answered and every answer delivered (and every receipt
    // answered and announced), or until nothing has moved for `--drain` (a closed loop ends
    // with thousands in flight on a slow server).
    let progress = || {
        let r = &metrics.receipts;
        metrics.acked.get()
            + metrics.message_errors.get()
            + metrics.delivered.get()
            + r.acked.get()
            + r.errors.get()
            + r.read_events.get()
    };
    let (mut last_progress, mut last_change) = (progress(), Instant::now());
    while last_change.elapsed() < common.drain {
        let answered = metrics.acked.get() + metrics.message_errors.get();
        if answered >= metrics.sent.get()
            && metrics.delivered.get() >= metrics.acked.get()
            && (!mark_read || ReceiptReport::settled(&metrics))
        {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
        if progress() != last_progress {
            (last_progress, last_change) = (progress(), Instant::now());
        }
    }
    let outcomes = crowd.stop().await;
    let (lost, duplicated, out_of_order) = delivery_check(&outcomes);
    let sent = metrics.sent.get();
    let answered = metrics.acked.get() + metrics.message_errors.get();
    let seconds = common.duration.as_secs_f64();
    let mut report = TrafficReport {
        mode: match pace {
            Pace::Rate { .. } => "rate",
            Pace::Max { .. } => "max",
        },
        urls: common.url.clone(),
        users,
        rate_target: match pace {
            Pace::Rate { rate, .. } => Some(rate),
            Pace::Max { .. } => None,
        },
        arrival: match pace {
            Pace::Rate { arrivals, .. } => Some(arrivals),
            Pace::Max { .. } => None,
        },
        seed: match pace {
            Pace::Rate { seed, .. } => Some(seed),
            Pace::Max { .. } => None,
        },
        max_in_flight: match pace {
            Pace::Rate { max_in_flight, .. } => max_in_flight,
            Pace::Max { .. } => None,
        },
        window: match pace {
            Pace::Rate { .. } => None,
            Pace::Max { window } => Some(window),
        },
        warmup_s: common.warmup.as_secs_f64(),
        duration_s: seconds,
        setup_s: crowd.setup_time.as_secs_f64(),
        sent,
        acked: metrics.acked.get(),
        delivered: metrics.delivered.get(),
        throughput_acked_per_s: metrics.acked_in_window.get() as f64 / seconds,
        throughput_delivered_per_s: metrics.delivered_in_window.get() as f64 / seconds,
        ack_latency_ms: metrics.ack_latency(),
        delivery_latency_ms: metrics.delivery_latency(),
        delivery_latency_by_second_ms: metrics.delivery_latency_by_second(),
        message_errors: metrics.message_errors.get(),
        errors: metrics.errors.get(),
        error_samples: metrics.error_samples(),
        lost,
        duplicated,
        out_of_order,
        unanswered: sent.saturating_sub(answered),
        cap_hits: metrics.cap_hits.get(),
        foreign: metrics.foreign.get(),
        server_cpu_s: None,
        server_cpu_s_per_1000_msgs: None,
        loadgen_cpu_s: own_cpu_before.zip(own_cpu_after).map(|(before, after)| after - before),
        mark_read,
        receipts: mark_read.then(|| ReceiptReport::of(&metrics, seconds)),
        ok: false,
    };
    if let Some(used) = server_cpu {
        let acked = metrics.acked_in_window.get();
        report.server_cpu_s = Some(used);
        report.server_cpu_s_per_1000_msgs = (acked > 0).then(|| used / (acked as f64 / 1000.0));
    }
    report.ok = report.lost == 0
        && report.duplicated == 0
        && report.out_of_order == 0
        && report.unanswered == 0
        && report.message_errors == 0
        && report.errors == 0
        && report.foreign == 0
        && report.receipts.as_ref().is_none_or(|r| r.ok);
    Ok(report)
}

/// Lost (acknowledged to the sender, never received by its partner), duplicated and
/// out-of-order deliveries over all users; `outcomes` is indexed by user.
pub fn delivery_check(outcomes: &[Outcome]) -> (u64, u64, u64) {
    let mut totals = (0, 0, 0);
    for sender in outcomes {
        let receiver = outcomes.get(sender.partner).filter(|r| r.index == sender.partner);
        totals.0 += match receiver {
            Some(receiver) => sender.acked.missing_from(&receiver.inbox.received),
            None => sender.acked.len(),
        };
        totals.1 += sender.inbox.duplicates;
        totals.2 += sender.inbox.out_of_order;
    }
    totals
}

impl TrafficReport {
    pub fn print_table(&self) {
        let target = match (self.rate_target, self.window) {
            (Some(rate), _) => {
                let arrivals = match (self.arrival, self.seed) {
                    (Some(Arrivals::Poisson), Some(seed)) => format!("poisson arrivals (seed {seed})"),
                    (Some(arrivals), _) => format!("{} arrivals", arrivals.name()),
                    (None, _) => String::new(),
                };
                let cap = match self.max_in_flight {
                    Some(max) => format!("at most {max} unanswered per user"),
                    None => "no in-flight cap".to_owned(),
                };
                format!("open loop at {rate:.0} msg/s, {arrivals}, {cap}")
            }
            (_, Some(window)) => format!("closed loop, {window} unanswered per user"),
            _ => String::new(),
        };
        println!("{} users on {}; {target}", self.users, self.urls.join(", "));
        println!("set-up {:.1} s, warm-up {:.0} s, measured {:.0} s", self.setup_s, self.warmup_s, self.duration_s);
        println!(
            "throughput: {:.0} acked/s, {:.0} delivered/s   (totals: sent {}, acked {}, delivered {})",
            self.throughput_acked_per_s, self.throughput_delivered_per_s, self.sent, self.acked, self.delivered
        );
        println!(
            "{:<18}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean", "count"
        );
        for (name, p) in [("ack", &self.ack_latency_ms), ("delivery", &self.delivery_latency_ms)] {
            println!(
                "{name:<18}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>10}",
                p.p50, p.p90, p.p99, p.p999, p.max, p.mean, p.count
            );
        }
        let by_second: Vec<String> =
            self.delivery_latency_by_second_ms.iter().map(|p| format!("{:.0}", p.p99)).collect();
        println!("delivery p99 (ms) by second sent: {}", by_second.join(" "));
        println!(
            "lost {}, duplicated {}, out of order {}, unanswered {}, message-error {}, errors {}, foreign {}, in-flight cap hits {}",
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.unanswered,
            self.message_errors,
            self.errors,
            self.foreign,
            self.cap_hits
        );
        if let Some(r) = &self.receipts {
            println!(
                "receipts (mark-read): sent {}, acked {} ({:.0}/s; moved {}, superseded {}), errors {}, unanswered {}",
                r.sent, r.acked, r.acked_per_s, r.moved, r.superseded, r.errors, r.unanswered
            );
            let p = &r.ack_latency_ms;
            println!(
                "{:<18}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>10}",
                "receipt ack", p.p50, p.p90, p.p99, p.p999, p.max, p.mean, p.count
            );
            println!(
                "message-read events {} (expected {}), not as the contract says {}, message-delivered events {}",
                r.read_events, r.read_events_expected, r.announcement_errors, r.delivered_events
            );
        }
        if let (Some(cpu), Some(per_1000)) = (self.server_cpu_s, self.server_cpu_s_per_1000_msgs) {
            println!("server CPU in the window: {cpu:.2} s, {per_1000:.3} s per 1,000 messages");
        }
        if let Some(cpu) = self.loadgen_cpu_s {
            println!("load generator CPU in the window: {cpu:.2} s");
        }
        for sample in &self.error_samples {
            println!("  e.g. {sample}");
        }
        println!("{}", if self.ok { "OK" } else { "FAILED" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(index: usize, acked: &[u64], received: &[(u64, i64)]) -> Outcome {
        let mut outcome = Outcome { index, partner: index ^ 1, connected: true, ..Outcome::default() };
        for &seq in acked {
            outcome.acked.insert(seq);
        }
        for &(seq, id) in received {
            outcome.inbox.record(seq, id);
        }
        outcome
    }

    #[test]
    fn counts_what_the_partner_never_got_or_got_twice() {
        let outcomes = [
            user(0, &[0, 1, 2, 3], &[(0, 11), (1, 13)]),
            // got 0, 2 (twice) and 3 of user 0's four: 1 is lost
            user(1, &[0, 1], &[(0, 10), (2, 14), (2, 14), (3, 15)]),
        ];
        assert_eq!(delivery_check(&outcomes), (1, 1, 0));
        let reordered = [user(0, &[0, 1], &[]), user(1, &[], &[(1, 5), (0, 4)])];
        // user 1's acked nothing; user 0's two arrived in the wrong order
        assert_eq!(delivery_check(&reordered), (0, 0, 1));
    }
}
