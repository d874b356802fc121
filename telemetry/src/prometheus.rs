//! The Prometheus recorder: every `metrics::counter!`, `gauge!` and `histogram!` of the
//! process ends up in the text that [`Metrics::render`] returns (a role's `GET /metrics`).

use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of latency histograms, in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of size histograms (messages per batch, say).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The installed recorder, and the process metrics collector refreshed at each render.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: Arc<Mutex<metrics_process::Collector>>,
}

/// How a histogram's buckets are chosen: by the end of its name.
fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS)
}

impl Metrics {
    /// Installs the process-wide recorder (once per process) and describes the process
    /// metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...).
    pub fn install() -> Result<Self, BuildError> {
        let handle = builder()?.install_recorder()?;
        let process = metrics_process::Collector::default();
        process.describe();
        process.collect();
        Ok(Self { handle, process: Arc::new(Mutex::new(process)) })
    }

    /// The Prometheus text exposition of every metric, process metrics refreshed.
    pub fn render(&self) -> String {
        self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).collect();
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_get_buckets_by_the_end_of_their_name() {
        let recorder = builder().expect("valid buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("chat_test_insert_seconds").record(0.003);
            metrics::histogram!("chat_test_batch_size").record(3.0);
        });
        let text = handle.render();
        assert!(text.contains("chat_test_insert_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("chat_test_insert_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("chat_test_batch_size_bucket{le=\"4\"} 1"), "{text}");
        assert!(text.contains("chat_test_batch_size_bucket{le=\"2\"} 0"), "{text}");
    }
}
