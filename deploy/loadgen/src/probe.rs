//! `probe`: one message, end to end, through a gateway: the Helm chart's `helm test`, and a
//! smoke check of any deployment. Two fresh users open their conversation over REST, both
//! connect over Socket.IO and join it, the first sends one message, and the probe requires the
//! sender's acknowledgement (`message-sent`) and the delivery to the other (`receive-message`),
//! each within `--timeout`.
//!
//! Credentials, in the server's mode:
//! - development: the `userId` query (nothing to give);
//! - JWT with an HS256 secret: `--jwt-secret-env NAME` signs the users' tokens with the secret in
//!   that environment variable, with the claims the gateway checks (the user claim, `exp`, and the
//!   issuer and audience when it requires them);
//! - JWT with public keys only (PEM, JWKS): the probe cannot sign; `--tokens-env NAME` takes two
//!   tokens made by the identity provider, as `<userId>=<token>` pairs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use clap::Args;
use futures::SinkExt;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::rest;
use crate::sio::{self, Endpoint, Inbound, SioError};

/// How long signed tokens stay valid: the probe's run, with room for clock skew.
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Gateway base URL (`http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// JWT mode: sign HS256 tokens for the two users with the secret held by this environment
    /// variable (e.g. CHAT_JWT_SECRET, as the gateways get it).
    #[arg(long, conflicts_with = "tokens_env")]
    pub jwt_secret_env: Option<String>,
    /// The claim that carries the user id in signed tokens (the gateway's CHAT_JWT_USER_CLAIM).
    #[arg(long, default_value = "sub")]
    pub jwt_user_claim: String,
    /// `iss` of signed tokens (when the gateway requires an issuer).
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// `aud` of signed tokens (when the gateway checks audiences: one of them).
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// JWT mode without a shared secret: the environment variable holding the two users' tokens
    /// as `<userId>=<token>`, separated by commas or newlines.
    #[arg(long)]
    pub tokens_env: Option<String>,
    /// Limit for each step (REST, connect, join, acknowledgement, delivery).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The first user's id, the second's is the next (default: derived from the clock, so that
    /// probes do not meet earlier probes' users).
    #[arg(long)]
    pub user_base: Option<u64>,
}

/// What the probe saw, for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct ProbeReport {
    pub ok: bool,
    pub url: String,
    pub users: [u64; 2],
    pub conversation_id: Option<u64>,
    pub message_id: Option<i64>,
    pub ack_ms: Option<f64>,
    pub delivery_ms: Option<f64>,
    pub error: Option<String>,
}

impl ProbeReport {
    pub fn print_table(&self) {
        println!("probe {}: users {} and {}", self.url, self.users[0], self.users[1]);
        if let Some(id) = self.conversation_id {
            println!("  conversation       {id}");
        }
        if let Some(ms) = self.ack_ms {
            println!("  message-sent       {ms:.1} ms (message {})", self.message_id.unwrap_or_default());
        }
        if let Some(ms) = self.delivery_ms {
            println!("  receive-message    {ms:.1} ms");
        }
        match &self.error {
            None => println!("  ok: one message sent, acknowledged and delivered"),
            Some(e) => println!("  FAILED: {e}"),
        }
    }
}

/// The two users' credentials.
#[derive(Debug, PartialEq)]
enum Identities {
    /// Development mode: the ids, on trust.
    Development([u64; 2]),
    /// JWT mode: each user's id and token.
    Tokens([(u64, String); 2]),
}

impl Identities {
    fn users(&self) -> [u64; 2] {
        match self {
            Identities::Development(users) => *users,
            Identities::Tokens([(a, _), (b, _)]) => [*a, *b],
        }
    }

    fn token(&self, user: usize) -> Option<&str> {
        match self {
            Identities::Development(_) => None,
            Identities::Tokens(pairs) => Some(pairs[user].1.as_str()),
        }
    }
}

/// Runs the probe; the report says whether it passed. An error is a probe that could not be
/// set up (bad arguments); everything the server does wrong is in the report.
pub async fn run(args: &ProbeArgs) -> anyhow::Result<ProbeReport> {
    let identities = identities(args)?;
    let mut report = ProbeReport { url: args.url.clone(), users: identities.users(), ..ProbeReport::default() };
    if let Err(e) = exchange(args, &identities, &mut report).await {
        report.error = Some(format!("{e:#}"));
    }
    report.ok = report.error.is_none();
    Ok(report)
}

fn identities(args: &ProbeArgs) -> anyhow::Result<Identities> {
    if let Some(name) = &args.tokens_env {
        let text = std::env::var(name).with_context(|| format!("--tokens-env: environment variable {name}"))?;
        return parse_tokens(&text).with_context(|| format!("--tokens-env: {name}"));
    }
    let base = args.user_base.unwrap_or_else(crate::crowd::fresh_user_base).max(1);
    let users = [base, base + 1];
    let Some(name) = &args.jwt_secret_env else { return Ok(Identities::Development(users)) };
    let secret = std::env::var(name).with_context(|| {
        format!("--jwt-secret-env: environment variable {name} is not set (no HS256 secret: give tokens instead)")
    })?;
    ensure!(!secret.is_empty(), "--jwt-secret-env: {name} is empty");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_secs();
    let sign = |user| sign_hs256(&secret, &args.jwt_user_claim, user, now, args);
    Ok(Identities::Tokens([(users[0], sign(users[0])?), (users[1], sign(users[1])?)]))
}

/// A token the gateway accepts for `user`: the user claim, `iat`, `exp`, and `iss` / `aud` when
/// asked for.
fn sign_hs256(secret: &str, claim: &str, user: u64, now: u64, args: &ProbeArgs) -> anyhow::Result<String> {
    let mut claims = serde_json::Map::new();
    claims.insert(claim.to_owned(), user.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + TOKEN_LIFETIME.as_secs()).into());
    if let Some(issuer) = &args.jwt_issuer {
        claims.insert("iss".into(), issuer.clone().into());
    }
    if let Some(audience) = &args.jwt_audience {
        claims.insert("aud".into(), audience.clone().into());
    }
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
        .context("signing a token")
}

/// Two `<userId>=<token>` pairs, separated by commas or newlines.
fn parse_tokens(text: &str) -> anyhow::Result<Identities> {
    let mut pairs = Vec::new();
    for item in text.split([',', '\n']).map(str::trim).filter(|item| !item.is_empty()) {
        let (user, token) = item.split_once('=').context("expected <userId>=<token>")?;
        let user: u64 = user.trim().parse().ok().filter(|id| *id > 0).context("a user id is not a positive integer")?;
        ensure!(!token.trim().is_empty(), "user {user}: empty token");
        pairs.push((user, token.trim().to_owned()));
    }
    let [a, b]: [(u64, String); 2] =
        pairs.try_into().map_err(|p: Vec<_>| anyhow::anyhow!("expected two users' tokens, got {}", p.len()))?;
    ensure!(a.0 != b.0, "the two tokens must be of two different users");
    Ok(Identities::Tokens([a, b]))
}

/// The fields of a stored message the probe checks.
#[derive(Deserialize)]
struct Stored {
    id: i64,
    sender_id: u64,
    content: String,
}

async fn exchange(args: &ProbeArgs, identities: &Identities, report: &mut ProbeReport) -> anyhow::Result<()> {
    let limit = args.timeout;
    let [a, b] = identities.users();
    let endpoint = Endpoint::resolve(&args.url).await?;

    let mut client = tokio::time::timeout(limit, rest::Client::connect(&endpoint))
        .await
        .map_err(|_| anyhow::anyhow!("REST connection: no answer within {limit:?}"))??;
    let conversation = tokio::time::timeout(limit, client.open_conversation_as(a, b, identities.token(0)))
        .await
        .map_err(|_| anyhow::anyhow!("POST /api/chats/conversations: no answer within {limit:?}"))??;
    report.conversation_id = Some(conversation);

    let mut sockets = Vec::new();
    for (i, user) in [a, b].into_iter().enumerate() {
        let mut ws = sio::connect_with_token(&endpoint, user, identities.token(i), None, limit)
            .await
            .with_context(|| format!("user {user}: Socket.IO connect"))?;
        sio::join(&mut ws, conversation, user, limit).await.with_context(|| format!("user {user}: join"))?;
        sockets.push(ws);
    }
    let [mut sender, mut receiver]: [sio::Ws; 2] =
        sockets.try_into().map_err(|_| anyhow::anyhow!("two sockets expected"))?;

    let content = format!("chat-loadgen probe {a}");
    let payload = serde_json::json!({
        "sender_id": a,
        "conversation_id": conversation,
        "message_type": "text",
        "content": content,
    });
    let started = Instant::now();
    sender.send(Message::text(sio::event("send-message", &payload.to_string(), None))).await?;

    let mut acked = None;
    let mut delivered = None;
    let ack = sio::wait_for(&mut sender, limit, "waiting for message-sent", |frame| match frame {
        Inbound::Event { name: "message-sent", payload } => match serde_json::from_str::<Stored>(payload) {
            Ok(m) if m.content == content && m.sender_id == a => {
                acked = Some((m.id, started.elapsed()));
                Some(Ok(()))
            }
            _ => None,
        },
        Inbound::Event { name: "message-error", payload } => {
            Some(Err(SioError::Rejected(format!("message-error {payload}"))))
        }
        _ => None,
    });
    let delivery = sio::wait_for(&mut receiver, limit, "waiting for receive-message", |frame| match frame {
        Inbound::Event { name: "receive-message", payload } => match serde_json::from_str::<Stored>(payload) {
            Ok(m) if m.content == content && m.sender_id == a => {
                delivered = Some((m.id, started.elapsed()));
                Some(Ok(()))
            }
            _ => None,
        },
        _ => None,
    });
    let (ack, delivery) = tokio::join!(ack, delivery);
    if let Some((id, elapsed)) = acked {
        report.message_id = Some(id);
        report.ack_ms = Some(elapsed.as_secs_f64() * 1000.0);
    }
    if let Some((_, elapsed)) = delivered {
        report.delivery_ms = Some(elapsed.as_secs_f64() * 1000.0);
    }
    ack.with_context(|| format!("user {a}: the sender's acknowledgement"))?;
    delivery.with_context(|| format!("user {b}: the delivery"))?;
    if let (Some((sent, _)), Some((received, _))) = (acked, delivered) {
        if sent != received {
            bail!("message-sent named message {sent}, receive-message message {received}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProbeArgs,
    }

    fn args(extra: &[&str]) -> ProbeArgs {
        Cli::parse_from(std::iter::once("probe").chain(extra.iter().copied())).args
    }

    #[test]
    fn signed_tokens_carry_the_claims_the_gateway_checks() {
        let args = args(&["--jwt-user-claim", "uid", "--jwt-issuer", "https://auth.example", "--jwt-audience", "chat"]);
        let token = sign_hs256("s3cret", "uid", 42, 1_000_000, &args).expect("signs");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&["https://auth.example"]);
        validation.set_audience(&["chat"]);
        validation.set_required_spec_claims(&["exp"]);
        // The token was made "at" 1,000,000 s after the epoch: check it as of then.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .expect("the same secret verifies it");
        assert_eq!(data.claims["uid"], 42);
        assert_eq!(data.claims["exp"], 1_000_000 + TOKEN_LIFETIME.as_secs());
        let wrong = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"other"),
            &validation,
        );
        assert!(wrong.is_err(), "another secret must not verify it");
    }

    #[test]
    fn tokens_come_as_two_user_token_pairs() {
        assert_eq!(
            parse_tokens("7=aaa.bbb.ccc,\n 8 = ddd.eee.fff\n").expect("two pairs"),
            Identities::Tokens([(7, "aaa.bbb.ccc".into()), (8, "ddd.eee.fff".into())])
        );
        for bad in ["", "7=a", "7=a,8=b,9=c", "7=a,7=b", "x=a,8=b", "0=a,8=b", "7=,8=b", "7a,8=b"] {
            assert!(parse_tokens(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn without_credentials_the_users_are_consecutive_ids() {
        let identities = identities(&args(&["--user-base", "500"])).expect("development");
        assert_eq!(identities, Identities::Development([500, 501]));
        assert_eq!(identities.token(0), None);
    }
}
