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
            let persister =
                Persister::new(bus.clone(), subjects.clone(), store, settings.persister_config()).start().await?;
            let presence = Presence::new(bus.clone(), subjects.clone(), settings.presence_config()).start().await?;
            let roles = vec![role_task("persister", persister), role_task("presence", presence)];
            serve_gateway(settings, bus, subjects, roles).await
        }
        Command::Gateway => {
            let bus = connect_nats(settings, &subjects, "chat-gateway").await?;
            serve_gateway(settings, bus, subjects, Vec::new()).await
        }
        Command::Persister => {
            let bus = connect_nats(settings, &subjects, "chat-persister").await?;
            let store = open_store(settings).await?;
            let persister = Persister::new(bus, subjects, store, settings.persister_config()).start().await?;
            serve_health(settings, "persister", vec![role_task("persister", persister)]).await
        }
        Command::Presence => {
            let bus = connect_nats(settings, &subjects, "chat-presence").await?;
            let presence = Presence::new(bus, subjects, settings.presence_config()).start().await?;
            serve_health(settings, "presence", vec![role_task("presence", presence)]).await
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

/// A role's main task, as a future that resolves only if the role stops.
fn role_task<E: std::fmt::Debug + Send + 'static>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
) -> BoxFuture<'static, anyhow::Error> {
    async move {
        match task.await {
            Ok(Ok(())) => anyhow::anyhow!("{name} stopped"),
            Ok(Err(e)) => anyhow::anyhow!("{name} stopped: {e:?}"),
            Err(e) => anyhow::anyhow!("{name} crashed: {e}"),
        }
    }
    .boxed()
}

/// Resolves with the first role that stops, or never when there is none.
async fn first_stopped(roles: Vec<BoxFuture<'static, anyhow::Error>>) -> anyhow::Error {
    if roles.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(roles).await.0
}

/// Serves the gateway's HTTP and Socket.IO until a shutdown signal, or until one of the
/// in-process `roles` stops (a process that lost a role must not look healthy).
async fn serve_gateway(
    settings: &Settings,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    roles: Vec<BoxFuture<'static, anyhow::Error>>,
) -> anyhow::Result<()> {
    let config = settings.gateway_config();
    let gateway_id = config.gateway_id.clone();
    let (gateway, app) = Gateway::start(bus, subjects, config).await?;
    let listener = bind(settings).await?;
    tracing::info!(address = %settings_address(settings), %gateway_id, "gateway listening");
    let shutdown = {
        let gateway = gateway.clone();
        async move {
            shutdown_signal().await;
            gateway.shut_down().await;
        }
    };
    tokio::select! {
        // With the peer address in each request: the per-address connection limit needs it.
        served = axum::serve(
            GuardedListener::new(listener, settings.write_stall_timeout),
            app.into_make_service_with_connect_info::<ClientAddr>(),
        )
            .with_graceful_shutdown(shutdown) => served.context("HTTP server failed")?,
        stopped = first_stopped(roles) => return Err(stopped),
    }
    tracing::info!("shut down");
    Ok(())
}

/// Serves `/healthz` for a role without an HTTP API of its own, until a shutdown signal or
/// until the role stops.
async fn serve_health(
    settings: &Settings,
    role: &str,
    roles: Vec<BoxFuture<'static, anyhow::Error>>,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }));
    let listener = bind(settings).await?;
    tracing::info!(address = %settings_address(settings), %role, "health endpoint listening");
    tokio::select! {
        served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()) => served.context("health server failed")?,
        stopped = first_stopped(roles) => return Err(stopped),
    }
    tracing::info!("shut down");
    Ok(())
}

fn settings_address(settings: &Settings) -> std::net::SocketAddr {
    std::net::SocketAddr::from((settings.host, settings.port))
}

async fn bind(settings: &Settings) -> anyhow::Result<tokio::net::TcpListener> {
    let address = settings_address(settings);
    tokio::net::TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))
}
