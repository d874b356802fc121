//! Two presence replicas on one bus: exactly one announces, and when it dies the other takes
//! over, announcing what the first had not and nothing it had.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_bus::{Bus, MemoryBus};
use chat_presence::{Presence, PresenceConfig};
use chat_proto::{
    gateway_event, presence_report::Report, ContactList, GatewayEvent, ListContacts, PresenceReport, SocketEvent,
    Subjects, RPC_LIST_CONTACTS,
};
use futures::StreamExt;

const LEASE: Duration = Duration::from_secs(1);
const GATEWAY: &str = "gw-1";
/// Users 1 to 4 are all each other's contacts.
const USERS: [i64; 4] = [1, 2, 3, 4];

/// Answers contact lookups as the persister would.
async fn answer_contacts(bus: Arc<dyn Bus>, subjects: &Subjects) {
    let mut queries = bus.queue_subscribe(&subjects.rpc(RPC_LIST_CONTACTS), "persister").await.unwrap();
    tokio::spawn(async move {
        while let Some(query) = queries.next().await {
            let asked: ListContacts = chat_proto::decode(&query.payload).unwrap();
            let contacts =
                ContactList { user_ids: USERS.into_iter().filter(|u| *u != asked.user_id).collect(), error: None };
            if let Some(reply) = query.reply {
                bus.publish(&reply, chat_proto::encode(&contacts)).await.unwrap();
            }
        }
    });
}

/// Every announcement the gateway hears: (user, online).
async fn hear_announcements(bus: &dyn Bus, subjects: &Subjects) -> Arc<Mutex<Vec<(i64, bool)>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mut events = bus.subscribe(&subjects.gateway(GATEWAY)).await.unwrap();
    let log = heard.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let event: GatewayEvent = chat_proto::decode(&event.payload).unwrap();
            if let Some(gateway_event::Event::Presence(change)) = event.event {
                log.lock().unwrap().push((change.user_id, change.online));
            }
        }
    });
    heard
}

async fn report(bus: &dyn Bus, subjects: &Subjects, user_id: i64, connected: bool) {
    let event = SocketEvent { gateway_id: GATEWAY.into(), socket_id: format!("s{user_id}"), user_id, connected };
    let report = PresenceReport { report: Some(Report::Socket(event)) };
    bus.publish(&subjects.presence_reports(), chat_proto::encode(&report)).await.unwrap();
}

fn replica(bus: &MemoryBus, subjects: &Subjects, name: &str) -> Presence {
    let config = PresenceConfig { lease: LEASE, replica_id: name.into(), ..PresenceConfig::default() };
    Presence::new(Arc::new(bus.clone()), subjects.clone(), config)
}

/// Waits until `heard` holds `expected` (in any order), then a little longer, and checks that
/// nothing else came.
async fn expect_exactly(heard: &Mutex<Vec<(i64, bool)>>, expected: &[(i64, bool)], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = heard.lock().unwrap().clone();
        if expected.iter().all(|e| got.contains(e)) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = heard.lock().unwrap().clone();
    let mut want = expected.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each transition announced exactly once");
}

#[tokio::test]
async fn one_of_two_replicas_announces_and_the_other_takes_over_when_it_dies() {
    let bus = MemoryBus::new();
    let subjects = Subjects::new("replicas");
    answer_contacts(Arc::new(bus.clone()), &subjects).await;
    let heard = hear_announcements(&bus, &subjects).await;

    let first = replica(&bus, &subjects, "first").start().await.unwrap();
    tokio::time::sleep(LEASE / 4).await; // the first takes the lease
    let second = replica(&bus, &subjects, "second").start().await.unwrap();

    // User 1 watches from the gateway; 2 comes online: announced once, not once per replica.
    report(&bus, &subjects, 1, true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    report(&bus, &subjects, 2, true).await;
    expect_exactly(&heard, &[(2, true)], Duration::from_secs(2)).await;

    // The announcing replica dies. Meanwhile 3 comes online and 2 goes offline: nobody
    // announces them until the second replica holds the lease, then it announces both, and
    // not 2's earlier online again.
    first.abort();
    report(&bus, &subjects, 3, true).await;
    report(&bus, &subjects, 2, false).await;
    expect_exactly(&heard, &[(2, true), (3, true), (2, false)], LEASE * 3).await;

    // From then on the second replica announces as it goes.
    report(&bus, &subjects, 4, true).await;
    expect_exactly(&heard, &[(2, true), (3, true), (2, false), (4, true)], Duration::from_secs(2)).await;
    second.abort();
}
