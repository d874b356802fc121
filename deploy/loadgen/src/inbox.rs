//! The `inbox-list` mode: the latency of one user's inbox pages
//! (`GET /api/chats/users/{id}/conversations?limit=&before=`), the first page and the pages
//! after it, one connection after another or several at once.
//!
//! Before measuring, one walk over the whole inbox at the largest page checks what is being
//! timed: the conversations newest activity first without repeats, every non-last page full,
//! the unread counts adding up to `total_unread` (and, when asked, the number of
//! conversations and `total_unread` the caller seeded), so that a fast answer is also a right
//! one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::metrics::{histogram, Percentiles};
use crate::procfs;
use crate::rest::Client;
use crate::sio::Endpoint;

/// The contract's largest page: a larger `limit` is capped to it.
const MAX_LIMIT: u32 = 100;
/// The check walk gives up after this many pages (a cursor that never ends).
const MAX_WALK_PAGES: u64 = 100_000;
/// Error texts kept for the report.
const ERROR_SAMPLES: usize = 10;

#[derive(Debug, clap::Args)]
pub struct InboxArgs {
    /// Server base URL (`http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// The user whose inbox is listed.
    #[arg(long)]
    pub user: u64,
    /// Conversations per page (`limit`).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Pages per walk: the first page, then up to this many minus one following
    /// `next_before`; walks repeat until `--requests` have been made.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub pages: u32,
    /// Measured requests, over all connections.
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,
    /// Requests each connection makes before measuring (not counted): the first ones pay for
    /// connections, caches and query plans that a running server has already.
    #[arg(long, default_value_t = 50)]
    pub warmup_requests: u64,
    /// Connections, each making its requests one after another.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Fail unless the check walk finds this many conversations.
    #[arg(long)]
    pub expect_conversations: Option<u64>,
    /// Fail unless `total_unread` is this.
    #[arg(long)]
    pub expect_total_unread: Option<i64>,
    /// A server process whose CPU time during the measured requests is reported (repeatable):
    /// where the time of a page goes.
    #[arg(long)]
    pub server_pid: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct InboxReport {
    pub mode: &'static str,
    pub url: String,
    pub user: u64,
    pub limit: u32,
    pub pages: u32,
    pub concurrency: usize,
    pub requests: u64,
    pub warmup_requests: u64,
    /// Wall time of the measured requests, and their rate.
    pub duration_s: f64,
    pub requests_per_s: f64,
    /// Request sent to body received, pages without `before`.
    pub first_page_ms: Percentiles,
    /// The same, pages with `before`.
    pub later_pages_ms: Percentiles,
    pub all_ms: Percentiles,
    /// Measured requests not answered 200 with a page, or with a short one.
    pub errors: u64,
    pub walk: WalkCheck,
    /// CPU time of each `--server-pid` process alive before and after the measured requests.
    pub server_cpu: Vec<ProcessCpu>,
    pub error_samples: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcessCpu {
    pub pid: u32,
    pub cpu_s: f64,
    /// The same per measured request, in milliseconds.
    pub cpu_ms_per_request: f64,
}

/// What the check walk over the whole inbox found.
#[derive(Debug, Default, Serialize)]
pub struct WalkCheck {
    pub pages: u64,
    pub conversations: u64,
    pub total_unread: i64,
    /// The sum of the conversations' `unread_count`, which the contract makes `total_unread`.
    pub unread_sum: i64,
    /// Conversations out of inbox order, or listed twice.
    pub order_violations: u64,
    /// Other breaches: a non-last page not full, `total_unread` changing between pages,
    /// `limit` not echoed, a last message of another conversation, the user not a member.
    pub other_violations: u64,
}

/// A page as the check walk reads it.
#[derive(Deserialize)]
struct Page {
    data: Vec<Entry>,
    total_unread: i64,
    limit: u32,
    next_before: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    id: u64,
    last_activity_at: String,
    unread_count: i64,
    last_message: Option<LastMessage>,
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct LastMessage {
    conversation_id: u64,
}

#[derive(Deserialize)]
struct Member {
    user_id: u64,
}

/// A page as the measured requests read it: only what the next request needs and the size.
#[derive(Deserialize)]
struct Cursor {
    data: Vec<IgnoredAny>,
    next_before: Option<String>,
}

pub async fn run(args: &InboxArgs) -> anyhow::Result<InboxReport> {
    let endpoint = Arc::new(Endpoint::resolve(&args.url).await?);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let walk = check_walk(&endpoint, args.user, &samples).await?;

    let remaining = Arc::new(AtomicU64::new(args.requests));
    let cpu_before: Vec<_> = args.server_pid.iter().map(|&pid| (pid, procfs::cpu_seconds(pid))).collect();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let worker = Worker {
            endpoint: Arc::clone(&endpoint),
            base: format!("/api/chats/users/{}/conversations?limit={}", args.user, args.limit),
            expected_size: args.limit.min(MAX_LIMIT) as usize,
            pages: args.pages,
            remaining: Arc::clone(&remaining),
            samples: Arc::clone(&samples),
        };
        let warmup = args.warmup_requests;
        workers.push(tokio::spawn(async move { worker.run(warmup).await }));
    }
    let (mut first, mut later, mut errors) = (histogram(), histogram(), 0);
    for worker in workers {
        let done = worker.await.context("an inbox worker panicked")??;
        first.add(&done.first).context("merging latencies")?;
        later.add(&done.later).context("merging latencies")?;
        errors += done.errors;
    }
    let duration = started.elapsed().as_secs_f64();
    let mut all = first.clone();
    all.add(&later).context("merging latencies")?;
    let server_cpu = cpu_before
        .into_iter()
        .filter_map(|(pid, before)| {
            let used = procfs::cpu_seconds(pid)? - before?;
            Some(ProcessCpu { pid, cpu_s: used, cpu_ms_per_request: used * 1000.0 / all.len().max(1) as f64 })
        })
        .collect();

    let mut report = InboxReport {
        mode: "inbox-list",
        url: args.url.clone(),
        user: args.user,
        limit: args.limit,
        pages: args.pages,
        concurrency: args.concurrency.max(1),
        requests: all.len(),
        warmup_requests: args.warmup_requests,
        duration_s: duration,
        requests_per_s: all.len() as f64 / duration.max(f64::EPSILON),
        first_page_ms: Percentiles::of(&first),
        later_pages_ms: Percentiles::of(&later),
        all_ms: Percentiles::of(&all),
        errors,
        walk,
        server_cpu,
        error_samples: Vec::new(),
        ok: false,
    };
    if let Some(expected) = args.expect_conversations {
        if report.walk.conversations != expected {
            sample(&samples, format!("{} conversations listed, {expected} expected", report.walk.conversations));
            report.walk.other_violations += 1;
        }
    }
    if let Some(expected) = args.expect_total_unread {
        if report.walk.total_unread != expected {
            sample(&samples, format!("total_unread {}, {expected} expected", report.walk.total_unread));
            report.walk.other_violations += 1;
        }
    }
    report.error_samples = std::mem::take(&mut *lock(&samples));
    let w = &report.walk;
    report.ok = report.errors == 0
        && report.requests > 0
        && w.order_violations == 0
        && w.other_violations == 0
        && w.unread_sum == w.total_unread;
    Ok(report)
}

/// Walks every page at the largest size and checks what the contract says of them.
async fn check_walk(endpoint: &Endpoint, user: u64, samples: &Mutex<Vec<String>>) -> anyhow::Result<WalkCheck> {
    let mut client = Client::connect(endpoint).await?;
    let mut check = WalkCheck::default();
    let mut seen = HashSet::new();
    // The previous conversation's activity time, as printed.
    let mut previous: Option<String> = None;
    let mut before: Option<String> = None;
    loop {
        if check.pages >= MAX_WALK_PAGES {
            bail!("the inbox of user {user} did not end after {MAX_WALK_PAGES} pages");
        }
        let path = page_path(user, MAX_LIMIT, before.as_deref());
        let (status, body) = client.get(&path).await?;
        if !status.is_success() {
            bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
        }
        let page: Page = serde_json::from_slice(&body).with_context(|| format!("GET {path}: not an inbox page"))?;
        check.pages += 1;
        let mut other = Vec::new();
        if check.pages == 1 {
            check.total_unread = page.total_unread;
        } else if page.total_unread != check.total_unread {
            other.push(format!(
                "total_unread {} on page {}, {} before",
                page.total_unread, check.pages, check.total_unread
            ));
        }
        if page.limit != MAX_LIMIT {
            other.push(format!("limit {} answered for {MAX_LIMIT}", page.limit));
        }
        if page.next_before.is_some() && page.data.len() != MAX_LIMIT as usize {
            other.push(format!("page {} has {} entries and a next page", check.pages, page.data.len()));
        }
        for entry in &page.data {
            check.conversations += 1;
            check.unread_sum += entry.unread_count;
            // Newest activity first, ties by id descending. Times are compared as the
            // contract prints them (UTC, milliseconds, one format, so text order is time
            // order); within one millisecond the server's finer order is not visible, so only
            // a later time or a repeated id counts.
            if !seen.insert(entry.id) {
                check.order_violations += 1;
                sample(samples, format!("conversation {} listed twice", entry.id));
            } else if let Some(earlier) = previous.as_deref().filter(|&p| entry.last_activity_at.as_str() > p) {
                check.order_violations += 1;
                sample(
                    samples,
                    format!("conversation {} at {} after one at {earlier}", entry.id, entry.last_activity_at),
                );
            }
            previous = Some(entry.last_activity_at.clone());
            if entry.last_message.as_ref().is_some_and(|m| m.conversation_id != entry.id) {
                other.push(format!("conversation {}: a last message of another one", entry.id));
            }
            if !entry.members.iter().any(|m| m.user_id == user) {
                other.push(format!("conversation {}: user {user} not among its members", entry.id));
            }
            if entry.unread_count < 0 {
                other.push(format!("conversation {}: unread_count {}", entry.id, entry.unread_count));
            }
        }
        check.other_violations += other.len() as u64;
        for what in other {
            sample(samples, what);
        }
        match page.next_before {
            Some(next) => before = Some(next),
            None => return Ok(check),
        }
    }
}

/// One connection's requests, one after another.
struct Worker {
    endpoint: Arc<Endpoint>,
    /// The first page's path.
    base: String,
    /// Entries of a full page.
    expected_size: usize,
    pages: u32,
    /// Measured requests left over all workers.
    remaining: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<String>>>,
}

/// What one worker measured.
struct Measured {
    first: Histogram<u64>,
    later: Histogram<u64>,
    errors: u64,
}

impl Worker {
    async fn run(self, warmup: u64) -> anyhow::Result<Measured> {
        let mut client = Client::connect(&self.endpoint).await?;
        let mut measured = Measured { first: histogram(), later: histogram(), errors: 0 };
        let mut before: Option<String> = None;
        let mut page_in_walk = 0;
        let mut made = 0u64;
        loop {
            let measuring = made >= warmup;
            // Claims one measured request; none left, this worker is done.
            if measuring
                && self.remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
            {
                return Ok(measured);
            }
            made += 1;
            let path = match &before {
                Some(cursor) => format!("{}&before={}", self.base, percent_encode(cursor)),
                None => self.base.clone(),
            };
            let sent = Instant::now();
            let answer = client.get(&path).await;
            let latency = sent.elapsed();
            let next = answer.and_then(|(status, body)| {
                if !status.is_success() {
                    bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
                }
                let page: Cursor =
                    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not an inbox page"))?;
                // A page with a next one is full.
                if page.next_before.is_some() && page.data.len() != self.expected_size {
                    bail!("GET {path}: {} entries, {} expected", page.data.len(), self.expected_size);
                }
                Ok(page.next_before)
            });
            match next {
                Ok(next) => {
                    if measuring {
                        let h = if before.is_none() { &mut measured.first } else { &mut measured.later };
                        h.saturating_record(micros(latency));
                    }
                    page_in_walk += 1;
                    before = next.filter(|_| page_in_walk < self.pages);
                }
                Err(e) => {
                    // The connection may be gone after an error: a new one, a new walk.
                    measured.errors += u64::from(measuring);
                    sample(&self.samples, format!("{e:#}"));
                    before = None;
                    client = Client::connect(&self.endpoint).await?;
                }
            }
            if before.is_none() {
                page_in_walk = 0;
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn page_path(user: u64, limit: u32, before: Option<&str>) -> String {
    match before {
        Some(cursor) => {
            format!("/api/chats/users/{user}/conversations?limit={limit}&before={}", percent_encode(cursor))
        }
        None => format!("/api/chats/users/{user}/conversations?limit={limit}"),
    }
}

/// The cursor is opaque: every byte but RFC 3986's unreserved ones is escaped in the query.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn sample(samples: &Mutex<Vec<String>>, what: String) {
    let mut samples = lock(samples);
    if samples.len() < ERROR_SAMPLES {
        samples.push(what);
    }
}

/// A poisoned lock only means another task panicked; the samples are still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl InboxReport {
    pub fn print_table(&self) {
        println!(
            "inbox of user {} on {}: limit {}, {} page(s) per walk, {} connection(s), {} measured requests ({:.0}/s)",
            self.user, self.url, self.limit, self.pages, self.concurrency, self.requests, self.requests_per_s
        );
        let w = &self.walk;
        println!(
            "check walk: {} conversations in {} pages, total_unread {} (sum of unread_count {}), order violations {}, other {}",
            w.conversations, w.pages, w.total_unread, w.unread_sum, w.order_violations, w.other_violations
        );
        println!(
            "{:<18}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean", "count"
        );
        for (name, p) in
            [("first page", &self.first_page_ms), ("later pages", &self.later_pages_ms), ("all", &self.all_ms)]
        {
            println!(
                "{name:<18}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>10}",
                p.p50, p.p90, p.p99, p.p999, p.max, p.mean, p.count
            );
        }
        for p in &self.server_cpu {
            println!("server process {}: {:.2} s CPU, {:.3} ms per request", p.pid, p.cpu_s, p.cpu_ms_per_request);
        }
        println!("errors {}", self.errors);
        for sample in &self.error_samples {
            println!("  e.g. {sample}");
        }
        println!("{}", if self.ok { "OK" } else { "FAILED" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_escaped_in_the_query() {
        assert_eq!(percent_encode("1733335500000000_7"), "1733335500000000_7");
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(page_path(3, 50, None), "/api/chats/users/3/conversations?limit=50");
        assert_eq!(page_path(3, 100, Some("x+y")), "/api/chats/users/3/conversations?limit=100&before=x%2By");
    }
}
