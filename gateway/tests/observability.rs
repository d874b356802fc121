//! What the gateway tells operators about HTTP requests and sockets, against the all-in-one
//! server in this process (see `support`): the REST metrics on `/metrics`, labelled by route
//! template, and the spans of requests, connects, joins and presence.
//!
//! The metrics recorder and the span collector are process-wide, so this file holds one test.

#[allow(dead_code)] // not every helper of the shared harness is used here
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::routing::get;
use chat_telemetry::prometheus::Metrics;
use serde_json::json;
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span seen by the collector: its name and fields as text.
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Seen>>>);

/// Where a span's entry is in the collector's list.
struct Position(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collector {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut seen = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.push(Seen { name: attrs.metadata().name(), fields });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Position(seen.len() - 1));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(Position(at)) = extensions.get::<Position>() else { return };
        let mut seen = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        values.record(&mut Fields(&mut seen[*at].fields));
    }
}

impl Collector {
    fn named(&self, name: &str) -> Vec<Seen> {
        let seen = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.iter().filter(|s| s.name == name).cloned().collect()
    }
}

/// The process's metrics recorder and span collector, installed once.
fn observe() -> (Metrics, Collector) {
    static INSTALLED: OnceLock<(Metrics, Collector)> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let metrics = Metrics::install().expect("the recorder installs");
            chat_gateway::metrics::describe();
            let collector = Collector::default();
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(collector.clone()))
                .expect("no other subscriber");
            (metrics, collector)
        })
        .clone()
}

/// `GET path` over a plain connection: the status and the body.
async fn get_text(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("the server accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("the request is written");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("the response is read");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (label_text, value) = rest.split_once("} ")?;
        let wanted = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        wanted.then(|| value.trim().parse().ok()).flatten()
    })
}

#[tokio::test]
async fn rest_requests_are_counted_by_route_template_and_sockets_leave_spans() {
    let (metrics, spans) = observe();
    let rendering = metrics.clone();
    let routes = axum::Router::new().route("/metrics", get(move || std::future::ready(rendering.render())));
    let server = Server::start_with(routes).await;
    let conversation = server.conversation(1, 2).await;

    let messages = format!("/api/chats/conversations/{conversation}/messages");
    assert_eq!(get_text(server.address, &messages).await.0, 200);
    assert_eq!(get_text(server.address, &messages).await.0, 200);
    assert_eq!(get_text(server.address, "/api/chats/conversations/999999/messages").await.0, 404);
    assert_eq!(get_text(server.address, "/assets/style.css").await.0, 200);
    assert_eq!(get_text(server.address, "/no/such/page").await.0, 404);

    let mut bob = server.connect(2).await;
    let mut alice = server.connect(1).await;
    let ack = alice.emit_with_ack("join-conversation", json!({ "conversationId": conversation })).await;
    assert_eq!(ack["success"], true);
    // Alice's arrival, announced to her contact.
    assert_eq!(bob.next("user:online").await["userId"], 1);

    let (status, text) = get_text(server.address, "/metrics").await;
    assert_eq!(status, 200);
    let template = "/api/chats/conversations/{id}/messages";
    let requests = |route: &str, method: &str, status: &str| {
        sample(&text, "chat_http_requests_total", &[("route", route), ("method", method), ("status", status)])
    };
    assert_eq!(requests(template, "GET", "200"), Some(2.0), "{text}");
    assert_eq!(requests(template, "GET", "404"), Some(1.0), "{text}");
    assert_eq!(requests("static", "GET", "200"), Some(1.0), "{text}");
    assert_eq!(requests("unmatched", "GET", "404"), Some(1.0), "{text}");
    // The Socket.IO transport is counted under one route; the WebSocket upgrades: 101.
    assert_eq!(requests("/socket.io", "GET", "101"), Some(2.0), "{text}");
    // A route nobody called yet shows at zero, with the success it documents.
    assert_eq!(requests("/api/chats/groups", "POST", "201"), Some(0.0), "{text}");
    assert!(!text.contains(&messages), "a raw path became a label: {text}");
    let timed =
        |route: &str| sample(&text, "chat_http_request_duration_seconds_count", &[("route", route), ("method", "GET")]);
    assert_eq!(timed(template), Some(3.0), "{text}");
    assert_eq!(timed("/socket.io"), None, "a long-poll's wait is no latency: {text}");

    let requests = spans.named("http-request");
    let routes: Vec<&str> = requests.iter().filter_map(|s| s.fields.get("http.route").map(String::as_str)).collect();
    assert_eq!(routes.iter().filter(|r| **r == template).count(), 3, "{requests:?}");
    assert!(!routes.contains(&"/socket.io"), "{requests:?}");
    let found = requests.iter().find(|s| s.fields.get("http.response.status_code").is_some_and(|c| c == "404"));
    assert!(found.is_some(), "the status is on the span: {requests:?}");

    let connects = spans.named("socket-connect");
    assert!(connects.iter().any(|s| s.fields.get("user_id").is_some_and(|u| u == "1")), "{connects:?}");
    assert!(connects.iter().all(|s| s.fields.get("outcome").is_some_and(|o| o == "accepted")), "{connects:?}");
    let joins = spans.named("join-conversation");
    let joined = joins.iter().find(|s| s.fields.get("conversation_id") == Some(&conversation.to_string()));
    assert_eq!(joined.and_then(|s| s.fields.get("outcome")).map(String::as_str), Some("joined"), "{joins:?}");
    for name in ["report-presence", "presence-report", "announce-presence", "presence-update"] {
        assert!(!spans.named(name).is_empty(), "no {name} span");
    }
}
