//! Whether a batch waits for more commands after its first: only while jobs arrive often
//! enough that more are expected within the wait.
//!
//! Under moderate load nothing batches by itself: each job (a gateway's batch, often one
//! command) would be a transaction of its own, and its fixed costs (starting the statement's
//! plan, the commit's WAL flush, a wake-up of every process on the way) are most of what a
//! message costs. Waiting a little after the first job puts the next ones in the same
//! transaction. Idle, waiting would only add latency, since nothing else comes: so the wait is
//! taken only when the mean gap between recent jobs is shorter than it.

use std::time::Duration;

use tokio::time::Instant;

/// Weight of the newest gap in the running mean: about the last eight jobs count.
const NEWEST_WEIGHT: f64 = 1.0 / 8.0;

/// A gap counts at most this many times the wait: after an idle minute, a few quick jobs
/// bring the mean back under the wait (about twenty, not hundreds).
const LONGEST_GAP_IN_WAITS: u32 = 10;

/// A batch waits for more only while it holds fewer commands than this: by then the
/// transaction's fixed costs are shared out, and waiting longer would only hold back the
/// partitions in it (under bursts a single job can already hold this many).
const WAIT_BELOW_COMMANDS: usize = 16;

#[derive(Debug)]
pub(crate) struct Linger {
    /// The longest a batch waits (`--batch-linger`); zero: never.
    wait: Duration,
    /// Running mean of the gaps between jobs, in seconds; `None` before the second job.
    mean_gap: Option<f64>,
    last_arrival: Option<Instant>,
}

impl Linger {
    pub(crate) fn new(wait: Duration) -> Self {
        Self { wait, mean_gap: None, last_arrival: None }
    }

    /// Notes a job taken from the queue at `now`.
    pub(crate) fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last).min(self.wait * LONGEST_GAP_IN_WAITS).as_secs_f64();
            self.mean_gap = Some(match self.mean_gap {
                Some(mean) => mean + NEWEST_WEIGHT * (gap - mean),
                None => gap,
            });
        }
        self.last_arrival = Some(now);
    }

    /// How long a batch begun now waits for more jobs: the whole wait when jobs have lately
    /// come less than that apart, else none.
    pub(crate) fn wait(&self) -> Duration {
        match self.mean_gap {
            Some(mean) if mean < self.wait.as_secs_f64() => self.wait,
            _ => Duration::ZERO,
        }
    }
}

/// Until when a batch holding `commands` waits for its next job, `deadline` being the end of
/// the wait decided when the batch began: then, while the batch is small; past
/// [`WAIT_BELOW_COMMANDS`], now (only jobs already waiting are taken).
pub(crate) fn wait_until(deadline: Instant, commands: usize, now: Instant) -> Instant {
    if commands < WAIT_BELOW_COMMANDS {
        deadline
    } else {
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(2);

    fn jobs(linger: &mut Linger, start: Instant, gap: Duration, count: u32) -> Instant {
        let mut at = start;
        for _ in 0..count {
            at += gap;
            linger.arrived(at);
        }
        at
    }

    #[test]
    fn no_wait_before_the_jobs_show_a_rate() {
        let mut linger = Linger::new(WAIT);
        assert_eq!(linger.wait(), Duration::ZERO);
        linger.arrived(Instant::now());
        assert_eq!(linger.wait(), Duration::ZERO, "one job says nothing about the next");
    }

    #[test]
    fn jobs_closer_than_the_wait_make_batches_wait_and_sparse_ones_do_not() {
        let mut linger = Linger::new(WAIT);
        let at = jobs(&mut linger, Instant::now(), Duration::from_micros(500), 20);
        assert_eq!(linger.wait(), WAIT, "2,000 jobs/s: the next comes within the wait");
        jobs(&mut linger, at, Duration::from_millis(50), 20);
        assert_eq!(linger.wait(), Duration::ZERO, "20 jobs/s: waiting would only add latency");
    }

    #[test]
    fn after_an_idle_spell_a_few_quick_jobs_bring_the_wait_back() {
        let mut linger = Linger::new(WAIT);
        let at = jobs(&mut linger, Instant::now(), Duration::from_micros(500), 20);
        let at = jobs(&mut linger, at, Duration::from_secs(60), 1);
        assert_eq!(linger.wait(), Duration::ZERO);
        jobs(&mut linger, at, Duration::from_micros(500), 30);
        assert_eq!(linger.wait(), WAIT, "the idle minute counted as {LONGEST_GAP_IN_WAITS} waits, not as 60 s");
    }

    #[test]
    fn a_batch_stops_waiting_once_it_holds_enough_commands() {
        let now = Instant::now();
        let deadline = now + WAIT;
        assert_eq!(wait_until(deadline, 1, now), deadline);
        assert_eq!(wait_until(deadline, WAIT_BELOW_COMMANDS - 1, now), deadline);
        assert_eq!(wait_until(deadline, WAIT_BELOW_COMMANDS, now), now);
    }

    #[test]
    fn a_zero_wait_never_waits() {
        let mut linger = Linger::new(Duration::ZERO);
        jobs(&mut linger, Instant::now(), Duration::from_micros(10), 50);
        assert_eq!(linger.wait(), Duration::ZERO);
    }
}
