//! The NATS bus against the machine's real NATS server (JetStream enabled).
//!
//! Each test uses its own subject prefix and stream, so runs never hear each other. Without a
//! reachable server the tests are skipped with a loud message, except under `CI=true`, where
//! that is a failure.

use std::time::Duration;

use bytes::Bytes;
use chat_bus::{Bus, BusError, NatsBus, WorkQueueSettings};
use futures::StreamExt;

const NATS_URL: &str = "nats://127.0.0.1:4222";

/// A bus on a fresh prefix, or `None` (test skipped) when NATS is absent outside CI.
async fn bus(test: &str) -> Option<(NatsBus, String)> {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let partitions = (0..4).map(|p| format!("{prefix}.in.{p}")).collect();
    let mut settings = WorkQueueSettings::new(format!("{prefix}_inbound"), format!("{prefix}.in.*"), partitions);
    settings.ack_wait = Duration::from_secs(1);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned());
    match NatsBus::connect(&url, test, settings).await {
        Ok(bus) => Some((bus, prefix)),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("NATS is required under CI: {e}")
        }
        Err(e) => {
            eprintln!("\n!!! SKIPPING {test}: NATS not reachable at {url}: {e}\n");
            None
        }
    }
}

/// Deletes what a test created on the server.
async fn clean_up(bus: &NatsBus, prefix: &str) {
    for stream in [format!("{prefix}_inbound"), format!("KV_{prefix}_presence")] {
        let _ = bus.delete_stream(&stream).await; // the bucket exists only in one test
    }
}

async fn next_job(queue: &mut chat_bus::WorkQueue) -> chat_bus::Job {
    tokio::time::timeout(Duration::from_secs(5), queue.next()).await.expect("job in time").expect("queue open")
}

#[tokio::test]
async fn a_partition_hands_out_one_job_at_a_time_redelivering_until_acknowledged() {
    let Some((bus, prefix)) = bus("work_queue_redelivers").await else { return };
    let subject = format!("{prefix}.in.1");
    bus.enqueue(&subject, "id-1", Bytes::from_static(b"first")).await.unwrap();
    bus.enqueue(&subject, "id-1", Bytes::from_static(b"first again")).await.unwrap(); // duplicate id
    bus.enqueue(&subject, "id-2", Bytes::from_static(b"second")).await.unwrap();

    let mut queue = bus.work_queue("persister").await.unwrap();
    let first = next_job(&mut queue).await;
    assert_eq!(first.payload, "first");
    drop(first); // never acknowledged: it comes back after ack_wait, and nothing overtakes it
    let again = next_job(&mut queue).await;
    assert_eq!(again.payload, "first");
    again.ack().await.unwrap();
    let second = next_job(&mut queue).await;
    assert_eq!(second.payload, "second", "the duplicate id was dropped");
    second.ack().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(1500), queue.next()).await.is_err(), "nothing else");
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn a_second_consumer_with_the_same_name_shares_the_jobs() {
    let Some((bus, prefix)) = bus("consumers_share").await else {
        return;
    };
    let mut a = bus.work_queue("persister").await.unwrap();
    let mut b = bus.work_queue("persister").await.unwrap();
    for i in 0..20 {
        bus.enqueue(&format!("{prefix}.in.{}", i % 4), &format!("m{i}"), Bytes::from(vec![i as u8])).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let job = tokio::select! {
            Some(job) = a.next() => job,
            Some(job) = b.next() => job,
            _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("only {} of 20 jobs arrived", seen.len()),
        };
        seen.push(job.payload[0]);
        job.ack().await.unwrap();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u8>>(), "every job exactly once");
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn requests_get_answers_or_a_clear_error() {
    let Some((bus, prefix)) = bus("requests").await else {
        return;
    };
    let subject = format!("{prefix}.rpc.echo");
    let err = bus.request(&subject, Bytes::new(), Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(err, BusError::NoResponders { .. } | BusError::Timeout { .. }), "{err}");

    let mut server = bus.queue_subscribe(&subject, "workers").await.unwrap();
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(request) = server.next().await {
            let reply = request.reply.expect("reply subject");
            responder.publish(&reply, request.payload).await.unwrap();
        }
    });
    let answer = bus.request(&subject, Bytes::from_static(b"ping"), Duration::from_secs(2)).await.unwrap();
    assert_eq!(answer, "ping");
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn key_value_entries_outlive_the_handle() {
    let Some((bus, prefix)) = bus("key_value").await else {
        return;
    };
    let bucket = format!("{prefix}_presence");
    let kv = bus.key_value(&bucket).await.unwrap();
    kv.put("gw-a.s1", Bytes::from_static(b"7")).await.unwrap();
    kv.put("gw-a.s2", Bytes::from_static(b"8")).await.unwrap();
    kv.delete("gw-a.s2").await.unwrap();
    drop(kv);
    let reopened = bus.key_value(&bucket).await.unwrap();
    let entries = reopened.entries().await.unwrap();
    assert_eq!(entries, vec![("gw-a.s1".to_owned(), Bytes::from_static(b"7"))]);
    clean_up(&bus, &prefix).await;
}
