//! `chat`: one binary for every role of the chat service.
//!
//! With no arguments it runs the all-in-one mode: gateway, persister and presence in one
//! process, on an in-process bus and an SQLite database in a local data directory. The cluster
//! roles (`gateway`, `persister`, `presence`) run the very same code over NATS; only the bus
//! and the database differ. See ARCHITECTURE.md.

mod config;
mod startup;

use std::sync::Arc;

use anyhow::Context;
use chat_bus::{Bus, MemoryBus, NatsBus, WorkQueueSettings};
use chat_gateway::listener::{ClientAddr, GuardedListener};
use chat_gateway::Gateway;
use chat_persister::{Persister, Store};
use chat_presence::Presence;
use chat_proto::Subjects;
use clap::Parser;
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::config::{Cli, Command, LogFormat, Settings};
use crate::startup::{retry, shutdown_signal};
use futures::future::try_join_all;
use std::future::IntoFuture;
use tokio_util::sync::CancellationToken;

// Every message allocates on its way through (frames, JSON, protobuf, bus buffers) across
// threads; with mimalloc's per-thread heaps the servers spent about 10% fewer CPU seconds per
// message than with the system malloc in the closed-loop load test (deploy/bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let settings = &cli.settings;
    let command = cli.command.unwrap_or(Command::All);
    let subjects = Subjects::new(settings.subject_prefix.clone()).with_partitions(settings.partitions);
    match command {
        Command::Migrate => {
            open_store(settings).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::All => {
            let bus: Arc<dyn Bus> = match &settings.nats_url {
                Some(_) => connect_nats(settings, &subjects, "chat-all").await?,
                None => Arc::new(MemoryBus::new()),
            };
            let store = open_store(settings).await?;
            let stop = stop_on_signal();
            let persister = Persister::new(bus.clone(), subjects.clone(), store, settings.persister_config())
                .start(stop.clone())
                .await?;
            let presence = Presence::new(bus.clone(), subjects.clone(), settings.presence_config()).start().await?;
            let roles =
                vec![role_task("persister", persister, &stop), stateless_role_task("presence", presence, &stop)];
            serve_gateway(settings, bus, subjects, roles, stop).await
        }
        Command::Gateway => {
            let bus = connect_nats(settings, &subjects, "chat-gateway").await?;
            serve_gateway(settings, bus, subjects, Vec::new(), stop_on_signal()).await
        }
        Command::Persister => {
            let bus = connect_nats(settings, &subjects, "chat-persister").await?;
            let store = open_store(settings).await?;
            let stop = stop_on_signal();
            let persister =
                Persister::new(bus, subjects, store, settings.persister_config()).start(stop.clone()).await?;
            serve_health(settings, "persister", vec![role_task("persister", persister, &stop)], stop).await
        }
        Command::Presence => {
            let bus = connect_nats(settings, &subjects, "chat-presence").await?;
            let presence = Presence::new(bus, subjects, settings.presence_config()).start().await?;
            let stop = stop_on_signal();
            serve_health(settings, "presence", vec![stateless_role_task("presence", presence, &stop)], stop).await
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The database: `--database-url`, else SQLite in the data directory. Retried until the
/// start-up timeout, so a role may start before its database.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    match &settings.database_url {
        Some(url) => retry("the database", settings.startup_timeout, || Store::connect(url)).await,
        None => Ok(Store::open_sqlite(&settings.data_dir).await?),
    }
}

/// NATS, with the work queue's stream in place. Retried until the start-up timeout.
async fn connect_nats(settings: &Settings, subjects: &Subjects, client_name: &str) -> anyhow::Result<Arc<dyn Bus>> {
    let url = settings.nats_url();
    let partitions = (0..subjects.partitions()).map(|p| subjects.inbound_partition(p)).collect();
    let work_queue = WorkQueueSettings::new(subjects.inbound_stream(), subjects.inbound_all(), partitions);
    let bus =
        retry("NATS", settings.startup_timeout, || NatsBus::connect(url, client_name, work_queue.clone())).await?;
    tracing::info!(%url, prefix = subjects.prefix(), "connected to NATS");
    Ok(Arc::new(bus))
}

/// Cancelled by SIGTERM or Ctrl-C: every role then stops taking work and finishes what it has.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal: finishing work in hand");
        on_signal.cancel();
    });
    stop
}

/// A role's main task, as a future that resolves when the role ends: `Ok` only when it ended
/// because `stop` asked it to.
fn role_task<E: std::fmt::Debug + Send + 'static>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    stop: &CancellationToken,
) -> BoxFuture<'static, anyhow::Result<()>> {
    let stop = stop.clone();
    async move {
        match task.await {
            Ok(Ok(())) if stop.is_cancelled() => Ok(()),
            Ok(Ok(())) => Err(anyhow::anyhow!("{name} stopped")),
            Ok(Err(e)) => Err(anyhow::anyhow!("{name} stopped: {e:?}")),
            Err(e) => Err(anyhow::anyhow!("{name} crashed: {e}")),
        }
    }
    .boxed()
}

/// Like [`role_task`], for a role with no work in hand to finish: it ends as soon as `stop`
/// says so.
fn stateless_role_task<E: std::fmt::Debug + Send + 'static>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    stop: &CancellationToken,
) -> BoxFuture<'static, anyhow::Result<()>> {
    let stop = stop.clone();
    let task = role_task(name, task, &stop);
    async move {
        tokio::select! {
            ended = task => ended,
            () = stop.cancelled() => Ok(()),
        }
    }
    .boxed()
}

/// Runs the HTTP server and the in-process roles together: returns once all of them have
/// finished after `stop`, or at the first failure (a process that lost a role must not look
/// healthy).
async fn run_until_stopped(
    server: impl std::future::Future<Output = std::io::Result<()>>,
    what: &'static str,
    roles: Vec<BoxFuture<'static, anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    tokio::try_join!(async { server.await.with_context(|| format!("{what} failed")) }, try_join_all(roles))?;
    tracing::info!("shut down");
    Ok(())
}

/// Serves the gateway's HTTP and Socket.IO until `stop`, then closes every socket and waits
/// for the in-process `roles` to finish their work.
async fn serve_gateway(
    settings: &Settings,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    roles: Vec<BoxFuture<'static, anyhow::Result<()>>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let config = settings.gateway_config();
    let gateway_id = config.gateway_id.clone();
    let (gateway, app) = Gateway::start(bus, subjects, config).await?;
    let listener = bind(settings).await?;
    tracing::info!(address = %settings_address(settings), %gateway_id, "gateway listening");
    let shutdown = async move {
        stop.cancelled().await;
        gateway.shut_down().await;
    };
    // With the peer address in each request: the per-address connection limit needs it.
    let server = axum::serve(
        GuardedListener::new(listener, settings.write_stall_timeout),
        app.into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown);
    run_until_stopped(server.into_future(), "HTTP server", roles).await
}

/// Serves `/healthz` for a role without an HTTP API of its own, until `stop` and the role has
/// finished its work.
async fn serve_health(
    settings: &Settings,
    role: &str,
    roles: Vec<BoxFuture<'static, anyhow::Result<()>>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }));
    let listener = bind(settings).await?;
    tracing::info!(address = %settings_address(settings), %role, "health endpoint listening");
    let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
    run_until_stopped(server.into_future(), "health server", roles).await
}

fn settings_address(settings: &Settings) -> std::net::SocketAddr {
    std::net::SocketAddr::from((settings.host, settings.port))
}

async fn bind(settings: &Settings) -> anyhow::Result<tokio::net::TcpListener> {
    let address = settings_address(settings);
    tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))
}
