//! The HTTP API: conversations and their history. (Health and metrics endpoints are served
//! beside it by the binary, for every role alike.)
//!
//! Errors are JSON in the shape NestJS clients know: `{statusCode, error, message}`, where
//! `message` lists every validation problem.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chat_proto::{
    conversation_reply, ConversationList, ConversationReply, ErrorKind, ListConversations, ListMessages, MessagePage,
    OpenConversation, RPC_LIST_CONVERSATIONS, RPC_LIST_MESSAGES, RPC_OPEN_CONVERSATION,
};
use serde_json::{json, Value};

use crate::auth::Credentials;
use crate::queries::QueryFailure;
use crate::wire::{ConversationJson, MessageJson};
use crate::Gateway;

/// Page size when the request names none, and the most a page may hold.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

pub fn router(gateway: Arc<Gateway>) -> Router {
    let body_limit = usize::try_from(gateway.config.max_payload_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/api/chats/conversations", post(open_conversation))
        .route("/api/chats/conversations/{id}/messages", get(list_messages))
        .route("/api/chats/users/{id}/conversations", get(list_conversations))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(gateway)
}

/// Every error is JSON in the same shape, also those axum answers by itself (a body over the
/// limit, a path that is not UTF-8, a method the route does not take).
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("Error").to_owned() } else { text };
    ApiError::new(status, message).into_response()
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: Value::String(message.into()) }
    }

    fn invalid(problems: Vec<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: json!(problems) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "statusCode": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<QueryFailure> for ApiError {
    fn from(failure: QueryFailure) -> Self {
        match failure {
            QueryFailure::Refused(e) => {
                let status = match e.kind() {
                    ErrorKind::NotFound => StatusCode::NOT_FOUND,
                    ErrorKind::Invalid => StatusCode::BAD_REQUEST,
                    ErrorKind::Forbidden => StatusCode::FORBIDDEN,
                    ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                };
                ApiError::new(status, e.message)
            }
            QueryFailure::Unavailable(reason) => {
                tracing::error!(%reason, "query failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service temporarily unavailable")
            }
        }
    }
}

/// The `Authorization: Bearer` token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who calls, in JWT mode (`None` in development mode, where the REST API is open as the spec
/// has it).
fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    if gw.auth.is_development() {
        return Ok(None);
    }
    let credentials = Credentials { token: bearer_token(headers), claimed_user: None };
    gw.auth.authenticate(&credentials).map(Some).map_err(|reason| ApiError::new(StatusCode::UNAUTHORIZED, reason))
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

/// `POST /api/chats/conversations {sender_id, receiver_id}`: 201 with the new conversation, or
/// 200 with the pair's existing one.
async fn open_conversation(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&gw, &headers)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not valid JSON: {e}")))?;
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid(vec!["body must be a JSON object".into()]));
    };
    let mut problems = Vec::new();
    let mut positive = |field: &str| {
        let id = fields.get(field).and_then(Value::as_i64).filter(|id| *id > 0);
        if id.is_none() {
            problems.push(format!("{field} must be a positive integer"));
        }
        id
    };
    let (sender_id, receiver_id) = (positive("sender_id"), positive("receiver_id"));
    let (Some(sender_id), Some(receiver_id)) = (sender_id, receiver_id) else {
        return Err(ApiError::invalid(problems));
    };
    if sender_id == receiver_id {
        return Err(ApiError::invalid(vec!["receiver_id must differ from sender_id".into()]));
    }
    if caller.is_some_and(|caller| caller != sender_id && caller != receiver_id) {
        return Err(forbidden("You can only open conversations you take part in"));
    }
    let reply: ConversationReply =
        gw.query(RPC_OPEN_CONVERSATION, &OpenConversation { sender_id, receiver_id }).await?;
    let Some(conversation_reply::Result::Conversation(conversation)) = reply.result else {
        return Err(QueryFailure::Unavailable("empty conversation reply".into()).into());
    };
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ConversationJson::from(conversation))).into_response())
}

/// `GET /api/chats/conversations/{id}/messages`: oldest first, by page
/// (`?page=1&limit=20`) or by cursor (`?after=<id>&limit=` for the messages after a message,
/// `?before=<id>&limit=` for those before it; `after=0` starts at the beginning).
async fn list_messages(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut problems = Vec::new();
    let conversation_id = parse_integer(Some(&id), "conversation id", 1, &mut problems);
    let page = parse_integer(params.get("page"), "page", 1, &mut problems).unwrap_or(1);
    let limit = parse_integer(params.get("limit"), "limit", 1, &mut problems).unwrap_or(i64::from(DEFAULT_PAGE_SIZE));
    let after_id = parse_integer(params.get("after"), "after", 0, &mut problems);
    let before_id = parse_integer(params.get("before"), "before", 1, &mut problems);
    if after_id.is_some() && before_id.is_some() {
        problems.push("give either after or before, not both".into());
    }
    let Some(conversation_id) = conversation_id.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid(problems));
    };
    if let Some(caller) = caller(&gw, &headers)? {
        let conversation = gw.conversation(conversation_id).await?;
        if !conversation.has_participant(caller) {
            return Err(forbidden("Unauthorized to read this conversation"));
        }
    }
    let page = u32::try_from(page).unwrap_or(u32::MAX);
    let limit = u32::try_from(limit).unwrap_or(u32::MAX).min(MAX_PAGE_SIZE);
    let query = ListMessages { conversation_id, page, limit, after_id, before_id };
    let reply: MessagePage = gw.query(RPC_LIST_MESSAGES, &query).await?;
    let data: Vec<MessageJson> = reply.messages.into_iter().map(MessageJson::from).collect();
    let mut body = json!({ "data": data, "limit": limit, "total": reply.total });
    match (after_id, before_id) {
        (Some(after), _) => body["after"] = json!(after),
        (_, Some(before)) => body["before"] = json!(before),
        _ => body["page"] = json!(page),
    }
    Ok(Json(body))
}

/// `GET /api/chats/users/{id}/conversations`: newest first.
async fn list_conversations(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = caller(&gw, &headers)?;
    let mut problems = Vec::new();
    let Some(user_id) = parse_integer(Some(&id), "user id", 1, &mut problems) else {
        return Err(ApiError::invalid(problems));
    };
    if caller.is_some_and(|caller| caller != user_id) {
        return Err(forbidden("You can only list your own conversations"));
    }
    let reply: ConversationList = gw.query(RPC_LIST_CONVERSATIONS, &ListConversations { user_id }).await?;
    let data: Vec<ConversationJson> = reply.conversations.into_iter().map(ConversationJson::from).collect();
    Ok(Json(json!({ "data": data })))
}

/// An integer of at least `min` from a path or query parameter; `None` when absent (no
/// problem) or bad (a problem recorded).
fn parse_integer(raw: Option<&String>, name: &str, min: i64, problems: &mut Vec<String>) -> Option<i64> {
    let raw = raw?;
    match raw.parse::<i64>() {
        Ok(value) if value >= min => Some(value),
        _ if min == 0 => {
            problems.push(format!("{name} must be a non-negative integer"));
            None
        }
        _ => {
            problems.push(format!("{name} must be a positive integer"));
            None
        }
    }
}
