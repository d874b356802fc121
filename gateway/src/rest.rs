//! The HTTP API: conversations and their history. (Health and metrics endpoints are served
//! beside it by the binary, for every role alike.)
//!
//! Errors are JSON in the shape NestJS clients know: `{statusCode, error, message}`, where
//! `message` lists every validation problem.
//!
//! Each handler's `#[utoipa::path]` describes it in the OpenAPI document (`openapi`, which adds
//! the errors every `/api/` route may give: 401 and 503); a test there checks that every route
//! of [`router`] is described.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chat_proto::{
    conversation_reply, ConversationList, ConversationReply, CreateGroup, ErrorKind, InboxCursor, ListConversations,
    ListMessages, MessagePage, OpenConversation, MAX_GROUP_NAME_CHARS, MAX_PAGE_SIZE, RPC_CREATE_GROUP,
    RPC_LIST_CONVERSATIONS, RPC_LIST_MESSAGES, RPC_OPEN_CONVERSATION,
};
use serde_json::Value;

use crate::auth::{bearer_token, Credentials};
use crate::gateway::Gateway;
use crate::queries::QueryFailure;
use crate::wire::{
    ConversationJson, ConversationListJson, ErrorJson, ErrorMessage, InboxEntryJson, MessageJson, MessagePageJson,
};

/// Page size when the request names none (the most a page may hold is
/// [`chat_proto::MAX_PAGE_SIZE`]).
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// Inbox page size when the request names none (at most [`chat_proto::MAX_PAGE_SIZE`]).
pub const DEFAULT_INBOX_PAGE_SIZE: u32 = 50;

pub fn router(gateway: Arc<Gateway>) -> Router {
    let body_limit = usize::try_from(gateway.config.max_payload_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/api/chats/conversations", post(open_conversation))
        .route("/api/chats/groups", post(create_group))
        .route("/api/chats/conversations/{id}/messages", get(list_messages))
        .route("/api/chats/users/{id}/conversations", get(list_conversations))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(gateway)
}

/// Every error is JSON in the same shape, also those axum answers by itself (a body over the
/// limit, a path that is not UTF-8, a method the route does not take). A layer over the whole
/// HTTP application (`start`), the static files' routes included.
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
    message: ErrorMessage,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: ErrorMessage::One(message.into()) }
    }

    fn invalid(problems: Vec<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: ErrorMessage::Problems(problems) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorJson {
            status_code: self.status.as_u16(),
            error: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.message,
        };
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

/// Who calls, in JWT mode (`None` in development mode, where the REST API is open as the spec
/// has it).
fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    if gw.auth.is_development() {
        return Ok(None);
    }
    let credentials = Credentials { token: bearer_token(headers), claimed_user: None };
    gw.auth.authenticate(&credentials).map(Some).map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

/// `POST /api/chats/conversations {sender_id, receiver_id}`: 201 with the new conversation, or
/// 200 with the pair's existing one.
#[utoipa::path(
    post,
    path = "/api/chats/conversations",
    tag = "conversations",
    summary = "Open a conversation between two users",
    description = "Creates the conversation of a pair of users, or returns the one the pair (in either order) \
                   already has. With JWT authentication the caller must be one of the two.",
    request_body(content = crate::wire::OpenConversationJson, content_type = "application/json",
        example = json!({"sender_id": 1, "receiver_id": 2})),
    security((), ("bearer_jwt" = [])),
    responses(
        (status = 201, description = "Created", body = ConversationJson,
            example = json!({"id": 7, "type": "direct", "sender_id": 1, "receiver_id": 2,
                             "created_at": "2026-11-25T19:51:58.530Z"})),
        (status = 200, description = "The pair's existing conversation", body = ConversationJson,
            example = json!({"id": 7, "type": "direct", "sender_id": 1, "receiver_id": 2,
                             "created_at": "2026-11-25T19:51:58.530Z"})),
        (status = 400, description = "Bad ids, equal ids, or a body that is not a JSON object", body = ErrorJson,
            example = json!({"statusCode": 400, "error": "Bad Request",
                             "message": ["receiver_id must be a positive integer"]})),
        (status = 403, description = "JWT mode: the caller is neither user", body = ErrorJson,
            example = json!({"statusCode": 403, "error": "Forbidden",
                             "message": "You can only open conversations you take part in"})),
        (status = 413, description = "Body over the maximum payload size", body = ErrorJson,
            example = json!({"statusCode": 413, "error": "Payload Too Large", 
                             "message": "Failed to buffer the request body: length limit exceeded"})),
    ),
)]
pub async fn open_conversation(
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
        gw.queries.query(RPC_OPEN_CONVERSATION, &OpenConversation { sender_id, receiver_id }).await?;
    let Some(conversation_reply::Result::Conversation(conversation)) = reply.result else {
        return Err(QueryFailure::Unavailable("empty conversation reply".into()).into());
    };
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ConversationJson::from(conversation))).into_response())
}

/// `POST /api/chats/groups {creator_id, name, member_ids}`: 201 with the new group.
#[utoipa::path(
    post,
    path = "/api/chats/groups",
    tag = "conversations",
    summary = "Create a group",
    description = "Creates a group conversation: the creator is its `owner`, the users of `member_ids` its \
                   `member`s (the creator may be listed too; duplicates count once). A group has at most \
                   `--max-group-members` members (default 1,000), the creator included. Its id is a conversation \
                   id: joining, sending, typing, receipts, history and the inbox work on it as on a direct \
                   conversation. With JWT authentication the caller must be the creator.",
    request_body(content = crate::wire::CreateGroupJson, content_type = "application/json",
        example = json!({"creator_id": 1, "name": "Team", "member_ids": [2, 3]})),
    security((), ("bearer_jwt" = [])),
    responses(
        (status = 201, description = "Created", body = ConversationJson,
            example = json!({"id": 8, "type": "group", "name": "Team", "created_at": "2026-12-05T10:00:00.000Z",
                "members": [
                    {"user_id": 1, "role": "owner", "joined_at": "2026-12-05T10:00:00.000Z"},
                    {"user_id": 2, "role": "member", "joined_at": "2026-12-05T10:00:00.000Z"},
                    {"user_id": 3, "role": "member", "joined_at": "2026-12-05T10:00:00.000Z"}]})),
        (status = 400, description = "A bad creator, name or member list, too many members, or a body that is not \
            a JSON object", body = ErrorJson,
            example = json!({"statusCode": 400, "error": "Bad Request",
                             "message": ["member_ids must be an array of positive integers"]})),
        (status = 403, description = "JWT mode: the caller is not the creator", body = ErrorJson,
            example = json!({"statusCode": 403, "error": "Forbidden",
                             "message": "You can only create groups as yourself"})),
        (status = 413, description = "Body over the maximum payload size", body = ErrorJson,
            example = json!({"statusCode": 413, "error": "Payload Too Large",
                             "message": "Failed to buffer the request body: length limit exceeded"})),
    ),
)]
pub async fn create_group(
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
    let group = read_group(fields, gw.config.max_group_members).map_err(ApiError::invalid)?;
    if caller.is_some_and(|caller| caller != group.creator_id) {
        return Err(forbidden("You can only create groups as yourself"));
    }
    let reply: ConversationReply = gw.queries.query(RPC_CREATE_GROUP, &group).await?;
    let Some(conversation_reply::Result::Conversation(conversation)) = reply.result else {
        return Err(QueryFailure::Unavailable("empty group reply".into()).into());
    };
    Ok((StatusCode::CREATED, Json(ConversationJson::from(conversation))).into_response())
}

/// The group a `POST /api/chats/groups` body asks for, or every problem with it.
fn read_group(fields: &serde_json::Map<String, Value>, max_members: usize) -> Result<CreateGroup, Vec<String>> {
    let mut problems = Vec::new();
    let creator_id = fields.get("creator_id").and_then(Value::as_i64).filter(|id| *id > 0);
    if creator_id.is_none() {
        problems.push("creator_id must be a positive integer".to_owned());
    }
    let name = fields.get("name").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME_CHARS {
        problems.push(format!("name must be a string of 1 to {MAX_GROUP_NAME_CHARS} characters"));
    }
    let member_ids: Option<Vec<i64>> = fields
        .get("member_ids")
        .and_then(Value::as_array)
        .and_then(|ids| ids.iter().map(|id| id.as_i64().filter(|id| *id > 0)).collect());
    if member_ids.is_none() {
        problems.push("member_ids must be an array of positive integers".to_owned());
    }
    let (Some(creator_id), Some(mut member_ids)) = (creator_id, member_ids) else {
        return Err(problems);
    };
    member_ids.retain(|id| *id != creator_id);
    member_ids.sort_unstable();
    member_ids.dedup();
    if member_ids.len() + 1 > max_members {
        problems.push(format!("a group has at most {max_members} members, its creator included"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CreateGroup { creator_id, name: name.to_owned(), member_ids })
}

/// `GET /api/chats/conversations/{id}/messages`: oldest first, by page
/// (`?page=1&limit=20`) or by cursor (`?after=<id>&limit=` for the messages after a message,
/// `?before=<id>&limit=` for those before it; `after=0` starts at the beginning).
#[utoipa::path(
    get,
    path = "/api/chats/conversations/{id}/messages",
    tag = "conversations",
    summary = "A conversation's message history",
    description = "Oldest first (ascending id). By page (`page`, `limit`), or by cursor: `after` gives the `limit` \
                   messages after a message id (`after=0` starts at the beginning), `before` the `limit` messages \
                   just before one (a `before` above every id gives the newest page). Each message has its \
                   `edited_at` and `deleted_at` (a deleted message stays in its place with `content` null), its \
                   `reactions` and the requester's own `my_reactions` (the JWT's user; in development mode the \
                   `user_id` parameter, else none). With JWT authentication only the conversation's members may \
                   read it.",
    params(
        ("id" = i64, Path, description = "Conversation id", minimum = 1, example = 7),
        ("page" = Option<u32>, Query, description = "Page number, from 1 (ignored with a cursor)", minimum = 1,
            example = 1),
        ("limit" = Option<u32>, Query, description = "Messages per page: default 20, at most 100 (larger is capped)",
            minimum = 1, example = 20),
        ("after" = Option<i64>, Query, description = "Cursor: the messages after this id", minimum = 0,
            example = 40),
        ("before" = Option<i64>, Query, description = "Cursor: the messages before this id (not with `after`)",
            minimum = 1, example = 43),
        ("user_id" = Option<i64>, Query, description = "Development mode: whose reactions `my_reactions` lists \
            (with JWT authentication, the caller's)", minimum = 1, example = 2),
    ),
    security((), ("bearer_jwt" = [])),
    responses(
        (status = 200, description = "A page of messages", body = MessagePageJson, examples(
            ("page" = (summary = "?page=1&limit=20", value = json!({
                "data": [{"id": 42, "sender_id": 1, "conversation_id": 7, "timestamp": "2026-11-25T19:51:58.530Z",
                          "message_type": "text", "content": "Hello!", "edited_at": null, "deleted_at": null,
                          "reactions": {"👍": 1}, "my_reactions": ["👍"]}],
                "limit": 20, "total": 1, "page": 1}))),
            ("before" = (summary = "?before=43&limit=2", value = json!({
                "data": [
                    {"id": 41, "sender_id": 2, "conversation_id": 7, "timestamp": "2026-11-25T19:51:57.102Z",
                     "message_type": "text", "content": null, "edited_at": null,
                     "deleted_at": "2026-11-25T19:53:00.000Z", "reactions": {}, "my_reactions": []},
                    {"id": 42, "sender_id": 1, "conversation_id": 7, "timestamp": "2026-11-25T19:51:58.530Z",
                     "message_type": "text", "content": "Hello, world!", "edited_at": "2026-11-25T19:52:30.250Z",
                     "deleted_at": null, "reactions": {}, "my_reactions": []}],
                "limit": 2, "total": 3, "before": 43}))),
        )),
        (status = 400, description = "Bad id, page, limit or cursor", body = ErrorJson,
            example = json!({"statusCode": 400, "error": "Bad Request", "message": ["limit must be a positive integer"]})),
        (status = 403, description = "JWT mode: the caller is not in the conversation", body = ErrorJson,
            example = json!({"statusCode": 403, "error": "Forbidden", "message": "Unauthorized to read this conversation"})),
        (status = 404, description = "No such conversation", body = ErrorJson,
            example = json!({"statusCode": 404, "error": "Not Found", "message": "Conversation not found"})),
    ),
)]
pub async fn list_messages(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<MessagePageJson>, ApiError> {
    let mut problems = Vec::new();
    let conversation_id = parse_integer(Some(&id), "conversation id", 1, &mut problems);
    let page = parse_integer(params.get("page"), "page", 1, &mut problems).unwrap_or(1);
    let limit = parse_integer(params.get("limit"), "limit", 1, &mut problems).unwrap_or(i64::from(DEFAULT_PAGE_SIZE));
    let after_id = parse_integer(params.get("after"), "after", 0, &mut problems);
    let before_id = parse_integer(params.get("before"), "before", 1, &mut problems);
    let viewer = parse_integer(params.get("user_id"), "user_id", 1, &mut problems);
    if after_id.is_some() && before_id.is_some() {
        problems.push("give either after or before, not both".into());
    }
    let Some(conversation_id) = conversation_id.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid(problems));
    };
    let caller = caller(&gw, &headers)?;
    if let Some(caller) = caller {
        let conversation = gw.queries.conversation(conversation_id).await?;
        if !conversation.has_participant(caller) {
            return Err(forbidden("Unauthorized to read this conversation"));
        }
    }
    // A token's user reads their own reactions, whatever the query says.
    let viewer = caller.or(viewer);
    let page = u32::try_from(page).unwrap_or(u32::MAX);
    let limit = u32::try_from(limit).unwrap_or(u32::MAX).min(MAX_PAGE_SIZE);
    let query = ListMessages { conversation_id, page, limit, after_id, before_id, viewer_id: viewer.unwrap_or(0) };
    let reply: MessagePage = gw.queries.query(RPC_LIST_MESSAGES, &query).await?;
    let shape = if viewer.is_some() { MessageJson::for_viewer } else { MessageJson::with_state };
    let data: Vec<MessageJson> = reply.messages.into_iter().map(shape).collect();
    let cursor = after_id.is_some() || before_id.is_some();
    let page = (!cursor).then_some(page);
    Ok(Json(MessagePageJson { data, limit, total: reply.total, page, after: after_id, before: before_id }))
}

/// `GET /api/chats/users/{id}/conversations`: the user's inbox, newest activity first, by
/// cursor (`?limit=&before=<next_before>`).
#[utoipa::path(
    get,
    path = "/api/chats/users/{id}/conversations",
    tag = "conversations",
    summary = "A user's inbox",
    description = "The user's conversations, newest activity first (the last message's time, else the \
                   conversation's creation; ties by id, highest first), each with its last message, the user's \
                   unread count (messages from others after the user's read position) and every member's read \
                   and delivered positions; `total_unread` counts all the user's conversations. Page with \
                   `before=<next_before>` of the previous page. With JWT authentication a caller lists only \
                   their own.",
    params(
        ("id" = i64, Path, description = "User id", minimum = 1, example = 1),
        ("limit" = Option<u32>, Query, description = "Conversations per page: default 50, at most 100 (larger is \
            capped)", minimum = 1, example = 50),
        ("before" = Option<String>, Query, description = "Cursor: `next_before` of the previous page",
            example = "1764964800000000_7"),
    ),
    security((), ("bearer_jwt" = [])),
    responses(
        (status = 200, description = "A page of the user's inbox", body = ConversationListJson,
            example = json!({"data": [{"id": 7, "type": "direct", "sender_id": 1, "receiver_id": 2,
                                       "created_at": "2026-11-25T19:51:58.530Z",
                                       "last_activity_at": "2026-11-25T19:52:10.002Z",
                                       "last_message": {"id": 42, "sender_id": 2, "conversation_id": 7,
                                                        "timestamp": "2026-11-25T19:52:10.002Z",
                                                        "message_type": "text", "content": "Hi!", "edited_at": null,
                                                        "deleted_at": null, "reactions": {}},
                                       "unread_count": 1,
                                       "members": [
                                           {"user_id": 1, "last_read_message_id": 41, "last_delivered_message_id": 42},
                                           {"user_id": 2, "last_read_message_id": 42, "last_delivered_message_id": 42}]}],
                             "total_unread": 3, "limit": 50, "next_before": null})),
        (status = 400, description = "Bad user id, limit or cursor", body = ErrorJson,
            example = json!({"statusCode": 400, "error": "Bad Request", "message": ["user id must be a positive integer"]})),
        (status = 403, description = "JWT mode: another user's list", body = ErrorJson,
            example = json!({"statusCode": 403, "error": "Forbidden", "message": "You can only list your own conversations"})),
    ),
)]
pub async fn list_conversations(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ConversationListJson>, ApiError> {
    let caller = caller(&gw, &headers)?;
    let mut problems = Vec::new();
    let user_id = parse_integer(Some(&id), "user id", 1, &mut problems);
    let limit =
        parse_integer(params.get("limit"), "limit", 1, &mut problems).unwrap_or(i64::from(DEFAULT_INBOX_PAGE_SIZE));
    let before = params.get("before").and_then(|raw| {
        let cursor = parse_inbox_cursor(raw);
        if cursor.is_none() {
            problems.push("before must be a cursor from next_before".into());
        }
        cursor
    });
    let Some(user_id) = user_id.filter(|_| problems.is_empty()) else {
        return Err(ApiError::invalid(problems));
    };
    if caller.is_some_and(|caller| caller != user_id) {
        return Err(forbidden("You can only list your own conversations"));
    }
    let limit = u32::try_from(limit).unwrap_or(u32::MAX).min(MAX_PAGE_SIZE);
    let reply: ConversationList =
        gw.queries.query(RPC_LIST_CONVERSATIONS, &ListConversations { user_id, limit, before }).await?;
    Ok(Json(ConversationListJson {
        data: reply.entries.into_iter().filter_map(InboxEntryJson::from_entry).collect(),
        total_unread: reply.total_unread,
        limit,
        next_before: reply.next_before.map(|c| format!("{}_{}", c.activity_us, c.conversation_id)),
    }))
}

/// An inbox cursor as `next_before` writes it: `<activity in microseconds>_<conversation id>`.
fn parse_inbox_cursor(raw: &str) -> Option<InboxCursor> {
    let (activity, id) = raw.split_once('_')?;
    let activity_us = activity.parse::<i64>().ok().filter(|us| *us >= 0)?;
    let conversation_id = id.parse::<i64>().ok().filter(|id| *id > 0)?;
    Some(InboxCursor { activity_us, conversation_id })
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
