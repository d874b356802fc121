//! An in-process chat server and a small Socket.IO client, so that a protocol test is a few
//! lines of Rust: [`Server::start`] runs the all-in-one mode (in-memory bus, SQLite in a
//! temporary directory, persister, presence, gateway) on a free port; [`Client`] speaks
//! Engine.IO 4 / Socket.IO 5 over a WebSocket, text packets only, to the `/chat` namespace.
//! The JavaScript suite (`tests/e2e/`) drives the release binary with the official client;
//! this harness is for rules worth checking at `cargo test` speed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat_bus::{Bus, MemoryBus};
use chat_gateway::GatewayConfig;
use chat_persister::{Persister, PersisterConfig, Store};
use chat_presence::{Presence, PresenceConfig};
use chat_proto::{conversation_reply, ConversationReply, OpenConversation, Subjects, RPC_OPEN_CONVERSATION};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub address: std::net::SocketAddr,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    stop: CancellationToken,
    _data: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(axum::Router::new()).await
    }

    /// The server with `routes` beside the gateway's, merged as `chat` merges its operations
    /// endpoints (`/metrics`, say): outside the gateway's own layers.
    pub async fn start_with(routes: axum::Router) -> Server {
        let data = tempfile::tempdir().expect("a temporary directory");
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let subjects = Subjects::default();
        let store = Store::open_sqlite(data.path()).await.expect("SQLite opens");
        let stop = CancellationToken::new();
        Persister::new(bus.clone(), subjects.clone(), store, PersisterConfig::default())
            .start(stop.clone())
            .await
            .expect("the persister starts");
        Presence::new(bus.clone(), subjects.clone(), PresenceConfig::default()).start().await.expect("presence starts");
        let (_gateway, app) = chat_gateway::start(bus.clone(), subjects.clone(), GatewayConfig::default())
            .await
            .expect("the gateway starts");
        let app = app.merge(routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("a bound address");
        let serving = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(serving.cancelled_owned()).await;
        });
        Server { address, bus, subjects, stop, _data: data }
    }

    /// The conversation of two users, opened as `POST /api/chats/conversations` would.
    pub async fn conversation(&self, a: i64, b: i64) -> i64 {
        let query = OpenConversation { sender_id: a, receiver_id: b };
        let reply = self
            .bus
            .request(&self.subjects.rpc(RPC_OPEN_CONVERSATION), chat_proto::encode(&query), WAIT)
            .await
            .expect("the persister answers");
        match chat_proto::decode::<ConversationReply>(&reply).expect("a reply").result {
            Some(conversation_reply::Result::Conversation(conversation)) => conversation.id,
            other => panic!("no conversation: {other:?}"),
        }
    }

    /// A client of user `user_id`, connected to `/chat` (development mode: the `userId` query).
    pub async fn connect(&self, user_id: i64) -> Client {
        Client::connect(self.address, &format!("userId={user_id}")).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Events received and not yet asked for: (name, first argument).
    events: VecDeque<(String, Value)>,
    /// Acknowledgements received, by id.
    acks: VecDeque<(u64, Value)>,
    next_ack: u64,
}

const NAMESPACE: &str = "/chat";

impl Client {
    /// Connects with `query` on the handshake URL, then joins the namespace.
    pub async fn connect(address: std::net::SocketAddr, query: &str) -> Client {
        let url = format!("ws://{address}/socket.io/?EIO=4&transport=websocket&{query}");
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("the WebSocket opens");
        let mut client = Client { socket, events: VecDeque::new(), acks: VecDeque::new(), next_ack: 0 };
        let open = client.read_text().await;
        assert!(open.starts_with('0'), "an Engine.IO open packet, got {open}");
        client.send_text(format!("40{NAMESPACE},")).await;
        loop {
            let packet = client.read_text().await;
            if let Some(body) = packet.strip_prefix(&format!("40{NAMESPACE},")) {
                assert!(body.contains("sid"), "a namespace connect, got {packet}");
                return client;
            }
            assert!(!packet.starts_with(&format!("44{NAMESPACE},")), "the namespace refused: {packet}");
            client.take(&packet);
        }
    }

    /// Emits `event` with `payload`.
    pub async fn emit(&mut self, event: &str, payload: Value) {
        let packet = format!("42{NAMESPACE},{}", Value::Array(vec![event.into(), payload]));
        self.send_text(packet).await;
    }

    /// Emits `event` with `payload` and waits for the server's acknowledgement.
    pub async fn emit_with_ack(&mut self, event: &str, payload: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let packet = format!("42{NAMESPACE},{id}{}", Value::Array(vec![event.into(), payload]));
        self.send_text(packet).await;
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(at) = self.acks.iter().position(|(ack, _)| *ack == id) {
                    return self.acks.remove(at).map(|(_, value)| value).unwrap_or_default();
                }
                let packet = self.read_text().await;
                self.take(&packet);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no acknowledgement of {event} within {WAIT:?}"))
    }

    /// The first argument of the next `event` received (earlier ones of other names are kept).
    pub async fn next(&mut self, event: &str) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(at) = self.events.iter().position(|(name, _)| name == event) {
                    return self.events.remove(at).map(|(_, value)| value).unwrap_or_default();
                }
                let packet = self.read_text().await;
                self.take(&packet);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {event} within {WAIT:?}; received {:?}", self.events))
    }

    /// Every `event` received within `wait`, in order.
    pub async fn all_within(&mut self, event: &str, wait: Duration) -> Vec<Value> {
        let _ = tokio::time::timeout(wait, async {
            loop {
                let packet = self.read_text().await;
                self.take(&packet);
            }
        })
        .await;
        let (wanted, others) = std::mem::take(&mut self.events).into_iter().partition(|(name, _)| name == event);
        self.events = others;
        wanted.into_iter().map(|(_, value): (String, Value)| value).collect()
    }

    /// Whether the server disconnects this client from the namespace, or closes its
    /// connection, within `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let disconnect = format!("41{NAMESPACE}");
        tokio::time::timeout(wait, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str().starts_with(&disconnect) => return,
                    Some(Ok(Message::Text(text))) => self.take(text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .is_ok()
    }

    async fn send_text(&mut self, packet: String) {
        self.socket.send(Message::text(packet)).await.expect("the WebSocket takes a packet");
    }

    /// The next text packet, answering pings on the way.
    async fn read_text(&mut self) -> String {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => self.send_text("3".into()).await,
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the WebSocket failed: {e}"),
                None => panic!("the server closed the WebSocket"),
            }
        }
    }

    /// Files a Socket.IO packet of the namespace: an event or an acknowledgement.
    fn take(&mut self, packet: &str) {
        if let Some(body) = packet.strip_prefix(&format!("42{NAMESPACE},")) {
            if let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(body) {
                if !parts.is_empty() {
                    let name = parts.remove(0).as_str().unwrap_or_default().to_owned();
                    self.events.push_back((name, parts.into_iter().next().unwrap_or_default()));
                }
            }
        } else if let Some(body) = packet.strip_prefix(&format!("43{NAMESPACE},")) {
            let digits = body.chars().take_while(char::is_ascii_digit).count();
            let id = body[..digits].parse().unwrap_or(u64::MAX);
            if let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(&body[digits..]) {
                self.acks.push_back((id, parts.into_iter().next().unwrap_or_default()));
            }
        }
    }
}
