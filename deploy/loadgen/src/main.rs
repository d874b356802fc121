//! `chat-loadgen`: simulated users against the chat Socket.IO API (ours or any server speaking
//! it), measuring acknowledgement and delivery latency, throughput, delivery guarantees and
//! memory per idle connection; optionally with read receipts; the latency of inbox pages; and
//! the fan-out of group messages; and `probe`, one message end to end (the chart's `helm test`).
//! A table on stdout for people, `--json FILE` for machines; the exit status is 1 when a check
//! failed (lost, duplicated, out-of-order messages, errors, receipts not answered as the
//! contract says) and 2 when the run could not be made.

mod check;
mod cpu_meter;
mod crowd;
mod group;
mod idle;
mod inbox;
mod jetstream;
mod metrics;
mod probe;
mod procfs;
mod receipt;
mod rest;
mod schedule;
mod sio;
mod traffic;
mod user;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "chat-loadgen", version, about = "Load generator for the chat Socket.IO API")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,

    /// Worker threads of the load generator (it shares the machine with what it measures).
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,

    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open loop: a total target rate, the send times of the whole crowd from one clock, each
    /// send made at once by a user (no per-user cap unless asked); latency from the scheduled
    /// send time, so a slow server cannot hide its queueing (no coordinated omission).
    Rate {
        #[command(flatten)]
        common: Common,
        /// Messages per second, over all users.
        #[arg(long)]
        rate: f64,
        /// How sends are spread in time: `even` (a gap of 1/rate, users in turn) or `poisson`
        /// (random gaps of mean 1/rate, the user drawn at random).
        #[arg(long, value_enum, default_value_t = schedule::Arrivals::Even)]
        arrival: schedule::Arrivals,
        /// Seed of the `poisson` gaps and senders: the same seed, the same schedule.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Unanswered sends a user may have (default: no limit, the pure open loop). A send due
        /// at a user with that many waits for an answer, counted as a cap hit.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_in_flight: Option<u32>,
        #[command(flatten)]
        receipts: Receipts,
    },
    /// Closed loop: every user keeps `--window` sends unanswered; finds the maximum throughput.
    Max {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 8)]
        window: u32,
        #[command(flatten)]
        receipts: Receipts,
    },
    /// Group fan-out, on the open loop: groups of `--members`, one sender each, every member
    /// connected and joined; deliveries per second and their latency, nothing lost.
    Group {
        #[command(flatten)]
        args: group::GroupArgs,
    },
    /// Idle connections (each joined to a conversation): the servers' memory per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Longest wait for the connections to settle (no frames for 2 s) before measuring.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        settle_max: Duration,
        /// How long to keep the connections open after measuring.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// Latency of inbox pages (`GET /api/chats/users/{id}/conversations`) of one user, after
    /// a walk over all of them that checks their order and unread counts.
    InboxList {
        #[command(flatten)]
        args: inbox::InboxArgs,
    },
    /// One message end to end through a gateway (REST, two sockets, send, acknowledgement,
    /// delivery): the Helm chart's `helm test`, or a smoke check of a deployment.
    Probe {
        #[command(flatten)]
        args: probe::ProbeArgs,
    },
    /// The box's raw JetStream publish rate (file storage, acknowledged publishes).
    JetstreamBench {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Stream to create (and delete afterwards); default: one named after this process.
        #[arg(long)]
        stream: Option<String>,
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Publishes awaiting their acknowledgement.
        #[arg(long, default_value_t = 256)]
        in_flight: usize,
    },
}

/// Read receipts in the messaging modes.
#[derive(Debug, Args)]
pub struct Receipts {
    /// Every receiver marks each message of its partner read as it arrives (`mark-read` with
    /// an acknowledgement); acks, refusals and `message-read` events are counted and checked.
    #[arg(long)]
    pub mark_read: bool,
}

/// Settings of every mode that simulates users.
#[derive(Debug, Args)]
pub struct Common {
    /// Server base URL (`http://host:port`); repeat for several gateways: user i connects to
    /// URL i mod M, so the two users of a conversation are on different gateways.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: Vec<String>,
    /// Simulated users (even: they come in pairs, one conversation per pair).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Sending before measuring starts (not counted in latencies and throughput).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Measured sending time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// After sending stops, outstanding answers and deliveries are awaited until none has
    /// arrived for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Limit for each step of opening a connection (TCP, WebSocket, namespace, join).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub setup_timeout: Duration,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Parallel HTTP connections that open the conversations.
    #[arg(long, default_value_t = 8)]
    pub rest_parallel: usize,
    /// Local address to connect from (repeatable; users take them in turn), for more
    /// ephemeral ports than one address has.
    #[arg(long)]
    pub source_ip: Vec<IpAddr>,
    /// A server process to measure (repeatable; summed): its resident memory in `idle`, its
    /// CPU time during the measured window in `rate` and `max`.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// A Postgres database on this machine whose backends are server processes too
    /// (repeatable): in `rate` and `max`, the CPU time during the measured window of every
    /// backend serving it, connections opened or closed in the window included.
    #[arg(long)]
    pub server_database: Vec<String>,
    /// First user id (default: derived from the clock, so runs do not share users).
    #[arg(long)]
    pub user_base: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chat-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the mode; true when its checks passed.
fn run(cli: Cli) -> anyhow::Result<bool> {
    // Thousands of sockets need more descriptors than the usual soft limit of 1024.
    rlimit::increase_nofile_limit(u64::MAX).context("raising the open files limit")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match cli.mode {
            Mode::Rate { common, rate, arrival, seed, max_in_flight, receipts } => {
                anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be a positive number");
                let pace = traffic::Pace::Rate { rate, arrivals: arrival, seed, max_in_flight };
                let report = traffic::run(&common, pace, receipts.mark_read).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
            Mode::Max { common, window, receipts } => {
                let pace = traffic::Pace::Max { window: window.max(1) };
                let report = traffic::run(&common, pace, receipts.mark_read).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
            Mode::Idle { common, settle_max, hold } => {
                let report = idle::run(&common, settle_max, hold).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
            Mode::Group { args } => {
                let report = group::run(&args).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
            Mode::InboxList { args } => {
                let report = inbox::run(&args).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
            Mode::Probe { args } => {
                let report = probe::run(&args).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
            Mode::JetstreamBench { nats_url, stream, messages, size, in_flight } => {
                let stream = stream.unwrap_or_else(|| format!("loadgen_bench_{}", std::process::id()));
                let report = jetstream::run(&nats_url, &stream, messages, size, in_flight).await?;
                report.print_table();
                finish(cli.json, &report, report.ok)
            }
        }
    })
}

fn finish(json: Option<PathBuf>, report: &impl Serialize, ok: bool) -> anyhow::Result<bool> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}
