//! CPU time of the server processes over a measured window: the `--server-pid` processes and
//! the Postgres backends of the `--server-database` databases.
//!
//! A connection pool opens and closes database connections as it likes (node-postgres closes
//! one idle for 10 s; sqlx opens more under load), so the backends alive at the start of a
//! window are not those working in it. Backends are therefore found by their process title
//! (`postgres: <user> <database> …`, Postgres on this machine) at every [`CpuMeter::sample`]:
//! one that appears during the window counts from its first tick, one that ends counts up to
//! the last sample that saw it (at most one sampling interval of its CPU is missed).

use std::collections::{HashMap, HashSet};

use crate::procfs;

/// How often the window is sampled (see [`CpuMeter::sample`]).
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The CPU counted so far for one process: what it had used at the start (0 when it appeared
/// during the window) and at the latest sample that saw it.
#[derive(Clone, Copy, Debug)]
struct Counted {
    at_start: f64,
    latest: f64,
}

pub struct CpuMeter {
    databases: Vec<String>,
    counted: HashMap<u32, Counted>,
    /// Processes already looked at that are not backends of the databases (their title is
    /// read once).
    others: HashSet<u32>,
    /// Whether any process was measured at all (without, the report says `null`).
    anything: bool,
}

impl CpuMeter {
    /// Starts the window now: reads the CPU of `pids` and of the databases' backends.
    fn start(pids: &[u32], databases: &[String]) -> Self {
        let mut meter = Self {
            databases: databases.to_vec(),
            counted: HashMap::new(),
            others: Default::default(),
            anything: !pids.is_empty() || !databases.is_empty(),
        };
        for &pid in pids {
            if let Some(seconds) = procfs::cpu_seconds(pid) {
                meter.counted.insert(pid, Counted { at_start: seconds, latest: seconds });
            }
        }
        for (pid, seconds) in meter.backends() {
            meter.counted.insert(pid, Counted { at_start: seconds, latest: seconds });
        }
        meter
    }

    /// Measures from now until `end`, sampling every [`SAMPLE_EVERY`]: CPU seconds used by
    /// `pids` and the backends of `databases`; `None` when there is nothing to measure.
    pub async fn measure_until(pids: &[u32], databases: &[String], end: tokio::time::Instant) -> Option<f64> {
        let mut meter = Self::start(pids, databases);
        while tokio::time::Instant::now() + SAMPLE_EVERY < end {
            tokio::time::sleep(SAMPLE_EVERY).await;
            meter.sample();
        }
        tokio::time::sleep_until(end).await;
        meter.finish()
    }

    /// Reads again every process counted, and counts backends that appeared since.
    fn sample(&mut self) {
        for (pid, counted) in self.counted.iter_mut() {
            if let Some(seconds) = procfs::cpu_seconds(*pid) {
                counted.latest = seconds;
            }
        }
        for (pid, seconds) in self.backends() {
            // Not seen at the start (nor since): it opened during the window.
            self.counted.entry(pid).or_insert(Counted { at_start: 0.0, latest: seconds });
        }
    }

    /// Ends the window (with a last sample): CPU seconds used in it by every process counted;
    /// `None` when there was nothing to measure.
    fn finish(mut self) -> Option<f64> {
        self.sample();
        self.anything.then(|| used(self.counted.values()))
    }

    /// Postgres backends of the databases alive now, with their CPU seconds so far.
    fn backends(&mut self) -> Vec<(u32, f64)> {
        if self.databases.is_empty() {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            if self.others.contains(&pid) || self.counted.contains_key(&pid) {
                continue;
            }
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let title = String::from_utf8_lossy(&title);
            let serves = backend_database(&title).is_some_and(|database| self.databases.iter().any(|d| d == database));
            match procfs::cpu_seconds(pid) {
                Some(seconds) if serves => found.push((pid, seconds)),
                // A backend just forked still has the postmaster's command line until it sets
                // its title: looked at again next time (the postmaster itself too, one process).
                _ if !title.starts_with("postgres: ") && title.contains("postgres") => {}
                _ => {
                    self.others.insert(pid);
                }
            }
        }
        found
    }
}

/// The database a Postgres backend serves, from its process title (`postgres: [cluster: ]user
/// database host(port) activity`, the cluster's name when `cluster_name` is set, as Debian
/// does; one string, possibly NUL-padded); `None` for any other process, Postgres's own
/// workers included (`postgres: walwriter`, …: no database).
fn backend_database(title: &str) -> Option<&str> {
    let mut rest = title.strip_prefix("postgres: ")?;
    if let Some((cluster, after)) = rest.split_once(": ") {
        if !cluster.contains([' ', '\0']) {
            rest = after;
        }
    }
    let mut words = rest.split(['\0', ' ']).filter(|w| !w.is_empty());
    let _user = words.next()?;
    let database = words.next()?;
    // A backend's third word is its client: `host(port)` over TCP, `[local]` on the socket.
    let client = words.next()?;
    (client.ends_with(')') || client == "[local]").then_some(database)
}

fn used<'a>(counted: impl Iterator<Item = &'a Counted>) -> f64 {
    counted.map(|c| c.latest - c.at_start).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_titles_name_their_database() {
        assert_eq!(backend_database("postgres: postgres bench_1_g1 127.0.0.1(40412) idle"), Some("bench_1_g1"));
        assert_eq!(backend_database("postgres: app chat [local] INSERT\0\0\0"), Some("chat"));
        assert_eq!(backend_database("postgres: 15/main: postgres peer 127.0.0.1(5) INSERT\0\0"), Some("peer"));
        assert_eq!(backend_database("postgres: walwriter "), None);
        assert_eq!(backend_database("postgres: 15/main: checkpointer \0\0"), None);
        assert_eq!(backend_database("postgres: autovacuum launcher "), None);
        assert_eq!(backend_database("/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib"), None);
        assert_eq!(backend_database("node\0server.js\0"), None);
    }

    #[test]
    fn processes_opened_in_the_window_count_from_zero_and_ended_ones_up_to_their_last_sample() {
        let counted = [
            Counted { at_start: 10.0, latest: 12.5 }, // alive throughout
            Counted { at_start: 0.0, latest: 0.75 },  // opened during the window
            Counted { at_start: 5.0, latest: 5.25 },  // ended after this sample
        ];
        assert_eq!(used(counted.iter()), 3.5);
    }

    #[test]
    fn this_process_is_measured_and_nothing_is_none() {
        let meter = CpuMeter::start(&[std::process::id()], &[]);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(meter.finish().expect("own CPU") > 0.0);
        assert_eq!(CpuMeter::start(&[], &[]).finish(), None);
    }
}
