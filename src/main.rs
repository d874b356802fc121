//! `chat`: one binary for every role of the chat service.
//!
//! With no arguments it runs the all-in-one mode: gateway, persister and presence in one
//! process, on an in-process bus and an SQLite database in a local data directory. The cluster
//! roles (`gateway`, `persister`, `presence`) run the very same code over NATS; only the bus
//! and the database differ. See ARCHITECTURE.md.

mod config;
mod ops;
mod startup;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_bus::{Bus, BusError, MemoryBus, NatsBus, WorkQueueSettings};
use chat_gateway::listener::{ClientAddr, GuardedListener};
use chat_persister::{Persister, Store};
use chat_presence::Presence;
use chat_proto::Subjects;
use chat_telemetry::prometheus::Metrics;
use chat_telemetry::Service;
use clap::Parser;
use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Cli, Command, LogFormat, Settings};
use crate::ops::{Dependency, Ops};
use crate::startup::{retry, shutdown_signal};

/// jemalloc rather than the system's malloc: near saturation the allocator is a fifth of a
/// gateway's profile, and jemalloc's thread caches make that cheaper (ARCHITECTURE.md,
/// Performance).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(threads.get());
    }
    runtime.build().context("starting the async runtime")?.block_on(serve(cli))
}

async fn serve(mut cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::All);
    let service = Service {
        role: command.role(),
        instance_id: instance_id(&mut cli.settings, command),
        version: env!("CARGO_PKG_VERSION"),
    };
    let tracing = chat_telemetry::init(&service, matches!(cli.log_format, LogFormat::Json))?;
    let result = run(&cli.settings, command, &service).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "stopped");
    }
    // Sends the spans still buffered; blocking, so off the async workers.
    if let Err(e) = tokio::task::spawn_blocking(move || tracing.shutdown()).await {
        tracing::warn!(error = %e, "flushing spans at exit failed");
    }
    result
}

/// This process among its role's replicas, in spans (`service.instance.id`) and metrics
/// (`chat_build_info{instance_id}`): a gateway's id (the all-in-one's too; generated now when
/// unset, so the gateway goes by the same one), else the host name (the pod's in Kubernetes),
/// else generated.
fn instance_id(settings: &mut Settings, command: Command) -> String {
    if matches!(command, Command::All | Command::Gateway) {
        return settings.gateway_id.get_or_insert_with(chat_gateway::gateway::generated_gateway_id).clone();
    }
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.trim().is_empty() => host,
        _ => format!("{}-{}", command.role(), uuid::Uuid::new_v4().simple()),
    }
}

async fn run(settings: &Settings, command: Command, service: &Service) -> anyhow::Result<()> {
    let subjects = Subjects::new(settings.subject_prefix.clone()).with_partitions(settings.partitions);
    if command == Command::Migrate {
        open_store(settings).await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let metrics = install_metrics(command, service)?;
    match command {
        Command::Migrate => Ok(()),
        Command::All => {
            let mut persister_config = settings.persister_config();
            let (bus, mut dependencies): (Arc<dyn Bus>, _) = match &settings.nats_url {
                Some(_) => {
                    let bus = connect_nats(settings, &subjects, "chat-all").await?;
                    (bus.clone(), vec![Dependency::Nats(bus)])
                }
                None => {
                    // The in-process queue hands out jobs in one line, not one partition at a
                    // time: only one batch at a time keeps a conversation's messages in order.
                    persister_config.batches_in_flight = chat_persister::defaults::BATCHES_IN_FLIGHT_IN_PROCESS;
                    (Arc::new(MemoryBus::new()), Vec::new())
                }
            };
            let store = open_store(settings).await?;
            dependencies.push(Dependency::Database(store.clone()));
            let stop = stop_on_signal();
            let persister =
                Persister::new(bus.clone(), subjects.clone(), store, persister_config).start(stop.clone()).await?;
            chat_persister::metrics::spawn_pending_gauge(bus.clone());
            let presence = start_presence(settings, &bus, &subjects).await?;
            let roles =
                vec![role_task("persister", persister, &stop), stateless_role_task("presence", presence, &stop)];
            serve_gateway(settings, bus, subjects, Ops { metrics, dependencies }, roles, stop).await
        }
        Command::Gateway => {
            let bus = connect_nats(settings, &subjects, "chat-gateway").await?;
            let ops = Ops { metrics, dependencies: vec![Dependency::Nats(bus.clone())] };
            serve_gateway(settings, bus, subjects, ops, Vec::new(), stop_on_signal()).await
        }
        Command::Persister => {
            let bus = connect_nats(settings, &subjects, "chat-persister").await?;
            let store = open_store(settings).await?;
            let dependencies = vec![Dependency::Nats(bus.clone()), Dependency::Database(store.clone())];
            let stop = stop_on_signal();
            let persister =
                Persister::new(bus.clone(), subjects, store, settings.persister_config()).start(stop.clone()).await?;
            chat_persister::metrics::spawn_pending_gauge(bus);
            let roles = vec![role_task("persister", persister, &stop)];
            serve_health(settings, "persister", Ops { metrics, dependencies }, roles, stop).await
        }
        Command::Presence => {
            let bus = connect_nats(settings, &subjects, "chat-presence").await?;
            let dependencies = vec![Dependency::Nats(bus.clone())];
            let presence = start_presence(settings, &bus, &subjects).await?;
            let stop = stop_on_signal();
            let roles = vec![stateless_role_task("presence", presence, &stop)];
            serve_health(settings, "presence", Ops { metrics, dependencies }, roles, stop).await
        }
    }
}

/// Installs the Prometheus recorder and shows the metrics of the roles this process runs, at
/// zero, before any traffic.
fn install_metrics(command: Command, service: &Service) -> anyhow::Result<Metrics> {
    let metrics = Metrics::install().context("cannot install the metrics recorder")?;
    metrics::describe_gauge!("chat_build_info", "Always 1: the role this process runs, its instance id and version");
    // `instance_id`, not `instance`: Prometheus sets `instance` on every scraped series.
    let instance_id = service.instance_id.clone();
    metrics::gauge!("chat_build_info", "role" => service.role, "version" => service.version, "instance_id" => instance_id)
        .set(1.0);
    chat_bus::describe_metrics();
    if matches!(command, Command::All | Command::Gateway) {
        chat_gateway::metrics::describe();
    }
    if matches!(command, Command::All | Command::Persister) {
        chat_persister::metrics::describe();
    }
    if matches!(command, Command::All | Command::Presence) {
        chat_presence::metrics::describe();
    }
    Ok(metrics)
}

/// The database: `--database-url`, else SQLite in the data directory. Retried until the
/// start-up timeout, so a role may start before its database.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    match &settings.database_url {
        Some(url) => retry("the database", settings.startup_timeout, || Store::connect(url)).await,
        None => Ok(Store::open_sqlite(&settings.data_dir).await?),
    }
}

/// NATS, with the work queue's stream in place. Retried until the start-up timeout: a NATS
/// cluster that is still forming may refuse replicas for a while too.
async fn connect_nats(settings: &Settings, subjects: &Subjects, client_name: &str) -> anyhow::Result<Arc<dyn Bus>> {
    let servers = settings.nats_servers()?;
    let replicas = usize::from(settings.stream_replicas);
    let partitions = (0..subjects.partitions()).map(|p| subjects.inbound_partition(p)).collect();
    let work_queue = WorkQueueSettings::new(subjects.inbound_stream(), subjects.inbound_all(), partitions);
    let bus = retry("NATS", settings.startup_timeout, || async {
        NatsBus::connect(&servers, client_name, replicas, work_queue.clone()).await.map_err(explain_replicas)
    })
    .await?;
    tracing::info!(%servers, replicas, prefix = subjects.prefix(), "connected to NATS");
    Ok(Arc::new(bus))
}

/// Starts the presence service, retried until the start-up timeout: its buckets are streams,
/// and a JetStream cluster that has just formed (or is electing a leader after losing a node)
/// may refuse or leave unanswered their creation for a few seconds, after which it succeeds.
/// Nothing runs before the last step of `start` succeeds, so a failed attempt leaves nothing.
async fn start_presence(
    settings: &Settings,
    bus: &Arc<dyn Bus>,
    subjects: &Subjects,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), chat_presence::PresenceError>>> {
    retry("the presence buckets", settings.startup_timeout, || {
        Presence::new(bus.clone(), subjects.clone(), settings.presence_config()).start()
    })
    .await
}

/// A bus error as the operator should read it: a refused replica count names the setting
/// that asked for it.
fn explain_replicas(error: BusError) -> String {
    match error {
        BusError::Replicas { .. } => {
            format!("{error} (set by --stream-replicas / CHAT_STREAM_REPLICAS: use at most the number of JetStream servers of the NATS cluster)")
        }
        other => other.to_string(),
    }
}

/// Cancelled by SIGTERM or Ctrl-C: every role then stops taking work and finishes what it has.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal: finishing the work in hand");
        on_signal.cancel();
    });
    stop
}

/// A role running in this process, as a future that resolves when the role ends: `Ok` only
/// when it ended because `stop` asked it to.
type RoleTask = BoxFuture<'static, anyhow::Result<()>>;

/// The [`RoleTask`] of a role that finishes its work in hand once `stop` is cancelled.
fn role_task<E: std::fmt::Debug + Send + 'static>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    stop: &CancellationToken,
) -> RoleTask {
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

/// The [`RoleTask`] of a role with no work in hand to finish: it ends as soon as `stop` says
/// so.
fn stateless_role_task<E: std::fmt::Debug + Send + 'static>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    stop: &CancellationToken,
) -> RoleTask {
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

/// Resolves when the first role ends, or never when there is none. Before `stop` a role never
/// ends of its own accord: if one does, the process must not go on looking healthy.
async fn first_ended(roles: &mut [RoleTask]) -> anyhow::Error {
    if roles.is_empty() {
        return std::future::pending().await;
    }
    match futures::future::select_all(roles.iter_mut()).await.0 {
        Ok(()) => anyhow::anyhow!("a role ended before shutdown"),
        Err(e) => e,
    }
}

/// After `stop`: waits for the roles to finish their work in hand, for at most `grace`.
async fn finish_roles(roles: Vec<RoleTask>, grace: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(grace, try_join_all(roles)).await {
        Ok(finished) => finished.map(|_| ()),
        Err(_) => {
            tracing::warn!(?grace, "roles still busy after the grace period; exiting");
            Ok(())
        }
    }
}

/// Serves the gateway's HTTP and Socket.IO, and the operations endpoints, until a shutdown
/// signal, or until one of the in-process `roles` stops (a process that lost a role must not
/// look healthy).
///
/// On SIGTERM or Ctrl-C the gateway stops accepting connections and is no longer ready, then
/// drains ([`chat_gateway::Gateway::shut_down`]) within `--shutdown-grace`; past that the process exits
/// anyway.
async fn serve_gateway(
    settings: &Settings,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    mut ops: Ops,
    mut roles: Vec<RoleTask>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let config = settings.gateway_config();
    let gateway_id = config.gateway_id.clone();
    let (gateway, app) = chat_gateway::start(bus, subjects, config).await?;
    ops.dependencies.push(Dependency::Gateway(gateway.clone()));
    let app = app.merge(ops::router(ops));
    let listener = bind(settings).await?;
    tracing::info!(address = %settings_address(settings), %gateway_id, "gateway listening");
    let grace = settings.shutdown_grace;
    let (stop_accepting, stop_accepting_rx) = tokio::sync::oneshot::channel::<()>();
    // With the peer address in each request: the per-address connection limit needs it.
    let serving = axum::serve(
        GuardedListener::new(listener, settings.write_stall_timeout),
        app.into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_accepting_rx.await; // dropped sender: stop as well
    })
    .into_future();
    tokio::pin!(serving);
    // Stop first: a role that ends because it was told to stop is not a failure.
    tokio::select! {
        biased;
        () = stop.cancelled() => {}
        served = &mut serving => return served.context("HTTP server failed"),
        failed = first_ended(&mut roles) => return Err(failed),
    }
    // The server stops accepting connections while the gateway drains; upgraded connections
    // (WebSockets) are not the server's to wait for, so the drain is what bounds the end.
    let _ = stop_accepting.send(());
    let drain = async { tokio::join!(gateway.shut_down(grace), &mut serving).1 };
    match tokio::time::timeout(grace + Duration::from_secs(2), drain).await {
        Ok(served) => served.context("HTTP server failed")?,
        Err(_) => tracing::warn!(?grace, "connections still open after the grace period; exiting"),
    }
    // No sends arrive any more: the in-process persister finishes its batch.
    finish_roles(roles, grace).await?;
    tracing::info!("shut down");
    Ok(())
}

/// Serves the operations endpoints for a role without an HTTP API of its own, until `stop`
/// and the role has finished its work in hand, or until the role fails.
async fn serve_health(
    settings: &Settings,
    role: &str,
    ops: Ops,
    mut roles: Vec<RoleTask>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let app = ops::router(ops);
    let listener = bind(settings).await?;
    tracing::info!(address = %settings_address(settings), %role, "health endpoint listening");
    let serving = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let working = async {
        // Stop first: a role that ends because it was told to stop is not a failure.
        tokio::select! {
            biased;
            () = stop.cancelled() => {}
            failed = first_ended(&mut roles) => return Err(failed),
        }
        finish_roles(roles, settings.shutdown_grace).await
    };
    tokio::try_join!(async { serving.await.context("health server failed") }, working)?;
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
