//! REST on keep-alive HTTP/1.1 connections: opening conversations
//! (`POST /api/chats/conversations`) and creating groups (`POST /api/chats/groups`), several
//! connections in parallel, and plain `GET`s for the inbox pages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::sio::Endpoint;

#[derive(Deserialize)]
struct Conversation {
    id: u64,
}

/// A conversation to create: a pair's, or a group of members (the first its creator).
#[derive(Debug, Clone)]
pub enum NewConversation {
    Pair(u64, u64),
    Group(Vec<u64>),
}

/// Opens one conversation per pair of user ids; their ids in the order of `pairs`.
pub async fn open_conversations(
    endpoints: &[Arc<Endpoint>],
    pairs: &[(u64, u64)],
    parallel: usize,
) -> anyhow::Result<Vec<u64>> {
    let wanted: Vec<NewConversation> = pairs.iter().map(|&(a, b)| NewConversation::Pair(a, b)).collect();
    create_conversations(endpoints, &wanted, parallel).await
}

/// Creates the conversations, with `parallel` connections spread over the endpoints; their
/// ids in the order of `wanted`.
pub async fn create_conversations(
    endpoints: &[Arc<Endpoint>],
    wanted: &[NewConversation],
    parallel: usize,
) -> anyhow::Result<Vec<u64>> {
    let wanted: Arc<[NewConversation]> = wanted.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..parallel.clamp(1, wanted.len().max(1)) {
        let endpoint = Arc::clone(&endpoints[worker % endpoints.len()]);
        let (wanted, next) = (Arc::clone(&wanted), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut client = Client::connect(&endpoint).await?;
            let mut created = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let id = match wanted.get(i) {
                    None => return anyhow::Ok(created),
                    Some(NewConversation::Pair(a, b)) => client.open_conversation(*a, *b).await?,
                    Some(NewConversation::Group(members)) => client.create_group(i, members).await?,
                };
                created.push((i, id));
            }
        }));
    }
    let mut ids = vec![0; wanted.len()];
    for worker in workers {
        for (i, id) in worker.await.context("conversation worker panicked")?? {
            ids[i] = id;
        }
    }
    Ok(ids)
}

/// One keep-alive HTTP/1.1 connection, one request at a time.
pub struct Client {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(endpoint.addr)
            .await
            .with_context(|| format!("REST connection to {}", endpoint.authority))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection future drives the socket; it ends when `sender` is dropped.
        tokio::spawn(connection);
        Ok(Self { authority: endpoint.authority.clone(), sender })
    }

    /// `GET path` (with its query): the status and the whole body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("GET {path}: building the request"))?;
        self.sender.ready().await.with_context(|| format!("GET {path}: the connection closed"))?;
        let response = self.sender.send_request(request).await.with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.with_context(|| format!("GET {path}: reading the body"))?;
        Ok((status, body.to_bytes()))
    }

    async fn open_conversation(&mut self, sender_id: u64, receiver_id: u64) -> anyhow::Result<u64> {
        self.open_conversation_as(sender_id, receiver_id, None).await
    }

    /// Opens (or finds) the pair's conversation, as the holder of `bearer` when given (a
    /// JWT-mode server requires the caller to be one of the two).
    pub async fn open_conversation_as(
        &mut self,
        sender_id: u64,
        receiver_id: u64,
        bearer: Option<&str>,
    ) -> anyhow::Result<u64> {
        let body = format!("{{\"sender_id\":{sender_id},\"receiver_id\":{receiver_id}}}");
        self.post_conversation("/api/chats/conversations", body, bearer).await
    }

    /// A group of `members`, the first its creator.
    async fn create_group(&mut self, index: usize, members: &[u64]) -> anyhow::Result<u64> {
        let (creator, others) = members.split_first().context("a group needs a member")?;
        let others: Vec<String> = others.iter().map(u64::to_string).collect();
        let body =
            format!("{{\"creator_id\":{creator},\"name\":\"load {index}\",\"member_ids\":[{}]}}", others.join(","));
        self.post_conversation("/api/chats/groups", body, None).await
    }

    /// `POST path` with a JSON body that answers a conversation: its id.
    async fn post_conversation(&mut self, path: &str, body: String, bearer: Option<&str>) -> anyhow::Result<u64> {
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        let conversation: Conversation =
            serde_json::from_slice(&body).with_context(|| format!("POST {path}: unexpected answer"))?;
        Ok(conversation.id)
    }
}
