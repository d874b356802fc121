//! The open loop's one clock. Real traffic is many users each sending now and then, so the
//! `rate` mode does not pace each user on a timer of its own: a [`Schedule`] gives the send
//! times of the whole crowd and who makes each send, and [`dispatch`] hands every send to its
//! user's queue when it is due, with its scheduled time. The user sends it at once and the
//! latency is measured from that scheduled time, so a send that goes out late (a slow server,
//! a busy socket, a busy load generator) shows as latency instead of being left out.
//!
//! The schedule is plain arithmetic and a seeded generator, without clocks or sockets, so that
//! its properties can be tested alone.

use std::time::Duration;

use anyhow::ensure;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The dispatcher wakes at most once per tick and hands over every send due by then, each with
/// its own scheduled time: its cost follows the tick, not the rate (tens of thousands of timers
/// a second would take the CPU of the servers being measured). Tokio's timer has this
/// resolution anyway.
const TICK: Duration = Duration::from_millis(1);

/// How the crowd's sends are spread in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// A fixed gap of 1/rate between consecutive sends of the crowd; users take them in turn.
    Even,
    /// A Poisson process: independent gaps, exponentially distributed with mean 1/rate; each
    /// send goes to a user drawn uniformly at random.
    Poisson,
}

impl Arrivals {
    pub fn name(self) -> &'static str {
        match self {
            Self::Even => "even",
            Self::Poisson => "poisson",
        }
    }
}

/// One send of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// When it is due, from the start of sending.
    pub at: Duration,
    /// Index of the user who makes it.
    pub user: usize,
}

/// The sends of the whole crowd, in time order, without end (the caller stops taking them).
#[derive(Debug, Clone)]
pub struct Schedule {
    arrivals: Arrivals,
    rate: f64,
    users: usize,
    /// A generator with a published algorithm, so that a seed means the same schedule on every
    /// machine and build (the `StdRng` algorithm may change between versions of `rand`).
    rng: Xoshiro256PlusPlus,
    /// Sends produced so far.
    count: u64,
    /// Poisson: time of the latest send in nanoseconds from the start (the gaps add up).
    latest_ns: f64,
}

impl Schedule {
    /// `rate` sends per second in total over `users` users; `seed` fixes the random gaps and
    /// senders of `Arrivals::Poisson` (`Arrivals::Even` uses no randomness).
    pub fn new(arrivals: Arrivals, rate: f64, users: usize, seed: u64) -> anyhow::Result<Self> {
        ensure!(rate.is_finite() && rate > 0.0, "the rate must be a positive number, not {rate}");
        ensure!(users > 0, "a schedule needs at least one user");
        Ok(Self { arrivals, rate, users, rng: Xoshiro256PlusPlus::seed_from_u64(seed), count: 0, latest_ns: 0.0 })
    }
}

impl Iterator for Schedule {
    type Item = Due;

    fn next(&mut self) -> Option<Due> {
        let (at_ns, user) = match self.arrivals {
            // From the count, not by adding gaps, so that rounding does not drift: send k is at
            // k/rate exactly (to the nanosecond), whatever the length of the run.
            Arrivals::Even => (self.count as f64 * 1e9 / self.rate, (self.count % self.users as u64) as usize),
            Arrivals::Poisson => {
                // Inverse transform sampling of the exponential distribution: `random` is
                // uniform on [0, 1), so 1 - u is in (0, 1] and its logarithm is finite.
                let u: f64 = self.rng.random();
                self.latest_ns += -(1.0 - u).ln() * 1e9 / self.rate;
                (self.latest_ns, self.rng.random_range(0..self.users))
            }
        };
        self.count += 1;
        // A float to integer cast saturates: a time too far to represent becomes ~584 years.
        Some(Due { at: Duration::from_nanos(at_ns as u64), user })
    }
}

/// Hands every send of `schedule` due before `stop` to its user's queue (`queues[user]`) once
/// it is due, as its scheduled time; the user sends it at once. Returns how many sends were
/// handed over. The queues are dropped at the end, which tells the users the schedule is over.
pub async fn dispatch(
    schedule: Schedule,
    queues: Vec<mpsc::UnboundedSender<Instant>>,
    start: Instant,
    stop: Instant,
) -> u64 {
    let length = stop.saturating_duration_since(start);
    let mut sends = schedule.take_while(|due| due.at < length).peekable();
    let mut handed = 0;
    loop {
        let now = Instant::now();
        while let Some(due) = sends.next_if(|due| start + due.at <= now) {
            // A queue is closed when its user's connection failed, which is counted already;
            // the send is then not made (and so neither counted as sent nor as lost).
            if queues.get(due.user).is_some_and(|queue| queue.send(start + due.at).is_ok()) {
                handed += 1;
            }
        }
        let Some(next) = sends.peek() else { return handed };
        // Until the next send is due, but at least a tick: whatever is due meanwhile goes out
        // together, each send still stamped with its own time.
        tokio::time::sleep_until((start + next.at).max(now + TICK)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sends due in the first `seconds` seconds.
    fn window(schedule: Schedule, seconds: u64) -> Vec<Due> {
        schedule.take_while(|due| due.at < Duration::from_secs(seconds)).collect()
    }

    fn gaps_ns(sends: &[Due]) -> Vec<f64> {
        sends.windows(2).map(|pair| (pair[1].at - pair[0].at).as_nanos() as f64).collect()
    }

    fn sends_per_user(sends: &[Due], users: usize) -> Vec<u64> {
        let mut counts = vec![0; users];
        for due in sends {
            counts[due.user] += 1;
        }
        counts
    }

    /// Mean and coefficient of variation (standard deviation / mean).
    fn mean_and_cv(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        (mean, variance.sqrt() / mean)
    }

    #[test]
    fn even_arrivals_are_rate_times_duration_at_a_constant_gap() {
        let sends = window(Schedule::new(Arrivals::Even, 500.0, 7, 1).unwrap(), 5);
        assert_eq!(sends.len(), 2500);
        assert_eq!(sends[0].at, Duration::ZERO);
        assert!(gaps_ns(&sends).iter().all(|&gap| gap == 2_000_000.0), "gaps of 1/500 s");
        // A rate whose gap is not a whole number of nanoseconds: rounding does not drift.
        let sends = window(Schedule::new(Arrivals::Even, 3.0, 2, 1).unwrap(), 100);
        assert_eq!(sends.len(), 300);
        let gaps = gaps_ns(&sends);
        let (shortest, longest) = gaps.iter().fold((f64::MAX, 0.0_f64), |(s, l), &g| (s.min(g), l.max(g)));
        assert!(shortest >= 333_333_332.0 && longest <= 333_333_334.0, "{shortest}..{longest}");
        assert_eq!(sends[299].at, Duration::from_nanos(99_666_666_666));
    }

    #[test]
    fn even_arrivals_go_to_every_user_in_turn() {
        let users = 7;
        let sends = window(Schedule::new(Arrivals::Even, 500.0, users, 1).unwrap(), 5);
        let counts = sends_per_user(&sends, users);
        // 2500 sends over 7 users: 357 or 358 each.
        assert_eq!(counts.iter().sum::<u64>(), 2500);
        assert!(counts.iter().all(|&n| n == 357 || n == 358), "{counts:?}");
        // In turn: a user's consecutive sends are `users` gaps apart.
        let first_user: Vec<Duration> = sends.iter().filter(|due| due.user == 0).map(|due| due.at).collect();
        assert!(first_user.windows(2).all(|pair| pair[1] - pair[0] == Duration::from_millis(14)));
    }

    #[test]
    fn poisson_arrivals_have_the_rate_and_exponential_gaps() {
        let rate = 1000.0;
        let seconds = 1000;
        let sends = window(Schedule::new(Arrivals::Poisson, rate, 100, 1).unwrap(), seconds);
        // The mean rate: 1,000,000 expected, with a standard deviation of 1,000.
        let measured = sends.len() as f64 / seconds as f64;
        assert!((measured - rate).abs() < 0.02 * rate, "{measured} sends/s");
        // Exponential gaps have a coefficient of variation of 1 (even ones: 0).
        let (mean_gap, cv) = mean_and_cv(&gaps_ns(&sends));
        assert!((mean_gap - 1e6).abs() < 0.02 * 1e6, "mean gap {mean_gap} ns");
        assert!((cv - 1.0).abs() < 0.05, "coefficient of variation {cv}");
        // A Poisson process puts as many sends in an interval as it has variance: counts per
        // 10 ms have mean 10 and variance 10 (index of dispersion 1; regular arrivals: 0,
        // bursts: more).
        let mut bins = vec![0.0; seconds as usize * 100];
        for due in &sends {
            bins[(due.at.as_millis() / 10) as usize] += 1.0;
        }
        let (mean, cv) = mean_and_cv(&bins);
        let dispersion = (cv * mean).powi(2) / mean;
        assert!((mean - 10.0).abs() < 0.2, "{mean} per 10 ms");
        assert!((dispersion - 1.0).abs() < 0.05, "index of dispersion {dispersion}");
        // Senders drawn uniformly: 10,000 expected each, standard deviation about 100.
        let counts = sends_per_user(&sends, 100);
        assert!(counts.iter().all(|&n| (9_500..=10_500).contains(&n)), "{counts:?}");
    }

    #[test]
    fn the_seed_makes_poisson_arrivals_repeatable() {
        let take = |seed| Schedule::new(Arrivals::Poisson, 5000.0, 50, seed).unwrap().take(10_000).collect::<Vec<_>>();
        assert_eq!(take(1), take(1));
        assert_eq!(take(42), take(42));
        assert_ne!(take(1), take(2));
        // Sends are in time order.
        assert!(take(3).windows(2).all(|pair| pair[0].at <= pair[1].at));
    }

    #[test]
    fn a_schedule_needs_a_positive_rate_and_users() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Schedule::new(Arrivals::Even, rate, 2, 1).is_err(), "{rate}");
        }
        assert!(Schedule::new(Arrivals::Poisson, 10.0, 0, 1).is_err());
    }

    #[tokio::test]
    async fn dispatch_hands_each_send_to_its_user_when_due_with_its_time() {
        let (users, rate) = (4, 2000.0);
        let schedule = Schedule::new(Arrivals::Poisson, rate, users, 9).unwrap();
        let (queues, inboxes): (Vec<_>, Vec<_>) = (0..users).map(|_| mpsc::unbounded_channel()).unzip();
        // Each user's side: the scheduled time of every send and when it arrived.
        let collectors: Vec<_> = inboxes
            .into_iter()
            .map(|mut inbox| {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(at) = inbox.recv().await {
                        got.push((at, Instant::now()));
                    }
                    got
                })
            })
            .collect();
        let start = Instant::now() + Duration::from_millis(20);
        let stop = start + Duration::from_millis(300);
        let handed = dispatch(schedule.clone(), queues, start, stop).await;
        let expected: Vec<Due> = schedule.take_while(|due| due.at < stop - start).collect();
        assert!(expected.len() > 400, "{} sends", expected.len());
        assert_eq!(handed, expected.len() as u64);
        for (user, collector) in collectors.into_iter().enumerate() {
            let got = collector.await.unwrap();
            // Exactly this user's sends of the schedule, in order, with their scheduled times.
            let want: Vec<Instant> = expected.iter().filter(|due| due.user == user).map(|due| start + due.at).collect();
            assert_eq!(got.iter().map(|&(at, _)| at).collect::<Vec<_>>(), want, "user {user}");
            // None before it was due.
            assert!(got.iter().all(|&(at, arrived)| arrived >= at), "user {user} got a send early");
        }
    }
}
