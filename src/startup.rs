//! Start-up and shutdown helpers shared by every role.

use std::future::Future;
use std::time::Duration;

use chat_bus::{Backoff, Retryable};
use tokio::time::Instant;

/// Calls `connect` until it succeeds, waiting longer after each failure (up to 5 s), and
/// logging each one; gives up with the last error once `deadline` has passed. A role thus
/// waits for a dependency that starts after it, but never runs silently without one.
pub async fn retry<T, E, F, Fut>(what: &str, deadline: Duration, connect: F) -> anyhow::Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5), started + deadline);
    // Every error is worth another attempt: a dependency that refuses now may accept later.
    backoff
        .retry(&format!("connecting to {what}"), |_| Retryable::BeforeDeadline, connect)
        .await
        .map_err(|e| anyhow::anyhow!("{what} unavailable after {:?}: {e}", started.elapsed()))
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before it kills a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_dependency_answers() {
        let mut attempts = 0;
        let value = retry("thing", Duration::from_secs(60), || {
            attempts += 1;
            let ready = attempts >= 3;
            async move {
                if ready {
                    Ok(7)
                } else {
                    Err("not yet")
                }
            }
        })
        .await
        .expect("third attempt succeeds");
        assert_eq!((value, attempts), (7, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_deadline_naming_the_dependency() {
        let err = retry("NATS", Duration::from_secs(3), || async { Err::<(), _>("connection refused") })
            .await
            .expect_err("never succeeds");
        let text = err.to_string();
        assert!(text.contains("NATS") && text.contains("connection refused"), "{text}");
    }
}
