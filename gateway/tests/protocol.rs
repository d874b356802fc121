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

/// Sends `content` as `client`'s user and returns the stored message's id.
async fn send(client: &mut support::Client, user: i64, conversation: i64, content: &str) -> i64 {
    let send =
        json!({ "sender_id": user, "conversation_id": conversation, "message_type": "text", "content": content });
    client.emit("send-message", send).await;
    client.next("message-sent").await["id"].as_i64().expect("an id")
}

#[tokio::test]
async fn a_read_receipt_reaches_the_room_and_the_reader_s_other_sockets_once() {
    let server = Server::start().await;
    let conversation = server.conversation(1, 2).await;
    let (mut alice, mut bob) = (server.connect(1).await, server.connect(2).await);
    let mut bob_elsewhere = server.connect(2).await; // not joined to the room
    for client in [&mut alice, &mut bob] {
        client.emit_with_ack("join-conversation", json!({ "conversationId": conversation })).await;
    }
    let first = send(&mut alice, 1, conversation, "one").await;
    let second = send(&mut alice, 1, conversation, "two").await;

    let ack = bob.emit_with_ack("mark-read", json!({ "conversationId": conversation, "messageId": second })).await;
    assert_eq!(ack, json!({ "success": true, "conversationId": conversation, "messageId": second }));
    for client in [&mut alice, &mut bob, &mut bob_elsewhere] {
        let read = client.all_within("message-read", Duration::from_millis(300)).await;
        assert_eq!(read.len(), 1, "once each: {read:?}");
        assert_eq!((read[0]["userId"].as_i64(), read[0]["messageId"].as_i64()), (Some(2), Some(second)));
        assert!(read[0]["readAt"].as_str().is_some_and(|at| at.ends_with('Z')));
    }

    // An older message: success with the current position, and nothing announced.
    let ack = bob.emit_with_ack("mark-delivered", json!({ "conversationId": conversation, "messageId": first })).await;
    assert_eq!(ack["messageId"], second, "reading implied delivered up to {second}");
    assert!(alice.all_within("message-delivered", Duration::from_millis(300)).await.is_empty());
}

#[tokio::test]
async fn receipts_are_refused_for_foreign_messages_and_non_members() {
    let server = Server::start().await;
    let conversation = server.conversation(1, 2).await;
    let other = server.conversation(1, 3).await;
    let mut alice = server.connect(1).await;
    let foreign = send(&mut alice, 1, other, "elsewhere").await;
    let mut bob = server.connect(2).await;

    let refusals = [
        (json!({ "conversationId": conversation, "messageId": foreign }), "Message not found in this conversation"),
        (
            json!({ "conversationId": conversation, "messageId": foreign + 1000 }),
            "Message not found in this conversation",
        ),
        (json!({ "conversationId": other, "messageId": foreign }), "Unauthorized to join this conversation"),
        (json!({ "conversationId": 999_999, "messageId": foreign }), "Conversation not found"),
        (
            json!({ "conversationId": conversation }),
            "messageId should not be empty, messageId must be an integer number",
        ),
    ];
    for (payload, text) in refusals {
        let ack = bob.emit_with_ack("mark-read", payload.clone()).await;
        assert_eq!(ack["success"], false, "{payload}");
        assert_eq!(ack["error"], text, "{payload}");
        assert_eq!(ack["conversationId"], payload["conversationId"], "echoed");
        assert_eq!(bob.next("error").await["message"], text);
    }
}

#[tokio::test]
async fn a_replaying_join_gets_the_members_positions_after_the_missed_messages() {
    let server = Server::start().await;
    let conversation = server.conversation(1, 2).await;
    let mut alice = server.connect(1).await;
    let first = send(&mut alice, 1, conversation, "one").await;
    let second = send(&mut alice, 1, conversation, "two").await;
    let mut bob = server.connect(2).await;
    bob.emit_with_ack("mark-delivered", json!({ "conversationId": conversation, "messageId": second })).await;

    let mut alice_again = server.connect(1).await;
    let join = json!({ "conversationId": conversation, "lastMessageId": first });
    alice_again.emit_with_ack("join-conversation", join).await;
    assert_eq!(alice_again.next("receive-message").await["id"], second);
    let delivered = alice_again.all_within("message-delivered", Duration::from_millis(300)).await;
    let by_user: Vec<(i64, i64)> =
        delivered.iter().filter_map(|d| Some((d["userId"].as_i64()?, d["messageId"].as_i64()?))).collect();
    assert_eq!(by_user, vec![(1, second), (2, second)], "the sender's own and the receiver's");
}
