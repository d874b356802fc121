//! Every HTTP request the gateway answers, counted and timed (`chat_http_requests_total`,
//! `chat_http_request_duration_seconds`, see [`crate::metrics`]) and, but for the Socket.IO
//! transport, traced: one `http-request` span each.
//!
//! The `route` label is the route template the request matched
//! (`/api/chats/conversations/{id}/messages`), never the path it asked for: ids in paths
//! would make a series per conversation. The test page, the docs and their files are one route,
//! `static`; the Socket.IO transport (polls, WebSocket upgrades) is `/socket.io`, counted but
//! neither timed nor traced (a long-poll lasts as long as it waits; the socket's own spans
//! say what happens on it); a path no route matched is `unmatched`.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::{metrics, web};

/// The Socket.IO transport's path (socketioxide's default, which the gateway keeps).
const SOCKET_IO: &str = "/socket.io";
/// Methods counted by name; any other is `other`, so the label stays a fixed set.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The middleware: a layer over the gateway's whole HTTP application (see `start`).
pub(crate) async fn http_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(request.extensions().get::<MatchedPath>(), request.uri().path());
    if route == SOCKET_IO {
        let response = next.run(request).await;
        metrics::http_request(&route, method, response.status().as_u16(), None);
        return response;
    }
    let span = tracing::info_span!(
        parent: None,
        "http-request",
        otel.kind = "server",
        otel.name = %format!("{method} {route}"),
        http.request.method = method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    metrics::http_request(&route, method, status.as_u16(), Some(started.elapsed()));
    response
}

/// Shows each REST route's series at zero from start-up, as the OpenAPI document lists them
/// (a unit test holds it to the router): its latency histogram, and its counter for each
/// success status it documents.
pub(crate) fn register_rest_routes() {
    let Ok(document) = serde_json::to_value(crate::openapi::document()) else { return };
    let Some(paths) = document["paths"].as_object() else { return };
    for (path, item) in paths {
        for method in METHODS {
            let Some(operation) = item.get(method.to_ascii_lowercase()) else { continue };
            let successes: Vec<u16> = operation["responses"]
                .as_object()
                .into_iter()
                .flat_map(|responses| responses.keys())
                .filter_map(|status| status.parse::<u16>().ok())
                .filter(|status| (200..300).contains(status))
                .collect();
            metrics::http_route_known(path, method, &successes);
        }
    }
}

fn method_label(method: &Method) -> &'static str {
    METHODS.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

/// The `route` label: a bounded set, whatever the client asks for (see the module doc).
fn route_label(matched: Option<&MatchedPath>, path: &str) -> Cow<'static, str> {
    if path == SOCKET_IO || path.starts_with("/socket.io/") {
        return Cow::Borrowed(SOCKET_IO);
    }
    match matched.map(MatchedPath::as_str) {
        Some(route) if web::is_static(route) => Cow::Borrowed("static"),
        Some(route) => Cow::Owned(route.to_owned()),
        None => Cow::Borrowed("unmatched"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_or_groups_never_raw_paths() {
        assert_eq!(route_label(None, "/socket.io/"), SOCKET_IO);
        assert_eq!(route_label(None, "/socket.io"), SOCKET_IO);
        assert_eq!(route_label(None, "/api/chats/conversations/17/messages"), "unmatched");
        assert_eq!(route_label(None, "/socket.iox"), "unmatched");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").expect("a method")), "other");
    }
}
