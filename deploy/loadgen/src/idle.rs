//! The `idle` mode: N connections, each joined to a conversation, held open; the servers'
//! resident memory before and after, per connection.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::crowd::{Crowd, Setup};
use crate::procfs::rss_bytes;
use crate::user::Load;
use crate::Common;

/// The connections have settled when no frame but pings arrived for this long.
const QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub rss_before: u64,
    pub rss_after: u64,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub urls: Vec<String>,
    /// Connections opened and joined (those that failed are errors).
    pub connections: usize,
    pub connect_failures: usize,
    pub setup_s: f64,
    /// Sum over the server processes, in bytes.
    pub rss_before: u64,
    pub rss_after: u64,
    pub bytes_per_connection: f64,
    pub servers: Vec<ServerMemory>,
    /// False when frames were still arriving at `--settle-max` (the servers' output buffers
    /// may then be part of the measurement).
    pub settled: bool,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub ok: bool,
}

pub async fn run(common: &Common, settle_max: Duration, hold: Duration) -> anyhow::Result<IdleReport> {
    let server_pids = &common.server_pid;
    let before = server_pids.iter().map(|&pid| rss_bytes(pid)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut crowd =
        Crowd::assemble(common, Setup::Tolerant, (0..common.users).map(|_| Load::Idle).collect(), false).await?;
    let metrics = crowd.metrics.clone();
    // Settled: no frame (presence announcements, join echoes) for a while, or settle_max.
    let give_up = Instant::now() + settle_max;
    let mut frames = metrics.frames.get();
    let settled = loop {
        tokio::time::sleep(QUIET).await;
        let now = metrics.frames.get();
        if now == frames {
            break true;
        }
        if Instant::now() >= give_up {
            break false;
        }
        frames = now;
    };
    let after = server_pids.iter().map(|&pid| rss_bytes(pid)).collect::<anyhow::Result<Vec<_>>>()?;
    tokio::time::sleep(hold).await;
    crowd.stop().await;

    let servers: Vec<ServerMemory> = server_pids
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(&pid, (&rss_before, &rss_after))| ServerMemory { pid, rss_before, rss_after })
        .collect();
    let rss_before: u64 = before.iter().sum();
    let rss_after: u64 = after.iter().sum();
    let errors = metrics.errors.get();
    let connections = crowd.users - crowd.setup_failures;
    Ok(IdleReport {
        mode: "idle",
        urls: common.url.clone(),
        connections,
        connect_failures: crowd.setup_failures,
        setup_s: crowd.setup_time.as_secs_f64(),
        rss_before,
        rss_after,
        bytes_per_connection: (rss_after as f64 - rss_before as f64) / connections.max(1) as f64,
        servers,
        settled,
        errors,
        error_samples: metrics.error_samples(),
        ok: errors == 0,
    })
}

impl IdleReport {
    pub fn print_table(&self) {
        println!(
            "{} idle connections on {} (set up in {:.1} s; {} failed)",
            self.connections,
            self.urls.join(", "),
            self.setup_s,
            self.connect_failures
        );
        println!("{:<10}{:>16}{:>16}", "server", "RSS before", "RSS after");
        for s in &self.servers {
            println!("{:<10}{:>13} kB{:>13} kB", s.pid, s.rss_before / 1024, s.rss_after / 1024);
        }
        println!("memory per connection: {:.0} bytes", self.bytes_per_connection);
        if !self.settled {
            println!("(measured while frames were still arriving: not settled)");
        }
        for sample in &self.error_samples {
            println!("  e.g. {sample}");
        }
        println!("errors {}: {}", self.errors, if self.ok { "OK" } else { "FAILED" });
    }
}
