//! The NATS bus against the machine's real NATS server (JetStream enabled).
//!
//! Each test uses its own subject prefix and stream, so runs never hear each other. Without a
//! reachable server the tests are skipped with a loud message, except under `CI=true`, where
//! that is a failure.

use std::time::Duration;

use bytes::Bytes;
use chat_bus::{Bus, BusError, NatsBus, NatsServers, WorkQueueSettings};
use futures::StreamExt;

const NATS_URL: &str = "nats://127.0.0.1:4222";

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| NATS_URL.to_owned())
}

fn settings(prefix: &str) -> WorkQueueSettings {
    let partitions = (0..4).map(|p| format!("{prefix}.in.{p}")).collect();
    let mut settings = WorkQueueSettings::new(format!("{prefix}_inbound"), format!("{prefix}.in.*"), partitions);
    settings.ack_wait = Duration::from_secs(1);
    settings
}

/// A bus on a fresh prefix, or `None` (test skipped) when NATS is absent outside CI.
async fn bus(test: &str) -> Option<(NatsBus, String)> {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let url = nats_url();
    let servers: NatsServers = url.parse().expect("NATS_URL parses");
    match NatsBus::connect(&servers, test, 1, settings(&prefix)).await {
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
    for stream in [format!("{prefix}_inbound"), format!("KV_{prefix}_presence"), format!("KV_{prefix}_lease")] {
        let _ = bus.delete_stream(&stream).await; // the buckets exist only in some tests
    }
}

async fn next_job(queue: &mut chat_bus::WorkQueue) -> chat_bus::Job {
    tokio::time::timeout(Duration::from_secs(5), queue.next()).await.expect("job in time").expect("queue open")
}

#[tokio::test]
async fn a_partition_hands_out_one_job_at_a_time_redelivering_until_acknowledged() {
    let Some((bus, prefix)) = bus("work_queue_redelivers").await else { return };
    let subject = format!("{prefix}.in.1");
    let before = std::time::SystemTime::now() - Duration::from_secs(1); // the server's clock is this machine's
    bus.enqueue(&subject, "id-1", Bytes::from_static(b"first")).await.unwrap();
    bus.enqueue(&subject, "id-1", Bytes::from_static(b"first again")).await.unwrap(); // duplicate id
    bus.enqueue(&subject, "id-2", Bytes::from_static(b"second")).await.unwrap();

    let mut queue = bus.work_queue("persister").await.unwrap();
    let first = next_job(&mut queue).await;
    assert_eq!(first.payload, "first");
    let stored_at = first.enqueued_at.expect("JetStream says when it stored a job");
    assert!(stored_at >= before && stored_at <= std::time::SystemTime::now(), "{stored_at:?}");
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
    let kv = bus.key_value(&bucket, "test: open sockets", None).await.unwrap();
    kv.put("gw-a.s1", Bytes::from_static(b"7")).await.unwrap();
    kv.put("gw-a.s2", Bytes::from_static(b"8")).await.unwrap();
    kv.delete("gw-a.s2").await.unwrap();
    drop(kv);
    let reopened = bus.key_value(&bucket, "test: open sockets", None).await.unwrap();
    let entries = reopened.entries().await.unwrap();
    assert_eq!(entries, vec![("gw-a.s1".to_owned(), Bytes::from_static(b"7"))]);
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn a_lease_is_taken_once_renewed_by_revision_and_expires() {
    let Some((bus, prefix)) = bus("lease").await else { return };
    let kv = bus.key_value(&format!("{prefix}_lease"), "test: a lease", Some(Duration::from_secs(2))).await.unwrap();
    let first = kv.create("leader", Bytes::from_static(b"a")).await.unwrap().expect("a free key is created");
    assert_eq!(kv.create("leader", Bytes::from_static(b"b")).await.unwrap(), None, "a held key is not");
    let renewed = kv.update("leader", Bytes::from_static(b"a"), first).await.unwrap().expect("its revision renews it");
    assert_eq!(kv.update("leader", Bytes::from_static(b"b"), first).await.unwrap(), None, "a stale revision does not");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(kv.update("leader", Bytes::from_static(b"a"), renewed).await.unwrap(), None, "an expired lease is gone");
    assert!(kv.create("leader", Bytes::from_static(b"b")).await.unwrap().is_some(), "and free to take");
    clean_up(&bus, &prefix).await;
}

/// The stream's and a consumer's replica counts as the server holds them.
async fn stream_replicas(prefix: &str, stream: &str, consumer: Option<&str>) -> (usize, Option<usize>) {
    let client = async_nats::connect(nats_url()).await.expect("connects");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(stream).await.unwrap_or_else(|e| panic!("{prefix}: {e}"));
    let replicas = stream.info().await.expect("stream info").config.num_replicas;
    let consumer = match consumer {
        Some(name) => Some(stream.consumer_info(name).await.expect("consumer info").config.num_replicas),
        None => None,
    };
    (replicas, consumer)
}

#[tokio::test]
async fn the_stream_its_consumers_and_buckets_get_the_replica_count() {
    let Some((bus, prefix)) = bus("replicas_one").await else { return };
    let _queue = bus.work_queue("persister").await.unwrap();
    let _kv = bus.key_value(&format!("{prefix}_presence"), "test: open sockets", None).await.unwrap();
    let (stream, consumer) = stream_replicas(&prefix, &format!("{prefix}_inbound"), Some("persister-3")).await;
    assert_eq!((stream, consumer), (1, Some(1)));
    let (bucket, _) = stream_replicas(&prefix, &format!("KV_{prefix}_presence"), None).await;
    assert_eq!(bucket, 1);
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn an_existing_consumer_is_updated_to_the_new_configuration() {
    let Some((bus, prefix)) = bus("consumer_update").await else { return };
    drop(bus.work_queue("persister").await.unwrap());
    // A later start with another setting (the replica count, on a cluster; the ack wait here)
    // changes the consumers, rather than keeping the old ones as they were.
    let mut changed = settings(&prefix);
    changed.ack_wait = Duration::from_secs(3);
    let servers: NatsServers = nats_url().parse().expect("NATS_URL parses");
    let again = NatsBus::connect(&servers, "consumer_update", 1, changed).await.unwrap();
    drop(again.work_queue("persister").await.unwrap());
    let client = async_nats::connect(nats_url()).await.unwrap();
    let stream = async_nats::jetstream::new(client).get_stream(format!("{prefix}_inbound")).await.unwrap();
    for p in 0..4 {
        let info = stream.consumer_info(format!("persister-{p}")).await.unwrap();
        assert_eq!(info.config.ack_wait, Duration::from_secs(3), "persister-{p}");
    }
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn more_replicas_than_a_single_server_can_keep_is_refused_before_anything_changes() {
    let Some((bus, prefix)) = bus("replicas_refused").await else { return };
    let servers: NatsServers = nats_url().parse().expect("NATS_URL parses");
    let client = async_nats::connect(nats_url()).await.unwrap();
    if client.server_info().cluster.is_some() {
        eprintln!("\n!!! SKIPPING replicas_refused: the NATS at {servers} is part of a cluster\n");
        clean_up(&bus, &prefix).await;
        return;
    }
    // The stream exists with one replica; a role asking for three must not change it.
    let err = match NatsBus::connect(&servers, "replicas_refused", 3, settings(&prefix)).await {
        Ok(_) => panic!("3 replicas accepted by a single server"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(matches!(err, BusError::Replicas { replicas: 3, .. }), "{err:?}");
    assert!(
        text.contains(&format!("stream {prefix}_inbound")) && text.contains("not part of a NATS cluster"),
        "{text}"
    );
    let (stream, _) = stream_replicas(&prefix, &format!("{prefix}_inbound"), None).await;
    assert_eq!(stream, 1, "the stream kept its replica count");

    // A new prefix: no stream is created either.
    let fresh = format!("t{}", uuid::Uuid::new_v4().simple());
    assert!(NatsBus::connect(&servers, "replicas_refused", 3, settings(&fresh)).await.is_err());
    let jetstream = async_nats::jetstream::new(client);
    assert!(jetstream.get_stream(format!("{fresh}_inbound")).await.is_err(), "no stream created");
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn any_server_of_the_list_that_answers_will_do() {
    let Some((bus, prefix)) = bus("several_urls").await else { return };
    // A port nothing listens on first: the client goes on to the next server of the list.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let servers: NatsServers = format!("nats://{closed},{}", nats_url()).parse().expect("parses");
    assert_eq!(servers.len(), 2);
    let other = NatsBus::connect(&servers, "several_urls", 1, settings(&prefix)).await.unwrap();
    assert!(other.is_connected());
    let mut queue = other.work_queue("persister").await.unwrap();
    bus.enqueue(&format!("{prefix}.in.0"), "m1", Bytes::from_static(b"hello")).await.unwrap();
    let job = next_job(&mut queue).await;
    assert_eq!(job.payload, "hello");
    job.ack().await.unwrap();
    clean_up(&bus, &prefix).await;
}

#[tokio::test]
async fn an_existing_stream_is_updated_to_the_new_configuration() {
    let Some((bus, prefix)) = bus("stream_update").await else { return };
    let mut changed = settings(&prefix);
    changed.max_age = Duration::from_secs(3600);
    let servers: NatsServers = nats_url().parse().expect("NATS_URL parses");
    let _again = NatsBus::connect(&servers, "stream_update", 1, changed).await.unwrap();
    let client = async_nats::connect(nats_url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client).get_stream(format!("{prefix}_inbound")).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_age, Duration::from_secs(3600));
    clean_up(&bus, &prefix).await;
}
