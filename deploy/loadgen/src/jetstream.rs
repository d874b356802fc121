//! The `jetstream-bench` mode: the raw rate at which this box's NATS server stores JetStream
//! publishes (file storage, each publish acknowledged), to read the chat numbers against.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct JetStreamReport {
    pub mode: &'static str,
    pub messages: u64,
    pub payload_bytes: usize,
    pub in_flight: usize,
    pub seconds: f64,
    pub publishes_per_s: f64,
    pub ok: bool,
}

/// Publishes `messages` payloads of `size` bytes to a fresh stream named `stream_name` (deleted
/// afterwards), with at most `in_flight` publishes awaiting their ack.
pub async fn run(
    nats_url: &str,
    stream_name: &str,
    messages: u64,
    size: usize,
    in_flight: usize,
) -> anyhow::Result<JetStreamReport> {
    let client = async_nats::connect(nats_url).await.with_context(|| format!("connecting to {nats_url}"))?;
    let js = jetstream::new(client);
    let subject = format!("{stream_name}.in");
    js.create_stream(stream::Config {
        name: stream_name.to_owned(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {stream_name}"))?;
    let outcome = publish_all(&js, &subject, messages, size, in_flight.max(1)).await;
    js.delete_stream(stream_name).await.with_context(|| format!("deleting stream {stream_name}"))?;
    let seconds = outcome?;
    Ok(JetStreamReport {
        mode: "jetstream-bench",
        messages,
        payload_bytes: size,
        in_flight,
        seconds,
        publishes_per_s: messages as f64 / seconds,
        ok: true,
    })
}

async fn publish_all(
    js: &jetstream::Context,
    subject: &str,
    messages: u64,
    size: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let payload = Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(in_flight);
    for _ in 0..messages {
        if pending.len() >= in_flight {
            if let Some(ack) = pending.pop_front() {
                let _: jetstream::publish::PublishAck = ack.await?;
            }
        }
        pending.push_back(js.publish(subject.to_owned(), payload.clone()).await?);
    }
    for ack in pending {
        ack.await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

impl JetStreamReport {
    pub fn print_table(&self) {
        println!(
            "JetStream: {} publishes of {} bytes ({} in flight) in {:.2} s: {:.0} publishes/s",
            self.messages, self.payload_bytes, self.in_flight, self.seconds, self.publishes_per_s
        );
    }
}
