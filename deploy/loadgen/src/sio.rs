//! The part of Socket.IO v4 (over Engine.IO v4, WebSocket transport only) that a load generator
//! needs: open a socket on the `/chat` namespace, answer pings, emit events with or without an
//! ack id, and classify what the server sends. A full client (reconnection, polling, binary
//! attachments) would cost CPU that the servers under test need more.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The namespace of the chat API.
pub const NAMESPACE: &str = "/chat";

/// Bytes the WebSocket reads at a time (see `connect`).
const READ_BUFFER_BYTES: usize = 4 * 1024;

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Debug, thiserror::Error)]
pub enum SioError {
    #[error("{0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("the server refused the namespace: {0}")]
    Refused(String),
    #[error("the server closed the connection during {0}")]
    Closed(&'static str),
    #[error("no answer within {0:?} during {1}")]
    Timeout(Duration, &'static str),
    #[error("{0}")]
    Rejected(String),
}

/// A server to connect to: `http://host:port` or `ws://host:port` (a path is ignored), resolved
/// once so that thousands of connections do not each look the name up.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, as given: the `Host` header and the base of REST URLs.
    pub authority: String,
    pub addr: SocketAddr,
}

impl Endpoint {
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .ok_or_else(|| anyhow::anyhow!("{url}: only http:// and ws:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default().to_owned();
        let with_port = if authority.contains(':') { authority.clone() } else { format!("{authority}:80") };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{url}: the name resolves to no address"))?;
        Ok(Self { authority, addr })
    }
}

/// One frame from the server, classified.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    /// Engine.IO open packet (`0{...}`).
    Open,
    /// Engine.IO ping: answer with [`PONG`].
    Ping,
    /// The namespace accepted the socket (`40/chat,{...}`).
    Connected,
    /// The namespace refused the socket (`44/chat,{...}`); the payload as sent.
    ConnectError(&'a str),
    /// An event (`42/chat,["name",payload]`).
    Event { name: &'a str, payload: &'a str },
    /// The answer to an event emitted with an ack id (`43/chat,<id>[...]`); the arguments as a
    /// JSON array.
    Ack { id: u64, args: &'a str },
    /// The server closed the namespace or the Engine.IO session.
    Disconnected,
    /// Anything else (noop, upgrade, events without payload, other namespaces).
    Other,
}

/// The Engine.IO pong that answers a ping.
pub const PONG: &str = "3";

pub fn parse(frame: &str) -> Inbound<'_> {
    let Some(kind) = frame.as_bytes().first() else { return Inbound::Other };
    match kind {
        b'0' => Inbound::Open,
        b'1' => Inbound::Disconnected,
        b'2' => Inbound::Ping,
        b'4' => parse_socketio(&frame[1..]),
        _ => Inbound::Other,
    }
}

fn parse_socketio(packet: &str) -> Inbound<'_> {
    let Some(kind) = packet.as_bytes().first() else { return Inbound::Other };
    let Some(rest) = packet[1..].strip_prefix(NAMESPACE).and_then(|r| r.strip_prefix(',').or(Some(r))) else {
        return Inbound::Other;
    };
    match kind {
        b'0' => Inbound::Connected,
        b'1' => Inbound::Disconnected,
        b'4' => Inbound::ConnectError(rest),
        b'2' => {
            let body = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            match serde_json::from_str::<(&str, &RawValue)>(body) {
                Ok((name, payload)) => Inbound::Event { name, payload: payload.get() },
                Err(_) => Inbound::Other,
            }
        }
        b'3' => {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            match rest[..digits].parse() {
                Ok(id) => Inbound::Ack { id, args: &rest[digits..] },
                Err(_) => Inbound::Other,
            }
        }
        _ => Inbound::Other,
    }
}

/// The packet that emits `name` with a JSON `payload` on the chat namespace, asking for an
/// acknowledgement when `ack` is set.
pub fn event(name: &str, payload: &str, ack: Option<u64>) -> String {
    match ack {
        Some(id) => format!("42{NAMESPACE},{id}[\"{name}\",{payload}]"),
        None => format!("42{NAMESPACE},[\"{name}\",{payload}]"),
    }
}

/// Opens a WebSocket to `endpoint` as `user_id` (development mode: the `userId` query) and
/// connects the chat namespace. `bind` picks the local address (more source addresses, more
/// ephemeral ports).
pub async fn connect(endpoint: &Endpoint, user_id: u64, bind: Option<IpAddr>, limit: Duration) -> Result<Ws, SioError> {
    connect_with_token(endpoint, user_id, None, bind, limit).await
}

/// [`connect`], presenting a JWT in the namespace's `auth` payload (`{"token": ...}`) when
/// given; the `userId` query is sent too, and a JWT-mode server checks that it matches.
pub async fn connect_with_token(
    endpoint: &Endpoint,
    user_id: u64,
    token: Option<&str>,
    bind: Option<IpAddr>,
    limit: Duration,
) -> Result<Ws, SioError> {
    let socket = if endpoint.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .map_err(|e| SioError::Io("socket", e))?;
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| SioError::Io("bind", e))?;
    }
    let stream = tokio::time::timeout(limit, socket.connect(endpoint.addr))
        .await
        .map_err(|_| SioError::Timeout(limit, "TCP connect"))?
        .map_err(|e| SioError::Io("connect", e))?;
    // Latency is what is measured: no Nagle delay on small frames.
    stream.set_nodelay(true).map_err(|e| SioError::Io("nodelay", e))?;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket&userId={user_id}", endpoint.authority);
    // tungstenite zero-fills its read buffer on every read (128 KiB by default): a few KiB hold
    // any frame of ours and keep that off the cores the servers under test share.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) =
        tokio::time::timeout(limit, tokio_tungstenite::client_async_with_config(url, stream, Some(config)))
            .await
            .map_err(|_| SioError::Timeout(limit, "WebSocket handshake"))??;
    wait_for(&mut ws, limit, "Engine.IO open", |frame| match frame {
        Inbound::Open => Some(Ok(())),
        _ => None,
    })
    .await?;
    let auth = match token {
        Some(token) => serde_json::json!({ "token": token }).to_string(),
        None => String::new(),
    };
    ws.send(Message::text(format!("40{NAMESPACE},{auth}"))).await?;
    wait_for(&mut ws, limit, "namespace connect", |frame| match frame {
        Inbound::Connected => Some(Ok(())),
        Inbound::ConnectError(why) => Some(Err(SioError::Refused(why.to_owned()))),
        _ => None,
    })
    .await?;
    Ok(ws)
}

/// Joins the room of `conversation` and waits for the server's acknowledgement.
pub async fn join(ws: &mut Ws, conversation: u64, user_id: u64, limit: Duration) -> Result<(), SioError> {
    const JOIN_ACK: u64 = 0;
    let payload = format!("{{\"conversationId\":{conversation},\"userId\":{user_id}}}");
    ws.send(Message::text(event("join-conversation", &payload, Some(JOIN_ACK)))).await?;
    wait_for(ws, limit, "join-conversation", |frame| match frame {
        Inbound::Ack { id: JOIN_ACK, args } if args.contains("\"success\":true") => Some(Ok(())),
        Inbound::Ack { id: JOIN_ACK, args } => Some(Err(SioError::Rejected(format!("join refused: {args}")))),
        _ => None,
    })
    .await
}

/// Reads frames, answering pings, until `accept` decides; other frames are dropped.
pub async fn wait_for(
    ws: &mut Ws,
    limit: Duration,
    during: &'static str,
    mut accept: impl FnMut(Inbound<'_>) -> Option<Result<(), SioError>>,
) -> Result<(), SioError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| SioError::Timeout(limit, during))?
            .ok_or(SioError::Closed(during))??;
        let Message::Text(text) = frame else { continue };
        match parse(&text) {
            Inbound::Ping => ws.send(Message::text(PONG)).await?,
            Inbound::Disconnected => return Err(SioError::Closed(during)),
            Inbound::Event { name: "error", payload } => return Err(SioError::Rejected(payload.to_owned())),
            other => {
                if let Some(outcome) = accept(other) {
                    return outcome;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_engineio_and_socketio_packets() {
        assert_eq!(parse(r#"0{"sid":"x","pingInterval":25000}"#), Inbound::Open);
        assert_eq!(parse("2"), Inbound::Ping);
        assert_eq!(parse("1"), Inbound::Disconnected);
        assert_eq!(parse(r#"40/chat,{"sid":"abc"}"#), Inbound::Connected);
        assert_eq!(parse("41/chat,"), Inbound::Disconnected);
        assert_eq!(parse(r#"44/chat,{"message":"no"}"#), Inbound::ConnectError(r#"{"message":"no"}"#));
        assert_eq!(parse(r#"40{"sid":"main namespace"}"#), Inbound::Other);
        assert_eq!(parse(""), Inbound::Other);
    }

    #[test]
    fn events_yield_name_and_raw_payload_with_or_without_ack_id() {
        for frame in [r#"42/chat,["message-sent",{"id":7}]"#, r#"42/chat,15["message-sent",{"id":7}]"#] {
            match parse(frame) {
                Inbound::Event { name, payload } => {
                    assert_eq!(name, "message-sent");
                    assert_eq!(payload, r#"{"id":7}"#);
                }
                other => panic!("{frame}: {other:?}"),
            }
        }
        assert_eq!(parse(r#"42/chat,["only-a-name"]"#), Inbound::Other);
        assert_eq!(parse(r#"42/other,["x",1]"#), Inbound::Other);
    }

    #[test]
    fn acks_carry_their_id_and_arguments() {
        assert_eq!(
            parse(r#"43/chat,0[{"success":true,"conversationId":3}]"#),
            Inbound::Ack { id: 0, args: r#"[{"success":true,"conversationId":3}]"# }
        );
        assert_eq!(parse("43/chat,[1]"), Inbound::Other);
    }

    #[test]
    fn emitted_events_round_trip_through_the_parser() {
        let packet = event("send-message", r#"{"a":1}"#, None);
        assert_eq!(packet, r#"42/chat,["send-message",{"a":1}]"#);
        assert!(matches!(parse(&packet), Inbound::Event { name: "send-message", .. }));
        assert_eq!(event("join-conversation", "{}", Some(4)), r#"42/chat,4["join-conversation",{}]"#);
    }
}
