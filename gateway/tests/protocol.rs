//! The `/chat` protocol against the all-in-one server in this process (see `support`): the
//! spec's events and texts, and the rules of replay, at `cargo test` speed.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Server;

#[tokio::test]
async fn a_message_reaches_the_sender_and_the_other_member_once() {
    let server = Server::start().await;
    let conversation = server.conversation(1, 2).await;
    let (mut alice, mut bob) = (server.connect(1).await, server.connect(2).await);
    for client in [&mut alice, &mut bob] {
        let ack = client.emit_with_ack("join-conversation", json!({ "conversationId": conversation })).await;
        assert_eq!(ack, json!({ "success": true, "conversationId": conversation }));
        assert_eq!(client.next("joined-conversation").await["conversationId"], conversation);
    }

    let send = json!({ "sender_id": 1, "conversation_id": conversation, "message_type": "text", "content": "hi" });
    alice.emit("send-message", send).await;

    let sent = alice.next("message-sent").await;
    assert_eq!((sent["content"].as_str(), sent["sender_id"].as_i64()), (Some("hi"), Some(1)));
    assert_eq!(sent["conversation"], json!({ "id": conversation, "sender_id": 1, "receiver_id": 2 }));
    let received = bob.all_within("receive-message", Duration::from_millis(300)).await;
    assert_eq!(received.len(), 1, "once: {received:?}");
    assert_eq!(received[0]["id"], sent["id"]);
}

#[tokio::test]
async fn a_rejoin_replays_what_was_missed_in_order_before_live_messages() {
    let server = Server::start().await;
    let conversation = server.conversation(1, 2).await;
    let mut alice = server.connect(1).await;
    alice.emit_with_ack("join-conversation", json!({ "conversationId": conversation })).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let send = json!({ "sender_id": 1, "conversation_id": conversation, "message_type": "text", "content": n.to_string() });
        alice.emit("send-message", send).await;
        ids.push(alice.next("message-sent").await["id"].as_i64().expect("an id"));
    }

    let mut bob = server.connect(2).await;
    let join = json!({ "conversationId": conversation, "lastMessageId": ids[1] });
    assert_eq!(bob.emit_with_ack("join-conversation", join).await["success"], true);
    let replayed: Vec<i64> = bob
        .all_within("receive-message", Duration::from_millis(300))
        .await
        .iter()
        .filter_map(|m| m["id"].as_i64())
        .collect();
    assert_eq!(replayed, ids[2..].to_vec(), "the three after lastMessageId, in order, once each");
}

#[tokio::test]
async fn refusals_use_the_spec_s_texts() {
    let server = Server::start().await;
    let conversation = server.conversation(1, 2).await;
    let mut mallory = server.connect(3).await;

    let ack = mallory.emit_with_ack("join-conversation", json!({ "conversationId": conversation })).await;
    assert_eq!(ack["error"], "Unauthorized to join this conversation");
    assert_eq!(mallory.next("error").await["message"], "Unauthorized to join this conversation");

    mallory
        .emit("send-message", json!({ "conversation_id": conversation, "message_type": "text", "content": "x" }))
        .await;
    assert_eq!(
        mallory.next("message-error").await["error"],
        "sender_id should not be empty, sender_id must be an integer number"
    );

    let send = json!({ "sender_id": 3, "conversation_id": conversation, "message_type": "text", "content": "x" });
    mallory.emit("send-message", send).await;
    assert_eq!(
        mallory.next("message-error").await["error"],
        "Unauthorized to send to this conversation",
        "refused by the persister, worded by the gateway"
    );

    let send = json!({ "sender_id": 3, "conversation_id": 999_999, "message_type": "text", "content": "x" });
    mallory.emit("send-message", send).await;
    assert_eq!(mallory.next("message-error").await["error"], "Conversation not found");

    mallory.emit("no-such-event", json!({})).await;
    assert_eq!(mallory.next("error").await["message"], "Unknown event: no-such-event");
}

#[tokio::test]
async fn a_client_without_a_user_is_told_why_and_disconnected() {
    let server = Server::start().await;
    let mut client = support::Client::connect(server.address, "").await;
    assert_eq!(
        client.next("error").await["message"],
        "userId query parameter is required and must be a positive integer"
    );
    assert!(client.closed_within(support::WAIT).await, "disconnected after the error");
}
