//! Group fan-out: `--groups` groups of `--members` members each, every member connected (member
//! j of group g on gateway (g·members + j) mod M, so each group spans every gateway) and joined
//! to its group; one sender per group (its creator) sends on the open loop's one clock at a
//! total `--rate`, and every member's socket, the sender's included, must receive every message
//! once and in order. Reports messages and deliveries per second, the delivery latency from
//! the scheduled send time, and what was lost, duplicated or reordered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::check::{Inbox, SeqSet, Stamp};
use crate::cpu_meter::CpuMeter;
use crate::metrics::{Metrics, Percentiles};
use crate::rest::{self, NewConversation};
use crate::schedule::{self, Arrivals, Schedule};
use crate::sio::{self, Endpoint, Inbound, Ws};
use crate::Common;

/// The crowd has settled once no frame came for this long (at most [`SETTLE_MAX`] after set-up).
const SETTLED_AFTER: Duration = Duration::from_secs(1);
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Settings of the group mode.
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    /// Groups (each with one sender).
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Members per group, the sender included.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Messages per second, over all groups (each reaches every member of its group).
    #[arg(long)]
    pub rate: f64,
    #[arg(long, value_enum, default_value_t = Arrivals::Even)]
    pub arrival: Arrivals,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub urls: Vec<String>,
    pub groups: usize,
    pub members: usize,
    pub rate_target: f64,
    pub arrival: Arrivals,
    pub setup_s: f64,
    /// Waiting for the presence announcements of the members' arrival to end.
    pub settle_s: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub deliveries: u64,
    /// Messages acknowledged, and deliveries made, per second of the measured window.
    pub messages_per_s: f64,
    pub deliveries_per_s: f64,
    pub ack_latency_ms: Percentiles,
    pub delivery_latency_ms: Percentiles,
    /// Deliveries owed (each acknowledged message to each member) that never came.
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub message_errors: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// CPU seconds of `--server-pid` processes during the measured window.
    pub server_cpu_s: Option<f64>,
    pub ok: bool,
}

/// What one member's task saw: the messages of its group's sender it received, and (for the
/// sender) which of its own were acknowledged.
struct MemberOutcome {
    group: usize,
    received: Inbox,
    acked: Option<SeqSet>,
}

/// One member's place in the run.
struct Member {
    index: usize,
    user_id: u64,
    group: usize,
    conversation: u64,
    endpoint: Arc<Endpoint>,
    /// The sender's queue of scheduled sends (only the group's creator sends).
    sends: Option<mpsc::UnboundedReceiver<Instant>>,
}

pub async fn run(args: &GroupArgs) -> anyhow::Result<GroupReport> {
    let common = &args.common;
    if args.groups == 0 || args.members < 2 {
        bail!("--groups must be at least 1 and --members at least 2");
    }
    anyhow::ensure!(args.rate.is_finite() && args.rate > 0.0, "--rate must be a positive number");
    let started = Instant::now();
    let mut endpoints = Vec::new();
    for url in &common.url {
        endpoints.push(Arc::new(Endpoint::resolve(url).await?));
    }
    let users = args.groups * args.members;
    let base = common.user_base.unwrap_or_else(crate::crowd::fresh_user_base);
    let user_id = |index: usize| base + index as u64;
    let wanted: Vec<NewConversation> = (0..args.groups)
        .map(|g| NewConversation::Group((0..args.members).map(|j| user_id(g * args.members + j)).collect()))
        .collect();
    let conversations =
        rest::create_conversations(&endpoints, &wanted, common.rest_parallel).await.context("creating the groups")?;

    let metrics = Arc::new(Metrics::new());
    let run_id = base / crate::crowd::USERS_PER_RUN;
    let connecting = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let (phase, phase_rx) = watch::channel(false); // true: stop
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut queues = Vec::with_capacity(args.groups);
    let mut tasks = Vec::with_capacity(users);
    for index in 0..users {
        let group = index / args.members;
        let sends = (index % args.members == 0).then(|| {
            let (queue, sends) = mpsc::unbounded_channel();
            queues.push(queue);
            sends
        });
        let member = Member {
            index,
            user_id: user_id(index),
            group,
            conversation: conversations[group],
            endpoint: Arc::clone(&endpoints[index % endpoints.len()]),
            sends,
        };
        let (metrics, connecting, ready, stop) =
            (Arc::clone(&metrics), Arc::clone(&connecting), ready_tx.clone(), phase_rx.clone());
        let limit = common.setup_timeout;
        tasks.push(tokio::spawn(async move {
            member_session(member, run_id, metrics, connecting, limit, ready, stop).await
        }));
    }
    drop(ready_tx);
    let mut failures = Vec::new();
    for _ in 0..users {
        match ready.recv().await {
            Some(Ok(())) => {}
            Some(Err(why)) => failures.push(why),
            None => failures.push("a member task ended before it was ready".to_owned()),
        }
    }
    if !failures.is_empty() {
        phase.send_replace(true);
        bail!("{} of {users} members could not connect and join, e.g.: {}", failures.len(), failures[0]);
    }
    let setup_s = started.elapsed().as_secs_f64();
    // Settle: every member coming online is announced to its co-members (the group's
    // presence), some members² events; the measurement starts once they have arrived.
    let settling = Instant::now();
    let mut frames = metrics.frames.get();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < SETTLED_AFTER && settling.elapsed() < SETTLE_MAX {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = metrics.frames.get();
        if now != frames {
            (frames, quiet_since) = (now, Instant::now());
        }
    }
    let settle_s = settling.elapsed().as_secs_f64();

    // Warm-up, then the measured window, from one clock.
    let start = Instant::now();
    let window_start = start + common.warmup;
    let stop_sending = window_start + common.duration;
    metrics.set_window(window_start, stop_sending);
    let schedule = Schedule::new(args.arrival, args.rate, args.groups, args.seed)?;
    let window_opens = tokio::time::sleep_until(window_start);
    let dispatching = tokio::spawn(schedule::dispatch(schedule, queues, start, stop_sending));
    window_opens.await;
    let server_cpu = CpuMeter::measure_until(&common.server_pid, &common.server_database, stop_sending).await;
    dispatching.await.context("the dispatcher panicked")?;

    // Drain: until every send is answered and every owed delivery came, or nothing came for
    // `--drain`.
    let progress = |metrics: &Metrics| (metrics.acked.get() + metrics.message_errors.get(), metrics.delivered.get());
    let settled = |metrics: &Metrics| {
        let (answered, delivered) = progress(metrics);
        answered >= metrics.sent.get() && delivered >= metrics.acked.get() * args.members as u64
    };
    let mut last = (progress(&metrics), Instant::now());
    while !settled(&metrics) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress(&metrics);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= common.drain {
            break;
        }
    }
    phase.send_replace(true);
    let mut outcomes = Vec::with_capacity(users);
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => metrics.error(format!("a member task failed: {e}")),
        }
    }
    let (lost, duplicates, out_of_order) = compare(&outcomes);
    let window_s = common.duration.as_secs_f64();
    let report = GroupReport {
        urls: common.url.clone(),
        groups: args.groups,
        members: args.members,
        rate_target: args.rate,
        arrival: args.arrival,
        setup_s,
        settle_s,
        warmup_s: common.warmup.as_secs_f64(),
        duration_s: window_s,
        sent: metrics.sent.get(),
        acked: metrics.acked.get(),
        deliveries: metrics.delivered.get(),
        messages_per_s: metrics.acked_in_window.get() as f64 / window_s,
        deliveries_per_s: metrics.delivered_in_window.get() as f64 / window_s,
        ack_latency_ms: metrics.ack_latency(),
        delivery_latency_ms: metrics.delivery_latency(),
        lost,
        duplicates,
        out_of_order,
        message_errors: metrics.message_errors.get(),
        errors: metrics.errors.get(),
        error_samples: metrics.error_samples(),
        server_cpu_s: server_cpu,
        ok: false,
    };
    let ok = report.lost == 0
        && report.duplicates == 0
        && report.out_of_order == 0
        && report.errors == 0
        && report.message_errors == 0
        && report.sent > 0
        && report.acked == report.sent;
    Ok(GroupReport { ok, ..report })
}

/// Deliveries owed and not made, duplicates and reorderings, over every member of every group.
fn compare(outcomes: &[MemberOutcome]) -> (u64, u64, u64) {
    let acked: HashMap<usize, &SeqSet> =
        outcomes.iter().filter_map(|o| o.acked.as_ref().map(|acked| (o.group, acked))).collect();
    let empty = SeqSet::default();
    outcomes.iter().fold((0, 0, 0), |(lost, duplicates, out_of_order), o| {
        let owed = acked.get(&o.group).copied().unwrap_or(&empty);
        (
            lost + owed.missing_from(&o.received.received),
            duplicates + o.received.duplicates,
            out_of_order + o.received.out_of_order,
        )
    })
}

/// Connects and joins, reports ready, then (the sender) sends what the schedule hands it and
/// (everyone) receives until told to stop.
async fn member_session(
    mut member: Member,
    run: u64,
    metrics: Arc<Metrics>,
    connecting: Arc<Semaphore>,
    limit: Duration,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> MemberOutcome {
    let mut outcome = MemberOutcome {
        group: member.group,
        received: Inbox::default(),
        acked: member.sends.is_some().then(SeqSet::default),
    };
    let opened = async {
        let _permit = connecting.acquire().await.map_err(|e| e.to_string())?;
        let mut ws = sio::connect(&member.endpoint, member.user_id, None, limit).await.map_err(|e| e.to_string())?;
        sio::join(&mut ws, member.conversation, member.user_id, limit).await.map_err(|e| e.to_string())?;
        Ok::<Ws, String>(ws)
    }
    .await;
    let mut ws = match opened {
        Ok(ws) => {
            let _ = ready.send(Ok(()));
            ws
        }
        Err(why) => {
            let _ = ready.send(Err(format!("member {}: {why}", member.index)));
            return outcome;
        }
    };
    drop(ready);
    let sender_index = member.group; // the stamp's sender: the group, whose one sender sends
    let mut seq = 0u64;
    let mut content = String::new();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { break }
            }
            due = async { match member.sends.as_mut() { Some(sends) => sends.recv().await, None => std::future::pending().await } } => {
                let Some(due) = due else { member.sends = None; continue };
                Stamp { run, sender: sender_index, seq, at_ns: metrics.ns(due) }.encode(&mut content);
                let payload = format!(
                    "{{\"sender_id\":{},\"conversation_id\":{},\"message_type\":\"text\",\"content\":\"{content}\"}}",
                    member.user_id, member.conversation
                );
                seq += 1;
                metrics.sent.add(1);
                if let Err(e) = ws.send(Message::text(sio::event("send-message", &payload, None))).await {
                    metrics.error(format!("member {}: send: {e}", member.index));
                    break;
                }
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => { metrics.error(format!("member {}: {e}", member.index)); break }
                    None => { metrics.error(format!("member {}: the server closed the connection", member.index)); break }
                };
                if !on_frame(&mut ws, &text, run, sender_index, &metrics, &mut outcome).await {
                    break;
                }
            }
        }
    }
    let _ = ws.close(None).await;
    outcome
}

/// Handles one frame; false when the session must end.
async fn on_frame(
    ws: &mut Ws,
    text: &str,
    run: u64,
    sender_index: usize,
    metrics: &Metrics,
    outcome: &mut MemberOutcome,
) -> bool {
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        id: i64,
        #[serde(borrow)]
        content: &'a str,
    }
    match sio::parse(text) {
        Inbound::Ping => ws.send(Message::text(sio::PONG)).await.is_ok(),
        Inbound::Disconnected => {
            metrics.error("the server disconnected a member");
            false
        }
        Inbound::Event { name, payload } => {
            metrics.frames.add(1);
            let now = metrics.now_ns();
            match name {
                "receive-message" | "message-sent" => {
                    let stamp = serde_json::from_str::<Stored>(payload)
                        .ok()
                        .and_then(|m| Some((m.id, Stamp::decode(m.content)?)))
                        .filter(|(_, stamp)| stamp.run == run && stamp.sender == sender_index);
                    let Some((id, stamp)) = stamp else {
                        metrics.foreign.add(1);
                        return true;
                    };
                    if name == "message-sent" {
                        metrics.record_ack(stamp.at_ns, now);
                        if let Some(acked) = outcome.acked.as_mut() {
                            acked.insert(stamp.seq);
                        }
                    } else {
                        metrics.record_delivery(stamp.at_ns, now);
                        outcome.received.record(stamp.seq, id);
                    }
                }
                "message-error" => metrics.message_error(payload.to_owned()),
                "error" => metrics.error(payload.to_owned()),
                _ => {} // presence, typing: not this run's business
            }
            true
        }
        _ => true,
    }
}

impl GroupReport {
    pub fn print_table(&self) {
        println!(
            "{} groups of {} members on {}; open loop at {:.0} msg/s, {} arrivals",
            self.groups,
            self.members,
            self.urls.join(", "),
            self.rate_target,
            self.arrival.name()
        );
        println!(
            "set-up {:.1} s, settled after {:.1} s, warm-up {:.0} s, measured {:.0} s",
            self.setup_s, self.settle_s, self.warmup_s, self.duration_s
        );
        println!(
            "throughput: {:.0} messages/s, {:.0} deliveries/s   (totals: sent {}, acked {}, deliveries {})",
            self.messages_per_s, self.deliveries_per_s, self.sent, self.acked, self.deliveries
        );
        println!("{:<18}{:>9}{:>9}{:>9}{:>9}{:>10}", "latency (ms)", "p50", "p90", "p99", "max", "count");
        for (name, p) in [("ack", &self.ack_latency_ms), ("delivery", &self.delivery_latency_ms)] {
            println!("{name:<18}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>10}", p.p50, p.p90, p.p99, p.max, p.count);
        }
        if let Some(cpu) = self.server_cpu_s {
            println!("server CPU: {cpu:.2} s in the window");
        }
        println!(
            "checks: lost {}, duplicates {}, out of order {}, message errors {}, errors {}: {}",
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.message_errors,
            self.errors,
            if self.ok { "OK" } else { "FAILED" }
        );
        for sample in &self.error_samples {
            println!("  {sample}");
        }
    }
}
