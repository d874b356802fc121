//! Retrying an operation that fails for a while: a dependency that starts after us, a
//! database that restarts, a JetStream stream that elects its leader.
//!
//! One helper for every such loop of the workspace, so that each call site states only what
//! differs: the first and the longest wait, until when, and which errors are worth another
//! attempt. Waits double from the first up to the longest; each retry is logged. It is written
//! here rather than taken from a crate such as `backon` because two of its users need what
//! such crates do not say simply: a deadline on the clock, the attempts' own time included
//! (not a sum of waits, nor a count of attempts), and errors retried past that deadline (a
//! persister batch whose commit may have succeeded must not be reported failed). It runs on
//! tokio's clock, so tests run it on a paused one.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Level;

/// Whether an error is worth another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retryable {
    /// No: the error is returned at once.
    No,
    /// Yes, as long as the wait before the next attempt ends before the deadline.
    BeforeDeadline,
    /// Yes, whatever the deadline: for an error after which giving up would be wrong (the
    /// attempt may have done its work).
    Always,
}

/// When to try again: `first_delay` after the first failure, twice as long after each
/// further one up to `max_delay`, and no wait that would end past `deadline` (for errors
/// [`Retryable::BeforeDeadline`]).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    first_delay: Duration,
    max_delay: Duration,
    deadline: Instant,
    log_level: Level,
}

impl Backoff {
    /// Retries are logged at WARN (see [`Backoff::log_level`]). A `first_delay` equal to
    /// `max_delay` waits the same between all attempts.
    pub fn new(first_delay: Duration, max_delay: Duration, deadline: Instant) -> Self {
        Self { first_delay, max_delay, deadline, log_level: Level::WARN }
    }

    /// Logs each retry at `level`: lower than WARN for retries that are routine, where only
    /// giving up deserves attention (the caller logs that).
    pub fn log_level(self, level: Level) -> Self {
        Self { log_level: level, ..self }
    }

    /// Runs `attempt` until it succeeds or `retryable` says its error is not worth another
    /// attempt (now); returns the value, or the last error. Each retry is logged as
    /// "`what` failed; retrying", with the error and the wait, so `what` names the operation
    /// ("storing a batch", "connecting to NATS").
    pub async fn retry<T, E, F, Fut>(
        &self,
        what: &str,
        mut retryable: impl FnMut(&E) -> Retryable,
        mut attempt: F,
    ) -> Result<T, E>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delay = self.first_delay;
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let again = match retryable(&error) {
                Retryable::No => false,
                Retryable::BeforeDeadline => Instant::now() + delay < self.deadline,
                Retryable::Always => true,
            };
            if !again {
                return Err(error);
            }
            log_retry(self.log_level, what, &error, delay);
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(self.max_delay);
        }
    }
}

fn log_retry(level: Level, what: &str, error: &dyn Display, delay: Duration) {
    // `tracing`'s macros take the level as a constant, hence one call per level.
    if level == Level::ERROR {
        tracing::error!(error = %error, retry_in = ?delay, "{what} failed; retrying");
    } else if level == Level::WARN {
        tracing::warn!(error = %error, retry_in = ?delay, "{what} failed; retrying");
    } else if level == Level::INFO {
        tracing::info!(error = %error, retry_in = ?delay, "{what} failed; retrying");
    } else if level == Level::DEBUG {
        tracing::debug!(error = %error, retry_in = ?delay, "{what} failed; retrying");
    } else {
        tracing::trace!(error = %error, retry_in = ?delay, "{what} failed; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn waits_double_up_to_the_longest() {
        let started = Instant::now();
        let mut attempts_at = Vec::new();
        let backoff = Backoff::new(FIRST, MAX, started + Duration::from_secs(60));
        let value = backoff
            .retry(
                "a test",
                |_| Retryable::BeforeDeadline,
                || {
                    attempts_at.push(Instant::now());
                    let ready = attempts_at.len() == 7;
                    async move {
                        if ready {
                            Ok(7)
                        } else {
                            Err("not yet")
                        }
                    }
                },
            )
            .await;
        assert_eq!(value, Ok(7));
        let waits: Vec<Duration> = attempts_at.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_the_last_error() {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let mut attempts = 0;
        let error = Backoff::new(FIRST, MAX, deadline)
            .retry(
                "a test",
                |_| Retryable::BeforeDeadline,
                || {
                    attempts += 1;
                    let attempt = attempts;
                    async move { Err::<(), _>(format!("failure {attempt}")) }
                },
            )
            .await
            .expect_err("never succeeds");
        // Attempts at 0, 0.25, 0.75, 1.75 and 3.75 s; the next wait (2 s) would end past 5 s.
        assert_eq!(error, "failure 5");
        assert_eq!(started.elapsed(), Duration::from_millis(3750));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_the_predicate_rejects_is_returned_at_once() {
        let started = Instant::now();
        let mut attempts = 0;
        let error = Backoff::new(FIRST, MAX, started + Duration::from_secs(60))
            .retry(
                "a test",
                |e: &&str| if *e == "fatal" { Retryable::No } else { Retryable::BeforeDeadline },
                || {
                    attempts += 1;
                    let error = if attempts == 1 { "transient" } else { "fatal" };
                    async move { Err::<(), _>(error) }
                },
            )
            .await
            .expect_err("fails for good");
        assert_eq!((error, attempts), ("fatal", 2), "retried the transient error only");
        assert_eq!(started.elapsed(), FIRST, "no wait after the fatal error");
    }

    #[tokio::test(start_paused = true)]
    async fn errors_retried_always_outlive_the_deadline() {
        let started = Instant::now();
        let mut attempts = 0;
        // A deadline already past: only `Always` errors get another attempt.
        let value = Backoff::new(FIRST, MAX, started)
            .retry(
                "a test",
                |_| Retryable::Always,
                || {
                    attempts += 1;
                    let attempt = attempts;
                    async move {
                        if attempt == 4 {
                            Ok(attempt)
                        } else {
                            Err("unknown")
                        }
                    }
                },
            )
            .await;
        assert_eq!(value, Ok(4));
        assert_eq!(started.elapsed(), Duration::from_millis(250 + 500 + 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_first_and_longest_wait_make_a_fixed_wait() {
        let started = Instant::now();
        let fixed = Duration::from_millis(500);
        let error = Backoff::new(fixed, fixed, started + Duration::from_secs(3))
            .retry("a test", |_| Retryable::BeforeDeadline, || async { Err::<(), _>("settling") })
            .await
            .expect_err("never succeeds");
        assert_eq!(error, "settling");
        // Attempts every 500 ms up to 2.5 s; a wait from there would end at the deadline.
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }
}
