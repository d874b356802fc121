//! `chat`: one binary for every role of the chat service.
//!
//! With no arguments it runs the all-in-one mode: gateway, persister and presence in one
//! process, on an in-process bus and an SQLite database in a local data directory. The roles
//! are the same code the cluster mode runs on NATS; only the bus and the database differ.

mod config;

use std::sync::Arc;

use anyhow::Context;
use chat_bus::{Bus, MemoryBus};
use chat_gateway::Gateway;
use chat_persister::{Persister, Store};
use chat_presence::Presence;
use chat_proto::Subjects;
use clap::Parser;

use crate::config::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command.unwrap_or(Command::All) {
        Command::All => run_all_in_one(&cli.server).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Gateway, persister and presence in this process, on the in-process bus.
async fn run_all_in_one(server: &config::ServerArgs) -> anyhow::Result<()> {
    let store = match &server.database_url {
        Some(url) => Store::connect(url).await,
        None => Store::open_sqlite(&server.data_dir).await,
    }
    .context("opening the database")?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let subjects = Subjects::default();

    let persister = Persister::new(bus.clone(), subjects.clone(), store)
        .start()
        .await?;
    let presence = Presence::new(bus.clone(), subjects.clone()).start().await?;
    let app = Gateway::start(bus, subjects, server.gateway_config()).await?;

    let address = std::net::SocketAddr::from((server.host, server.port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    tracing::info!(%address, data_dir = %server.data_dir.display(), "chat server (all-in-one) listening");

    let http = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        served = http => served.context("HTTP server failed")?,
        ended = persister => anyhow::bail!("persister stopped: {:?}", ended?),
        ended = presence => anyhow::bail!("presence stopped: {:?}", ended?),
    }
    tracing::info!("shut down");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before it kills a pod).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
